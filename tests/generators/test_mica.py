"""MiCA (docs/definitions.md#mica): pass 1 by hand, pass 2 tiers, exact budgets, full
functionality, RPI shuffle.

Functionality is checked against computations written here or in tests/oracles.py: a channel
reach/co-reach written from docs/definitions.md#functional, the unrolled pixel graph on tiny nets,
and the spatial
activity engine (itself checked against that oracle and [VK]'s autograd test) on the big nets.
"""

from __future__ import annotations

import itertools
import os
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphpai.budgets import epl, erk, igq, uniform
from graphpai.errors import BudgetError, UnknownMethodError
from graphpai.graph import Group, Layer, Link, NetGraph
from graphpai.generators.mica import mica, node_counts, place_edges, place_layer, shuffle
from graphpai.masks import MaskSet
from oracles import UnrolledGraph
from strategies import tiny_graph

LONG = os.environ.get("GRAPHPAI_HYPOTHESIS", "ci") != "ci"
FEW = 40 if LONG else 3  # examples on the big nets
BUDGETS = {"uniform": uniform, "erk": erk, "igq": igq, "epl": epl}
GRID = [x / 2 for x in range(1, 12)]  # 10^0.5 ... 10^5.5


# ------------------------------------------------------------------------------ independent checks
def channel_functional(graph, masks):
    """docs/definitions.md#functional channel semantics, written from the definition (reach, then
    co-reach)."""
    reach = {name: np.ones(graph.groups[name].channels, bool) for name in graph.inputs}
    for op in graph.order:
        if isinstance(op, Layer):
            reach[op.target] = graph.multiplicity(op, masks) @ reach[op.source] > 0
        else:
            total = np.zeros(graph.groups[op.target].channels)
            for position, source in enumerate(op.sources):
                total += graph.link_matrix(op, position) @ reach[source]
            reach[op.target] = total > 0
    co = {name: np.zeros(group.channels, bool) for name, group in graph.groups.items()}
    for name in graph.outputs:
        co[name][:] = True
    for op in reversed(graph.order):
        if isinstance(op, Layer):
            co[op.source] |= graph.multiplicity(op, masks).T @ co[op.target] > 0
        else:
            for position, source in enumerate(op.sources):
                co[source] |= graph.link_matrix(op, position).T @ co[op.target] > 0
    out = {}
    for name, layer in graph.layers.items():
        mask = np.asarray(masks[name], bool)
        c_out, cin_g = layer.weight_shape[:2]
        o = np.arange(c_out)[:, None]
        i = (o // (c_out // layer.groups)) * cin_g + np.arange(cin_g)[None, :]
        ok = co[layer.target][o] & reach[layer.source][i]
        out[name] = mask & ok.reshape((c_out, cin_g) + (1,) * (mask.ndim - 2))
    return out


def dead(masks, functional):
    return {k: int((masks[k] & ~functional[k]).sum()) for k in masks if (masks[k] & ~functional[k]).any()}


def spatial_functional(graph, masks):
    from graphpai.torch.spatial import activity

    return activity(graph, masks).functional


# ------------------------------------------------------------------------------ tiny graphs
def mlp(widths):
    groups = [Group(f"g{k}", w) for k, w in enumerate(widths)]
    layers = [Layer(f"fc{k}", "linear", (b, a), f"g{k}", f"g{k + 1}")
              for k, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]
    return NetGraph(groups, layers, [], ["g0"], [groups[-1].name])


def conv(name, c_in, c_out, src, dst, size, k=3, groups=1, stride=1, pad=1):
    out = tuple((s + 2 * pad - k) // stride + 1 for s in size)
    return Layer(name, "conv", (c_out, c_in // groups, k, k), src, dst, (stride, stride),
                 ((pad, pad), (pad, pad)), (1, 1), groups, in_size=size, out_size=out)


def residual_graph():
    """x(4) -> conv1 -> h(5) -> conv2 -> y(4); sum = y + x; gap; fc -> 3 logits."""
    s = (4, 4)
    groups = [Group("x", 4, s), Group("h", 5, s), Group("y", 4, s), Group("sum", 4, s),
              Group("gap", 4), Group("logits", 3)]
    layers = [conv("conv1", 4, 5, "x", "h", s), conv("conv2", 5, 4, "h", "y", s),
              Layer("fc", "linear", (3, 4), "gap", "logits")]
    links = [Link("sum", "add", ("y", "x"), "sum"),
             Link("gap", "pool", ("sum",), "gap", {"mode": "avg", "adaptive": True, "output_size": ()})]
    return NetGraph(groups, layers, links, ["x"], ["logits"])


# ------------------------------------------------------------------------------ pass 1 by hand
def test_pass1_chain_by_hand():
    g = mlp([4, 6, 3])
    # fc2: c = 3 classes, E = 3 -> V = 3, range [1, 3]; fc1: E = 5, V = min(n2, 5, 6)
    for mode, n2, n1 in [("min", 1, None), ("max", 3, 5)]:
        plan = node_counts(g, {"fc0": 5, "fc1": 3}, node_selection=mode)
        row = plan["fc1"]
        assert (row.request, row.v_out, row.low, row.high, row.n, row.passed) == (3, 3, 1, 3, n2, n2)
        first = plan["fc0"]
        v1 = min(n2, 5, 6)
        low, high = -(-5 // v1), 5
        assert (first.request, first.v_out, first.low, first.high) == (n2, v1, low, high)
        assert first.n == (low if mode == "min" else high)
        assert first.passed == min(first.n, 4)
        assert plan.requests == {"g2": 3, "g1": n2, "g0": first.passed}


def test_pass1_draws_cover_the_integer_range():
    g = mlp([50, 40, 10])
    seen = set()
    for seed in range(200):
        row = node_counts(g, {"fc0": 30, "fc1": 12}, seed=seed)["fc0"]
        # fc1: V = 10, n in [2, 12]; fc0: c = min(n, 40) -> V = c, range [ceil(30/c), 30]
        assert row.low == -(-30 // row.v_out) and row.high == 30
        assert row.low <= row.n <= row.high
        seen.add(row.n)
    assert min(seen) <= 4 and max(seen) == 30


def test_pass1_empty_range_takes_ceil():
    # conv k = 9, E = 10, request 5: V = 5, range [ceil(10/5), floor(10/9)] = [2, 1] is empty
    s = (3, 3)
    g = NetGraph([Group("x", 8, s), Group("y", 5, s), Group("gap", 5), Group("logits", 5)],
                 [conv("c", 8, 5, "x", "y", s), Layer("fc", "linear", (5, 5), "gap", "logits")],
                 [Link("gap", "pool", ("y",), "gap", {"mode": "avg", "adaptive": True,
                                                      "output_size": ()})], ["x"], ["logits"])
    # fc: V = 5, range [1, 5], "max" -> n = 5 -> request 5 at y
    plan = node_counts(g, {"c": 10, "fc": 5}, node_selection="max")
    row = plan["c"]
    assert (row.request, row.v_out, row.low, row.high, row.n, row.passed) == (5, 5, 2, 1, 2, 2)
    # a budget below V: E = 3 -> V = 3, range [1, 0] empty -> n = 1
    row = node_counts(g, {"c": 3, "fc": 5}, node_selection="max")["c"]
    assert (row.v_out, row.low, row.high, row.n) == (3, 1, 0, 1)


def test_pass1_zero_budget_requests_nothing():
    g = mlp([4, 6, 5, 3])
    plan = node_counts(g, {"fc0": 7, "fc1": 0, "fc2": 3}, node_selection="max")
    assert (plan["fc1"].v_out, plan["fc1"].n, plan["fc1"].passed) == (0, 0, 0)
    assert (plan["fc0"].request, plan["fc0"].v_out, plan["fc0"].n) == (0, 0, 0)


def test_pass1_residual_max():
    g = residual_graph()
    counts = {"conv1": 40, "conv2": 12, "fc": 6}
    plan = node_counts(g, counts, node_selection="max")
    # fc: c = 3, E = 6 -> V = 3, range [2, 6] -> n = 6, passed min(6, 4) = 4
    assert (plan["fc"].v_out, plan["fc"].n, plan["fc"].passed) == (3, 6, 4)
    # the add passes 4 to conv2 and to the identity shortcut
    c2 = plan["conv2"]  # V = 4, range [3, floor(12/9) = 1] empty -> n = 3
    assert (c2.request, c2.v_out, c2.low, c2.high, c2.n, c2.passed) == (4, 4, 3, 1, 3, 3)
    c1 = plan["conv1"]  # c = 3, V = 3, range [14, 4] empty -> n = 14, passed min(14, 4) = 4
    assert (c1.request, c1.v_out, c1.low, c1.high, c1.n, c1.passed) == (3, 3, 14, 4, 14, 4)
    assert plan.requests["x"] == max(4, 4)
    # with conv1's request below the shortcut's, the block passes back the shortcut's
    plan = node_counts(g, {"conv1": 9, "conv2": 12, "fc": 6}, node_selection="max")
    assert plan["conv1"].passed == 3  # c = 3, V = 3, range [3, 1] empty -> n = 3
    assert plan.requests["x"] == 4


def test_pass1_residual_max_conv1_wins():
    g = residual_graph()
    # fc with "min": n = ceil(6/3) = 2 -> request 2 at the sum; conv1 asks for 4
    plan = node_counts(g, {"conv1": 90, "conv2": 10, "fc": 6}, node_selection="min")
    assert plan["fc"].passed == 2 and plan.requests["sum"] == 2
    c2 = plan["conv2"]  # V = 2, range [5, 1] -> 5 -> passed 5 (h has 5 channels)
    assert (c2.v_out, c2.n, c2.passed) == (2, 5, 5)
    c1 = plan["conv1"]  # V = 5, range [18, 10] -> 18 -> passed 4
    assert (c1.v_out, c1.n, c1.passed) == (5, 18, 4)
    assert plan.requests["x"] == max(4, 2)


def test_pass1_concat_flatten_grouped():
    s = (2, 2)
    groups = [Group("x", 4, s), Group("a", 3, s), Group("b", 5, s), Group("cat", 8, s),
              Group("gc", 8, s), Group("flat", 32), Group("logits", 2)]
    layers = [conv("ca", 4, 3, "x", "a", s), conv("cb", 4, 5, "x", "b", s, k=1, pad=0),
              conv("gconv", 8, 8, "cat", "gc", s, groups=4),
              Layer("fc", "linear", (2, 32), "flat", "logits")]
    links = [Link("cat", "concat", ("a", "b"), "cat"), Link("flat", "flatten", ("gc",), "flat")]
    g = NetGraph(groups, layers, links, ["x"], ["logits"])
    counts = {"ca": 20, "cb": 6, "gconv": 10, "fc": 20}
    plan = node_counts(g, counts, node_selection="min")
    # fc reads a flattened 8 x 2 x 2 map: k = 4; V = 2, range [10, 5] empty -> n = 10 -> 8 chans
    fc = plan["fc"]
    assert (fc.kernel, fc.v_out, fc.low, fc.high, fc.n, fc.passed) == (4, 2, 10, 5, 10, 8)
    assert plan.requests["flat"] == 32 and plan.requests["gc"] == 8
    # grouped conv, 4 groups of 2 in / 2 out: V = 8, range [2, 1] -> n = 2; its outputs touch all
    # 4 groups, so it asks for (4 - 1) * 2 + 1 = 7 input channels
    gc = plan["gconv"]
    assert (gc.v_out, gc.n, gc.passed) == (8, 2, 7)
    # concat: request 7 over parts of 3 and 5; each part first gets what its producer must feed
    # (ca: ceil(20/36) = 1, cb: ceil(6/4) = 2), the other 4 go in channel order -> 3 and 4
    assert plan["ca"].request == 3 and plan["cb"].request == 4
    # gconv with E = 3: V = 3, n = 1, raised to (2 - 1) * 2 + 1 = 3 for the 2 groups it touches;
    # cb must feed ceil(12/4) = 3 outputs, so the split is 1 + 3 (not the prefix's 3 + 0)
    plan = node_counts(g, {**counts, "cb": 12, "gconv": 3}, node_selection="min")
    assert plan["gconv"].passed == 3 and plan.requests["cat"] == 3
    assert plan["ca"].request == 1 and plan["cb"].request == 3


def test_pass1_num_classes_and_errors():
    g = mlp([4, 6, 5])
    assert node_counts(g, {"fc0": 5, "fc1": 4}, num_classes=2)["fc1"].request == 2
    with pytest.raises(BudgetError, match="num_classes"):
        node_counts(g, {"fc0": 5, "fc1": 4}, num_classes=9)
    with pytest.raises(UnknownMethodError, match="rand"):
        node_counts(g, {"fc0": 5, "fc1": 4}, node_selection="median")
    with pytest.raises(BudgetError, match="missing"):
        node_counts(g, {"fc0": 5})
    with pytest.raises(BudgetError, match="fc1"):
        node_counts(g, {"fc0": 5, "fc1": 31})


# ------------------------------------------------------------------------------ pass 2 tiers
@st.composite
def layer_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin_g = draw(st.integers(1, 5))
    cout_g = draw(st.integers(1, 5))
    k = draw(st.sampled_from([1, 3, 9]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    active = rng.random((groups * cin_g, k)) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    size = groups * cout_g * cin_g * k
    budget = draw(st.integers(0, size))
    n_out = draw(st.integers(1, groups * cout_g))
    return active, budget, n_out, groups * cout_g, groups, draw(st.booleans()), seed


@given(layer_cases())
def test_place_layer_exact_count_and_tier_order(case):
    active, budget, n_out, c_out, groups, random_outputs, seed = case
    mask = place_layer(active, budget, n_out, out_channels=c_out, groups=groups,
                       random_outputs=random_outputs, seed=seed)
    units, k = active.shape
    cin_g, cout_g = units // groups, c_out // groups
    assert mask.shape == (c_out, cin_g * k) and mask.sum() == budget
    act_rows = active.reshape(groups, -1)[np.arange(c_out) // cout_g]
    live = active.any(axis=1).reshape(groups, cin_g)
    if not random_outputs:
        # the prefix, plus the first output of a group with active inputs and none selected
        sel = (np.arange(c_out) < n_out).reshape(groups, cout_g)
        sel[:, 0] |= live.any(axis=1) & ~sel.any(axis=1)
        sel = sel.reshape(-1)
        in_sel = int((mask & act_rows & sel[:, None]).sum())
        capacity_sel = int((act_rows & sel[:, None]).sum())
        capacity_act = int(act_rows.sum())
        # tiers (i)+(ii) fill first, then (iii), then (iv)
        assert in_sel == min(budget, capacity_sel)
        assert int((mask & act_rows).sum()) == min(budget, capacity_act)
    # assurance: per group, if the budget covers sum_g max(A_g, V_g), every active input channel
    # feeds a selected output, and every selected output of a group with an active input gets one
    if not random_outputs:
        sel = sel.reshape(groups, cout_g)
        a_g, v_g = live.sum(1), sel.sum(1)
        need = int(np.where((a_g > 0) & (v_g > 0), np.maximum(a_g, v_g), 0).sum())
        if budget >= need:
            m = mask.reshape(groups, cout_g, cin_g, k)
            for gr in range(groups):
                if a_g[gr] and v_g[gr]:
                    used_in = (m[gr][sel[gr]] & active.reshape(groups, cin_g, k)[gr]).any(axis=(0, 2))
                    assert used_in[live[gr]].all()
                    assert m[gr][sel[gr]].any(axis=(1, 2)).all()


@pytest.mark.parametrize("kw, match", [({"budget": -1}, "outside"), ({"budget": 13}, "outside"),
                                       ({"n_out": 0}, "n_out"), ({"n_out": 5}, "n_out"),
                                       ({"groups": 2}, "groups")])
def test_issue_5_place_layer_checks_its_arguments(kw, match):
    # budget=-1 returned a mask with 2 kept weights; n_out=5 and groups=2 were numpy IndexError
    # and broadcasting errors
    args = {"budget": 2, "n_out": 1, "out_channels": 4, "groups": 1, **kw}
    with pytest.raises(BudgetError, match=match):
        place_layer(np.ones((3, 1), bool), args.pop("budget"), args.pop("n_out"), **args)


def test_place_layer_short_budget_covers_the_shorter_list_first():
    # 6 active inputs (one offset each), 3 selected outputs, budget 4: the first 3 pairs match
    # input j with output j, so all 3 outputs and 4 distinct inputs are covered
    active = np.ones((6, 1), bool)
    for seed in range(20):
        mask = place_layer(active, 4, 3, out_channels=5, seed=seed)
        assert mask.sum() == 4
        assert mask[:3].any(axis=1).all() and not mask[3:].any()
        assert mask.any(axis=0).sum() == 4
    # 2 active inputs, 5 selected outputs, budget 5: every output gets one edge from an input
    active = np.zeros((4, 1), bool)
    active[[1, 3]] = True
    mask = place_layer(active, 5, 5, out_channels=6, seed=0)
    assert mask[:5].sum(axis=1).tolist() == [1] * 5 and not mask[:, [0, 2]].any()
    assert mask[:, [1, 3]].any(axis=0).all()


def test_place_layer_classifier_picks_random_classes():
    active = np.ones((4, 1), bool)
    rows = {tuple(np.flatnonzero(place_layer(active, 3, 3, out_channels=10, random_outputs=True,
                                             seed=s).any(axis=1))) for s in range(30)}
    assert len(rows) > 10 and all(len(r) == 3 for r in rows)


def test_issue_5_all_conv_classifier_picks_random_classes():
    # the classifier is a 1x1 conv read through a global pool and a flatten: it was not seen as
    # the classifier (its target is not the output group) and always kept the prefix classes
    import torch.nn as nn

    from graphpai.torch.extract import to_graph

    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 10, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    graph = to_graph(model, (3, 4, 4))
    head = [name for name, layer in graph.layers.items() if layer.out_channels == 10][0]
    assert graph.layers[head].target not in graph.outputs
    counts = {name: (3 if name == head else 20) for name in graph.layers}
    used = {tuple(np.flatnonzero(mica(graph, counts, seed=s)[head].any(axis=(1, 2, 3))))
            for s in range(10)}
    assert all(len(rows) == 3 for rows in used) and len(used) > 3  # the prefix would be (0, 1, 2)


def test_place_layer_uses_only_active_offsets():
    # a conv input with two channels; channel 0 only has offset 4 active
    active = np.zeros((2, 9), bool)
    active[0, 4] = True
    active[1, [0, 8]] = True
    for seed in range(10):
        mask = place_layer(active, 4, 2, out_channels=3, seed=seed).reshape(3, 2, 9)
        assert not (mask & ~active[None]).any()
        assert mask[:2].any(axis=(1, 2)).all() and mask[:, 0, 4].any() and mask[:, 1].any()


# ------------------------------------------------------------------------------ whole networks
def _custom_dag():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class CustomDAG(nn.Module):
        """Concat of two branches, a grouped conv, a depthwise residual, flatten into fc."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.a = nn.Conv2d(8, 6, 3, padding=1, bias=False)
            self.b = nn.Conv2d(8, 6, 1, bias=False)
            self.grouped = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=3, bias=False)
            self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(12 * 2 * 2, 10)

        def forward(self, x):
            x = F.relu(self.stem(x))
            y = torch.cat([self.a(x), self.b(x)], dim=1)
            y = F.relu(self.grouped(y))
            y = y + self.depthwise(y)
            return self.fc(torch.flatten(self.pool(y), 1))

    from graphpai.torch.extract import to_graph

    torch.manual_seed(0)
    return to_graph(CustomDAG(), (3, 8, 8))


_GRAPHS = {}


def zoo_graph(name):
    if name not in _GRAPHS:
        if name == "custom_dag":
            _GRAPHS[name] = _custom_dag()
        else:
            from graphpai.torch.extract import to_graph
            from graphpai.torch.models import build

            options = {"cifar_stem": True} if name == "resnet18" else {}
            _GRAPHS[name] = to_graph(build(name, seed=0, **options), (3, 32, 32))
    return _GRAPHS[name]


def concats_can_be_consumed(graph, counts):
    """Whether the layers reading each concat keep at least one weight per part that keeps
    weights: otherwise a part is dead for every method, so no mask is fully functional."""
    for link in graph.links:
        if link.kind == "concat":
            parts = sum(1 for s in link.sources
                        if isinstance(graph.producer(s), Layer) and counts[graph.producer(s).name])
            readers = sum(counts[op.name] for op in graph.consumers(link.target)
                          if isinstance(op, Layer))
            if readers < parts:
                return False
    return True


def check_mica(graph, budget_name, exponent, seed, node_selection="rand", oracle=False, least=1):
    budget = BUDGETS[budget_name](graph, min(10 ** exponent, graph.num_weights))
    masks = mica(graph, budget, seed=seed, node_selection=node_selection)
    assert masks.counts() == budget.counts
    assert masks == mica(graph, budget, seed=seed, node_selection=node_selection)
    if (min(budget.counts.values()) < least
            or not concats_can_be_consumed(graph, budget.counts)):
        return masks, budget
    assert dead(masks, channel_functional(graph, masks)) == {}
    if oracle:
        assert dead(masks, UnrolledGraph(graph, masks).functional()) == {}
    else:
        assert dead(masks, spatial_functional(graph, masks)) == {}
    return masks, budget


@given(budget_name=st.sampled_from(sorted(BUDGETS)), exponent=st.sampled_from(GRID),
       seed=st.integers(0, 2**16), node_selection=st.sampled_from(["rand", "min", "max"]))
@settings(max_examples=200 if LONG else 25)
def test_custom_dag_exact_and_functional(budget_name, exponent, seed, node_selection):
    # concat of two branches, a grouped conv, a depthwise residual, flatten into the classifier.
    # Both branches keep weights, so the conv after the concat needs two edges (one per branch)
    # for a fully functional mask to exist at all; with one, a branch is dead for every method.
    check_mica(zoo_graph("custom_dag"), budget_name, exponent, seed, node_selection)


@pytest.mark.parametrize("name", ["tiny_resnet", "concat_dag", "same_asym", "conv1d"])
@given(budget_name=st.sampled_from(sorted(BUDGETS)), exponent=st.sampled_from(GRID),
       seed=st.integers(0, 2**16), node_selection=st.sampled_from(["rand", "min", "max"]))
@settings(max_examples=60 if LONG else 10)
def test_tiny_nets_exact_and_functional(name, budget_name, exponent, seed, node_selection):
    # At one to three weights per layer a branchy net may have no fully functional mask at all
    # (a grouped conv after a concat must read both branches through few edges), so the
    # functionality check needs at least 4 per layer here; the counts are exact regardless.
    graph = _GRAPHS.setdefault(name, tiny_graph(name)[0])
    check_mica(graph, budget_name, exponent, seed, node_selection, oracle=True, least=4)


@pytest.mark.parametrize("name,examples", [("vgg16", FEW), ("resnet20", 2 * FEW), ("resnet18", FEW)])
def test_zoo_exact_and_functional(name, examples):
    graph = zoo_graph(name)

    @given(budget_name=st.sampled_from(["erk", "igq", "uniform", "epl"]),
           exponent=st.sampled_from(GRID), seed=st.integers(0, 2**16))
    @settings(max_examples=examples)
    def run(budget_name, exponent, seed):
        check_mica(graph, budget_name, exponent, seed)

    run()


def _attention_graph(name):
    """The zoo's ViT (fused qkv Linear, SDPA) and oracles.mha_encoder (nn.MultiheadAttention's
    packed in_proj_weight): one layer makes Q, K and V, whose channels depend on each other."""
    if name not in _GRAPHS:
        from graphpai.torch.extract import to_graph
        from graphpai.torch.models import build
        from oracles import mha_encoder

        _GRAPHS[name] = (to_graph(build("vit", seed=0)) if name == "vit"
                         else to_graph(mha_encoder(), (5, 8)))
    return _GRAPHS[name]


@pytest.mark.parametrize("name", ["vit", "mha"])
@given(budget_name=st.sampled_from(["erk", "igq", "uniform"]),
       exponent=st.sampled_from([0.5, 1.0, 1.5, 2.0]), seed=st.integers(0, 2**16))
@settings(max_examples=2 * FEW, deadline=None)
def test_fused_qkv_projection_comes_out_fully_functional(name, budget_name, exponent, seed):
    """A Q or K weight is functional only when its head keeps a functional V weight; pass 2's
    prefix of selected outputs can hold Q rows only (ViT's second block at 10x did: 340 dead
    weights), and the repair must then move weights into V rows."""
    graph = _attention_graph(name)
    budget = BUDGETS[budget_name](graph, min(10 ** exponent, graph.num_weights))
    if min(budget.counts.values()) < 4:  # a head needs a V and a projection weight at least
        return
    masks = mica(graph, budget, seed=seed)
    assert masks.counts() == budget.counts
    from graphpai.functional import functional_edges

    live = spatial_functional(graph, masks)
    assert dead(masks, functional_edges(graph, masks, semantics="channel")) == dead(masks, live)
    # the documented limit (docs/mica.md): weights stay dead only in a layer whose budget exceeds
    # the positions that can carry signal given the rest; pass 1 does not model attention, so
    # with 8 features (the MHA encoder) a head's V can leave its output projection 6 of 8
    for name in dead(masks, live):
        capable = spatial_functional(graph, {**masks, name: np.ones_like(masks[name])})[name]
        assert int((masks[name] & live[name]).sum()) == int(capable.sum()), name


def test_vit_second_block_at_10x_is_repaired():
    """The point that showed the coupling: without the coupled moves, the second block's qkv
    kept its 340 weights in Q rows 0-31 and none was functional."""
    graph = _attention_graph("vit")
    budget = erk(graph, 10)
    plain = mica(graph, budget, seed=0, repair=False)
    qkv = "blocks.1.attn.qkv"
    assert not plain[qkv][64:].any()  # no V row: the Q/K weights cannot be functional
    assert not spatial_functional(graph, plain)[qkv].any()
    masks = mica(graph, budget, seed=0)
    assert masks[qkv][64:].any() and dead(masks, spatial_functional(graph, masks)) == {}


def test_vgg16_grid_points_where_tiny_maps_need_the_repair():
    # VGG-16's last block runs on 2 x 2 maps; these points leave spatially dead weights without
    # the repair (found by a sweep over the grid, 3 seeds and the 3 node selections; if a change
    # to the placement moves them, sweep again), and must come out fully functional with it
    graph = zoo_graph("vgg16")
    for exponent, seed, mode in [(3.5, 0, "max"), (5.5, 2, "rand")]:
        budget = igq(graph, 10 ** exponent)
        rng = np.random.default_rng(seed)
        plan = node_counts(graph, budget, seed=rng, node_selection=mode)
        raw = place_edges(graph, budget, plan, seed=rng, repair=False).masks
        assert dead(raw, channel_functional(graph, raw)) == {}  # tier (i) alone: channel-complete
        assert dead(raw, spatial_functional(graph, raw)) != {}
        fixed = place_edges(graph, budget, node_counts(graph, budget, seed=seed, node_selection=mode),
                            seed=seed)
        assert fixed.masks.counts() == budget.counts
        assert dead(fixed.masks, spatial_functional(graph, fixed.masks)) == {}


def test_issue_5_repair_moves_only_dead_weights_and_keeps_counts():
    # same seed with and without the repair: the two passes draw the same numbers, so the masks
    # differ only where repair=False left dead weights (spatial semantics, checked here). The
    # repair keeps every live weight and every count, moves at most the dead ones (a repair
    # further out can revive some), and is a no-op where nothing is dead
    graph = zoo_graph("vgg16")
    budget = igq(graph, 10 ** 3.5)
    raw = mica(graph, budget, seed=0, node_selection="max", repair=False)
    rng = np.random.default_rng(0)
    fixed = place_edges(graph, budget, node_counts(graph, budget, seed=rng, node_selection="max"),
                        seed=rng)
    assert fixed.masks == mica(graph, budget, seed=0, node_selection="max")
    live = spatial_functional(graph, raw)
    lost = dead(raw, live)
    assert lost and fixed.masks.counts() == raw.counts() == budget.counts
    assert dead(fixed.masks, spatial_functional(graph, fixed.masks)) == {}
    for name in graph.layers:
        assert not (live[name] & ~fixed.masks[name]).any(), name  # no live weight removed
        changed = int((raw[name] & ~fixed.masks[name]).sum())
        assert changed == fixed.moved[name] <= lost.get(name, 0), name
    assert sum(fixed.moved.values()) > 0
    resnet = zoo_graph("resnet20")
    budget = erk(resnet, 300)
    plain = mica(resnet, budget, seed=1, repair=False)
    assert dead(plain, spatial_functional(resnet, plain)) == {}
    assert mica(resnet, budget, seed=1) == plain


@given(widths=st.lists(st.integers(1, 12), min_size=3, max_size=6), data=st.data())
@settings(max_examples=80 if LONG else 25)
def test_chain_tier_one_alone_consumes_every_selected_output(widths, data):
    # On a chain the live inputs of layer l+1 are the outputs layer l fed, V_l of them when layer
    # l's budget fits its selected outputs, and V_l <= c <= n_{l+1} <= E_{l+1}: the assurance
    # pairs give each one an outgoing edge. So the two passes alone are fully functional whenever
    # no budget is zero, none exceeds (live inputs) x (outputs), and no overflow to unselected
    # outputs (tier iii) feeds more channels than the next budget
    g = mlp(widths)
    counts = {name: data.draw(st.integers(1, layer.numel), label=name)
              for name, layer in g.layers.items()}
    seed = data.draw(st.integers(0, 2**16), label="seed")
    plan = node_counts(g, counts, seed=seed)
    masks = place_edges(g, counts, plan, seed=seed, repair=False).masks
    assert masks.counts() == counts
    names = list(g.layers)
    feasible = True
    live = widths[0]  # the input features are all live
    for before, after in zip(names[:-1], names[1:]):
        fed = masks[before].any(axis=1)
        fits = counts[after] <= fed.sum() * masks[after].shape[0]
        if fed.sum() <= counts[after] and fits:
            assert (masks[after][:, fed].any(axis=0)).all()
        if max(1, plan[before].v_out) < fed.sum():  # only when tier (iii) was needed
            assert counts[before] > max(1, plan[before].v_out) * live
        feasible &= bool(fed.sum() <= counts[after] and fits)
        live = int(fed.sum())
    if feasible:
        assert dead(masks, channel_functional(g, masks)) == {}


def test_same_seed_same_mask_and_seeds_differ():
    graph = zoo_graph("resnet20")
    budget = erk(graph, 100)
    a = mica(graph, budget, seed=7)
    assert a == mica(graph, budget, seed=7)
    assert a != mica(graph, budget, seed=8)
    assert a == mica(graph, budget.counts, seed=np.random.default_rng(7))


def test_issue_5_mask_depends_only_on_the_numpy_seed():
    # "the same seed gives the same mask on every machine": placement draws from one numpy
    # Generator only. The torch RNG (state before the call and after), numpy's legacy global
    # state and the number of torch threads the activity engine runs on change nothing.
    import torch

    graph = zoo_graph("resnet20")
    budget = igq(graph, 1000)
    threads, np_state = torch.get_num_threads(), np.random.get_state()
    masks = []
    try:
        with torch.random.fork_rng(devices=[]):
            for torch_seed, np_seed, n_threads in [(0, 0, 1), (123, 9, 2)]:
                torch.manual_seed(torch_seed)
                np.random.seed(np_seed)
                torch.set_num_threads(n_threads)
                state = torch.get_rng_state()
                masks.append(mica(graph, budget, seed=5))
                assert torch.equal(torch.get_rng_state(), state)  # no torch draw at all
    finally:
        torch.set_num_threads(threads)
        np.random.set_state(np_state)
    assert masks[0] == masks[1]


def test_zero_budget_layer_keeps_counts():
    graph = zoo_graph("vgg16")
    budget = erk(graph, 10 ** 6)
    assert budget.zero_layers
    masks = mica(graph, budget, seed=0)
    assert masks.counts() == budget.counts


# ------------------------------------------------------------------------------ RPI equivalence
def test_shuffle_keeps_counts_and_shapes():
    graph = zoo_graph("resnet20")
    masks = mica(graph, igq(graph, 1000), seed=0)
    shuffled = shuffle(masks, seed=0)
    assert shuffled.counts() == masks.counts()
    assert all(shuffled[k].shape == masks[k].shape for k in masks)
    assert shuffled == shuffle(masks, seed=0) and shuffled != masks


def test_shuffle_has_the_distribution_of_rpi():
    # a 2 x 3 layer with 2 kept: every one of the C(6, 2) = 15 subsets equally likely, whatever
    # positions the input kept (chi-square, 14 dof, 0.1% critical value 36.12)
    from graphpai.generators.random import rpi

    g = mlp([3, 2])

    class Counts:
        counts = {"fc0": 2}

    subsets = {s: i for i, s in enumerate(itertools.combinations(range(6), 2))}
    trials = 3000
    for source in ([[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 1]]):
        hist = np.zeros(comb(6, 2))
        for seed in range(trials):
            hist[subsets[tuple(np.flatnonzero(shuffle({"fc0": source}, seed=seed)["fc0"]))]] += 1
        expected = trials / comb(6, 2)
        assert ((hist - expected) ** 2 / expected).sum() < 36.12
    hist = np.zeros(comb(6, 2))
    for seed in range(trials):
        hist[subsets[tuple(np.flatnonzero(rpi(g, Counts(), seed=seed)["fc0"]))]] += 1
    assert ((hist - trials / 15) ** 2 / (trials / 15)).sum() < 36.12


# ------------------------------------------------------------------------------ prune and registry
def test_prune_method_mica_with_every_budget():
    from graphpai.generators import GENERATORS
    from graphpai.prune import prune

    assert GENERATORS["mica"].func is mica
    graph = zoo_graph("resnet20")
    for name in ("uniform", "erk", "igq", "epl"):
        masks = prune(graph, "mica", budget=name, compression=300, seed=1)
        assert masks.counts() == BUDGETS[name](graph, 300).counts
        assert dead(masks, channel_functional(graph, masks)) == {}
    # from a mask: MiCA-X keeps X's per-layer counts
    source = shuffle(mica(graph, erk(graph, 50), seed=3), seed=3)
    masks = prune(graph, "mica", budget=source, seed=2, node_selection="max")
    assert masks.counts() == source.counts()


def test_counts_must_fit():
    graph = mlp([3, 4, 2])
    with pytest.raises(BudgetError):
        mica(graph, {"fc0": 13, "fc1": 1})
    with pytest.raises(BudgetError):
        mica(graph, [1, 2])
    assert isinstance(mica(graph, {"fc0": 0, "fc1": 0}), MaskSet)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), "3", 2.5, -1])
def test_issue_5_count_that_is_not_an_integer_is_a_budget_error(bad):
    # None and NaN raised a bare TypeError/ValueError from int()
    with pytest.raises(BudgetError, match="'fc0' is not an integer in \\[0, 12\\]"):
        mica(mlp([3, 4, 2]), {"fc0": bad, "fc1": 1})


def test_cli_prune_mica_end_to_end(tmp_path, capsys):
    import json

    from graphpai.cli import main

    out = tmp_path / "masks.pt"
    argv = ["prune", "--model", "resnet20", "--method", "mica", "--budget", "erk",
            "--compression", "1e3", "--seed", "0", "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    masks = MaskSet.load(out)
    graph = zoo_graph("resnet20")
    assert masks.counts() == erk(graph, 1000).counts
    assert printed["method"] == "mica" and printed["total"] == masks.kept()
    assert masks == mica(graph, erk(graph, 1000), seed=0)
    assert dead(masks, spatial_functional(graph, masks)) == {}
