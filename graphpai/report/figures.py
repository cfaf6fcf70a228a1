"""Figures of a study and of one mask: data in, a matplotlib ``Figure`` out (docs/report.md).

Every function takes a table (a list of flat dicts) and returns a
:class:`matplotlib.figure.Figure` drawn on an Agg canvas, without pyplot: no global state, no
display, no file written (:func:`graphpai.report.html.save_figure` writes PNG and SVG).

- Study figures read the results table of a study, one row per point, as
  ``graphpai.study.store.read_table`` returns it (columns in docs/study.md). The x axis is the
  direct compression N/|M| on a log scale; there is one line per (method, budget): the mean over
  seeds, with a min-max band when there are several seeds.
- Values may come from JSON: ``"inf"``, ``"-inf"`` and ``"nan"`` are read as floats, None is a
  measure that was not taken. A point without a finite value (a disconnected network: corrected
  compression ``inf``, log10 paths ``-inf``; or an unscored spectral mean) is drawn as an ``x``
  on the edge of the axes (label ``"disconnected"`` or ``"not scored"``), never dropped; a
  disconnected point whose value is finite (a functional ratio of 0) is marked the same way.
- Per-mask figures read a per-layer table (`layer_bars`, `layer_spectrum`) or the masks
  themselves (`degree_histograms`).

A figure whose columns are absent from the table (a study run without ``--paths`` has no
``log10_paths``) raises :class:`~graphpai.errors.DataError`; :func:`study_figures` skips it.

References
----------
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024 (functional-edge ratio vs compression).
.. [NPB] H. Pham et al., "Towards Data-Agnostic Pruning at Initialization: What Makes a Good
   Sparse Mask?", NeurIPS 2023 (the effective paths / effective nodes plane).
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError

__all__ = [
    "functional_ratio", "corrected_compression", "functional_node_ratio", "effective_paths",
    "npb_plane", "spectral_means", "layer_bars", "layer_spectrum", "degree_histograms",
    "study_figures", "as_float", "series_label", "series_method", "SPECTRAL_PANELS",
]

SPECTRAL_PANELS = (
    ("delta_r_norm", ("iclr23", "neurips23"), "normalised Ramanujan gap Δr [RAM]"),
    ("imdb", ("iclr23", "neurips23"), "IMDB [RAM]"),
    ("narc", ("iclr23", "neurips23"), "NaRC [RAM]"),
    ("coordinate_norm", ("neurips23", "iclr23"), "full-spectrum norm S [FS]"),
)
"""(quantity, profiles in order of preference, title) of each `spectral_means` panel: [RAM]'s
quantities under its own gate (iclr23), [FS]'s norm under its gate (neurips23)."""

_NAMES = {"mica": "MiCA", "rpi": "RPI", "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow",
          "npb": "NPB", "pags": "PAGS", "magnitude": "magnitude", "uniform": "uniform",
          "nm": "N:M", "wanda": "Wanda", "set": "SET", "rigl": "RigL"}
_MISSING = ("x", "#d62728")  # marker and colour of a point drawn on the axis edge


