"""Benchmark: the whole-network spectral report (SPEC §5) against a dense-eigensolver baseline.

    python benchmarks/spectral.py                       # VGG-16 and ResNet-34, 5 densities
    python benchmarks/spectral.py --models vgg16 --densities 0.01 0.4 --repeat 5
    python benchmarks/spectral.py --big                 # peak memory on two very large layers
    python benchmarks/spectral.py --reference-layer     # one layer the way the papers' code does it

For each model and density, a random mask (each weight kept with probability = density, seeded)
and the model's initial weights go through ``graphpai.spectral`` (timed: best wall-clock of
``--repeat`` runs, and the CPU time of that run), then through the baseline: the same quantities
with numpy's dense SVD (LAPACK gesdd, all singular values) of every layer matrix and every
degree-group subgraph, 0/1 and weighted. The script checks that both agree (largest difference
of sigma_1/sigma_2 over all layers) and prints one markdown row per point. The graph and the
weights are extracted once per model, outside the timings.

``--reference-layer`` times what the [RAM]/[FS] reference code does for one layer: the dense
(n_l + n_r)^2 bipartite adjacency and a full symmetric eigensolver (numpy ``eigvalsh``), for
VGG-16's ``features.27`` (4608 x 512).

``--big`` runs, each in a fresh subprocess, a 4096 x 25088 layer (the VGG-16 ImageNet fc shape)
at density 0.01 and an 11008 x 4096 layer at density 0.5, with Gaussian weights, and reports
wall time, tracemalloc's peak and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from _timing import best_of


def _machine() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs, load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")


def _random_masks(graph, density, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.random(layer.weight_shape, dtype=np.float32) < density
            for name, layer in graph.layers.items()}


def _top2_dense(a):
    if a.size == 0 or not a.any():
        return 0.0, 0.0
    s = np.linalg.svd(a, compute_uv=False)
    return float(s[0]), float(s[1]) if len(s) > 1 else 0.0


def baseline(graph, masks, weights):
    """sigma_1, sigma_2 of every layer and degree-group subgraph (0/1 and weighted) by dense SVD.

    Returns {layer: (s1, s2, ws1, ws2)} for the whole layers; the subgraphs are solved too (that
    is the work the report needs) but only timed.
    """
    out = {}
    for name, layer in graph.layers.items():
        m = np.asarray(masks[name]).reshape(layer.out_channels, -1)
        b = m.T.astype(np.float64)
        x = np.abs(weights[name].reshape(layer.out_channels, -1).T) * b
        rows, cols = b.any(axis=1), b.any(axis=0)
        out[name] = _top2_dense(b[rows][:, cols]) + _top2_dense(x[rows][:, cols])
        degree = b.sum(axis=1)
        for d in np.unique(degree):
            group = np.flatnonzero(degree == d)
            if d == 0 or len(group) < 2:
                continue
            sub = b[group]
            touched = sub.any(axis=0)
            _top2_dense(sub[:, touched])
            _top2_dense(x[group][:, touched])
    return out


def bench_models(models, densities, repeat, with_baseline, seed):
    from graphpai.spectral import spectral
    from graphpai.torch import models as zoo
    from graphpai.torch.extract import layer_weights, to_graph

    print(f"machine: {_machine()}")
    print("| model | density | layers | graphpai wall (s) | graphpai CPU (s) | baseline wall (s) "
          "| ratio | max abs diff sigma |")
    print("|---|---|---|---|---|---|---|---|")
    for name in models:
        model = zoo.build(name, seed=seed)
        graph = to_graph(model)
        weights = layer_weights(model)
        for density in densities:
            masks = _random_masks(graph, density, seed)
            best, cpu, report = best_of(lambda: spectral(graph, masks, weights), repeat)
            base, ratio, diff = "-", "-", "-"
            if with_baseline:
                t0 = time.perf_counter()
                ref = baseline(graph, masks, weights)
                base_wall = time.perf_counter() - t0
                base, ratio = f"{base_wall:.2f}", f"{base_wall / best:.1f}x"
                worst = 0.0
                for row in report.layers:
                    ours = (row.sigma_1, row.sigma_2, row.weighted_sigma_1, row.weighted_sigma_2)
                    pairs = zip(ours, ref[row.layer])
                    worst = max(worst, max(abs((a or 0.0) - b) for a, b in pairs))
                diff = f"{worst:.1e}"
            print(f"| {name} | {density} | {len(graph.layers)} | {best:.3f} | {cpu:.3f} | {base} "
                  f"| {ratio} | {diff} |", flush=True)
    print(f"machine after: {_machine()}")


def reference_layer():
    """One VGG-16 layer (4608 x 512) as the papers' code does it: dense adjacency + eigvalsh."""
    from graphpai.spectral import top_singular_values

    rng = np.random.default_rng(0)
    b = (rng.random((4608, 512)) < 0.1).astype(np.float64)
    n_l, n_r = b.shape
    t0 = time.perf_counter()
    adjacency = np.zeros((n_l + n_r, n_l + n_r))
    adjacency[:n_l, n_l:] = b
    adjacency[n_l:, :n_l] = b.T
    values = np.linalg.eigvalsh(adjacency)
    wall = time.perf_counter() - t0
    top = np.sort(np.abs(values))[::-1][:3]
    top_singular_values(b[:10])  # warm up (first-call setup)
    t0 = time.perf_counter()
    ours = top_singular_values(b)
    ours_wall = time.perf_counter() - t0
    print(f"machine: {_machine()}")
    print(f"dense (n_l + n_r)^2 adjacency + eigvalsh, 4608 x 512 at density 0.1: {wall:.2f} s "
          f"(|eigenvalues| {top[0]:.6f}, {top[1]:.6f}, {top[2]:.6f}: sigma_1 twice, as +-sigma_1)")
    print(f"graphpai top_singular_values on the same matrix: {ours_wall:.3f} s "
          f"({ours[0]:.6f}, {ours[1]:.6f})")


