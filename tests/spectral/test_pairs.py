"""[RAM]'s code outputs (issue 13 item 4): ism/ism_norm, imax_ep/i_mean_ep on closed-form layers,
and the layer-pair scores on tiny hand-computed networks, chains and DAGs (flatten, concat, add)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from graphpai import Group, Layer, MaskSet, NetGraph
from graphpai.graph import Link
from graphpai.spectral import channel_overlap, layer_spectrum, pair_scores, pairs, spectral


# ----------------------------------------------------------------------------- ism, expansion
def test_ism_and_expansion_ratios_on_complete_blocks():
    # B (fan-in x outputs) = K_{3,4} (3 positions of degree 4) + K_{5,3} (5 positions of degree 3)
    b = sp.block_diag([np.ones((3, 4)), np.ones((5, 3))]).toarray()
    row = layer_spectrum(b)
    # K_d: d = 4 is K_{3,4} (sigma_1 = sqrt 12, sigma_2 = 0, n_r / n_l = 4/3),
    #      d = 3 is K_{5,3} (sigma_1 = sqrt 15, sigma_2 = 0, n_r / n_l = 3/5); both pass iclr23
    assert row.imdb_subgraphs == 2
    ds = [2 * math.sqrt(math.sqrt(12) - 1), 2 * math.sqrt(math.sqrt(15) - 1)]
    assert row.ism == pytest.approx(np.mean(ds), rel=1e-12)
    assert row.ism_norm == pytest.approx(1.0, rel=1e-12)        # sigma_2 = 0: Delta_s = bound
    assert row.imax_ep == pytest.approx(4 / 3, rel=1e-12)
    assert row.i_mean_ep == pytest.approx((4 / 3 + 3 / 5) / 2, rel=1e-12)


def test_ism_with_a_nonzero_sigma_2():
    b = np.ones((12, 12)) - np.eye(12)    # one group d = 11; singular values 11, 1, ..., 1
    row = layer_spectrum(b)
    assert row.ism == pytest.approx(2 * math.sqrt(10) - 1, rel=1e-12)
    assert row.ism_norm == pytest.approx(1 - 1 / (2 * math.sqrt(10)), rel=1e-12)
    assert row.imax_ep == row.i_mean_ep == 1.0


def test_ism_unscored_with_the_imdb_reason():
    row = layer_spectrum(np.eye(5))       # degree 1: no K_d passes
    for f in ("ism", "ism_norm", "imax_ep", "i_mean_ep"):
        assert getattr(row, f) is None and row.reasons[f] == row.reasons["imdb"]


def test_ism_in_the_report_means():
    g = NetGraph([Group("x", 12), Group("y", 12)], [Layer("fc", "linear", (12, 12), "x", "y")],
                 [], ["x"], ["y"])
    report = spectral(g, {"fc": ~np.eye(12, dtype=bool)})
    assert report.means["ism"].mean == pytest.approx(2 * math.sqrt(10) - 1, rel=1e-12)
    assert report.means["i_mean_ep"].scored == 1


# ----------------------------------------------------------------------------- pair scores
def _chain(m1, m2):
    g = NetGraph([Group("x", m1.shape[1]), Group("h", m1.shape[0]), Group("y", m2.shape[0])],
                 [Layer("fc1", "linear", m1.shape, "x", "h"),
                  Layer("fc2", "linear", m2.shape, "h", "y")], [], ["x"], ["y"])
    return g, MaskSet({"fc1": m1.astype(bool), "fc2": m2.astype(bool)})


def test_pair_scores_by_hand_on_two_linear_layers():
    m1 = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])  # in_deg = 2, 2, 0; n_l = 3
    m2 = np.array([[1, 0, 1], [1, 0, 0]])                      # out_deg = 2, 0, 1; n_r = 2
    g, masks = _chain(m1, m2)
    (pair,) = pair_scores(g, masks)
    assert (pair.producer, pair.consumer) == ("fc1", "fc2")
    # channels with in_deg > 0: 0 and 1; (out/n_r) / (in/n_l) = (2/2)/(2/3), (0/2)/(2/3)
    assert pair.copeland == pytest.approx((1.5 + 0.0) / 2, rel=1e-15)
    # receiving channels {0, 1}; fed onward {0, 2}: 1 of 2
    assert pair.compatibility == 0.5
    report = spectral(g, masks)
    assert report.pairs == (pair,) and report.to_dict()["pairs"][0]["copeland"] == 0.75
    assert "layer pairs" in report.to_text()


def test_pair_scores_balanced_dense_chain_is_one():
    g, masks = _chain(np.ones((3, 4)), np.ones((2, 3)))
    (pair,) = pair_scores(g, masks)
    # in_deg = 4 of n_l = 4 positions, out_deg = 2 of n_r = 2 outputs: (2/2) / (4/4) = 1
    assert pair.copeland == pytest.approx(1.0, rel=1e-15) and pair.compatibility == 1.0
    g, masks = _chain(np.ones((3, 4)), np.array([[1, 1, 1], [1, 1, 1], [0, 1, 0]]))
    (pair,) = pair_scores(g, masks)   # out_deg = 2, 3, 2 of n_r = 3: mean of 2/3, 1, 2/3
    assert pair.copeland == pytest.approx(7 / 9, rel=1e-15)


def test_pair_scores_empty_producer_is_none():
    g, masks = _chain(np.zeros((3, 4)), np.ones((2, 3)))
    (pair,) = pair_scores(g, masks)
    assert pair.copeland is None and pair.compatibility is None


def test_pair_through_flatten_uses_every_position_as_a_tap():
    # conv: 2 output channels of size 1x2 -> flatten -> fc over 4 features (channel-major)
    g = NetGraph([Group("x", 1, (1, 2)), Group("a", 2, (1, 2)), Group("f", 4), Group("y", 3)],
                 [Layer("conv", "conv", (2, 1, 1, 1), "x", "a", stride=(1, 1),
                        padding=((0, 0), (0, 0)), dilation=(1, 1), in_size=(1, 2),
                        out_size=(1, 2)),
                  Layer("fc", "linear", (3, 4), "f", "y")],
                 [Link("flat", "flatten", ("a",), "f")], ["x"], ["y"])
    conv = np.array([1, 1], bool).reshape(2, 1, 1, 1)        # in_deg = 1, 1; n_l = 1
    fc = np.array([[1, 0, 1, 1], [1, 0, 0, 1], [0, 0, 0, 0]], bool)  # features deg 2, 0, 1, 2
    (pair,) = pair_scores(g, {"conv": conv, "fc": fc})       # n_r(fc) = 2
    # channel 0 feeds features 0, 1; channel 1 features 2, 3: entries (deg / 2) / (1 / 1)
    assert pair.copeland == pytest.approx(np.mean([1.0, 0.0, 0.5, 1.0]), rel=1e-15)
    assert pair.compatibility == 1.0


def test_pairs_on_a_dag_with_concat_and_add():
    # a: x -> A (2 ch), b: x -> B (1 ch), C = concat(A, B) (3 ch), c: C -> S (3 ch),
    # S2 = S + C (add), d: S2 -> y
    groups = [Group("x", 2), Group("A", 2), Group("B", 1), Group("C", 3), Group("S", 3),
              Group("S2", 3), Group("y", 2)]
    layers = [Layer("a", "linear", (2, 2), "x", "A"), Layer("b", "linear", (1, 2), "x", "B"),
              Layer("c", "linear", (3, 3), "C", "S"), Layer("d", "linear", (2, 3), "S2", "y")]
    links = [Link("cat", "concat", ("A", "B"), "C"), Link("res", "add", ("S", "C"), "S2")]
    g = NetGraph(groups, layers, links, ["x"], ["y"])
    masks = {"a": np.array([[1, 1], [0, 1]], bool),      # in_deg(a) = 2, 1; n_l = 2
             "b": np.array([[1, 0]], bool),              # in_deg(b) = 1; n_l = 1
             "c": np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0]], bool),  # out_deg 2, 0, 1; n_r 2
             "d": np.array([[0, 1, 1], [0, 0, 1]], bool)}             # out_deg 0, 1, 2; n_r 2
    got = {(p.producer, p.consumer): p for p in pair_scores(g, masks)}
    assert set(got) == {("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}
    # a -> c: C channels 0, 1 are a's 0, 1: (2/2)/(2/2), (0/2)/(1/2)
    assert got["a", "c"].copeland == pytest.approx(0.5) and got["a", "c"].compatibility == 0.5
    # b -> c: C channel 2 is b's 0: (1/2)/(1/1)
    assert got["b", "c"].copeland == pytest.approx(0.5) and got["b", "c"].compatibility == 1.0
    # a -> d through concat then add: S2 channels 0, 1 are a's 0, 1: (0/2)/(2/2), (1/2)/(1/2)
    assert got["a", "d"].copeland == pytest.approx(0.5) and got["a", "d"].compatibility == 0.5
    # b -> d: S2 channel 2 is b's 0: (2/2)/(1/1)
    assert got["b", "d"].copeland == pytest.approx(1.0)
    # c -> d through add: identity; in_deg(c) = 1, 2, 0 and n_l(c) = 2 (positions 0 and 2)
    assert got["c", "d"].copeland == pytest.approx(np.mean([(0 / 2) / (1 / 2),
                                                            (1 / 2) / (2 / 2)]))
    assert got["c", "d"].compatibility == 0.5


def test_channel_overlap_by_hand():
    g = NetGraph([Group("x", 2, (1, 2)), Group("y", 3, (1, 1)), Group("z", 2, (1, 1))],
                 [Layer("conv", "conv", (3, 2, 1, 2), "x", "y"),
                  Layer("fc", "linear", (2, 3), "y", "z")], [], ["x"], ["z"])
    m = np.zeros((3, 2, 1, 2), bool)
    m[[0, 1, 2], 0, 0, 0] = True        # channel 0: tap 0 -> {0, 1, 2}
    m[[1, 2], 0, 0, 1] = True           #            tap 1 -> {1, 2}: |{1, 2}| / 2 = 1
    m[[0], 1, 0, 0] = True              # channel 1: tap 0 -> {0}
    m[[1], 1, 0, 1] = True              #            tap 1 -> {1}: |{}| / 1 = 0
    fc = np.array([[1, 0, 0], [0, 0, 0]], bool)
    got = channel_overlap(g, {"conv": m, "fc": fc})
    assert got == {"conv": 0.5, "fc": 1.0}   # a linear layer has one tap: its own set
    assert channel_overlap(g, {"conv": np.zeros_like(m), "fc": fc})["conv"] is None


def test_channel_overlap_of_a_grouped_conv_stays_in_its_group():
    # groups = 2: input channels 0 | 1, output channels 0, 1 | 2, 3; two taps
    g = NetGraph([Group("x", 2, (1, 2)), Group("y", 4, (1, 1))],
                 [Layer("conv", "conv", (4, 1, 1, 2), "x", "y", groups=2)], [], ["x"], ["y"])
    m = np.zeros((4, 1, 1, 2), bool)
    m[[0, 1], 0, 0, 0] = m[[1], 0, 0, 1] = True   # channel 0: {0, 1}, {1}: 1 / 1
    m[[2, 3], 0, 0, 0] = m[[2, 3], 0, 0, 1] = True  # channel 1: {2, 3}, {2, 3}: 2 / 2
    m[[3], 0, 0, 0] = True
    assert channel_overlap(g, {"conv": m}) == {"conv": 1.0}
    m[1, 0, 0, 1] = False
    m[0, 0, 0, 1] = True                            # channel 0: {0, 1}, {0}: 1 / 1
    m[3, 0, 0, 1] = False                           # channel 1: {2, 3}, {2}: 1 / 1
    assert channel_overlap(g, {"conv": m}) == {"conv": 1.0}
    m[0, 0, 0, 0] = False                           # channel 0: {1}, {0}: 0 / 1
    assert channel_overlap(g, {"conv": m}) == {"conv": 0.5}


def test_a_norm_passes_channels_on_as_themselves():
    # fc1 -> layer norm (statistics over every channel) -> fc2: the same pair as fc1 -> fc2
    m1 = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
    m2 = np.array([[1, 0, 1], [1, 0, 0]], bool)
    g = NetGraph([Group("x", 4), Group("h", 3), Group("n", 3), Group("y", 2)],
                 [Layer("fc1", "linear", (3, 4), "x", "h"),
                  Layer("fc2", "linear", (2, 3), "n", "y")],
                 [Link("ln", "norm", ("h",), "n", {"centred": True, "groups": 1,
                                                   "positions": "each"})], ["x"], ["y"])
    (pair,) = pair_scores(g, {"fc1": m1, "fc2": m2})
    assert (pair.copeland, pair.compatibility) == (0.75, 0.5)   # as without the norm


def test_hand_written_rmsnorm_passes_channels_as_themselves_and_residuals_are_swept_once():
    """x * rsqrt(mean(x^2)) is a reduce (a statistic) and a product: the pair map through it is
    the identity, as through nn.LayerNorm, not every channel to every channel; and a residual
    stack of such blocks (two paths per norm, 2^depth paths in all) still maps channel c to c."""
    torch = pytest.importorskip("torch")
    from graphpai.spectral.pairs import layer_pairs
    from graphpai.torch.extract import to_graph

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4, bias=False)

        def forward(self, x):
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
            return x + self.fc(h)

    class Net(torch.nn.Module):
        def __init__(self, depth=12):
            super().__init__()
            self.inp = torch.nn.Linear(4, 4, bias=False)
            self.blocks = torch.nn.Sequential(*[Block() for _ in range(depth)])
            self.out = torch.nn.Linear(4, 3, bias=False)

        def forward(self, x):
            return self.out(self.blocks(self.inp(x)))

    graph = to_graph(Net(), (4,))
    pairs = {(a, b): q for a, b, q in layer_pairs(graph)}
    assert len(pairs) == 13 + 12 * 12 - 12 * 11 // 2  # inp -> 13 later layers, each block -> later ones
    for q in pairs.values():
        np.testing.assert_array_equal(q.toarray(), np.eye(4, dtype=q.dtype))


@pytest.mark.parametrize("shape, axis", [((3, 5, 7, 2), 1), ((2, 70000, 3), 1), ((4, 9), 0)])
def test_narrow_counts_equal_numpy_sums(shape, axis):
    # the pair statistics count kept weights in uint16 (int64 from 2^16 entries on): same counts
    from graphpai.spectral.pairs import _count

    m = np.random.default_rng(len(shape)).random(shape) < 0.6
    got = _count(m, axis)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, m.sum(axis=axis))
    np.testing.assert_array_equal(_count(m.astype(np.int64) * 3, axis), m.sum(axis=axis))


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3), st.integers(1, 9), st.floats(0.0, 1.0))
def test_all_taps_is_numpys_all_over_the_taps(seed, groups, taps, density):
    rng = np.random.default_rng(seed)
    m = rng.random((groups, 5, 4, taps)) < density
    assert np.array_equal(pairs._all_taps(m), m.all(axis=3))
