"""Exact, deterministic top-k singular values of sparse or dense matrices (docs/definitions.md#spectral).

Once the empty rows and columns are dropped (they carry no singular value), each matrix goes to
the cheaper of two exact methods, by a cost model of the work each needs (:func:`plan`), not by a
fixed size:

- **Gram**: the dense Gram matrix of the smaller side ``s``, ``A^T A`` (a sparse product when
  that is cheaper, else BLAS; in float32 for 0/1 matrices, where every entry is an integer below
  2**24 and so exact), then LAPACK's subset eigensolver ``dsyevr`` (what
  ``scipy.linalg.eigh(subset_by_index=...)`` calls) for the top-k eigenvalues. Cost: about
  ``s^3`` for the eigensolver plus the product. When ``sigma_k^2 >= 1e-4 sigma_1^2`` their square
  roots are accurate to ~1e-12 relative; below that, the eigenvectors ``V`` are computed too and
  the singular values of ``A V`` in float64
  replace them (a Rayleigh-Ritz step): the square root of a Gram eigenvalue would lose half the
  digits of a small ``sigma_2`` (a rank-1 matrix would get ``sigma_2 ~ 1e-8 sigma_1`` instead of
  0), ``A V`` keeps the error near ``eps sigma_1^2 / sigma_2``; for
  ``0 < sigma_2 < 1e-6 sigma_1`` (never a 0/1 matrix) numpy's dense SVD of ``A`` decides.
- **Krylov**: ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.svds``) on the
  implicit Gram operator ``x -> A^T (A x)``, with sparse mat-vecs, a seeded starting vector, a
  64-vector Krylov space and a stopping tolerance tied to the digits reported: every Ritz value
  ``theta`` of the Gram operator stops with a residual below ``1e-13 theta``, so (symmetric
  matrix) the eigenvalue is within ``1e-13`` relative and each singular value within ``5e-14``,
  whatever the gaps, repeated values included; a Rayleigh-Ritz step (``svd(A V)``) gives the
  values. Cost: about 150 mat-vecs of ``2 nnz`` each plus ARPACK's own work, so it wins for
  large sparse matrices and for subgraphs whose smaller side is large but whose edges are few.
  It is retried with larger Krylov spaces on non-convergence. A nonzero ``sigma_2`` below
  ``1e-6 sigma_1`` (never a 0/1 matrix) is re-solved by the Gram method when ``s <= dense_max``.

- **Lanczos** (non-negative matrices: every matrix of the spectral report): the matrix is split
  into the connected components of its bipartite graph, then each goes to the dense Gram
  eigensolver, or to Lanczos without restarts and with full reorthogonalisation on the implicit
  Gram operator (sparse mat-vecs, ``"lanczos"``) or on a formed Gram matrix (one BLAS product,
  then dense mat-vecs, ``"gram-lanczos"``), whichever the cost model says is cheapest; same
  1e-13 residual rule (:mod:`.lanczos`). ARPACK (then the Gram method) is its fallback.

:func:`singular_values_pair` solves a layer's 0/1 and weighted matrices in one call (the
components computed once when the patterns are equal, the two solves in two threads on big
layers); the numbers are those of two separate calls. Tried for issue 15 and not used, by
measured cost on ImageNet VGG-16's classifier layers: block Lanczos (blocks of 4-16 vectors
need 2-5 times the Krylov dimension of one vector to reach the same residual at the bulk edge,
248-624 against 122, and scipy's multi-vector sparse product costs 1.5-3 mat-vecs at 4-8
vectors: 1.4 s or more against 0.6 s on the 4096 x 4096 fc2), deflating ``sigma_1`` first
(alone it meets the tolerance within 12 steps, the pair needs 78-114: the steps go to the
bulk-edge ``sigma_2``, and full reorthogonalisation already keeps the converged vector out) and
float32 matrix data (scipy converts it to float64 on every product: 15 against 7.6 ms).

None builds the dense ``(n_l + n_r)^2`` bipartite adjacency, and neither uses LOBPCG or
``eigsh(which="LM")`` on that adjacency (docs/definitions.md#spectral explains why).

:func:`one_blas_thread` limits BLAS to one thread while many small
problems run in a thread pool (as :func:`graphpai.spectral.spectral` does); the functions here
never change the thread count.
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import scipy.linalg as sla
from scipy.linalg.lapack import get_lapack_funcs
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import ArpackNoConvergence, svds

from ..errors import MaskError, SolverError
from .lanczos import NotConverged, components, lanczos_ritz

__all__ = ["DENSE_MAX", "top_singular_values", "drop_isolated", "as_matrix", "one_blas_thread",
           "plan", "singular_values_pair"]

DENSE_MAX = 4096
"""Largest smaller side that the Gram method may take; the cost model (:func:`plan`) chooses
between it and the Krylov method below that, the Krylov method always above it."""

_F32_EXACT = 2 ** 24  # float32 holds every integer up to this, so 0/1 Gram entries are exact
_EPS = np.finfo(np.float64).eps
_SQRT_SAFE = 1e-4  # sqrt of Gram eigenvalues is used when lambda_p >= this * lambda_1
_RITZ_SAFE = 1e-6  # Rayleigh-Ritz values are used when sigma_p >= this * sigma_1 (or 0)
_dsyevr = get_lapack_funcs("syevr", dtype=np.float64)
_NCV = 64  # Krylov space of the first ARPACK attempt (fewest mat-vecs on bulk-edge sigma_2)
_ARPACK_TRIES = ((_NCV, None), (128, 20000), (256, 100000))  # (ncv, maxiter) per attempt
_KRYLOV_TOL = 1e-13  # residual of each Gram Ritz value, relative to it: the eigenvalue's error
# Cost model, in seconds, measured on a loaded 2-core x86 machine with one BLAS thread
# (benchmarks/spectral.py --calibrate); only the ratio of the two estimates matters.
_EIG_PER_S3 = 1.2e-10  # dsyevr (tridiagonal reduction) per s^3
_SPARSE_GRAM_PER_TERM = 8e-9  # scipy sparse product, per multiply-add
_BLAS_PER_MS2 = {True: 1.5e-11, False: 3.1e-11}  # sgemm (0/1) / dgemm, per m s^2
_KRYLOV_MATVECS = 300  # Gram mat-vecs ARPACK needs at the bulk edge (typical: 150-300)
_KRYLOV_PER_NNZ = 1.5e-9  # one sparse mat-vec, per stored entry (two per Gram mat-vec)
_KRYLOV_PER_STEP = 3e-5  # ARPACK reverse-communication overhead per mat-vec
_KRYLOV_PER_ORTH = 2e-9  # ARPACK's orthogonalisation, per s * ncv per mat-vec
_LANCZOS_STEPS = 120  # Lanczos steps to 1e-13 at the bulk edge of a random sparse layer (60-160)
_LANCZOS_PER_STEP = 2.5e-5  # Python and small-array overhead of one Lanczos step
_LANCZOS_PER_ORTH = 1.5e-9  # full reorthogonalisation, per s * (steps so far)
_SPARSE_OVER_BLAS = {True: 210, False: 160}  # one sparse Gram term costs this many m s^2 of
# sgemm (0/1) / dgemm: degree-group slices of ImageNet VGG-16's fc1 measured 200 and 120 on the
# earlier container, 207-218 and 151-166 on the AMD EPYC one (2026-12-03)
_GEMV_PER_S2 = 2e-10  # dense float64 Gram mat-vec, per s^2
_LANCZOS_MEMORY = 2 ** 28  # bytes the Lanczos vectors may take (caps the steps)
_EAGER_WORK = 2 ** 20  # Lanczos checks its tolerance eagerly (lanczos_ritz) where a step
# multiplies this many entries (about 1 ms; a tridiagonal eigen-solve is ~0.3 ms)
_PARALLEL_NNZ = 2 ** 20  # singular_values_pair runs the 0/1 and weighted solves in two threads
# when both matrices have this many nonzeros


def as_matrix(matrix, name="matrix"):
    """`matrix` as a CSR array or an ndarray, checked to be 2-D, real and finite.

    Raises
    ------
    MaskError
        Naming `name` and what is wrong (not 2-D, not numbers, nan or inf entries).

    Examples
    --------
    >>> as_matrix([[1, 0], [0, 1]]).shape
    (2, 2)
    >>> as_matrix(np.ones(3), "biadjacency")
    Traceback (most recent call last):
    ...
    graphpai.errors.MaskError: biadjacency must be 2-D (n_in x n_out), got shape (3,)
    """
    if sp.issparse(matrix):
        a = sp.csr_array(matrix)
        values = a.data
    else:
        try:
            a = np.asarray(matrix)
        except ValueError as exc:  # ragged nested lists
            raise MaskError(f"{name} must be a 2-D array of numbers ({exc})") from None
        values = a
    if a.ndim != 2:
        raise MaskError(f"{name} must be 2-D (n_in x n_out), got shape {a.shape}")
    if values.dtype.kind not in "biuf":
        raise MaskError(f"{name} must hold real numbers, not {values.dtype}")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise MaskError(f"{name} has {bad} nan or inf entries; singular values need finite "
                        "entries")
    return a


def drop_isolated(matrix):
    """Return `matrix` without its all-zero rows and columns, and the kept row/column indices.

    Parameters
    ----------
    matrix : scipy.sparse array/matrix or ndarray, shape (m, n)

    Returns
    -------
    compact : same kind as `matrix` (sparse becomes CSR), shape (n_rows, n_cols)
    rows, cols : ndarray of int
        Indices of the kept rows and columns.

    Examples
    --------
    >>> a, rows, cols = drop_isolated(np.array([[0, 0], [1, 0], [0, 0]]))
    >>> a.tolist(), rows.tolist(), cols.tolist()
    ([[1]], [1], [0])
    """
    if sp.issparse(matrix):
        a = sp.csr_array(matrix)
        a.eliminate_zeros()
        rows = np.flatnonzero(np.diff(a.indptr))
        cols = np.flatnonzero(np.bincount(a.indices, minlength=a.shape[1]))
        if len(rows) < a.shape[0]:
            a = a[rows]
        if len(cols) < a.shape[1]:
            a = a[:, cols]
        return a, rows, cols
    a = np.asarray(matrix)
    nonzero = a != 0
    rows = np.flatnonzero(nonzero.any(axis=1))
    cols = np.flatnonzero(nonzero.any(axis=0))
    if len(rows) < a.shape[0] or len(cols) < a.shape[1]:
        a = a[np.ix_(rows, cols)]
    return a, rows, cols


def top_singular_values(matrix, k=2, *, layer=None, dense_max=DENSE_MAX, seed=0):
    r"""The `k` largest singular values of a matrix, exactly and deterministically (docs/definitions.md#spectral).

    For a 0/1 fan-in biadjacency B these are the k largest eigenvalue magnitudes of the bipartite
    adjacency ``[[0, B], [B^T, 0]]``; ``sigma_1 >= sigma_2`` feed the Ramanujan quantities of
    [RAM] and, on ``|W * M|``, the weighted gap of [FS].

    Parameters
    ----------
    matrix : scipy.sparse array/matrix or ndarray, shape (m, n)
        Any real matrix; empty rows and columns are dropped first (they change no singular
        value).
    k : int
        How many values to return.
    layer : str, optional
        Named in the error if the solver fails.
    dense_max : int
        Largest smaller side solved through the dense Gram matrix; above it, seeded ARPACK.
    seed : int
        Seed of ARPACK's starting vector (the result does not depend on it beyond rounding).

    Returns
    -------
    ndarray of float64, shape (k,)
        Singular values in decreasing order, counted with multiplicity; padded with zeros when
        the matrix has fewer than k (an empty, 1-row or 1-column matrix has ``sigma_2 = 0``).
        Values at or below ``max(m, n) * eps * sigma_1`` (numpy's rank tolerance) are returned
        as exactly 0.

    Raises
    ------
    MaskError
        If `matrix` is not 2-D, not real or not finite.
    SolverError
        If the eigensolver does not converge after retries; ``.layer`` and ``.reason`` say where
        and why.

    References
    ----------
    .. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization
       through the Lens of Ramanujan Graph", ICLR 2023.

    Examples
    --------
    The complete bipartite graph K_{2,3} has singular values sqrt(6) and 0:

    >>> s = top_singular_values(np.ones((2, 3)))
    >>> round(float(s[0] ** 2), 12), float(s[1])
    (6.0, 0.0)
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    a, _, _ = drop_isolated(as_matrix(matrix))
    if sp.issparse(a):
        binary = a.nnz == 0 or bool(np.all(a.data == 1))
    else:
        binary = bool(np.all((a == 0) | (a == 1)))
    return singular_values_compact(a, k, binary=binary, layer=layer, dense_max=dense_max,
                                   seed=seed)


def singular_values_compact(a, k=2, *, binary=False, layer=None, dense_max=DENSE_MAX, seed=0,
                            nonzero=None, nnz=None, split=True, labels=None):
    """`top_singular_values` for a matrix whose empty rows/columns are already gone.

    `binary` says the entries are 0/1 (then the Gram matrix is formed exactly in float32).
    Empty rows or columns left in are harmless, only slower. `nonzero=True` promises at least
    one nonzero entry (skips a count); `nnz` gives the number of nonzero entries if known.
    `split=False` says the matrix is known to be one connected component (no split needed);
    `labels`, the connected component of each column of the tall orientation (``a`` if it has
    at least as many rows as columns, else ``a.T``), saves computing them when the matrix goes to
    sparse Lanczos (:func:`singular_values_pair` passes the 0/1 matrix's to the weighted one).
    """
    out = np.zeros(k)
    if nnz is None and (nonzero is None or not sp.issparse(a)):
        nnz = a.nnz if sp.issparse(a) else None
    if nonzero is None:
        nonzero = (nnz if nnz is not None else np.count_nonzero(a)) > 0
    if min(a.shape) == 0 or not nonzero:
        return out
    if a.shape[0] < a.shape[1]:  # the Gram matrix of the smaller side is A^T A with A tall
        a = a.T
    nonnegative = binary or _nonnegative(a)
    method = plan(a.shape, nnz, k, binary=binary, sparse=sp.issparse(a), dense_max=dense_max,
                  nonnegative=nonnegative)
    if method == "gram":
        values = _gram_top(a, min(k, a.shape[1]), binary, layer)
    elif method in ("lanczos", "gram-lanczos"):
        values = _split_top(a, k, binary, layer, dense_max, seed, method, split, labels)
    else:
        values = _arpack_top(a, k, layer, seed)
        small = values[values > 0].min(initial=values.max()) if values.size else 0.0
        if (a.shape[1] <= dense_max and values.max() > 0 and len(values) > 1
                and max(a.shape) * _EPS * values.max() < small < _RITZ_SAFE * values.max()):
            values = _gram_top(a, min(k, a.shape[1]), binary, layer)  # a tiny nonzero sigma_k
    values = np.sort(values)[::-1][:k]
    # numerical zeros (the rank tolerance of np.linalg.matrix_rank) are reported as exact 0
    values[values <= max(a.shape) * _EPS * values[0]] = 0.0
    out[: len(values)] = values
    return out


def singular_values_pair(b, x, k=2, *, layer=None, dense_max=DENSE_MAX, seed=0, nnz=(None, None),
                         workers=2, solve=None):
    """:func:`singular_values_compact` of a layer's 0/1 matrix `b` and of its weighted matrix `x`
    (same shape, empty rows/columns of `b` already gone), in one call.

    Returns ``[values of b, values of x]``, each an ndarray of `k` values (as
    :func:`singular_values_compact`) or the :class:`SolverError` its solve raised; `x=None` gives
    ``[values of b, None]``. `nnz` gives the nonzero counts if known (`b` must hold at least one).
    The numbers are those of two separate calls; what is shared:

    - when both go to sparse Lanczos and `x` has exactly the sparsity pattern of `b` (the same
      CSR/CSC index arrays and no stored zero: no kept weight is exactly 0), the connected
      components are computed once, from `b`;
    - when both have at least ``2**20`` nonzeros (a sparse Lanczos solve of a few tenths of a
      second or more) and ``workers > 1``, the two run in two threads (scipy's sparse products
      release the GIL), with BLAS on one thread meanwhile (:func:`one_blas_thread`): on a big
      layer, such as ImageNet VGG-16's fc1, the report's critical path is that one layer.

    `solve` replaces :func:`singular_values_compact` for each matrix (same signature; a caller's
    module-level reference, so that tests can patch it there).
    """
    nb, nx = nnz
    nb = b.nnz if nb is None and sp.issparse(b) else nb
    if x is not None and nx is None and sp.issparse(x):
        nx = x.nnz
    labels = None
    if x is not None and _same_pattern(b, x):
        tall = b if b.shape[0] >= b.shape[1] else b.T
        methods = {plan(tall.shape, n, k, binary=binary, sparse=True, dense_max=dense_max,
                        nonnegative=True) for n, binary in ((nb, True), (nx, False))}
        if methods == {"lanczos"}:
            labels = components(tall)[1]

    solver = singular_values_compact if solve is None else solve

    def one(a, binary, n):
        extra = {} if labels is None else {"labels": labels}
        try:
            return solver(a, k, binary=binary, layer=layer, dense_max=dense_max, seed=seed,
                          nnz=n, **extra)
        except SolverError as exc:
            return exc

    if x is None:
        return [one(b, True, nb), None]
    if workers > 1 and min(nb or 0, nx or 0) >= _PARALLEL_NNZ:
        # one BLAS thread each (as the report's layer pool): two threads that each start BLAS
        # threads of their own would oversubscribe the cores (see one_blas_thread)
        with one_blas_thread(), ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(one, b, True, nb), pool.submit(one, x, False, nx)]
            return [job.result() for job in jobs]
    return [one(b, True, nb), one(x, False, nx)]


def _same_pattern(b, x) -> bool:
    """Whether sparse `b` and `x` store the same entries, all of `x`'s nonzero."""
    return (sp.issparse(b) and sp.issparse(x) and b.format == x.format in ("csr", "csc")
            and b.shape == x.shape and b.nnz == x.nnz and np.array_equal(b.indptr, x.indptr)
            and np.array_equal(b.indices, x.indices) and bool(np.all(x.data != 0)))


def plan(shape, nnz=None, k=2, *, binary=False, sparse=True, dense_max=DENSE_MAX,
         nonnegative=False) -> str:
    """Which exact method is cheaper for a matrix: ``"gram"`` or ``"krylov"`` (module docstring).

    `shape` is (m, n) after empty rows and columns are dropped, `nnz` its nonzero entries (None:
    dense). The estimates are seconds on one core (constants measured by
    ``benchmarks/spectral.py --calibrate``): Gram = forming ``A^T A`` (sparse or BLAS,
    whichever is cheaper) + ``dsyevr`` on ``s x s``; Krylov = about 150 Gram mat-vecs of
    ``2 nnz`` each plus ARPACK's work on ``s``-vectors. ``s <= dense_max`` is needed for Gram,
    and ``s > k + 1`` and ``s > _NCV`` for Krylov (ARPACK needs room for its Krylov space).

    Examples
    --------
    >>> plan((40, 30), 1200)                  # small: the dense Gram eigensolver
    'gram'
    >>> plan((25088, 4096), 8_000_000)        # a large sparse fc layer: Lanczos
    'krylov'
    >>> plan((11008, 4096), 22_000_000, binary=True)   # half-dense: the Gram product
    'gram'

    With ``nonnegative=True`` (0/1 and ``|W * M|`` matrices) the choice is between ``"gram"``,
    ``"lanczos"`` and ``"gram-lanczos"`` (module docstring):

    >>> plan((25088, 4096), 8_000_000, nonnegative=True)
    'lanczos'
    >>> plan((11008, 4096), 22_000_000, binary=True, nonnegative=True)
    'gram-lanczos'
    """
    m, s = max(shape), min(shape)
    if s <= k:  # ARPACK needs k < s: only the Gram method can return every value
        return "gram"
    if nonnegative:
        return _plan_nonnegative(m, s, m * s if nnz is None else nnz, binary, sparse, dense_max)
    if s > dense_max:
        return "krylov"
    if s <= _NCV + 1:  # smaller than ARPACK's Krylov space: the Gram eigensolver is cheaper
        return "gram"
    nnz = m * s if nnz is None else nnz
    row_terms = nnz * nnz / m  # sum of squared row counts, if the entries spread evenly
    gram = min(_SPARSE_GRAM_PER_TERM * row_terms if sparse else np.inf,
               _BLAS_PER_MS2[bool(binary)] * m * s * s) + _EIG_PER_S3 * s ** 3
    krylov = _KRYLOV_MATVECS * (_KRYLOV_PER_STEP + 2 * _KRYLOV_PER_NNZ * nnz
                                + _KRYLOV_PER_ORTH * s * _NCV)
    if not sparse:
        krylov += _KRYLOV_PER_NNZ * m * s  # the CSR copy
    return "krylov" if krylov < gram else "gram"


def _plan_nonnegative(m, s, nnz, binary, sparse, dense_max):
    steps = min(s, _LANCZOS_STEPS)
    orth = _LANCZOS_PER_ORTH * s * steps * steps / 2
    lanczos = (steps * (_LANCZOS_PER_STEP + 2 * _KRYLOV_PER_NNZ * nnz) + orth
               + _KRYLOV_PER_NNZ * (nnz if sparse else m * s))  # components (+ the CSR copy)
    if s > dense_max:
        return "lanczos"
    form = min(_SPARSE_GRAM_PER_TERM * nnz * nnz / m if sparse else np.inf,
               _BLAS_PER_MS2[bool(binary)] * m * s * s)
    costs = {"gram": form + _EIG_PER_S3 * s ** 3, "lanczos": lanczos,
             "gram-lanczos": form + steps * (_LANCZOS_PER_STEP + _GEMV_PER_S2 * s * s) + orth}
    return min(costs, key=costs.get)


def _nonnegative(a) -> bool:
    data = a.data if sp.issparse(a) else a
    return bool(data.size == 0 or data.min() >= 0)


def _split_top(a, k, binary, layer, dense_max, seed, method, split, labels=None):
    """Top-k of a tall non-negative `a` by Lanczos, component by component (module
    :mod:`.lanczos`); a component that Lanczos cannot finish goes to ARPACK or the Gram method."""
    m, s = a.shape
    g = _gram(a, binary) if method == "gram-lanczos" else None
    if g is None and not sp.issparse(a):
        a = dense_to_sparse(a)
    if split:  # the Gram's pattern links two columns that share a row: the same components
        if labels is None or g is not None or len(labels) != s:
            count, labels = components(a) if g is None else connected_components(
                sp.csr_array(g != 0), directed=False)
        else:
            count = 2  # given: let np.unique below count them
        if count > 1:
            present = np.unique(labels)
            if len(present) > 1:
                return _per_component(a, k, binary, layer, dense_max, seed, labels, present)
    if g is not None:
        apply = g.__matmul__
        mat = a
    else:
        mat = a if sp.issparse(a) else sp.csr_array(a)
        if mat.dtype != np.float64:
            mat = mat.astype(np.float64)
        mat_t = mat.T

        def apply(x):
            return mat_t @ (mat @ x)
    steps = max(k + 1, min(s, _LANCZOS_MEMORY // (8 * s)))
    try:
        eager = (2 * mat.nnz if g is None else s * s) >= _EAGER_WORK  # a step of ~1 ms or more
        theta, vectors = lanczos_ritz(apply, s, k, tol=_KRYLOV_TOL, seed=seed, max_steps=steps,
                                      eager=eager)
    except NotConverged:
        if s <= dense_max:
            return _gram_top(a, min(k, s), binary, layer)
        return _arpack_top(a, k, layer, seed)
    if g is not None and theta[-1] >= _SQRT_SAFE * theta[0]:  # as in _gram_top
        return np.sqrt(theta)
    if sp.issparse(mat):
        av = mat @ vectors
    else:
        av = np.asarray(mat, dtype=np.float64) @ vectors
    return np.linalg.svd(av, compute_uv=False)


def dense_to_sparse(a):
    """A dense matrix as CSR (or CSC when its transpose is the C-contiguous one), float64, in one
    pass over the entries (scipy's dense constructor is several times slower on big layers).

    The column indices come from one ``flatnonzero`` of the flat array and the row counts, not
    from a 2-D ``nonzero`` (which writes a row and a column index per entry: 0.42 against 0.23 s
    on the 4096 x 25088 fc1 mask of ImageNet VGG-16 at density 0.1)."""
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        return dense_to_sparse(a.T).T
    a = np.ascontiguousarray(a)
    m, n = a.shape
    counts = np.count_nonzero(a, axis=1) if a.size else np.zeros(m, dtype=np.int64)
    flat = np.flatnonzero(a)
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    index = np.int32 if max(a.shape) < 2 ** 31 and len(flat) < 2 ** 31 else np.int64
    data = (np.ones(len(flat)) if a.dtype == bool
            else a.reshape(-1)[flat].astype(np.float64, copy=False))
    flat -= np.repeat(np.arange(m, dtype=np.int64) * n, counts)  # flat index -> column
    return sp.csr_array((data, flat.astype(index), indptr.astype(index)), shape=a.shape)


def _per_component(a, k, binary, layer, dense_max, seed, labels, present):
    """Top-k values of each connected component of `a`, merged."""
    csc = sp.csc_array(a)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], present)
    sizes = np.diff(np.append(bounds, len(labels)))
    values = []
    single = order[bounds[sizes == 1]]
    if len(single):  # a one-column component: its only singular value is the column norm
        sq = csc[:, single]
        values.append(np.sqrt(np.asarray((sq.multiply(sq)).sum(axis=0)).ravel()))
    for start, size in zip(bounds[sizes > 1], sizes[sizes > 1]):
        cols = np.sort(order[start:start + size])
        sub = csc[:, cols]
        rows = np.flatnonzero(np.diff(sub.tocsr().indptr))
        sub = sub[rows] if len(rows) < sub.shape[0] else sub
        values.append(singular_values_compact(sub, k, binary=binary, layer=layer,
                                              dense_max=dense_max, seed=seed, nonzero=True,
                                              split=False))
    merged = np.sort(np.concatenate(values))[::-1][:k]
    return np.pad(merged, (0, max(0, k - len(merged))))


def _gram(a, binary):
    """Dense float64 ``a^T a`` for a tall `a`, by the cheaper of a sparse product and BLAS."""
    m, s = a.shape
    if sp.issparse(a):
        if a.format == "csr":
            row_nnz = np.diff(a.indptr)
        else:
            a = sp.csc_array(a)
            row_nnz = np.bincount(a.indices, minlength=m)
        sparse_cost = float(np.dot(row_nnz, row_nnz))
        f32 = binary and m < _F32_EXACT  # sgemm, about twice as fast as dgemm
        if sparse_cost * _SPARSE_OVER_BLAS[f32] < float(m) * s * s:
            return (a.T @ a).toarray()
        if f32:  # scattered straight into float32, not through a float64 copy
            a32 = _dense32(a)
            return (a32.T @ a32).astype(np.float64)
        a = a.toarray()
    if binary and m < _F32_EXACT:
        a32 = a.astype(np.float32, copy=False)
        return (a32.T @ a32).astype(np.float64)
    a = np.asarray(a, dtype=np.float64)
    return a.T @ a


def _dense32(a):
    """A sparse CSR/CSC matrix as a dense float32 array (exact for 0/1 entries)."""
    out = np.zeros(a.shape, dtype=np.float32)
    if a.format not in ("csr", "csc"):
        a = sp.csr_array(a)
    if not a.has_canonical_format:  # duplicate entries add up
        a = a.copy()
        a.sum_duplicates()
    major = np.repeat(np.arange(len(a.indptr) - 1), np.diff(a.indptr))
    if a.format == "csr":
        out[major, a.indices] = a.data
    else:
        out[a.indices, major] = a.data
    return out


def _eigh_top(gram, p, layer, vectors=True):
    """Top-p eigenvalues (ascending) of a symmetric matrix and, with `vectors`, their
    eigenvectors (else None): LAPACK dsyevr, then dsyevd."""
    s = gram.shape[0]
    reasons = []
    try:
        w, v, _, _, info = _dsyevr(gram, compute_v=int(vectors), range="I", il=s - p + 1, iu=s)
        if info == 0:
            return w[:p], (v[:, :p] if vectors else None)
        reasons.append(f"dsyevr info={info}")
    except (np.linalg.LinAlgError, ValueError) as exc:
        reasons.append(f"dsyevr: {exc}")
    try:
        if not vectors:
            return sla.eigh(gram, driver="evd", eigvals_only=True, check_finite=False)[s - p:], None
        w, v = sla.eigh(gram, driver="evd", check_finite=False)
        return w[s - p:], v[:, s - p:]
    except (np.linalg.LinAlgError, ValueError) as exc:
        reasons.append(f"dsyevd: {exc}")
    raise SolverError(layer, "; ".join(reasons))


def _gram_top(a, p, binary, layer):
    """Top-p singular values of a tall `a` (m >= s) through its s x s Gram matrix.

    When ``sigma_p^2 >= 1e-4 sigma_1^2`` the square roots of the Gram eigenvalues are already
    accurate to about ``1e-12`` relative (computed without eigenvectors: 20% less time at
    s = 160-256); below that (rank-deficient or nearly so) the eigenvectors are computed and the
    singular values of ``a V`` replace them (Rayleigh-Ritz), with an error near ``eps sigma_1^2 /
    sigma_p``. Where that could exceed ``1e-10 sigma_1`` (``sigma_p < 1e-6 sigma_1`` but not a
    numerical 0), numpy's dense SVD of `a` decides; a 0/1 matrix never gets there (its
    ``sigma_2`` is 0 or at least 0.618).
    """
    gram = _gram(a, binary)
    w, _ = _eigh_top(gram, p, layer, vectors=False)
    w = np.clip(w, 0.0, None)
    if w[0] >= _SQRT_SAFE * w[-1]:
        return np.sqrt(w)
    _, vectors = _eigh_top(gram, p, layer)
    dense = None if sp.issparse(a) else np.asarray(a, dtype=np.float64)
    values = np.linalg.svd((a if dense is None else dense) @ vectors, compute_uv=False)
    if max(a.shape) * _EPS * values[0] < values[-1] < _RITZ_SAFE * values[0]:
        dense = a.toarray() if dense is None else dense
        values = np.linalg.svd(dense.astype(np.float64, copy=False), compute_uv=False)[:p]
    return values


_limit_lock = threading.Lock()
_limit_users = 0
_limit_handle = None


@contextmanager
def one_blas_thread():
    """Run BLAS and LAPACK on one thread inside the block (process-wide), then restore.

    :func:`graphpai.spectral.spectral` solves its layers in a small thread pool, and each worker
    calls BLAS on small matrices: with BLAS threads of their own on top, the cores are
    oversubscribed and OpenBLAS's spinning threads made a VGG-16 report 10-20 times slower on a
    busy 2-core machine. BLAS thread counts are process-wide, so concurrent and nested blocks
    share one limit: the first to enter sets it, the last to leave (maybe another thread)
    restores the previous counts. The limit goes through ``threadpoolctl`` (OpenBLAS, MKL,
    BLIS); where it is missing or fails, the block runs unlimited, with a warning: results never
    depend on it, only speed.
    """
    global _limit_users, _limit_handle
    with _limit_lock:
        if _limit_users == 0:
            _limit_handle = _blas_limit()
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0 and _limit_handle is not None:
                handle, _limit_handle = _limit_handle, None
                handle.restore_original_limits()
                _release_openblas_control()


def _blas_limit():
    """A ``threadpoolctl`` limit of one BLAS thread, or None (with a warning) if none can be set."""
    try:
        from threadpoolctl import threadpool_limits

        handle = threadpool_limits(limits=1, user_api="blas")
    except Exception as exc:  # noqa: BLE001 (speed only: never fail a report over it)
        warnings.warn(f"could not limit BLAS to one thread ({type(exc).__name__}: {exc}); "
                      "spectral reports may run slowly on busy machines", RuntimeWarning,
                      stacklevel=4)
        return None
    _release_openblas_control()
    return handle


def _release_openblas_control():
    # threadpoolctl >= 3.8 lets only the thread that last changed a process-wide OpenBLAS pool
    # change it again; the last thread to leave, maybe another one, must be able to restore it
    from threadpoolctl import OpenBLASController

    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear()


def _arpack_top(a, p, layer, seed):
    """Top-p singular values of a tall matrix by seeded ARPACK (``svds``), with retries.

    ``svds`` runs Lanczos on ``A^T A`` with ``tol**2`` and returns the singular values of
    ``A V``; ``tol = sqrt(1e-13)`` stops each Gram Ritz value at a residual below ``1e-13`` of
    itself (module docstring).
    """
    if sp.issparse(a):
        a = sp.csr_array(a, dtype=np.float64)
    else:
        a = sp.csr_array(np.asarray(a, dtype=np.float64))
    n = a.shape[1]
    reasons = []
    for attempt, (ncv, maxiter) in enumerate(_ARPACK_TRIES):
        v0 = np.random.default_rng([seed, attempt]).standard_normal(n)
        ncv = min(ncv, n - 1) if n - 1 > p + 1 else None  # ARPACK: k < ncv <= n
        try:
            return svds(a, k=p, ncv=ncv, tol=_KRYLOV_TOL ** 0.5, v0=v0, maxiter=maxiter,
                        return_singular_vectors=False, solver="arpack")
        except ArpackNoConvergence as exc:
            reasons.append(f"ARPACK attempt {attempt + 1} (ncv={ncv}, maxiter={maxiter}): {exc}")
        except (np.linalg.LinAlgError, ValueError) as exc:
            reasons.append(f"ARPACK attempt {attempt + 1}: {exc}")
    raise SolverError(layer, "; ".join(reasons))
