"""The network-level spectral report: every quantity of docs/definitions.md#spectral for every layer, and their means.

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

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .._memory import human, require
from .._progress import bar
from .._results import jsonable
from ..errors import GraphpaiError, MaskError
from ..graph import NetGraph, as_graph
from ..masks import MaskSet
from .formulas import FS_SUBGRAPH_GATE, GATES, get_gate
from .layer import LayerSpectrum, layer_row, layer_spectrum
from .pairs import LayerPair, channel_overlap, pair_scores
from .solvers import DENSE_MAX, one_blas_thread

__all__ = ["LayerSpectrum", "Aggregate", "SpectralReport", "spectral", "layer_spectrum",
           "MEAN_FIELDS", "SUMMARY_MEANS"]

MEAN_FIELDS = ("delta_r", "delta_r_norm", "delta_s", "delta_s_norm", "narc", "imdb", "imdb_raw",
               "ism", "ism_norm", "imax_ep", "i_mean_ep", "weighted_gap", "imdb_r", "imdb_lambda",
               "coordinate_norm")
"""Per-layer fields averaged over scored layers in `SpectralReport.means`."""

SUMMARY_MEANS = ("delta_r_norm", "delta_s_norm", "imdb", "narc", "weighted_gap", "imdb_r",
                 "coordinate_norm")
"""The network means a study row and a tracked training run record per profile (columns
``{profile}_{name}``)."""


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

    ``masks_source`` says where the masks came from ("given", "dense", "model: ..."). ``pairs``
    holds [RAM]'s layer-pair scores (:mod:`.pairs`) and ``channel_overlap`` each
    layer's channel overlap coefficient. ``gates`` maps each quantity to the rule that decided whether it was scored. ``means`` maps
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
    pairs: tuple[LayerPair, ...] = ()
    channel_overlap: dict = field(default_factory=dict)
    masks_source: str | None = None

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
            "pairs": [p.to_dict() for p in self.pairs],
            "channel_overlap": dict(self.channel_overlap), "masks_source": self.masks_source,
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
        lines = [f"spectral report, profile {self.profile}, weights {self.weights or 'none'}"
                 + (f", masks {self.masks_source}" if self.masks_source else ""),
                 self.scored_sentence(), "", format_table(rows, columns), "",
                 "network means over scored layers:",
                 format_table(means),
                 "", f"share of scored layers with Delta_r > 0: "
                     f"{'-' if share.mean is None else format(share.mean, '.4g')} "
                     f"({share.scored}/{share.layers} scored)", "", "gates:"]
        lines += [f"  {', '.join(qs)}: {rule}" for rule, qs in rules.items()]
        if self.pairs:
            lines += ["", "layer pairs ([RAM] code's scores; docs/spectral.md#layer-pairs):",
                      format_table([p.to_dict() for p in self.pairs],
                                   ["producer", "consumer", "copeland", "compatibility"])]
        causes = self.reasons_by_cause()
        if causes:
            lines += ["", "not scored, by cause:"]
            for cause, (fields, layers) in causes.items():
                shown = ", ".join(layers[:6]) + (f", ... ({len(layers)} layers)"
                                                 if len(layers) > 6 else "")
                lines.append(f"  {cause}: {', '.join(fields)} in {shown}")
        return "\n".join(lines)

    def scored_sentence(self) -> str:
        """One sentence on how many layers have a scored Delta_r, and why the others have none
        when one gate explains it, e.g. ``"0 of 22 layers scored: no layer passes the iclr23
        gate d_L >= 3 and d_R >= 3 at this density."`` ([RAM]'s gate, docs/spectral.md)."""
        n = len(self.layers)
        scored = sum(r.delta_r is not None for r in self.layers)
        head = f"{scored} of {n} layer{'s' if n != 1 else ''} scored"
        if scored == n:
            return head + "."
        unscored = [r.reasons.get("delta_r", "") for r in self.layers if r.delta_r is None]
        gate = GATES[self.profile]
        if all(reason.startswith(f"gate {gate.name}:") for reason in unscored):
            if scored == 0:
                return (f"{head}: no layer passes the {gate.name} gate {gate.rule} at this "
                        "density.")
            return f"{head}: the other {n - scored} fail the {gate.name} gate {gate.rule}."
        return head + " (reasons below)."

    def reasons_by_cause(self) -> dict:
        """Why quantities are not scored, grouped: ``{cause: (fields, layers)}``.

        A cause is a reason with its numbers taken out (``"gate iclr23: d_L = 2.5 < 3"`` and
        ``"... d_L = 1.2 < 3"`` are one cause, ``"gate iclr23: d_L < 3"``); fields and layers are
        in report order. Causes are ordered by how many layers they touch, most first.
        """
        groups: dict[str, tuple[dict, dict]] = {}
        for row in self.layers:
            for f, reason in row.reasons.items():
                cause = _cause(reason)
                fields, layers = groups.setdefault(cause, ({}, {}))
                fields[f] = None
                layers[row.layer] = None
        ordered = sorted(groups.items(), key=lambda kv: -len(kv[1][1]))
        return {cause: (list(fields), list(layers)) for cause, (fields, layers) in ordered}


