"""MiCA vs RPI: functional-edge and functional-node ratios over the compression grid (issue 5).

For VGG-16 and ResNet-20 with the ERK and IGQ budgets, at every grid point 10^0.5 ... 10^6 (points
above a network's N are skipped) and 3 seeds, generate MiCA-X and RPI-X with the same per-layer
counts (RPI-X is the MiCA mask with each layer shuffled, :func:`graphpai.generators.mica.shuffle`)
and audit both with :func:`graphpai.functional.audit` ([MiCA] Figures 5 and 9, without training):

- functional-edge ratio: functional / kept weights;
- functional-node ratio: functional hidden channels / all hidden channels (the audit's ratio);
- fed-node ratio: functional hidden channels / hidden channels with a kept incoming weight.

    python benchmarks/mica_vs_rpi.py                        # channel semantics, markdown tables
    python benchmarks/mica_vs_rpi.py --semantics spatial --json > out.json

The tables are shown in docs/mica.md.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from graphpai.budgets import make_budget
from graphpai.functional import audit
from graphpai.generators.mica import mica, shuffle
from graphpai.torch import models
from graphpai.torch.extract import to_graph

GRID = [round(0.5 * k, 1) for k in range(1, 13)]


def ratios(graph, masks, semantics):
    result = audit(graph, masks, semantics=semantics)
    hidden = [name for name, layer in graph.layers.items() if layer.target not in graph.outputs]
    fed = sum(int(masks[name].reshape(masks[name].shape[0], -1).any(axis=1).sum())
              for name in hidden)
    return {
        "edge": result.functional / result.kept if result.kept else 0.0,
        "node": result.functional_node_ratio or 0.0,
        "fed": result.functional_nodes / fed if fed else 0.0,
        "disconnected": result.disconnected,
    }


def run(name, budgets, seeds, semantics):
    graph = to_graph(models.build(name, seed=0))
    rows = []
    for budget_name in budgets:
        for x in GRID:
            if 10 ** x > graph.num_weights:
                continue
            budget = make_budget(graph, budget_name, 10 ** x)
            for seed in seeds:
                masks = mica(graph, budget, seed=seed)
                for method, m in (("mica", masks), ("rpi", shuffle(masks, seed=seed))):
                    rows.append({"model": name, "budget": budget_name, "log10_compression": x,
                                 "seed": seed, "method": method, "semantics": semantics,
                                 "zero_layers": len(budget.zero_layers),
                                 **ratios(graph, m, semantics)})
    return rows


def _cell(values):
    mean = float(np.mean(values))
    spread = float(np.std(values))
    return f"{mean:.3f}" if spread < 5e-4 else f"{mean:.3f} ± {spread:.3f}"


def markdown(rows):
    lines = []
    keys = sorted({(r["model"], r["budget"], r["semantics"]) for r in rows},
                  key=lambda k: (k[0] != "vgg16", k[1], k[2]))
    for model, budget, semantics in keys:
        sel = [r for r in rows if (r["model"], r["budget"], r["semantics"]) == (model, budget,
                                                                                 semantics)]
        lines += [f"**{model}, {budget.upper()}** ({semantics} semantics; mean ± std over "
                  f"{len({r['seed'] for r in sel})} seeds)", "",
                  "| 10^x | edge RPI | edge MiCA | node RPI | node MiCA | fed-node RPI | "
                  "fed-node MiCA |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for x in sorted({r["log10_compression"] for r in sel}):
            point = [r for r in sel if r["log10_compression"] == x]
            cells = []
            for metric in ("edge", "node", "fed"):
                for method in ("rpi", "mica"):
                    cells.append(_cell([r[metric] for r in point if r["method"] == method]))
            mark = " (zero-budget layer)" if point[0]["zero_layers"] else ""
            lines.append(f"| {x:.1f}{mark} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet20"])
    parser.add_argument("--budgets", nargs="+", default=["erk", "igq"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--semantics", nargs="+", default=["channel"],
                        choices=["channel", "spatial"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for semantics in args.semantics:
        for name in args.models:
            rows += run(name, args.budgets, args.seeds, semantics)
    if args.json:
        print(json.dumps([{k: (v if not (isinstance(v, float) and math.isinf(v)) else "inf")
                           for k, v in r.items()} for r in rows], indent=1))
    else:
        print(markdown(rows))


if __name__ == "__main__":
    main()
