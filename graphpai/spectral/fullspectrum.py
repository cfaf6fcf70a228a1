r"""Full-spectrum quantities of [FS]: weighted gap, IMDB_r, IMDB_lambda, coordinate, distance.

Layer functions take the fan-in biadjacency ``B`` (0/1; rows are fan-in positions, columns output
channels, docs/definitions.md#fan-in-view) and the weighted ``X = |W * M|`` of the same shape (a kept weight that is
exactly 0 is not an edge), as :meth:`graphpai.graph.NetGraph.biadjacency` gives them with and
without ``weights``. The conventions of :mod:`graphpai.spectral.ramanujan` hold (docs/definitions.md#spectral).

References
----------
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023. Code: ScottHoang/dst-ram-pruning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .._results import jsonable
from ..errors import GraphpaiError, MaskError
from .ramanujan import gated_spectrum
from .layer import layer_spectrum
from .report import Aggregate, SpectralReport

__all__ = ["FsImdb", "SpectralDistance", "weighted_gap", "fs_imdb", "coordinate", "distance"]


@dataclass(frozen=True)
class FsImdb:
    """[FS]'s IMDB variants of one layer; None when no K_d is scored.

    docs/definitions.md#full-spectrum writes "0 if no group is scored": that 0 is what the coordinate uses; here the
    unscored value stays None so that it is never mistaken for a measured 0.
    """

    imdb_r: float | None
    imdb_lambda: float | None
    subgraphs: int

    def to_dict(self) -> dict:
        return jsonable(asdict(self))


@dataclass(frozen=True)
class SpectralDistance:
    """Result of :func:`distance`: per-layer L2 distance between [FS] coordinates and the mean.

    ``layers`` maps layer name -> distance (None where either report has no coordinate; the
    reason is in ``reasons``); ``mean`` averages the scored layers.
    """

    profile: str
    layers: dict
    mean: Aggregate
    reasons: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return jsonable({"profile": self.profile, "layers": dict(self.layers),
                         "mean": self.mean.to_dict(), "reasons": dict(self.reasons)})


def weighted_gap(weighted, *, profile="neurips23"):
    r"""Weighted spectral gap ([FS]; docs/definitions.md#spectral): :math:`\lambda = \sigma_1(X) - \sigma_2(X)`.

    Parameters
    ----------
    weighted : scipy.sparse array or ndarray, shape (n_in, n_out)
        ``X = |W * M|`` in the fan-in orientation; zero entries are not edges.
    profile : {"neurips23", "iclr23"}
        Whose gate applies to the mean degrees of X's nonzero pattern. neurips23 ([FS], default
        here): mean output-channel degree d_R >= 3 and mean fan-in degree d_L > 1.

    Returns
    -------
    float or None
        None if X fails the gate or has no nonzero entry.

    Examples
    --------
    >>> x = np.array([[2.0, 0, 0], [0, 1, 0], [0, 0, 1]] * 3)  # d_L = 1: fails neurips23
    >>> weighted_gap(x) is None
    True
    >>> round(weighted_gap(np.full((4, 3), 0.5)), 12)  # 0.5 K_{4,3}: 0.5 sqrt(12) - 0
    1.732050807569
    """
    s = gated_spectrum(weighted, profile)
    return None if s is None else s.sigma_1 - s.sigma_2


def fs_imdb(biadjacency, weighted=None) -> FsImdb:
    r"""IMDB_r and IMDB_lambda of one layer ([FS]; docs/definitions.md#spectral).

    Fan-in positions are grouped by degree d in B (d = 0 and groups of fewer than 2 skipped);
    K_d is a group plus the outputs it touches (``n_d`` and ``n_out_d`` nodes), scored if
    ``d >= 3`` and its mean output degree ``n_d d / n_out_d > 1`` (`FS_SUBGRAPH_GATE`; no
    profile changes this). With :math:`c_d = \max(n_d, n_{out,d}) / (n_d + n_{out,d} - 1)`:

    .. math:: \mathrm{IMDB}_r = \operatorname{mean}_d\, c_d \Delta_r(K_d), \qquad
              \mathrm{IMDB}_\lambda = \operatorname{mean}_d\, c_d \lambda(K_d)

    with the unnormalised Ramanujan gap of the 0/1 K_d and the weighted gap of X on K_d.

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        0/1 fan-in biadjacency.
    weighted : scipy.sparse array or ndarray, optional
        ``|W * M|`` of the same shape; without it ``imdb_lambda`` is None.

    Returns
    -------
    FsImdb

    Examples
    --------
    K_{3,4}: one group (d = 4, n_d = 3, n_out_d = 4), c_d = 4/6, Delta_r = sqrt(3) + sqrt(2).

    >>> r = fs_imdb(np.ones((3, 4)))
    >>> r.subgraphs, round(r.imdb_r, 6), r.imdb_lambda
    (1, 2.09751, None)
    """
    row = layer_spectrum(biadjacency, weighted)
    return FsImdb(row.imdb_r, row.imdb_lambda, row.fs_subgraphs)


def coordinate(biadjacency, weighted, *, profile="neurips23"):
    r"""[FS]'s full-spectrum coordinate of one layer (docs/definitions.md#spectral).

    :math:`v = (\Delta_r, \lambda, \mathrm{IMDB}_r, \mathrm{IMDB}_\lambda)` of the whole layer
    with unscored entries as 0; its L2 norm is [FS]'s "distance from the origin".

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        0/1 fan-in biadjacency.
    weighted : scipy.sparse array or ndarray
        ``|W * M|`` of the same shape.
    profile : {"neurips23", "iclr23"}
        Gate of Delta_r and lambda ([FS]'s own is neurips23); IMDB_r and IMDB_lambda always use
        `FS_SUBGRAPH_GATE`.

    Returns
    -------
    ndarray of float64, shape (4,)

    Examples
    --------
    >>> v = coordinate(np.ones((3, 4)), np.ones((3, 4)))
    >>> [round(float(e), 6) for e in v], round(float(np.linalg.norm(v)), 6)
    ([3.146264, 3.464102, 2.09751, 2.309401], 5.624221)
    """
    if weighted is None:
        raise MaskError("the coordinate needs the weighted matrix |W * M| as well as B")
    return np.array(layer_spectrum(biadjacency, weighted, profile=profile).coordinate,
                    dtype=np.float64)


def distance(a, b) -> SpectralDistance:
    """L2 distance between the [FS] coordinates of two states of one network (docs/definitions.md#spectral).

    For example init vs trained weights, or two masks: ``distance(spectral(net, m, "init"),
    spectral(net, m))``.

    Parameters
    ----------
    a, b : SpectralReport
        Reports of the same network (same layer names) under the same profile.

    Returns
    -------
    SpectralDistance
        Per-layer ``||v_a - v_b||`` and their mean over layers where both coordinates exist.

    Raises
    ------
    GraphpaiError
        If the reports have different layers or profiles.

    Examples
    --------
    >>> from graphpai import Group, Layer, NetGraph
    >>> from graphpai.spectral import spectral
    >>> g = NetGraph([Group("x", 8), Group("y", 6)], [Layer("fc", "linear", (6, 8), "x", "y")],
    ...              [], ["x"], ["y"])

    Doubling the weights of K_{8,6} doubles lambda = sqrt(48) and IMDB_lambda = (8/13) sqrt(48)
    and leaves the 0/1 entries alone, so the distance is sqrt(48 (1 + (8/13)^2)):

    >>> one = spectral(g, weights={"fc": np.ones((6, 8))})
    >>> two = spectral(g, weights={"fc": 2 * np.ones((6, 8))})
    >>> round(distance(one, two).layers["fc"], 6), round((48 * (1 + (8 / 13) ** 2)) ** 0.5, 6)
    (8.134956, 8.134956)
    """
    if not (isinstance(a, SpectralReport) and isinstance(b, SpectralReport)):
        raise GraphpaiError(f"distance compares two SpectralReports (from graphpai.spectral), "
                            f"not {type(a).__name__} and {type(b).__name__}")
    names_a = [row.layer for row in a.layers]
    names_b = [row.layer for row in b.layers]
    if names_a != names_b:
        raise GraphpaiError(f"the reports cover different layers ({names_a} vs {names_b}); "
                            "compare two states of the same network")
    if a.profile != b.profile:
        raise GraphpaiError(f"the reports use profiles {a.profile!r} and {b.profile!r}; compute "
                            "both with the same profile, since it decides which entries count")
    layers, reasons = {}, {}
    for ra, rb in zip(a.layers, b.layers):
        if ra.coordinate is None or rb.coordinate is None:
            missing = ra if ra.coordinate is None else rb
            layers[ra.layer] = None
            reasons[ra.layer] = "no coordinate: " + missing.reasons.get("coordinate", "unknown")
            continue
        va, vb = np.asarray(ra.coordinate), np.asarray(rb.coordinate)
        layers[ra.layer] = float(math.sqrt(float(np.sum((va - vb) ** 2))))
    values = [v for v in layers.values() if v is not None]
    mean = Aggregate(float(np.mean(values)) if values else None, len(values), len(layers))
    return SpectralDistance(a.profile, layers, mean, reasons)
