"""Several masks of one network side by side, and how two of them differ (docs/report.md).

:func:`compare_masks` audits each mask in both semantics, counts its paths and effective nodes,
and computes its spectral report under both profiles; for every pair of masks it gives per
layer the Jaccard overlap of the kept weights and of the functional weights, and the
full-spectrum distance ([FS]) between their coordinates. This is what
``graphpai report --model NAME --masks A.pt --masks B.pt`` shows.

References
----------
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import GraphpaiError

__all__ = ["jaccard", "compare_masks", "MaskReport", "MaskEntry", "MaskComparison"]


def jaccard(a, b) -> float | None:
    """|A and B| / |A or B| of two boolean arrays of one shape; None when both are empty.

    >>> jaccard([1, 1, 0, 0], [1, 0, 1, 0])
    0.3333333333333333
    >>> jaccard([0, 0], [0, 0]) is None
    True
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise GraphpaiError(f"cannot overlap masks of shapes {a.shape} and {b.shape}; compare "
                            "masks of the same network")
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else None


@dataclass(frozen=True)
class MaskEntry:
    """One mask's measurements: ``audits`` by semantics, ``paths`` (None if not counted),
    ``spectra`` by profile."""

    name: str
    source: str
    masks: Mapping
    audits: Mapping
    paths: object
    spectra: Mapping

    LAYER_COLUMNS = ("layer", "weights", "kept", "density", "channel_functional_ratio",
                     "spatial_functional_ratio", "d_L", "d_R", "sigma_1", "sigma_2",
                     "ramanujan_bound", "delta_r_norm", "imdb", "narc", "coordinate_norm")

    def layer_rows(self) -> list[dict]:
        """The per-layer table: density, functional ratio per semantics, the [RAM] quantities
        (iclr23 gate) and [FS]'s norm S (neurips23 gate)."""
        from .figures import ramanujan_bound

        ram = self.spectra.get("iclr23")
        fs = self.spectra.get("neurips23")
        rows = []
        for i, layer in enumerate(next(iter(self.audits.values())).layers):
            row = {"layer": layer.layer, "weights": layer.weights, "kept": layer.kept,
                   "density": layer.kept / layer.weights if layer.weights else None}
            for semantics, result in self.audits.items():
                row[f"{semantics}_functional_ratio"] = result.layers[i].functional_ratio
            if ram is not None:
                s = ram.layers[i]
                row.update(d_L=s.d_L, d_R=s.d_R, sigma_1=s.sigma_1, sigma_2=s.sigma_2,
                           ramanujan_bound=ramanujan_bound(s.d_L, s.d_R),
                           delta_r_norm=s.delta_r_norm, imdb=s.imdb, narc=s.narc)
            if fs is not None:
                row["coordinate_norm"] = fs.layers[i].coordinate_norm
            rows.append(row)
        return rows

    def total_row(self) -> dict:
        """The network totals of this mask (one row of the side-by-side table)."""
        first = next(iter(self.audits.values()))
        row = {"mask": self.name, "N": first.N, "kept": first.kept,
               "direct_compression": first.direct_compression}
        for semantics, result in self.audits.items():
            row[f"{semantics}_functional"] = result.functional
            row[f"{semantics}_corrected_compression"] = result.corrected_compression
            row[f"{semantics}_functional_node_ratio"] = result.functional_node_ratio
        if self.paths is not None:
            row["log10_paths"] = self.paths.log10_paths
            row["effective_nodes"] = self.paths.effective_nodes
        for profile, report in self.spectra.items():
            for quantity in ("delta_r_norm", "imdb", "narc", "coordinate_norm"):
                row[f"{profile}_{quantity}"] = report.means[quantity].mean
        return row


@dataclass(frozen=True)
class MaskComparison:
    """Two masks of one network: per-layer rows (Jaccard of kept and functional weights, the
    full-spectrum distance) and the network-level `distance` ([FS], neurips23 profile)."""

    a: str
    b: str
    layers: tuple
    distance: object

    def rows(self) -> list[dict]:
        """The per-layer table (without the intersection and union counts behind it)."""
        return [{k: v for k, v in row.items() if not k.startswith("_")} for row in self.layers]

    def totals(self) -> dict:
        """Jaccard overlaps over all weights of the network, and the mean distance."""
        out = {}
        for key in self.layers[0] if self.layers else ():
            if key.startswith("jaccard_"):
                inter = sum(r[f"_inter_{key}"] for r in self.layers)
                union = sum(r[f"_union_{key}"] for r in self.layers)
                out[key] = inter / union if union else None
        out["fs_distance_mean"] = self.distance.mean.mean if self.distance else None
        return out

    def sentence(self) -> str:
        t = self.totals()
        parts = [f"{label} overlap {_fmt(t.get(key))}" for key, label in (
            ("jaccard_kept", "kept-weight"), ("jaccard_functional_channel", "functional-weight "
             "(channel)"), ("jaccard_functional_spatial", "functional-weight (spatial)"))
            if key in t]
        parts.append(f"mean full-spectrum distance {_fmt(t['fs_distance_mean'])}")
        return f"{self.a} vs {self.b}: Jaccard " + ", ".join(parts) + "."


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class MaskReport:
    """Result of :func:`compare_masks`: one `MaskEntry` per mask, one `MaskComparison` per
    pair."""

    masks: tuple
    comparisons: tuple

    def total_rows(self) -> list[dict]:
        return [entry.total_row() for entry in self.masks]

    def summary(self) -> list[str]:
        """One sentence per mask (compression, functional share, disconnection) and per pair."""
        lines = []
        for entry in self.masks:
            first = next(iter(entry.audits.values()))
            said = {}
            for semantics, r in entry.audits.items():
                if r.disconnected:
                    text = "is disconnected"
                else:
                    text = (f"keeps {r.functional:,} of {r.kept:,} weights functional "
                            f"({r.functional / r.kept:.1%}; corrected compression "
                            f"{r.corrected_compression:.4g})")
                said.setdefault(text, []).append(semantics)
            parts = [f"{text} in the {' and '.join(sems)} semantics"
                     for text, sems in said.items()]
            lines.append(f"{entry.name}: direct compression {first.direct_compression:.4g}; it "
                         + "; it ".join(parts) + ".")
        lines += [pair.sentence() for pair in self.comparisons]
        return lines

    def to_dict(self) -> dict:
        from .._results import jsonable

        return jsonable({
            "masks": [{"name": e.name, "source": e.source, "total": e.total_row(),
                       "layers": e.layer_rows()} for e in self.masks],
            "comparisons": [{"a": c.a, "b": c.b, "total": c.totals(),
                             "layers": c.rows()} for c in self.comparisons],
        })


