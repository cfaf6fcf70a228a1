"""Figures and page of a tracked training run (docs/dst.md#figures).

Both figures read the record a :class:`graphpai.torch.track.TopologyTracker` writes
(``topology.json``, as :func:`graphpai.torch.track.read_track` returns it) and return a
:class:`matplotlib.figure.Figure` on an Agg canvas, without pyplot:

- :func:`tracked_metrics`: each tracked metric against the training step, one panel and one line
  per metric, with the accuracy curves (train, validation, test per epoch) in a panel beside them;
  a value that is not finite (a disconnected network's corrected compression) is an ``x`` on the
  top edge of its panel;
- :func:`layer_change`: per layer, the Ramanujan gap Delta_r ([RAM]) and the weighted spectral gap
  ([FS]) at the first and the last record.

:func:`write_training_report` writes both as PNG and SVG under ``figures/`` and a self-contained
``report.html`` beside them (``graphpai train --track-every K`` calls it at the end).

References
----------
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import DataError
from .figures import _new_figure, as_float

__all__ = ["tracked_metrics", "layer_change", "write_training_report", "TRACKED_PANELS"]

TRACKED_PANELS = (
    ("channel_functional_ratio", "functional ratio |F|/|M|", False),
    ("channel_corrected_compression", "corrected compression N/|F|", True),
    ("log10_paths", "log10 effective paths [NPB]", False),
    ("effective_nodes", "effective nodes [NPB]", False),
    ("iclr23_delta_r_norm", "normalised Δr [RAM]", False),
    ("neurips23_weighted_gap", "weighted gap λ [FS]", False),
    ("neurips23_coordinate_norm", "full-spectrum norm S [FS]", False),
    ("jaccard_initial", "Jaccard with the initial mask", False),
)
"""(column, title, log y axis) of each `tracked_metrics` panel, in order; absent columns are
skipped (the semantics prefix follows the record's)."""

_ACCURACY = (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test"))


def _rows(track: Mapping) -> list:
    if not isinstance(track, Mapping) or not track.get("rows"):
        raise DataError("the training record has no topology rows; train with a "
                        "TopologyTracker (graphpai train --track-every K)")
    return list(track["rows"])


def _values(rows, column):
    return [as_float(r.get(column)) for r in rows]


def tracked_metrics(track: Mapping, *, panels: Sequence = TRACKED_PANELS):
    """Each tracked metric against the training step, and the accuracy curves beside them.

    Parameters
    ----------
    track : dict
        A topology record (``rows``, ``accuracy``, ``semantics``; see the module docstring).
    panels : sequence of (column, title, log)
        Which metrics (columns of the rows) to draw; those absent are skipped. A ``channel_``
        prefix is read in the record's semantics.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric (``gid`` ``metric:COLUMN``, one line ``gid`` COLUMN) and the accuracy
        axes (``gid`` ``accuracy``, one line per split that has values).
    """
    rows = _rows(track)
    semantics = track.get("semantics", "channel")
    chosen = []
    for column, title, log in panels:
        if column.startswith("channel_"):
            column = f"{semantics}_" + column[len("channel_"):]
        if any(as_float(r.get(column)) is not None for r in rows if column in r):
            chosen.append((column, title, log))
    if not chosen:
        raise DataError("none of the tracked metrics is in the record")
    cols = min(4, len(chosen))
    nrows = math.ceil(len(chosen) / cols)
    fig, _ = _new_figure(3.0 * cols + 3.6, 2.5 * nrows + 0.6)
    fig.clear()
    grid = fig.add_gridspec(nrows, cols + 1, width_ratios=[1] * cols + [1.3])
    steps = np.array([r["step"] for r in rows], dtype=float)
    for i, (column, title, log) in enumerate(chosen):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.set_gid(f"metric:{column}")
        values = np.array([np.nan if v is None else v for v in _values(rows, column)])
        finite = np.isfinite(values)
        ax.plot(steps[finite], values[finite], marker="o", markersize=3, gid=column,
                label=column)
        cut = steps[~finite & ~np.isnan(values)]
        if len(cut):
            ax.plot(cut, np.ones(len(cut)), linestyle="none", marker="x", color="#d62728",
                    transform=ax.get_xaxis_transform(), clip_on=False, gid="not finite")
        if log and np.any(finite & (values > 0)):
            ax.set_yscale("log")
        ax.set_title(title, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(True, alpha=0.3)
        if i // cols == nrows - 1 or i + cols >= len(chosen):
            ax.set_xlabel("step", fontsize="small")
    acc = fig.add_subplot(grid[:, cols])
    acc.set_gid("accuracy")
    epochs = track.get("accuracy") or []
    for key, label in _ACCURACY:
        points = [(e["step"], as_float(e.get(key))) for e in epochs
                  if e.get("step") is not None and as_float(e.get(key)) is not None]
        if points:
            x, y = zip(*points)
            acc.plot(x, y, marker="o", markersize=3, label=label, gid=key)
    acc.set_title("accuracy per epoch", fontsize="small")
    acc.set_xlabel("step", fontsize="small")
    acc.set_ylim(0.0, 1.02)
    acc.set_xlim(*fig.axes[0].get_xlim())  # the steps of the metric panels
    acc.tick_params(labelsize="x-small")
    acc.grid(True, alpha=0.3)
    if acc.get_legend_handles_labels()[0]:
        acc.legend(fontsize="small", loc="lower right")
    return fig


def layer_change(track: Mapping, *, gap_profile: str = "iclr23", weighted_profile="neurips23"):
    """Per layer, Delta_r and the weighted spectral gap at the first and the last record.

    Parameters
    ----------
    track : dict
        A topology record with per-layer rows (``layers``; recorded with ``spectral=True``).
    gap_profile, weighted_profile : {"iclr23", "neurips23"}
        The profile of each panel's values (the gate that decides which layers are scored).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes (``gid`` ``delta_r`` and ``weighted_gap``), each with a line ``start`` and a
        line ``end`` (NaN where a layer is not scored).
    """
    rows = _rows(track)
    first, last = rows[0]["step"], rows[-1]["step"]
    layers = track.get("layers") or []
    start = [r for r in layers if r["step"] == first]
    end = {r["layer"]: r for r in layers if r["step"] == last}
    columns = (f"{gap_profile}_delta_r", f"{weighted_profile}_weighted_gap")
    if not start or not all(c in start[0] for c in columns):
        raise DataError("the training record has no per-layer spectral values; track with "
                        "spectral=True")
    names = [str(r["layer"]) for r in start]
    fig, axes = _new_figure(max(6.4, 0.35 * len(names) + 2.5), 5.6, nrows=2, sharex=True)
    x = np.arange(len(names))
    titles = {columns[0]: f"Ramanujan gap Δr per layer ({gap_profile}) [RAM]",
              columns[1]: f"weighted spectral gap λ per layer ({weighted_profile}) [FS]"}
    for ax, column, gid in zip(axes, columns, ("delta_r", "weighted_gap")):
        ax.set_gid(gid)
        for label, table, style in (("start", {r["layer"]: r for r in start}, "o-"),
                                    ("end", end, "s--")):
            values = [as_float(table.get(name, {}).get(column)) for name in names]
            ax.plot(x, [np.nan if v is None else v for v in values], style, markersize=4,
                    label=f"{label} (step {first if label == 'start' else last})", gid=label)
        ax.set_title(titles[column], fontsize="small")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels(names, rotation=60, ha="right", fontsize="x-small")
    return fig


_CAPTIONS = {
    "tracked_metrics": "Tracked topology against the training step (one panel per metric) and "
                       "the accuracy per epoch beside them; a red x on a panel's top edge is a "
                       "value that is not finite (a disconnected network).",
    "layer_change": "Per-layer Ramanujan gap Δr [RAM] and weighted spectral gap λ [FS] at the "
                    "first and the last record; a missing point is a layer the profile's gate "
                    "does not score.",
}

_SUMMARY = ("step", "kept", "channel_functional_ratio", "channel_corrected_compression",
            "log10_paths", "effective_nodes", "iclr23_delta_r_norm", "neurips23_weighted_gap",
            "neurips23_coordinate_norm", "dropped", "regrown", "jaccard_initial",
            "jaccard_previous")


def write_training_report(run_dir, out_dir=None, *, title: str = "graphpai training run") -> Path:
    """Write ``report.html`` and ``figures/`` for the tracked run in `run_dir` (into `out_dir`,
    by default `run_dir`); returns the page's path.

    Raises
    ------
    DataError
        If `run_dir` has no topology record.
    OutputError
        If the page or the figures cannot be written there.
    """
    import base64

    from ..torch.track import read_track
    from .html import _page, _write_text, check_report_dir, html_table, save_figure

    track = read_track(run_dir)
    out = check_report_dir(out_dir if out_dir is not None else run_dir)
    figures = {"tracked_metrics": tracked_metrics(track)}
    try:
        figures["layer_change"] = layer_change(track)
    except DataError:  # tracked without spectral quantities
        pass
    parts = []
    for name, fig in figures.items():
        png, _ = save_figure(fig, out / "figures" / name)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<figure id="fig-{name}"><img alt="{name}" src="data:image/png;base64,'
                     f'{data}"><figcaption>{html.escape(_CAPTIONS[name])} Files: '
                     f'<a href="figures/{name}.png">PNG</a>, <a href="figures/{name}.svg">SVG'
                     "</a>.</figcaption></figure>")
    semantics = track.get("semantics", "channel")
    columns = [c.replace("channel_", f"{semantics}_", 1) for c in _SUMMARY]
    rows = track["rows"]
    present = [c for c in columns if any(c in r for r in rows)]
    facts = {k: track.get(k) for k in ("recipe", "epochs", "steps_per_epoch", "total_steps",
                                       "seed", "device", "semantics")}
    facts.update(track.get("meta") or {})
    meta = [{"parameter": k, "value": v if isinstance(v, str) else str(v)}
            for k, v in facts.items() if v is not None]
    sections = [
        "<section><h2>Tracked metrics</h2>" + parts[0] + "</section>",
        *(["<section><h2>Per-layer gaps, start and end</h2>" + parts[1] + "</section>"]
          if len(parts) > 1 else []),
        "<section><h2>Records</h2>" + html_table(rows, present) + "</section>",
        "<section><h2>Run</h2>" + html_table(meta, ["parameter", "value"]) + "</section>",
    ]
    path = out / "report.html"
    _write_text(path, _page(title, sections))
    return path
