"""Spectral quantities of sparse layers: Ramanujan gaps, NaRC, IMDB and the full-spectrum
coordinate ([RAM], [FS]; docs/definitions.md#spectral).

Conventions, stated once: every layer is read in its fan-in view (docs/definitions.md#fan-in-view), ``B`` with rows =
fan-in positions (left nodes) and columns = output channels (right nodes); isolated nodes are
dropped before sizes and mean degrees ``d_L = E / n_l``, ``d_R = E / n_r`` are taken;
``sigma_1 >= sigma_2`` are the two largest singular values (exact, deterministic: see
:mod:`graphpai.spectral.solvers`); an entry that a gate does not score is None, never 0, except in
[FS]'s coordinate, where docs/definitions.md#full-spectrum counts it as 0.

The package is callable: ``graphpai.spectral(net, masks)`` is :func:`spectral`, and
``graphpai.spectral.distance(a, b)`` compares two reports.

- :func:`spectral`: the per-layer table and network means (`SpectralReport`);
  :func:`layer_spectrum`: the same row for one layer given as matrices.
- :mod:`.ramanujan`: `ramanujan_gap`, `canonical_gap`, `narc`, `imdb`, `spectrum`, `GATES`.
- :mod:`.fullspectrum`: `weighted_gap`, `fs_imdb`, `coordinate`, `distance`.
- :mod:`.solvers`: `top_singular_values`.

References
----------
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from .._callable import callable_module
from .fullspectrum import FsImdb, SpectralDistance, coordinate, distance, fs_imdb, weighted_gap
from .ramanujan import (FS_SUBGRAPH_GATE, GATES, Gate, Imdb, Spectrum, canonical_gap, imdb, narc,
                        ramanujan_gap, spectrum)
from .layer import LayerSpectrum, layer_spectrum
from .pairs import LayerPair, channel_overlap, pair_scores
from .report import Aggregate, SpectralReport, spectral
from .solvers import top_singular_values

__all__ = [
    "spectral", "SpectralReport", "LayerSpectrum", "Aggregate", "layer_spectrum", "distance",
    "SpectralDistance",
    "ramanujan_gap", "canonical_gap", "narc", "imdb", "Imdb", "spectrum", "Spectrum",
    "weighted_gap", "fs_imdb", "FsImdb", "coordinate", "top_singular_values", "GATES",
    "FS_SUBGRAPH_GATE", "Gate", "LayerPair", "pair_scores", "channel_overlap",
]

callable_module(__name__, spectral)
