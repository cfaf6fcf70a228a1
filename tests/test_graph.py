"""NetGraph on hand-built graphs (docs/definitions.md#graph): structure, channel and fan-in views, link maps,
networkx/igraph exports, renaming invariance and construction errors.

Every expected value is computed here from the weight/mask tensors with naive loops; nothing is
copied from graphpai's output. No torch: the core must work without it.
"""

from __future__ import annotations

from math import prod

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from graphpai.errors import GraphpaiError, MaskError
from graphpai.graph import Group, Layer, Link, NetGraph, as_graph
from graphpai.masks import MaskSet

# --------------------------------------------------------------------------------- the fixture
# input x (4 ch, 6x6)
#   c1: 3x3 conv 4 -> 8                    -> c1  (8, 6x6)
#   g : 3x3 grouped conv, 4 groups, 8 -> 8 -> g   (8, 6x6)
#   dw: 3x3 depthwise conv 8 -> 8          -> dw  (8, 6x6)
#   cat = concat(g, dw)                    ->     (16, 6x6)
#   p : 1x1 conv 4 -> 16 from x            -> p   (16, 6x6)
#   res = cat + p                          ->     (16, 6x6)
#   pool: 2x2 max pool                     ->     (16, 3x3)
#   flat: flatten                          ->     (144,)
#   fc: linear 144 -> 5                    -> fc  (5,)  (output)
GROUPS = {"x": (4, (6, 6)), "c1": (8, (6, 6)), "g": (8, (6, 6)), "dw": (8, (6, 6)),
          "cat": (16, (6, 6)), "p": (16, (6, 6)), "res": (16, (6, 6)), "pool": (16, (3, 3)),
          "flat": (144, ()), "fc": (5, ())}
CONV = dict(stride=(1, 1), dilation=(1, 1), in_size=(6, 6), out_size=(6, 6))
LAYERS = [
    Layer("c1", "conv", (8, 4, 3, 3), "x", "c1", padding=((1, 1), (1, 1)), **CONV),
    Layer("g", "conv", (8, 2, 3, 3), "c1", "g", padding=((1, 1), (1, 1)), groups=4, **CONV),
    Layer("dw", "conv", (8, 1, 3, 3), "c1", "dw", padding=((1, 1), (1, 1)), groups=8, **CONV),
    Layer("p", "conv", (16, 4, 1, 1), "x", "p", padding=((0, 0), (0, 0)), **CONV),
    Layer("fc", "linear", (5, 144), "flat", "fc", bias=True),
]
LINKS = [
    Link("cat", "concat", ("g", "dw"), "cat"),
    Link("res", "add", ("cat", "p"), "res"),
    Link("pool", "pool", ("res",), "pool", {"mode": "max", "kernel": (2, 2), "stride": (2, 2)}),
    Link("flat", "flatten", ("pool",), "flat"),
]


def make_graph() -> NetGraph:
    groups = [Group(name, c, size) for name, (c, size) in GROUPS.items()]
    # ops given out of order on purpose: NetGraph sorts them
    return NetGraph(groups, LAYERS[::-1], LINKS[::-1], ["x"], ["fc"])


GRAPH = make_graph()


def random_masks(graph, seed, density=0.3) -> MaskSet:
    rng = np.random.default_rng(seed)
    return MaskSet({name: rng.random(layer.weight_shape) < density
                    for name, layer in graph.layers.items()})


def random_weights(graph, seed) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, layer in graph.layers.items():
        w = rng.standard_normal(layer.weight_shape)
        w[rng.random(w.shape) < 0.1] = 0.0  # some kept weights are exactly zero
        out[name] = w
    return out


# --------------------------------------------------------------------------------- oracles
def oracle_multiplicity(weight_shape, groups, mask):
    """(C_out, C_in) kept-tap counts, with loops over output and input channels."""
    c_out, c_in_g = weight_shape[:2]
    per_group = c_out // groups
    out = np.zeros((c_out, c_in_g * groups), dtype=np.int64)
    for o in range(c_out):
        g = o // per_group
        for i_local in range(c_in_g):
            out[o, g * c_in_g + i_local] = int(np.sum(mask[o, i_local]))
    return out


def oracle_weight_sum(weight_shape, groups, mask, weight):
    """(C_out, C_in) sum of |w| over kept taps."""
    c_out, c_in_g = weight_shape[:2]
    per_group = c_out // groups
    out = np.zeros((c_out, c_in_g * groups))
    for o in range(c_out):
        g = o // per_group
        for i_local in range(c_in_g):
            out[o, g * c_in_g + i_local] = np.sum(np.abs(weight[o, i_local]) * mask[o, i_local])
    return out


