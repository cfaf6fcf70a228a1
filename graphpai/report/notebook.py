"""Short reprs and compact HTML tables of the result objects, for the console and Jupyter.

`AuditResult`, `PathsResult` and `SpectralReport` call these from their ``__repr__`` and
``_repr_html_``: a one-line summary instead of the dataclass's field dump (tens of thousands of
characters for a real network), and in a notebook the network totals and a per-layer table
(long networks show their first and last layers).
"""

from __future__ import annotations

import html
import math

from .html import html_table
from .tables import format_value

__all__ = ["audit_repr", "audit_html", "paths_repr", "paths_html", "spectral_repr",
           "spectral_html", "MAX_ROWS"]

MAX_ROWS = 30
"""Per-layer rows shown in a notebook; a longer table shows its first and last MAX_ROWS / 2."""


def _compression(value: float) -> str:
    return "inf (disconnected)" if math.isinf(value) else f"{value:.4g}"


def _clip(rows: list[dict], first_column: str) -> list[dict]:
    if len(rows) <= MAX_ROWS:
        return rows
    half = MAX_ROWS // 2
    gap = {first_column: f"... {len(rows) - 2 * half} more layers ..."}
    return rows[:half] + [gap] + rows[-half:]


def _block(title: str, facts: list[tuple[str, object]], table: str) -> str:
    items = "".join(f"<tr><th class=\"t\">{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in facts)
    return (f"<div><strong>{html.escape(title)}</strong>"
            f"<table>{items}</table>{table}</div>")


# ---------------------------------------------------------------------------------- audit
def audit_repr(result) -> str:
    """``AuditResult(channel: 22 layers, kept 2,715 of 270,896, functional 2,625, corrected
    compression 103.2)``."""
    return (f"AuditResult({result.semantics}: {len(result.layers)} layers, kept "
            f"{result.kept:,} of {result.N:,}, functional {result.functional:,}, corrected "
            f"compression {_compression(result.corrected_compression)})")


def audit_html(result) -> str:
    """The totals and a per-layer table (kept, functional, ratio, functional channels)."""
    rows = [{"layer": r.layer, "weights": r.weights, "kept": r.kept, "functional": r.functional,
             "ratio": r.functional_ratio, "functional channels": r.functional_channels,
             "channels": r.out_channels} for r in result.layers]
    facts = [("semantics", result.semantics), ("weights N", f"{result.N:,}"),
             ("kept", f"{result.kept:,}"), ("functional", f"{result.functional:,}"),
             ("direct compression", _compression(result.direct_compression)),
             ("corrected compression", _compression(result.corrected_compression)),
             ("functional nodes", f"{result.functional_nodes:,} of {result.nodes:,}")]
    return _block("AuditResult", facts, html_table(_clip(rows, "layer")))


# ---------------------------------------------------------------------------------- paths
def _log10(value: float) -> str:
    return "-inf (disconnected)" if value == -math.inf else f"{value:.4f}"


def paths_repr(result) -> str:
    """``PathsResult(default, spatial: log10 paths 23.41, log10 channel paths 30.2, effective
    nodes 650 of 701)``."""
    return (f"PathsResult({result.profile}, {result.semantics}: log10 paths "
            f"{_log10(result.log10_paths)}, log10 channel paths "
            f"{_log10(result.log10_channel_paths)}, effective nodes {result.effective_nodes:,} "
            f"of {result.nodes:,})")


def paths_html(result) -> str:
    """The path counts and the counted tensors."""
    rows = [{"tensor": t.group, "via": ", ".join(t.via), "channels": t.channels,
             "effective": t.effective} for t in result.tensors]
    facts = [("profile", result.profile), ("semantics", result.semantics),
             ("log10 effective paths", _log10(result.log10_paths)),
             ("log10 channel paths", _log10(result.log10_channel_paths)),
             ("effective nodes", f"{result.effective_nodes:,} of {result.nodes:,}")]
    return _block("PathsResult", facts, html_table(_clip(rows, "tensor")))


# ---------------------------------------------------------------------------------- spectral
_MEANS = ("delta_r_norm", "imdb", "narc", "weighted_gap", "coordinate_norm")
_LAYER = ("layer", "E", "d_L", "d_R", "sigma_1", "sigma_2", "delta_r_norm", "imdb", "narc",
          "weighted_gap", "coordinate_norm")


def _mean(aggregate) -> str:
    return f"{format_value(aggregate.mean)} ({aggregate.scored}/{aggregate.layers} scored)"


def spectral_repr(report) -> str:
    """``SpectralReport(iclr23: 22 layers, delta_r_norm 0.1 (20/22 scored), ...)``."""
    means = ", ".join(f"{k} {_mean(report.means[k])}" for k in ("delta_r_norm", "imdb")
                      if k in report.means)
    return f"SpectralReport({report.profile}: {len(report.layers)} layers, {means})"


def spectral_html(report) -> str:
    """The network means over scored layers and a per-layer table."""
    rows = [{c: getattr(r, c) for c in _LAYER} for r in report.layers]
    facts = [("profile", report.profile), ("weights", report.weights or "none")]
    facts += [(f"mean {k}", _mean(report.means[k])) for k in _MEANS if k in report.means]
    facts.append(("share of scored layers with Delta_r > 0", _mean(report.positive_gap_share)))
    return _block("SpectralReport", facts, html_table(_clip(rows, "layer"), list(_LAYER)))
