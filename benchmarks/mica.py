"""Benchmark MiCA generation time (issue 5; docs/definitions.md#mica).

Times ``graphpai.generators.mica.mica`` (pass 1, pass 2 with the spatial activity engine, and the
repair check) for VGG-16 and ResNet-20 at every grid point 10^0.5 ... 10^6 (points above a
network's N are skipped), with the ERK and IGQ budgets, on CPU with 2 torch threads by default.
Reports the median wall time over runs, the median process CPU time (all threads; a check on a
shared machine, where wall time also counts waiting), the time of pass 1 alone, and how many kept
weights the repair moved (the weights the two passes alone would leave dead on tiny maps).

    python benchmarks/mica.py                         # vgg16 and resnet20, ERK and IGQ
    python benchmarks/mica.py --models vgg16 --budgets erk --repeat 5 --json

Target: under 0.5 s for VGG-16 on 2 cores. Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from _timing import median_time
from graphpai.budgets import make_budget
from graphpai.generators.mica import mica, node_counts, place_edges
from graphpai.torch import models
from graphpai.torch.extract import to_graph

GRID = [round(0.5 * k, 1) for k in range(1, 13)]


def bench(name, budgets, repeat, seed=0):
    graph = to_graph(models.build(name, seed=seed))
    rows = []
    for budget_name in budgets:
        for x in GRID:
            if 10 ** x > graph.num_weights:
                continue
            budget = make_budget(graph, budget_name, 10 ** x)
            mica(graph, budget, seed=seed)  # warm-up
            seconds = median_time(lambda: mica(graph, budget, seed=seed), repeat)
            cpu = median_time(lambda: mica(graph, budget, seed=seed), repeat, time.process_time)
            pass1 = median_time(lambda: node_counts(graph, budget, seed=seed), repeat)
            rng = np.random.default_rng(seed)
            placed = place_edges(graph, budget, node_counts(graph, budget, seed=rng), seed=rng)
            rows.append({"model": name, "budget": budget_name, "log10_compression": x,
                         "seconds": seconds, "cpu_seconds": cpu, "pass1_seconds": pass1,
                         "zero_layers": len(budget.zero_layers),
                         "moved": sum(placed.moved.values())})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet20"])
    parser.add_argument("--budgets", nargs="+", default=["erk", "igq"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 = the target)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows += bench(name, args.budgets, args.repeat)
    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(),
                          "threads": args.threads, "rows": rows}, indent=1))
        return
    print(f"torch threads: {args.threads}; median of {args.repeat} runs")
    print(f"{'model':9} {'budget':6} {'10^x':>5} {'wall s':>7} {'CPU s':>7} {'pass 1':>7} "
          f"{'moved':>6} zero layers")
    for r in rows:
        print(f"{r['model']:9} {r['budget']:6} {r['log10_compression']:5.1f} {r['seconds']:7.3f} "
              f"{r['cpu_seconds']:7.3f} {r['pass1_seconds']:7.4f} {r['moved']:6d} {r['zero_layers']}")
    for name in args.models:
        worst = max(r["seconds"] for r in rows if r["model"] == name)
        print(f"{name}: slowest point {worst:.3f} s")


if __name__ == "__main__":
    main()
