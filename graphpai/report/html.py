"""One self-contained HTML page per study or per set of masks (docs/report.md).

The page holds everything: figures inline as base64 PNG (their PNG and SVG files are written
next to it under ``figures/``), tables, the study's parameters, the graphpai and torch versions,
the date, and a short written summary computed from the table. No external URL, no JavaScript;
every string from the data is HTML-escaped. Files are written atomically (temporary file, then
rename): a failure never leaves a half-written page or figure.

- :func:`write_study_report`: the page of a study (``graphpai sweep`` calls it after the sweep;
  ``graphpai report --study DIR`` re-renders it from the store).
- :func:`write_mask_report`: the page of ``graphpai report --masks A.pt --masks B.pt``.
- :func:`study_summary`: the written summary, one sentence per (method, budget).
- :func:`save_figure`, :func:`html_table`: the building blocks.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .._results import atomic_path, check_writable
from . import figures as _fig
from .tables import format_value

__all__ = ["write_study_report", "write_mask_report", "study_summary", "study_page",
           "save_figure", "html_table", "versions", "check_report_dir"]

STUDY_COLUMNS = (
    "method", "budget", "compression", "seed", "status", "direct_compression",
    "channel_functional_ratio", "channel_corrected_compression", "channel_functional_node_ratio",
    "spatial_functional_ratio", "spatial_corrected_compression", "spatial_functional_node_ratio",
    "log10_paths", "effective_nodes", "iclr23_delta_r_norm", "iclr23_imdb", "iclr23_narc",
    "neurips23_coordinate_norm", "best_test_acc", "final_test_acc", "error",
)
"""Columns of the study page's results table (those the table has, in this order)."""

_FIGURE_CAPTIONS = {
    "functional_ratio": "Functional-edge ratio |F|/|M| against direct compression ([MiCA]); "
                        "a red x on the bottom edge is a disconnected network.",
    "corrected_compression": "Corrected compression N/|F| against direct compression N/|M|; a "
                             "fully functional mask lies on the dotted identity line; a red x "
                             "on the top edge is a disconnected network (N/|F| = inf).",
    "functional_node_ratio": "Share of hidden channels that are functional.",
    "effective_paths": "log10 effective paths ([NPB]); a red x on the bottom edge has no path.",
    "npb_plane": "Effective nodes against log10 effective paths, one marker per point ([NPB]).",
    "spectral_means": "Network means over scored layers: normalised Ramanujan gap, IMDB and "
                      "NaRC ([RAM]) and the full-spectrum norm ([FS]).",
    "layer_bars": "Per-layer density and functional ratio in each semantics.",
    "layer_spectrum": "Per-layer sigma_1, sigma_2 and the Ramanujan bound "
                      "sqrt(d_L-1)+sqrt(d_R-1): sigma_2 under the bound is a Ramanujan layer.",
    "degree_histograms": "Degree histograms of the fan-in biadjacency per layer.",
    "accuracy_vs_compression": "Accuracy against corrected compression N/|F| ([MiCA]), mean "
                               "over seeds with a min-max band; a red x on the right edge is a "
                               "disconnected network (N/|F| = inf).",
}


def _caption(name: str) -> str:
    """The caption of a figure by its name (``..._spatial`` adds the semantics)."""
    base = name.rsplit("_spatial", 1)[0].split(":")[0]
    if base.startswith("metric_accuracy_"):
        from .accuracy import METRIC_LABELS

        metric = base[len("metric_accuracy_"):]
        text = (f"{METRIC_LABELS.get(metric, metric)} against accuracy, one panel per target "
                "compression; each title gives Kendall's tau and Spearman's rho over that "
                "panel's points ([RAM], [FS]); a red x on the left edge has no finite value.")
    else:
        text = _FIGURE_CAPTIONS.get(base, "")
    return text + (" (spatial semantics)" if name.endswith("_spatial") else "")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.8em}h3{font-size:1.05em}
