"""Benchmark PAGS (issue 12; docs/pags.md): metric time per candidate on ResNet-18.

Runs ``graphpai.generators.pags.solve_pags`` on the CIFAR ResNet-18 (CIFAR stem, 100 classes, as
[FS]'s runs) at 99% sparsity and reports the metric time (the [FS] scores of every layer of every
candidate: ``metric_seconds``), the time spent drawing candidates, both per candidate, the
extrapolation to 2000 candidates (wall and process CPU time: on a shared machine the wall time
also counts waiting), how many layers were replaced, the density drift and the
explored fraction. SNIP/GraSP candidates use synthetic images unless ``--data DIR`` names a
CIFAR-100 directory (the metric time does not depend on the images).

    python benchmarks/pags.py                           # base snip, 20 candidates
    python benchmarks/pags.py --population 2000         # the paper's setting (long)
    python benchmarks/pags.py --base rpi --json

Target: 2000 candidates in under 10 minutes of metric time ([FS]'s code: 1-3 hours).
Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time

import torch

from graphpai.generators.pags import solve_pags
from graphpai.torch import models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--base", default="snip")
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="threads over layers")
    parser.add_argument("--processes", type=int, default=0,
                        help="worker processes scoring candidates (the CPU column needs 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--data", help="a CIFAR-100 directory (default: synthetic images)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {"cifar_stem": True} if args.model == "resnet18" else {}
    model = models.build(args.model, num_classes=100, seed=0, **options)
    data = None
    if args.base in ("snip", "grasp"):
        from graphpai.torch.data import load_data, synthetic_batches

        data = (load_data(args.data, num_classes=100).train.prune_batches(seed=0) if args.data
                else synthetic_batches((3, 32, 32), 100, seed=0))
    cpu = [0.0]
    pags_module = importlib.import_module("graphpai.generators.pags")  # the function shadows it
    score = pags_module._scores

    def timed(*a, **k):  # process CPU time of the scores (the container is shared)
        t0 = time.process_time()
        try:
            return score(*a, **k)
        finally:
            cpu[0] += time.process_time() - t0

    pags_module._scores = timed
    start = time.perf_counter()
    r = solve_pags(model, 1 / (1 - args.sparsity), seed=0, data=data, base=args.base,
                   population=args.population, workers=args.workers,
                   processes=args.processes)
    wall = time.perf_counter() - start
    n = max(r.population, 1)
    per_metric = r.metric_seconds / (n + 1)  # the base is scored too
    row = {"model": args.model, "base": args.base, "sparsity": args.sparsity,
           "population": r.population, "layers": len(r.layers), "wall_seconds": wall,
           "metric_s_per_candidate": per_metric,
           "metric_ms_per_layer": 1000 * per_metric / len(r.layers),
           "metric_cpu_s_per_candidate": cpu[0] / (n + 1) if not args.processes else None,
           "metric_cpu_minutes_for_2000": (cpu[0] / (n + 1) * 2000 / 60 if not args.processes
                                           else None),
           "processes": args.processes,
           "draw_s_per_candidate": r.candidate_seconds / (n + 1),
           "metric_minutes_for_2000": per_metric * 2000 / 60,
           "replaced_layers": sum(row.source > 0 for row in r.layers),
           "density": r.density, "base_density": r.target_density,
           "drift_weights": r.total_drift, "explored": r.explored}
    if args.json:
        print(json.dumps(row, indent=2))
        return
    print(f"# {platform.processor() or platform.machine()}, torch threads {args.threads}, "
          f"workers {args.workers}")
    for key, value in row.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