# ---------------------------------------------------------------------------------- values
def as_float(value) -> float | None:
    """A table cell as a float: ``"inf"``/``"-inf"``/``"nan"`` and numeric text are parsed,
    None and ``""`` stay None.

    >>> as_float("inf"), as_float("-inf"), as_float(None), as_float("1e3"), as_float(True)
    (inf, -inf, None, 1000.0, 1.0)
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"table value {value!r} is not a number; the results table must hold "
                        "numbers, 'inf', '-inf', 'nan' or null") from None


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _ok(table: Iterable[Mapping]) -> list[Mapping]:
    return [row for row in table if row.get("status", "ok") == "ok"]


def _has(rows: Sequence[Mapping], column: str) -> bool:
    return any(row.get(column) is not None for row in rows)


def _require(rows: Sequence[Mapping], *columns: str) -> None:
    missing = [c for c in columns if not _has(rows, c)]
    if missing:
        raise DataError(f"the table has no {', '.join(missing)} column (or no finished point "
                        "with it); run the study with the flag that measures it (see "
                        "docs/study.md)")


def series_method(row) -> str:
    """The method a row's series is drawn under: the method, with ``+set`` / ``+rigl`` for a
    point trained with dynamic sparse training (the study's DST axis, docs/dst.md).

    >>> series_method({"method": "rpi", "dst": "rigl"}), series_method({"method": "rpi"})
    ('rpi+rigl', 'rpi')
    """
    method, dst = row.get("method"), row.get("dst")
    if isinstance(dst, str) and dst.strip() and dst != "static":
        return f"{method}+{dst}"
    return method


def series_label(method, budget=None) -> str:
    """How a (method, budget) reads in a legend: ``RPI-ERK``, ``MiCA-IGQ``, ``SNIP``, and
    ``RPI+RigL-ERK`` for a DST series (`series_method`).

    >>> series_label("mica", "erk"), series_label("snip", None), series_label("rpi+rigl", "erk")
    ('MiCA-ERK', 'SNIP', 'RPI+RigL-ERK')
    """
    method, plus, dst = str(method).partition("+")
    if plus:
        return series_label(method) + "+" + _NAMES.get(dst.lower(), dst) + (
            "" if budget in (None, "", "-") else "-" + series_label("", budget).lstrip("-"))
    name = _NAMES.get(str(method).lower(), str(method))
    if budget in (None, "", "-"):
        return name
    budget = str(budget)
    return f"{name}-{budget.upper() if budget.isalpha() and len(budget) <= 4 else budget}"


def _new_figure(width=6.4, height=4.2, **subplots):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(**subplots) if subplots else fig.add_subplot()
    return fig, axes


# ---------------------------------------------------------------------------------- series
@dataclass(frozen=True)
class _Point:
    x: float              # mean direct compression over the seeds
    values: tuple         # finite values, one per seed that has one
    missing: int          # seeds without a finite value
    disconnected: int     # seeds whose network is disconnected


def _series(rows, column, *, x="direct_compression", disconnected=None):
    """(method, budget) -> points sorted by x, seeds of one target compression pooled."""
    pooled = defaultdict(lambda: defaultdict(list))
    for row in rows:
        target = as_float(row.get("compression"))
        xs = as_float(row.get(x))
        if xs is None or not math.isfinite(xs):
            xs = target
        if xs is None:
            continue
        key = (series_method(row), row.get("budget"))
        pooled[key][target if target is not None else xs].append(
            (xs, as_float(row.get(column)), disconnected is not None
             and _truthy(row.get(disconnected))))
    out = {}
    for key in sorted(pooled, key=lambda k: (str(k[0]), str(k[1]))):
        points = []
        for entries in pooled[key].values():
            finite = tuple(v for _, v, _ in entries if v is not None and math.isfinite(v))
            points.append(_Point(float(np.mean([e[0] for e in entries])), finite,
                                 len(entries) - len(finite), sum(e[2] for e in entries)))
        out[key] = sorted(points, key=lambda p: p.x)
    return out


def _styles(keys):
    methods = sorted({str(k[0]) for k in keys})
    budgets = sorted({str(k[1]) for k in keys})
    colours = [f"C{i % 10}" for i in range(len(methods))]
    dashes = ["-", "--", "-.", ":"]
    return ({m: c for m, c in zip(methods, colours)},
            {b: dashes[i % len(dashes)] for i, b in enumerate(budgets)})


def _edge_markers(ax, xs, *, edge, label, axis="x"):
    """Draw an ``x`` per entry of `xs` on the axes edge (``edge`` 0 = bottom/left, 1 = top/right),
    positioned along `axis` in data coordinates."""
    if not len(xs):
        return
    xs = np.asarray(xs, dtype=float)
    other = np.full(len(xs), float(edge))
    if axis == "x":
        transform, data = ax.get_xaxis_transform(), (xs, other)
    else:
        transform, data = ax.get_yaxis_transform(), (other, xs)
    ax.plot(*data, linestyle="none", marker=_MISSING[0], color=_MISSING[1], markersize=8,
            markeredgewidth=2, transform=transform, clip_on=False, label=label, zorder=5,
            gid=label)


def _plot_vs_compression(ax, rows, column, *, disconnected, missing_edge=0.0):
    series = _series(rows, column, disconnected=disconnected)
    colour, dash = _styles(series)
    cut, unscored = [], []
    for (method, budget), points in series.items():
        drawn = [p for p in points if p.values]
        x = np.array([p.x for p in drawn])
        mean = np.array([np.mean(p.values) for p in drawn])
        style = dict(color=colour[str(method)], linestyle=dash[str(budget)])
        ax.plot(x, mean, marker="o", markersize=3, label=series_label(method, budget),
                gid=f"series:{method}:{budget}", **style)
        if any(len(p.values) > 1 for p in drawn):
            ax.fill_between(x, [min(p.values) for p in drawn], [max(p.values) for p in drawn],
                            color=colour[str(method)], alpha=0.18, linewidth=0)
        cut += [p.x for p in points if p.disconnected]  # one marker per point, not per seed
        unscored += [p.x for p in points if p.missing and not p.disconnected]
    _edge_markers(ax, cut, edge=missing_edge, label="disconnected")
    _edge_markers(ax, unscored, edge=missing_edge, label="not scored")
    ax.set_xscale("log")
    ax.set_xlabel("direct compression N/|M|")
    ax.grid(True, which="major", alpha=0.3)
    return series


def _legend(ax, **kw):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **kw)


def _semantics_column(rows, semantics, name):
    column = f"{semantics}_{name}"
    _require(rows, column)
    return column


# ---------------------------------------------------------------------------------- study
def functional_ratio(table, *, semantics: str = "channel"):
    """Functional-edge ratio |F|/|M| vs direct compression, one line per (method, budget) ([MiCA]
    Fig. 1). A disconnected point (|F| = 0) is also marked on the bottom edge.

    Parameters
    ----------
    table : sequence of dict
        The study's results table.
    semantics : {"channel", "spatial"}
        Which audit's columns to read (``channel_functional_ratio`` ...).

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = _ok(table)
    column = _semantics_column(rows, semantics, "functional_ratio")
    fig, ax = _new_figure()
    _plot_vs_compression(ax, rows, column, disconnected=f"{semantics}_disconnected")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("functional / kept weights")
    ax.set_title(f"functional-edge ratio ({semantics} semantics)")
    _legend(ax, loc="lower left")
    return fig


def corrected_compression(table, *, semantics: str = "channel"):
    """Corrected compression N/|F| vs direct compression N/|M|, with the identity line y = x
    (a fully functional mask lies on it). A disconnected point (N/|F| = inf) is marked on the
    top edge."""
    rows = _ok(table)
    column = _semantics_column(rows, semantics, "corrected_compression")
    fig, ax = _new_figure()
    _plot_vs_compression(ax, rows, column, disconnected=f"{semantics}_disconnected",
                         missing_edge=1.0)
    xs = [as_float(r.get("direct_compression")) for r in rows]
    xs = [x for x in xs if x is not None and math.isfinite(x) and x > 0]
    if xs:
        ax.plot([min(xs), max(xs)], [min(xs), max(xs)], color="black", linestyle=":",
                linewidth=1, label="identity", gid="identity")
    ax.set_yscale("log")
    ax.set_ylabel("corrected compression N/|F|")
    ax.set_title(f"corrected vs direct compression ({semantics} semantics)")
    _legend(ax, loc="upper left")
    return fig


def functional_node_ratio(table, *, semantics: str = "channel"):
    """Share of hidden channels that are functional vs direct compression."""
    rows = _ok(table)
    column = _semantics_column(rows, semantics, "functional_node_ratio")
    fig, ax = _new_figure()
    _plot_vs_compression(ax, rows, column, disconnected=f"{semantics}_disconnected")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("functional / hidden channels")
    ax.set_title(f"functional-node ratio ({semantics} semantics)")
    _legend(ax, loc="lower left")
    return fig


def _paths_disconnected(rows):
    return next((c for c in ("spatial_disconnected", "channel_disconnected") if _has(rows, c)),
                None)


def effective_paths(table):
    """log10 of the effective paths ([NPB]) vs direct compression; a disconnected network
    (log10 = -inf) is marked on the bottom edge."""
    rows = _ok(table)
    _require(rows, "log10_paths")
    fig, ax = _new_figure()
    _plot_vs_compression(ax, rows, "log10_paths", disconnected=_paths_disconnected(rows))
    ax.set_ylabel("log10 effective paths")
    ax.set_title("effective paths [NPB]")
    _legend(ax, loc="lower left")
    return fig


def npb_plane(table):
    """[NPB]'s plane: log10 effective paths (x) vs effective nodes (y), one marker per point,
    one colour per method. A disconnected point (no path) is marked on the left edge."""
    rows = _ok(table)
    _require(rows, "log10_paths", "effective_nodes")
    fig, ax = _new_figure()
    methods = sorted({str(series_method(r)) for r in rows})
    cut = []
    for i, method in enumerate(methods):
        xs, ys = [], []
        for row in rows:
            if str(series_method(row)) != method:
                continue
            x, y = as_float(row.get("log10_paths")), as_float(row.get("effective_nodes"))
            if y is None:
                continue
            if x is None or not math.isfinite(x):
                cut.append(y)
            else:
                xs.append(x)
                ys.append(y)
        ax.plot(xs, ys, linestyle="none", marker="o", markersize=5, alpha=0.8,
                color=f"C{i % 10}", label=series_label(method), gid=f"method:{method}")
    _edge_markers(ax, cut, edge=0.0, label="disconnected", axis="y")
    ax.set_xlabel("log10 effective paths")
    ax.set_ylabel("effective nodes")
    ax.set_title("effective nodes vs effective paths [NPB]")
    ax.grid(True, alpha=0.3)
    _legend(ax, loc="lower right")
    return fig


def spectral_means(table):
    """Network spectral means vs direct compression, one panel per quantity of
    `SPECTRAL_PANELS` whose column exists (normalised Delta_r, IMDB, NaRC from [RAM], the
    full-spectrum norm from [FS]). A point with no scored layer is marked on the bottom edge."""
    rows = _ok(table)
    panels = []
    for quantity, profiles, title in SPECTRAL_PANELS:
        column = next((f"{p}_{quantity}" for p in profiles if _has(rows, f"{p}_{quantity}")), None)
        if column:
            panels.append((column, title))
    if not panels:
        raise DataError("the table has no spectral column (iclr23_delta_r_norm, ...); run the "
                        "study with --spectral")
    fig, axes = _new_figure(10.0, 7.0, nrows=2, ncols=2, squeeze=False)
    axes = axes.ravel()
    for ax, (column, title) in zip(axes, panels):
        _plot_vs_compression(ax, rows, column, disconnected="channel_disconnected")
        profile = column.split("_", 1)[0]
        ax.set_title(f"{title}, {profile} gate", fontsize="medium")
        ax.set_ylabel(column.split("_", 1)[1])
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _legend(axes[0], loc="best")
    return fig


def study_figures(table, *, semantics: Sequence[str] = ("channel", "spatial")) -> dict:
    """Every study figure the table has columns for, by name (file stem) -> Figure.

    ``functional_ratio``, ``corrected_compression`` and ``functional_node_ratio`` per semantics
    present (``..._spatial`` for the spatial one), then ``effective_paths`` and ``npb_plane``
    (with ``--paths``) and ``spectral_means`` (with ``--spectral``); with ``--train`` the
    figures of :func:`graphpai.report.accuracy.accuracy_figures`.
    """
    rows = _ok(table)
    out = {}
    for sem in semantics:
        if not _has(rows, f"{sem}_functional_ratio"):
            continue
        suffix = "" if sem == "channel" else f"_{sem}"
        out[f"functional_ratio{suffix}"] = functional_ratio(rows, semantics=sem)
        out[f"corrected_compression{suffix}"] = corrected_compression(rows, semantics=sem)
        if _has(rows, f"{sem}_functional_node_ratio"):
            out[f"functional_node_ratio{suffix}"] = functional_node_ratio(rows, semantics=sem)
    if _has(rows, "log10_paths"):
        out["effective_paths"] = effective_paths(rows)
        if _has(rows, "effective_nodes"):
            out["npb_plane"] = npb_plane(rows)
    if any(_has(rows, f"{p}_{q}") for q, profiles, _ in SPECTRAL_PANELS for p in profiles):
        out["spectral_means"] = spectral_means(rows)
    from .accuracy import accuracy_figures  # with --train (accuracy.py imports this module)

    out.update(accuracy_figures(rows, semantics=semantics))
    return out


# ---------------------------------------------------------------------------------- one mask
def _layer_axis(ax, names):
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize="x-small")
    ax.set_xlim(-0.6, len(names) - 0.4)


