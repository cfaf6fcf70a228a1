"""Hypothesis strategies and tiny models shared by the tests.

- :func:`tiny_models`: small torch models covering the geometry graphpai must get exactly right
  (asymmetric 'same' padding, stride, dilation, groups, ceil-mode and adaptive pools, residual
  adds, concat, flatten).
- :func:`random_masks`: seeded random masks for a NetGraph at a given density.
- :func:`graph_and_mask`: hypothesis strategy of ``(NetGraph, MaskSet)`` pairs, from hand-built
  NetGraphs (MLPs, 1-d and 2-d conv chains with residuals and concat) and tiny torch models.

Others may append their own strategies; keep the existing ones stable.
"""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import strategies as st

from graphpai.graph import Group, Layer, Link, NetGraph
from graphpai.masks import MaskSet

# ---------------------------------------------------------------------------------------------
# tiny torch models (torch is imported lazily so core tests do not need it)
# ---------------------------------------------------------------------------------------------


def tiny_models():
    """name -> (model factory, input_shape) of small models covering every link kind."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class SameAsym(nn.Module):
        """Even kernels with padding='same' (asymmetric), dilation, stride, residual add."""

        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(2, 3, 2, padding="same")
            self.c2 = nn.Conv2d(3, 3, 3, padding="same", dilation=2, bias=False)
            self.c3 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
            self.pool = nn.MaxPool2d(2, ceil_mode=True)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            y = F.relu(self.c1(x))
            y = y + self.c2(y)
            y = self.pool(self.c3(y))
            return self.fc(torch.flatten(y, 1))

    class ConcatDAG(nn.Module):
        """Two branches concatenated, grouped conv, avg pool with padding, adaptive pool."""

        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 3, padding=1, bias=False)
            self.b = nn.Conv2d(2, 2, 1, bias=False)
            self.g = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
            self.pool = nn.AvgPool2d(3, stride=2, padding=1)
            self.head = nn.Conv2d(4, 3, 1)
            self.gap = nn.AdaptiveAvgPool2d((1, 2))
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], dim=1)
            y = self.pool(F.relu(self.g(y)))
            y = self.gap(self.head(y))
            return self.fc(y.flatten(1))

    class Conv1dNet(nn.Module):
        """1-d convs with stride, dilation and a global max over time."""

        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 3, 3, stride=2, padding=2, dilation=2)
            self.c2 = nn.Conv1d(3, 3, 2, padding=1, bias=False)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            y = self.c2(F.relu(self.c1(x)))
            return self.fc(F.adaptive_max_pool1d(y, 1).flatten(1))

    class TinyResNet(nn.Module):
        """A residual block with a strided 1x1 shortcut, BN, global average pool."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 2, 3, padding=1, bias=False)
            self.conv1 = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(3)
            self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.shortcut = nn.Conv2d(2, 3, 1, stride=2, bias=False)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            x = F.relu(self.stem(x))
            y = self.conv2(F.relu(self.bn1(self.conv1(x))))
            y = F.relu(y + self.shortcut(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))

    return {
        "same_asym": (SameAsym, (2, 5, 6)),
        "concat_dag": (ConcatDAG, (2, 5, 5)),
        "conv1d": (Conv1dNet, (2, 9)),
        "tiny_resnet": (TinyResNet, (1, 4, 4)),
    }


