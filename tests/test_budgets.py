"""Budgets (docs/definitions.md#budgets) against hand computations and naive references written
here."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import brentq

from graphpai import budgets
from graphpai.budgets import (BUDGETS, Budget, check_compression, epl, erk, from_mask, igq,
                              kept_count, make_budget, parse_compression, uniform)
from graphpai.errors import BudgetError, MaskError, UnknownMethodError
from graphpai.graph import Group, Layer, NetGraph
from graphpai.masks import MaskSet


def chain(*shapes):
    """A chain of layers with the given weight shapes (linear if 2-d, else conv)."""
    groups = [Group("g0", shapes[0][1] if len(shapes[0]) == 2 else shapes[0][1])]
    layers = []
    for i, shape in enumerate(shapes):
        groups.append(Group(f"g{i + 1}", shape[0]))
        layers.append(Layer(f"l{i}", "linear" if len(shape) == 2 else "conv", tuple(shape),
                            f"g{i}", f"g{i + 1}"))
    return NetGraph(groups, layers, [], ["g0"], [f"g{len(shapes)}"])


# A conv 3->4 (3x3), a conv 4->8 (3x3) and a linear 8->10: N = 108 + 288 + 80 = 476.
NET = chain((4, 3, 3, 3), (8, 4, 3, 3), (10, 8))
SIZES = [108, 288, 80]


# ------------------------------------------------------------------------------ references
def erk_reference(shapes, c, power=1.0):
    """RigL's get_sparsities written out with exact fractions (MiCA's >= rule)."""
    d = 1 / Fraction(c)
    numel = [math.prod(s) for s in shapes]
    raw = [Fraction(sum(s), math.prod(s)) for s in shapes]
    if power != 1.0:
        raw = [Fraction(float(r) ** power) for r in raw]
    zeros = [math.floor(n * (1 - d)) for n in numel]
    dense = set()
    while True:
        if len(dense) == len(shapes):
            return [Fraction(n) for n in numel], dense, None
        rhs = sum(n - z for i, (n, z) in enumerate(zip(numel, zeros)) if i not in dense) \
            - sum(z for i, z in enumerate(zeros) if i in dense)
        divisor = sum(r * n for i, (r, n) in enumerate(zip(raw, numel)) if i not in dense)
        eps = rhs / divisor
        top = max(r for i, r in enumerate(raw) if i not in dense)
        if top * eps >= 1:
            dense |= {i for i, r in enumerate(raw) if r == top and i not in dense}
        else:
            exact = [Fraction(n) if i in dense else n * eps * raw[i] for i, n in enumerate(numel)]
            return exact, dense, eps


def assert_floor_of(counts, exact):
    """counts == floor(exact), allowing a float off-by-one only where exact is an integer."""
    for k, x in zip(counts, exact):
        if x.denominator == 1:
            assert k in (int(x), int(x) - 1)
        else:
            assert k == math.floor(x)


# ------------------------------------------------------------------------------ hand-computed
def test_uniform_by_hand():
    b = uniform(NET, 4)
    assert list(b.counts.values()) == [27, 72, 20]
    assert b.densities == {"l0": 27 / 108, "l1": 72 / 288, "l2": 20 / 80}
    assert list(uniform(NET, 7).counts.values()) == [108 // 7, 288 // 7, 80 // 7]


def test_erk_by_hand_no_dense_layer():
    # c = 4: zeros floor(0.75 N_l) = 81, 216, 60 -> rhs = 27 + 72 + 20 = 119.
    # raw_l N_l = sum of dims: 13, 18, 18 -> eps = 119/49; raw = 13/108, 18/288, 18/80.
    # max raw * eps = 0.225 * 119/49 = 0.546 < 1: no dense layer.
    b = erk(NET, 4)
    eps = 119 / 49
    assert b.params["eps"] == pytest.approx(eps)
    assert b.params["dense_layers"] == []
    assert list(b.counts.values()) == [math.floor(13 * eps), math.floor(18 * eps),
                                       math.floor(18 * eps)]  # 31, 43, 43


def test_erk_by_hand_dense_loop():
    # c = 1.25 (d = 0.8): zeros floor(0.2 N_l) = 21, 57, 16; rhs = 87 + 231 + 64 = 382,
    # eps = 382/49 and the linear layer (raw 0.225) gets 1.75 >= 1: it is dense. Then
    # rhs = 87 + 231 - 16 = 302 and eps = 302/31 puts the first conv (raw 13/108) at 1.17 >= 1:
    # dense too. Last: rhs = 231 - 21 - 16 = 194, eps = 194/18, l1 keeps floor(18 * 194/18) = 194.
    b = erk(NET, 1.25)
    assert set(b.params["dense_layers"]) == {"l0", "l2"}
    assert b.params["eps"] == pytest.approx(194 / 18)
    assert b.counts == {"l0": 108, "l1": 194, "l2": 80}


def test_erk_greater_equal_rule_at_exactly_one():
    # Layers (2, 2) and (8, 11): raw 1 and 19/88, raw_l N_l = 4 and 19. At c = 4 the ones are
    # 1 and 22, rhs = 23 = 4 + 19, so eps = 1 and max raw * eps == 1 exactly: MiCA's >= marks the
    # (2, 2) layer dense (RigL's > would not); then eps = (22 - 3)/19 = 1.
    net = chain((2, 2), (8, 11))
    b = erk(net, 4)
    assert b.params["dense_layers"] == ["l0"]
    assert b.params["eps"] == 1.0
    assert b.counts == {"l0": 4, "l1": 19}  # floor(88 * 1 * 19/88), exact
    # a little more compression: raw * eps < 1, nothing dense
    assert erk(net, 4.2).params["dense_layers"] == []


def test_erk_everything_dense_at_compression_one():
    b = erk(NET, 1)
    assert b.counts == {"l0": 108, "l1": 288, "l2": 80}
    assert b.params["eps"] is None and len(b.params["dense_layers"]) == 3


def test_erk_power_scale():
    b = erk(NET, 4, erk_power_scale=0.0)  # raw = 1 everywhere: eps = 119/476 = 0.25 -> uniform
    assert list(b.counts.values()) == [27, 72, 20]
    exact, _, _ = erk_reference([(4, 3, 3, 3), (8, 4, 3, 3), (10, 8)], 4, power=0.5)
    assert_floor_of(list(erk(NET, 4, erk_power_scale=0.5).counts.values()), exact)


def test_igq_by_hand():
    # density_l = 1/(1 + F N_l); solve sum N_l/(1 + F N_l) = 476/4 = 119 independently.
    b = igq(NET, 4)
    f_star = brentq(lambda f: sum(n / (1 + f * n) for n in SIZES) - 119, 0, 1)
    force = b.params["force"]
    assert abs(sum(n / (1 + force * n) for n in SIZES) - 119) < 1  # within one weight
    assert force == pytest.approx(f_star, rel=0.05)
    assert list(b.counts.values()) == [math.floor(n / (1 + force * n)) for n in SIZES]
    for k, n in zip(b.counts.values(), SIZES):
        assert abs(k - n / (1 + f_star * n)) <= 1


def test_igq_at_compression_one_is_dense():
    b = igq(NET, 1)
    assert b.params["force"] == 0 and b.counts == {"l0": 108, "l1": 288, "l2": 80}


def test_issue_4_igq_at_compression_n_keeps_the_reference_window():
    # c = N: the target is one weight and [VK]'s tolerance accepts any real total in (0, 2); the
    # bisection stops at the first F inside it, whose total is ~0, so every layer keeps 0 weights
    # (faithful to bs_force_igq, and what uniform's floors give at c = N too)
    b = igq(NET, 476)
    force = b.params["force"]
    total = sum(n / (1 + force * n) for n in SIZES)
    assert 0 < total < 2 and abs(total - 1) < 1
    assert b.counts == {"l0": 0, "l1": 0, "l2": 0} and len(b.zero_layers) == 3
    assert uniform(NET, 476).total == 0


def test_epl_by_hand():
    # c = 4: E = 476 - floor(476 - 119) = 119 = 3 * 39 + 2: the first two layers take one more.
    assert list(epl(NET, 4).counts.values()) == [40, 40, 39]
    # c = 1.25: E = 476 - floor(476 - 380.8) = 381, share 127 caps l0 (108) and l2 (80),
    # l1 takes the rest 381 - 188 = 193.
    assert epl(NET, 1.25).counts == {"l0": 108, "l1": 193, "l2": 80}
    # one cap after another: c = 1.6 gives E = 476 - floor(178.5) = 298, share 99.3 caps l2 (80),
    # then (298 - 80)/2 = 109 caps l0 (108), and l1 takes 298 - 188 = 110.
    assert epl(NET, 1.6).counts == {"l0": 108, "l1": 110, "l2": 80}


def test_from_mask_counts_any_maskset():
    rng = np.random.default_rng(3)
    masks = MaskSet({name: rng.random(layer.weight_shape) < 0.3 for name, layer in NET.layers.items()})
    b = from_mask(masks, NET, source="test")
    assert b.counts == {k: int(np.count_nonzero(v)) for k, v in masks.items()}
    assert b.total == sum(int(np.count_nonzero(v)) for v in masks.values())
    assert b.compression == pytest.approx(476 / b.total)
    assert b.params["source"] == "test" and b.method == "from-mask"
    plain = {k: v.astype(np.uint8) for k, v in masks.items()}  # any mapping of 0/1 arrays
    assert from_mask(plain).counts == b.counts
    with pytest.raises(MaskError):
        from_mask({"l0": masks["l0"]}, NET)


def test_budget_result_is_json_and_reports_zero_layers():
    b = uniform(NET, 100)  # floor(108/100) = 1, floor(288/100) = 2, floor(80/100) = 0
    assert b.counts == {"l0": 1, "l1": 2, "l2": 0}
    assert b.zero_layers == ("l2",)
    d = json.loads(json.dumps(b.to_dict(), allow_nan=False))
    assert d["zero_layers"] == ["l2"] and d["total"] == 3 and d["num_weights"] == 476
    assert [row["count"] for row in d["layers"]] == [1, 2, 0]
    empty = from_mask({"a": np.zeros((2, 2))})
    assert json.loads(json.dumps(empty.to_dict(), allow_nan=False))["achieved_compression"] == "inf"


def test_budget_check_against_graph():
    assert uniform(NET, 4).check(NET).method == "uniform"
    with pytest.raises(BudgetError, match="does not fit"):
        uniform(chain((2, 2)), 2).check(NET)


# ------------------------------------------------------------------------------ properties
shapes_strategy = st.lists(
    st.one_of(st.tuples(st.integers(1, 40), st.integers(1, 40)),
              st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3, 5]),
                        st.sampled_from([1, 3]))),
    min_size=1, max_size=6)


@st.composite
def net_and_compression(draw):
    shapes = draw(shapes_strategy)
    net = NetGraph([Group(f"g{i}", 1) for i in range(len(shapes) + 1)],
                   [Layer(f"l{i}", "linear" if len(s) == 2 else "conv", s, f"g{i}", f"g{i + 1}")
                    for i, s in enumerate(shapes)], [], ["g0"], [f"g{len(shapes)}"])
    n = net.num_weights
    exponent = draw(st.floats(0, 1))
    c = float(min(n, max(1.0, n ** exponent)))
    return shapes, net, c


@given(net_and_compression(), st.sampled_from(sorted(BUDGETS)))
def test_every_budget_total_is_near_target_and_within_layers(case, name):
    shapes, net, c = case
    b = make_budget(net, name, c)
    n = net.num_weights
    counts = np.array(list(b.counts.values()))
    numel = np.array([math.prod(s) for s in shapes])
    assert (counts >= 0).all() and (counts <= numel).all()
    assert abs(b.total - n / c) <= len(shapes) + 1
    assert b.densities == {k: v / math.prod(s) for (k, v), s in zip(b.counts.items(), shapes)}


@given(net_and_compression())
def test_erk_matches_exact_reference(case):
    shapes, net, c = case
    b = erk(net, c)
    exact, dense, eps = erk_reference(shapes, c)
    assert {int(k[1:]) for k in b.params["dense_layers"]} == dense
    assert list(b.counts.values()) == [math.floor(x) for x in exact]
    if eps is not None:  # dense exactly when max raw * eps >= 1 no longer holds
        raw = [Fraction(sum(s), math.prod(s)) for s in shapes]
        assert max(r for i, r in enumerate(raw) if i not in dense) * eps < 1


@given(net_and_compression())
def test_igq_within_one_weight(case):
    shapes, net, c = case
    b = igq(net, c)
    f = b.params["force"]
    sizes = [math.prod(s) for s in shapes]
    assert abs(sum(n / (1 + f * n) for n in sizes) - net.num_weights / c) < 1
    assert list(b.counts.values()) == [math.floor(n * (1 / (1 + f * n))) for n in sizes]


@given(net_and_compression())
def test_epl_caps_and_redistributes(case):
    shapes, net, c = case
    b = epl(net, c)
    sizes = [math.prod(s) for s in shapes]
    counts = list(b.counts.values())
    assert b.total == net.num_weights - math.floor(net.num_weights - net.num_weights / c)
    free = [k for k, n in zip(counts, sizes) if k < n]
    if free:  # uncapped layers share equally (to one weight); a capped one is no larger
        assert max(free) - min(free) <= 1
        assert all(n <= max(free) for k, n in zip(counts, sizes) if k == n)


# ------------------------------------------------------------------------------ compression
@pytest.mark.parametrize("text, value", [("1000", 1000.0), ("1e3", 1000.0), ("10^3", 1000.0),
                                         ("10**3", 1000.0), (" 10 ^ 0.5 ", 10 ** 0.5),
                                         (250, 250.0), ("3.5", 3.5)])
def test_parse_compression(text, value):
    assert parse_compression(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "10^", "-5", "0", "nan", "inf", None, "1e400"])
def test_parse_compression_rejects(text):
    with pytest.raises(BudgetError, match="1000, 1e3 or 10"):
        parse_compression(text)


@pytest.mark.parametrize("c", [0.5, 477, 1e9])
def test_compression_outside_range(c):
    for fn in BUDGETS.values():
        with pytest.raises(BudgetError, match=r"\[1, 476\]"):
            fn(NET, c)


def test_density_instead_of_compression_and_bad_calls():
    assert uniform(NET, density=0.25).counts == uniform(NET, 4).counts
    with pytest.raises(BudgetError, match="exactly one"):
        uniform(NET, 4, density=0.25)
    with pytest.raises(BudgetError, match="exactly one"):
        erk(NET)
    assert check_compression("10^2", 476) == 100.0


@pytest.mark.parametrize("power", [float("nan"), float("inf"), "x", None])
def test_issue_4_erk_power_scale_must_be_a_finite_number(power):
    # NaN made every raw_l NaN: no layer ever equalled the maximum and the dense loop never ended
    with pytest.raises(BudgetError, match="erk_power_scale"):
        erk(NET, 4, erk_power_scale=power)


@pytest.mark.parametrize("density", ["abc", None, [0.5], 0, 1.5, float("nan")])
def test_issue_4_bad_density_is_a_budget_error(density):
    # "abc" raised a bare ValueError from float(); None is "not given" and needs a compression
    with pytest.raises(BudgetError, match="density|exactly one"):
        uniform(NET, density=density)


def test_unknown_budget_lists_known():
    with pytest.raises(UnknownMethodError, match="epl, erk, igq, uniform"):
        make_budget(NET, "ERKK", 4)
    assert make_budget(NET, "ERK", 4) == erk(NET, 4)


def test_kept_count_is_the_global_threshold_count():
    for n, c in [(1000, 3), (476, 476), (14715584, 10 ** 5.5), (270896, 1)]:
        assert kept_count(n, c) == n - int((1 - Fraction(1) / Fraction(c)) * n)


# ------------------------------------------------------------------------------ the zoo
GRID = [10 ** (x / 2) for x in range(1, 13)]


def test_zoo_grid_no_budget_crashes():
    models = pytest.importorskip("graphpai.torch.models")
    from graphpai.torch.extract import to_graph

    for name in sorted(models.MODELS):
        with _meta_default():
            graph = to_graph(models.build(name))
        n = graph.num_weights
        for c in GRID:
            for budget in BUDGETS:
                if c > n:
                    with pytest.raises(BudgetError):
                        make_budget(graph, budget, c)
                    continue
                b = make_budget(graph, budget, c)
                assert 0 <= b.total <= n and b.total >= n / c - len(graph.layers) - 1
                assert all(0 <= row.count <= row.numel for row in b.layers)
                assert b.zero_layers == tuple(r.layer for r in b.layers if r.count == 0)


def test_spec_vgg16_erk_first_conv_gets_nothing_at_10_5_5():
    models = pytest.importorskip("graphpai.torch.models")
    from graphpai.torch.extract import to_graph

    with _meta_default():
        graph = to_graph(models.build("vgg16"))
    b = erk(graph, 10 ** 5.5)
    assert "features.0" in b.zero_layers  # docs/definitions.md#budgets
    assert "features.0" not in erk(graph, 10 ** 3).zero_layers


def _meta_default():
    """Build zoo models on the meta device: budgets need shapes, not initialised weights."""
    import torch

    return torch.device("meta")
