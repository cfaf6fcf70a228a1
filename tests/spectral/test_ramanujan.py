"""[RAM] quantities of one layer (docs/definitions.md#spectral): closed forms, gates, IMDB group rules, oracles."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from oracles import naive_layer_spectrum

from graphpai import Group, Layer, NetGraph
from graphpai.errors import UnknownMethodError
from graphpai.spectral import (GATES, canonical_gap, imdb, narc, ramanujan_gap, spectral,
                               spectrum)


def test_complete_bipartite_closed_forms():
    m, n = 7, 5  # 7 left nodes of degree 5, 5 right nodes of degree 7
    b = np.ones((m, n))
    s = spectrum(b)
    assert (s.n_l, s.n_r, s.E, s.d_L, s.d_R) == (7, 5, 35, 5.0, 7.0)
    assert s.sigma_1 == pytest.approx(math.sqrt(35), rel=1e-14) and s.sigma_2 == 0.0
    bound = math.sqrt(4) + math.sqrt(6)
    assert ramanujan_gap(b) == pytest.approx(bound, rel=1e-14)
    assert ramanujan_gap(b, normalized=True) == 1.0
    assert canonical_gap(b) == pytest.approx(2 * math.sqrt(math.sqrt(35) - 1), rel=1e-14)
    assert canonical_gap(b, normalized=True) == 1.0
    assert narc(b) == pytest.approx(1 / math.sqrt(35) - 1, rel=1e-14)


def test_dense_7x7_stem_conv_numbers():
    # a dense 64x3x7x7 conv: fan-in 3*7*7 = 147 positions, each joined to all 64 outputs: K_{147,64}
    g = NetGraph([Group("x", 3, (32, 32)), Group("y", 64, (16, 16))],
                 [Layer("conv1", "conv", (64, 3, 7, 7), "x", "y", stride=(2, 2),
                        padding=((3, 3), (3, 3)), dilation=(1, 1))], [], ["x"], ["y"])
    row = spectral(g).layer("conv1")
    assert (row.n_in, row.n_out, row.E, row.d_L, row.d_R) == (147, 64, 147 * 64, 64.0, 147.0)
    sigma_1 = math.sqrt(147 * 64)
    bound = math.sqrt(64 - 1) + math.sqrt(147 - 1)
    narc_value = (0 / 4 + 1) / math.sqrt(147 * 64) - 1.0
    assert row.sigma_1 == pytest.approx(sigma_1, rel=1e-13) and round(sigma_1, 3) == 96.995
    assert row.sigma_2 == 0.0
    assert row.delta_r == pytest.approx(bound, rel=1e-13) and round(bound, 4) == 20.0203
    assert row.narc == pytest.approx(narc_value, rel=1e-13) and round(narc_value, 5) == -0.98969


def test_disjoint_complete_blocks():
    blocks = [(4, 6), (5, 3), (3, 3)]
    b = sp.block_diag([np.ones(k) for k in blocks]).tocsr()
    s = spectrum(b)
    E = sum(p * q for p, q in blocks)
    values = sorted((math.sqrt(p * q) for p, q in blocks), reverse=True)
    assert (s.n_l, s.n_r, s.E) == (12, 12, E)
    assert s.sigma_1 == pytest.approx(values[0]) and s.sigma_2 == pytest.approx(values[1])
    d = E / 12
    assert ramanujan_gap(b) == pytest.approx(2 * math.sqrt(d - 1) - values[1], rel=1e-13)


@pytest.mark.parametrize("n, d", [(12, 3), (40, 6)])
def test_regular_bipartite_ramanujan_gap(n, d):
    rng = np.random.default_rng(n + d)
    b = np.zeros((n, n))
    for _ in range(d):  # add permutation matrices until each row has degree d (no overlaps)
        while True:
            p = rng.permutation(n)
            if not b[np.arange(n), p].any():
                b[np.arange(n), p] = 1
                break
    mu = np.linalg.svd(b, compute_uv=False)[1]
    assert spectrum(b).sigma_1 == pytest.approx(d, rel=1e-13)
    assert ramanujan_gap(b) == pytest.approx(2 * math.sqrt(d - 1) - mu, rel=1e-12)


def test_narc_closed_form_without_isolated_nodes():
    rng = np.random.default_rng(5)
    for _ in range(5):
        b = (rng.random((60, 24)) < 0.3).astype(float)
        b[np.arange(60), rng.integers(0, 24, 60)] = 1  # no empty row
        b[rng.integers(0, 60, 24), np.arange(24)] = 1  # no empty column
        mu = np.linalg.svd(b, compute_uv=False)[1]
        expected = (mu ** 2 / 4 + 1) / math.sqrt(60 * 24) - b.sum() / (60 * 24)
        assert narc(b) == pytest.approx(expected, rel=1e-12)


def test_narc_with_isolated_nodes_uses_unfiltered_shape_and_2E():
    b = np.zeros((10, 6))
    b[:4, :3] = 1  # K_{4,3} plus 6 empty rows and 3 empty columns
    n_l, n_r, E = 4, 3, 12
    d_L = E / n_l
    expected = (1 * math.sqrt(n_l * n_r) - abs(2 * E - d_L / 6 * n_l * n_r)) / (10 * 6)
    assert narc(b) == pytest.approx(expected, rel=1e-14)


def test_iclr23_gate_boundaries():
    exactly_three = np.ones((3, 3))                        # d_L = d_R = 3: scored
    assert ramanujan_gap(exactly_three) is not None
    b = np.zeros((4, 5))
    b[:, :3] = 1
    b[0, 3] = b[1, 4] = 1                                  # E = 14, d_L = 3.5, d_R = 14/5 = 2.8
    assert ramanujan_gap(b) is None and narc(b) is None and canonical_gap(b) is None
    assert ramanujan_gap(b.T) is None                      # d_L = 2.8 now


def test_neurips23_gate_is_d_R_at_least_3_and_d_L_above_1():
    b = np.zeros((6, 2))
    b[:, 0] = 1
    b[:3, 1] = 1          # E = 9: d_L = 9/6 = 1.5 (> 1), d_R = 4.5 (>= 3)
    assert ramanujan_gap(b, profile="iclr23") is None
    assert ramanujan_gap(b, profile="neurips23") is not None
    one = np.eye(4)       # d_L = 1: not > 1
    assert ramanujan_gap(np.vstack([one] * 3), profile="neurips23") is None


def test_unknown_profile():
    with pytest.raises(UnknownMethodError, match="iclr23, neurips23"):
        ramanujan_gap(np.ones((3, 3)), profile="iclr2023")


def test_empty_layer_is_unscored():
    b = np.zeros((5, 4))
    assert spectrum(b).d_L is None
    assert ramanujan_gap(b) is None and narc(b) is None
    assert imdb(b).normalized is None and imdb(b).subgraphs == 0


def _subgraph_gap(block):
    """Unnormalised and normalised Delta_r of a K_d block given by hand (all rows degree d)."""
    block = block[:, block.any(axis=0)]
    n_d, n_out = block.shape
    d = block[0].sum()
    d_R = n_d * d / n_out
    bound = math.sqrt(d - 1) + math.sqrt(d_R - 1)
    mu = np.linalg.svd(block, compute_uv=False)[1] if min(block.shape) > 1 else 0.0
    return bound - mu, (bound - mu) / bound


def test_imdb_groups_by_degree_and_skips_groups_of_fewer_than_3_nodes():
    b = np.zeros((12, 8))
    b[0:2, 0:6] = 1            # 2 rows of degree 6: skipped although d = 6 >= 3 (group size 2)
    b[2:5, 2:6] = 1            # 3 rows of degree 4 into 4 outputs: K_{3,4}, d_R = 3: scored
    b[5:9, 4:8] = [[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1]]  # 4 rows of degree 3
    b[9:12, 7] = 1             # 3 rows of degree 1: d = 1 fails the gate
    r = imdb(b)
    g4 = _subgraph_gap(b[2:5])
    g3 = _subgraph_gap(b[5:9])  # d = 3, d_R = 12/4 = 3: scored
    assert r.subgraphs == 2
    assert r.raw == pytest.approx((g4[0] + g3[0]) / 2, rel=1e-12)
    assert r.normalized == pytest.approx((g4[1] + g3[1]) / 2, rel=1e-12)


def test_imdb_subgraph_gate_uses_the_group_mean_output_degree():
    b = np.zeros((3, 9))
    b[0, 0:3] = b[1, 3:6] = b[2, 6:9] = 1  # three rows of degree 3, 9 outputs: d_R(K_3) = 1
    assert imdb(b).subgraphs == 0 and imdb(b).normalized is None
    assert imdb(b, profile="neurips23").subgraphs == 0  # d_R = 1 < 3 as well


def _random_layer(seed, n_in, n_out, density):
    rng = np.random.default_rng(seed)
    b = (rng.random((n_in, n_out)) < density).astype(float)
    x = np.abs(rng.standard_normal((n_in, n_out))) * b
    return b, x


layers = st.tuples(st.integers(0, 2 ** 32 - 1), st.integers(1, 40), st.integers(1, 25),
                   st.sampled_from([0.05, 0.15, 0.4, 0.8, 1.0]))


@given(layers, st.sampled_from(["iclr23", "neurips23"]))
def test_layer_functions_match_oracle(case, profile):
    b, _ = _random_layer(*case)
    ref = naive_layer_spectrum(b, profile=profile)
    s = spectrum(sp.csr_array(b))
    assert (s.n_l, s.n_r, s.E) == (ref["n_l"], ref["n_r"], ref["E"])
    for got, key in [(ramanujan_gap(b, profile=profile), "delta_r"),
                     (ramanujan_gap(b, normalized=True, profile=profile), "delta_r_norm"),
                     (canonical_gap(b, profile=profile), "delta_s"),
                     (narc(sp.csr_array(b), profile=profile), "narc"),
                     (imdb(b, profile=profile).normalized, "imdb"),
                     (imdb(sp.csc_array(b), profile=profile).raw, "imdb_raw")]:
        if ref[key] is None:
            assert got is None, key
        else:
            assert got == pytest.approx(ref[key], rel=1e-9, abs=1e-9), key
    assert imdb(b, profile=profile).subgraphs == ref["imdb_subgraphs"]


@given(layers)
def test_permuting_nodes_changes_nothing(case):
    b, _ = _random_layer(*case)
    rng = np.random.default_rng(case[0])
    p = b[rng.permutation(b.shape[0])][:, rng.permutation(b.shape[1])]
    for f in (ramanujan_gap, canonical_gap, narc):
        x, y = f(b), f(p)
        assert (x is None) == (y is None)
        if x is not None:
            assert x == pytest.approx(y, rel=1e-9, abs=1e-12)
    assert imdb(b).subgraphs == imdb(p).subgraphs


def test_gate_failure_messages():
    assert GATES["iclr23"].failure(2.5, 4) == "gate iclr23: d_L = 2.5 < 3"
    assert GATES["neurips23"].failure(1, 4) == "gate neurips23: d_L = 1 <= 1"
    assert GATES["neurips23"].failure(2, 2) == "gate neurips23: d_R = 2 < 3"
    assert GATES["iclr23"].failure(None, None) == "empty layer"
    assert GATES["iclr23"].failure(2999999 / 1000000, 4) == "gate iclr23: d_L = 2.999999 < 3"


def test_issue_6_canonical_gap_is_none_not_a_number_when_sigma_1_is_below_1():
    # 2 sqrt(sigma_1 - 1) is not real for sigma_1 < 1: the raw gap used to come out as
    # -sigma_2 (here 0.0, a fake "measured 0") while only the normalised form was None
    x = np.full((4, 3), 0.1)                   # d_L = 3, d_R = 4: passes iclr23
    assert np.linalg.norm(x, 2) == pytest.approx(0.1 * math.sqrt(12))  # sigma_1 < 1
    assert canonical_gap(x) is None and canonical_gap(x, normalized=True) is None
    assert ramanujan_gap(x) is not None        # the layer itself is scored


def test_issue_6_bad_matrices_are_clean_errors():
    from graphpai.errors import MaskError
    from graphpai.spectral import fs_imdb, top_singular_values, weighted_gap

    nan = np.ones((4, 4))
    nan[1, 2] = np.nan  # used to give sigma = (0, 0)
    for f in (top_singular_values, ramanujan_gap, narc, imdb, weighted_gap, fs_imdb):
        with pytest.raises(MaskError, match="1 nan or inf entries"):
            f(nan)
        with pytest.raises(MaskError, match=r"must be 2-D .* got shape \(2, 2, 2\)"):
            f(np.ones((2, 2, 2)))
    with pytest.raises(MaskError, match="real numbers"):
        ramanujan_gap(np.full((3, 3), "1"))
    with pytest.raises(MaskError, match="weighted matrix has 1 nan"):
        fs_imdb(np.ones((4, 4)), nan)
    assert narc([[1, 1, 1]] * 4) == pytest.approx(1 / math.sqrt(12) - 1)  # nested lists work