def custom_dag():
    """(model, input_shape): a mid-sized DAG (~240k weights) with a concat of four branches
    (1x1, 3x3, dilated 3x3, even-kernel 'same' conv), a grouped conv, a residual add, ceil-mode
    max pool and an adaptive pool: the custom-DAG case of the oracle tests."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class InceptionDAG(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
            self.b1 = nn.Conv2d(32, 16, 1, bias=False)
            self.b3 = nn.Conv2d(32, 24, 3, padding=1, bias=False)
            self.bd = nn.Conv2d(32, 16, 3, padding=2, dilation=2, bias=False)
            self.b4 = nn.Conv2d(32, 8, 4, padding="same", bias=False)
            self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.group = nn.Conv2d(64, 64, 3, padding=1, groups=4, bias=False)
            self.mix = nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False)
            self.res = nn.Conv2d(128, 128, 3, padding=1, bias=False)
            self.gap = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(512, 10)

        def forward(self, x):
            x = F.relu(self.stem(x))
            x = torch.cat([self.b1(x), self.b3(x), self.bd(x), self.b4(x)], dim=1)
            x = self.pool(F.relu(x))
            x = F.relu(self.group(x))
            x = F.relu(self.mix(x))
            x = x + self.res(x)
            return self.fc(torch.flatten(self.gap(x), 1))

    torch.manual_seed(0)
    return InceptionDAG(), (3, 16, 16)


@functools.lru_cache(maxsize=None)
def tiny_graph(name):
    """(NetGraph, model) of one of :func:`tiny_models`, seeded weights (cached: do not modify)."""
    import torch

    from graphpai.torch.extract import to_graph

    factory, shape = tiny_models()[name]
    torch.manual_seed(0)
    model = factory()
    return to_graph(model, shape), model


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------


def random_masks(graph, density, seed):
    """Bernoulli(density) masks for every layer of `graph` (seeded)."""
    rng = np.random.default_rng(seed)
    return MaskSet({name: rng.random(layer.weight_shape) < density
                    for name, layer in graph.layers.items()})


# ---------------------------------------------------------------------------------------------
# hand-built NetGraphs
# ---------------------------------------------------------------------------------------------


def mlp_graph(widths):
    """A dense MLP graph: widths[0] inputs, layers fc0, fc1, ..."""
    groups = [Group("x", widths[0])]
    layers = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        groups.append(Group(f"h{k}", b))
        layers.append(Layer(f"fc{k}", "linear", (b, a), groups[-2].name, f"h{k}"))
    return NetGraph(groups, layers, [], ["x"], [groups[-1].name])


def _conv(name, c_in, c_out, k, src, dst, size_in, size_out, stride=1, pad=(1, 1), dilation=1,
          groups=1):
    nd = len(size_in)
    return Layer(name, "conv", (c_out, c_in // groups) + (k,) * nd, src, dst,
                 stride=(stride,) * nd, padding=(pad,) * nd, dilation=(dilation,) * nd,
                 groups=groups, in_size=tuple(size_in), out_size=tuple(size_out))


def conv_graph(channels, size, residual, concat, nd):
    """A conv chain on a size^nd map: 3-tap convs with padding 1, optional residual add around
    the second conv and optional concat with a 1x1 branch, then a global pool and a classifier."""
    sz = (size,) * nd
    c = channels
    groups = [Group("x", 2, sz), Group("a", c, sz), Group("b", c, sz)]
    layers = [_conv("conv0", 2, c, 3, "x", "a", sz, sz), _conv("conv1", c, c, 3, "a", "b", sz, sz)]
    links = []
    last = "b"
    if residual:
        groups.append(Group("sum", c, sz))
        links.append(Link("sum", "add", ("a", "b"), "sum"))
        last = "sum"
    width = c
    if concat:
        groups += [Group("side", 1, sz), Group("cat", c + 1, sz)]
        layers.append(_conv("side", c, 1, 1, last, "side", sz, sz, pad=(0, 0)))
        links.append(Link("cat", "concat", (last, "side"), "cat"))
        last, width = "cat", c + 1
    groups += [Group("gap", width), Group("logits", 3)]
    links.append(Link("gap", "pool", (last,), "gap", {"mode": "avg", "adaptive": True,
                                                       "output_size": ()}))
    layers.append(Layer("fc", "linear", (3, width), "gap", "logits"))
    return NetGraph(groups, layers, links, ["x"], ["logits"])


@st.composite
def hand_graphs(draw):
    """A small hand-built NetGraph: an MLP or a 1-d/2-d conv chain."""
    kind = draw(st.sampled_from(["mlp", "conv"]))
    if kind == "mlp":
        widths = draw(st.lists(st.integers(1, 5), min_size=2, max_size=5))
        return mlp_graph(widths)
    return conv_graph(draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.booleans()),
                      draw(st.booleans()), draw(st.sampled_from([1, 2])))


@st.composite
def graph_and_mask(draw, torch_models=True):
    """(NetGraph, MaskSet): a hand-built graph or a tiny torch model, with a random mask."""
    use_torch = torch_models and draw(st.booleans())
    if use_torch:
        graph, _ = tiny_graph(draw(st.sampled_from(sorted(tiny_models()))))
    else:
        graph = draw(hand_graphs())
    density = draw(st.sampled_from([0.05, 0.2, 0.5, 0.8, 1.0]))
    seed = draw(st.integers(0, 2**16))
    return graph, random_masks(graph, density, seed)


def budget_masks(graph, compression, seed, backbone=0):
    """Random masks at overall `compression` with an ERK-like layerwise budget (density
    proportional to sum(shape) / prod(shape), capped at 1), exactly that many weights per layer:
    every layer keeps some weights even at 10^4, unlike uniform Bernoulli masks.

    With `backbone` > 0, each layer also keeps weight (o, o mod C_in, random tap) for its first
    `backbone` outputs, so that some signal tends to survive at high compression."""
    rng = np.random.default_rng(seed)
    layers = list(graph.layers.values())
    sizes = np.array([layer.numel for layer in layers], dtype=float)
    raw = np.array([sum(layer.weight_shape) / layer.numel for layer in layers])
    target = sizes.sum() / compression
    lo, hi = 0.0, 1.0 / raw.min()
    for _ in range(100):
        eps = (lo + hi) / 2
        if (np.minimum(1.0, eps * raw) * sizes).sum() < target:
            lo = eps
        else:
            hi = eps
    counts = np.maximum(1, np.round(np.minimum(1.0, hi * raw) * sizes)).astype(int)
    masks = {}
    for layer, k in zip(layers, counts):
        flat = np.zeros(layer.numel, dtype=bool)
        flat[rng.permutation(layer.numel)[:k]] = True
        mask = flat.reshape(layer.weight_shape)
        c_out, c_in_g = layer.weight_shape[:2]
        outs = np.arange(min(backbone, c_out))
        taps = [rng.integers(0, k, size=len(outs)) for k in layer.weight_shape[2:]]
        mask[(outs, outs % c_in_g, *taps)] = True
        masks[layer.name] = mask
    return MaskSet(masks)
