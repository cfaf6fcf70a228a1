"""graphpai.functional: functional edges and nodes, the audit (docs/definitions.md#masks,
#functional).

Every expected value comes from an independent computation here or in tests/oracles.py: the
[VK] autograd gradient test on the linearised torch model, networkx reachability on the channel
graph, the unrolled pixel graph, or hand counts.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphpai.errors import MaskError, UnknownMethodError
from graphpai.functional import audit, coreach, functional_edges, reach
from graphpai.graph import Group, Layer, Link, NetGraph
from graphpai.masks import MaskSet

from oracles import UnrolledGraph, audit_rows, networkx_functional, vk_functional
from strategies import budget_masks, custom_dag, graph_and_mask, random_masks, tiny_graph


def _equal(a, b):
    assert set(a) == set(b)
    for key in a:
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


def _subset(a, b):
    return all(not (np.asarray(a[k]) & ~np.asarray(b[k])).any() for k in a)


# ------------------------------------------------------------------ oracle acceptance
@pytest.fixture(scope="module")
def models():
    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    out = {}
    for name in ("vgg16", "resnet20"):
        model = build(name, seed=0)
        out[name] = (model, to_graph(model, (3, 32, 32)), (3, 32, 32))
    model, shape = custom_dag()
    out["custom_dag"] = (model, to_graph(model, shape), shape)
    return out


# backbone: a few kept weights per layer so that something survives at 10^4 (ResNet-20 has 27
# weights at 10^4, so it gets one); see strategies.budget_masks
BACKBONE = {"vgg16": 4, "resnet20": 1, "custom_dag": 4}


@pytest.mark.parametrize("name", ["vgg16", "resnet20", "custom_dag"])
@pytest.mark.parametrize("exponent", [1, 2, 3, 4])
def test_spatial_equals_vk_and_channel_equals_networkx(models, name, exponent):
    model, graph, shape = models[name]
    masks = budget_masks(graph, 10.0 ** exponent, seed=exponent, backbone=BACKBONE[name])
    spatial = audit(graph, masks, semantics="spatial")
    channel = audit(graph, masks, semantics="channel")
    # [VK]'s test as the issue states it: the real |w| (kaiming init), no rescaling
    _equal(spatial.functional_masks, vk_functional(model, masks, shape, rescale=False))
    expected, _, _ = networkx_functional(graph, masks)
    _equal(channel.functional_masks, expected)
    assert _subset(spatial.functional_masks, channel.functional_masks)
    assert _subset(channel.functional_masks, masks)
    if name == "vgg16" and exponent == 3:
        # docs/definitions.md#functional: they differ where a channel is active on too few pixels
        # (VGG-16 at 2x2)
        assert channel.functional > spatial.functional > 0


@pytest.mark.parametrize("name", ["vgg16", "resnet20", "custom_dag"])
def test_dense_network_is_fully_functional(models, name):
    model, graph, shape = models[name]
    dense = MaskSet.dense(graph)
    # scale-free [VK] test: |w| rescaled per layer (positive factors keep dR/dw's zero pattern)
    assert all(m.all() for m in vk_functional(model, dense, shape, rescale=True).values())
    for semantics in ("channel", "spatial"):
        result = audit(graph, None, semantics=semantics)
        assert result.kept == result.functional == graph.num_weights
        assert result.direct_compression == result.corrected_compression == 1.0
        assert result.functional_nodes == result.nodes
        assert all(row.functional_channels == row.out_channels for row in result.layers)
        assert all(row.lost_inputs == 0 for row in result.layers)


# ------------------------------------------------------------------ small oracles, properties
@given(graph_and_mask())
def test_channel_equals_networkx_and_spatial_equals_unrolled(case):
    graph, masks = case
    expected, reached, coreached = networkx_functional(graph, masks)
    _equal(functional_edges(graph, masks), expected)
    r, c = reach(graph, masks), coreach(graph, masks)
    for name, group in graph.groups.items():
        assert r[name].tolist() == [(name, i) in reached for i in range(group.channels)]
        assert c[name].tolist() == [(name, i) in coreached for i in range(group.channels)]
    _equal(functional_edges(graph, masks, semantics="spatial"), UnrolledGraph(graph, masks).functional())


@given(graph_and_mask())
def test_functional_within_kept_and_spatial_within_channel(case):
    graph, masks = case
    channel = functional_edges(graph, masks)
    spatial = functional_edges(graph, masks, semantics="spatial")
    assert _subset(channel, masks) and _subset(spatial, channel)


@given(graph_and_mask(), st.integers(0, 2**16), st.sampled_from(["channel", "spatial"]))
def test_masking_more_never_adds_functional_edges(case, seed, semantics):
    graph, masks = case
    rng = np.random.default_rng(seed)
    fewer = MaskSet({k: m & (rng.random(m.shape) < 0.7) for k, m in masks.items()})
    assert _subset(functional_edges(graph, fewer, semantics=semantics),
                   functional_edges(graph, masks, semantics=semantics))


@given(graph_and_mask(), st.sampled_from(["channel", "spatial"]))
def test_renaming_layers_changes_no_number(case, semantics):
    graph, masks = case
    mapping = {name: f"renamed/{name}" for name in list(graph.groups) + [op.name for op in graph.order]}
    renamed = graph.rename(mapping)
    a = audit(graph, masks, semantics=semantics).to_dict()
    b = audit(renamed, masks.rename(mapping), semantics=semantics).to_dict()
    for row in b["layers"]:
        row["layer"] = row["layer"].replace("renamed/", "")
    assert a == b


@settings(max_examples=10)
@given(st.sampled_from(["same_asym", "concat_dag", "tiny_resnet"]), st.integers(0, 2**16),
       st.sampled_from(["channel", "spatial"]))
def test_adding_an_identity_module_changes_no_number(name, seed, semantics):
    from torch import nn

    from graphpai.torch.extract import to_graph

    _, model = tiny_graph(name)
    wrapped = nn.Sequential(nn.Identity(), model, nn.Identity())
    shape = {"same_asym": (2, 5, 6), "concat_dag": (2, 5, 5), "tiny_resnet": (1, 4, 4)}[name]
    graph = to_graph(model, shape)
    masks = random_masks(graph, 0.4, seed)
    wrapped_graph = to_graph(wrapped, shape)
    wrapped_masks = MaskSet({f"1.{k}": v for k, v in masks.items()})
    a = audit(graph, masks, semantics=semantics)
    b = audit(wrapped_graph, wrapped_masks, semantics=semantics)
    assert a.total == b.total
    assert [row.functional for row in a.layers] == [row.functional for row in b.layers]


@given(graph_and_mask(), st.sampled_from(["channel", "spatial"]))
def test_issue_3_audit_columns_and_totals_equal_the_oracle(case, semantics):
    """docs/definitions.md#functional: reached, co-reached, functional channels and lost inputs,
    per layer and in total,
    from the oracles' reach sets; nodes are the outputs of the layers not producing the logits."""
    graph, masks = case
    result = audit(graph, masks, semantics=semantics)
    rows, functional = audit_rows(graph, masks, semantics)
    columns = ["reached", "co_reached", "functional_channels", "lost_inputs"]
    assert {r.layer: {k: getattr(r, k) for k in columns} for r in result.layers} == rows
    total = result.total
    for key in columns:
        assert total[key] == sum(row[key] for row in rows.values())
    assert total["channels"] == sum(layer.out_channels for layer in graph.layers.values())
    hidden = [name for name, layer in graph.layers.items() if layer.target not in graph.outputs]
    assert result.nodes == sum(graph.layers[name].out_channels for name in hidden)
    assert result.functional_nodes == sum(rows[name]["functional_channels"] for name in hidden)
    assert result.functional == sum(int(m.sum()) for m in functional.values())
    assert result.kept == sum(int(np.count_nonzero(m)) for m in masks.values())


