"""Benchmark the audit: channel and spatial semantics against the [VK] autograd oracle.

For each model and compression (RPI masks with the ERK budget, seed 0) it times, in one run:

- ``channel``: ``graphpai.audit(graph, masks, semantics="channel")``;
- ``spatial``: ``graphpai.audit(graph, masks, semantics="spatial")`` (torch runs the convolutions);
- ``fwd+bwd``: one forward and backward pass of the model itself at batch 1 (float32), the
  yardstick of the spatial target;
- ``oracle``: the [VK] gradient test, ``dR/dw != 0`` on the linearised float64 model
  (tests/oracles.py), and checks that it gives exactly the spatial functional mask.

Targets (issue 3): channel audit of VGG-16 under 0.1 s; spatial within 2x fwd+bwd.

Usage::

    python benchmarks/audit.py [--models vgg16 resnet50] [--compressions 100 1000] [--repeat 5]
                               [--threads N]

Each repeat runs channel, spatial and fwd+bwd back to back (so a load spike on a shared machine
hits all three alike), after one warm-up run; the table shows the minimum over ``--repeat``
repeats, and the spatial / fwd+bwd ratio is also given as the median of the per-repeat ratios.
Record results in benchmarks/README.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

import graphpai.prune  # noqa: E402
from graphpai.functional import audit  # noqa: E402
from graphpai.torch import models  # noqa: E402
from graphpai.torch.extract import to_graph  # noqa: E402
from oracles import vk_functional  # noqa: E402
from _timing import interleaved  # noqa: E402


def forward_backward(model, shape):
    x = torch.randn((1,) + tuple(shape))

    def run():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--compressions", nargs="+", type=float, default=[100.0, 1000.0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); "
                        "1 avoids thread contention on a loaded machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | input | compression | kept | functional (channel / spatial) | channel s | "
          "spatial s | fwd+bwd s | spatial / fwd+bwd (min; median) | oracle s | "
          "oracle / spatial | oracle == spatial |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        shape = models.input_shape(name)
        model = models.build(name, seed=0).eval()
        graph = to_graph(model, shape)
        step = forward_backward(model, shape)
        for compression in args.compressions:
            masks = graphpai.prune(model, "rpi", budget="erk", compression=compression, seed=0)
            channel = audit(graph, masks, semantics="channel")
            spatial = audit(graph, masks, semantics="spatial")
            times = interleaved([lambda: audit(graph, masks, semantics="channel"),
                                 lambda: audit(graph, masks, semantics="spatial"), step],
                                args.repeat)
            t_channel, t_spatial, base = (min(t) for t in times)
            ratio = statistics.median(s / b for s, b in zip(times[1], times[2]))
            start = time.perf_counter()
            oracle = vk_functional(model, masks, shape)
            t_oracle = time.perf_counter() - start
            same = all(np.array_equal(oracle[k], spatial.functional_masks[k]) for k in oracle)
            print(f"| {name} | {'x'.join(map(str, shape))} | {compression:g} | {masks.kept()} | "
                  f"{channel.functional} / {spatial.functional} | {t_channel:.4f} | "
                  f"{t_spatial:.3f} | {base:.3f} | {t_spatial / base:.2f}; {ratio:.2f} | "
                  f"{t_oracle:.2f} | "
                  f"{t_oracle / t_spatial:.1f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