def layer_bars(rows):
    """Per-layer bars of one mask: density (top, log scale) and functional ratio in each
    semantics present (bottom; a layer that keeps nothing has no bar).

    Parameters
    ----------
    rows : sequence of dict
        One per layer: ``layer``, ``density`` and ``channel_functional_ratio`` and/or
        ``spatial_functional_ratio``.
    """
    _require(rows, "layer", "density")
    semantics = [s for s in ("channel", "spatial") if _has(rows, f"{s}_functional_ratio")]
    if not semantics:
        _require(rows, "channel_functional_ratio")
    names = [str(r["layer"]) for r in rows]
    fig, (top, bottom) = _new_figure(max(6.4, 0.32 * len(names) + 2), 6.0, nrows=2, sharex=True)
    x = np.arange(len(names))
    density = [as_float(r.get("density")) or 0.0 for r in rows]
    top.bar(x, density, color="C7", label="density", gid="density")
    top.set_yscale("log")
    top.set_ylabel("density |M_l|/N_l")
    top.set_title("per-layer density and functional ratio")
    width = 0.8 / len(semantics)
    for i, sem in enumerate(semantics):
        values = [as_float(r.get(f"{sem}_functional_ratio")) for r in rows]
        bottom.bar(x - 0.4 + width * (i + 0.5), [np.nan if v is None else v for v in values],
                   width=width, color=f"C{i}", label=f"{sem} semantics", gid=f"ratio:{sem}")
    bottom.set_ylim(0.0, 1.05)
    bottom.set_ylabel("functional / kept")
    _legend(bottom, loc="lower left")
    _layer_axis(bottom, names)
    return fig


