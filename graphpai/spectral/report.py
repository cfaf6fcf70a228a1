"""The network-level spectral report: every SPEC §5 quantity for every layer, and their means.

:func:`spectral` computes each layer once: degrees, ``sigma_1, sigma_2`` of the 0/1 fan-in
biadjacency B and of the weighted ``X = |W * M|``, and the degree-group subgraphs K_d that the
[RAM] and [FS] IMDB variants share, so no singular value is computed twice.

References
----------
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
import scipy.sparse as sp

from .._results import jsonable
from ..errors import GraphpaiError, MaskError, SolverError
from ..graph import NetGraph, as_graph
from ..masks import MaskSet
from .ramanujan import (FS_SUBGRAPH_GATE, GATES, Spectrum, _delta_r, _delta_s,
                        _delta_s_undefined, _narc, get_gate)
from .solvers import DENSE_MAX, as_matrix, one_blas_thread, singular_values_compact

__all__ = ["LayerSpectrum", "Aggregate", "SpectralReport", "spectral", "layer_spectrum",
           "MEAN_FIELDS"]

_SPARSE_BELOW = 0.05  # layers sparser than this are handled as scipy.sparse, denser ones densely

MEAN_FIELDS = ("delta_r", "delta_r_norm", "delta_s", "delta_s_norm", "narc", "imdb", "imdb_raw",
               "weighted_gap", "imdb_r", "imdb_lambda", "coordinate_norm")
"""Per-layer fields averaged over scored layers in `SpectralReport.means`."""


@dataclass(frozen=True)
class LayerSpectrum:
    """Every SPEC §5 quantity of one layer. None means not scored; ``reasons`` says why.

    Sizes and degrees are of the 0/1 fan-in biadjacency B after isolated nodes are dropped
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


@dataclass(frozen=True)
class Aggregate:
    """A network mean over the layers where a quantity is scored, with how many were."""

    mean: float | None
    scored: int
    layers: int

    @property
    def scored_fraction(self) -> float:
        return self.scored / self.layers if self.layers else 0.0

    def to_dict(self) -> dict:
        return jsonable({"mean": self.mean, "scored": self.scored, "layers": self.layers,
                         "scored_fraction": self.scored_fraction})


@dataclass(frozen=True)
class SpectralReport:
    """Result of :func:`spectral`: the per-layer table, network means and which gates applied.

    ``gates`` maps each quantity to the rule that decided whether it was scored. ``means`` maps
    each name of `MEAN_FIELDS` to an `Aggregate`; ``means["coordinate_norm"]`` is [FS]'s network
    score. ``positive_gap_share`` is the share of layers with a scored Delta_r that have
    Delta_r > 0 (None if none is scored). ``weights`` says where the weights came from
    ("model", "init", "given" or None).
    """

    profile: str
    weights: str | None
    gates: dict
    layers: tuple[LayerSpectrum, ...]
    means: dict
    positive_gap_share: Aggregate

    def layer(self, name: str) -> LayerSpectrum:
        for row in self.layers:
            if row.layer == name:
                return row
        raise KeyError(f"no layer {name!r} in this report; layers are "
                       f"{[r.layer for r in self.layers]}")

    def rows(self) -> list[dict]:
        """The per-layer table as a list of dicts (one per layer)."""
        return [row.to_dict() for row in self.layers]

    def to_dict(self) -> dict:
        return jsonable({
            "profile": self.profile, "weights": self.weights, "gates": dict(self.gates),
            "layers": self.rows(),
            "means": {k: v.to_dict() for k, v in self.means.items()},
            "positive_gap_share": self.positive_gap_share.to_dict(),
        })

    def __repr__(self) -> str:
        from ..report.notebook import spectral_repr
        return spectral_repr(self)

    def _repr_html_(self) -> str:
        from ..report.notebook import spectral_html
        return spectral_html(self)

    def to_text(self) -> str:
        """A readable per-layer table with the network means below it."""
        from ..report.tables import format_table

        columns = ["layer", "n_in", "n_out", "E", "d_L", "d_R", "sigma_1", "sigma_2",
                   "delta_r_norm", "delta_s_norm", "narc", "imdb", "weighted_gap", "imdb_r",
                   "imdb_lambda", "coordinate_norm"]
        rows = [{c: getattr(r, c) for c in columns} for r in self.layers]
        means = [{"quantity": k, "mean": v.mean, "scored": f"{v.scored}/{v.layers}"}
                 for k, v in self.means.items()]
        share = self.positive_gap_share
        rules: dict[str, list[str]] = {}
        for quantity, rule in self.gates.items():
            rules.setdefault(rule, []).append(quantity)
        lines = [f"spectral report, profile {self.profile}, weights {self.weights or 'none'}",
                 "", format_table(rows, columns), "", "network means over scored layers:",
                 format_table(means),
                 "", f"share of scored layers with Delta_r > 0: "
                     f"{'-' if share.mean is None else format(share.mean, '.4g')} "
                     f"({share.scored}/{share.layers} scored)", "", "gates:"]
        lines += [f"  {', '.join(qs)}: {rule}" for rule, qs in rules.items()]
        notes = sorted({f"{r.layer}: {k}: {v}" for r in self.layers for k, v in r.reasons.items()
                        if not v.startswith("gate")})
        if notes:
            lines += ["", "not scored:"] + [f"  {n}" for n in notes]
        return "\n".join(lines)