# ------------------------------------------------------------------ hand-counted audit
def _two_layer():
    # x (3) -> a (4 hidden) -> y (2 logits)
    return NetGraph([Group("x", 3), Group("h", 4), Group("y", 2)],
                    [Layer("a", "linear", (4, 3), "x", "h"), Layer("b", "linear", (2, 4), "h", "y")],
                    [], ["x"], ["y"])


def test_audit_rows_by_hand():
    graph = _two_layer()
    a = np.array([[1, 0, 0],   # h0 <- x0
                  [0, 1, 0],   # h1 <- x1   (h1 feeds nothing: a dead end)
                  [0, 0, 0],   # h2: nothing in
                  [1, 0, 0]])  # h3 <- x0
    b = np.array([[1, 0, 1, 0],  # y0 <- h0, h2 (h2 is unreached)
                  [0, 0, 0, 1]])  # y1 <- h3
    result = audit(graph, {"a": a, "b": b})
    ra, rb = result.layers
    assert (ra.kept, ra.functional, ra.reached, ra.co_reached, ra.functional_channels) == (3, 2, 3, 3, 2)
    assert ra.lost_inputs == 1  # x2 is reached but has no kept weight in a
    assert (rb.kept, rb.functional, rb.reached, rb.co_reached, rb.functional_channels) == (3, 2, 2, 2, 2)
    assert rb.lost_inputs == 1  # h1 is reached, no kept weight in b
    assert ra.functional_ratio == rb.functional_ratio == 2 / 3
    assert (result.N, result.kept, result.functional) == (20, 6, 4)
    assert result.direct_compression == 20 / 6 and result.corrected_compression == 5.0
    assert (result.nodes, result.functional_nodes, result.functional_node_ratio) == (4, 2, 0.5)
    total = result.total
    assert (total["channels"], total["reached"], total["co_reached"]) == (6, 5, 5)
    assert (total["functional_channels"], total["lost_inputs"]) == (4, 2)
    assert total["functional_ratio"] == 4 / 6
    table = result.table()
    assert table.splitlines()[-7].split() == ["total", "20", "6", "4", "0.6667", "6", "5", "5",
                                              "4", "2"]
    assert result.functional_masks["a"].astype(int).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0],
                                                                  [1, 0, 0]]


