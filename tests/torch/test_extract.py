"""nn.Module -> NetGraph (graphpai/torch/extract.py; docs/definitions.md#graph).

The expected structure of every zoo model is derived here from its architecture plan (widths,
strides, block layout), and the geometry of every conv is checked against torch itself (a conv
rebuilt from the Layer's padding pairs, stride, dilation and groups must reproduce the module).
"""

from __future__ import annotations

import functools
import warnings
from math import prod

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphpai.errors import GraphpaiError, ModelError, UnsupportedOpError
from graphpai.graph import Layer, NetGraph, as_graph
from graphpai.masks import MaskSet
from graphpai.torch import models
from graphpai.torch.extract import layer_weights, prunable_modules, to_graph
from graphpai.torch.masks import apply_masks

warnings.filterwarnings("ignore", message="Using padding='same'")


@functools.lru_cache(maxsize=None)
def zoo(name, **options):
    """(model, graph) of a zoo model, built once per test session."""
    model = models.build(name, seed=0, **options)
    return model, to_graph(model)


def links_of(graph, kind):
    return [link for link in graph.links if link.kind == kind]


def check_consistency(graph: NetGraph):
    """Every op agrees with the groups it reads and writes (channels, sizes, conv arithmetic)."""
    for layer in graph.layers.values():
        src, tgt = graph.groups[layer.source], graph.groups[layer.target]
        assert src.channels == layer.in_channels and tgt.channels == layer.out_channels, layer.name
        if layer.kind == "linear":
            assert src.size == () and tgt.size == () and len(layer.weight_shape) == 2
            continue
        assert src.size == layer.in_size and tgt.size == layer.out_size, layer.name
        for n, (before, after), d, k, s, out in zip(layer.in_size, layer.padding, layer.dilation,
                                                    layer.kernel, layer.stride, layer.out_size):
            assert out == (n + before + after - d * (k - 1) - 1) // s + 1, layer.name
    for link in graph.links:
        srcs = [graph.groups[s] for s in link.sources]
        tgt = graph.groups[link.target]
        if link.kind == "add":
            assert all((s.channels, s.size) == (tgt.channels, tgt.size) for s in srcs)
        elif link.kind == "concat":
            assert tgt.channels == sum(s.channels for s in srcs)
        elif link.kind == "flatten":
            assert tgt.size == () and tgt.channels == srcs[0].numel
        elif link.kind == "pool":
            assert tgt.channels == srcs[0].channels
    ready = set(graph.inputs)
    for op in graph.order:
        assert set(graph.sources(op)) <= ready
        ready.add(op.target)


def check_shapes_against_torch(model, graph, input_shape):
    """Input/output shapes of every prunable module in a real forward equal the graph's."""
    seen = {}
    hooks = [m.register_forward_hook(
        lambda mod, args, out, name=name: seen.__setitem__(name, (args[0].shape[1:], out.shape[1:])))
        for name, m in prunable_modules(model).items()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape)))
    finally:
        for h in hooks:
            h.remove()
    assert set(seen) == set(graph.layers)
    for name, (shape_in, shape_out) in seen.items():
        layer = graph.layers[name]
        assert tuple(shape_in) == (layer.in_channels,) + layer.in_size, name
        assert tuple(shape_out) == (layer.out_channels,) + layer.out_size, name


def check_geometry_against_torch(model, graph, input_shape, seed=0):
    """F.pad with the Layer's (before, after) pairs + an unpadded conv reproduces each module."""
    gen = torch.Generator().manual_seed(seed)
    for name, module in prunable_modules(model).items():
        layer = graph.layers[name]
        if layer.kind == "linear":
            continue
        x = torch.randn((1, layer.in_channels) + layer.in_size, generator=gen)
        pad = [p for pair in reversed(layer.padding) for p in pair]  # last dim first
        conv = F.conv2d if len(layer.kernel) == 2 else F.conv1d
        with torch.no_grad():
            expected = module(x)
            rebuilt = conv(F.pad(x, pad), module.weight, module.bias, stride=layer.stride,
                           dilation=layer.dilation, groups=layer.groups)
        torch.testing.assert_close(rebuilt, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ VGG
VGG_PLANS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512],
}


