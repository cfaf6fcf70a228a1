r"""Ramanujan quantities of one layer's bipartite graph: Delta_r, Delta_s, NaRC, IMDB ([RAM]).

Every function takes the fan-in biadjacency ``B`` of a layer (docs/definitions.md#fan-in-view): rows are the fan-in
positions (the left nodes), columns the output channels (the right nodes), 0/1 entries; use
:meth:`graphpai.graph.NetGraph.biadjacency`. Conventions, stated once (docs/definitions.md#spectral):

- Isolated nodes are dropped first; ``n_l, n_r`` count the rest, ``E`` the edges, and the mean
  degrees are ``d_L = E / n_l`` and ``d_R = E / n_r``.
- ``sigma_1 >= sigma_2`` are the two largest singular values of ``B`` counted with multiplicity
  (the two largest eigenvalue magnitudes of ``[[0, B], [B^T, 0]]``); ``mu_hat = sigma_2``. They
  come from :func:`graphpai.spectral.solvers.top_singular_values`.
- A quantity is *scored* only if the mean degrees pass the profile's gate (`GATES`); an
  unscored quantity is None, never 0.

References
----------
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023. Code: VITA-Group/ramanujan-on-pai.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from .._results import jsonable
from .formulas import (FS_SUBGRAPH_GATE, GATES, Gate, Spectrum, delta_r, delta_s, get_gate,
                       narc_value)
from .layer import layer_spectrum
from .solvers import DENSE_MAX, as_matrix, drop_isolated, singular_values_compact

__all__ = [
    "Gate", "GATES", "FS_SUBGRAPH_GATE", "Spectrum", "Imdb", "spectrum", "ramanujan_gap",
    "canonical_gap", "narc", "imdb", "get_gate", "gated_spectrum",
]


@dataclass(frozen=True)
class Imdb:
    """IMDB of a layer ([RAM]): mean normalised Delta_r over scored degree subgraphs K_d.

    ``normalized``/``raw`` are None when no K_d is scored; ``subgraphs`` counts the scored ones.
    """

    normalized: float | None
    raw: float | None
    subgraphs: int

    def to_dict(self) -> dict:
        return jsonable(asdict(self))


def _binary(matrix) -> bool:
    if sp.issparse(matrix):
        return bool(np.all(matrix.data == 1))
    return bool(np.all((matrix == 0) | (matrix == 1)))


def spectrum(biadjacency, *, layer=None, dense_max=DENSE_MAX) -> Spectrum:
    """Sizes, mean degrees and ``sigma_1, sigma_2`` of a biadjacency after dropping isolated nodes.

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        0/1 fan-in biadjacency, or a weighted one (``|W * M|``: zero entries are not edges).
    layer : str, optional
        Named in a :class:`~graphpai.errors.SolverError`.
    dense_max : int
        Passed to the solver (dense Gram up to this smaller side, ARPACK above).

    Returns
    -------
    Spectrum

    Examples
    --------
    >>> s = spectrum(np.ones((3, 4)))   # K_{3,4}: sigma_1 = sqrt(12), sigma_2 = 0
    >>> s.n_l, s.n_r, s.E, s.d_L, s.d_R, round(s.sigma_1 ** 2, 9), s.sigma_2
    (3, 4, 12, 4.0, 3.0, 12.0, 0.0)
    """
    compact, _, _ = drop_isolated(as_matrix(biadjacency, "biadjacency"))
    return _spectrum_compact(compact, binary=_binary(compact), layer=layer, dense_max=dense_max)


def gated_spectrum(matrix, profile) -> Spectrum | None:
    """`spectrum` of `matrix` if its mean degrees pass `profile`'s gate, else None."""
    gate = get_gate(profile)
    s = spectrum(matrix)
    return None if gate.failure(s.d_L, s.d_R) else s


def _spectrum_compact(compact, *, binary, layer=None, dense_max=DENSE_MAX) -> Spectrum:
    n_l, n_r = compact.shape
    edges = int(compact.nnz if sp.issparse(compact) else np.count_nonzero(compact))
    if edges == 0:
        return Spectrum(0, 0, 0, None, None, 0.0, 0.0)
    s1, s2 = singular_values_compact(compact, 2, binary=binary, layer=layer, dense_max=dense_max)
    return Spectrum(n_l, n_r, edges, edges / n_l, edges / n_r, float(s1), float(s2))