def oracle_biadjacency(weight_shape, mask, weight=None):
    """(fan_in, C_out): entry [c*kh*kw + a*kw + b, o] = mask[o, c, a, b] (times |w|)."""
    c_out = weight_shape[0]
    kernel = weight_shape[2:]
    fan_in = prod(weight_shape[1:])
    out = np.zeros((fan_in, c_out))
    for o in range(c_out):
        for c in range(weight_shape[1]):
            for tap in np.ndindex(*kernel):
                j = c
                for t, k in zip(tap, kernel):
                    j = j * k + t
                index = (o, c) + tap
                if mask[index]:
                    out[j, o] = 1.0 if weight is None else abs(weight[index])
    return out


def dense(matrix):
    assert sp.issparse(matrix)
    return matrix.toarray()


# --------------------------------------------------------------------------------- structure
def test_structure_of_the_hand_built_graph():
    g = GRAPH
    assert list(g.layers) == [op.name for op in g.order if isinstance(op, Layer)]
    assert set(g.layers) == {"c1", "g", "dw", "p", "fc"}
    assert {link.name for link in g.links} == {"cat", "res", "pool", "flat"}
    assert g.inputs == ("x",) and g.outputs == ("fc",)
    # topological: every op reads only inputs or groups written before it
    ready = set(g.inputs)
    for op in g.order:
        assert set(g.sources(op)) <= ready, op.name
        ready.add(op.target)
    assert len(g.order) == len(LAYERS) + len(LINKS)
    assert g.num_weights == sum(prod(layer.weight_shape) for layer in LAYERS)
    assert g.producer("x") is None
    assert g.producer("res").name == "res" and g.producer("dw").name == "dw"
    assert [op.name for op in g.consumers("x")] in (["c1", "p"], ["p", "c1"])
    assert {op.name for op in g.consumers("c1")} == {"g", "dw"}
    assert g.consumers("fc") == ()
    dw = g.layers["dw"]
    assert (dw.in_channels, dw.out_channels, dw.fan_in, dw.kernel) == (8, 8, 9, (3, 3))
    grouped = g.layers["g"]
    assert (grouped.in_channels, grouped.fan_in, grouped.numel) == (8, 18, 8 * 2 * 9)
    assert g.layer("fc").kind == "linear"
    assert as_graph(g) is g
    assert "5 layers" in repr(g) and str(g.num_weights) in repr(g)


def test_link_matrices_follow_their_definitions():
    g = GRAPH
    cat = {link.name: link for link in g.links}["cat"]
    expected = np.zeros((16, 8))
    for c in range(8):
        expected[c, c] = 1  # g fills channels 0..7
    assert np.array_equal(dense(g.link_matrix(cat, 0)), expected)
    expected = np.zeros((16, 8))
    for c in range(8):
        expected[8 + c, c] = 1  # dw fills channels 8..15
    assert np.array_equal(dense(g.link_matrix("cat", 1)), expected)
    for position in (0, 1):  # a residual add: each input maps to the same channel
        assert np.array_equal(dense(g.link_matrix("res", position)), np.eye(16))
    assert np.array_equal(dense(g.link_matrix("pool")), np.eye(16))
    flat = np.zeros((144, 16))
    for c in range(16):
        for k in range(9):  # channel c of a 3x3 map -> features 9c .. 9c + 8 (PyTorch order)
            flat[c * 9 + k, c] = 1
    assert np.array_equal(dense(g.link_matrix("flat")), flat)
    with pytest.raises(GraphpaiError, match="unknown link 'nope'"):
        g.link_matrix("nope")


def test_concat_of_one_group_twice_is_addressed_by_position():
    groups = [Group("a", 3, (2, 2)), Group("cat", 6, (2, 2))]
    g = NetGraph(groups, [], [Link("cat", "concat", ("a", "a"), "cat")], ["a"], ["cat"])
    first, second = dense(g.link_matrix("cat", 0)), dense(g.link_matrix("cat", 1))
    assert np.array_equal(first, np.vstack([np.eye(3), np.zeros((3, 3))]))
    assert np.array_equal(second, np.vstack([np.zeros((3, 3)), np.eye(3)]))


