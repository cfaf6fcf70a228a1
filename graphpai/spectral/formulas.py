r"""The per-graph formulas and gates of [RAM] and [FS]: what every spectral function shares.

A (sub)graph is summarised by a :class:`Spectrum` (sizes, mean degrees, ``sigma_1, sigma_2``);
the Ramanujan gap, the canonical gap and NaRC are functions of it, and a :class:`Gate` decides
whether it is scored (docs/spectral.md, "Profiles and gates"). Nothing here solves for singular
values: :mod:`.layer` and the single-layer functions of :mod:`.ramanujan` and
:mod:`.fullspectrum` build on this module.

References
----------
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023. Code: VITA-Group/ramanujan-on-pai.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .._results import jsonable
from ..errors import UnknownMethodError

__all__ = ["Gate", "GATES", "FS_SUBGRAPH_GATE", "get_gate", "Spectrum", "ramanujan_bound",
           "delta_r", "delta_s", "delta_s_undefined", "narc_value"]


@dataclass(frozen=True)
class Gate:
    """A mean-degree gate: a (sub)graph is scored only if ``d_L`` and ``d_R`` pass it.

    ``d_L`` is the mean degree of the fan-in positions (left), ``d_R`` that of the output
    channels (right). A bound is ``>=`` unless its ``strict_*`` flag makes it ``>``.
    """

    name: str
    rule: str
    min_d_L: float
    min_d_R: float
    strict_L: bool = False
    strict_R: bool = False

    def failure(self, d_L, d_R) -> str | None:
        """None if (d_L, d_R) passes, else the reason, e.g. ``"gate iclr23: d_L = 2.5 < 3"``."""
        if d_L is None or d_R is None:
            return "empty layer"
        for label, value, bound, strict in (("d_L", d_L, self.min_d_L, self.strict_L),
                                            ("d_R", d_R, self.min_d_R, self.strict_R)):
            if (value <= bound) if strict else (value < bound):
                sign = "<=" if strict else "<"
                shown = f"{value:.4g}"
                if float(shown) == bound != value:  # 2.99999 must not read "3 < 3"
                    shown = repr(float(value))
                return f"gate {self.name}: {label} = {shown} {sign} {bound:g}"
        return None

    def passes(self, d_L, d_R) -> bool:
        return self.failure(d_L, d_R) is None


GATES: dict[str, Gate] = {
    # [RAM]: both mean degrees at least 3.
    "iclr23": Gate("iclr23", "d_L >= 3 and d_R >= 3", 3, 3),
    # [FS] orients left = output channels: mean output-channel degree >= 3, mean fan-in degree > 1.
    "neurips23": Gate("neurips23", "d_R >= 3 and d_L > 1", 1, 3, strict_L=True),
}
"""The profiles' whole-layer gates (docs/definitions.md#spectral). The profile's gate applies to every whole-layer
quantity and to the [RAM] IMDB subgraphs."""

FS_SUBGRAPH_GATE = Gate("fs-subgraph", "d >= 3 and d_R(K_d) > 1", 3, 1, strict_R=True)
"""[FS]'s gate on a degree-group subgraph K_d (left degree d, mean output degree d_R(K_d))."""


def get_gate(profile: str) -> Gate:
    """The whole-layer gate of `profile` ("iclr23" or "neurips23")."""
    try:
        return GATES[profile]
    except (KeyError, TypeError):
        raise UnknownMethodError(f"unknown spectral profile {profile!r}; profiles are "
                                 f"{', '.join(sorted(GATES))}") from None


@dataclass(frozen=True)
class Spectrum:
    """Sizes, mean degrees and top-2 singular values of a bipartite graph (docs/definitions.md#spectral).

    ``d_L``/``d_R`` are None for a graph with no edge (then ``sigma_1 = sigma_2 = 0``).
    For a weighted matrix ``E`` counts the nonzero entries.
    """

    n_l: int
    n_r: int
    E: int
    d_L: float | None
    d_R: float | None
    sigma_1: float
    sigma_2: float

    def to_dict(self) -> dict:
        return jsonable(asdict(self))


def ramanujan_bound(d_L: float, d_R: float) -> float:
    """``sqrt(d_L - 1) + sqrt(d_R - 1)``, the Ramanujan bound on ``mu_hat`` (docs/definitions.md#spectral)."""
    return math.sqrt(d_L - 1) + math.sqrt(d_R - 1)


def delta_r(s: Spectrum, normalized: bool) -> float:
    bound = ramanujan_bound(s.d_L, s.d_R)
    gap = bound - s.sigma_2
    return gap / bound if normalized else gap


def delta_s_undefined(s: Spectrum, normalized: bool) -> str | None:
    """Why Delta_s (or its normalised form) has no value, or None if it has one."""
    if s.sigma_1 < 1:
        return f"sigma_1 = {s.sigma_1:.4g} < 1: 2 sqrt(sigma_1 - 1) is not real"
    if normalized and s.sigma_1 == 1:
        return "sigma_1 = 1: the normalisation 2 sqrt(sigma_1 - 1) is 0"
    return None


def delta_s(s: Spectrum, normalized: bool) -> float | None:
    if delta_s_undefined(s, normalized):
        return None
    bound = 2 * math.sqrt(s.sigma_1 - 1)
    gap = bound - s.sigma_2
    return gap / bound if normalized else gap


def narc_value(s: Spectrum, n_in: int, n_out: int) -> float:
    # The 2E is [RAM]'s reference behaviour: its edge list holds every edge in both directions.
    mu = s.sigma_2
    return (((mu * mu / 4 + 1) * math.sqrt(s.n_l * s.n_r)
             - abs(2 * s.E - (s.d_L / n_out) * s.n_l * s.n_r)) / (n_in * n_out))