def test_one_empty_layer_is_disconnected_not_an_error():
    graph, _ = tiny_graph("tiny_resnet")
    masks = dict(random_masks(graph, 1.0, 0))
    masks["conv2"] = np.zeros_like(masks["conv2"])  # the shortcut still carries signal
    assert audit(graph, masks).functional > 0
    masks["shortcut"] = np.zeros_like(masks["shortcut"])
    for semantics in ("channel", "spatial"):
        result = audit(graph, masks, semantics=semantics)
        assert result.disconnected and result.functional == 0
        assert math.isinf(result.corrected_compression)
        assert result.functional_node_ratio == 0.0
        data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        assert data["total"]["corrected_compression"] == "inf"
        assert data["total"]["disconnected"] is True
        assert "corrected compression = inf (disconnected)" in result.table()
        assert [row["functional_ratio"] for row in data["layers"]][2] is None  # conv2 kept 0


def test_to_dict_keys_and_table():
    graph = _two_layer()
    result = audit(graph, None)
    data = result.to_dict()
    assert set(data) == {"semantics", "masks", "layers", "total"}
    assert data["masks"] == "dense" and audit(graph, MaskSet.dense(graph)).masks_source == "given"
    assert {"N", "kept", "functional", "direct_compression", "corrected_compression",
            "functional_nodes", "nodes", "functional_node_ratio", "disconnected"} <= set(data["total"])
    assert [row["layer"] for row in data["layers"]] == ["a", "b"]
    table = result.table()
    assert "layer" in table and "corrected compression = 1" in table


def test_concat_and_flatten_channel_reach():
    # x(1, 2 pixels) -> c (2 ch) ; concat(c, x) -> 3 ch ; flatten -> 6 features ; fc -> 1
    groups = [Group("x", 1, (2,)), Group("c", 2, (2,)), Group("cat", 3, (2,)), Group("f", 6),
              Group("y", 1)]
    layers = [Layer("c", "conv", (2, 1, 1), "x", "c", (1,), ((0, 0),), (1,), in_size=(2,),
                    out_size=(2,)),
              Layer("fc", "linear", (1, 6), "f", "y")]
    links = [Link("cat", "concat", ("c", "x"), "cat"), Link("f", "flatten", ("cat",), "f")]
    graph = NetGraph(groups, layers, links, ["x"], ["y"])
    # c keeps channel 0 only; fc reads feature 2 (channel 1 of cat = c's channel 1, pixel 0)
    # and feature 5 (channel 2 = x, pixel 1)
    masks = {"c": np.array([[[1]], [[0]]]), "fc": np.array([[0, 0, 1, 0, 0, 1]])}
    r = reach(graph, masks)
    assert r["cat"].tolist() == [True, False, True]
    assert r["f"].tolist() == [True, True, False, False, True, True]
    f = functional_edges(graph, masks)
    assert f["c"].ravel().tolist() == [False, False]  # c1 unreached, c0 not read by fc
    assert f["fc"].ravel().tolist() == [False] * 5 + [True]


