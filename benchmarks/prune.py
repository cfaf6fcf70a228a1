"""Benchmark the budgets and the mask generators (issue 4; docs/definitions.md#budgets,
#generators).

Times every budget (uniform, ERK, IGQ, EPL, from-mask) at a few compressions and every method
(RPI-ERK, magnitude, SNIP, GraSP, SynFlow) at one compression, on CPU, and reports the median
over runs (SynFlow: one run). SNIP and GraSP use one batch of 10 x classes synthetic images
(docs/definitions.md#training); SynFlow runs its 100 float64 iterations.

    python benchmarks/prune.py                                # vgg16 and resnet20
    python benchmarks/prune.py --models resnet20 --synflow-iterations 10 --threads 2 --json

Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from _timing import median_time
from graphpai.budgets import BUDGETS, from_mask, make_budget
from graphpai.prune import prune
from graphpai.torch import models
from graphpai.torch.data import synthetic_batches
from graphpai.torch.extract import to_graph


def bench(name, compressions, compression, repeat, synflow_iterations, seed=0):
    model = models.build(name, seed=seed)
    graph = to_graph(model)
    rows = []
    for c in compressions:
        for budget in BUDGETS:
            rows.append({"model": name, "what": f"budget {budget}", "compression": c,
                         "seconds": median_time(lambda: make_budget(graph, budget, c), repeat)})
    masks = prune(graph, "rpi", compression=compression, seed=seed)
    rows.append({"model": name, "what": "budget from-mask", "compression": compression,
                 "seconds": median_time(lambda: from_mask(masks, graph), repeat)})
    data = synthetic_batches(model.input_shape, 10, seed=seed)
    runs = {
        "rpi (erk)": (lambda: prune(graph, "rpi", compression=compression, seed=seed), repeat),
        "magnitude": (lambda: prune(model, "magnitude", compression=compression), repeat),
        "snip": (lambda: prune(model, "snip", compression=compression, data=data), repeat),
        "grasp": (lambda: prune(model, "grasp", compression=compression, data=data), repeat),
        "synflow": (lambda: prune(model, "synflow", compression=compression,
                                  iterations=synflow_iterations), 1),
    }
    for what, (fn, n) in runs.items():
        label = what if what != "synflow" else f"synflow ({synflow_iterations} it.)"
        rows.append({"model": name, "what": f"method {label}", "compression": compression,
                     "seconds": median_time(fn, n)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet20"])
    parser.add_argument("--compressions", nargs="+", type=float, default=[10.0, 1e3, 1e5])
    parser.add_argument("--compression", type=float, default=100.0, help="for the methods")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--synflow-iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on the shared 2-core container, 2 threads contend "
                             "and single calls get 10x slower)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows += bench(name, args.compressions, args.compression, args.repeat,
                      args.synflow_iterations)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| model | what | compression | seconds |\n| --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['what']} | {r['compression']:g} | {r['seconds']:.3g} |")


if __name__ == "__main__":
    main()
