"""The non-negative solver paths (Lanczos on A^T A, Lanczos on a formed Gram, components) against
numpy's dense SVD: rank-deficient, repeated singular values, one-column components, empty."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from oracles import dense_top_singular_values, naive_layer_spectrum
from scipy.sparse.csgraph import connected_components

from graphpai.spectral import lanczos, solvers, spectral
from graphpai.spectral.solvers import singular_values_compact, top_singular_values

METHODS = ["gram", "lanczos", "gram-lanczos"]


def _close(got, ref, rel=1e-12):
    scale = max(ref[0], 1e-300)
    assert np.all(np.abs(np.asarray(got) - ref) <= rel * scale), (got, ref)


@pytest.fixture
def force(monkeypatch):
    """force(method): every non-negative matrix goes to `method`, whatever it costs."""
    def set_method(method):
        monkeypatch.setattr(solvers, "_plan_nonnegative", lambda *args: method)
    return set_method


def _cases():
    rng = np.random.default_rng(5)
    block = (rng.random((30, 20)) < 0.3).astype(float)
    u, v = rng.random(40) + 0.1, rng.random(25) + 0.1
    j = np.ones((12, 12)) - np.eye(12)             # singular values 11, then 1 (11 times)
    yield "random 0/1", (rng.random((80, 50)) < 0.1).astype(float)
    yield "weighted", (rng.random((60, 90)) < 0.2) * rng.random((60, 90))
    yield "rank 1", np.outer(u, v)                  # sigma_2 = 0
    yield "rank 2", np.outer(u, v) + np.outer(rng.random(40), rng.random(25))
    yield "two equal blocks", np.kron(np.eye(2), block)     # sigma_1 = sigma_2
    yield "three equal blocks", np.kron(np.eye(3), block)   # sigma_1 = sigma_2 = sigma_3
    cycle = np.eye(150) + np.roll(np.eye(150), 1, axis=1)  # an even cycle: 2, then a hair less
    yield "two equal cycles", np.kron(np.eye(2), cycle)     # Krylov alone gives 2, 1.9996
    yield "J - I", j                                 # sigma_2 repeated inside one component
    yield "blocks and stars", sp.block_diag([block, np.ones((1, 5)), np.ones((4, 1)),
                                             np.ones((1, 5))]).toarray()
    yield "complete", np.ones((7, 9))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,a", list(_cases()), ids=[c[0] for c in _cases()])
def test_each_path_matches_dense_svd(force, method, name, a):
    force(method)
    ref = dense_top_singular_values(a, 3)
    for matrix in (a, sp.csr_array(a), sp.csc_array(a)):
        _close(top_singular_values(matrix, 3, dense_max=4096), ref)
        _close(top_singular_values(matrix, 2, dense_max=0), ref[:2])  # Lanczos above dense_max


def test_empty_and_tiny(force):
    force("lanczos")
    assert top_singular_values(np.zeros((5, 4))).tolist() == [0.0, 0.0]
    assert top_singular_values(sp.csr_array((3, 3))).tolist() == [0.0, 0.0]
    _close(top_singular_values(np.ones((1, 6))), [np.sqrt(6), 0.0])
    _close(top_singular_values(np.eye(4) * 2.0), [2.0, 2.0])   # four one-column components


@given(st.integers(2, 60), st.integers(2, 60), st.floats(0.02, 0.6), st.booleans(),
       st.integers(1, 3), st.sampled_from(METHODS), st.integers(0, 2 ** 16))
def test_random_nonnegative_matrices(m, n, density, weighted, copies, method, seed):
    rng = np.random.default_rng(seed)
    a = (rng.random((m, n)) < density).astype(float)
    if weighted:
        a *= rng.random((m, n))
    a = np.kron(np.eye(copies), a)                     # repeated values when copies > 1
    ref = dense_top_singular_values(a, 2)
    saved = solvers._plan_nonnegative
    solvers._plan_nonnegative = lambda *args: method
    try:
        got = top_singular_values(sp.csr_array(a), dense_max=4096)
    finally:
        solvers._plan_nonnegative = saved
    _close(got, ref)


def _oracle_components(a):
    """(count, column labels) from the dense (m + s)^2 bipartite adjacency."""
    a = np.asarray(a.toarray() if sp.issparse(a) else a)
    m, s = a.shape
    full = np.zeros((m + s, m + s))
    full[:m, m:] = a != 0
    full[m:, :m] = (a != 0).T
    count, labels = connected_components(sp.csr_array(full), directed=False)
    return count, labels[m:]


def _same_partition(labels, ref):
    pairs = set(zip(labels.tolist(), ref.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(ref.tolist()))


def _block_cases():
    rng = np.random.default_rng(8)
    block = lambda m, s, p: (rng.random((m, s)) < p).astype(float)  # noqa: E731
    connected = block(700, 800, 0.12)  # sparse enough that a sample is a fraction of it
    two = sp.block_diag([block(30, 90, 0.4), block(40, 110, 0.3)]).toarray()
    bridged = two.copy()
    bridged[0, -1] = 1.0  # one edge joins the blocks: a sample would rarely hold it
    empty_row = connected.copy()
    empty_row[7] = 0.0  # a CSR row without entries is a component of its own
    return {"connected": connected, "two blocks": two, "bridged": bridged,
            "empty row": empty_row}


@pytest.mark.parametrize("case", sorted(_block_cases()))
def test_sampled_components_are_exact(monkeypatch, case):
    # every matrix tries the spanning sample first: a connected sample proves connectivity,
    # anything else (a missed bridge, two blocks, an empty row) goes to the full search
    monkeypatch.setattr(lanczos, "_SAMPLE_MIN_NNZ", 0)
    if case != "connected":  # a thin sample, taken even of the small matrices
        monkeypatch.setattr(lanczos, "_SAMPLE_HITS", 2)
        monkeypatch.setattr(lanczos, "_SAMPLE_SHARE", 1.0)
    searches = []
    real = lanczos._search
    monkeypatch.setattr(lanczos, "_search", lambda *a: searches.append(len(a[3])) or real(*a))
    a = _block_cases()[case]
    for matrix in (sp.csr_array(a), sp.csc_array(a), sp.csr_array(a.T), sp.csc_array(a.T)):
        if matrix.shape[1] and not np.diff(sp.csc_array(matrix).indptr).all():
            continue  # components() wants no empty column
        searches.clear()
        count, labels = lanczos.components(matrix)
        ref_count, ref = _oracle_components(matrix)
        assert count == ref_count  # an empty row counts as a component of its own
        assert _same_partition(labels, ref)
        if case == "connected":  # the sample alone decided (far fewer entries than the whole)
            assert len(searches) == 1 and searches[0] < matrix.nnz / 2


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 4), st.floats(0.02, 0.5),
       st.sampled_from([1, 3, 16]))
def test_sampled_components_match_the_full_search(seed, blocks, density, hits):
    rng = np.random.default_rng(seed)
    parts = [(rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 40)))) < density)
             for _ in range(blocks)]
    a = sp.block_diag([p.astype(float) for p in parts]).toarray()
    if blocks > 1 and rng.random() < 0.5:
        a[rng.integers(a.shape[0]), rng.integers(a.shape[1])] = 1.0  # maybe a bridge
    a = a[:, a.any(axis=0)]
    if a.size == 0 or not a.any():
        return
    saved = lanczos._SAMPLE_MIN_NNZ, lanczos._SAMPLE_HITS, lanczos._SAMPLE_SHARE
    try:  # a sample of every matrix, thin (often not covering it) or thick
        lanczos._SAMPLE_MIN_NNZ, lanczos._SAMPLE_HITS, lanczos._SAMPLE_SHARE = 0, hits, 1.0
        got = [lanczos.components(sp.csc_array(a)), lanczos.components(sp.csr_array(a))]
    finally:
        lanczos._SAMPLE_MIN_NNZ, lanczos._SAMPLE_HITS, lanczos._SAMPLE_SHARE = saved
    ref_count, ref = _oracle_components(a)
    assert got[0][0] == got[1][0] == ref_count
    assert all(_same_partition(labels, ref) for _, labels in got)


def test_components_against_the_full_bipartite_adjacency():
    rng = np.random.default_rng(2)
    for density in (0.02, 0.05, 0.2):
        a = (rng.random((40, 30)) < density).astype(float)
        a = a[:, a.any(axis=0)]
        m, s = a.shape
        full = np.zeros((m + s, m + s))
        full[:m, m:] = a
        full[m:, :m] = a.T
        _, ref = connected_components(sp.csr_array(full), directed=False)
        ref = ref[m:]
        for matrix in (a, sp.csr_array(a), sp.csc_array(a)):
            _, labels = lanczos.components(matrix)
            # the same partition of the columns (labels may be numbered differently)
            pairs = set(zip(labels.tolist(), ref.tolist()))
            assert len(pairs) == len(set(labels.tolist())) == len(set(ref.tolist()))


def test_lanczos_on_a_known_spectrum_and_its_step_budget():
    eigenvalues = np.concatenate(([50.0, 20.0], np.linspace(0.0, 19.0, 300)))
    theta, vectors = lanczos.lanczos_ritz(lambda x: eigenvalues * x, 302, 2, tol=1e-13)
    np.testing.assert_allclose(theta, [50.0, 20.0], rtol=1e-13)
    np.testing.assert_allclose(np.abs(vectors[:2]), np.eye(2), atol=1e-6)
    with pytest.raises(lanczos.NotConverged):
        lanczos.lanczos_ritz(lambda x: eigenvalues * x, 302, 2, tol=1e-13, max_steps=5)


def test_lanczos_falls_back_when_it_does_not_converge(monkeypatch):
    def gives_up(*args, **kwargs):
        raise lanczos.NotConverged("budget")

    monkeypatch.setattr(solvers, "lanczos_ritz", gives_up)
    monkeypatch.setattr(solvers, "_plan_nonnegative", lambda *args: "lanczos")
    a = (np.random.default_rng(0).random((90, 70)) < 0.2).astype(float)
    ref = dense_top_singular_values(a, 2)
    _close(singular_values_compact(a, 2, binary=True), ref)           # -> dense Gram
    _close(singular_values_compact(sp.csr_array(a), 2, binary=True, dense_max=0), ref)  # ARPACK


def test_plan_chooses_by_cost():
    assert solvers.plan((40, 30), 1200, nonnegative=True) == "gram"
    # a big sparse layer: sparse Lanczos, far cheaper than a 4096^3 eigensolver
    assert solvers.plan((25088, 4096), 8_000_000, nonnegative=True) == "lanczos"
    # half-dense 0/1: forming the Gram (sgemm) then Lanczos on it beats both
    assert solvers.plan((11008, 4096), 22_000_000, binary=True,
                        nonnegative=True) == "gram-lanczos"
    assert solvers.plan((50000, 5000), 2_000_000, nonnegative=True) == "lanczos"  # > dense_max


@pytest.mark.parametrize("method", METHODS)
def test_report_rows_match_the_oracle_on_every_path(force, method):
    from graphpai import Group, Layer, MaskSet, NetGraph

    force(method)
    g = NetGraph([Group("x", 120), Group("h", 90), Group("y", 30)],
                 [Layer("fc1", "linear", (90, 120), "x", "h"),
                  Layer("fc2", "linear", (30, 90), "h", "y")], [], ["x"], ["y"])
    rng = np.random.default_rng(3)
    masks = MaskSet({n: rng.random(l.weight_shape) < 0.15 for n, l in g.layers.items()})
    weights = {n: rng.standard_normal(l.weight_shape) for n, l in g.layers.items()}
    report = spectral(g, masks, weights)
    for row in report.layers:
        b = g.biadjacency(row.layer, masks)
        x = g.biadjacency(row.layer, masks, weights[row.layer])
        ref = naive_layer_spectrum(b, x.toarray())
        for key in ("sigma_1", "sigma_2", "weighted_sigma_1", "weighted_sigma_2", "imdb",
                    "imdb_r", "imdb_lambda", "delta_r", "coordinate_norm"):
            want = ref[key]
            if want is None:
                assert getattr(row, key) is None, key
            else:
                assert getattr(row, key) == pytest.approx(want, rel=1e-12, abs=1e-12), key


# ----------------------------------------------------------------- issue 15: eager checks, pairs
def _pair_cases():
    """(name, 0/1 matrix, weighted matrix on its pattern) against dense SVD."""
    rng = np.random.default_rng(15)
    block = (rng.random((40, 25)) < 0.25).astype(float)
    copies = np.kron(np.eye(2), block)                       # sigma_1 = sigma_2, 0/1 and weighted
    yield "random", (rng.random((90, 60)) < 0.15).astype(float)
    yield "two equal blocks", copies
    yield "three equal blocks", np.kron(np.eye(3), block)
    yield "rank 1 (complete)", np.ones((9, 14))
    yield "1 x N", np.ones((1, 30))
    yield "N x 1", np.ones((30, 1))
    cycle = np.eye(60) + np.roll(np.eye(60), 1, axis=1)
    yield "two equal cycles", np.kron(np.eye(2), cycle)
    yield "J - I", np.ones((15, 15)) - np.eye(15)


def _weights_on(b, rng, repeat=False):
    w = rng.random(b.shape) + 0.05
    if repeat:  # the same weights in every diagonal copy: repeated weighted values too
        w = np.ones_like(w)
    return b * w


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,b", list(_pair_cases()), ids=[c[0] for c in _pair_cases()])
def test_pair_matches_dense_svd_and_separate_calls(force, monkeypatch, method, name, b):
    force(method)
    rng = np.random.default_rng(len(name))
    for x in (_weights_on(b, rng), _weights_on(b, rng, repeat=True)):
        for workers, parallel_nnz in ((1, solvers._PARALLEL_NNZ), (2, 0)):  # 0: always threads
            monkeypatch.setattr(solvers, "_PARALLEL_NNZ", parallel_nnz)
            for fmt in (sp.csr_array, sp.csc_array):
                got = solvers.singular_values_pair(fmt(b), fmt(x), 3, dense_max=4096,
                                                   workers=workers)
                _close(got[0], dense_top_singular_values(b, 3))
                _close(got[1], dense_top_singular_values(x, 3))
                alone = [singular_values_compact(fmt(a), 3, binary=binary, dense_max=4096)
                         for a, binary in ((b, True), (x, False))]
                assert np.array_equal(got[0], alone[0]) and np.array_equal(got[1], alone[1])


def test_pair_shares_components_only_for_an_identical_pattern(force, monkeypatch):
    force("lanczos")
    calls = []
    real = lanczos.components

    def counting(a):
        calls.append(a.shape)
        return real(a)

    monkeypatch.setattr(solvers, "components", counting)
    rng = np.random.default_rng(4)
    block = (rng.random((30, 20)) < 0.3).astype(float)
    b = np.kron(np.eye(2), block)                                # two components
    x = b * (rng.random(b.shape) + 0.1)
    got = solvers.singular_values_pair(sp.csc_array(b), sp.csc_array(x), 2, dense_max=0)
    assert len(calls) == 1                                        # computed once, from b
    _close(got[0], dense_top_singular_values(b, 2))
    _close(got[1], dense_top_singular_values(x, 2))
    # a kept weight that is exactly 0 (stored as an explicit zero): x has its own components
    calls.clear()
    xz = sp.csc_array(x)
    xz.data[np.flatnonzero(xz.indices == xz.indices[0])[:1]] = 0.0
    got = solvers.singular_values_pair(sp.csc_array(b), xz, 2, dense_max=0)
    assert len(calls) == 2
    _close(got[1], dense_top_singular_values(xz.toarray(), 2))
    # no weights; an empty weighted matrix
    assert solvers.singular_values_pair(sp.csr_array(b), None, 2)[1] is None
    got = solvers.singular_values_pair(sp.csr_array(b), sp.csr_array(b.shape), 2)
    assert got[1].tolist() == [0.0, 0.0]


def test_pair_returns_solver_errors_and_uses_the_given_solver(monkeypatch):
    from graphpai.errors import SolverError

    b = sp.csr_array((np.random.default_rng(1).random((20, 30)) < 0.3).astype(float))
    seen = []

    def failing(a, k, **kwargs):
        seen.append(kwargs["binary"])
        if not kwargs["binary"]:
            raise SolverError(kwargs["layer"], "no convergence")
        return singular_values_compact(a, k, **kwargs)

    got = solvers.singular_values_pair(b, b * 0.5, 2, layer="fc", solve=failing)
    assert sorted(seen) == [False, True]
    _close(got[0], dense_top_singular_values(b.toarray(), 2))
    assert isinstance(got[1], SolverError) and got[1].layer == "fc"


def test_eager_checks_stop_no_later_with_the_same_values():
    rng = np.random.default_rng(8)
    a = sp.csr_array((rng.random((900, 400)) < 0.05).astype(float))
    ref = dense_top_singular_values(a, 2)
    steps = {}
    for eager in (False, True):
        count = [0]

        def apply(x):
            count[0] += 1
            return a.T @ (a @ x)

        theta, v = lanczos.lanczos_ritz(apply, 400, 2, tol=1e-13, eager=eager)
        steps[eager] = count[0]
        _close(np.linalg.svd(a @ v, compute_uv=False), ref)
        _close(np.sqrt(theta), ref)
    assert steps[True] <= steps[False]
    # the same spectrum as the plain test: eager and plain give the same Ritz values
    eigenvalues = np.concatenate(([50.0, 20.0], np.linspace(0.0, 19.0, 300)))
    theta, _ = lanczos.lanczos_ritz(lambda x: eigenvalues * x, 302, 2, tol=1e-13, eager=True)
    np.testing.assert_allclose(theta, [50.0, 20.0], rtol=1e-13)


@pytest.mark.parametrize("name,a", list(_cases()), ids=[c[0] for c in _cases()])
def test_eager_path_of_the_solver_matches_dense_svd(force, monkeypatch, name, a):
    force("lanczos")
    monkeypatch.setattr(solvers, "_EAGER_WORK", 0)  # every Lanczos call checks eagerly
    ref = dense_top_singular_values(a, 3)
    for matrix in (sp.csr_array(a), sp.csc_array(a)):
        _close(top_singular_values(matrix, 3, dense_max=0), ref)


def test_pair_threads_run_on_one_blas_thread_and_restore_it(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"}

    before = blas_threads()
    seen = []

    def spy(a, k, **kwargs):
        seen.append(blas_threads())
        return singular_values_compact(a, k, **kwargs)

    monkeypatch.setattr(solvers, "_PARALLEL_NNZ", 0)
    b = sp.csr_array((np.random.default_rng(2).random((40, 30)) < 0.3).astype(float))
    got = solvers.singular_values_pair(b, b * 2.0, 2, solve=spy)
    assert len(seen) == 2 and all(s == {1} for s in seen)
    assert blas_threads() == before
    _close(got[1], 2.0 * dense_top_singular_values(b.toarray(), 2))


@pytest.mark.parametrize("n, k", [(1, 1), (2, 2), (7, 2), (60, 3)])
def test_tridiagonal_top_against_dense_eigh(n, k):
    # LAPACK dstemr called directly, as Lanczos and the batched runs use it: numpy's dense eigh
    from graphpai.spectral.lanczos import tridiagonal_top

    rng = np.random.default_rng(n)
    alpha, beta = rng.random(n), rng.random(n - 1)
    t = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    w, v = np.linalg.eigh(t)
    theta, y = tridiagonal_top(alpha, beta, k)
    np.testing.assert_allclose(theta, w[::-1][:k], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(np.abs(y), np.abs(v[:, ::-1][:, :k]), atol=1e-10)
