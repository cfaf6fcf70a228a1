"""Benchmark graph extraction and the per-layer views (issue 2; docs/definitions.md#graph).

For each model and mask, times ``to_graph(model)`` and building every layer's channel view
(``multiplicity``) and fan-in view (``biadjacency``), and reports the median over runs.

    python benchmarks/graph.py                      # vgg16 and resnet50, dense and 10% masks
    python benchmarks/graph.py --models resnet20 --repeat 9 --json

Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch

from _timing import median_time
from graphpai.masks import MaskSet
from graphpai.torch import models
from graphpai.torch.extract import to_graph


def bench(name, density, repeat, seed=0):
    model = models.build(name, seed=seed)
    graph = to_graph(model)  # warm-up (first-call costs of torch.fx and the kernels)
    masks = None
    if density < 1:
        rng = np.random.default_rng(seed)
        masks = MaskSet({k: rng.random(layer.weight_shape) < density for k, layer in graph.layers.items()})

    def views():
        for layer in graph.layers.values():
            graph.multiplicity(layer, masks)
            graph.biadjacency(layer, masks)

    def everything():
        g = to_graph(model)
        for layer in g.layers.values():
            g.multiplicity(layer, masks)
            g.biadjacency(layer, masks)

    return {
        "model": name, "mask": "dense" if masks is None else f"random {density:.0%}",
        "layers": len(graph.layers), "weights": graph.num_weights,
        "to_graph_s": median_time(lambda: to_graph(model), repeat),
        "multiplicity_s": median_time(
            lambda: [graph.multiplicity(l, masks) for l in graph.layers.values()], repeat),
        "biadjacency_s": median_time(
            lambda: [graph.biadjacency(l, masks) for l in graph.layers.values()], repeat),
        "views_s": median_time(views, repeat),
        "total_s": median_time(everything, repeat),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--densities", nargs="+", type=float, default=[1.0, 0.1])
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (median reported)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [bench(name, d, args.repeat) for name in args.models for d in args.densities]
    if args.json:
        print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "rows": rows}, indent=2))
        return
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeat} runs, seconds")
    header = ["model", "mask", "layers", "to_graph_s", "multiplicity_s", "biadjacency_s", "total_s"]
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(f"{row[h]:.3f}" if isinstance(row[h], float) else str(row[h]) for h in header))


if __name__ == "__main__":
    main()
