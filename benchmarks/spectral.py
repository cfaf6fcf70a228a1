"""Benchmark: the whole-network spectral report against a vectorised restatement and the Gram floor.

    python benchmarks/spectral.py                       # the issue-15 table (all points below)
    python benchmarks/spectral.py --points cifar-vgg16:0.01 llm-mlp:0.5 --repeat 3
    python benchmarks/spectral.py --big                 # peak memory on two very large layers
    python benchmarks/spectral.py --reference-layer     # one layer the way the papers' code does it
    python benchmarks/spectral.py --policy              # layer pool against BLAS threads

Points (name:density): CIFAR VGG-16 at 0.01/0.05/0.1/0.2/0.4, ImageNet ResNet-50 and ImageNet
VGG-16 (built here: torchvision is not a dependency) at 0.01 and 0.1, with RPI-ERK masks (ERK
budget at that density, weights placed uniformly at random, seed 0) and the models' initial
weights; and one 11008 x 4096 LLM MLP layer at density 0.5 (RPI, Gaussian weights).

For each point, in one interleaved loop (each round runs the three in turn, half a second
apart so that no run inherits the previous one's spinning BLAS threads, the best round of
each is reported, so load spikes on a shared machine hit all three alike; with
``--restatement-once`` the restatement, minutes long at the big points, runs in the first round
only; one small report runs before the table, so that no point pays the process's start-up):

- **graphpai**: ``graphpai.spectral(graph, masks, weights)``, every quantity of every layer;
- **restatement**: the same singular values computed straight from the definitions in vectorised
  numpy: for every layer and every degree-group subgraph K_d that a gate can score (>= 2 fan-in
  positions of degree d >= 3), 0/1 and weighted, the float64 Gram matrix of the smaller side and
  ``numpy.linalg.eigvalsh`` (all eigenvalues), the K_d of equal Gram size stacked in one call;
- **Gram floor**: one float32 Gram product of each whole 0/1 layer's smaller side (the least work
  an exact top-2 by a dense method needs; no subgraph, no weights).

The script checks that graphpai and the restatement agree (largest relative difference of the
whole-layer sigma_1/sigma_2, 0/1 and weighted) and prints one markdown row per point, with
graphpai's CPU time (all threads) in its best round beside its wall time: on a machine shared
with other jobs the CPU time moves less. ``--skip-restatement POINT ...`` leaves the restatement
out at those points (it takes 10-30 minutes at ImageNet VGG-16 on a loaded 2-core machine).
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

# this tree's graphpai first, so that an A/B of two checkouts runs each one's code
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _machine() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs, load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")


def imagenet_vgg16():
    """ImageNet VGG-16 (13 3x3 convs, 25088-4096-4096-1000 classifier) as a plain nn.Sequential."""
    import torch.nn as nn

    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
            "M"]
    layers, channels = [], 3
    for v in plan:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(25088, 4096), nn.ReLU(),
                          nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))
    model.input_shape = (3, 224, 224)
    return model


def workload(name, density, seed=0):
    """(graph, masks, weights) of one benchmark point (see the module docstring)."""
    from graphpai import budgets
    from graphpai.generators import rpi
    from graphpai.graph import Group, Layer, NetGraph
    from graphpai.torch import models as zoo
    from graphpai.torch.extract import layer_weights, to_graph

    if name == "llm-mlp":
        graph = NetGraph([Group("x", 4096), Group("y", 11008)],
                         [Layer("up_proj", "linear", (11008, 4096), "x", "y")], [], ["x"], ["y"])
        masks = rpi(graph, budgets.uniform(graph, density=density), seed=seed)
        rng = np.random.default_rng(seed)
        weights = {"up_proj": rng.standard_normal((11008, 4096), dtype=np.float32)
                   .astype(np.float64)}
        return graph, masks, weights
    if name == "imagenet-vgg16":
        import torch

        torch.manual_seed(seed)
        model = imagenet_vgg16()
    elif name == "imagenet-resnet50":
        model = zoo.build("resnet50", num_classes=1000, seed=seed)
    elif name == "cifar-vgg16":
        model = zoo.build("vgg16", seed=seed)
    else:
        raise SystemExit(f"unknown point {name!r}")
    graph = to_graph(model)
    masks = rpi(graph, budgets.erk(graph, density=density), seed=seed)
    return graph, masks, layer_weights(model)


def _top2_gram(grams):
    """sqrt of the two largest eigenvalues of each Gram in a stack (numpy eigvalsh)."""
    values = np.sqrt(np.clip(np.linalg.eigvalsh(grams)[..., ::-1][..., :2], 0, None))
    if values.shape[-1] < 2:
        values = np.concatenate([values, np.zeros(values.shape[:-1] + (1,))], axis=-1)
    return values


def _gram(a):
    return a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T


def restatement(graph, masks, weights):
    """sigma_1, sigma_2 of every layer and gate-eligible degree-group subgraph, 0/1 and
    weighted, from the definitions in vectorised numpy. Returns {layer: (s1, s2, ws1, ws2)}."""
    out = {}
    for name, layer in graph.layers.items():
        m = np.asarray(masks[name]).reshape(layer.out_channels, -1)
        rows, cols = m.any(axis=1), m.any(axis=0)
        b = m[rows][:, cols].astype(np.float64)               # M: outputs x fan-in positions
        x = np.abs(weights[name].reshape(layer.out_channels, -1)[rows][:, cols]) * b
        whole = _top2_gram(np.stack([_gram(b), _gram(x)]))
        out[name] = (*whole[0], *whole[1])
        degree = b.sum(axis=0)
        stacks = {}
        for d in np.unique(degree):
            group = np.flatnonzero(degree == d)
            if d < 3 or len(group) < 2:
                continue
            touched = b[:, group].any(axis=1)
            sub_b, sub_x = b[touched][:, group], x[touched][:, group]
            stacks.setdefault(min(sub_b.shape), []).extend([_gram(sub_b), _gram(sub_x)])
        for grams in stacks.values():
            _top2_gram(np.stack(grams))
    return out


def gram_floor(graph, masks):
    """One float32 Gram product of each whole 0/1 layer's smaller side."""
    for name, layer in graph.layers.items():
        m = np.asarray(masks[name]).reshape(layer.out_channels, -1).astype(np.float32)
        _gram(m)