_NUMBER = re.compile(r"(\b[A-Za-z_]\w*) = [-+0-9.eE]+(?:\w*)? (<=|<|>=|>)")


def _cause(reason: str) -> str:
    """`reason` without the layer's own numbers: ``"d_L = 2.308 < 3"`` -> ``"d_L < 3"``."""
    return _NUMBER.sub(r"\1 \2", reason)


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
        "imdb_raw": "as imdb", "ism": "as imdb", "ism_norm": "as imdb", "imax_ep": "as imdb",
        "i_mean_ep": "as imdb",
        "weighted_gap": f"{rule.name}: {rule.rule} on the nonzero pattern of |W * M|",
        "imdb_r": fs_rule, "imdb_lambda": fs_rule,
        "coordinate_norm": "every layer with weights; entries not scored by their own gate "
                           "count as 0",
    }


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


_POOL_MIN_KEPT = 2 ** 19  # the default pool of layer workers needs this many kept weights: below
# it every layer is a few ms of Python-bound work and the threads contend for the GIL (2 cores:
# CIFAR VGG-16 at density 0.01, 147k kept, 0.58 s one layer at a time, 0.72 s in the pool;
# ImageNet ResNet-50 at 0.01, 255k, 1.21 against 1.45 s; at 0.05, 736k, 1.37 against 1.02 s)


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


# bytes one layer's row allocates at its peak (tracemalloc around layer_row, after the batched
# degree groups of graphpai/spectral/batched.py, on 256 x 2304 to 8000 x 2048 layers at densities
# 0.02-1; 5-25% above the largest measured): a dense layer's sorted float32 copy, its CSR, the
# float64 products and the stacked degree-group Grams (capped in size) per weight, about the same
# at any density; a sparse layer's sorted mask per weight, its CSR/CSC copies and subgraphs per
# kept weight; the weighted |W * M| and its solves on top (with weights); the Gram matrix of the
# smaller side s when s <= dense_max
_DENSE_PER_WEIGHT, _DENSE_WEIGHTED = 38, 20
_SPARSE_PER_WEIGHT, _SPARSE_PER_EDGE, _SPARSE_WEIGHTED = 2, 185, 220
_GRAM_PER_ENTRY = 8


def _row_need(layer, mask, weighted: bool, dense_max: int, kept: int | None = None) -> int:
    """Bytes :func:`layer_row` allocates for `layer` (see the constants above); `kept`, the
    mask's kept weights if already counted."""
    from .layer import _BIG_SIDE, _BIG_SPARSE_BELOW, _SPARSE_BELOW

    n = layer.numel
    if kept is None:
        kept = n if mask is None else int(np.count_nonzero(mask))
    side = min(layer.out_channels, layer.fan_in)
    density = kept / max(n, 1)
    if density < _SPARSE_BELOW or (side > _BIG_SIDE and density < _BIG_SPARSE_BELOW):
        need = _SPARSE_PER_WEIGHT * n + (_SPARSE_PER_EDGE + weighted * _SPARSE_WEIGHTED) * kept
    else:
        need = (_DENSE_PER_WEIGHT + weighted * _DENSE_WEIGHTED) * n
    return need + (_GRAM_PER_ENTRY * side * side if side <= dense_max else 0)


def _check_memory(net, graph, masks, weights, workers: int, dense_max: int, kept=None) -> None:
    """One error before anything is allocated when the report cannot fit: the float64 weights
    and all-ones masks it holds for every layer, plus the rows of the `workers` largest layers
    computed at the same time (`kept`: layer -> kept weights, if already counted)."""
    n = graph.num_weights
    held, parts = 0, []
    if masks is None:
        held += n
        parts.append("all-ones masks")
    if (weights is None and not isinstance(net, NetGraph)) or isinstance(weights, str):
        held += (12 if isinstance(weights, str) else 8) * n  # float64 copies (+ the init model)
        parts.append("float64 weights")
    elif isinstance(weights, Mapping):
        copies = sum(layer.numel for name, layer in graph.layers.items()
                     if not (isinstance(weights.get(name), np.ndarray)
                             and weights[name].dtype == np.float64))
        if copies:
            held += 8 * copies
            parts.append("float64 weights")
    weighted = weights is not None or not isinstance(net, NetGraph)
    needs = sorted(((_row_need(layer, None if masks is None else masks[name], weighted,
                               dense_max, None if kept is None else kept[name]), name)
                    for name, layer in graph.layers.items()), reverse=True)
    if not needs:
        return
    at_once = sum(need for need, _ in needs[:max(1, workers)])
    big, name = needs[0]
    layer = graph.layers[name]
    fixes = ["free memory"]
    if workers > 1:
        fixes.append("workers=1 (one layer at a time)")
    side = min(layer.out_channels, layer.fan_in)
    if side <= dense_max and _GRAM_PER_ENTRY * side * side > big / 4:
        fixes.append(f"a smaller dense_max (now {dense_max}; its Gram matrix)")
    if "float64 weights" in parts:
        fixes.append("weights you hold as float64 arrays (or none: a NetGraph)")
    require(held + at_once,
            f"the spectral report (layer {name!r} {tuple(layer.weight_shape)} alone "
            f"{human(big)}, {min(workers, len(needs))} layer(s) at a time"
            + (f", plus {human(held)} of {' and '.join(parts)} for {n:,} weights"
               if held else "") + ")",
            ("use " + ", ".join(fixes[1:]) + " or " + fixes[0]) if len(fixes) > 1 else fixes[0])


