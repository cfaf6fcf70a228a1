"""Top-k singular values (docs/definitions.md#spectral): accuracy against numpy's dense SVD, closed forms, failures."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from oracles import dense_top_singular_values

from graphpai.errors import SolverError
from graphpai.spectral import solvers
from graphpai.spectral.solvers import drop_isolated, top_singular_values

SHAPES = [(1, 1), (1, 7), (9, 1), (2, 2), (3, 40), (40, 3), (17, 23), (64, 64), (120, 35),
          (35, 120)]
DENSITIES = [0.0, 0.01, 0.05, 0.2, 0.5, 1.0]


def _random(shape, density, rng, weighted=False):
    a = (rng.random(shape) < density).astype(float)
    if weighted:
        a *= rng.standard_normal(shape)
    return a


def _close(got, ref):
    scale = max(ref[0], 1e-300)
    assert np.all(np.abs(got - ref) <= 1e-9 * scale), (got, ref)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", DENSITIES)
def test_matches_numpy_dense_svd(shape, density):
    rng = np.random.default_rng([shape[0], shape[1], int(density * 100)])
    for weighted in (False, True):
        a = _random(shape, density, rng, weighted)
        ref = dense_top_singular_values(a, 3)
        for matrix in (a, sp.csr_array(a), sp.csc_array(a), sp.coo_array(a)):
            _close(top_singular_values(matrix, 3), ref)


@pytest.mark.parametrize("seed", range(6))
def test_arpack_branch_matches_numpy(seed):
    # dense_max=0 sends every matrix with min side > k to seeded ARPACK
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(5, 150)), int(rng.integers(5, 150)))
    a = _random(shape, rng.choice([0.03, 0.1, 0.5, 1.0]), rng, weighted=bool(seed % 2))
    ref = dense_top_singular_values(a)
    _close(top_singular_values(sp.csr_array(a), dense_max=0), ref)
    _close(top_singular_values(a, dense_max=0), ref)


@pytest.mark.parametrize("seed", range(4))
def test_issue_6_tiny_sigma_2_of_a_nearly_rank_1_matrix_is_accurate(seed):
    # sigma_2 ~ 1e-8 sigma_1 with crowded sigma_3, sigma_4: the Gram eigenvectors of such tiny
    # eigenvalues are noise, and the Rayleigh-Ritz values came out up to 50% too small
    # (error 2.5e-9 sigma_1, above the 1e-9 sigma_1 the solver promises)
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(60, 200)), int(rng.integers(15, 60))
    a = np.outer(rng.random(m), rng.random(n)) + 1e-8 * rng.standard_normal((m, n))
    ref = dense_top_singular_values(a, 3)
    assert ref[1] < 1e-6 * ref[0]
    _close(top_singular_values(a, 3), ref)
    _close(top_singular_values(sp.csr_array(a), 3), ref)


def test_empty_and_all_zero_matrices_have_zero_singular_values():
    for a in (np.zeros((0, 5)), np.zeros((4, 0)), np.zeros((3, 6)), sp.csr_array((7, 2))):
        assert top_singular_values(a, 2).tolist() == [0.0, 0.0]


def test_single_row_and_column_have_sigma_2_zero():
    row = np.arange(1.0, 6.0)[None, :]
    assert top_singular_values(row)[1] == 0.0
    assert top_singular_values(row)[0] == pytest.approx(np.linalg.norm(row), rel=1e-14)
    assert top_singular_values(row.T)[1] == 0.0


@pytest.mark.parametrize("m, n", [(1, 1), (2, 9), (147, 64), (500, 3), (64, 2100)])
def test_complete_bipartite_closed_form(m, n):
    s1, s2 = top_singular_values(sp.csr_array(np.ones((m, n))))
    assert s1 == pytest.approx(np.sqrt(m * n), rel=1e-13)
    assert s2 == 0.0  # rank 1: exactly zero, not sqrt(rounding noise)


def test_rank_one_weighted_matrix_has_exact_zero_sigma_2():
    rng = np.random.default_rng(3)
    a = np.outer(rng.random(300) + 0.1, rng.random(40) + 0.1)
    s1, s2 = top_singular_values(a)
    assert s1 == pytest.approx(np.linalg.norm(a, 2), rel=1e-13)
    assert s2 == 0.0


def test_disjoint_complete_blocks():
    blocks = [(3, 5), (4, 4), (2, 9), (6, 1)]  # singular values sqrt(ab): 3.87, 4, 4.24, 2.45
    a = sp.block_diag([np.ones(b) for b in blocks]).tocsr()
    expected = sorted((np.sqrt(p * q) for p, q in blocks), reverse=True)
    np.testing.assert_allclose(top_singular_values(a, 4), expected, rtol=1e-13)


@pytest.mark.parametrize("dense_max", [2000, 0])
def test_repeated_top_singular_value_is_counted_twice(dense_max):
    rng = np.random.default_rng(7)
    block = _random((60, 45), 0.2, rng)
    a = sp.block_diag([block, block]).tocsr()
    s1, s2 = top_singular_values(a, dense_max=dense_max)
    assert s2 == pytest.approx(s1, rel=1e-12)


@pytest.mark.parametrize("n, d", [(10, 3), (37, 5), (64, 8)])
def test_regular_bipartite_from_permutations(n, d):
    # B[i, pi((i + j) mod n)] = 1 for j < d: a column-permuted circulant. Its singular values are
    # |sum_j w^(jk)| with w = exp(2 pi i / n): d for k = 0, and |sin(pi k d / n) / sin(pi k / n)|.
    rng = np.random.default_rng(n)
    perm = rng.permutation(n)
    b = np.zeros((n, n))
    for j in range(d):
        b[np.arange(n), perm[(np.arange(n) + j) % n]] = 1
    k = np.arange(1, n)
    sigma_2 = np.max(np.abs(np.sin(np.pi * k * d / n) / np.sin(np.pi * k / n)))
    s1, s2 = top_singular_values(sp.csr_array(b))
    assert s1 == pytest.approx(d, rel=1e-13)
    assert s2 == pytest.approx(sigma_2, rel=1e-12)


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 30), st.integers(1, 30),
       st.sampled_from([0.05, 0.3, 1.0]))
def test_invariant_under_permutation_transpose_and_padding(seed, m, n, density):
    rng = np.random.default_rng(seed)
    a = _random((m, n), density, rng, weighted=True)
    ref = top_singular_values(a)
    permuted = a[rng.permutation(m)][:, rng.permutation(n)]
    padded = np.zeros((m + 3, n + 2))
    padded[1:m + 1, 2:] = a
    for other in (permuted, a.T, padded, sp.csc_array(padded)):
        np.testing.assert_allclose(top_singular_values(other), ref, rtol=1e-10,
                                   atol=1e-12 * max(ref[0], 1e-300))


def test_deterministic():
    rng = np.random.default_rng(11)
    a = sp.csr_array(_random((300, 250), 0.05, rng))
    runs = [top_singular_values(a, dense_max=0, seed=5) for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs)
    runs = [top_singular_values(a) for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs)


def test_drop_isolated_returns_kept_indices():
    a = np.array([[0, 0, 0], [0, 2, 0], [1, 0, 0]])
    compact, rows, cols = drop_isolated(sp.csr_array(a))
    assert rows.tolist() == [1, 2] and cols.tolist() == [0, 1]
    assert compact.toarray().tolist() == [[0, 2], [1, 0]]
    explicit_zero = sp.csr_array((np.array([0.0, 1.0]), (np.array([0, 1]), np.array([0, 1]))),
                                 shape=(2, 2))
    assert drop_isolated(explicit_zero)[0].shape == (1, 1)


def test_arpack_non_convergence_retries_then_raises(monkeypatch):
    from scipy.sparse.linalg import ArpackNoConvergence

    calls = []

    def failing_svds(*args, **kwargs):
        calls.append(kwargs.get("ncv"))
        raise ArpackNoConvergence("no convergence", np.zeros(0), np.zeros((0, 0)))

    def lanczos_gives_up(*args, **kwargs):
        raise solvers.NotConverged("Lanczos: not converged")

    monkeypatch.setattr(solvers, "svds", failing_svds)
    signed = sp.random_array((50, 40), density=0.2, rng=0)
    signed.data -= 0.5  # a signed matrix goes to ARPACK first
    nonnegative = sp.random_array((50, 40), density=0.2, rng=0)  # Lanczos first, then ARPACK
    monkeypatch.setattr(solvers, "lanczos_ritz", lanczos_gives_up)
    for a in (signed, nonnegative):
        calls.clear()
        with pytest.raises(SolverError) as info:
            top_singular_values(a, layer="fc1", dense_max=0)
        assert len(calls) == len(solvers._ARPACK_TRIES) >= 2
        assert info.value.layer == "fc1"
        assert "ARPACK attempt 3" in info.value.reason and "fc1" in str(info.value)


def test_dense_eigensolver_failure_falls_back_then_raises(monkeypatch):
    a = np.random.default_rng(0).random((30, 20))
    ref = dense_top_singular_values(a)

    def bad_dsyevr(*args, **kwargs):
        return None, None, 0, None, 3  # LAPACK info > 0: failed to converge

    monkeypatch.setattr(solvers, "_dsyevr", bad_dsyevr)
    _close(top_singular_values(a), ref)  # dsyevd fallback

    def bad_eigh(*args, **kwargs):
        raise np.linalg.LinAlgError("eigh failed")

    monkeypatch.setattr(solvers.sla, "eigh", bad_eigh)
    with pytest.raises(SolverError, match="dsyevr info=3.*dsyevd: eigh failed"):
        top_singular_values(a, layer="conv")


def test_k_must_be_positive():
    with pytest.raises(ValueError):
        top_singular_values(np.ones((2, 2)), 0)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def _in_thread(fn):
    import threading

    thread = threading.Thread(target=fn)
    thread.start()
    thread.join()


def test_issue_6_one_blas_thread_restores_counts_when_blocks_interleave():
    # BLAS thread counts are process-wide: two workers whose blocks overlap (A enters, B enters,
    # A leaves, B leaves) used to leave the whole process on one thread; here A is entered by
    # one thread and B left by another, as in a thread pool
    before = _blas_threads()
    a, b = solvers.one_blas_thread(), solvers.one_blas_thread()
    _in_thread(a.__enter__)
    b.__enter__()
    assert set(_blas_threads()) <= {1}
    a.__exit__(None, None, None)
    assert set(_blas_threads()) <= {1}  # B still runs
    _in_thread(lambda: b.__exit__(None, None, None))
    assert _blas_threads() == before
    with solvers.one_blas_thread():  # and the next block limits again
        assert set(_blas_threads()) <= {1}
    assert _blas_threads() == before


def test_solvers_leave_the_blas_thread_count_alone():
    before = _blas_threads()
    top_singular_values(np.random.default_rng(0).random((300, 200)))
    assert _blas_threads() == before


def test_one_blas_thread_without_threadpoolctl_warns_and_runs(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_threadpoolctl(name, *args, **kwargs):
        if name == "threadpoolctl":
            raise ImportError("No module named 'threadpoolctl'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_threadpoolctl)
    with pytest.warns(RuntimeWarning, match="could not limit BLAS"):
        with solvers.one_blas_thread():
            s = top_singular_values(np.ones((3, 4)))
    assert s[0] == pytest.approx(np.sqrt(12), rel=1e-14)


# ------------------------------------------------------------- issue 15: one-pass CSR, float32 Gram
@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (1, 1), (1, 9), (9, 1), (13, 7), (64, 200)])
@pytest.mark.parametrize("kind", ["bool", "float", "fortran"])
def test_dense_to_sparse_is_the_matrix(shape, kind):
    rng = np.random.default_rng(shape)
    a = rng.random(shape) < 0.3
    if kind != "bool":
        a = a * rng.standard_normal(shape)
        a[a > 1.5] = -0.0  # a negative zero is no entry either
    if kind == "fortran":
        a = np.asfortranarray(a)
    s = solvers.dense_to_sparse(a)
    assert s.dtype == np.float64 and s.shape == a.shape
    assert s.nnz == np.count_nonzero(a)
    np.testing.assert_array_equal(s.toarray(), a.astype(np.float64))
    assert s.has_sorted_indices


@pytest.mark.parametrize("f32_factor", [0, 10 ** 9])  # 0: always the sparse product; huge: BLAS
def test_gram_of_sparse_matrices_by_either_product(monkeypatch, f32_factor):
    monkeypatch.setattr(solvers, "_SPARSE_OVER_BLAS", {True: f32_factor, False: f32_factor})
    rng = np.random.default_rng(9)
    block = _random((30, 12), 0.3, rng)
    cases = [_random((200, 40), 0.1, rng), np.kron(np.eye(2), block),  # sigma_1 = sigma_2
             np.ones((50, 8)), np.ones((1, 6)), np.ones((6, 1)),       # rank 1, 1 x N, N x 1
             np.outer(rng.random(60) < 0.5, rng.random(10) < 0.7).astype(float)]
    for a in cases:
        for weighted in (False, True):
            m = a * (rng.random(a.shape) + 0.1) if weighted else a
            ref = dense_top_singular_values(m, 3)
            for fmt in (sp.csr_array, sp.csc_array):
                g = solvers._gram(fmt(m if m.shape[0] >= m.shape[1] else m.T), not weighted)
                tall = m if m.shape[0] >= m.shape[1] else m.T
                np.testing.assert_allclose(g, tall.T @ tall, rtol=0, atol=1e-12 * ref[0] ** 2)
                got = solvers._gram_top(fmt(tall), min(3, tall.shape[1]), not weighted, None)
                _close(np.pad(np.sort(got)[::-1], (0, 3 - len(got))), ref)
    assert solvers._dense32(sp.csr_array((3, 4))).tolist() == np.zeros((3, 4)).tolist()


def test_gram_method_computes_eigenvectors_only_for_the_rayleigh_ritz_step(monkeypatch):
    # the square roots need no eigenvectors; a rank-deficient matrix asks for them (a V)
    calls = []
    real = solvers._eigh_top
    monkeypatch.setattr(solvers, "_eigh_top", lambda g, p, layer, vectors=True:
                        calls.append(vectors) or real(g, p, layer, vectors))
    rng = np.random.default_rng(4)
    full = rng.random((40, 30))
    rank1 = np.outer(rng.random(40) + 0.1, rng.random(30) + 0.1)
    for a, expected in ((full, [False]), (rank1, [False, True])):
        calls.clear()
        got = np.sort(solvers._gram_top(a, 2, False, "layer"))[::-1]  # (ascending)
        assert calls == expected
        _close(got, dense_top_singular_values(a))
    assert got[1] <= 1e-12 * got[0]  # rank 1: sigma_2 at rounding level, not 1e-8 sigma_1
