"""Benchmark NPB mask generation (issue 12; docs/npb.md).

Times ``graphpai.generators.npb.solve_npb`` (the exact program per layer, random taps and the move
step through the spatial engine) on ResNet-20 at 90%, 99% and 99.9% sparsity and on ResNet-18
(CIFAR stem, 100 classes, as [NPB]'s ResNet-18 runs) with the ERK budget, on CPU with 2 torch
threads (``--threads``). Reports the median wall and process CPU time, the time per layer, the
share spent solving the programs (``seconds`` of the per-layer rows) and in the move step
(``move_seconds``, with its number of spatial audits), the budget drift (kept vs budget,
weights held by another layer, layers off their budget), and [NPB]'s balance measures next to
RPI-ERK's with the same budget: effective nodes and log10 effective paths (graphpai.paths,
default profile), for both max_path normalisations (``tight``, the definition, and
``reference``, [NPB]'s code) and for the move step without bridges (``move="fill"``, tight).
``--path-mass channels`` runs NPB with the channel-level P_i instead of [NPB]'s pixel sums (the
default).

    python benchmarks/npb.py                    # resnet20 and resnet18
    python benchmarks/npb.py --models resnet20 --repeat 3 --json
    python benchmarks/npb.py --path-mass channels --no-balance

Target: under 3 s for ResNet-20 at 99% on 2 cores ([NPB]'s code: about 28 s with cvxpy).
Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from _timing import median_time
from graphpai.budgets import erk
from graphpai.generators.npb import solve_npb
from graphpai.generators.random import rpi
from graphpai.paths import paths
from graphpai.torch import models
from graphpai.torch.extract import to_graph

SPARSITIES = (0.9, 0.99, 0.999)


def graph_of(name):
    if name == "resnet18":
        return to_graph(models.build("resnet18", num_classes=100, seed=0, cifar_stem=True),
                        (3, 32, 32))
    return to_graph(models.build(name, seed=0), (3, 32, 32))


def bench(name, repeat, seed=0, balance=True, path_mass="pixels"):
    graph = graph_of(name)

    def run(budget, **kw):
        return solve_npb(graph, budget, seed=seed, path_mass=path_mass, **kw)

    rows = []
    for sparsity in SPARSITIES:
        budget = erk(graph, 1 / (1 - sparsity))
        run(budget)  # warm-up
        seconds = median_time(lambda: run(budget), repeat)
        cpu = median_time(lambda: run(budget), repeat, clock=time.process_time)
        result = run(budget)
        row = {"model": name, "path_mass": path_mass, "sparsity": sparsity, "seconds": seconds,
               "cpu_seconds": cpu, "ms_per_layer": 1000 * seconds / len(graph.layers),
               "cpu_ms_per_layer": 1000 * cpu / len(graph.layers),
               "solve_seconds": sum(r.seconds for r in result.layers),
               "move_seconds": result.move_seconds, "audits": result.audits,
               "budget": result.budget, "kept": result.kept, "drift": result.total_drift,
               "carried": result.carried,
               "layers_off_budget": sum(1 for r in result.layers if r.drift),
               "functional": result.functional}
        if balance:
            ref = paths(graph, rpi(graph, budget, seed=seed))
            row.update(rpi_nodes=ref.effective_nodes, rpi_log10_paths=ref.log10_paths)
            for norm in ("tight", "reference"):
                found = paths(graph, run(budget, path_norm=norm).masks)
                row.update({f"{norm}_nodes": found.effective_nodes,
                            f"{norm}_log10_paths": found.log10_paths})
            fill = run(budget, move="fill")
            found = paths(graph, fill.masks)
            row.update(fill_kept=fill.kept, fill_nodes=found.effective_nodes,
                       fill_log10_paths=found.log10_paths)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet18"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-balance", action="store_true", help="skip the paths/nodes audit")
    parser.add_argument("--path-mass", choices=("pixels", "channels"), default="pixels",
                        help="P_i summed over pixels ([NPB]'s) or on the channel multigraph")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for name in args.models
            for row in bench(name, args.repeat, balance=not args.no_balance,
                             path_mass=args.path_mass)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"# {platform.processor() or platform.machine()}, torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k])
                         for k in keys))


if __name__ == "__main__":
    main()
