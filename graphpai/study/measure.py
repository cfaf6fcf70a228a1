"""What a study point measures: its mask, then the audit and the measures it asks for
(docs/study.md).

:func:`measure` turns a :class:`~graphpai.study.grid.Point` into one flat row of the results
table (column names in :data:`graphpai.study.store.COLUMNS`). It always generates the mask with
:func:`graphpai.prune` and audits it in the channel semantics; ``point.measures`` adds entries of
`MEASURES`:

- ``"spatial"``: the exact per-pixel audit ([VK]), columns ``spatial_*``;
- ``"paths"``: effective paths, channel paths and effective nodes ([NPB]);
- ``"spectral"``: network means of the spectral quantities and the positive-gap share under both
  profiles, ``iclr23`` ([RAM]) and ``neurips23`` ([FS]), on the mask and the model's initial
  weights (seeded by the point's seed).

A measure is a function ``fn(context, point) -> dict of columns`` registered with
:func:`register_measure`; the context gives the graph, the mask, the audit and the model, built
once per worker process and cached (a sweep's points share one model).

References
----------
.. [VK] A. Vysogorets, J. Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens of
   Effective Sparsity", JMLR 2023.
.. [NPB] H. Pham et al., "Towards Data-Agnostic Pruning at Initialization: What Makes a Good
   Sparse Mask?", NeurIPS 2023.
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Callable

from .grid import DEFINITIONS_VERSION, Point, method_options

__all__ = ["measure", "MEASURES", "register_measure", "Context", "audit_columns", "prune_batches"]

MEASURES: dict[str, Callable[["Context", Point], dict]] = {}


def register_measure(name: str):
    """Decorator adding ``fn(context, point) -> dict`` to `MEASURES` under `name`.

    Raises
    ------
    ValueError
        If the name is taken (a programming error).
    """

    def add(fn):
        if name in MEASURES:
            raise ValueError(f"measure {name!r} registered twice")
        MEASURES[name] = fn
        return fn

    return add


_BUILD = threading.RLock()  # torch.fx tracing is not thread-safe: one build at a time


def _graph(model: str):
    with _BUILD:
        return _cached_graph(model)


@lru_cache(maxsize=4)
def _cached_graph(model: str):
    from ..torch.extract import to_graph
    from ..torch.models import build

    return to_graph(build(model, seed=0))  # the graph does not depend on the weights


def _model(model: str, seed: int):
    with _BUILD:
        return _cached_model(model, seed)


@lru_cache(maxsize=2)
def _cached_model(model: str, seed: int):
    from ..torch.models import build

    return build(model, seed=seed)


@lru_cache(maxsize=8)
def prune_batches(model: str, data, seed: int):
    """The prune batches of a data-hungry method (SNIP, GraSP, ...): 10 x classes images of the
    training split of `data` (``"synthetic"`` or a CIFAR directory), drawn with `seed`, as
    ``graphpai prune --data`` draws them (docs/training.md).

    Raises
    ------
    StudyError
        If `data` is None (the sweep needs ``--data``).
    """
    from ..errors import StudyError
    from ..torch.data import load_data
    from ..torch.models import input_shape

    if data is None:
        raise StudyError("this method needs prune batches: give the sweep --data DIR (a CIFAR "
                         "directory) or --data synthetic")
    graph = _graph(model)
    classes = sum(graph.groups[name].channels for name in graph.outputs)
    splits = load_data(data, num_classes=classes, input_shape=input_shape(model))
    return splits.train.prune_batches(seed=seed)


class Context:
    """What the measures of one point share: the graph, the mask, the channel audit and (built
    on first use) the model with the point's initial weights.

    Attributes
    ----------
    point : Point
    graph : NetGraph
        Cached per process and model.
    masks : MaskSet
    audit : AuditResult
        The channel audit.
    """

    def __init__(self, point: Point):
        from ..functional import audit
        from ..generators import methods_used
        from ..prune import prune

        self.point = point
        self.graph = _graph(point.model)
        users = methods_used(point.method, point.budget,
                             method_options(point.option_dict, point.method))
        # ranking methods, and placements of a ranking method's counts (rpi-snip), score weights
        net = self.model if any(g.kind == "ranking" for g in users) else self.graph
        data = None
        if any(g.needs_data for g in users):
            data = prune_batches(point.model, point.setting_dict.get("data"), point.seed)
        self.masks = prune(net, point.method, budget=point.budget, compression=point.compression,
                           seed=point.seed, data=data,
                           **method_options(point.option_dict, point.method))
        self.audit = audit(self.graph, self.masks, semantics="channel")

    @property
    def model(self):
        """The zoo model with the initial weights of ``point.seed`` (do not modify it)."""
        return _model(self.point.model, self.point.seed)


def audit_columns(result, prefix: str) -> dict:
    """The audit columns of the results table for one semantics (`prefix` ``channel``/``spatial``)."""
    return {
        f"{prefix}_functional": result.functional,
        f"{prefix}_functional_ratio": result.functional / result.kept if result.kept else None,
        f"{prefix}_corrected_compression": result.corrected_compression,
        f"{prefix}_functional_nodes": result.functional_nodes,
        f"{prefix}_functional_node_ratio": result.functional_node_ratio,
        f"{prefix}_disconnected": result.disconnected,
    }


def measure(point: Point) -> dict:
    """The results-table row of one point: its parameters, the mask's counts, the channel audit
    and every measure in ``point.measures``.

    Runs in a worker process and writes no file. ``key``, ``status``, ``error`` and
    ``elapsed_s`` are the runner's.

    Raises
    ------
    GraphpaiError
        Whatever the mask or a measure raises (the runner records it as a failed point).

    Examples
    --------
    >>> from graphpai.study import Point
    >>> row = measure(Point("mlp", "mica", "erk", 100, 0))
    >>> row["kept"] == round(row["N"] / row["direct_compression"]), row["channel_functional_ratio"]
    (True, 1.0)
    """
    from .. import __version__

    ctx = Context(point)
    a = ctx.audit
    row = {
        "model": point.model, "method": point.method, "budget": point.budget,
        "compression": point.compression, "log10_compression": point.log10_compression,
        "seed": point.seed, "options": json.dumps(point.option_dict, sort_keys=True),
        **({"dst": point.dst} if point.dst else {}),
        "N": a.N, "kept": a.kept, "density": a.kept / a.N, "direct_compression": a.direct_compression,
        **audit_columns(a, "channel"),
    }
    for name in point.measures:
        row.update(MEASURES[name](ctx, point))
    row["graphpai_version"] = __version__
    row["definitions_version"] = DEFINITIONS_VERSION
    return row


@register_measure("spatial")
def _spatial(ctx: Context, point: Point) -> dict:
    from ..functional import audit

    return audit_columns(audit(ctx.graph, ctx.masks, semantics="spatial"), "spatial")


@register_measure("paths")
def _paths(ctx: Context, point: Point) -> dict:
    from ..paths import paths

    counted = paths(ctx.graph, ctx.masks)  # default profile; effective nodes of the exact audit
    return {"log10_paths": counted.log10_paths, "log10_channel_paths": counted.log10_channel_paths,
            "effective_nodes": counted.effective_nodes, "nodes": counted.nodes}


@register_measure("spectral")
def _spectral(ctx: Context, point: Point) -> dict:
    from ..spectral import spectral
    from ..spectral.report import SUMMARY_MEANS
    from ..torch.extract import layer_weights

    weights = layer_weights(ctx.model)
    row = {}
    for profile in ("iclr23", "neurips23"):
        report = spectral(ctx.graph, ctx.masks, weights, profile=profile, workers=1)
        for name in SUMMARY_MEANS:
            row[f"{profile}_{name}"] = report.means[name].mean
        row[f"{profile}_positive_gap_share"] = report.positive_gap_share.mean
        row[f"{profile}_scored_fraction"] = report.means["delta_r"].scored_fraction
    return row


_DST_SETTINGS = ("dst", "update_every", "drop_fraction", "stop_fraction")


@register_measure("train")
def _train(ctx: Context, point: Point) -> dict:
    """Train the point's model (its seed's initial weights) with its masks: the settings give
    ``recipe``, ``data`` ("synthetic" or a CIFAR directory), ``device`` and recipe overrides
    such as ``epochs`` (docs/training.md). Points train on the workers; with ``device`` auto and
    several GPUs each worker takes its own (`graphpai.study.runner.worker_device`)."""
    import copy

    from ..torch.train import train_point

    settings = point.setting_dict
    overrides = {k: v for k, v in settings.items() if k not in ("recipe", "data", "device")
                 and (point.dst is not None or k not in _DST_SETTINGS)}
    if point.dst is not None:
        overrides["dst"] = point.dst
    from .runner import worker_device

    model = copy.deepcopy(ctx.model)  # the cached initial weights stay untouched
    return train_point(model, ctx.masks, settings.get("data", "synthetic"),
                       recipe=settings.get("recipe", "mica-resnet20"), seed=point.seed,
                       device=worker_device(settings.get("device", "auto")), **overrides)