.summary{background:#f4f7fb;border-left:4px solid #3b6ea5;padding:.6em 1em}
.summary li{margin:.25em 0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right;white-space:nowrap}
th{background:#f0f0f0;position:sticky;top:0}td.t,th.t{text-align:left}
tr.failed td{background:#fdecea}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}
.meta td{text-align:left}
"""


# ---------------------------------------------------------------------------------- pieces
def versions() -> dict:
    """graphpai's and torch's versions (torch read from its metadata: it is not imported)."""
    from importlib import metadata

    from .. import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return {"graphpai": __version__, "torch": torch_version}


def _cell(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        value = int(value) if not isinstance(value, bool) else value
    if isinstance(value, str):
        number = None
        if value in ("inf", "-inf", "nan"):
            number = float(value)
        return html.escape(format_value(number) if number is not None else value)
    if isinstance(value, (dict, list, tuple)):
        return html.escape(json.dumps(value, default=str))
    return html.escape(format_value(value))


def html_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, *,
               row_class=None) -> str:
    """An escaped HTML table of `rows` under `columns` (default: the first row's keys).

    Numbers are right-aligned and formatted like the text tables (None is '-', inf 'inf');
    `row_class(row)` may name a CSS class per row.

    >>> html_table([{"layer": "<b>", "kept": 3}])  # doctest: +NORMALIZE_WHITESPACE
    '<div class="scroll"><table><thead><tr><th class="t">layer</th><th>kept</th></tr></thead><tbody><tr><td class="t">&lt;b&gt;</td><td>3</td></tr></tbody></table></div>'
    """
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    text = [c for c in columns
            if any(isinstance(r.get(c), str) and r.get(c) not in ("inf", "-inf", "nan")
                   for r in rows)]
    head = "".join(f'<th class="t">{html.escape(str(c))}</th>' if c in text
                   else f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cls = row_class(row) if row_class else None
        cells = "".join(f'<td class="t">{_cell(row.get(c))}</td>' if c in text
                        else f"<td>{_cell(row.get(c))}</td>" for c in columns)
        body.append(f'<tr class="{html.escape(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def figure_png(fig, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def save_figure(fig, stem) -> tuple[Path, Path]:
    """Write `fig` as ``stem.png`` and ``stem.svg``, each atomically; returns both paths."""
    stem = Path(stem)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    with atomic_path(png) as tmp:
        Path(tmp).write_bytes(figure_png(fig))
    with atomic_path(svg) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    return png, svg


def _figure_html(name: str, fig, png: bytes | None = None, files: str | None = None) -> str:
    data = base64.b64encode(png if png is not None else figure_png(fig)).decode("ascii")
    caption = html.escape(_caption(name))
    links = ""
    if files:
        f = html.escape(files)
        links = f' Files: <a href="{f}.png">PNG</a>, <a href="{f}.svg">SVG</a>.'
    return (f'<figure id="fig-{html.escape(name)}"><img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{caption}{links}</figcaption>'
            "</figure>")


def _meta_table(params: Mapping | None) -> str:
    rows = [{"parameter": k, "value": v if isinstance(v, str) else json.dumps(v, default=str)}
            for k, v in (params or {}).items()]
    info = versions()
    rows += [{"parameter": "graphpai version", "value": info["graphpai"]},
             {"parameter": "torch version", "value": info["torch"]},
             {"parameter": "written",
              "value": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}]
    return html_table(rows, ["parameter", "value"]).replace("<table>", '<table class="meta">', 1)


def _page(title: str, sections: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "\n".join(sections) + "</body></html>\n")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def check_report_dir(out_dir) -> Path:
    """`out_dir` as a Path if ``report.html`` and ``figures/`` can be written there; else
    :class:`~graphpai.errors.OutputError` (checked before any work is done)."""
    out = Path(out_dir)
    check_writable(out / "report.html")
    check_writable(out / "figures" / "figure.png")
    return out


def _write_figures(figures: Mapping, out: Path, stems: Mapping | None = None) -> dict:
    """Save each figure under ``out/figures/`` (PNG and SVG); name -> its ``<figure>`` html."""
    parts = {}
    for name, fig in figures.items():
        stem = (stems or {}).get(name, name)
        png, _ = save_figure(fig, out / "figures" / stem)
        parts[name] = _figure_html(name, fig, png.read_bytes(), files=f"figures/{stem}")
    return parts

# ---------------------------------------------------------------------------------- summary
def _power(value) -> str:
    """10^x for a compression (x to 2 decimals)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return str(value)
    return f"10^{round(math.log10(value), 2):g}"


def _percent(loss: float) -> str:
    return f"{100 * loss:.0f}%" if loss >= 0.005 else f"{100 * loss:.2g}%"


def study_summary(table, *, semantics: str = "channel") -> list[str]:
    """The page's written summary: how many points, then one sentence per (method, budget) on
    where it stops keeping every weight functional, what it loses first and from where it is
    disconnected, then the failures.

    Example: ``"RPI-ERK keeps every weight functional up to 10^1.5; it loses 12% of its kept
    weights at 10^2 and is disconnected from 10^3.5 on."``
    """
    rows = list(table)
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    failed = [r for r in rows if r.get("status", "ok") != "ok"]
    ratio_col, cut_col = f"{semantics}_functional_ratio", f"{semantics}_disconnected"
    lines = []
    if rows:
        seeds = sorted({str(r.get("seed")) for r in rows})
        targets = sorted({c for c in (_fig.as_float(r.get("compression")) for r in rows)
                          if c is not None})
        grid = (f", compressions {_power(targets[0])} .. {_power(targets[-1])}"
                if targets else "")
        lines.append(f"{len(rows)} points ({len(ok)} finished, {len(failed)} failed) on "
                     f"{', '.join(sorted({str(r.get('model')) for r in rows}))}{grid}, "
                     f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}; functional weights in "
                     f"the {semantics} semantics.")
    groups = defaultdict(lambda: defaultdict(list))
    for r in ok:
        ratio = _fig.as_float(r.get(ratio_col))
        target = _fig.as_float(r.get("compression"))
        if ratio is None or target is None:
            continue
        full = ratio >= 1.0
        if r.get(f"{semantics}_functional") is not None and r.get("kept") is not None:
            full = int(r[f"{semantics}_functional"]) == int(r["kept"])
        groups[(_fig.series_method(r), r.get("budget"))][target].append(
            (ratio, full, _fig._truthy(r.get(cut_col))))
    for key in sorted(groups, key=lambda k: (str(k[0]), str(k[1]))):
        label = _fig.series_label(*key)
        points = sorted(groups[key].items())
        fulls = [all(e[1] for e in entries) for _, entries in points]
        if all(fulls):
            lines.append(f"{label} keeps every weight functional over the whole grid "
                         f"(up to {_power(points[-1][0])}).")
            continue
        clauses = []
        prefix = 0
        while fulls[prefix]:
            prefix += 1
        if prefix:
            clauses.append(f"keeps every weight functional up to {_power(points[prefix - 1][0])}")
        cuts = [(c, sum(e[2] for e in entries), len(entries)) for c, entries in points]
        first_cut = next((i for i, (_, k, _) in enumerate(cuts) if k), None)
        if first_cut != prefix:
            c, entries = points[prefix]
            loss = 1.0 - sum(e[0] for e in entries) / len(entries)
            clauses.append(f"loses {_percent(loss)} of its kept weights at {_power(c)}")
        if first_cut is not None:
            c, k, n = cuts[first_cut]
            if all(k2 == n2 for _, k2, n2 in cuts[first_cut:]):
                clauses.append(f"is disconnected from {_power(c)} on")
            else:
                clauses.append(f"is first disconnected at {_power(c)} ({k} of {n} seeds)")
        text = "; it ".join(clauses[:1] + [" and ".join(clauses[1:])] if len(clauses) > 1
                           else clauses)
        lines.append(f"{label} {text}.")
    lines += _accuracy_summary(ok)
    if failed:
        first = failed[0]
        lines.append(f"{len(failed)} point{'s' if len(failed) != 1 else ''} failed, for example "
                     f"{_fig.series_label(_fig.series_method(first), first.get('budget'))} at "
                     f"{_power(_fig.as_float(first.get('compression')))}: "
                     f"{str(first.get('error') or 'no error recorded').splitlines()[0]}")
    return lines


def _accuracy_summary(rows) -> list[str]:
    """For a trained study: the best and worst (method, budget) by mean accuracy at the highest
    compression that has at least two of them, and the strongest rank correlation."""
    from .accuracy import accuracy_column
    from .correlation import correlations

    column = accuracy_column(rows)
    if column is None:
        return []
    means = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc, target = _fig.as_float(r.get(column)), _fig.as_float(r.get("compression"))
        if acc is not None and target is not None and not math.isnan(acc):
            means[target][_fig.series_label(_fig.series_method(r), r.get("budget"))].append(acc)
    lines = []
    shared = [c for c in sorted(means) if len(means[c]) >= 2]
    if shared:
        c = shared[-1]
        ranked = sorted(((sum(v) / len(v), k) for k, v in means[c].items()),
                        key=lambda t: (-t[0], t[1]))  # ties: alphabetical
        lines.append(f"Trained ({column}, mean over seeds): at {_power(c)} the best is "
                     f"{ranked[0][1]} ({ranked[0][0]:.3f}) and the worst {ranked[-1][1]} "
                     f"({ranked[-1][0]:.3f}).")
    scored = [r for r in correlations(rows, accuracy=column) if not math.isnan(r["kendall_tau"])]
    if scored:
        top = max(scored, key=lambda r: abs(r["kendall_tau"]))
        lines.append(f"Strongest rank correlation with {column}: {top['metric']} at "
                     f"{_power(_fig.as_float(top['compression']))} (Kendall tau "
                     f"{top['kendall_tau']:.2f}, Spearman rho {top['spearman_rho']:.2f}, "
                     f"n = {top['n']}).")
    return lines


# ---------------------------------------------------------------------------------- study page
def _sorted_rows(rows):
    def key(r):
        c = _fig.as_float(r.get("compression"))
        s = _fig.as_float(r.get("seed"))
        return (str(r.get("method")), str(r.get("budget")), c if c is not None else 0.0,
                s if s is not None else 0.0)

    return sorted(rows, key=key)


def study_page(table, *, params: Mapping | None = None, figures: Sequence[str] | None = None,
               title: str = "graphpai study") -> str:
    """The study's HTML page as text (`figures`: prepared ``<figure>`` snippets by figure
    name, or a list of them; None draws them inline without writing files). A trained study
    (an accuracy column) gets a section of accuracy figures and rank correlations."""
    rows = list(table)
    if figures is None:
        figures = {n: _figure_html(n, f) for n, f in _fig.study_figures(rows).items()}
    if not isinstance(figures, Mapping):
        figures = {str(i): part for i, part in enumerate(figures)}
    trained = {n: part for n, part in figures.items() if _is_accuracy_figure(n)}
    graph = [part for n, part in figures.items() if n not in trained]
    summary = "".join(f"<li>{html.escape(s)}</li>" for s in study_summary(rows))
    columns = [c for c in STUDY_COLUMNS if any(r.get(c) is not None for r in rows)]
    sections = [
        f'<section class="summary"><h2>Summary</h2><ul>{summary}</ul></section>',
        "<section><h2>Figures</h2>" + ("".join(graph) or "<p>No finished point to plot.</p>")
        + "</section>",
    ]
    if trained or _accuracy_column(rows):
        sections.append(_accuracy_section(rows, list(trained.values())))
    sections += [
        "<section><h2>Results</h2><p>One row per point (the full table, every column, is in "
        '<a href="results.csv">results.csv</a> and results.json beside this page).</p>'
        + html_table(_sorted_rows(rows), columns,
                     row_class=lambda r: "failed" if r.get("status", "ok") != "ok" else None)
        + "</section>",
        "<section><h2>Parameters</h2>" + _meta_table(params) + "</section>",
    ]
    return _page(title, sections)


def _is_accuracy_figure(name: str) -> bool:
    return name.startswith(("accuracy_vs_compression", "metric_accuracy_"))


def _accuracy_column(rows):
    from .accuracy import accuracy_column

    return accuracy_column(rows)


def _accuracy_section(rows, figures: Sequence[str]) -> str:
    """Accuracy figures and the rank-correlation table of a trained study ([RAM], [FS])."""
    from .accuracy import power_label
    from .correlation import correlations

    column = _accuracy_column(rows)
    text = (f"<p>Accuracy column: <code>{html.escape(str(column))}</code>. Kendall's tau and "
            "Spearman's rho of each graph metric with it over the points of one target "
            "compression (scipy.stats; '-' below 3 points or for a constant column).</p>")
    table = ""
    if column:
        stats = [{"compression": power_label(r["compression"]), "metric": r["metric"],
                  "n": r["n"], "kendall_tau": _nan_none(r["kendall_tau"]),
                  "kendall_p": _nan_none(r["kendall_p"]),
                  "spearman_rho": _nan_none(r["spearman_rho"]),
                  "spearman_p": _nan_none(r["spearman_p"])}
                 for r in correlations(rows, accuracy=column)]
        table = html_table(stats) if stats else ""
    return ("<section><h2>Accuracy and graph metrics</h2>" + text + "".join(figures)
            + table + "</section>")


def _nan_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def write_study_report(table, out_dir, *, params: Mapping | None = None,
                       title: str = "graphpai study") -> Path:
    """Write a study's figures and its self-contained ``report.html`` into `out_dir`.

    This is the one call a sweep makes when it finishes (and ``graphpai report --study DIR``
    when it re-renders): every figure of :func:`graphpai.report.figures.study_figures` the
    table has columns for goes to ``out_dir/figures/NAME.png`` and ``.svg``, then the page to
    ``out_dir/report.html``, each file atomically.

    Parameters
    ----------
    table : sequence of dict
        The results table, one flat dict per point (``graphpai.study.store.read_table``; the
        columns are listed in docs/study.md). Failed points are listed, not plotted.
    out_dir : str or Path
        The study's directory (created if needed).
    params : mapping, optional
        The study's parameters (model, methods, budgets, compressions, seeds, flags), shown in
        the page's parameter table; values that are not strings are shown as JSON.
    title : str
        The page's title.

    Returns
    -------
    Path
        ``out_dir/report.html``.

    Raises
    ------
    OutputError
        If `out_dir` cannot be created or written.
    DataError
        If a table value is not a number where a number belongs.
    """
    out = check_report_dir(out_dir)
    rows = list(table)
    parts = _write_figures(_fig.study_figures(rows), out)
    page = study_page(rows, params=params, figures=parts, title=title)
    path = out / "report.html"
    _write_text(path, page)
    return path


# ---------------------------------------------------------------------------------- masks page
def write_mask_report(report, out_dir, *, params: Mapping | None = None,
                      title: str = "graphpai mask report") -> Path:
    """Write the page of one or more masks (a :class:`graphpai.report.compare.MaskReport`):
    totals side by side, per mask the per-layer table and figures, and for each pair of masks
    the per-layer Jaccard overlaps and the full-spectrum distance. Returns the page's path."""
    out = check_report_dir(out_dir)
    figures = {}
    for entry in report.masks:
        rows = entry.layer_rows()
        figures[f"layer_bars:{entry.name}"] = _fig.layer_bars(rows)
        figures[f"layer_spectrum:{entry.name}"] = _fig.layer_spectrum(rows)
        figures[f"degree_histograms:{entry.name}"] = _fig.degree_histograms(entry.masks)
    stems = {name: _safe_stem(name, i) for i, name in enumerate(figures)}
    parts = _write_figures(figures, out, stems)
    summary = "".join(f"<li>{html.escape(s)}</li>" for s in report.summary())
    sections = [f'<section class="summary"><h2>Summary</h2><ul>{summary}</ul></section>',
                "<section><h2>Totals</h2>" + html_table(report.total_rows()) + "</section>"]
    for pair in report.comparisons:
        sections.append(
            f"<section><h2>{html.escape(pair.a)} vs {html.escape(pair.b)}</h2>"
            f"<p>{html.escape(pair.sentence())}</p>" + html_table(pair.rows()) + "</section>")
    for entry in report.masks:
        name = entry.name
        sections.append(
            f"<section><h2>Mask {html.escape(name)}</h2>"
            f"<p>{html.escape(entry.source)}</p>"
            + html_table(entry.layer_rows(), entry.LAYER_COLUMNS)
            + "".join(parts[f"{kind}:{name}"] for kind in
                      ("layer_bars", "layer_spectrum", "degree_histograms"))
            + "</section>")
    sections.append("<section><h2>Parameters</h2>" + _meta_table(params) + "</section>")
    path = out / "report.html"
    _write_text(path, _page(title, sections))
    return path


def _safe_stem(name: str, index: int) -> str:
    kind, _, mask = name.partition(":")
    clean = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in mask)[:40]
    return f"{kind}_{index}_{clean}"