def ramanujan_bound(d_left, d_right) -> float | None:
    """sqrt(d_L - 1) + sqrt(d_R - 1) ([RAM]); None when a mean degree is below 1 or missing."""
    d_left, d_right = as_float(d_left), as_float(d_right)
    if d_left is None or d_right is None or d_left < 1 or d_right < 1:
        return None
    return math.sqrt(d_left - 1) + math.sqrt(d_right - 1)


def layer_spectrum(rows):
    """Per-layer sigma_1, sigma_2 of the 0/1 fan-in biadjacency and the Ramanujan bound
    sqrt(d_L - 1) + sqrt(d_R - 1) ([RAM]): sigma_2 below the bound is a Ramanujan layer.

    Parameters
    ----------
    rows : sequence of dict
        One per layer: ``layer``, ``sigma_1``, ``sigma_2``, ``d_L``, ``d_R`` (the spectral
        report's rows).
    """
    _require(rows, "layer", "sigma_1", "sigma_2")
    names = [str(r["layer"]) for r in rows]
    fig, ax = _new_figure(max(6.4, 0.32 * len(names) + 2), 4.4)
    x = np.arange(len(names))

    def column(values):
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    ax.plot(x, column([as_float(r.get("sigma_1")) for r in rows]), marker="o", label="σ1",
            gid="sigma_1")
    ax.plot(x, column([as_float(r.get("sigma_2")) for r in rows]), marker="s", label="σ2",
            gid="sigma_2")
    ax.plot(x, column([ramanujan_bound(r.get("d_L"), r.get("d_R")) for r in rows]),
            linestyle="--", color="black", marker="_", label="√(d_L−1)+√(d_R−1)",
            gid="ramanujan_bound")
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("singular value")
    ax.set_title("per-layer singular values and the Ramanujan bound [RAM]")
    ax.grid(True, alpha=0.3)
    _legend(ax, loc="best")
    _layer_axis(ax, names)
    return fig