@pytest.mark.parametrize("name", sorted(VGG_PLANS))
def test_vgg_graph_follows_the_plan(name):
    plan = VGG_PLANS[name]
    _, g = zoo(name)
    # walk the plan: conv/BN/ReLU take 3 indices in `features`, a max-pool one
    index, c_in, size, previous = 0, 3, 32, "input"
    convs, pools = {}, {}
    for item in plan:
        if item == "M":
            pools[f"features.{index}"] = (previous, size // 2)
            previous, size, index = f"features.{index}", size // 2, index + 1
        else:
            convs[f"features.{index}"] = ((item, c_in, 3, 3), previous, size)
            previous, c_in, index = f"features.{index}", item, index + 3
    assert list(g.layers) == list(convs) + ["classifier"]
    assert len(g.layers) == len([p for p in plan if p != "M"]) + 1
    for layer_name, (shape, source, s) in convs.items():
        layer = g.layers[layer_name]
        assert (layer.kind, layer.weight_shape, layer.source) == ("conv", shape, source)
        assert (layer.in_size, layer.out_size) == ((s, s), (s, s))
        assert layer.padding == ((1, 1), (1, 1)) and layer.stride == (1, 1)
        assert layer.groups == 1 and layer.dilation == (1, 1) and not layer.bias
    assert len(links_of(g, "pool")) == plan.count("M") + 1 and len(g.links) == plan.count("M") + 2
    for pool_name, (source, s) in pools.items():
        link = next(k for k in g.links if k.name == pool_name)
        assert link.kind == "pool" and link.sources == (source,)
        assert link.params["mode"] == "max" and link.params["kernel"] == (2, 2)
        assert link.params["stride"] == (2, 2) and g.groups[link.target].size == (s, s)
    avg = next(k for k in g.links if k.name == "avgpool")
    assert avg.params["mode"] == "avg" and avg.params["kernel"] == (2, 2)
    assert avg.sources == (previous,) and g.groups[avg.target].size == (1, 1)
    (flat,) = links_of(g, "flatten")
    assert flat.sources == ("avgpool",) and g.groups[flat.target].channels == 512
    assert np.array_equal(g.link_matrix(flat).toarray(), np.eye(512))  # 512x1x1 -> 512 features
    fc = g.layers["classifier"]
    assert (fc.kind, fc.weight_shape, fc.source, fc.bias) == ("linear", (10, 512), flat.target, True)
    assert g.outputs == ("classifier",) and g.inputs == ("input",)
    # groups: input + convs + max-pools + avgpool + flatten + classifier
    assert len(g.groups) == 1 + len(convs) + len(pools) + 3
    widths = [3] + [p for p in plan if p != "M"]
    assert g.num_weights == sum(9 * a * b for a, b in zip(widths, widths[1:])) + 512 * 10
    check_consistency(g)


def test_vgg16_matches_the_spec_numbers_and_torch_shapes():
    model, g = zoo("vgg16")
    assert len(g.layers) == 14 and g.num_weights == 14_715_584
    assert len(links_of(g, "pool")) == 5 and len(links_of(g, "flatten")) == 1
    check_shapes_against_torch(model, g, (3, 32, 32))


# ------------------------------------------------------------------------------ CIFAR ResNets
def cifar_resnet_plan(depth, width=16):
    """The open_lth ResNet: layers {name: (shape, stride, padding, in size)} and blocks
    [(block, width, out size, shortcut conv or None for identity)]."""
    n = (depth - 2) // 6
    layers = {"conv": ((width, 3, 3, 3), 1, 1, 32)}
    blocks, c_in, size = [], width, 32
    for stage in range(3):
        w = width * 2 ** stage
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            block = f"layer{stage + 1}.{b}"
            layers[f"{block}.conv1"] = ((w, c_in, 3, 3), stride, 1, size)
            layers[f"{block}.conv2"] = ((w, w, 3, 3), 1, 1, size // stride)
            shortcut = None
            if stride != 1 or c_in != w:
                shortcut = f"{block}.shortcut.0"
                layers[shortcut] = ((w, c_in, 1, 1), stride, 0, size)
            size //= stride
            blocks.append((block, w, size, shortcut))
            c_in = w
    layers["fc"] = ((10, c_in), None, None, None)
    return layers, blocks


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_cifar_resnet_graph_follows_the_plan(depth):
    _, g = zoo(f"resnet{depth}")
    plan, blocks = cifar_resnet_plan(depth)
    n = (depth - 2) // 6
    assert sorted(g.layers) == sorted(plan)
    assert len(g.layers) == 6 * n + 1 + 2 + 1  # convs + 2 shortcut convs + fc
    assert len(links_of(g, "add")) == 3 * n == len(blocks)
    previous = "conv"  # the group each block reads: the stem, then the previous block's sum
    for block, w, size, shortcut in blocks:
        conv1, conv2 = g.layers[f"{block}.conv1"], g.layers[f"{block}.conv2"]
        assert conv1.source == previous and conv2.source == f"{block}.conv1"
        (add,) = [k for k in links_of(g, "add") if f"{block}.conv2" in k.sources]
        if shortcut is None:
            assert set(add.sources) == {f"{block}.conv2", previous}, block
        else:
            assert set(add.sources) == {f"{block}.conv2", shortcut}, block
            assert g.layers[shortcut].source == previous
        assert (g.groups[add.target].channels, g.groups[add.target].size) == (w, (size, size))
        previous = add.target
    for name, (shape, stride, pad, size) in plan.items():
        layer = g.layers[name]
        assert layer.weight_shape == shape, name
        if stride is not None:
            assert layer.stride == (stride, stride) and layer.in_size == (size, size), name
            assert layer.padding == ((pad, pad), (pad, pad)), name
    strided = sorted(name for name, layer in g.layers.items() if layer.stride == (2, 2))
    assert strided == ["layer2.0.conv1", "layer2.0.shortcut.0", "layer3.0.conv1", "layer3.0.shortcut.0"]
    (pool,) = links_of(g, "pool")
    assert pool.sources == (previous,) and pool.params["output_size"] == (1, 1)
    assert pool.params["mode"] == "avg"
    (flat,) = links_of(g, "flatten")
    assert flat.sources == (pool.target,) and g.groups[pool.target].size == (1, 1)
    assert g.groups[flat.target].channels == 64
    assert np.array_equal(g.link_matrix(flat).toarray(), np.eye(64))  # 64x1x1 -> 64 features
    assert g.layers["fc"].source == flat.target and g.outputs == ("fc",)
    assert len(g.groups) == 1 + len(plan) + len(blocks) + 2
    assert g.num_weights == sum(prod(shape) for shape, *_ in plan.values())
    check_consistency(g)


def test_resnet20_numbers_and_torch_shapes():
    model, g = zoo("resnet20")
    assert len(g.layers) == 22 and len(links_of(g, "add")) == 9 and g.num_weights == 270_896
    check_shapes_against_torch(model, g, (3, 32, 32))
    check_geometry_against_torch(model, g, (3, 32, 32))


# ------------------------------------------------------------------------------ ImageNet ResNets
IMAGENET = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
            "resnet50": ((3, 4, 6, 3), True)}


@pytest.mark.parametrize("name", sorted(IMAGENET))
def test_imagenet_resnet_graph_follows_the_plan(name):
    stages, bottleneck = IMAGENET[name]
    _, g = zoo(name)
    stem = g.layers["conv1"]
    assert (stem.weight_shape, stem.stride, stem.padding) == ((64, 3, 7, 7), (2, 2), ((3, 3), (3, 3)))
    assert (stem.in_size, stem.out_size) == ((224, 224), (112, 112))
    maxpool = next(k for k in g.links if k.name == "maxpool")
    assert maxpool.sources == ("conv1",) and maxpool.params["mode"] == "max"
    assert (maxpool.params["kernel"], maxpool.params["stride"]) == ((3, 3), (2, 2))
    assert maxpool.params["padding"] == ((1, 1), (1, 1)) and g.groups["maxpool"].size == (56, 56)
    previous, c_in, size, expansion = "maxpool", 64, 56, 4 if bottleneck else 1
    n_layers, downsamples = 1, []
    for stage, blocks in enumerate(stages):
        planes = 64 * 2 ** stage
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            block = f"layer{stage + 1}.{b}"
            if bottleneck:
                convs = [(f"{block}.conv1", (planes, c_in, 1, 1), 1),
                         (f"{block}.conv2", (planes, planes, 3, 3), stride),
                         (f"{block}.conv3", (planes * 4, planes, 1, 1), 1)]
            else:
                convs = [(f"{block}.conv1", (planes, c_in, 3, 3), stride),
                         (f"{block}.conv2", (planes, planes, 3, 3), 1)]
            source = previous
            for conv, shape, s in convs:
                layer = g.layers[conv]
                assert (layer.weight_shape, layer.stride, layer.source) == (shape, (s, s), source), conv
                source = conv
            out = planes * expansion
            residual = previous  # identity shortcut: the block's input
            if stride != 1 or c_in != out:
                residual = f"{block}.downsample.0"
                down = g.layers[residual]
                assert down.weight_shape == (out, c_in, 1, 1) and down.stride == (stride, stride)
                assert down.source == previous and down.padding == ((0, 0), (0, 0))
                downsamples.append(block)
            (add,) = [k for k in links_of(g, "add") if convs[-1][0] in k.sources]
            assert set(add.sources) == {convs[-1][0], residual}, block
            size //= stride
            assert g.groups[add.target].size == (size, size) and g.groups[add.target].channels == out
            previous, c_in = add.target, out
            n_layers += len(convs) + residual.endswith(".downsample.0")
    expected_down = ["layer1.0", "layer2.0", "layer3.0", "layer4.0"] if bottleneck else \
        ["layer2.0", "layer3.0", "layer4.0"]
    assert downsamples == expected_down
    assert len(g.layers) == n_layers + 1 == {"resnet18": 21, "resnet34": 37, "resnet50": 54}[name]
    assert len(links_of(g, "add")) == sum(stages)
    assert size == 7
    avg = next(k for k in g.links if k.name == "avgpool")
    assert avg.sources == (previous,) and g.groups["avgpool"].size == (1, 1)
    (flat,) = links_of(g, "flatten")
    assert g.groups[flat.target].channels == c_in == 512 * expansion
    assert g.layers["fc"].weight_shape == (10, c_in)
    check_consistency(g)


def test_resnet18_cifar_stem_has_no_maxpool():
    model, g = zoo("resnet18", cifar_stem=True)
    stem = g.layers["conv1"]
    assert (stem.weight_shape, stem.stride, stem.in_size) == ((64, 3, 3, 3), (1, 1), (32, 32))
    assert [k.name for k in links_of(g, "pool")] == ["avgpool"]
    assert g.layers["layer1.0.conv1"].source == "conv1"
    assert g.groups[g.layers["layer4.1.conv2"].target].size == (4, 4)
    check_consistency(g)


# ------------------------------------------------------------------------------ LeNets, MLP
def test_lenet5_graph():
    model, g = zoo("lenet5")
    assert list(g.layers) == ["features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"]
    c1, c2 = g.layers["features.0"], g.layers["features.3"]
    assert (c1.weight_shape, c1.padding, c1.in_size, c1.out_size, c1.bias) == (
        (6, 1, 5, 5), ((2, 2), (2, 2)), (28, 28), (28, 28), True)
    assert (c2.weight_shape, c2.padding, c2.in_size, c2.out_size) == (
        (16, 6, 5, 5), ((0, 0), (0, 0)), (14, 14), (10, 10))
    assert [k.name for k in links_of(g, "pool")] == ["features.2", "features.5"]
    assert c2.source == "features.2" and g.groups["features.5"].size == (5, 5)
    (flat,) = links_of(g, "flatten")
    assert flat.sources == ("features.5",) and g.groups[flat.target].channels == 400
    expected = np.zeros((400, 16))
    for c in range(16):
        expected[25 * c: 25 * (c + 1), c] = 1  # channel c of 5x5 -> features 25c .. 25c + 24
    assert np.array_equal(g.link_matrix(flat).toarray(), expected)
    shapes = [g.layers[f"classifier.{i}"].weight_shape for i in (0, 2, 4)]
    assert shapes == [(120, 400), (84, 120), (10, 84)]
    assert len(g.groups) == 9 and g.num_weights == 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 84 + 840
    check_consistency(g)
    check_shapes_against_torch(model, g, (1, 28, 28))
    check_geometry_against_torch(model, g, (1, 28, 28))


@pytest.mark.parametrize("name, widths", [("lenet300_100", (300, 100)), ("mlp", (100, 100))])
def test_mlp_graphs(name, widths):
    _, g = zoo(name)
    (flat,) = g.links
    assert flat.kind == "flatten" and flat.sources == ("input",) and g.groups["input"].size == (28, 28)
    assert g.groups[flat.target].channels == 784
    sizes = (784,) + widths + (10,)
    names = [f"features.{2 * i}" for i in range(len(widths))] + ["classifier"]
    assert list(g.layers) == names
    source = flat.target
    for layer_name, (a, b) in zip(names, zip(sizes, sizes[1:])):
        layer = g.layers[layer_name]
        assert (layer.kind, layer.weight_shape, layer.source) == ("linear", (b, a), source)
        source = layer_name
    assert g.num_weights == sum(a * b for a, b in zip(sizes, sizes[1:]))
    check_consistency(g)


# ------------------------------------------------------------------------------ custom models
class DAG(nn.Module):
    """Concat, grouped, depthwise + dilated, even-kernel 'same', a 1x1 shortcut sum, functional
    avg-pool, x.mean((2, 3)) global pool and x.view(x.size(0), -1) flatten, two heads summed."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.same = nn.Conv2d(8, 8, 4, padding="same", bias=False)
        self.dw = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.proj = nn.Conv2d(8, 16, 1, bias=False)
        self.down = nn.Conv2d(16, 12, 1, stride=2)
        self.fc = nn.Linear(12 * 4 * 4, 5)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = torch.cat([self.grouped(x), self.same(x)], dim=1)
        y = F.relu(self.bn(self.dw(y)) + self.proj(x))
        y = self.down(y)
        z = F.avg_pool2d(y, 2)
        flat = z.view(z.size(0), -1)
        pooled = z.mean((2, 3))
        return self.fc(flat) + self.head(pooled)


DAG_SHAPE = (3, 16, 16)


def test_custom_dag_graph():
    model = DAG()
    g = to_graph(model, DAG_SHAPE)
    L = g.layers
    assert set(L) == {"stem", "grouped", "same", "dw", "proj", "down", "fc", "head"}
    assert (L["grouped"].groups, L["grouped"].weight_shape, L["grouped"].in_channels) == (2, (8, 4, 3, 3), 8)
    assert (L["dw"].groups, L["dw"].weight_shape, L["dw"].dilation) == (16, (16, 1, 3, 3), (2, 2))
    assert L["dw"].padding == ((2, 2), (2, 2))
    # 'same' with a 4x4 kernel pads 3 per dimension: 1 before, 2 after (PyTorch puts the extra
    # pixel at the end)
    assert L["same"].padding == ((1, 2), (1, 2)) and L["same"].out_size == (16, 16)
    assert (L["down"].stride, L["down"].out_size) == ((2, 2), (8, 8))
    (cat,) = links_of(g, "concat")
    assert cat.sources == ("grouped", "same") and g.groups[cat.target].channels == 16
    assert L["dw"].source == cat.target
    adds = links_of(g, "add")
    assert len(adds) == 2
    (residual,) = [k for k in adds if "dw" in k.sources]
    assert set(residual.sources) == {"dw", "proj"} and L["proj"].source == "stem"
    assert L["down"].source == residual.target
    (logits,) = [k for k in adds if "fc" in k.sources]
    assert set(logits.sources) == {"fc", "head"} and g.outputs == (logits.target,)
    assert len(links_of(g, "pool")) == 2
    avg = [k for k in links_of(g, "pool") if k.sources == ("down",)][0]
    assert avg.params["mode"] == "avg" and avg.params["kernel"] == (2, 2) and avg.params["functional"]
    assert g.groups[avg.target].size == (4, 4)
    (mean,) = [k for k in links_of(g, "pool") if k.sources == (avg.target,)]
    assert g.groups[mean.target].size == () and g.groups[mean.target].channels == 12
    assert mean.params["output_size"] == () and L["head"].source == mean.target
    assert np.array_equal(g.link_matrix(mean).toarray(), np.eye(12))
    (flat,) = links_of(g, "flatten")
    assert flat.sources == (avg.target,) and L["fc"].source == flat.target
    expected = np.zeros((192, 12))
    for c in range(12):
        expected[16 * c: 16 * (c + 1), c] = 1
    assert np.array_equal(g.link_matrix(flat).toarray(), expected)
    assert len(g.links) == 6 and len(g.layers) == 8
    assert g.num_weights == sum(m.weight.numel() for m in prunable_modules(model).values())
    check_consistency(g)
    check_shapes_against_torch(model, g, DAG_SHAPE)
    check_geometry_against_torch(model, g, DAG_SHAPE)


class Seq1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.c2 = nn.Conv1d(6, 8, 5, stride=2, padding="valid")
        self.c3 = nn.Conv1d(8, 8, 2, padding="same", dilation=3, bias=False)
        self.fc = nn.Linear(8 * 3, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.c1(x)))
        x = self.c3(self.c2(x))
        return self.fc(torch.flatten(x, 1))


def test_conv1d_graph():
    model = Seq1d()
    g = to_graph(model, (4, 20))
    c1, c2, c3 = g.layers["c1"], g.layers["c2"], g.layers["c3"]
    assert (c1.weight_shape, c1.in_size, c1.out_size, c1.padding) == ((6, 4, 3), (20,), (20,), ((1, 1),))
    pool = next(k for k in g.links if k.name == "pool")
    assert pool.params["kernel"] == (2,) and g.groups["pool"].size == (10,)
    # valid padding, stride 2: (10 - 5) // 2 + 1 = 3
    assert (c2.source, c2.stride, c2.padding, c2.out_size) == ("pool", (2,), ((0, 0),), (3,))
    # 'same' with kernel 2, dilation 3: total padding 3 = 1 before + 2 after
    assert (c3.padding, c3.dilation, c3.out_size) == (((1, 2),), (3,), (3,))
    (flat,) = links_of(g, "flatten")
    assert g.groups[flat.target].channels == 24 and g.layers["fc"].source == flat.target
    check_consistency(g)
    check_shapes_against_torch(model, g, (4, 20))
    check_geometry_against_torch(model, g, (4, 20))


class InPlace(nn.Module):
    """torchvision habits: in-place ReLU module and function, ``out += identity``, an in-place
    method, and ``view`` straight after a conv."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.relu(self.bn(self.c1(x)))
        out = self.c2(x)
        out += x
        out = F.relu(out, inplace=True)
        out.mul_(2)
        y = self.c3(out)
        return self.fc(y.view(y.size(0), -1))


def test_in_place_ops_and_view_after_a_conv():
    model = InPlace()
    g = to_graph(model, (3, 8, 8))
    (add,) = links_of(g, "add")
    assert set(add.sources) == {"c2", "c1"} and g.layers["c3"].source == add.target
    (flat,) = links_of(g, "flatten")
    assert flat.sources == ("c3",) and g.layers["fc"].source == flat.target
    assert g.groups["c3"].size == (4, 4) and g.groups[flat.target].channels == 64
    check_consistency(g)
    check_shapes_against_torch(model, g, (3, 8, 8))


class NamedLikeOps(nn.Module):
    """Modules named ``cat``, ``add`` and ``input``: the names fx gives to ops and the input."""

    def __init__(self):
        super().__init__()
        self.input = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.cat = nn.Conv2d(8, 8, 1)
        self.add = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = torch.cat([self.input(x), self.b(x)], 1)  # fx names this op "cat"
        z = y + y                                     # and this one "add"
        return self.add(self.cat(z))


def test_issue_2_ops_never_take_a_layer_name():
    # a torch.cat before a module called `cat` made "op names ['cat'] are used twice"
    g = to_graph(NamedLikeOps(), (3, 4, 4))
    assert set(g.layers) == {"input", "b", "cat", "add"}  # layer names stay module paths
    (cat,) = links_of(g, "concat")
    (add,) = links_of(g, "add")
    assert cat.name not in g.layers and add.name not in g.layers
    assert cat.sources == ("input", "b") and add.sources == (cat.target, cat.target)
    assert g.layers["cat"].source == add.target and g.layers["add"].source == "cat"
    assert g.inputs != ("input",) and g.layers["input"].source == g.inputs[0]
    check_consistency(g)
    # y + y is one edge per channel in both exports (igraph used to keep a duplicate)
    layer_edges = 4 * 3 + 4 * 3 + 8 * 8 + 8 * 8
    link_edges = (4 + 4) + 8  # concat of two 4-channel maps, then the sum y + y
    assert g.to_networkx().number_of_edges() == g.to_igraph().ecount() == layer_edges + link_edges


# ------------------------------------------------------------------------------ views on models
def multiplicity_oracle(mask, groups):
    """Block-diagonal (C_out, C_in) counts, one block per conv group."""
    c_out, c_in_g = mask.shape[:2]
    per = c_out // groups
    out = np.zeros((c_out, c_in_g * groups), dtype=np.int64)
    for g in range(groups):
        block = mask[g * per:(g + 1) * per].reshape(per, c_in_g, -1).sum(axis=2)
        out[g * per:(g + 1) * per, g * c_in_g:(g + 1) * c_in_g] = block
    return out


@pytest.mark.parametrize("case", ["dag", "resnet20"])
def test_views_equal_numpy_on_model_masks(case):
    if case == "dag":
        model = DAG()
        g = to_graph(model, DAG_SHAPE)
    else:
        model, g = zoo("resnet20")
    rng = np.random.default_rng(2)
    masks = MaskSet({k: rng.random(m.weight.shape) < 0.2 for k, m in prunable_modules(model).items()})
    weights = {k: m.weight.detach().double().numpy() for k, m in prunable_modules(model).items()}
    assert layer_weights(model).keys() == weights.keys()
    assert all(np.array_equal(layer_weights(model)[k], weights[k]) for k in weights)
    for name, layer in g.layers.items():
        m, w = masks[name], weights[name]
        assert np.array_equal(g.multiplicity(name, masks).toarray(), multiplicity_oracle(m, layer.groups))
        b = np.zeros((layer.fan_in, layer.out_channels))
        bw = np.zeros_like(b)
        for index in zip(*np.nonzero(m)):  # B[j, o] = mask[o].flat[j]
            j = np.ravel_multi_index(index[1:], m.shape[1:])
            b[j, index[0]] = 1
            bw[j, index[0]] = abs(w[index])
        assert np.array_equal(g.biadjacency(name, masks).toarray(), b)
        assert np.allclose(g.biadjacency(name, masks, w).toarray(), bw, rtol=1e-12, atol=0)


def test_resnet20_exports_have_the_architecture_counts():
    model, g = zoo("resnet20")
    plan, blocks = cifar_resnet_plan(20)
    # nodes: input, every conv/fc output, every sum, avgpool, flatten
    nodes = 3 + sum(shape[0] for shape, *_ in plan.values()) + sum(b[1] for b in blocks) + 64 + 64
    # edges: every channel pair of every layer; each sum reads two inputs; pool and flatten 1:1
    link_edges = sum(2 * b[1] for b in blocks) + 64 + 64
    dense_edges = sum(shape[0] * shape[1] for shape, *_ in plan.values()) + link_edges
    nxg, ig = g.to_networkx(), g.to_igraph()
    assert nxg.number_of_nodes() == ig.vcount() == nodes
    assert nxg.number_of_edges() == ig.ecount() == dense_edges
    rng = np.random.default_rng(3)
    masks = MaskSet({k: rng.random(l.weight_shape) < 0.02 for k, l in g.layers.items()})
    weights = layer_weights(model)
    kept_pairs = sum(int(np.count_nonzero(masks[k].reshape(l.weight_shape[0], l.weight_shape[1], -1).any(-1)))
                     for k, l in g.layers.items())
    nxg = g.to_networkx(masks, weights)
    ig = g.to_igraph(masks, weights)
    assert nxg.number_of_edges() == ig.ecount() == kept_pairs + link_edges
    # edge attributes of one conv: multiplicity and sum |w| over the kept taps
    name = "layer2.0.conv1"
    m, w = masks[name], weights[name]
    src = g.layers[name].source
    for o, i in zip(*np.nonzero(m.any(axis=(2, 3)))):
        data = nxg.edges[(src, int(i)), (name, int(o))]
        assert data["multiplicity"] == int(m[o, i].sum()) and data["layer"] == name
        assert data["weight"] == pytest.approx(float(np.abs(w[o, i][m[o, i]]).sum()), rel=1e-12)


# ------------------------------------------------------------------------------ pruned models
def test_pruned_model_has_the_same_graph_and_weights_orig():
    model = models.build("resnet20", seed=1)
    dense_graph = to_graph(model)
    rng = np.random.default_rng(4)
    masks = MaskSet({k: rng.random(l.weight_shape) < 0.5 for k, l in dense_graph.layers.items()})
    before = {k: v.copy() for k, v in layer_weights(model).items()}
    apply_masks(model, masks)
    g = to_graph(model)
    assert g.layers == dense_graph.layers and g.links == dense_graph.links
    assert g.groups == dense_graph.groups
    after = layer_weights(model)  # weight_orig, not the masked weight
    assert all(np.array_equal(after[k], before[k]) for k in before)
    assert as_graph(model).layers == g.layers


def test_issue_2_to_graph_leaves_the_model_as_it_was():
    model = models.build("resnet20", seed=2)
    model.train()
    model.bn.eval()  # a frozen BN inside a training model stays frozen
    state = {k: v.clone() for k, v in model.state_dict().items()}
    to_graph(model)
    assert model.training and not model.bn.training and model.layer1[0].bn1.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------ errors
class MatMul(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.matmul(self.a(x), self.b(x))


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.up = nn.ConvTranspose2d(4, 4, 3)

    def forward(self, x):
        return self.up(self.conv(x))


class Reflect(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))

    def forward(self, x):
        return self.body(x)


class LinearOn3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.conv(x))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return x