def gate_table(profile: str) -> dict:
    """Quantity -> the rule that gates it under `profile` (recorded in every report)."""
    rule = GATES[profile]
    layer_rule = f"{rule.name}: {rule.rule} on the layer"
    fs_rule = (f"{FS_SUBGRAPH_GATE.rule} on each K_d (groups of >= 2 fan-in positions of degree "
               "d > 0); mean over scored K_d")
    return {
        "delta_r": layer_rule, "delta_r_norm": layer_rule, "delta_s": layer_rule,
        "delta_s_norm": layer_rule, "narc": layer_rule,
        "imdb": f"{rule.name}: {rule.rule} on each K_d (groups of >= 3 fan-in positions of degree "
                "d > 0); mean over scored K_d",
        "imdb_raw": "as imdb",
        "weighted_gap": f"{rule.name}: {rule.rule} on the nonzero pattern of |W * M|",
        "imdb_r": fs_rule, "imdb_lambda": fs_rule,
        "coordinate_norm": "every layer with weights; entries not scored by their own gate "
                           "count as 0",
    }


# ----------------------------------------------------------------------------- one layer
class _Sorted:
    """One layer's ``M`` (C_out x fan_in: the transpose of B) with its isolated fan-in positions
    dropped and the rest sorted by degree, so each degree group K_d is a contiguous block of
    columns; 0/1 as float32 (dense) or CSC (sparse layers), and ``|W * M|`` alike."""

    def __init__(self, mask2d, weights2d):
        self.n_out, self.n_in = mask2d.shape
        col_degree = np.count_nonzero(mask2d, axis=0)
        self.row_degree = np.count_nonzero(mask2d, axis=1)
        order = np.argsort(col_degree, kind="stable")
        degrees = col_degree[order]
        first = int(np.searchsorted(degrees, 1))
        keep, self.degrees = order[first:], degrees[first:]
        self.E = int(self.degrees.sum())
        self.sparse = self.E < _SPARSE_BELOW * mask2d.size
        mask_sorted = np.take(mask2d, keep, axis=1)
        self.x = None
        if self.sparse:
            self.m = sp.csc_array(mask_sorted, dtype=np.float64)
            if weights2d is not None:  # gather the kept weights only, not a sorted dense copy
                self.x = _weighted_csc(self.m, weights2d, keep)
        else:
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


def _weighted_csc(m, w, keep):
    """``|w[:, keep]|`` on the pattern of the 0/1 CSC `m`, as CSC without explicit zeros."""
    rows = m.indices
    cols = np.repeat(keep, np.diff(m.indptr))
    x = sp.csc_array((np.abs(w[rows, cols]), rows.copy(), m.indptr.copy()), shape=m.shape)
    x.eliminate_zeros()
    return x


def _sv2(a, binary, name, dense_max):
    """sigma_1, sigma_2 of a block known to hold at least one edge."""
    s1, s2 = singular_values_compact(a, 2, binary=binary, layer=name, dense_max=dense_max,
                                     nonzero=True)
    return float(s1), float(s2)