# --------------------------------------------------------------------------------- views
@given(seed=st.integers(0, 2**32 - 1), density=st.sampled_from([0.0, 0.05, 0.3, 0.9, 1.0]))
def test_views_equal_numpy_on_random_masks(seed, density):
    masks = random_masks(GRAPH, seed, density)
    weights = random_weights(GRAPH, seed + 1)
    for name, layer in GRAPH.layers.items():
        m, w = masks[name], weights[name]
        mult = GRAPH.multiplicity(name, masks)
        assert mult.shape == (layer.out_channels, layer.in_channels)
        assert np.array_equal(dense(mult), oracle_multiplicity(layer.weight_shape, layer.groups, m))
        assert np.array_equal(dense(GRAPH.multiplicity(layer, m)), dense(mult))
        b = GRAPH.biadjacency(name, masks)
        assert b.shape == (layer.fan_in, layer.out_channels)
        assert np.array_equal(dense(b), oracle_biadjacency(layer.weight_shape, m))
        bw = GRAPH.biadjacency(name, masks, weights=w)
        assert np.allclose(dense(bw), oracle_biadjacency(layer.weight_shape, m, w), rtol=0, atol=0)
        # a kept weight that is exactly 0 is not an edge of the weighted view
        assert bw.nnz == int(np.count_nonzero(m & (w != 0)))


def test_dense_views_without_a_mask():
    for name, layer in GRAPH.layers.items():
        full = np.ones(layer.weight_shape, dtype=bool)
        assert np.array_equal(dense(GRAPH.multiplicity(name)),
                              oracle_multiplicity(layer.weight_shape, layer.groups, full))
        assert np.array_equal(dense(GRAPH.biadjacency(name)), np.ones((layer.fan_in, layer.out_channels)))
    # depthwise: channel o is fed by input channel o only, with all 9 taps
    assert np.array_equal(dense(GRAPH.multiplicity("dw")), 9 * np.eye(8))


@st.composite
def conv_geometry(draw):
    groups = draw(st.sampled_from([1, 2, 3, 4]))
    c_out = groups * draw(st.integers(1, 3))
    c_in_g = draw(st.integers(1, 3))
    kernel = draw(st.sampled_from([(1,), (3,), (1, 1), (2, 3), (3, 3)]))
    seed = draw(st.integers(0, 2**32 - 1))
    return (c_out, c_in_g) + kernel, groups, seed


@given(conv_geometry())
def test_views_of_any_grouped_conv_equal_numpy(case):
    shape, groups, seed = case
    ndim = len(shape) - 2
    size = (5,) * ndim
    graph = NetGraph(
        [Group("in", shape[1] * groups, size), Group("conv", shape[0], size)],
        [Layer("conv", "conv", shape, "in", "conv", stride=(1,) * ndim, dilation=(1,) * ndim,
               padding=((0, 0),) * ndim, groups=groups, in_size=size, out_size=size)],
        [], ["in"], ["conv"])
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.5
    weight = rng.standard_normal(shape)
    assert np.array_equal(dense(graph.multiplicity("conv", mask)), oracle_multiplicity(shape, groups, mask))
    assert np.array_equal(dense(graph.biadjacency("conv", mask)), oracle_biadjacency(shape, mask))
    assert np.array_equal(dense(graph.biadjacency("conv", mask, weight)),
                          oracle_biadjacency(shape, mask, weight))


# --------------------------------------------------------------------------------- exports
def expected_edges(graph, masks, weights=None):
    """{(src node, tgt node): attrs} of the channel graph, built with loops."""
    edges = {}
    for name, layer in graph.layers.items():
        mult = oracle_multiplicity(layer.weight_shape, layer.groups, masks[name])
        wsum = (oracle_weight_sum(layer.weight_shape, layer.groups, masks[name], weights[name])
                if weights is not None else None)
        for o in range(mult.shape[0]):
            for i in range(mult.shape[1]):
                if mult[o, i]:
                    attrs = {"multiplicity": int(mult[o, i]), "layer": name}
                    if wsum is not None:
                        attrs["weight"] = wsum[o, i]
                    edges[(layer.source, i), (layer.target, o)] = attrs
    for link in graph.links:
        offset = 0
        for source in link.sources:
            src = graph.groups[source]
            per = prod(src.size) if link.kind == "flatten" else 1
            for c in range(src.channels):
                for k in range(per):
                    if link.kind == "concat":
                        t = offset + c
                    elif link.kind == "flatten":
                        t = c * per + k
                    else:
                        t = c
                    edges[(source, c), (link.target, t)] = {"multiplicity": 1, "link": link.name}
            offset += src.channels
    return edges


