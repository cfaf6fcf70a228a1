"""Benchmark issue 13 items 20-21: memory of paths / the spatial audit on one big sparse linear
layer, and the channel audit's time, against a baseline revision in the same run.

- ``memory``: a graph of one ``n x n`` linear layer at 1% density (the mask built row block by row
  block, seed 0). Each implementation runs in a fresh subprocess that builds the mask, then runs
  ``effective_paths`` and then ``audit(semantics="spatial")``; it prints its peak RSS after the
  mask was built and after each call (``ru_maxrss``), or the error it stopped with. The baseline
  runs under an address-space limit (``--limit-gib``) so that its 16.4 GiB float64 copy fails
  instead of taking the machine.
- ``channel``: ``audit(graph, masks)`` (channel semantics) of VGG-16 RPI-ERK, current vs the
  baseline package imported side by side (``graphpai_base``), interleaved; minimum of
  ``--repeat`` and the median of per-round ratios.

Usage::

    python benchmarks/audit_memory.py [--baseline cf402fb] [--sizes 16000 46904] [--repeat 20]

The baseline is extracted with ``git archive`` into a temporary directory. Record results in
benchmarks/README.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, resource, sys, time
import numpy as np
limit = float(sys.argv[3])
if limit > 0:
    resource.setrlimit(resource.RLIMIT_AS, (int(limit * 2**30),) * 2)
import {package} as gp
from {package}.graph import Group, Layer, NetGraph
from {package}.masks import MaskSet
n = int(sys.argv[1])
graph = NetGraph([Group("x", n), Group("y", n)], [Layer("fc", "linear", (n, n), "x", "y")],
                 [], ["x"], ["y"])
rng = np.random.default_rng(0)
mask = np.empty((n, n), dtype=bool)
step = max(1, (64 << 20) // (8 * n))
for start in range(0, n, step):
    mask[start:start + step] = rng.random((min(n, start + step) - start, n)) < 0.01
masks = MaskSet({{"fc": mask}})
del mask
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB
out = {{"n": n, "kept": masks.kept(), "mask_gib": n * n / 2**30, "after_mask": peak()}}
for what, run in [("paths", lambda: gp.paths.effective_paths(graph, masks)),
                  ("spatial", lambda: gp.audit(graph, masks, semantics="spatial").functional)]:
    start = time.perf_counter()
    try:
        out[what] = run()
    except Exception as exc:  # the baseline's MemoryError, or graphpai's own error
        out[what] = f"{{type(exc).__name__}}: {{str(exc).splitlines()[0][:160]}}"
    out[what + "_s"] = time.perf_counter() - start
    out["after_" + what] = peak()
print(json.dumps(out))
"""


def extract(rev: str, into: str) -> str:
    """`rev`'s graphpai package as the importable package ``graphpai_base`` under `into`."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "graphpai"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    shutil.move(os.path.join(into, "graphpai"), os.path.join(into, "graphpai_base"))
    return into


def memory(sizes, base_dir, limit_gib):
    print("| n | kept | mask (bool) GiB | code | peak RSS after mask GiB | paths | peak after paths "
          "GiB | paths s | spatial audit | peak after audit GiB | audit s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for label, package, path, limit in [("baseline", "graphpai_base", base_dir, limit_gib),
                                            ("current", "graphpai", ROOT, 0)]:
            env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, "-c", CHILD.format(package=package), str(n),
                                   package, str(limit)], env=env, capture_output=True, text=True)
            if proc.returncode:
                print(f"| {n} | | | {label} | failed: {proc.stderr.strip().splitlines()[-1][:120]} "
                      "| | | | | | |", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
            print(f"| {n} | {r['kept']} | {r['mask_gib']:.2f} | {label} | {r['after_mask']:.2f} | "
                  f"{fmt(r['paths'])} | {r['after_paths']:.2f} | {r['paths_s']:.1f} | "
                  f"{r['spatial']} | {r['after_spatial']:.2f} | {r['spatial_s']:.1f} |", flush=True)


def channel(base_dir, repeat, compressions):
    sys.path.insert(0, base_dir)
    sys.path.insert(0, HERE)
    import graphpai
    import graphpai_base
    from graphpai.torch import models
    from graphpai_base.torch import models as base_models

    from _timing import interleaved

    print("| model | compression | kept | functional | current s | baseline s | "
          "baseline / current (min; median) |")
    print("|---|---|---|---|---|---|---|")
    for compression in compressions:
        runs = []
        for pkg, zoo in ((graphpai, models), (graphpai_base, base_models)):
            model = zoo.build("vgg16", seed=0)
            graph = pkg.to_graph(model, (3, 32, 32))
            masks = pkg.prune(model, "rpi", budget="erk", compression=compression, seed=0)
            runs.append((pkg, graph, masks))
        results = [pkg.audit(graph, masks) for pkg, graph, masks in runs]
        assert results[0].layers == tuple(type(results[0].layers[0])(**vars(r))
                                          for r in results[1].layers)
        times = interleaved([lambda r=r: r[0].audit(r[1], r[2]) for r in runs], repeat)
        cur, base = min(times[0]), min(times[1])
        ratio = statistics.median(b / c for c, b in zip(times[0], times[1]))
        print(f"| vgg16 | {compression:g} | {results[0].kept} | {results[0].functional} | "
              f"{cur:.4f} | {base:.4f} | {base / cur:.2f}; {ratio:.2f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="cf402fb")
    parser.add_argument("--sizes", nargs="+", type=int, default=[16000, 46904])
    parser.add_argument("--limit-gib", type=float, default=14.0,
                        help="address-space limit of the baseline's subprocess")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--compressions", nargs="+", type=float, default=[100.0, 1000.0])
    parser.add_argument("--only", choices=["memory", "channel"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = extract(args.baseline, tmp)
        print(f"# {os.cpu_count()} CPUs, baseline {args.baseline}")
        if args.only != "memory":
            channel(base_dir, args.repeat, args.compressions)
        if args.only != "channel":
            memory(args.sizes, base_dir, args.limit_gib)


if __name__ == "__main__":
    main()