POINTS = ["cifar-vgg16:0.01", "cifar-vgg16:0.05", "cifar-vgg16:0.1", "cifar-vgg16:0.2",
          "cifar-vgg16:0.4", "imagenet-resnet50:0.01", "imagenet-resnet50:0.1",
          "imagenet-vgg16:0.01", "imagenet-vgg16:0.1", "llm-mlp:0.5"]


_SETTLE = 0.5  # seconds between runs: OpenBLAS's threads spin for a while after a parallel call
# (the restatement's and the floor's), taking a core from the next run and counting as its CPU


def _warm_up():
    """One small report first: a process's first report imports and starts up (lazy imports,
    BLAS and thread pools), which no point should be charged for."""
    from graphpai import Group, Layer, NetGraph
    from graphpai.spectral import spectral

    graph = NetGraph([Group("x", 64, (8, 8)), Group("y", 128, (8, 8))],
                     [Layer("conv", "conv", (128, 64, 3, 3), "x", "y")], [], ["x"], ["y"])
    rng = np.random.default_rng(0)
    spectral(graph, {"conv": rng.random((128, 64, 3, 3)) < 0.1},
             {"conv": rng.standard_normal((128, 64, 3, 3))})


def bench_points(points, repeat, seed, skip=(), restatement_once=False):
    from graphpai.spectral import spectral

    _warm_up()
    print(f"machine: {_machine()}")
    print("| point | layers | graphpai (s) | graphpai CPU (s) | restatement (s) | Gram floor (s) "
          "| restatement / graphpai | graphpai / floor | max rel diff sigma |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    built = {}
    for point in points:
        name, density = point.split(":")
        density = float(density)
        if (name, density) not in built:
            built = {(name, density): workload(name, density, seed)}
        graph, masks, weights = built[(name, density)]
        best = [np.inf, np.inf, np.inf]
        cpu = np.inf
        report = ref = None
        runs = [lambda: spectral(graph, masks, weights),
                None if point in skip else lambda: restatement(graph, masks, weights),
                lambda: gram_floor(graph, masks)]
        for round_ in range(repeat):
            for i, fn in enumerate(runs):
                if fn is None or (i == 1 and restatement_once and round_):
                    continue
                time.sleep(_SETTLE)  # the previous run's BLAS threads stop spinning first
                start, start_cpu = time.perf_counter(), time.process_time()
                result = fn()
                wall = time.perf_counter() - start
                if i == 0 and wall < best[0]:
                    cpu = time.process_time() - start_cpu
                best[i] = min(best[i], wall)
                if i == 0:
                    report = result
                elif i == 1:
                    ref = result
        ours, base, floor = best
        if ref is None:
            print(f"| {point} | {len(graph.layers)} | {ours:.2f} | {cpu:.2f} | (not run) "
                  f"| {floor:.2f} | | {ours / floor:.1f}x | |", flush=True)
            continue
        worst = 0.0
        for row in report.layers:
            mine = (row.sigma_1, row.sigma_2, row.weighted_sigma_1, row.weighted_sigma_2)
            scale = max(ref[row.layer][0], 1e-300), max(ref[row.layer][2], 1e-300)
            for j, (a, b) in enumerate(zip(mine, ref[row.layer])):
                worst = max(worst, abs((a or 0.0) - b) / scale[j // 2])
        print(f"| {point} | {len(graph.layers)} | {ours:.2f} | {cpu:.2f} | {base:.2f} "
              f"| {floor:.2f} | {base / ours:.1f}x | {ours / floor:.1f}x | {worst:.1e} |",
              flush=True)
    print(f"machine after: {_machine()}")


def bench_policy(points, repeat, seed):
    """Layers in parallel against BLAS threads: the default (a pool of layer workers where the
    network keeps enough weights, BLAS on one thread) against one layer at a time with BLAS on
    every core, interleaved. Inside a layer, the 0/1 and weighted solves of a big layer and its
    K_d solved one by one still run in two threads of one BLAS thread each, in both."""
    import contextlib

    from graphpai.spectral import report
    from graphpai.spectral import spectral

    print(f"machine: {_machine()}")
    print("| point | default: layer pool where it pays, 1 BLAS thread (s) | one layer at a time, "
          f"BLAS on {os.cpu_count()} threads (s) | ratio |")
    print("|---|---:|---:|---:|")
    real = report.one_blas_thread
    for point in points:
        name, density = point.split(":")
        graph, masks, weights = workload(name, float(density), seed)
        best = [np.inf, np.inf]
        for _ in range(repeat):
            for i in range(2):
                report.one_blas_thread = real if i == 0 else contextlib.nullcontext
                start = time.perf_counter()
                try:
                    spectral(graph, masks, weights, workers=None if i == 0 else 1)
                finally:
                    report.one_blas_thread = real
                best[i] = min(best[i], time.perf_counter() - start)
        print(f"| {point} | {best[0]:.2f} | {best[1]:.2f} | {best[1] / best[0]:.2f}x |",
              flush=True)
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
    parser.add_argument("--points", nargs="+", default=POINTS, help="name:density (see above)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-restatement", nargs="*", default=[], metavar="POINT",
                        help="points where the restatement is not run")
    parser.add_argument("--restatement-once", action="store_true",
                        help="the restatement in the first round only (graphpai and the floor "
                             "in every round)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--big", action="store_true", help="peak memory on two very large layers")
    parser.add_argument("--big-case", choices=sorted(_BIG), help=argparse.SUPPRESS)
    parser.add_argument("--reference-layer", action="store_true")
    parser.add_argument("--policy", action="store_true",
                        help="layers in parallel (1 BLAS thread each) against one layer at a "
                             "time with BLAS on every core")
    args = parser.parse_args(argv)
    if args.big_case:
        _big_case(args.big_case)
    elif args.big:
        bench_big()
    elif args.reference_layer:
        reference_layer()
    elif args.policy:
        bench_policy(args.points, args.repeat, args.seed)
    else:
        bench_points(args.points, args.repeat, args.seed, set(args.skip_restatement),
                     args.restatement_once)


if __name__ == "__main__":
    main()
