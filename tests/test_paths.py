"""graphpai.paths: effective paths, channel paths, effective nodes (docs/definitions.md#paths,
[NPB]).

Expected values come from brute-force path enumeration on the unrolled pixel graph, exact
integer dynamic programming on the networkx channel graph, the plain float64 forward pass of the
linearised torch model, closed forms, and counts derived here from the architectures' plans.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given

import graphpai.paths
from graphpai.errors import UnknownMethodError
from graphpai.masks import MaskSet
from graphpai.paths import channel_paths, effective_nodes, effective_paths

from oracles import UnrolledGraph, exact_channel_paths, linearised_log10_paths
from strategies import conv_graph, graph_and_mask, mlp_graph, random_masks, tiny_graph, tiny_models


def _assert_count(log10_value, count):
    if count == 0:
        assert log10_value == -math.inf
    else:
        assert round(10 ** log10_value) == count
        assert log10_value == pytest.approx(math.log10(count), abs=1e-9)


# ------------------------------------------------------------------ brute force, tiny nets
@pytest.mark.parametrize("channels,size,residual,concat,nd",
                         [(2, 4, True, False, 2), (2, 3, True, True, 2), (1, 4, False, True, 2),
                          (3, 4, True, True, 1)])
@pytest.mark.parametrize("density", [0.3, 0.6])
def test_paths_equal_brute_force_enumeration_on_hand_graphs(channels, size, residual, concat, nd,
                                                             density):
    graph = conv_graph(channels, size, residual, concat, nd)
    for seed in range(2):
        masks = random_masks(graph, density, seed)
        _assert_count(effective_paths(graph, masks), UnrolledGraph(graph, masks).count_paths())


@pytest.mark.parametrize("name,density", [("tiny_resnet", 0.3), ("tiny_resnet", 0.5),
                                          ("conv1d", 1.0), ("concat_dag", 0.25),
                                          ("same_asym", 0.15)])
def test_paths_equal_brute_force_enumeration_on_tiny_models(name, density):
    # padding (incl. asymmetric 'same'), stride, dilation, residual, pools, concat, flatten
    graph, _ = tiny_graph(name)
    for seed in range(2):
        masks = random_masks(graph, density, seed)
        _assert_count(effective_paths(graph, masks), UnrolledGraph(graph, masks).count_paths())


@given(graph_and_mask())
def test_channel_paths_equal_exact_integer_count(case):
    graph, masks = case
    _assert_count(channel_paths(graph, masks), exact_channel_paths(graph, masks))


# ------------------------------------------------------------------ depth: no overflow
def test_200_layer_dense_mlp_does_not_overflow():
    graph = mlp_graph([100] * 201)  # 200 layers of width 100: 100^201 paths, past float64
    assert effective_paths(graph) == pytest.approx(402.0, abs=1e-9)
    assert channel_paths(graph) == pytest.approx(402.0, abs=1e-9)


@pytest.mark.parametrize("name", ["vgg19", "resnet20"])
def test_dense_zoo_paths_equal_plain_float64_forward(name):
    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    model = build(name, seed=0)
    graph = to_graph(model, (3, 32, 32))
    dense = MaskSet.dense(graph)
    for profile in ("default", "npb"):
        expected = linearised_log10_paths(model, dense, (3, 32, 32), profile=profile)
        assert effective_paths(graph, profile=profile) == pytest.approx(expected, abs=1e-9)
    # the clean definition sums every pool: 10^47.5 * 64 for ResNet-20's 8x8 global pool
    assert effective_paths(graph) > (54 if name == "vgg19" else 49)


@pytest.mark.parametrize("name", sorted(tiny_models()))
def test_npb_profile_equals_linearised_model(name):
    graph, model = tiny_graph(name)
    shape = tiny_models()[name][1]
    for seed, density in enumerate([0.2, 0.5, 1.0]):
        masks = random_masks(graph, density, seed)
        for profile in ("default", "npb"):
            expected = linearised_log10_paths(model, masks, shape, profile=profile)
            assert effective_paths(graph, masks, profile=profile) == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------ effective nodes
@pytest.fixture(scope="module")
def resnet20():
    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    return to_graph(build("resnet20", seed=0), (3, 32, 32))


def test_dense_resnet20_has_701_effective_nodes(resnet20):
    # each tensor once through its consumer (1x1 shortcuts skipped) plus the logits:
    # 3 + 6 * 16 + (16 + 5 * 32) + (32 + 5 * 64) + 64 + 10
    assert 3 + 6 * 16 + 16 + 5 * 32 + 32 + 5 * 64 + 64 + 10 == 701
    result = graphpai.paths(resnet20)
    assert result.effective_nodes == result.nodes == 701
    assert effective_nodes(resnet20, semantics="channel") == 701


def test_dense_vgg16_effective_nodes_from_its_plan():
    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected = 3 + sum(plan[:-1]) + 512 + 10  # conv inputs, fc input, logits
    graph = to_graph(build("vgg16", seed=0), (3, 32, 32))
    assert effective_nodes(graph, semantics="channel") == expected


def test_disconnected_resnet20(resnet20):
    masks = dict(MaskSet.dense(resnet20))
    masks["conv"] = np.zeros_like(masks["conv"])
    result = graphpai.paths(resnet20, masks)
    assert result.disconnected and result.log10_paths == -math.inf
    assert result.log10_channel_paths == -math.inf and result.effective_nodes == 0
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["log10_paths"] == "-inf"
    # [NPB]'s convention: biases 1, so the 10 logits each carry R = 1 (docs/definitions.md#paths)
    assert effective_paths(resnet20, masks, profile="npb") == pytest.approx(1.0, abs=1e-12)


def test_effective_nodes_of_a_hand_graph():
    graph = mlp_graph([3, 4, 2])
    a = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])  # h1 dead end, h2 no input
    b = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    # functional: a(h0<-x0), a(h3<-x0), b(y0<-h0), b(y1<-h3): inputs {x0}, hidden {h0, h3}, 2 logits
    assert effective_nodes(graph, {"fc0": a, "fc1": b}, semantics="channel") == 1 + 2 + 2
    assert effective_nodes(graph, {"fc0": a, "fc1": b}) == 5


def test_issue_3_disconnected_paths_read_minus_inf_disconnected():
    # docs/definitions.md#paths: log10 of 0 is reported as -inf / "disconnected", never as a number
    graph = mlp_graph([3, 4, 2])
    masks = {"fc0": np.ones((4, 3)), "fc1": np.zeros((2, 4))}
    text = graphpai.paths(graph, masks, semantics="channel").table()
    assert "log10 effective paths = -inf (disconnected)" in text
    assert "log10 channel paths = -inf (disconnected)" in text
    assert "effective nodes = 0/9" in text
    dense = graphpai.paths(graph, semantics="channel").table()
    assert f"log10 effective paths = {math.log10(24):.4f}" in dense
    assert "disconnected" not in dense


# ------------------------------------------------------------------ API
def test_module_is_callable_and_keeps_its_functions():
    graph = mlp_graph([3, 4, 2])
    result = graphpai.paths(graph)
    assert result.log10_paths == pytest.approx(math.log10(24))
    assert result.log10_channel_paths == pytest.approx(math.log10(24))
    assert graphpai.paths.channel_paths is channel_paths
    with pytest.raises(UnknownMethodError, match="unknown paths profile 'x'"):
        graphpai.paths(graph, profile="x")


def test_issue_3_npb_profile_reproduces_the_spec_path_counts():
    """docs/definitions.md#paths quotes dense ResNet-20 at about 10^47.5 and VGG-19 at about 10^55:
    the [NPB]
    convention, where open_lth's functional global average pool divides by its 8x8 window
    (the clean count is larger by exactly log10(64))."""
    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    r20 = to_graph(build("resnet20", seed=0))
    assert effective_paths(r20, profile="npb") == pytest.approx(47.5, abs=0.05)
    assert effective_paths(r20) - effective_paths(r20, profile="npb") == pytest.approx(
        np.log10(64), abs=1e-3)  # only the fc bias (1 per logit) differs beyond the pool
    vgg19 = to_graph(build("vgg19", seed=0))
    assert effective_paths(vgg19, profile="npb") == pytest.approx(55, abs=0.5)


# ------------------------------------------------------------------ [NPB]'s nodes on biased nets
def _biased_mlp():
    from graphpai.graph import Group, Layer, NetGraph

    return NetGraph([Group("x", 2), Group("h", 3), Group("y", 2)],
                    [Layer("a", "linear", (3, 2), "x", "h", bias=True),
                     Layer("b", "linear", (2, 3), "h", "y", bias=True)], [], ["x"], ["y"])


@pytest.mark.parametrize("semantics", ["spatial", "channel", "mica"])
def test_npb_profile_counts_bias_fed_channels(semantics):
    # a keeps only h0 <- x0: h1 and h2 are fed by their biases alone. b keeps y0 <- h0, h1 and
    # y1 <- h2. Clean: effective weights a(h0,x0), b(y0,h0) = 2; nodes x0, h0, y0 = 3 of 7.
    # [NPB] (every parameter 1, biases included, dR/dw != 0): h1 and h2 carry 1, so b(y0,h1) and
    # b(y1,h2) are effective too: 4 weights; nodes x0, h0, h1, h2, y0, y1 = 6 of 7.
    graph = _biased_mlp()
    masks = {"a": [[1, 0], [0, 0], [0, 0]], "b": [[1, 1, 0], [0, 0, 1]]}
    clean = graphpai.paths(graph, masks, semantics=semantics)
    npb = graphpai.paths(graph, masks, semantics=semantics, profile="npb")
    assert (clean.effective_weights, clean.effective_nodes, clean.nodes) == (2, 3, 7)
    assert (npb.effective_weights, npb.effective_nodes, npb.nodes) == (4, 6, 7)
    assert effective_nodes(graph, masks, semantics=semantics, profile="npb") == 6
    assert [t.effective for t in npb.tensors] == [1, 3, 2]
    assert npb.to_dict()["effective_weights"] == 4 and "effective weights = 4" in npb.table()
    # paths with biases 1: y0 = h0 + h1 + 1 = (x0 + 1) + 1 + 1 = 4, y1 = h2 + 1 = 2
    assert 10 ** npb.log10_paths == pytest.approx(6.0)


def test_npb_effective_weights_equal_the_gradient_test_with_every_parameter_one():
    # [NPB]'s own measure: set every parameter (biases included) to 1, R = sum(f(1)), a weight
    # is effective iff dR/dw != 0; torch autograd on the masked model, compared weight by weight
    import torch

    from graphpai.torch.extract import to_graph

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.Conv2d(3, 4, 3, padding=1),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 2))
    graph = to_graph(model, (1, 4, 4))
    rng = np.random.default_rng(1)
    for _ in range(4):
        masks = {name: rng.random(layer.weight_shape) < 0.3 for name, layer in graph.layers.items()}
        effective = graphpai.paths(graph, masks, profile="npb")
        total = 0
        weights = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        params = {}
        for (name, layer), module in zip(graph.layers.items(), weights):
            w = torch.tensor(masks[name], dtype=torch.float64, requires_grad=True)
            params[name] = (w, module)
        x = torch.ones((1, 1, 4, 4), dtype=torch.float64)
        for op in model:  # linear network: ReLU is the identity on nonnegative values
            if isinstance(op, (torch.nn.Conv2d, torch.nn.Linear)):
                name = next(n for n, (_, m) in params.items() if m is op)
                w = params[name][0]
                x = (torch.nn.functional.conv2d(x, w, torch.ones(w.shape[0], dtype=w.dtype),
                                                padding=1)
                     if isinstance(op, torch.nn.Conv2d) else x @ w.T + 1)
            elif isinstance(op, torch.nn.MaxPool2d):
                x = torch.nn.functional.avg_pool2d(x, 2)  # every input of a window counts
            elif isinstance(op, torch.nn.Flatten):
                x = x.reshape(1, -1)
        x.sum().backward()
        for name, (w, _) in params.items():
            total += int(((w.grad != 0) & torch.from_numpy(masks[name])).sum())
        assert effective.effective_weights == total


def test_npb_vgg19_is_not_the_zoo_vgg19():
    """[NPB]'s VGG-19 (Synaptic-Flow's lottery VGG: conv biases, no BN, the final 2x2 average pool
    called as a function) has 10^54.04 dense paths under its convention; the zoo's VGG-19 (no conv
    bias, BN, a pool module) 10^54.63. The docs say so (docs/audit.md)."""
    import torch.nn as nn
    import torch.nn.functional as F

    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
            512, 512, 512, 512]

    class NPBVGG19(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = [], 3
            for spec in plan:
                if spec == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.ReLU()]
                    channels = spec
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, 10)

        def forward(self, x):
            x = F.avg_pool2d(self.layers(x), 2)
            return self.fc(x.view(x.size(0), -1))

    npb = to_graph(NPBVGG19(), (3, 32, 32))
    assert effective_paths(npb, profile="npb") == pytest.approx(54.04, abs=0.005)
    zoo = to_graph(build("vgg19", seed=0))
    assert effective_paths(zoo, profile="npb") == pytest.approx(54.63, abs=0.005)