_BIG = {"fc-25088x4096-0.01": ((4096, 25088), 0.01), "mlp-11008x4096-0.5": ((11008, 4096), 0.5)}


def _big_case(key):
    from graphpai.graph import Group, Layer, NetGraph
    from graphpai.spectral import spectral

    (n_out, n_in), density = _BIG[key]
    rng = np.random.default_rng(0)
    mask = rng.random((n_out, n_in), dtype=np.float32) < density
    weights = rng.standard_normal((n_out, n_in), dtype=np.float32).astype(np.float64)
    graph = NetGraph([Group("x", n_in), Group("y", n_out)],
                     [Layer("fc", "linear", (n_out, n_in), "x", "y")], [], ["x"], ["y"])
    inputs_mb = (mask.nbytes + weights.nbytes) / 2 ** 20
    tracemalloc.start()
    t0 = time.perf_counter()
    report = spectral(graph, {"fc": mask}, {"fc": weights})
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    row = report.layer("fc")
    print(f"| {n_out} x {n_in} | {density} | {row.E:,} | {wall:.1f} | {peak / 2 ** 20:.0f} "
          f"| {rss:.0f} | {inputs_mb:.0f} | {row.sigma_1:.4f} / {row.sigma_2:.4f} "
          f"| {row.imdb_subgraphs} / {row.fs_subgraphs} |", flush=True)


def bench_big():
    print(f"machine: {_machine()}")
    print("| layer (out x in) | density | edges | wall (s) | tracemalloc peak (MiB) "
          "| peak RSS (MiB) | mask + weights (MiB) | sigma_1 / sigma_2 "
          "| K_d scored ([RAM] / [FS]) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in _BIG:
        subprocess.run([sys.executable, __file__, "--big-case", key], check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet34"])
    parser.add_argument("--densities", nargs="+", type=float, default=[0.01, 0.05, 0.1, 0.2, 0.4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--big", action="store_true", help="peak memory on two very large layers")
    parser.add_argument("--big-case", choices=sorted(_BIG), help=argparse.SUPPRESS)
    parser.add_argument("--reference-layer", action="store_true")
    args = parser.parse_args(argv)
    if args.big_case:
        _big_case(args.big_case)
    elif args.big:
        bench_big()
    elif args.reference_layer:
        reference_layer()
    else:
        bench_models(args.models, args.densities, args.repeat, not args.no_baseline, args.seed)


if __name__ == "__main__":
    main()