# ------------------------------------------------------------------ bad input
def test_bad_input_gives_one_line_errors():
    graph = _two_layer()
    with pytest.raises(MaskError, match=r"mask for 'a' has shape \(3, 3\) but the weight is \(4, 3\)"):
        audit(graph, {"a": np.ones((3, 3)), "b": np.ones((2, 4))})
    with pytest.raises(MaskError, match="no mask for layer"):
        audit(graph, {"a": np.ones((4, 3))})
    with pytest.raises(MaskError, match="unknown layer"):
        audit(graph, {"a": np.ones((4, 3)), "b": np.ones((2, 4)), "c": np.ones(1)})
    with pytest.raises(MaskError, match="binary"):
        audit(graph, {"a": np.full((4, 3), 0.5), "b": np.ones((2, 4))})
    with pytest.raises(UnknownMethodError, match="unknown semantics 'pixel'"):
        audit(graph, None, semantics="pixel")
    with pytest.raises(MaskError) as info:
        audit(graph, {"a": np.ones((3, 3)), "b": np.ones((2, 4))})
    assert "\n" not in str(info.value)


def test_torch_model_is_accepted_directly():
    from graphpai.torch.models import build

    model = build("lenet300_100", seed=0)
    result = audit(model, None, input_shape=(1, 28, 28))
    assert result.functional == result.N == 784 * 300 + 300 * 100 + 100 * 10


