"""[FS] quantities (docs/definitions.md#spectral): weighted gap, IMDB_r/IMDB_lambda with the Cheeger factor,
coordinate, distance."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from oracles import naive_layer_spectrum

from graphpai import Group, Layer, NetGraph
from graphpai.errors import GraphpaiError
from graphpai.spectral import coordinate, distance, fs_imdb, spectral, weighted_gap


def test_weighted_gap_of_scaled_complete_bipartite():
    x = np.full((6, 4), 0.25)  # 0.25 K_{6,4}: sigma_1 = 0.25 sqrt(24), sigma_2 = 0
    assert weighted_gap(x) == pytest.approx(0.25 * math.sqrt(24), rel=1e-14)


def test_kept_zero_weight_is_not_an_edge():
    x = np.ones((4, 3))
    x[:, 2] = 0.0  # a whole output column of exactly-zero kept weights
    # without the column: d_L = 2 (> 1), d_R = 4 (>= 3); with it d_R would be 8/3 < 3
    assert weighted_gap(x) == pytest.approx(math.sqrt(8), rel=1e-14)
    x[1:, 1] = 0.0  # now d_R = 5/2: fails the neurips23 gate
    assert weighted_gap(x) is None


def test_weighted_gap_gate_follows_profile():
    x = np.ones((6, 2))
    x[3:, 1] = 0  # d_L = 9/6 = 1.5, d_R = 4.5
    assert weighted_gap(x, profile="neurips23") is not None
    assert weighted_gap(x, profile="iclr23") is None


def test_fs_imdb_cheeger_factor_on_hand_built_layer():
    b = np.zeros((9, 6))
    b[0:2, 0:4] = 1          # group d = 4, n_d = 2, outputs 0..3: d_R = 2 > 1, c = 4/5
    b[2:5, 3:6] = 1          # group d = 3, n_d = 3, outputs 3..5: d_R = 3, c = 3/5
    b[5:9, 0:2] = 1          # group d = 2: fails d >= 3
    w = np.arange(1, 55, dtype=float).reshape(9, 6) / 10
    x = w * b

    def k(rows, cols):
        sv = np.linalg.svd(b[np.ix_(rows, cols)], compute_uv=False)
        n_d, n_o = len(rows), len(cols)
        d = b[rows[0]].sum()
        gap = math.sqrt(d - 1) + math.sqrt(n_d * d / n_o - 1) - (sv[1] if len(sv) > 1 else 0)
        xs = np.linalg.svd(x[np.ix_(rows, cols)], compute_uv=False)
        c = max(n_d, n_o) / (n_d + n_o - 1)
        return c * gap, c * (xs[0] - xs[1])

    a, c = k([0, 1], [0, 1, 2, 3]), k([2, 3, 4], [3, 4, 5])
    r = fs_imdb(b, x)
    assert r.subgraphs == 2
    assert r.imdb_r == pytest.approx((a[0] + c[0]) / 2, rel=1e-12)
    assert r.imdb_lambda == pytest.approx((a[1] + c[1]) / 2, rel=1e-12)
    assert fs_imdb(b).imdb_lambda is None


def test_fs_imdb_skips_single_node_groups_and_weak_subgraphs():
    b = np.zeros((5, 12))
    b[0, 0:5] = 1            # single node of degree 5: skipped (groups of fewer than 2)
    b[1:5, 5:8] = 1          # 4 rows of degree 3 into 3 outputs: d_R = 4 > 1
    r = fs_imdb(b)
    assert r.subgraphs == 1
    b2 = np.zeros((3, 9))
    b2[0, 0:3] = b2[1, 3:6] = b2[2, 6:9] = 1  # d = 3 but d_R(K_d) = 1: not > 1
    assert fs_imdb(b2).subgraphs == 0 and fs_imdb(b2).imdb_r is None


def test_coordinate_counts_unscored_entries_as_zero():
    b = np.eye(5)  # d = 1 everywhere: every gate fails
    v = coordinate(b, b)
    assert v.tolist() == [0.0, 0.0, 0.0, 0.0]


layers = st.tuples(st.integers(0, 2 ** 32 - 1), st.integers(1, 40), st.integers(1, 25),
                   st.sampled_from([0.05, 0.2, 0.5, 1.0]))


@given(layers)
def test_fs_functions_match_oracle(case):
    seed, n_in, n_out, density = case
    rng = np.random.default_rng(seed)
    b = (rng.random((n_in, n_out)) < density).astype(float)
    x = np.abs(rng.standard_normal((n_in, n_out))) * b
    ref = naive_layer_spectrum(b, x, profile="neurips23")
    r = fs_imdb(sp.csr_array(b), sp.csr_array(x))
    for got, key in [(r.imdb_r, "imdb_r"), (r.imdb_lambda, "imdb_lambda"),
                     (weighted_gap(x), "weighted_gap")]:
        if ref[key] is None:
            assert got is None, key
        else:
            assert got == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    np.testing.assert_allclose(coordinate(b, x), ref["coordinate"], rtol=1e-9, atol=1e-12)


def _net():
    groups = [Group("x", 6), Group("h", 10), Group("y", 4)]
    layers = [Layer("fc1", "linear", (10, 6), "x", "h"), Layer("fc2", "linear", (4, 10), "h", "y")]
    return NetGraph(groups, layers, [], ["x"], ["y"])


def test_distance_of_a_report_to_itself_is_zero_and_symmetric():
    g = _net()
    rng = np.random.default_rng(0)
    w1 = {n: rng.standard_normal(l.weight_shape) for n, l in g.layers.items()}
    w2 = {n: rng.standard_normal(l.weight_shape) for n, l in g.layers.items()}
    a, b = spectral(g, weights=w1), spectral(g, weights=w2)
    assert distance(a, a).layers == {"fc1": 0.0, "fc2": 0.0}
    ab, ba = distance(a, b), distance(b, a)
    assert ab.layers == pytest.approx(ba.layers)
    for name in ("fc1", "fc2"):
        va, vb = np.array(a.layer(name).coordinate), np.array(b.layer(name).coordinate)
        assert ab.layers[name] == pytest.approx(np.linalg.norm(va - vb), rel=1e-14)
    assert ab.mean.mean == pytest.approx(np.mean(list(ab.layers.values())))
    assert (ab.mean.scored, ab.mean.layers) == (2, 2)


def test_distance_without_weights_is_unscored_with_reason():
    g = _net()
    a = spectral(g)
    d = distance(a, a)
    assert d.layers == {"fc1": None, "fc2": None} and d.mean.mean is None
    assert "no weights" in d.reasons["fc1"]


def test_distance_rejects_mismatched_reports():
    g = _net()
    w = {n: np.ones(l.weight_shape) for n, l in g.layers.items()}
    a = spectral(g, weights=w)
    with pytest.raises(GraphpaiError, match="profiles"):
        distance(a, spectral(g, weights=w, profile="neurips23"))
    other = g.rename({"fc1": "first"})
    with pytest.raises(GraphpaiError, match="different layers"):
        distance(a, spectral(other, weights={"first": w["fc1"], "fc2": w["fc2"]}))


def test_distance_needs_two_reports():
    a = spectral(_net())
    with pytest.raises(GraphpaiError, match="two SpectralReports"):
        distance(a, a.to_dict())
