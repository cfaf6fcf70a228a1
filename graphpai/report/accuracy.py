"""Figures of a trained study (``graphpai sweep --train``): accuracy against corrected
compression ([MiCA]) and each graph metric against accuracy at each compression, with Kendall's
tau and Spearman's rho ([RAM], [FS]); docs/report.md.

Like :mod:`graphpai.report.figures`, every function takes the results table (one flat dict per
point, ``graphpai.study.store.read_table``) and returns a :class:`matplotlib.figure.Figure` on an
Agg canvas, writing nothing. The correlation printed in a panel is
:func:`graphpai.report.correlation.correlations` of the same rows, so the figure and the page's
table always agree.

References
----------
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024 (test accuracy against corrected compression).
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023 (rank correlation of graph metrics with accuracy).
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..errors import DataError
from .correlation import correlations
from .figures import (_edge_markers, _has, _legend, _new_figure, _ok, _styles, as_float,
                      series_label, series_method, _truthy)

__all__ = ["ACCURACY_COLUMNS", "METRIC_LABELS", "accuracy_column", "accuracy_vs_compression",
           "metric_vs_accuracy", "accuracy_figures", "power_label"]

ACCURACY_COLUMNS = ("best_test_acc", "final_test_acc", "best_val_acc")
"""Accuracy columns of a trained study, in order of preference."""

METRIC_LABELS = {
    "channel_functional_ratio": "functional-edge ratio |F|/|M|",
    "log10_paths": "log10 effective paths [NPB]",
    "effective_nodes": "effective nodes [NPB]",
    "iclr23_imdb": "IMDB [RAM]",
    "iclr23_narc": "NaRC [RAM]",
    "iclr23_delta_r_norm": "normalised Ramanujan gap Δr [RAM]",
    "neurips23_coordinate_norm": "full-spectrum norm S [FS]",
}
"""The metrics drawn against accuracy (those the table holds), with their axis labels."""


def accuracy_column(table) -> str | None:
    """The first column of `ACCURACY_COLUMNS` that a finished row of `table` holds, or None."""
    rows = _ok(table)
    return next((c for c in ACCURACY_COLUMNS if _has(rows, c)), None)


def _accuracy(rows, accuracy):
    column = accuracy or accuracy_column(rows)
    if column is None or not _has(rows, column):
        raise DataError(f"the table has no accuracy column ({', '.join(ACCURACY_COLUMNS)}); run "
                        "the study with --train RECIPE (docs/study.md)")
    return column


def power_label(value) -> str:
    """``10^2.5`` for a compression of 316.2...

    >>> power_label(1000.0), power_label(10 ** 2.5)
    ('10^3', '10^2.5')
    """
    c = as_float(value)
    if c is None or not math.isfinite(c) or c <= 0:
        return str(value)
    return f"10^{round(math.log10(c), 2):g}"


def accuracy_vs_compression(table, *, accuracy: str | None = None,
                            semantics: str = "channel"):
    """Accuracy against corrected compression N/|F| ([MiCA]), one line per (method, budget):
    the mean over seeds at each target compression, with a min-max band when there are
    several seeds; log x. A disconnected network (N/|F| = inf) is an ``x`` on the right edge
    at its accuracy, never dropped.

    Parameters
    ----------
    table : sequence of dict
        The study's results table with an accuracy column.
    accuracy : str, optional
        Default: the first of `ACCURACY_COLUMNS` present.
    semantics : {"channel", "spatial"}
        Whose corrected compression is the x axis.
    """
    rows = _ok(table)
    column = _accuracy(rows, accuracy)
    x_column = f"{semantics}_corrected_compression"
    if not _has(rows, x_column):
        raise DataError(f"the table has no {x_column} column; run the study with "
                        f"--semantics {semantics} (docs/study.md)")
    groups: dict = {}
    for row in rows:
        y = as_float(row.get(column))
        target = as_float(row.get("compression"))
        if y is None or math.isnan(y) or target is None:
            continue
        key = (series_method(row), row.get("budget"))
        groups.setdefault(key, {}).setdefault(target, []).append(
            (as_float(row.get(x_column)), y, _truthy(row.get(f"{semantics}_disconnected"))))
    fig, ax = _new_figure()
    colour, dash = _styles(groups)
    cut = []
    for key in sorted(groups, key=lambda k: (str(k[0]), str(k[1]))):
        points = []
        for target, entries in sorted(groups[key].items()):
            finite = [(x, y) for x, y, off in entries
                      if not off and x is not None and math.isfinite(x)]
            cut += [y for x, y, off in entries if off or x is None or not math.isfinite(x)]
            if finite:
                ys = [y for _, y in finite]
                points.append((float(np.mean([x for x, _ in finite])), float(np.mean(ys)),
                               min(ys), max(ys), len(ys)))
        method, budget = key
        style = dict(color=colour[str(method)], linestyle=dash[str(budget)])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                label=series_label(method, budget), gid=f"series:{method}:{budget}", **style)
        if any(p[4] > 1 for p in points):
            ax.fill_between([p[0] for p in points], [p[2] for p in points],
                            [p[3] for p in points], color=colour[str(method)], alpha=0.18,
                            linewidth=0)
    _edge_markers(ax, cut, edge=1.0, label="disconnected", axis="y")
    ax.set_xscale("log")
    ax.set_xlabel(f"corrected compression N/|F| ({semantics} semantics)")
    ax.set_ylabel(column.replace("_", " "))
    ax.set_title("accuracy vs corrected compression [MiCA]")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, loc="best")
    return fig


def _panel_title(compression, stats: Mapping | None) -> str:
    head = power_label(compression)
    if not stats or stats["n"] < 3 or math.isnan(stats["kendall_tau"]):
        n = stats["n"] if stats else 0
        return f"{head}: n = {n}, no rank correlation"
    return (f"{head}: τ = {stats['kendall_tau']:.2f}, ρ = {stats['spearman_rho']:.2f} "
            f"(n = {stats['n']})")


def metric_vs_accuracy(table, metric: str, *, accuracy: str | None = None):
    """A scatter of `metric` (x) against accuracy (y), one panel per target compression, one
    colour per (method, budget); each panel's title gives Kendall's tau and Spearman's rho
    over its points (:func:`~graphpai.report.correlation.correlations`; "no rank correlation"
    below 3 points or with a constant column). A point whose metric is not finite (a
    disconnected network's log10 paths of -inf) is an ``x`` on the left edge at its accuracy.

    Parameters
    ----------
    table : sequence of dict
    metric : str
        A column of the table (`METRIC_LABELS` names the usual ones).
    accuracy : str, optional
        Default: the first of `ACCURACY_COLUMNS` present.
    """
    rows = _ok(table)
    column = _accuracy(rows, accuracy)
    if not _has(rows, metric):
        raise DataError(f"the table has no {metric} column (or no finished point with it); run "
                        "the study with the flag that measures it (see docs/study.md)")
    stats = {r["compression"]: r for r in correlations(rows, metrics=[metric], accuracy=column)}
    targets = sorted(stats, key=as_float)
    cols = min(4, len(targets))
    nrows = -(-len(targets) // cols)
    fig, axes = _new_figure(3.2 * cols + 0.6, 2.8 * nrows + 0.6, nrows=nrows, ncols=cols,
                            squeeze=False)
    axes = axes.ravel()
    keys = sorted({(series_method(r), r.get("budget")) for r in rows},
                  key=lambda k: (str(k[0]), str(k[1])))
    colour = {k: f"C{i % 10}" for i, k in enumerate(keys)}
    for ax, target in zip(axes, targets):
        group = [r for r in rows if r.get("compression") == target]
        cut = []
        for key in keys:
            xs, ys = [], []
            for r in group:
                if (series_method(r), r.get("budget")) != key:
                    continue
                x, y = as_float(r.get(metric)), as_float(r.get(column))
                if y is None or math.isnan(y) or x is None or math.isnan(x):
                    continue
                if math.isfinite(x):
                    xs.append(x)
                    ys.append(y)
                else:
                    cut.append(y)
            if xs:
                ax.plot(xs, ys, linestyle="none", marker="o", markersize=5, alpha=0.85,
                        color=colour[key], label=series_label(*key),
                        gid=f"series:{key[0]}:{key[1]}")
        _edge_markers(ax, cut, edge=0.0, label="not finite", axis="y")
        ax.set_title(_panel_title(target, stats.get(target)), fontsize="small")
        ax.set_gid(f"compression:{target!r}")
        ax.tick_params(labelsize="x-small")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(targets):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes[:len(targets)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize="x-small", loc="outside right")
    fig.supxlabel(METRIC_LABELS.get(metric, metric), fontsize="small")
    fig.supylabel(column.replace("_", " "), fontsize="small")
    return fig


def accuracy_figures(table, *, semantics: Sequence[str] = ("channel", "spatial"),
                     metrics: Sequence[str] | None = None) -> dict:
    """Every accuracy figure the table has columns for, name (file stem) -> Figure:
    ``accuracy_vs_compression`` (``_spatial`` for the exact audit) and
    ``metric_accuracy_METRIC`` for each metric of `METRIC_LABELS` present (or of `metrics`).
    Empty for a study run without ``--train``."""
    rows = _ok(table)
    column = accuracy_column(rows)
    if column is None:
        return {}
    out = {}
    for sem in semantics:
        if _has(rows, f"{sem}_corrected_compression"):
            suffix = "" if sem == "channel" else f"_{sem}"
            out[f"accuracy_vs_compression{suffix}"] = accuracy_vs_compression(
                rows, accuracy=column, semantics=sem)
    for metric in (metrics if metrics is not None else METRIC_LABELS):
        if _has(rows, metric):
            out[f"metric_accuracy_{metric}"] = metric_vs_accuracy(rows, metric, accuracy=column)
    return out