def degree_histograms(masks: Mapping, *, layers: Sequence[str] | None = None,
                      max_layers: int = 12):
    """Degree histograms of each layer's fan-in biadjacency: fan-in positions (left nodes,
    degree = kept outputs) and output channels (right nodes, degree = kept fan-in), one panel
    per layer.

    Parameters
    ----------
    masks : mapping of layer name -> array
        Keep-masks (a MaskSet works), shape (C_out, ...).
    layers : sequence of str, optional
        Which layers; default all, thinned evenly to `max_layers`.
    """
    names = list(layers) if layers is not None else list(masks)
    if not names:
        raise DataError("degree_histograms needs at least one layer mask")
    if layers is None and len(names) > max_layers:
        names = [names[i] for i in np.linspace(0, len(names) - 1, max_layers).round().astype(int)]
    cols = min(4, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = _new_figure(3.0 * cols + 0.5, 2.4 * nrows + 0.4, nrows=nrows, ncols=cols,
                            squeeze=False)
    axes = axes.ravel()
    for ax, name in zip(axes, names):
        mask = np.asarray(masks[name]).astype(bool)
        mask = mask.reshape(mask.shape[0], -1)
        for degrees, colour, label in ((mask.sum(axis=0), "C0", "fan-in positions"),
                                       (mask.sum(axis=1), "C1", "output channels")):
            top = int(degrees.max()) if degrees.size else 0
            ax.hist(degrees, bins=np.arange(top + 2) - 0.5 if top < 60 else 40, color=colour,
                    alpha=0.6, label=label)
        ax.set_title(name, fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    fig.supxlabel("degree in the fan-in biadjacency", fontsize="small")
    fig.supylabel("nodes", fontsize="small")
    return fig