def _layer(name, mask2d, weights2d, gate, dense_max) -> LayerSpectrum:
    n_out, n_in = mask2d.shape
    reasons: dict[str, str] = {}
    lay = _Sorted(mask2d, weights2d)
    E, n_l, n_r = lay.E, len(lay.degrees), int(np.count_nonzero(lay.row_degree))
    out = dict(layer=name, n_in=n_in, n_out=n_out, n_l=n_l, n_r=n_r, E=E,
               d_L=E / n_l if E else None, d_R=E / n_r if E else None)
    binary_fields = ("delta_r", "delta_r_norm", "delta_s", "delta_s_norm", "narc")
    weighted_fields = ("weighted_gap", "weighted_sigma_1", "weighted_sigma_2")

    # ---- 0/1 graph of the whole layer: Delta_r, Delta_s, NaRC
    s = None
    if E == 0:
        for f in binary_fields + ("sigma_1", "sigma_2", "d_L", "d_R"):
            reasons[f] = "empty layer"
    else:
        try:
            s = Spectrum(n_l, n_r, E, E / n_l, E / n_r, *_sv2(lay.m, True, name, dense_max))
        except SolverError as exc:
            for f in binary_fields + ("sigma_1", "sigma_2"):
                reasons[f] = f"solver failed: {exc.reason}"
    if s is not None:
        out.update(sigma_1=s.sigma_1, sigma_2=s.sigma_2)
        failure = gate.failure(s.d_L, s.d_R)
        if failure is None:
            out.update(delta_r=_delta_r(s, False), delta_r_norm=_delta_r(s, True),
                       delta_s=_delta_s(s, False), delta_s_norm=_delta_s(s, True),
                       narc=_narc(s, n_in, n_out))
            for f, normalized in (("delta_s", False), ("delta_s_norm", True)):
                undefined = _delta_s_undefined(s, normalized)
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
        wE, wl, wr = lay.weighted_degrees()
        if wE == 0:
            for f in weighted_fields:
                reasons[f] = "empty layer"
        else:
            try:
                w = Spectrum(wl, wr, wE, wE / wl, wE / wr, *_sv2(lay.x, False, name, dense_max))
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
    group_error = None
    touched = lay.touched()
    for (d, start, n_d), n_out_d in zip(lay.groups, touched.tolist()):
        if n_d < 2:
            continue
        d_R = n_d * d / n_out_d
        ram = n_d >= 3 and gate.passes(d, d_R)
        fs = FS_SUBGRAPH_GATE.passes(d, d_R)
        if not (ram or fs):
            continue
        whole = n_d == n_l  # one group holds every fan-in position: K_d is the layer
        try:
            if whole and s is not None:
                sigma = (s.sigma_1, s.sigma_2)
            else:
                sigma = _sv2(lay.m[:, start:start + n_d], True, name, dense_max)
            k = Spectrum(n_d, n_out_d, n_d * d, float(d), d_R, *sigma)
            if ram:
                ram_raw.append(_delta_r(k, False))
                ram_norm.append(_delta_r(k, True))
            if fs:
                c_d = max(n_d, n_out_d) / (n_d + n_out_d - 1)
                fs_r.append(c_d * _delta_r(k, False))
                if lay.x is not None:
                    if whole and w is not None:
                        ws = (w.sigma_1, w.sigma_2)
                    else:
                        ws = _sv2(lay.x[:, start:start + n_d], False, name, dense_max)
                    fs_lam.append(c_d * (ws[0] - ws[1]))
        except SolverError as exc:
            group_error = f"solver failed: {exc.reason}"
            break
    if group_error:
        for f in ("imdb", "imdb_raw", "imdb_r", "imdb_lambda"):
            reasons[f] = group_error
        ram_raw, ram_norm, fs_r, fs_lam = [], [], [], []
    else:
        no_group = "empty layer" if E == 0 else None
        if ram_raw:
            out.update(imdb=float(np.mean(ram_norm)), imdb_raw=float(np.mean(ram_raw)))
        else:
            reasons["imdb"] = reasons["imdb_raw"] = no_group or (
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

    # ---- [FS] coordinate: unscored entries count as 0 (SPEC §5)
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
                   dense_max=DENSE_MAX) -> LayerSpectrum:
    """Every SPEC §5 quantity of one layer given by its matrices: the row :func:`spectral` makes.

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
    row = _layer(layer, mask2d, weights2d, gate, dense_max)
    failed = sorted({v for v in row.reasons.values() if v.startswith("solver failed: ")})
    if failed:
        raise SolverError(layer, "; ".join(v[len("solver failed: "):] for v in failed))
    return row


# ----------------------------------------------------------------------------- the network
def _mean(values):
    scored = [v for v in values if v is not None]
    return Aggregate(float(np.mean(scored)) if scored else None, len(scored), len(values))


def _resolve_weights(net, graph, weights, seed):
    """(layer -> ndarray or None, source label)."""
    is_model = not isinstance(net, NetGraph)
    if weights is None:
        if not is_model:
            return None, None
        from ..torch.extract import layer_weights

        return layer_weights(net), "model"
    if isinstance(weights, str):
        if weights != "init":
            raise GraphpaiError(f"weights={weights!r} is not understood; pass None (the model's "
                                "current weights), 'init', or a mapping layer -> array")
        if not is_model:
            raise GraphpaiError("weights='init' needs a torch model to re-initialise; a NetGraph "
                                "has no weights (pass a mapping layer -> array instead)")
        return _init_weights(net, seed), "init"
    if not isinstance(weights, Mapping):
        raise GraphpaiError(f"weights must be None, 'init' or a mapping layer -> array, not "
                            f"{type(weights).__name__}")
    out = {}
    for name in graph.layers:
        if name not in weights:
            raise MaskError(f"no weights for layer {name!r}; give every prunable layer its "
                            "weights")
        w = weights[name]
        if hasattr(w, "detach"):
            w = w.detach().cpu().double().numpy()
        try:
            out[name] = np.asarray(w, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MaskError(f"weights for {name!r} are not an array of numbers ({exc})") from None
    return out, "given"


def _init_weights(model, seed):
    """Fresh weights for a copy of `model`: the zoo's ``init_weights`` for zoo models, else each
    conv/linear module's own ``reset_parameters``; `model` itself is untouched. torch prune
    hooks on the copy are removed first, so the new weights are drawn in full."""
    import contextlib

    import torch

    from ..torch import models
    from ..torch.extract import layer_weights, prunable_modules
    from ..torch.masks import masked_copy

    clone = masked_copy(model)  # re-initialised below: the user's model stays as it is
    zoo = (models.VGG, models.CifarResNet, models.ResNet, models.LeNet5, models.MLP)
    rng = contextlib.nullcontext() if seed is None else torch.random.fork_rng(devices=[])
    with rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed.integers(2 ** 63 - 1)) if isinstance(
                seed, np.random.Generator) else int(seed))
        if isinstance(clone, zoo):
            models.init_weights(clone)
        else:
            for module in prunable_modules(clone).values():
                module.reset_parameters()
    return layer_weights(clone)


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def spectral(net, masks=None, weights=None, *, profile="iclr23", seed=None, input_shape=None,
             dense_max=DENSE_MAX, workers=None) -> SpectralReport:
    r"""Every spectral quantity of SPEC §5 for every layer of a (masked) network.

    Per layer, on the fan-in view (SPEC §2): sizes and mean degrees; ``sigma_1, sigma_2``;
    the Ramanujan gap Delta_r and canonical gap Delta_s, raw and normalised, and NaRC ([RAM]);
    IMDB (normalised, raw, number of subgraphs; [RAM]); the weighted gap
    ``lambda = sigma_1 - sigma_2`` of ``|W * M|``, IMDB_r and IMDB_lambda, and the full-spectrum
    coordinate with its L2 norm ([FS]). Network means are over the layers where each quantity is
    scored, with the count beside it.

    Which gate applies to what (recorded in ``report.gates``):

    - The profile's gate (``"iclr23"``: d_L >= 3 and d_R >= 3; ``"neurips23"``: d_R >= 3 and
      d_L > 1, i.e. [FS]'s mean output-channel degree >= 3 and mean fan-in degree > 1) applies
      to every whole-layer quantity (Delta_r, Delta_s, NaRC, lambda) and to each [RAM] IMDB
      subgraph. ``profile="iclr23"`` reproduces [RAM]'s numbers and ``profile="neurips23"``
      [FS]'s coordinate.
    - IMDB_r and IMDB_lambda always use [FS]'s subgraph rule (groups of >= 2, d >= 3 and mean
      output degree in K_d > 1), whatever the profile.
    - The coordinate takes its entries as gated above, with unscored entries as 0 (SPEC §5);
      it is None only when weights are missing or a solver failed.

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
        The network (a model is traced with :func:`graphpai.as_graph`).
    masks : MaskSet or mapping of layer name -> bool array, optional
        The masks; None means dense (prune buffers on a model are not read: pass
        ``graphpai.torch.masks.masks_from_model(model)`` for those).
    weights : None, "init" or mapping of layer name -> array
        None: a model's current weights (``weight_orig`` under torch prune), and no weighted
        quantities for a NetGraph (reason "no weights"). ``"init"``: fresh weights on a deep
        copy of the model: the zoo's ``init_weights`` (Kaiming normal, SPEC §8) for zoo models,
        each conv/linear module's ``reset_parameters`` otherwise. A mapping gives the weights.
    profile : {"iclr23", "neurips23"}
        Which gate applies (see above).
    seed : int or numpy.random.Generator, optional
        Seeds ``weights="init"`` (the global torch random state is left as it was); None draws
        from the global torch random state.
    input_shape : tuple of int, optional
        (C, H, W) to trace a model that does not carry ``input_shape``.
    dense_max : int
        Largest smaller side solved by the dense Gram eigensolver; above it, seeded ARPACK.
    workers : int, optional
        Threads that compute layers concurrently (default: the CPUs available, at most 4); the
        result does not depend on it. BLAS runs on one thread meanwhile
        (:func:`~graphpai.spectral.solvers.one_blas_thread`).

    Returns
    -------
    SpectralReport
        ``layers`` (one `LayerSpectrum` per layer, None = not scored, reason in
        ``reasons``), ``means`` (`Aggregate` per quantity), ``positive_gap_share`` and
        ``gates``.

    Raises
    ------
    MaskError
        If a mask or weight array does not fit its layer.
    UnknownMethodError
        If `profile` is unknown.

    References
    ----------
    .. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization
       through the Lens of Ramanujan Graph", ICLR 2023.
    .. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask
       topology is a secret weapon", NeurIPS 2023.

    Examples
    --------
    A one-layer network with a dense 3x3 conv from 4 to 8 channels: B is K_{36,8}.

    >>> from graphpai import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 4, (8, 8)), Group("y", 8, (8, 8))],
    ...              [Layer("conv", "conv", (8, 4, 3, 3), "x", "y")], [], ["x"], ["y"])
    >>> row = spectral(g).layer("conv")
    >>> round(row.sigma_1 ** 2, 6), row.sigma_2, row.delta_r_norm
    (288.0, 0.0, 1.0)
    """
    gate = get_gate(profile)
    graph = as_graph(net, input_shape)
    if masks is not None:
        masks = (masks if isinstance(masks, MaskSet) else MaskSet(masks)).validate(graph)
    weight_map, source = _resolve_weights(net, graph, weights, seed)
    jobs = []
    for name, layer in graph.layers.items():
        if masks is None:
            mask = np.ones((layer.out_channels, layer.fan_in), dtype=bool)
        else:
            mask = masks[name].reshape(layer.out_channels, -1)
        w2d = None
        if weight_map is not None:
            w = weight_map[name]
            if w.shape != tuple(layer.weight_shape):
                raise MaskError(f"weights for {name!r} have shape {w.shape} but the layer is "
                                f"{tuple(layer.weight_shape)}")
            w2d = w.reshape(layer.out_channels, -1)
            if not np.isfinite(w2d.sum()):  # a cheap screen; only kept weights count
                bad = int(np.count_nonzero(~np.isfinite(w2d[mask])))
                if bad:
                    raise MaskError(f"weights for {name!r} have {bad} nan or inf kept entries; "
                                    "pass finite weights (or prune those entries)")
        jobs.append((name, mask, w2d))
    workers = _default_workers() if workers is None else int(workers)
    with one_blas_thread():  # parallel over layers instead: LAPACK and BLAS release the GIL
        if workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
                layers = list(pool.map(lambda job: _layer(*job, gate, dense_max), jobs))
        else:
            layers = [_layer(*job, gate, dense_max) for job in jobs]
    means = {f: _mean([getattr(r, f) for r in layers]) for f in MEAN_FIELDS}
    scored = [r.delta_r for r in layers if r.delta_r is not None]
    share = Aggregate(float(np.mean([v > 0 for v in scored])) if scored else None, len(scored),
                      len(layers))
    return SpectralReport(profile, source, gate_table(profile), tuple(layers), means, share)
