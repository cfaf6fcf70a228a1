"""One layer's row of the spectral report: every quantity of docs/spectral.md from its matrices.

:func:`layer_row` computes a layer once: degrees, ``sigma_1, sigma_2`` of the 0/1 fan-in
biadjacency B and of the weighted ``X = |W * M|``, and the degree-group subgraphs K_d that the
[RAM] and [FS] IMDB variants share, so no singular value is computed twice. The single-layer
functions of :mod:`.ramanujan` and :mod:`.fullspectrum` and the network report of :mod:`.report`
all build on it.

References
----------
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from .._results import jsonable
from ..errors import MaskError, SolverError
from .formulas import (FS_SUBGRAPH_GATE, Spectrum, delta_r, delta_s, delta_s_undefined, get_gate,
                       narc_value)
from .batched import batchable, column_block_values
from .solvers import (DENSE_MAX, as_matrix, one_blas_thread, singular_values_compact,
                      singular_values_pair)

__all__ = ["LayerSpectrum", "layer_spectrum", "layer_row"]

_SPARSE_BELOW = 0.05  # layers sparser than this are handled as scipy.sparse, denser ones densely
_BIG_SIDE = 2048  # ... and so are layers whose smaller side is above this
_BIG_SPARSE_BELOW = 0.25  # when sparser than this
_PARALLEL_EDGES = 2 ** 21  # the K_d solved one by one run in two threads above this many edges
_BATCH_LARGE_EDGES = 2 ** 20  # a sparse layer's large K_d are batched below this many edges
# (above it the batch's per-edge bookkeeping costs more than the solves it saves: ImageNet
# VGG-16's fc1 at density 0.1, 127 K_d of 6-608 columns and 8M edges: report 15.8 -> 9.6 s)


@dataclass(frozen=True)
class LayerSpectrum:
    """Every quantity of docs/spectral.md for one layer. None means not scored; ``reasons`` says
    why.

    ``ism``/``ism_norm`` are [RAM]'s canonical-gap IMDB (the mean of Delta_s, raw and over
    ``2 sqrt(sigma_1 - 1)``, over the same scored K_d as ``imdb``), ``imax_ep``/``i_mean_ep``
    the largest and mean expansion ratio ``n_r / n_l`` of those K_d ([RAM]'s code). Sizes and
    degrees are of the 0/1 fan-in biadjacency B after isolated nodes are dropped
    (``n_in``, ``n_out`` are the unfiltered fan-in and output channels). ``weighted_*`` are of
    ``X = |W * M|``. ``coordinate`` is [FS]'s ``(Delta_r, lambda, IMDB_r, IMDB_lambda)`` with
    unscored entries as 0 and ``coordinate_norm`` its L2 norm S.
    """

    layer: str
    n_in: int
    n_out: int
    n_l: int
    n_r: int
    E: int
    d_L: float | None
    d_R: float | None
    sigma_1: float | None
    sigma_2: float | None
    delta_r: float | None
    delta_r_norm: float | None
    delta_s: float | None
    delta_s_norm: float | None
    narc: float | None
    imdb: float | None
    imdb_raw: float | None
    imdb_subgraphs: int
    ism: float | None
    ism_norm: float | None
    imax_ep: float | None
    i_mean_ep: float | None
    weighted_sigma_1: float | None
    weighted_sigma_2: float | None
    weighted_gap: float | None
    imdb_r: float | None
    imdb_lambda: float | None
    fs_subgraphs: int
    coordinate: tuple[float, float, float, float] | None
    coordinate_norm: float | None
    reasons: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return jsonable(asdict(self))


class _Sorted:
    """One layer's ``M`` (C_out x fan_in: the transpose of B) with its isolated fan-in positions
    dropped and the rest sorted by degree, so each degree group K_d is a contiguous block of
    columns; 0/1 as float32 (dense) or CSC (sparse layers), and ``|W * M|`` alike (for CSC,
    ``x_on_m`` holds its values on ``m``'s stored entries, kept zeros included)."""

    def __init__(self, mask2d, weights2d):
        self.n_out, self.n_in = mask2d.shape
        E = int(np.count_nonzero(mask2d))
        density = E / max(mask2d.size, 1)
        # big layers below a quarter density are sparse too: Lanczos on sparse products wins
        self.sparse = density < _SPARSE_BELOW or (min(mask2d.shape) > _BIG_SIDE
                                                  and density < _BIG_SPARSE_BELOW)
        self.x = self.x_on_m = None
        if self.sparse:  # from the kept entries alone: one pass over the mask
            self.row_degree = np.count_nonzero(mask2d, axis=1)
            flat = np.flatnonzero(mask2d)  # row-major: rows ascending, columns within a row
            cols = flat - np.repeat(np.arange(self.n_out, dtype=np.int64) * self.n_in,
                                    self.row_degree)
            col_degree = np.bincount(cols, minlength=self.n_in)
        else:
            col_degree = np.count_nonzero(mask2d, axis=0)
            self.row_degree = np.count_nonzero(mask2d, axis=1)
        order = np.argsort(col_degree, kind="stable")
        degrees = col_degree[order]
        first = int(np.searchsorted(degrees, 1))
        keep, self.degrees = order[first:], degrees[first:]
        self.E = int(self.degrees.sum())
        if self.sparse:
            # CSR with each column renamed to its sorted position, then scipy's O(nnz) counting
            # sort to CSC (rows stay ascending in each column): no argsort of the edges, and the
            # weights are read in memory order (ImageNet VGG-16's fc1 at 0.1: 3.0-4.4 s before,
            # 0.5-1.5 s now)
            index = np.int32 if max(mask2d.shape) < 2 ** 31 and E < 2 ** 31 else np.int64
            rank = np.empty(self.n_in, dtype=index)
            rank[order] = np.arange(self.n_in, dtype=index) - first  # isolated: no entries
            indptr = np.zeros(self.n_out + 1, dtype=index)
            np.cumsum(self.row_degree, out=indptr[1:])
            kept = np.ones(E) if weights2d is None else np.abs(weights2d.reshape(-1)[flat])
            csc = sp.csr_array((kept, rank[cols], indptr),
                               shape=(self.n_out, len(keep))).tocsc()
            self.m = sp.csc_array((np.ones(E), csc.indices, csc.indptr), shape=csc.shape)
            if weights2d is not None:  # the kept weights only, not a sorted dense copy
                self.x_on_m = csc.data
                if np.all(self.x_on_m != 0):  # no kept zero weight: x shares m's pattern
                    self.x = sp.csc_array((self.x_on_m, csc.indices, csc.indptr),
                                          shape=csc.shape)
                else:
                    self.x = sp.csc_array((self.x_on_m.copy(), csc.indices.copy(),
                                           csc.indptr.copy()), shape=csc.shape)
                    self.x.eliminate_zeros()
        else:
            mask_sorted = np.take(mask2d, keep, axis=1)
            self.m = mask_sorted.astype(np.float32)
            if weights2d is not None:
                self.x = np.abs(np.take(weights2d, keep, axis=1))
                self.x[~mask_sorted] = 0.0  # not x *= m: a pruned inf or nan is no edge either
        # degree groups: contiguous column ranges of equal degree
        values, starts, counts = np.unique(self.degrees, return_index=True, return_counts=True)
        self.groups = list(zip(values.tolist(), starts.tolist(), counts.tolist()))
        self._touched = None

    def touched(self) -> np.ndarray:
        """Number of output channels each degree group touches (n_out_d), in group order."""
        if self._touched is None:
            starts = np.array([start for _, start, _ in self.groups], dtype=np.intp)
            if not len(starts):
                self._touched = np.zeros(0, dtype=np.int64)
            elif self.sparse:
                group_of_col = np.repeat(np.arange(len(starts)),
                                         [count for _, _, count in self.groups])
                group_of_nz = np.repeat(group_of_col, np.diff(self.m.indptr))
                if len(starts) * self.n_out <= 2 ** 26:  # a flag table: no sort of every edge
                    hit = np.zeros((len(starts), self.n_out), dtype=bool)
                    hit[group_of_nz, self.m.indices] = True
                    self._touched = np.count_nonzero(hit, axis=1)
                else:
                    pairs = np.unique(group_of_nz.astype(np.int64) * self.n_out + self.m.indices)
                    self._touched = np.bincount(pairs // self.n_out, minlength=len(starts))
            else:
                per_group = np.add.reduceat(self.m, starts, axis=1)
                self._touched = np.count_nonzero(per_group, axis=0)
        return self._touched

    def weighted_degrees(self):
        """(E, n_l, n_r) of the nonzero pattern of ``|W * M|`` (a kept zero weight is no edge)."""
        x = self.x
        nnz = x.nnz if self.sparse else int(np.count_nonzero(x))
        if nnz == self.E:
            return self.E, len(self.degrees), int(np.count_nonzero(self.row_degree))
        if self.sparse:
            cols = np.count_nonzero(np.diff(x.indptr))
            rows = np.count_nonzero(np.bincount(x.indices, minlength=self.n_out))
        else:
            nz = x != 0
            cols = int(np.count_nonzero(nz.any(axis=0)))
            rows = int(np.count_nonzero(nz.any(axis=1)))
        return nnz, cols, rows


def _sv2(a, binary, name, dense_max, nnz=None):
    """sigma_1, sigma_2 of a block known to hold at least one edge (`nnz` of them if known)."""
    s1, s2 = singular_values_compact(a, 2, binary=binary, layer=name, dense_max=dense_max,
                                     nonzero=True, nnz=nnz)
    return float(s1), float(s2)


def _values(result):
    """sigma_1, sigma_2 from a :func:`singular_values_pair` entry (raising its SolverError)."""
    if isinstance(result, SolverError):
        raise result
    return float(result[0]), float(result[1])


def _group_values(lay, scored, s, w, name, dense_max):
    """(0/1, weighted) ``(sigma_1, sigma_2)`` of each scored K_d (weighted: only [FS]'s, and
    None where not needed). A K_d that is the whole layer reuses the layer's values; the others
    go together to :func:`.batched.column_block_values` (stacked Gram eigen-solves for the
    small ones, batched Lanczos for the large sparse ones), except the large K_d of a dense
    layer, and those of a sparse layer whose large K_d hold many edges, solved one by one on
    their slices (in two threads when they hold :data:`_PARALLEL_EDGES` edges or more)."""
    n_l = len(lay.degrees)
    weighted = lay.x is not None
    sigmas = [None] * len(scored)
    wsigmas = [None] * len(scored)
    batch = []
    large = sum(n_d * d for d, _, n_d, _, _, _, _ in scored
                if n_d != n_l and not batchable(min(n_d, lay.n_out)))
    batch_large = lay.sparse and large < _BATCH_LARGE_EDGES
    single = []  # (out, i, matrix, binary, edges): solved one by one on their slices
    for i, (d, start, n_d, n_out_d, _, _, fs) in enumerate(scored):
        whole = n_d == n_l  # one group holds every fan-in position: K_d is the layer
        if whole and s is not None:
            sigmas[i] = (s.sigma_1, s.sigma_2)
        if whole and w is not None and fs:
            wsigmas[i] = (w.sigma_1, w.sigma_2)
        need_w = weighted and fs and wsigmas[i] is None
        if sigmas[i] is None and (batch_large or batchable(min(n_d, lay.n_out))):
            batch.append((i, need_w))
            continue
        if sigmas[i] is None:
            single.append((sigmas, i, lay.m, True, n_d * d))
        if need_w:
            single.append((wsigmas, i, lay.x, False, None))
    if single:
        def solve(job):
            _, i, a, binary, edges = job
            start, n_d = scored[i][1:3]
            return _sv2(a[:, start:start + n_d], binary, name, dense_max, edges)

        work = sum(scored[i][0] * scored[i][2] for _, i, _, _, _ in single)
        if work >= _PARALLEL_EDGES and len(single) > 1:
            # two threads (scipy's sparse products and BLAS release the GIL, scipy's dsyevr
            # wrapper does not; BLAS on one thread each): a big layer's K_d are most of the
            # report's critical path
            with one_blas_thread(), ThreadPoolExecutor(2) as pool:
                results = list(pool.map(solve, single))
        else:
            results = [solve(job) for job in single]
        for (out, i, _, _, _), value in zip(single, results):
            out[i] = value
    if batch:
        blocks = [scored[i][1:3] for i, _ in batch]
        values, wvalues = column_block_values(lay.m, lay.x, lay.x_on_m, blocks, 2, layer=name,
                                              dense_max=dense_max,
                                              want_weighted=[need for _, need in batch])
        for (i, need), v, wv in zip(batch, values.tolist(), wvalues.tolist()):
            sigmas[i] = (v[0], v[1])
            if need:
                wsigmas[i] = (wv[0], wv[1])
    return sigmas, wsigmas


QUANTITIES = ("all", "fs")
_NOT_COMPUTED = "not computed (quantities='fs')"


def layer_row(name, mask2d, weights2d, gate, dense_max, quantities="all") -> LayerSpectrum:
    """The row of one layer from its ``(C_out, fan_in)`` mask and weights (see
    :func:`layer_spectrum`). ``quantities="fs"`` computes only what the [FS] coordinate reads
    (Delta_r, lambda, IMDB_r, IMDB_lambda and S): no [RAM]-only degree-group subgraph, no
    Delta_s or NaRC; those fields are None with the reason "not computed"."""
    if quantities not in QUANTITIES:
        raise ValueError(f"quantities={quantities!r}: use one of {QUANTITIES}")
    fs_only = quantities == "fs"
    n_out, n_in = mask2d.shape
    reasons: dict[str, str] = {}
    lay = _Sorted(mask2d, weights2d)
    E, n_l, n_r = lay.E, len(lay.degrees), int(np.count_nonzero(lay.row_degree))
    out = dict(layer=name, n_in=n_in, n_out=n_out, n_l=n_l, n_r=n_r, E=E,
               d_L=E / n_l if E else None, d_R=E / n_r if E else None)
    binary_fields = ("delta_r", "delta_r_norm", "delta_s", "delta_s_norm", "narc")
    weighted_fields = ("weighted_gap", "weighted_sigma_1", "weighted_sigma_2")

    # 0/1 and weighted whole layer in one call (shared components, two threads on big layers)
    wdeg = lay.weighted_degrees() if lay.x is not None else (0, 0, 0)
    pair = singular_values_pair(lay.m, lay.x if wdeg[0] else None, 2, layer=name,
                                dense_max=dense_max, nnz=(E, wdeg[0]),
                                solve=singular_values_compact) if E else [None, None]

    # ---- 0/1 graph of the whole layer: Delta_r, Delta_s, NaRC
    s = None
    if E == 0:
        for f in binary_fields + ("sigma_1", "sigma_2", "d_L", "d_R"):
            reasons[f] = "empty layer"
    else:
        try:
            s = Spectrum(n_l, n_r, E, E / n_l, E / n_r, *_values(pair[0]))
        except SolverError as exc:
            for f in binary_fields + ("sigma_1", "sigma_2"):
                reasons[f] = f"solver failed: {exc.reason}"
    if s is not None:
        out.update(sigma_1=s.sigma_1, sigma_2=s.sigma_2)
        failure = gate.failure(s.d_L, s.d_R)
        if failure is None and fs_only:
            out.update(delta_r=delta_r(s, False), delta_r_norm=delta_r(s, True))
            for f in ("delta_s", "delta_s_norm", "narc"):
                reasons[f] = _NOT_COMPUTED
        elif failure is None:
            out.update(delta_r=delta_r(s, False), delta_r_norm=delta_r(s, True),
                       delta_s=delta_s(s, False), delta_s_norm=delta_s(s, True),
                       narc=narc_value(s, n_in, n_out))
            for f, normalized in (("delta_s", False), ("delta_s_norm", True)):
                undefined = delta_s_undefined(s, normalized)
                if undefined:
                    reasons[f] = undefined
        else:
            for f in binary_fields:
                reasons[f] = failure

    # ---- weighted graph of the whole layer: lambda
    w = None
    if lay.x is None:
        for f in weighted_fields:
            reasons[f] = "no weights"
    else:
        wE, wl, wr = wdeg
        if wE == 0:
            for f in weighted_fields:
                reasons[f] = "empty layer"
        else:
            try:
                w = Spectrum(wl, wr, wE, wE / wl, wE / wr, *_values(pair[1]))
            except SolverError as exc:
                for f in weighted_fields:
                    reasons[f] = f"solver failed: {exc.reason}"
        if w is not None:
            out.update(weighted_sigma_1=w.sigma_1, weighted_sigma_2=w.sigma_2)
            wfail = gate.failure(w.d_L, w.d_R)
            if wfail is None:
                out["weighted_gap"] = w.sigma_1 - w.sigma_2
            else:
                reasons["weighted_gap"] = wfail

    # ---- degree-group subgraphs K_d, shared by [RAM] IMDB and [FS] IMDB_r / IMDB_lambda
    ram_raw, ram_norm, fs_r, fs_lam = [], [], [], []
    ram_s, ram_s_norm, ram_ep = [], [], []
    group_error = None
    scored = []  # (d, start, n_d, n_out_d, d_R, ram, fs): the gates decide before any solve
    for (d, start, n_d), n_out_d in zip(lay.groups, lay.touched().tolist()):
        if n_d < 2:
            continue
        d_R = n_d * d / n_out_d
        ram = not fs_only and n_d >= 3 and gate.passes(d, d_R)
        fs = FS_SUBGRAPH_GATE.passes(d, d_R)
        if ram or fs:
            scored.append((d, start, n_d, n_out_d, d_R, ram, fs))
    try:
        sigmas, wsigmas = _group_values(lay, scored, s, w, name, dense_max)
    except SolverError as exc:
        group_error = f"solver failed: {exc.reason}"
        scored = []
    for (d, start, n_d, n_out_d, d_R, ram, fs), sigma, ws in zip(scored, sigmas, wsigmas):
        k = Spectrum(n_d, n_out_d, n_d * d, float(d), d_R, *sigma)
        if ram:
            ram_raw.append(delta_r(k, False))
            ram_norm.append(delta_r(k, True))
            ram_ep.append(n_out_d / n_d)
            if delta_s_undefined(k, True) is None:  # always: sigma_1 >= sqrt(d) >= sqrt(3)
                ram_s.append(delta_s(k, False))
                ram_s_norm.append(delta_s(k, True))
        if fs:
            c_d = max(n_d, n_out_d) / (n_d + n_out_d - 1)
            fs_r.append(c_d * delta_r(k, False))
            if lay.x is not None:
                fs_lam.append(c_d * (ws[0] - ws[1]))
    ram_fields = ("imdb", "imdb_raw", "ism", "ism_norm", "imax_ep", "i_mean_ep")
    if group_error:
        for f in ram_fields + ("imdb_r", "imdb_lambda"):
            reasons[f] = group_error
        ram_raw, ram_norm, fs_r, fs_lam = [], [], [], []
    else:
        no_group = "empty layer" if E == 0 else None
        if fs_only:
            for f in ram_fields:
                reasons[f] = _NOT_COMPUTED
        elif ram_raw:
            out.update(imdb=float(np.mean(ram_norm)), imdb_raw=float(np.mean(ram_raw)),
                       imax_ep=float(max(ram_ep)), i_mean_ep=float(np.mean(ram_ep)))
            if ram_s:
                out.update(ism=float(np.mean(ram_s)), ism_norm=float(np.mean(ram_s_norm)))
        else:
            for f in ram_fields:
                reasons[f] = no_group or (
                    f"gate {gate.name}: no degree group of >= 3 fan-in positions passes")
        if fs_r:
            out["imdb_r"] = float(np.mean(fs_r))
        else:
            reasons["imdb_r"] = no_group or (
                f"gate {FS_SUBGRAPH_GATE.name}: no degree group of >= 2 fan-in positions passes")
        if lay.x is None:
            reasons["imdb_lambda"] = "no weights"
        elif fs_lam:
            out["imdb_lambda"] = float(np.mean(fs_lam))
        else:
            reasons["imdb_lambda"] = reasons["imdb_r"]
    out.update(imdb_subgraphs=len(ram_raw), fs_subgraphs=len(fs_r))

    # ---- [FS] coordinate: unscored entries count as 0 (docs/definitions.md#spectral)
    entries = ("delta_r", "weighted_gap", "imdb_r", "imdb_lambda")
    blocked = [f"{f}: {reasons[f]}" for f in entries
               if f in reasons and not reasons[f].startswith("gate")
               and reasons[f] != "empty layer"]
    if blocked:
        reasons["coordinate"] = reasons["coordinate_norm"] = "; ".join(blocked)
    else:
        v = tuple(float(out.get(f) or 0.0) for f in entries)
        out.update(coordinate=v, coordinate_norm=float(math.sqrt(sum(e * e for e in v))))

    fields = {f: None for f in LayerSpectrum.__dataclass_fields__ if f != "reasons"}
    fields.update(out)
    return LayerSpectrum(**fields, reasons=reasons)


def layer_spectrum(biadjacency, weighted=None, *, profile="iclr23", layer="layer",
                   dense_max=DENSE_MAX, quantities="all") -> LayerSpectrum:
    """Every quantity of docs/definitions.md#spectral for one layer given by its matrices: the row :func:`spectral` makes.

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        Fan-in biadjacency B; its nonzero entries are the edges.
    weighted : scipy.sparse array or ndarray, optional
        ``|W * M|`` (or W: the absolute value is taken) of the same shape; only entries where
        B has an edge count. Without it the weighted quantities are None ("no weights").
    profile : {"iclr23", "neurips23"}
        Whose gate applies (see :func:`spectral`).
    layer : str
        The name in the row and in errors.
    dense_max : int
        Passed to the solver.
    quantities : {"all", "fs"}
        ``"fs"``: only the [FS] coordinate's quantities (``delta_r``, ``weighted_gap``,
        ``imdb_r``, ``imdb_lambda``, ``coordinate``, ``coordinate_norm`` and the singular values
        they use), the same numbers as ``"all"``; the [RAM] IMDB/ISM fields, Delta_s and NaRC
        are None ("not computed"). PAGS (docs/pags.md) scores with it.

    Returns
    -------
    LayerSpectrum

    Raises
    ------
    MaskError
        If a matrix is not 2-D, real and finite, or the shapes differ.
    SolverError
        If a singular value did not converge (:func:`spectral` records it instead).

    Examples
    --------
    >>> row = layer_spectrum(np.ones((3, 4)))  # K_{3,4}: one degree group, the whole layer
    >>> row.imdb, row.imdb_subgraphs, round(row.imdb_r, 6)   # c_d = 4/6, Delta_r = 3.146264
    (1.0, 1, 2.09751)
    """
    gate = get_gate(profile)
    if quantities not in QUANTITIES:
        raise ValueError(f"quantities={quantities!r}: use one of {QUANTITIES}")
    b = as_matrix(biadjacency, "biadjacency")
    mask2d = np.ascontiguousarray(((b != 0).toarray() if sp.issparse(b) else b != 0).T)
    weights2d = None
    if weighted is not None:
        x = as_matrix(weighted, "weighted matrix")
        if x.shape != b.shape:
            raise MaskError(f"weighted matrix has shape {x.shape} but the biadjacency is "
                            f"{b.shape}; both are the same layer's fan-in view")
        weights2d = np.ascontiguousarray((x.toarray() if sp.issparse(x) else x).T,
                                         dtype=np.float64)
    row = layer_row(layer, mask2d, weights2d, gate, dense_max, quantities)
    failed = sorted({v for v in row.reasons.values() if v.startswith("solver failed: ")})
    if failed:
        raise SolverError(layer, "; ".join(v[len("solver failed: "):] for v in failed))
    return row
