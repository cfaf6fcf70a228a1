"""Benchmark the ranking methods' global threshold (issue 13 item 21) against a baseline revision.

Scores of VGG-16's 14 prunable layers (14,715,584 weights, float64, the shapes of the zoo's
model) in three situations:

- ``snip c=100``: one threshold of random positive scores (SNIP/GraSP/magnitude do one);
- ``synflow run``: the 100 thresholds of one SynFlow run at c = 100 with the exponential
  schedule; the scores of round k are random on the weights kept by round k - 1 and exactly 0 on
  the pruned ones (as SynFlow's are), so the time is the threshold's share of a SynFlow run;
- ``signed c=10``: GraSP-like signed scores;
- ``synflow_masks``: SynFlow itself on the zoo's VGG-16 at c = 100 with ``--iterations``
  rounds (default 10; torch on one thread), baseline package vs current, masks checked equal.

Both versions run in the same process, interleaved (``_timing.interleaved``), so machine load hits
them alike; the masks are checked equal. The baseline is ``git archive``'d into a temporary
directory as ``graphpai_base``.

    python benchmarks/threshold.py [--baseline REV] [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import statistics
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import interleaved  # noqa: E402

VGG16_SHAPES = [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3),
                (256, 128, 3, 3), (256, 256, 3, 3), (256, 256, 3, 3), (512, 256, 3, 3),
                (512, 512, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3),
                (512, 512, 3, 3), (10, 512)]


def extract(rev: str, into: str) -> None:
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "graphpai"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    shutil.move(os.path.join(into, "graphpai"), os.path.join(into, "graphpai_base"))


def scores(seed=0, signed=False):
    rng = np.random.default_rng(seed)
    out = {}
    for i, shape in enumerate(VGG16_SHAPES):
        a = rng.random(shape)
        out[f"l{i}"] = a - 0.5 if signed else a
    return out


def synflow_inputs(threshold, base, c=100.0, iterations=100):
    """Precompute every round's scores, so that only the thresholds are timed."""
    rounds, mask = [], None
    for k in range(1, iterations + 1):
        s = base if mask is None else {n: np.where(mask[n], base[n], 0.0) for n in base}
        rounds.append((s, c ** (k / iterations)))
        mask = threshold(s, c ** (k / iterations))
    return rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="cce0361")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10, help="SynFlow rounds (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extract(args.baseline, tmp)
        sys.path.insert(0, tmp)
        base_mod = importlib.import_module("graphpai_base.generators.ranking")
        cur_mod = importlib.import_module("graphpai.threshold")
        old, new = base_mod.global_threshold, cur_mod.global_threshold
        positive, signed = scores(0), scores(1, signed=True)
        rounds = synflow_inputs(new, positive)
        # the two versions agree on every input timed below
        for s, c in [(positive, 100.0), (signed, 10.0)] + rounds[::10]:
            assert old(s, c) == new(s, c)

        def run_rounds(fn):
            return lambda: [fn(s, c) for s, c in rounds]

        cases = [("snip c=100", lambda fn: (lambda: fn(positive, 100.0))),
                 ("synflow run (100 thresholds)", run_rounds),
                 ("signed c=10", lambda fn: (lambda: fn(signed, 10.0)))]
        print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, baseline "
              f"{args.baseline}, VGG-16 shapes (N = {sum(a.size for a in positive.values())}), "
              f"median of {args.repeat}")
        print("| case | baseline s | current s | baseline / current |")
        print("|---|---|---|---|")
        for label, make in cases:
            t_old, t_new = map(statistics.median, interleaved([make(old), make(new)],
                                                              args.repeat))
            print(f"| {label} | {t_old:.3f} | {t_new:.3f} | {t_old / t_new:.2f} |", flush=True)
        if args.iterations:
            import torch

            torch.set_num_threads(1)
            from graphpai.torch import models

            model = models.build("vgg16", seed=0)
            base_scores = importlib.import_module("graphpai_base.torch.scores")
            cur_scores = importlib.import_module("graphpai.torch.scores")
            run = [lambda m=mod: m.synflow_masks(model, 100, iterations=args.iterations)
                   for mod in (base_scores, cur_scores)]
            assert run[0]() == run[1]()
            t_old, t_new = map(statistics.median, interleaved(run, max(1, args.repeat // 2)))
            print(f"| synflow_masks VGG-16, {args.iterations} rounds | {t_old:.3f} | "
                  f"{t_new:.3f} | {t_old / t_new:.2f} |", flush=True)


if __name__ == "__main__":
    main()