class Product(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.a(x) * self.b(x)


class CatOnWidth(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([y, y], dim=3)


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("model, shape", [(LinearOn3d(), (3, 8)), (Product(), (3, 8, 8)),
                                          (CatOnWidth(), (3, 8, 8)), (Transposed(), (3, 8, 8)),
                                          (Twice(), (3, 8, 8))],
                         ids=["linear-3d", "product", "cat-width", "conv-transpose", "called-twice"])
def test_ops_that_once_failed_equal_the_gradient_oracle(model, shape):
    """A Linear over the length axis of a conv1d map (positions are the 4 channels), a product
    of two branches, a concatenation along the width, a conv called twice (one weight, two
    uses): all modelled now (docs/graph.md)."""
    from test_extract_oracle import compare_with_oracle

    graph = to_graph(model, shape)
    compare_with_oracle(model, graph, (torch.rand((1,) + shape),))


@pytest.mark.parametrize("model, shape, error, parts", [
    (MatMul(), (3, 8, 8), UnsupportedOpError, ["matmul", "supported ops"]),
    (Reflect(), (3, 8, 8), UnsupportedOpError, ["'body.0'", "padding_mode='reflect'", "zero padding"]),
    (DataDependent(), (3, 8, 8), ModelError, ["cannot trace DataDependent", "control flow"]),
    (Flat(), (3, 8, 8), ModelError, ["(2, 3, 8, 8)", "pass the input_shape"]),
    (models.build("lenet5", seed=0), (3, 28, 28), ModelError, ["LeNet5", "(2, 3, 28, 28)", "input_shape"]),
    (Flat(), None, ModelError, ["no input shape known for Flat", "input_shape=(C, H, W)"]),
    ("not a model", (3, 8, 8), ModelError, ["needs a torch.nn.Module"]),
], ids=["matmul", "reflect", "data-dependent",
        "wrong-shape", "wrong-channels", "no-shape", "not-a-module"])
def test_bad_models_raise_clear_errors(model, shape, error, parts):
    with pytest.raises(error) as info:
        to_graph(model, shape)
    message = str(info.value)
    assert isinstance(info.value, GraphpaiError)
    for part in parts:
        assert part in message, (part, message)
    assert "\n" not in message  # one line: the CLI prints it as is


def test_layer_objects_are_plain_data():
    _, g = zoo("lenet5")
    layer = g.layers["features.3"]
    assert isinstance(layer, Layer) and layer.fan_in == 6 * 25 and layer.numel == prod(layer.weight_shape)


def test_issue_2_conv_and_linear_subclasses_are_layers():
    """Research code often masks inside a Conv2d subclass; fx would trace into its forward and
    find F.conv2d. The subclass must stay one layer, named by its module path."""

    class MaskedConv2d(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, self.weight * 1.0, self.bias, self.stride, self.padding)

    class MaskedLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight * 1.0, self.bias)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = MaskedConv2d(3, 4, 3, padding=1)
            self.fc = MaskedLinear(4 * 6 * 6, 5)

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.conv(x)), 1))

    g = to_graph(Net(), (3, 6, 6))
    assert list(g.layers) == ["conv", "fc"]
    assert g.layers["conv"].weight_shape == (4, 3, 3, 3) and g.layers["conv"].padding == ((1, 1), (1, 1))
    assert g.groups[g.layers["fc"].source].channels == 144