# ------------------------------------------------------------------ CLI
def test_cli_audit(tmp_path, capsys):
    from graphpai.cli import main
    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    graph = to_graph(build("lenet300_100", seed=0), (1, 28, 28))
    masks = dict(random_masks(graph, 0.5, 0))
    masks["features.2"] = np.zeros_like(masks["features.2"])
    MaskSet(masks).save(tmp_path / "m.npz")
    out = tmp_path / "report.json"
    assert main(["audit", "--model", "lenet300_100", "--masks", str(tmp_path / "m.npz"), "--json",
                 "--out", str(out), "--functional-out", str(tmp_path / "f.npz")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["total"]["corrected_compression"] == "inf"
    assert [row["layer"] for row in printed["layers"]] == list(graph.layers)
    assert MaskSet.load(tmp_path / "f.npz").kept() == 0
    assert main(["audit", "--model", "lenet300_100", "--masks", str(tmp_path / "m.npz"),
                 "--paths"]) == 0
    text = capsys.readouterr().out
    assert "log10 effective paths = -inf (disconnected)" in text
    assert "corrected compression = inf (disconnected)" in text
    assert main(["audit", "--model", "lenet300_100", "--semantics", "spatial", "--paths"]) == 0
    text = capsys.readouterr().out
    assert "corrected compression = 1" in text and "effective nodes = " in text
    assert main(["audit", "--model", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no_such_model'" in err and err.count("\n") == 1
    np.savez(tmp_path / "bad.npz", **{name: np.full(m.shape, 0.5) for name, m in masks.items()})
    assert main(["audit", "--model", "lenet300_100", "--masks", str(tmp_path / "bad.npz")]) == 2
    assert "binary" in capsys.readouterr().err


# ------------------------------------------------------------------ [MiCA]'s hybrid (issue 13.1)
def _three_semantics_net():
    """x (2 px) -conv A (3 taps, pad 1)-> h (2 px) -conv B (1 tap, stride 2)-> z (1 px)
    -conv C (3 taps, pad 1)-> y (1 px); every weight kept."""
    conv = lambda name, k, src, dst, n_in, n_out, stride, pad: Layer(  # noqa: E731
        name, "conv", (1, 1, k), src, dst, (stride,), ((pad, pad),), (1,), in_size=(n_in,),
        out_size=(n_out,))
    return NetGraph(
        [Group("x", 1, (2,)), Group("h", 1, (2,)), Group("z", 1, (1,)), Group("y", 1, (1,))],
        [conv("A", 3, "x", "h", 2, 2, 1, 1), conv("B", 1, "h", "z", 2, 1, 2, 0),
         conv("C", 3, "z", "y", 1, 1, 1, 1)], [], ["x"], ["y"])


def test_mica_hybrid_by_hand_differs_from_channel_and_spatial():
    # By hand. A: output p reads x[p - 1 + a]. Tap 0 sees x[0] at p = 1, tap 2 sees x[1] at p = 0:
    # every tap of A sees an active pixel somewhere (mica and channel keep all 3). B reads only
    # h[0], so only p = 0 of A is co-reached pixel-wise, where tap 0 reads padding (spatial drops
    # it). C works on one pixel: its side taps only ever read padding (mica and spatial drop
    # them, channel keeps them, since channel z is reached).
    graph = _three_semantics_net()
    expected = {"channel": ([1, 1, 1], [1], [1, 1, 1]), "mica": ([1, 1, 1], [1], [0, 1, 0]),
                "spatial": ([0, 1, 1], [1], [0, 1, 0])}
    for semantics, (a, b, c) in expected.items():
        result = audit(graph, semantics=semantics)
        got = result.functional_masks
        assert got["A"].ravel().astype(int).tolist() == a, semantics
        assert got["B"].ravel().astype(int).tolist() == b, semantics
        assert got["C"].ravel().astype(int).tolist() == c, semantics
        assert result.functional == sum(a) + sum(b) + sum(c)
        assert result.semantics == semantics
    assert [audit(graph, semantics=s).functional for s in ("channel", "mica", "spatial")] == [7, 5, 4]


def test_mica_active_channels_are_active_everywhere_reached_or_not():
    # h[1] has no kept input weight; a non-zero BN shift (or bias) makes it active at every
    # pixel, so its outgoing weight becomes functional in every semantics
    graph = NetGraph([Group("x", 1), Group("h", 2), Group("y", 1)],
                     [Layer("a", "linear", (2, 1), "x", "h"), Layer("b", "linear", (1, 2), "h", "y")],
                     [], ["x"], ["y"])
    masks = {"a": [[1], [0]], "b": [[1, 1]]}
    for semantics in ("channel", "mica", "spatial"):
        plain = functional_edges(graph, masks, semantics=semantics)
        assert plain["b"].astype(int).tolist() == [[1, 0]], semantics
        shifted = functional_edges(graph, masks, semantics=semantics, active={"h": [False, True]})
        assert shifted["b"].astype(int).tolist() == [[1, 1]], semantics
        assert shifted["a"].astype(int).tolist() == [[1], [0]], semantics
        assert audit(graph, masks, semantics=semantics,
                     active={"h": [0, 1]}).layers[0].reached == 2
    from graphpai.errors import GraphpaiError

    with pytest.raises(GraphpaiError, match="unknown group 'q'"):
        audit(graph, masks, active={"q": [1]})
    with pytest.raises(GraphpaiError, match="has 3 entries"):
        audit(graph, masks, active={"h": [1, 0, 1]})


@settings(max_examples=25, deadline=None)
@given(graph_and_mask())
def test_spatial_within_mica_within_channel(case):
    graph, masks = case
    channel = functional_edges(graph, masks)
    mica = functional_edges(graph, masks, semantics="mica")
    spatial = functional_edges(graph, masks, semantics="spatial")
    assert _subset(spatial, mica) and _subset(mica, channel)


def test_mica_reproduces_the_reference_code_on_vgg16(models):
    # the MiCA code on the same VGG-16 RPI-ERK 10^3 mask counts 12,922 functional weights
    # (issue 13; channel 13,470, spatial 12,403 by the exact definitions)
    import graphpai

    model, graph, _ = models["vgg16"]
    masks = graphpai.prune(model, "rpi", budget="erk", compression=1000, seed=0)
    counts = [audit(graph, masks, semantics=s).functional for s in ("channel", "mica", "spatial")]
    assert counts == [13470, 12922, 12403]


def test_channel_audit_walks_each_layer_once_per_direction(models, monkeypatch):
    """Issue 13.21: the channel audit ran _backward_layer 3 times per layer (co-reach, functional
    outgoing channels, lost inputs); the functional columns now come from reach and co-reach."""
    import graphpai.functional as functional

    _, graph, _ = models["vgg16"]
    masks = random_masks(graph, 0.01, 0)
    expected = audit(graph, masks)
    calls = []
    original = functional._backward_layer
    monkeypatch.setattr(functional, "_backward_layer",
                        lambda *args, **kw: calls.append(1) or original(*args, **kw))
    result = audit(graph, masks)
    assert len(calls) <= 2 * len(graph.layers)
    assert result.layers == expected.layers  # the columns themselves: the oracle tests above