def test_networkx_export_counts_and_attributes():
    masks = random_masks(GRAPH, 7, 0.2)
    weights = random_weights(GRAPH, 8)
    nxg = GRAPH.to_networkx(masks, weights)
    expected = expected_edges(GRAPH, masks, weights)
    assert nxg.number_of_nodes() == sum(c for c, _ in GROUPS.values())
    # layer edges: nonzero channel pairs; link edges: 16 (cat) + 32 (res) + 16 (pool) + 144 (flat)
    n_layer = sum(int(np.count_nonzero(oracle_multiplicity(l.weight_shape, l.groups, masks[n])))
                  for n, l in GRAPH.layers.items())
    assert nxg.number_of_edges() == len(expected) == n_layer + 16 + 32 + 16 + 144
    assert nxg.nodes["cat", 3] == {"group": "cat", "channel": 3}
    for (a, b), attrs in expected.items():
        got = nxg.edges[a, b]
        assert got.keys() == attrs.keys()
        for key, value in attrs.items():
            if key == "weight":
                assert got[key] == pytest.approx(value, rel=1e-12, abs=0)
            else:
                assert got[key] == value
    # without weights: no weight attribute; dense: every channel pair of a layer
    plain = GRAPH.to_networkx()
    assert all("weight" not in d for _, _, d in plain.edges(data=True))
    n_dense = sum(l.out_channels * l.in_channels // l.groups for l in GRAPH.layers.values())
    assert plain.number_of_edges() == n_dense + 16 + 32 + 16 + 144


def test_igraph_export_matches_the_expected_edges():
    masks = random_masks(GRAPH, 11, 0.2)
    weights = random_weights(GRAPH, 12)
    ig = GRAPH.to_igraph(masks, weights)
    expected = expected_edges(GRAPH, masks, weights)
    assert ig.is_directed()
    assert ig.vcount() == sum(c for c, _ in GROUPS.values())
    assert ig.ecount() == len(expected)
    node = {i: (v["group"], v["channel"]) for i, v in enumerate(ig.vs)}
    assert len(set(node.values())) == ig.vcount()
    seen = {}
    for e in ig.es:
        seen[node[e.source], node[e.target]] = e.attributes()
    assert seen.keys() == expected.keys()
    for key, attrs in expected.items():
        got = seen[key]
        assert got["multiplicity"] == attrs["multiplicity"]
        assert got["layer"] == attrs.get("layer") and got["link"] == attrs.get("link")
        if "weight" in attrs:
            assert got["weight"] == pytest.approx(attrs["weight"], rel=1e-12, abs=0)
        else:
            assert got["weight"] is None
    assert "weight" not in GRAPH.to_igraph(masks).es.attributes()


# --------------------------------------------------------------------------------- renaming
@st.composite
def renaming(draw):
    names = list(GRAPH.layers)
    pool = names + [f"renamed.{k}" for k in range(len(names))]
    new = draw(st.permutations(pool))[: len(names)]
    return dict(zip(names, new)), draw(st.integers(0, 2**32 - 1))


@given(renaming())
def test_renaming_layers_changes_no_view(case):
    mapping, seed = case
    masks = random_masks(GRAPH, seed, 0.4)
    weights = random_weights(GRAPH, seed)
    g2, m2 = GRAPH.rename(mapping), masks.rename(mapping)
    w2 = {mapping[k]: v for k, v in weights.items()}
    assert m2.validate(g2) is m2
    assert sorted(g2.layers) == sorted(mapping.values())
    assert g2.num_weights == GRAPH.num_weights
    assert m2.counts() == {mapping[k]: v for k, v in masks.counts().items()}
    assert (m2.kept(), m2.numel()) == (masks.kept(), masks.numel())
    for old, new in mapping.items():
        a, b = GRAPH.layers[old], g2.layers[new]
        assert (a.weight_shape, a.groups, a.padding) == (b.weight_shape, b.groups, b.padding)
        assert np.array_equal(dense(GRAPH.multiplicity(old, masks)), dense(g2.multiplicity(new, m2)))
        assert np.array_equal(dense(GRAPH.biadjacency(old, masks)), dense(g2.biadjacency(new, m2)))
        assert np.array_equal(dense(GRAPH.biadjacency(old, masks, weights[old])),
                              dense(g2.biadjacency(new, m2, w2[new])))
    for link in GRAPH.links:
        for position in range(len(link.sources)):
            assert np.array_equal(dense(GRAPH.link_matrix(link.name, position)),
                                  dense(g2.link_matrix(link.name, position)))
    # the exports are the same graph up to the group renaming
    relabel = {name: mapping.get(name, name) for name in GRAPH.groups}
    before = {((relabel[a[0]], a[1]), (relabel[b[0]], b[1])): (d["multiplicity"], d.get("weight"))
              for a, b, d in GRAPH.to_networkx(masks, weights).edges(data=True)}
    after = {(a, b): (d["multiplicity"], d.get("weight"))
             for a, b, d in g2.to_networkx(m2, w2).edges(data=True)}
    assert before == after


# --------------------------------------------------------------------------------- errors
def test_bad_mask_inputs_raise_mask_errors_naming_the_layer():
    g = GRAPH
    with pytest.raises(MaskError, match="unknown layer 'nope'"):
        g.multiplicity("nope")
    with pytest.raises(MaskError, match=r"mask for 'c1' has shape \(8, 4, 3\) but the weight is \(8, 4, 3, 3\)"):
        g.multiplicity("c1", np.ones((8, 4, 3), dtype=bool))
    with pytest.raises(MaskError, match="no mask for layer 'fc'"):
        g.biadjacency("fc", {"c1": np.ones((8, 4, 3, 3))})
    with pytest.raises(MaskError, match=r"weights for 'fc' have shape \(5, 143\)"):
        g.biadjacency("fc", None, weights=np.ones((5, 143)))
    weights = random_weights(g, 0)
    with pytest.raises(MaskError, match="no weights for layer 'dw'"):
        g.to_networkx(None, {k: v for k, v in weights.items() if k != "dw"})
    with pytest.raises(MaskError, match=r"weights for 'fc' have shape \(144, 5\)"):
        g.to_igraph(None, {**weights, "fc": weights["fc"].T})


def test_issue_2_raw_masks_in_views_must_be_binary():
    # a 0.5 or a NaN used to count as a kept tap
    half = np.ones((5, 144))
    half[0, 0] = 0.5
    with pytest.raises(MaskError, match="mask for 'fc' has value 0.5"):
        GRAPH.multiplicity("fc", half)
    half[0, 0] = np.nan
    with pytest.raises(MaskError, match="mask for 'fc' contains NaN"):
        GRAPH.biadjacency("fc", {"fc": half})
    ints = np.zeros((5, 144), dtype=np.int64)
    ints[2, 7] = 1
    assert GRAPH.biadjacency("fc", ints).toarray()[7, 2] == 1 and GRAPH.multiplicity("fc", ints).sum() == 1


def test_construction_errors():
    a, b = Group("a", 2, ()), Group("b", 2, ())
    lin = Layer("l", "linear", (2, 2), "a", "b")
    with pytest.raises(GraphpaiError, match="group name 'a' is used twice"):
        NetGraph([a, a], [], [], ["a"], ["a"])
    with pytest.raises(GraphpaiError, match="used twice"):
        NetGraph([a, b, Group("c", 2, ())], [lin, Layer("l", "linear", (2, 2), "a", "c")], [],
                 ["a"], ["b"])
    with pytest.raises(GraphpaiError, match="unknown group 'zzz'"):
        NetGraph([a, b], [Layer("l", "linear", (2, 2), "zzz", "b")], [], ["a"], ["b"])
    with pytest.raises(GraphpaiError, match="produced twice"):
        NetGraph([a, b], [lin, Layer("m", "linear", (2, 2), "a", "b")], [], ["a"], ["b"])
    with pytest.raises(GraphpaiError, match="cycle"):
        NetGraph([a, b, Group("c", 2, ())],
                 [Layer("l", "linear", (2, 2), "c", "b"), Layer("m", "linear", (2, 2), "b", "c")],
                 [], ["a"], ["b"])
    with pytest.raises(GraphpaiError, match="'q' is not a group"):
        NetGraph([a, b], [lin], [], ["a"], ["q"])


def test_summary_reports_shapes_and_densities():
    masks = random_masks(GRAPH, 3, 0.25)
    s = GRAPH.summary(masks)
    rows = {row["name"]: row for row in s["layers"]}
    for name, layer in GRAPH.layers.items():
        kept = int(masks[name].sum())
        assert rows[name]["kept"] == kept and rows[name]["weights"] == prod(layer.weight_shape)
        assert rows[name]["density"] == pytest.approx(kept / prod(layer.weight_shape))
    assert s["num_weights"] == GRAPH.num_weights
    assert {g["name"]: g["channels"] for g in s["groups"]} == {k: c for k, (c, _) in GROUPS.items()}
    dense_rows = GRAPH.summary()["layers"]
    assert all(row["density"] == 1.0 for row in dense_rows)
