"""Benchmark ``to_graph`` after issue 11 (one builder for torch.fx and torch.export, element moves
traced on index tensors): convnets against a baseline revision in the same run, the zoo's
transformers and MobileNetV2, and a 1B-parameter Llama config on the meta device (docs/graph.md).

Each (revision, model) runs in a fresh subprocess that builds the model, warms up once, then
times ``to_graph`` ``--repeat`` times (median) and prints its peak RSS (``ru_maxrss``).

    python benchmarks/extract.py [--baseline b7dc578] [--repeat 5] [--llama]

The baseline is extracted with ``git archive`` into a temporary directory; ``--llama`` adds the
1B config (hidden 2048, 16 layers, MLP 5632, vocabulary 32000, 32 heads, 4 kv heads; needs
``transformers``), timed once. Record results in benchmarks/README.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, resource, statistics, sys, time, logging
import torch
logging.disable(logging.WARNING)
torch.set_num_threads(1)
from graphpai.torch import models
from graphpai.torch.extract import to_graph
name, repeat = sys.argv[1], int(sys.argv[2])
if name == "llama-1b":
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                      max_position_embeddings=64)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    ids = torch.zeros((1, 8), dtype=torch.long, device="meta")
    run = lambda: to_graph(model, example_inputs={"input_ids": ids})
    repeat = 1
else:
    model = models.build(name, seed=0)
    run = lambda: to_graph(model)
    run()
times = []
for _ in range(repeat):
    start = time.perf_counter()
    graph = run()
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times), "graph": repr(graph),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(path, name, repeat):
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, name, str(repeat)], capture_output=True,
                          text=True, env=env, timeout=1800)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b7dc578")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--llama", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        os.makedirs(base)
        archive = subprocess.run(["git", "archive", args.baseline, "graphpai"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        for name in ("vgg16", "resnet50"):
            rows.append({"model": name, "baseline": run(base, name, args.repeat),
                         "current": run(ROOT, name, args.repeat)})
    for name in ("gpt", "vit", "mobilenetv2") + (("llama-1b",) if args.llama else ()):
        rows.append({"model": name, "current": run(ROOT, name, args.repeat)})
    print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows},
                     indent=2))


if __name__ == "__main__":
    main()