# ----------------------------------------------------------------------------- public metrics
def ramanujan_gap(biadjacency, *, normalized=False, profile="iclr23"):
    r"""Ramanujan gap of one layer's bipartite graph ([RAM]; docs/definitions.md#spectral).

    :math:`\Delta_r = \sqrt{d_L - 1} + \sqrt{d_R - 1} - \hat\mu` with :math:`\hat\mu = \sigma_2(B)`
    and mean degrees d_L = E/n_l, d_R = E/n_r after isolated nodes are dropped.

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        0/1 fan-in biadjacency, as from `NetGraph.biadjacency`.
    normalized : bool
        Divide by sqrt(d_L - 1) + sqrt(d_R - 1), the form plotted in [RAM].
    profile : {"iclr23", "neurips23"}
        Whose gate applies: iclr23 needs d_L >= 3 and d_R >= 3, neurips23 d_R >= 3 and d_L > 1.

    Returns
    -------
    float or None
        The gap; None if the layer fails the gate or has no edge (an unscored layer is never 0).

    Examples
    --------
    >>> round(ramanujan_gap(1 - np.eye(4)), 6)  # K_{4,4} minus a matching: sigma_2 = 1
    1.828427
    """
    s = gated_spectrum(biadjacency, profile)
    return None if s is None else delta_r(s, normalized)


def canonical_gap(biadjacency, *, normalized=False, profile="iclr23"):
    r"""Canonical spectral gap ([RAM]; docs/definitions.md#spectral): :math:`\Delta_s = 2\sqrt{\sigma_1 - 1} - \hat\mu`.

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        0/1 fan-in biadjacency.
    normalized : bool
        Divide by ``2 sqrt(sigma_1 - 1)``.
    profile : {"iclr23", "neurips23"}
        Whose gate applies (see `GATES`).

    Returns
    -------
    float or None
        None if the layer fails the gate or has no edge, or if ``sigma_1 < 1`` (possible only
        for a weighted matrix: a 0/1 one with an edge has ``sigma_1 >= 1``), where the square
        root is not real; normalised, also if ``sigma_1 = 1``.

    Examples
    --------
    >>> round(canonical_gap(np.ones((5, 5))), 6)  # K_{5,5}: sigma_1 = 5, sigma_2 = 0
    4.0
    >>> canonical_gap(np.full((3, 3), 0.1)) is None  # sigma_1 = 0.3
    True
    """
    s = gated_spectrum(biadjacency, profile)
    return None if s is None else delta_s(s, normalized)


def narc(biadjacency, *, profile="iclr23"):
    r"""NaRC, the normalised Ramanujan criterion of [RAM] (docs/definitions.md#spectral).

    .. math:: \mathrm{NaRC} = \frac{(\hat\mu^2/4 + 1)\sqrt{n_l n_r}
              - |2E - (d_L / n_{out})\, n_l n_r|}{n_{in} n_{out}}

    with ``n_in, n_out`` the unfiltered shape of `biadjacency`. The ``2E`` is [RAM]'s reference
    behaviour (its edge list stores each edge twice). With no isolated node this equals
    ``(mu_hat^2/4 + 1)/sqrt(n_in n_out) - density``. NaRC <= 0 reads as pseudo-random, > 0 as
    structured.

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        0/1 fan-in biadjacency.
    profile : {"iclr23", "neurips23"}
        Whose gate applies (see `GATES`).

    Returns
    -------
    float or None
        None if the layer fails the gate or has no edge.

    Examples
    --------
    >>> round(narc(np.ones((4, 4))), 6)  # K_{4,4}: 1/4 - 1
    -0.75
    """
    b = as_matrix(biadjacency, "biadjacency")
    s = gated_spectrum(b, profile)
    return None if s is None else narc_value(s, *b.shape)


def imdb(biadjacency, *, profile="iclr23") -> Imdb:
    r"""Iterative mean difference of bound, IMDB ([RAM]; docs/definitions.md#spectral).

    Left nodes are grouped by their degree d in the full layer; d = 0 and groups of fewer than 3
    nodes are skipped ([RAM]'s reference compares its threshold 3 with the group's size, not with
    d). K_d is a group plus the output channels it touches; a K_d is scored if its mean degrees
    (``d_L = d``, ``d_R = n_d d / n_out_d``) pass the profile's gate. IMDB is the mean of the
    normalised Delta_r over scored K_d, with equal weights.

    Parameters
    ----------
    biadjacency : scipy.sparse array or ndarray, shape (n_in, n_out)
        0/1 fan-in biadjacency.
    profile : {"iclr23", "neurips23"}
        Whose gate applies to each K_d (see `GATES`).

    Returns
    -------
    Imdb
        ``normalized`` (IMDB), ``raw`` (mean unnormalised Delta_r) and ``subgraphs`` (scored K_d).

    Examples
    --------
    Three left nodes of degree 4 into K_{3,4}: one K_d with sigma_2 = 0, d_L = 4, d_R = 3.

    >>> r = imdb(np.ones((3, 4)))
    >>> r.subgraphs, round(r.raw, 6), r.normalized
    (1, 3.146264, 1.0)
    """
    row = layer_spectrum(biadjacency, profile=profile)
    return Imdb(row.imdb, row.imdb_raw, row.imdb_subgraphs)
