"""Top-k singular values of many small matrices at once (docs/spectral.md, "many small problems").

A layer's spectral row solves, besides the whole layer, tens to hundreds of degree-group
subgraphs K_d, 0/1 and weighted, most of them small. One call of
:func:`~.solvers.singular_values_compact` per subgraph costs a few hundred microseconds of
Python, sparse-matrix and LAPACK set-up, more than the eigen-solve itself. Here the small ones
are solved together, with the same mathematics as the Gram method of :mod:`.solvers`:

1. every matrix is compacted (its empty rows and columns dropped) and oriented tall
   (``m >= s``);
2. matrices of similar size share a zero-padded stack ``(g, m_pad, s_pad)`` (sizes rounded up to
   a quarter octave): zero rows change no Gram entry and zero columns only add zero
   eigenvalues, which a top-k of a positive semi-definite Gram matrix with ``s >= k`` true
   columns never returns in place of a true one;
3. one stacked product forms all the Gram matrices of a stack (float32 for 0/1 matrices, whose
   integer Gram entries below 2**24 are then exact, float64 otherwise), and one stacked
   ``numpy.linalg.eigvalsh`` call per padded size solves the 0/1 and weighted ones together
   (above a padded side of 64, ``dsyevr`` for the top-k eigenvalues only, matrix by matrix);
4. the accuracy rule of the Gram method: the square roots of the top-k eigenvalues are the
   answer when ``lambda_k >= 1e-4 lambda_1`` (then accurate to about 1e-12 relative); any other
   matrix (rank-deficient or nearly so; a matrix with fewer than k true columns is exempt: its
   missing values are exactly 0) is handed back to the caller's exact one-matrix solver, which
   applies the Rayleigh-Ritz step and, for a tiny nonzero ``sigma_2``, the dense SVD.

Matrices whose smaller side is above ``max_side`` (:data:`BATCH_MAX_SIDE`) are not stacked (the
dense eigen-solve grows as ``s^3``). The non-negative ones that the cost model finds sparse
enough (:func:`_lanczos_pays`) are split into the connected components of their bipartite
graphs (one ``components`` call on the block-diagonal union; each component's top value is
then simple, see :mod:`.lanczos`) and the large components run Lanczos together
(:func:`_lanczos_chunk`: one block-diagonal sparse product per step, a recurrence, full
reorthogonalisation and the 1e-13 residual rule per problem, values from ``svd(A V)``); small
components go to the stacks, one-row or one-column ones give their norm. The rest go to
:func:`~.solvers.singular_values_compact` one by one. Column blocks of a sparse matrix that fill
most of their rows (:func:`_full_height_pays`) skip the per-entry renumbering: they are copied
as full-height dense slices into the stacks, as the blocks of a dense matrix are.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .lanczos import components, tridiagonal_top
from .solvers import (_BLAS_PER_MS2, _EIG_PER_S3, _EPS, _F32_EXACT, _KRYLOV_PER_NNZ,
                      _KRYLOV_TOL, _LANCZOS_PER_ORTH, _SPARSE_GRAM_PER_TERM, _SQRT_SAFE,
                      DENSE_MAX, _eigh_top, singular_values_compact)

__all__ = ["BATCH_MAX_SIDE", "batchable", "singular_values_many", "column_block_values"]

BATCH_MAX_SIDE = 128
"""Largest smaller side (after empty rows and columns are dropped) solved in a stack. Measured on
the loaded 2-core container (benchmarks/README.md, "batched small problems"): PAGS's ResNet-18
scores took 0.317 / 0.305 / 0.302 / 0.307 / 0.328 CPU s per candidate with 48 / 96 / 128 / 192 /
256, CIFAR VGG-16 at 0.05 and 0.2 was flat (within 3%) from 64 to 128 and 2-10% slower at 192."""


_STACK_MEMORY = 2 ** 26  # bytes of one zero-padded stack (it is split above that)
_MAX_STEPS = 600  # Lanczos steps per problem at most (then the one-matrix solver decides)
_LANCZOS_BATCH_MEMORY = 2 ** 26  # bytes of Lanczos vectors per batched run
_BATCH_STEPS = 60  # Lanczos steps of a degree-group subgraph (40-60 measured on ResNet-18's at
# 99% sparsity; solvers' 120 is a whole random layer's)
_BATCH_PER_STEP = 1.5e-4  # a batched Lanczos step's own overhead, whatever the batch holds (about
# 15 numpy calls; a run of 2 small problems took 12-16 ms where the Gram method takes 2-4 ms)
_PER_ENTRY = 1.5e-7  # the sparse route's bookkeeping per stored entry (column_block_values)
_PER_SLICE = 5e-5  # slicing a sparse block and copying it into a stack
_SUBSET_ABOVE = 64  # stacked Gram matrices of a larger side get their top-k one by one
_FIRST_CHECK = 24  # first tolerance check (a tridiagonal eigen-solve per problem, ~0.2 ms:
# the batch checks seldom, by the residuals' rate of fall, and takes a few more cheap steps)


def batchable(s, max_side=BATCH_MAX_SIDE) -> bool:
    """Whether a matrix whose smaller compact side is `s` goes to the stacked solve."""
    return 0 < s <= max_side


def _pad(n):
    """`n` rounded up to a quarter octave (1..8 exact, then 10, 12, 14, 16, 20, 24, ...)."""
    if n <= 8:
        return int(n)
    step = 1 << (int(n - 1).bit_length() - 3)
    return int(-(-n // step) * step)


class _Problems:
    """Nonzero entries of P compact matrices: matrix id, row, column and value of each entry
    (rows and columns numbered within the matrix, 0 .. rows-1 and 0 .. cols-1)."""

    def __init__(self, pid, row, col, value, rows, cols, binary):
        order = np.argsort(pid, kind="stable")  # entries grouped by matrix
        self.pid, self.row, self.col = pid[order], row[order], col[order]
        self.value = np.asarray(value, dtype=np.float64)[order]
        self.rows, self.cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        self.binary = np.array(np.broadcast_to(np.asarray(binary, bool), self.rows.shape))
        self.bounds = np.searchsorted(self.pid, np.arange(len(self.rows) + 1))

    def __len__(self):
        return len(self.rows)

    def subset(self, ids, nonzero=False):
        """The problems `ids`, renumbered 0 .. len(ids) - 1 (`nonzero`: without zero entries)."""
        ids = np.asarray(ids, dtype=np.int64)
        lens = self.bounds[ids + 1] - self.bounds[ids]
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        e = np.repeat(self.bounds[ids] - offsets, lens) + np.arange(int(lens.sum()))
        pid = np.repeat(np.arange(len(ids)), lens)
        if nonzero:
            keep = self.value[e] != 0
            e, pid = e[keep], pid[keep]
        return _Problems(pid, self.row[e], self.col[e], self.value[e], self.rows[ids],
                         self.cols[ids], self.binary[ids])

    def matrix(self, q):
        """Problem `q` as a CSR array."""
        e = slice(self.bounds[q], self.bounds[q + 1])
        return sp.csr_array((self.value[e], (self.row[e], self.col[e])),
                            shape=(int(self.rows[q]), int(self.cols[q])))


def _values(p, k, layer, dense_max, max_side):
    """Top-k singular values (P, k) of every problem, each by the cheapest exact route: stacked
    Gram eigen-solves (small), batched Lanczos over connected components (large and sparse
    enough, non-negative), else :func:`~.solvers.singular_values_compact` one by one."""
    values = np.zeros((len(p), k))
    if len(p) == 0:
        return values
    s = np.minimum(p.rows, p.cols)
    m = np.maximum(p.rows, p.cols)
    nnz = np.diff(p.bounds)
    small = (s <= max_side) & (nnz > 0)
    if small.any():
        ids = np.flatnonzero(small)
        sub = p.subset(ids)
        v, safe = _solve(sub, k)
        for q in np.flatnonzero(~safe).tolist():  # the exact one-matrix solver decides these
            v[q] = singular_values_compact(sub.matrix(q), k, binary=bool(sub.binary[q]),
                                           layer=layer, dense_max=dense_max)
        values[ids] = v
    large = np.flatnonzero(~small & (nnz > 0))
    nonnegative = np.array([p.value[p.bounds[q]:p.bounds[q + 1]].min() >= 0
                            for q in large.tolist()], dtype=bool)
    krylov = large[nonnegative]
    krylov = krylov[np.broadcast_to(_lanczos_pays(m[krylov], s[krylov], nnz[krylov],
                                                  p.binary[krylov]), krylov.shape)].tolist()
    if krylov:
        values[krylov] = _components_top(p.subset(krylov), k, layer, dense_max, max_side)
    for q in sorted(set(large.tolist()) - set(krylov)):
        values[q] = singular_values_compact(p.matrix(q), k, binary=bool(p.binary[q]),
                                            layer=layer, dense_max=dense_max, nonzero=True)
    return values


def _lanczos_pays(m, s, nnz, binary) -> np.ndarray:
    """Which of these problems (arrays, one entry each) batched Lanczos solves more cheaply than
    the dense Gram eigen-solve, by the cost model of :func:`~.solvers.plan`: those whose own
    Lanczos work is below their Gram cost, provided that their savings together pay the batch's
    per-step overhead (:data:`_BATCH_PER_STEP`, shared by the batch); else none."""
    m, s, nnz = (np.asarray(v, dtype=np.float64) for v in (m, s, nnz))
    steps = np.minimum(s, _BATCH_STEPS)
    lanczos = steps * 2 * _KRYLOV_PER_NNZ * nnz + _LANCZOS_PER_ORTH * s * steps * steps / 2
    blas = np.where(np.asarray(binary, dtype=bool), _BLAS_PER_MS2[True], _BLAS_PER_MS2[False])
    form = np.minimum(_SPARSE_GRAM_PER_TERM * nnz * nnz / m, blas * m * s * s)
    saving = form + _EIG_PER_S3 * s ** 3 - lanczos
    pays = saving > 0
    return pays & (saving[pays].sum() > _BATCH_PER_STEP * _BATCH_STEPS)


def _tall(p):
    """(row, col, m, s) of every entry and problem in the tall orientation (m >= s)."""
    tall = p.rows >= p.cols
    flip = ~tall[p.pid]
    return (np.where(flip, p.col, p.row), np.where(flip, p.row, p.col),
            np.where(tall, p.rows, p.cols), np.where(tall, p.cols, p.rows))


def _block_diagonal(p):
    """All problems, oriented tall, as one block-diagonal CSR matrix; and the row and column
    offset of each."""
    i, j, m, s = _tall(p)
    row0 = np.concatenate([[0], np.cumsum(m)])
    col0 = np.concatenate([[0], np.cumsum(s)])
    a = sp.csr_array((p.value, (row0[p.pid] + i, col0[p.pid] + j)),
                     shape=(int(row0[-1]), int(col0[-1])))
    return a, row0, col0


def _components_top(p, k, layer, dense_max, max_side):
    """Top-k values of non-negative problems, split into the connected components of their
    bipartite graphs (all in one ``components`` call on the block-diagonal union): one-row or
    one-column components give their norm, small ones go to the stacked Gram solve, the others
    to one batched Lanczos run (:func:`_lanczos_many`); the values are merged per problem, as
    :func:`~.solvers.singular_values_compact` merges its components."""
    p = p.subset(np.arange(len(p)), nonzero=True)  # a zero weight links nothing
    a, row0, col0 = _block_diagonal(p)
    _, labels = components(a)
    present, labels = np.unique(labels, return_inverse=True)
    labels = labels.ravel()
    i, j, _, _ = _tall(p)
    comp = labels[col0[p.pid] + j]  # component of each entry
    owner = np.zeros(len(present), dtype=np.int64)
    owner[comp] = p.pid
    # rows and columns numbered within their component
    rkey, ckey = row0[p.pid] + i, col0[p.pid] + j
    r_used, r_local = np.unique(comp * a.shape[0] + rkey, return_inverse=True)
    c_used, c_local = np.unique(comp * a.shape[1] + ckey, return_inverse=True)
    r_first = np.searchsorted(r_used, np.arange(len(present) + 1) * a.shape[0])
    c_first = np.searchsorted(c_used, np.arange(len(present) + 1) * a.shape[1])
    comps = _Problems(comp, r_local.ravel() - r_first[comp], c_local.ravel() - c_first[comp],
                      p.value, np.diff(r_first), np.diff(c_first), p.binary[owner])
    side = np.minimum(comps.rows, comps.cols)
    cvalues = np.zeros((len(comps), k))
    line = np.flatnonzero(side == 1)  # a one-row or one-column component: its norm
    if len(line):
        sq = np.bincount(comps.pid, weights=comps.value ** 2, minlength=len(comps))
        cvalues[line, 0] = np.sqrt(sq[line])
    rest = np.flatnonzero(side > 1)
    if len(rest):
        big = rest[side[rest] > max_side]
        small = rest[side[rest] <= max_side]
        if len(small):
            cvalues[small] = _values(comps.subset(small), k, layer, dense_max, max_side)
        if len(big):
            cvalues[big] = _lanczos_many(comps.subset(big), k, layer, dense_max)
    out = np.zeros((len(p), k))
    order = np.lexsort((-cvalues.ravel(), np.repeat(owner, k)))
    merged = cvalues.ravel()[order]
    first = np.searchsorted(np.repeat(owner, k)[order], np.arange(len(p)))
    for q in range(len(p)):
        top = merged[first[q]:first[q] + k]
        out[q, :len(top)] = top
    return out


def _lanczos_many(p, k, layer, dense_max):
    """Top-k values of connected non-negative problems by Lanczos on ``x -> A^T (A x)``, many
    at once (in chunks of at most :data:`_LANCZOS_BATCH_MEMORY` bytes of Lanczos vectors, the
    problems sorted by size)."""
    s = np.minimum(p.rows, p.cols)
    out = np.zeros((len(p), k))
    order = np.argsort(-s, kind="stable")
    start = 0
    while start < len(order):
        s_max = int(s[order[start]])
        size = max(1, _LANCZOS_BATCH_MEMORY // (8 * (min(s_max, _MAX_STEPS) + 1) * s_max))
        ids = order[start:start + size]
        out[ids] = _lanczos_chunk(p.subset(ids), k, layer, dense_max)
        start += size
    return out


def _lanczos_chunk(p, k, layer, dense_max):
    """:func:`_lanczos_many` of one chunk: one block-diagonal sparse product per step (each
    problem's columns padded to the largest ``s``), each problem with its own recurrence, full
    reorthogonalisation (twice, as stacked products) and stopping rule, as
    :func:`~.lanczos.lanczos_ritz`: every wanted Ritz value with residual ``<= 1e-13`` of itself
    (or at rounding level); the values are the singular values of ``A V`` in float64. A
    problem that breaks down or runs out of steps goes to
    :func:`~.solvers.singular_values_compact`."""
    i, j, m, s = _tall(p)
    count, s_max = len(p), int(s.max())
    row0 = np.concatenate([[0], np.cumsum(m)])
    a = sp.csr_array((p.value, (row0[p.pid] + i, p.pid * s_max + j)),
                     shape=(int(row0[-1]), count * s_max))
    a_t = a.T.tocsr()
    steps = min(s_max, _MAX_STEPS)
    limit = np.minimum(s, _MAX_STEPS)
    q = np.zeros((count, steps + 1, s_max))
    alpha = np.zeros((steps, count))
    beta = np.zeros((steps, count))
    v = np.random.default_rng(0).standard_normal((count, s_max))
    v[np.arange(s_max)[None, :] >= s[:, None]] = 0.0  # padding stays 0: A^T A maps it to 0
    q[:, 0] = v / np.linalg.norm(v, axis=1)[:, None]
    check = np.full(count, max(2 * k + 6, _FIRST_CHECK))
    last = np.zeros((count, 2))  # (step, worst residual / tolerance) at the previous check
    active = np.ones(count, dtype=bool)
    failed = np.zeros(count, dtype=bool)
    scale = np.zeros(count)
    vectors = np.zeros((count, s_max, k))
    live = np.arange(count)  # the problems still in `q` (converged ones leave it)
    for step in range(steps):
        if len(live) == count:
            x = q[:, step].reshape(-1)
        else:
            x = np.zeros((count, s_max))
            x[live] = q[:, step]
            x = x.reshape(-1)
        w = (a_t @ (a @ x)).reshape(count, s_max)[live]
        basis = q[:, : step + 1]
        c = np.matmul(basis, w[:, :, None])[:, :, 0]
        w -= np.matmul(c[:, None, :], basis)[:, 0]
        c2 = np.matmul(basis, w[:, :, None])[:, :, 0]
        w -= np.matmul(c2[:, None, :], basis)[:, 0]
        alpha[step, live] = c[:, step] + c2[:, step]
        b = np.linalg.norm(w, axis=1)
        scale[live] = np.maximum(scale[live], np.abs(alpha[step, live]) + b)
        broke = b <= 1e3 * _EPS * scale[live] * np.sqrt(s[live])
        n = step + 1
        due = active[live] & (n >= k) & (broke | (n == limit[live]) | (n >= check[live]))
        for u in np.flatnonzero(due).tolist():
            t = live[u]
            theta, y = tridiagonal_top(alpha[:n, t], beta[: n - 1, t], k)
            resid = (0.0 if broke[u] else b[u]) * np.abs(y[-1])
            floor = 1e3 * _EPS * max(theta[0], 0.0) * np.sqrt(s[t])
            bound = np.maximum(_KRYLOV_TOL * np.maximum(theta, 0.0), floor)
            if np.all(resid <= bound) or n == s[t]:
                vectors[t] = basis[u].T @ y
                active[t] = False
            elif broke[u] or n == limit[t]:  # an invariant subspace, or out of steps
                failed[t], active[t] = True, False
            else:  # next check where the residuals' rate of fall says they meet the bound
                worst = float(np.max(resid / bound))
                gap = max(4, n // 4)
                if last[t, 0] and 1.0 < worst < last[t, 1]:
                    rate = np.log(last[t, 1] / worst) / (n - last[t, 0])
                    gap = int(min(n, max(2, np.ceil(0.9 * np.log(worst) / rate))))
                last[t] = n, worst
                check[t] = n + gap
        if not active.any() or n == steps:
            break
        going = active[live]
        w[~going] = 0.0
        b[~going] = 1.0
        q[:, n] = w / b[:, None]
        beta[step, live] = np.where(going, b, 0.0)
        if 3 * np.count_nonzero(going) <= 2 * len(live):  # a third converged: drop them
            kept = np.empty((np.count_nonzero(going), steps + 1, s_max))
            kept[:, : n + 1] = q[going, : n + 1]
            q, live = kept, live[going]
    failed |= active
    av = a @ vectors.reshape(count * s_max, k)
    out = np.zeros((count, k))
    for t in range(count):
        if failed[t]:
            out[t] = singular_values_compact(p.matrix(t), k, binary=bool(p.binary[t]),
                                             layer=layer, dense_max=dense_max, nonzero=True,
                                             split=False)
        else:
            out[t] = np.linalg.svd(av[row0[t]:row0[t + 1]], compute_uv=False)[:k]
    return out


def _solve(problems, k):
    """Top-k singular values of every problem by stacked Gram eigen-solves.

    Returns ``(values, safe)``: ``values`` (P, k) in decreasing order, and ``safe`` (P,), False
    where the accuracy rule (module docstring) asks for the exact one-matrix solver instead."""
    p = problems
    count = len(p.rows)
    values = np.zeros((count, k))
    safe = np.ones(count, dtype=bool)
    if count == 0:
        return values, safe
    i, j, m, s = _tall(p)
    s_pad = np.array([_pad(v) for v in s.tolist()], dtype=np.int64)
    m_pad = np.array([_pad(v) for v in m.tolist()], dtype=np.int64)
    f32 = p.binary & (m < _F32_EXACT)
    # one stack per (float32?, padded s, padded m); the entries sorted by stack once
    keys = np.stack([f32, s_pad, m_pad], axis=1)
    uniq, stack_of = np.unique(keys, axis=0, return_inverse=True)
    stack_of = stack_of.ravel()
    slot = np.zeros(count, dtype=np.int64)
    order = np.argsort(stack_of, kind="stable")
    sizes = np.bincount(stack_of, minlength=len(uniq))
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot[order] = np.arange(count) - np.repeat(first, sizes)
    entry_stack = stack_of[p.pid]
    entry_order = np.argsort(entry_stack, kind="stable")
    entry_bounds = np.concatenate([[0], np.cumsum(np.bincount(entry_stack,
                                                              minlength=len(uniq)))])
    grams = {}  # padded s -> list of (problem ids, Gram stack in float64)
    for t, (is32, sp_, mp_) in enumerate(uniq.tolist()):
        members = order[first[t]:first[t] + sizes[t]]
        e = entry_order[entry_bounds[t]:entry_bounds[t + 1]]
        e_slot = slot[p.pid[e]]
        per = (4 if is32 else 8) * mp_ * sp_
        for lo, hi in _parts(len(members), per):  # at most _STACK_MEMORY bytes at a time
            stack = np.zeros((hi - lo, mp_, sp_), dtype=np.float32 if is32 else np.float64)
            sel = (e_slot >= lo) & (e_slot < hi) if (lo, hi) != (0, len(members)) else slice(None)
            stack[e_slot[sel] - lo, i[e][sel], j[e][sel]] = p.value[e][sel]
            grams.setdefault(sp_, []).append((members[lo:hi], _grams(stack)))
    return _eig_top(grams, s, k)


def _parts(count, per):
    """``(lo, hi)`` ranges of ``count`` stacked matrices of ``per`` bytes each, at most
    :data:`_STACK_MEMORY` bytes (and at least one matrix) per range."""
    size = max(1, _STACK_MEMORY // max(per, 1))
    return [(lo, min(lo + size, count)) for lo in range(0, count, size)]


def _grams(stack):
    """``A^T A`` of every tall matrix of a stack, in float64 (formed in the stack's dtype)."""
    return np.matmul(stack.transpose(0, 2, 1), stack).astype(np.float64, copy=False)


def _top_eigenvalues(grams, k):
    """The k largest eigenvalues (decreasing) of each symmetric matrix of a stack: one stacked
    ``eigvalsh`` for small sides, LAPACK's subset solver ``dsyevr`` without eigenvectors per
    matrix above :data:`_SUBSET_ABOVE` (0.29 against 0.45 ms at 96, 0.61 against 0.78 at 128)."""
    g, s = grams.shape[:2]
    if s > _SUBSET_ABOVE:
        out = np.empty((g, k))
        for t in range(g):  # the Gram method's own eigensolver (dsyevr, then dsyevd)
            out[t] = _eigh_top(grams[t], k, None, vectors=False)[0][::-1]
        return out
    return np.linalg.eigvalsh(grams)[:, ::-1][:, :k]


def _eig_top(grams, s, k):
    """The top-k eigenvalues per padded size (:func:`_top_eigenvalues`), then the Gram method's
    accuracy rule.

    `grams` maps a padded size to ``[(problem ids, Gram stack), ...]``, `s` is every problem's
    true smaller side. Returns ``(values, safe)`` as :func:`_solve`."""
    values = np.zeros((len(s), k))
    safe = np.ones(len(s), dtype=bool)
    for sp_, parts in grams.items():
        members = np.concatenate([ids for ids, _ in parts])
        w = _top_eigenvalues(np.concatenate([g for _, g in parts]), min(k, sp_))
        w = np.clip(w, 0.0, None)
        top = np.minimum(s[members], k)  # true values: a matrix has s of them
        true = np.arange(w.shape[1])[None, :] < top[:, None]
        w = np.where(true, w, 0.0)
        last = w[np.arange(len(members)), top - 1]
        ok = (w[:, 0] == 0.0) | (last >= _SQRT_SAFE * w[:, 0])
        values[members, :w.shape[1]] = np.sqrt(w)
        safe[members] = ok
    return values, safe


def _dense_blocks(m, x, starts, counts, want_weighted, k, layer, dense_max):
    """:func:`column_block_values` for a dense `m` (and `x`), or for blocks of a sparse one that
    fill most of their slice's rows (:func:`_full_height_pays`): the blocks' slices are copied
    straight into zero-padded stacks of equal height (the matrix's rows: zero rows change no Gram
    entry), 0/1 and weighted solved in one :func:`_eig_top`."""
    n_rows, g = m.shape[0], len(starts)
    wanted = np.flatnonzero(want_weighted)
    sources = [(m, n, True) for n in range(g)] + [(x, n, False) for n in wanted.tolist()]
    s = np.array([min(counts[n], n_rows) for _, n, _ in sources], dtype=np.int64)
    pads = np.array([_pad(v) for v in s.tolist()], dtype=np.int64)
    grams = {}
    for binary in (True, False):
        for sp_ in np.unique(pads).tolist():
            ids = [q for q, (_, _, b) in enumerate(sources) if b == binary and pads[q] == sp_]
            if not ids:
                continue
            f32 = binary and n_rows < _F32_EXACT
            height = max(n_rows, max(counts[sources[q][1]] for q in ids))
            for lo, hi in _parts(len(ids), (4 if f32 else 8) * height * sp_):
                stack = np.zeros((hi - lo, height, sp_), dtype=np.float32 if f32 else np.float64)
                for t, q in enumerate(ids[lo:hi]):
                    a, n, _ = sources[q]
                    block = a[:, starts[n]:starts[n] + counts[n]]
                    if sp.issparse(block):
                        block = block.toarray()
                    if counts[n] <= n_rows:  # tall as it is
                        stack[t, :n_rows, :counts[n]] = block
                    else:
                        stack[t, :counts[n], :n_rows] = block.T
                grams.setdefault(sp_, []).append((np.array(ids[lo:hi]), _grams(stack)))
    values, safe = _eig_top(grams, s, k)
    for q in np.flatnonzero(~safe).tolist():  # the exact one-matrix solver decides these
        a, n, binary = sources[q]
        values[q] = singular_values_compact(a[:, starts[n]:starts[n] + counts[n]], k,
                                            binary=binary, layer=layer, dense_max=dense_max)
    values = _finish(values, np.stack([np.full(len(s), n_rows),
                                       [counts[n] for _, n, _ in sources]], axis=1))
    out_w = np.zeros((g, k))
    out_w[wanted] = values[g:]
    return values[:g], out_w


def _full_height_pays(n_rows, counts, nnz, weighted):
    """Which blocks of a sparse matrix are cheaper as full-height dense slices in
    :func:`_dense_blocks` than through the per-entry bookkeeping of the sparse route (its sorts
    and renumbering cost about ``_PER_ENTRY`` seconds an entry: ImageNet VGG-16's fc2 at density
    0.1, 123 blocks of 4096 x 2-87 and 2.2M edges, 0/1 and weighted, took 0.94-0.97 s that way
    and 0.34-0.38 s as slices)."""
    s = np.array([_pad(v) for v in np.minimum(counts, n_rows).tolist()], dtype=np.float64)
    height = np.maximum(counts, n_rows).astype(np.float64)
    dense = (_BLAS_PER_MS2[True] + weighted * _BLAS_PER_MS2[False]) * height * s * s
    dense += (1 + weighted) * _PER_SLICE
    return dense < (1 + weighted) * _PER_ENTRY * np.asarray(nnz, dtype=np.float64)


def _finish(values, shapes):
    """Numerical zeros (the rank tolerance of :func:`~.solvers.singular_values_compact`) as 0."""
    tol = np.max(np.asarray(shapes, dtype=np.float64).reshape(-1, 2), axis=1)
    tol = tol[:, None] * np.finfo(np.float64).eps * values[:, :1]
    values[values <= tol] = 0.0
    return values


def singular_values_many(matrices, k=2, *, binary=None, layer=None, dense_max=DENSE_MAX,
                         max_side=BATCH_MAX_SIDE):
    """Top-k singular values of each of `matrices`, the small ones in stacked solves.

    Parameters
    ----------
    matrices : sequence of ndarray or scipy.sparse arrays
        Real matrices of any shapes (empty ones allowed).
    k : int
    binary : bool or sequence of bool, optional
        Whether each matrix is 0/1 (its Gram matrix is then formed in float32); default: checked.
    layer : str, optional
        Named in a :class:`~graphpai.errors.SolverError`.
    dense_max : int
        Passed to :func:`~.solvers.singular_values_compact` for the matrices not batched.
    max_side : int
        Matrices whose compact smaller side is above this are solved one by one.

    Returns
    -------
    ndarray, shape (len(matrices), k)
        What :func:`~.solvers.top_singular_values` returns for each matrix, row by row (equal to
        about 1e-12 relative; exactly the same where that function's Rayleigh-Ritz or dense SVD
        decides, since those matrices are handed to it).

    Examples
    --------
    >>> v = singular_values_many([np.ones((2, 3)), np.eye(3), np.zeros((2, 2))])
    >>> np.round(v ** 2, 12).tolist()
    [[6.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    """
    out = np.zeros((len(matrices), k))
    if binary is None:
        binary = [None] * len(matrices)
    elif np.ndim(binary) == 0:
        binary = [bool(binary)] * len(matrices)
    parts, rows, cols, flags, ids = [], [], [], [], []
    for n, (a, b) in enumerate(zip(matrices, binary)):
        coo = sp.coo_array(a)
        coo.sum_duplicates()
        coo.eliminate_zeros()
        data = coo.data.astype(np.float64)
        if not np.isfinite(data).all():
            raise ValueError(f"matrix {n} has nan or inf entries")
        if len(data) == 0:
            continue
        r_used, r_local = np.unique(coo.row, return_inverse=True)
        c_used, c_local = np.unique(coo.col, return_inverse=True)
        parts.append((np.full(len(data), len(ids)), r_local.ravel(), c_local.ravel(), data))
        rows.append(len(r_used))
        cols.append(len(c_used))
        flags.append(bool(np.all(data == 1)) if b is None else bool(b))
        ids.append(n)
    if ids:
        pid, r, c, v = (np.concatenate(x) for x in zip(*parts))
        problems = _Problems(pid, r, c, v, rows, cols, flags)
        values = _values(problems, k, layer, dense_max, max_side)
        out[ids] = _finish(values, np.stack([rows, cols], axis=1))
    return out


def column_block_values(m, x, x_on_m, blocks, k=2, *, layer=None, dense_max=DENSE_MAX,
                        want_weighted=None, max_side=BATCH_MAX_SIDE):
    """Top-k singular values of column blocks ``m[:, start:start + count]`` of one 0/1 matrix
    and, where asked, of the same blocks of its weighted matrix `x`, in stacked and batched
    solves (:func:`singular_values_many`'s routes; blocks of a dense `m` should be small: the
    large ones of a dense matrix are cheaper through :func:`~.solvers.singular_values_compact`
    on the dense slice).

    Parameters
    ----------
    m : ndarray (float32 0/1) or CSC array, shape (n_rows, n_cols)
    x : ndarray, CSC array or None
        The weighted matrix of the same shape (a dense `m` reads its values from it).
    x_on_m : ndarray or None
        For a CSC `m`: the weighted values on `m`'s stored entries, aligned with ``m.data``
        (kept zeros included); for a dense `m`, None (read from `x`).
    blocks : sequence of (start, count)
    want_weighted : sequence of bool, optional
        Which blocks also need their weighted values (default: all, when `x` is given).

    Returns
    -------
    (binary_values, weighted_values) : ndarrays of shape (len(blocks), k); the weighted rows of
    blocks not asked for are 0. The numbers are those of
    :func:`~.solvers.singular_values_compact` on each block (to about 1e-12 relative).
    """
    g = len(blocks)
    starts = np.array([b[0] for b in blocks], dtype=np.int64).reshape(-1)
    counts = np.array([b[1] for b in blocks], dtype=np.int64).reshape(-1)
    if want_weighted is None:
        want_weighted = np.full(g, x is not None)
    want_weighted = np.asarray(want_weighted, dtype=bool) & (x is not None)
    n_rows = m.shape[0]
    if not sp.issparse(m):
        return _dense_blocks(m, x, starts, counts, want_weighted, k, layer, dense_max)
    nnz = m.indptr[starts + counts] - m.indptr[starts]
    full = ((np.minimum(counts, n_rows) <= max_side)
            & _full_height_pays(n_rows, counts, nnz, want_weighted))
    if not full.any():
        return _sparse_blocks(m, x_on_m, starts, counts, want_weighted, k, layer, dense_max,
                              max_side)
    out_b, out_w = np.zeros((g, k)), np.zeros((g, k))
    out_b[full], out_w[full] = _dense_blocks(m, x, starts[full], counts[full],
                                             want_weighted[full], k, layer, dense_max)
    if not full.all():
        rest = ~full
        out_b[rest], out_w[rest] = _sparse_blocks(m, x_on_m, starts[rest], counts[rest],
                                                  want_weighted[rest], k, layer, dense_max,
                                                  max_side)
    return out_b, out_w


def _sparse_blocks(m, x_on_m, starts, counts, want_weighted, k, layer, dense_max, max_side):
    """:func:`column_block_values` for column blocks of a CSC `m` through the sparse route:
    every block's entries renumbered within it (only the rows it touches), then
    :func:`_values`."""
    g, n_rows = len(starts), m.shape[0]
    lo, hi = m.indptr[starts], m.indptr[starts + counts]
    lens = (hi - lo).astype(np.int64)
    total = int(lens.sum())
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    idx = np.repeat(lo.astype(np.int64) - offsets, lens) + np.arange(total)
    block = np.repeat(np.arange(g), lens)
    row = m.indices[idx].astype(np.int64)
    col = np.searchsorted(m.indptr, idx, side="right") - 1 - starts[block]
    bvalue = m.data[idx]
    wvalue = None if x_on_m is None else x_on_m[idx]
    # rows numbered within each block (only the rows it touches)
    key = block * n_rows + row
    used, local = np.unique(key, return_inverse=True)
    local = local.ravel()
    firsts = np.searchsorted(used, np.arange(g + 1) * n_rows)
    local -= firsts[block]
    rows = np.diff(firsts)
    shapes = np.stack([np.full(g, n_rows), counts], axis=1)
    wanted = np.flatnonzero(want_weighted)
    if len(wanted) and wvalue is not None:
        sel = want_weighted[block]
        remap = np.full(g, -1)
        remap[wanted] = g + np.arange(len(wanted))
        pid = np.concatenate([block, remap[block[sel]]])
        row2, col2 = np.concatenate([local, local[sel]]), np.concatenate([col, col[sel]])
        value = np.concatenate([bvalue.astype(np.float64), wvalue[sel].astype(np.float64)])
        problems = _Problems(pid, row2, col2, value, np.concatenate([rows, rows[wanted]]),
                             np.concatenate([counts, counts[wanted]]),
                             np.concatenate([np.ones(g, bool), np.zeros(len(wanted), bool)]))
        shapes = np.concatenate([shapes, shapes[wanted]])
    else:
        wanted = wanted[:0]
        problems = _Problems(block, local, col, bvalue.astype(np.float64), rows, counts, True)
    values = _finish(_values(problems, k, layer, dense_max, max_side), shapes)
    out_b = values[:g]
    out_w = np.zeros((g, k))
    out_w[wanted] = values[g:]
    return out_b, out_w