def spectral(net, masks=None, weights=None, *, profile="iclr23", seed=None, input_shape=None,
             dense_max=DENSE_MAX, workers=None, progress=False) -> SpectralReport:
    r"""Every spectral quantity (docs/definitions.md#spectral) for every layer of a (masked) network.

    Per layer, on the fan-in view (docs/definitions.md#fan-in-view): sizes and mean degrees; ``sigma_1, sigma_2``;
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
    - The coordinate takes its entries as gated above, with unscored entries as 0 (docs/definitions.md#spectral);
      it is None only when weights are missing or a solver failed.

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
        The network (a model is traced with :func:`graphpai.as_graph`).
    masks : MaskSet or mapping of layer name -> bool array, optional
        The masks. None: a torch model's own masks if it carries any (``torch.nn.utils.prune``
        buffers, ``torch.ao.pruning`` parametrizations; :func:`graphpai.torch.masks.model_masks`),
        else dense; ``report.masks_source`` says which ("given", "dense" or "model: ...").
    weights : None, "init" or mapping of layer name -> array
        None: a model's current weights (``weight_orig`` under torch prune), and no weighted
        quantities for a NetGraph (reason "no weights"). ``"init"``: fresh weights on a deep
        copy of the model: the zoo's ``init_weights`` (Kaiming normal, docs/definitions.md#training) for zoo models,
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
        Threads that compute layers concurrently (default: the CPUs available, at most 4, or one
        when the network keeps fewer than 2^19 weights, where threads do not pay); the result
        does not depend on it. BLAS runs on one thread meanwhile
        (:func:`~graphpai.spectral.solvers.one_blas_thread`).
    progress : bool
        A progress bar over the layers on stderr (shown only when stderr is a terminal).

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
    masks_source = "given"
    if masks is None:  # dense, unless a torch model carries its own masks (torch prune, ao)
        masks_source = "dense"
        if not isinstance(net, NetGraph):
            from ..torch.masks import model_masks

            found, described = model_masks(net, graph)
            if found is not None:
                masks, masks_source = found, f"model: {described}"
    if masks is not None:
        masks = (masks if isinstance(masks, MaskSet) else MaskSet(masks)).validate(graph)
    kept = {name: layer.numel if masks is None else int(np.count_nonzero(masks[name]))
            for name, layer in graph.layers.items()}  # the pool policy and its order
    if workers is None:
        workers = _default_workers() if sum(kept.values()) >= _POOL_MIN_KEPT else 1
    workers = int(workers)
    _check_memory(net, graph, masks, weights, workers, dense_max, kept)
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
    with one_blas_thread(), bar(None, progress, total=len(jobs), desc="spectral",
                                unit="layer") as shown:
        def row(job):  # parallel over layers: BLAS and sparse products release the GIL
            # (scipy's dsyevr wrapper and numpy's eigvalsh do not: benchmarks/README.md)
            out = layer_row(*job, gate, dense_max)
            shown.update(1)
            return out

        if workers > 1 and len(jobs) > 1:
            # the most kept weights first (a VGG's classifier is most of the work: started last,
            # it would run alone at the end), the rows then back in graph order; the layer
            # pairs after them, while the biggest layer is still being solved
            order = sorted(range(len(jobs)), key=lambda i: -kept[jobs[i][0]])
            with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
                rows = [pool.submit(row, jobs[i]) for i in order]
                pairs = pool.submit(pair_scores, graph, masks)
                overlap = pool.submit(channel_overlap, graph, masks)
                done = {i: future.result() for i, future in zip(order, rows)}
                pairs, overlap = pairs.result(), overlap.result()
            layers = [done[i] for i in range(len(jobs))]
        else:
            layers = [row(job) for job in jobs]
            pairs, overlap = pair_scores(graph, masks), channel_overlap(graph, masks)
    means = {f: _mean([getattr(r, f) for r in layers]) for f in MEAN_FIELDS}
    scored = [r.delta_r for r in layers if r.delta_r is not None]
    share = Aggregate(float(np.mean([v > 0 for v in scored])) if scored else None, len(scored),
                      len(layers))
    return SpectralReport(profile, source, gate_table(profile), tuple(layers), means, share,
                          pairs, overlap, masks_source)