def _pair(a: MaskEntry, b: MaskEntry) -> MaskComparison:
    from ..spectral import distance

    dist = None
    if "neurips23" in a.spectra and "neurips23" in b.spectra:
        dist = distance(a.spectra["neurips23"], b.spectra["neurips23"])
    rows = []
    for name in a.masks:
        row = {"layer": name, "kept_a": int(np.count_nonzero(a.masks[name])),
               "kept_b": int(np.count_nonzero(b.masks[name]))}
        pairs = [("jaccard_kept", a.masks[name], b.masks[name])]
        pairs += [(f"jaccard_functional_{s}", a.audits[s].functional_masks[name],
                   b.audits[s].functional_masks[name]) for s in a.audits if s in b.audits]
        for key, ma, mb in pairs:
            ma, mb = np.asarray(ma, dtype=bool), np.asarray(mb, dtype=bool)
            row[key] = jaccard(ma, mb)
            row[f"_inter_{key}"] = int(np.count_nonzero(ma & mb))
            row[f"_union_{key}"] = int(np.count_nonzero(ma | mb))
        row["fs_distance"] = dist.layers.get(name) if dist is not None else None
        rows.append(row)
    return MaskComparison(a.name, b.name, tuple(rows), dist)


def compare_masks(net, masks: Mapping, *, weights=None, semantics: Sequence[str] = ("channel",
                  "spatial"), paths: bool = True, profiles: Sequence[str] = ("iclr23",
                  "neurips23"), sources: Mapping | None = None, device="cpu") -> MaskReport:
    """Measure each mask of one network and compare every pair.

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
    masks : mapping of name -> MaskSet
        The masks, by the name the report shows (for example the file name).
    weights : mapping of layer name -> array, optional
        Weights for the weighted spectral quantities (the same for every mask, so the
        full-spectrum distance compares topologies); None leaves them out for a NetGraph.
    semantics : sequence of {"channel", "spatial"}
        Audits to run (``"spatial"`` needs torch).
    paths : bool
        Count effective paths and nodes (exact, spatial semantics when it is in `semantics`).
    profiles : sequence of {"iclr23", "neurips23"}
        Spectral reports to compute; the distance needs ``"neurips23"``.
    sources : mapping of name -> str, optional
        Where each mask came from (shown under its heading).

    Returns
    -------
    MaskReport

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 2), Group("h", 2), Group("y", 1)],
    ...              [Layer("a", "linear", (2, 2), "x", "h"), Layer("b", "linear", (1, 2), "h", "y")],
    ...              [], ["x"], ["y"])
    >>> r = compare_masks(g, {"A": {"a": [[1, 1], [0, 0]], "b": [[1, 0]]},
    ...                       "B": {"a": [[1, 0], [0, 1]], "b": [[1, 1]]}},
    ...                   semantics=("channel",), paths=False)
    >>> [row["jaccard_kept"] for row in r.comparisons[0].rows()]  # a: 1 of 3, b: 1 of 2
    [0.3333333333333333, 0.5]
    >>> [row["jaccard_functional_channel"] for row in r.comparisons[0].rows()]
    [0.3333333333333333, 0.5]
    """
    from ..functional import audit
    from ..graph import as_graph
    from ..masks import MaskSet
    from ..paths import paths as count_paths
    from ..spectral import spectral

    if not masks:
        raise GraphpaiError("compare_masks needs at least one mask")
    graph = as_graph(net)
    entries = []
    for name, mask in masks.items():
        mask = (mask if isinstance(mask, MaskSet) else MaskSet(mask)).validate(graph)
        audits = {s: audit(graph, mask, semantics=s, device=device) for s in semantics}
        counted = None
        if paths:
            counted = count_paths(graph, mask, semantics="spatial" if "spatial" in semantics
                                  else "channel", device=device)
        spectra = {p: spectral(graph, mask, weights, profile=p) for p in profiles}
        entries.append(MaskEntry(str(name), (sources or {}).get(name, str(name)), mask, audits,
                                 counted, spectra))
    pairs = [_pair(a, b) for i, a in enumerate(entries) for b in entries[i + 1:]]
    return MaskReport(tuple(entries), tuple(pairs))
