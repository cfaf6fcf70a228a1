"""layer_spectrum(..., quantities="fs"): the [FS]-only path PAGS scores with (docs/pags.md) gives the
same [FS] numbers as the full row and as a dense numpy SVD oracle, and computes nothing else."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import naive_layer_spectrum

from graphpai.spectral import layer_spectrum

FS_FIELDS = ("sigma_1", "sigma_2", "delta_r", "delta_r_norm", "weighted_sigma_1",
             "weighted_sigma_2", "weighted_gap", "imdb_r", "imdb_lambda", "fs_subgraphs",
             "coordinate_norm", "n_l", "n_r", "E")
NOT_FS = ("imdb", "imdb_raw", "ism", "ism_norm", "imax_ep", "i_mean_ep", "delta_s",
          "delta_s_norm", "narc")


def _close(a, b):
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b)) + 1e-13


def _check(b, x):
    full = layer_spectrum(b, x, profile="neurips23")
    fs = layer_spectrum(b, x, profile="neurips23", quantities="fs")
    for f in FS_FIELDS:
        assert _close(getattr(fs, f), getattr(full, f)), f
    assert (fs.coordinate is None) == (full.coordinate is None)
    if full.coordinate is not None:
        np.testing.assert_allclose(fs.coordinate, full.coordinate, rtol=1e-12, atol=1e-13)
    for f in NOT_FS:
        assert getattr(fs, f) is None, f
        assert fs.reasons[f] in ("not computed (quantities='fs')", full.reasons.get(f)), f
    assert fs.imdb_subgraphs == 0
    ref = naive_layer_spectrum(b, x, profile="neurips23")  # dense numpy SVD
    for key in ("imdb_r", "imdb_lambda", "weighted_gap"):
        got = getattr(fs, key)
        if ref[key] is None:
            assert got is None, key
        else:
            assert got == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    if full.coordinate is not None:
        np.testing.assert_allclose(fs.coordinate, ref["coordinate"], rtol=1e-9, atol=1e-12)
    return fs


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 60), st.integers(1, 30),
       st.sampled_from([0.01, 0.04, 0.2, 0.6, 1.0]))
def test_fs_path_matches_full_row_and_dense_svd(seed, n_in, n_out, density):
    rng = np.random.default_rng(seed)
    b = (rng.random((n_in, n_out)) < density).astype(float)
    x = np.abs(rng.standard_normal((n_in, n_out))) * b
    _check(b, x)


def test_fs_path_on_empty_layer():
    b = np.zeros((8, 5))
    fs = _check(b, b.copy())
    assert fs.imdb_r is None and fs.reasons["imdb_r"] == "empty layer"


def test_fs_path_on_rank_deficient_layers():
    rng = np.random.default_rng(3)
    # rank 1 (every row equal) and rank 2 (two repeated row blocks), with a kept zero weight
    b1 = np.tile(rng.random(12) < 0.7, (20, 1)).astype(float)
    rows = rng.random((2, 12)) < 0.6
    b2 = rows[rng.integers(0, 2, 30)].astype(float)
    for b in (b1, b2):
        assert np.linalg.matrix_rank(b) <= 2
        x = np.abs(rng.standard_normal(b.shape)) * b
        x[np.argwhere(b)[0][0], np.argwhere(b)[0][1]] = 0.0
        _check(b, x)


def test_fs_path_rejects_unknown_quantities():
    with pytest.raises(ValueError, match="quantities='ram'"):
        layer_spectrum(np.ones((3, 3)), quantities="ram")
