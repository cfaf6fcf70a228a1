"""Layerwise budgets: how many weights each layer keeps (docs/definitions.md#budgets).

A budget turns a target compression ``c`` (density ``d = 1/c``) into an integer count ``|E_l|``
of kept weights per layer. Every budget function takes the :class:`~graphpai.graph.NetGraph`
(only each layer's ``numel`` N_l and ``weight_shape`` are used) and returns a frozen
:class:`Budget`. Budgets are pure numpy; a torch model is accepted and converted with
:func:`~graphpai.graph.as_graph`.

Conventions, stated once:

- ``1 <= c <= N`` (N = all prunable weights); anything else raises
  :class:`~graphpai.errors.BudgetError` with the allowed range.
- Counts are floors of the budget's real-valued per-layer targets, so a total differs from
  ``N/c`` by less than one weight per layer (IGQ: plus one, its bisection tolerance; EPL keeps
  exactly the global threshold's count), and a count never exceeds N_l.
- A budget may give a layer 0 weights (ERK's first conv of VGG-16 at 10^5.5): the network is then
  disconnected for every method. :attr:`Budget.zero_layers` lists such layers.

``BUDGETS`` maps the names a user types (``prune(..., budget="erk")``) to the functions;
:func:`from_mask` is the fifth budget and takes a mask instead of a compression.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Callable, Mapping

import numpy as np

from ._results import jsonable
from .errors import BudgetError, UnknownMethodError

__all__ = [
    "Budget",
    "LayerBudget",
    "BUDGETS",
    "uniform",
    "erk",
    "igq",
    "epl",
    "from_mask",
    "make_budget",
    "parse_compression",
    "check_compression",
    "kept_count",
]


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class LayerBudget:
    """One layer's row: N_l weights, ``count`` = |E_l| kept, ``density`` = |E_l| / N_l."""

    layer: str
    numel: int
    count: int
    density: float


@dataclass(frozen=True)
class Budget:
    """Integer kept-weight counts per layer for one target compression
    (docs/definitions.md#budgets).

    Attributes
    ----------
    method : str
        ``"uniform"``, ``"erk"``, ``"igq"``, ``"epl"`` or ``"from-mask"``.
    compression : float
        The requested compression c (for ``from-mask``: the mask's own N/|M|).
    layers : tuple of LayerBudget
        Per-layer table, in the graph's layer order.
    params : dict
        What the budget solved for: ERK ``eps``, ``dense_layers`` and ``erk_power_scale``; IGQ
        ``force`` (F in density_l = 1/(1 + F N_l)); from-mask ``source`` (a method name or None).
    """

    method: str
    compression: float
    layers: tuple[LayerBudget, ...]
    params: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def counts(self) -> dict[str, int]:
        """Layer name -> |E_l|."""
        return {row.layer: row.count for row in self.layers}

    @property
    def densities(self) -> dict[str, float]:
        """Layer name -> |E_l| / N_l."""
        return {row.layer: row.density for row in self.layers}

    @property
    def total(self) -> int:
        """Kept weights over all layers."""
        return sum(row.count for row in self.layers)

    @property
    def num_weights(self) -> int:
        """N, the prunable weights the budget was made for."""
        return sum(row.numel for row in self.layers)

    @property
    def achieved_compression(self) -> float:
        """N / total; ``inf`` when the budget keeps nothing."""
        return math.inf if self.total == 0 else self.num_weights / self.total

    @property
    def zero_layers(self) -> tuple[str, ...]:
        """Layers that keep no weight: the network is disconnected for every method."""
        return tuple(row.layer for row in self.layers if row.count == 0)

    def check(self, graph) -> "Budget":
        """Check the budget was made for `graph` (same layers, same sizes); return self.

        Raises
        ------
        BudgetError
            If a layer is missing, unknown or has another number of weights.
        """
        mine = {row.layer: row.numel for row in self.layers}
        theirs = {name: layer.numel for name, layer in graph.layers.items()}
        if mine != theirs:
            missing = sorted(set(theirs) - set(mine))
            unknown = sorted(set(mine) - set(theirs))
            sizes = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
            raise BudgetError(
                f"the {self.method} budget does not fit this network (layers missing: {missing}, "
                f"unknown: {unknown}, other size: {sizes}); make the budget from this graph"
            )
        return self

    def rows(self) -> list[dict]:
        """The per-layer table as a list of dicts."""
        return [asdict(row) for row in self.layers]

    def to_dict(self) -> dict:
        return jsonable({
            "method": self.method,
            "compression": self.compression,
            "num_weights": self.num_weights,
            "total": self.total,
            "achieved_compression": self.achieved_compression,
            "zero_layers": list(self.zero_layers),
            "params": self.params,
            "layers": self.rows(),
        })


def _make(method, compression, names, numel, counts, **params) -> Budget:
    counts = np.clip(np.asarray(counts, dtype=np.int64), 0, numel)
    rows = tuple(LayerBudget(name, int(n), int(k), float(k / n))
                 for name, n, k in zip(names, numel.tolist(), counts.tolist()))
    return Budget(method, float(compression), rows, params)


# ------------------------------------------------------------------------------ compression
_POWER = re.compile(r"^\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*(?:\^|\*\*)"   # base, ^ or **
                    r"\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")          # exponent: 10^3, 10**3


def parse_compression(value) -> float:
    """Read a compression written as a number, ``"1000"``, ``"1e3"``, ``"10^3"`` or ``"10**3"``.

    Raises
    ------
    BudgetError
        If `value` is not a finite positive number in one of these forms.

    Examples
    --------
    >>> parse_compression("10^3"), parse_compression("1e3"), parse_compression("10**0.5")
    (1000.0, 1000.0, 3.1622776601683795)
    """
    number = _read_compression(value)
    if number <= 0:
        raise BudgetError(f"compression {number:g} is outside the allowed range: it must be at "
                          "least 1 (1 keeps every weight, N keeps one), written like 1000, 1e3 "
                          "or 10^3")
    return number


def _read_compression(value) -> float:
    """`value` as a finite float (any sign); BudgetError if it is not a number in a known form."""
    if isinstance(value, str):
        match = _POWER.match(value)
        try:
            number = float(match[1]) ** float(match[2]) if match else float(value)
        except (ValueError, OverflowError):
            number = math.nan
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
    if not math.isfinite(number):
        raise BudgetError(f"cannot read compression {value!r}; write it like 1000, 1e3 or 10^3")
    return number


def check_compression(compression, num_weights: int) -> float:
    """`compression` as a float after checking ``1 <= compression <= N``.

    Raises
    ------
    BudgetError
        If it is outside [1, N] (N = `num_weights`) or not a number.
    """
    c = _read_compression(compression)
    if not 1 <= c <= num_weights:
        raise BudgetError(
            f"compression {c:g} is outside the allowed range [1, {num_weights}] for a network "
            f"with N = {num_weights} prunable weights (1 keeps every weight, N keeps one)"
        )
    return c


def _resolve(net, compression, density):
    from .graph import as_graph

    graph = as_graph(net)
    if (compression is None) == (density is None):
        raise BudgetError("give exactly one of compression and density (density = 1/compression)")
    if density is not None:
        try:
            d = float(density)
        except (TypeError, ValueError):
            d = math.nan
        if not 0 < d <= 1:
            raise BudgetError(f"density {density!r} must be a number in (0, 1] (density = "
                              "1/compression)")
        compression = 1.0 / d
    c = check_compression(compression, graph.num_weights)
    names = list(graph.layers)
    numel = np.array([layer.numel for layer in graph.layers.values()], dtype=np.int64)
    return graph, c, names, numel


def kept_count(num_weights: int, compression: float) -> int:
    """N - k with k = int((1 - d) N): the weights the [SF] global threshold keeps
    (docs/definitions.md#generators).

    Computed as ``N - floor(N - N/c)`` so that ``c = N`` keeps exactly one weight in floating
    point. (Ties at the threshold are pruned too, so a ranking mask may keep fewer.)

    Examples
    --------
    >>> kept_count(1000, 3), kept_count(1000, 1000), kept_count(1000, 1)
    (334, 1, 1000)
    """
    return num_weights - int(math.floor(num_weights - num_weights / compression))


# ------------------------------------------------------------------------------ budgets
def uniform(net, compression=None, *, density=None) -> Budget:
    r"""Uniform budget: every layer keeps :math:`\lfloor d N_l \rfloor`
    (docs/definitions.md#budgets).

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
    compression : float or str
        Target compression c in [1, N] (``"10^3"`` works too).
    density : float, optional
        1/c instead of `compression`.

    Returns
    -------
    Budget

    Raises
    ------
    BudgetError
        If the compression is outside [1, N].

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> layers = [Layer("a", "linear", (10, 10), "x", "h"), Layer("b", "linear", (3, 10), "h", "y")]
    >>> g = NetGraph([Group("x", 10), Group("h", 10), Group("y", 3)], layers, [], ["x"], ["y"])
    >>> uniform(g, 4).counts  # floor(100/4), floor(30/4)
    {'a': 25, 'b': 7}
    """
    _, c, names, numel = _resolve(net, compression, density)
    return _make("uniform", c, names, numel, np.floor(numel / c))


def erk(net, compression=None, *, density=None, erk_power_scale: float = 1.0) -> Budget:
    r"""Erdős–Rényi-Kernel budget of RigL with MiCA's ``>=`` rule (docs/definitions.md#budgets).

    :math:`raw_l = (\sum \text{dims} / \prod \text{dims})^{p}` of the weight shape (conv:
    :math:`(C_{out} + C_{in} + k_h + k_w)/(C_{out} C_{in} k_h k_w)`), p = `erk_power_scale`.
    Iterate: :math:`\epsilon = rhs / \sum_{l \notin D} raw_l N_l` with
    :math:`rhs = \sum_{l \notin D} (N_l - z_l) - \sum_{l \in D} z_l`,
    :math:`z_l = \lfloor N_l (1 - d) \rfloor`; while :math:`\max_l raw_l \epsilon \ge 1` add every
    layer with the maximal raw_l to the dense set D. Then :math:`|E_l| = N_l` for l in D, else
    :math:`\lfloor N_l \epsilon\, raw_l \rfloor`. RigL [ERK]_ uses ``> 1``; MiCA's ``>= 1`` only
    differs when a layer would land exactly on density 1. With p = 1, raw_l and eps are computed
    as exact fractions (raw_l N_l is the integer sum of dims), so a layer that lands exactly on
    density 1 is seen as such; floats could keep 18 of a single 19-weight layer at c = 1.

    Parameters
    ----------
    net, compression, density
        As in :func:`uniform`.
    erk_power_scale : float
        Exponent p on raw_l (RigL's option; 1 is ERK, 0 is uniform-like).

    Returns
    -------
    Budget
        ``params`` holds ``eps`` (None when every layer is dense), ``dense_layers`` and
        ``erk_power_scale``.

    Raises
    ------
    BudgetError
        If the compression is outside [1, N] or `erk_power_scale` is not a finite number.

    References
    ----------
    .. [ERK] U. Evci, T. Gale, J. Menick, P. S. Castro, E. Elsen, "Rigging the Lottery: Making All
       Tickets Winners", ICML 2020 (``get_sparsities`` in google-research/rigl).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> layers = [Layer("a", "linear", (10, 10), "x", "h"), Layer("b", "linear", (3, 10), "h", "y")]
    >>> g = NetGraph([Group("x", 10), Group("h", 10), Group("y", 3)], layers, [], ["x"], ["y"])
    >>> b = erk(g, 1.25)  # raw 20/100, 13/30; eps = 104/33 puts b at 1.37 >= 1: b dense, eps = 74/20
    >>> b.counts, b.params["dense_layers"], b.params["eps"]
    ({'a': 74, 'b': 30}, ['b'], 3.7)
    """
    graph, c, names, numel = _resolve(net, compression, density)
    try:
        power = float(erk_power_scale)
    except (TypeError, ValueError):
        power = math.nan
    if not math.isfinite(power):
        raise BudgetError(f"erk_power_scale {erk_power_scale!r} must be a finite number (1 is "
                          "ERK, 0 is uniform)")
    shapes = [layer.weight_shape for layer in graph.layers.values()]
    if power == 1:  # exact: raw_l N_l = sum(dims) and eps are rationals
        raw = [Fraction(sum(s), math.prod(s)) for s in shapes]
    else:
        raw = [(sum(s) / math.prod(s)) ** power for s in shapes]
    sizes = numel.tolist()
    zeros = [math.floor(n - n / c) for n in sizes]  # z_l = floor(N_l (1 - d))
    dense: set[int] = set()
    eps = None
    while len(dense) < len(sizes):
        free = [i for i in range(len(sizes)) if i not in dense]
        rhs = sum(sizes[i] - zeros[i] for i in free) - sum(zeros[i] for i in dense)
        eps = rhs / sum(raw[i] * sizes[i] for i in free)
        top = max(raw[i] for i in free)
        if top * eps < 1:
            break
        dense |= {i for i in free if raw[i] == top}
    if len(dense) == len(sizes):
        eps = None
    counts = [n if i in dense else math.floor(n * eps * raw[i]) for i, n in enumerate(sizes)]
    return _make("erk", c, names, numel, counts, eps=None if eps is None else float(eps),
                 dense_layers=[names[i] for i in sorted(dense)],
                 erk_power_scale=power)


def igq(net, compression=None, *, density=None) -> Budget:
    r"""IGQ budget of [VK]: density_l = 1/(1 + F N_l), F found by bisection
    (docs/definitions.md#budgets).

    F is bisected on [0, 1e20] until the overall sparsity is within 1/N of the target, that is
    until :math:`|\sum_l N_l/(1 + F N_l) - dN| < 1`: the real-valued total is within one weight.
    Counts are :math:`\lfloor N_l \cdot density_l \rfloor`. As in [VK]'s ``bs_force_igq`` the
    first F inside that window is taken, so near c = N (target dN < 2) a real-valued total close
    to 0 is accepted and every layer keeps 0 weights, as uniform's floors do at c = N; this is the
    reference behaviour, reported through :attr:`Budget.zero_layers`.

    Parameters
    ----------
    net, compression, density
        As in :func:`uniform`.

    Returns
    -------
    Budget
        ``params["force"]`` is F.

    Raises
    ------
    BudgetError
        If the compression is outside [1, N].

    References
    ----------
    .. [VK] A. Vysogorets, J. Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens
       of Effective Sparsity", JMLR 2023 (``bs_force_igq`` in avysogorets/effective-sparsity).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> layers = [Layer("a", "linear", (10, 10), "x", "h"), Layer("b", "linear", (3, 10), "h", "y")]
    >>> g = NetGraph([Group("x", 10), Group("h", 10), Group("y", 3)], layers, [], ["x"], ["y"])
    >>> b = igq(g, 2)  # 100/(1 + 100F) + 30/(1 + 30F) = 65 within one weight
    >>> b.counts, round(b.params["force"], 4)  # 100/2.3235 = 43.04, 30/1.397 = 21.47
    ({'a': 43, 'b': 21}, 0.0132)
    """
    _, c, names, numel = _resolve(net, compression, density)
    n = numel.astype(np.float64)
    target = n.sum() / c

    def kept(force):
        return float((n / (1.0 + force * n)).sum())

    lo, hi = 0.0, 1e20
    force = None
    for candidate in (lo, hi):
        if abs(kept(candidate) - target) < 1:
            force = candidate
            break
    while force is None:
        mid = 0.5 * (lo + hi)
        k = kept(mid)
        if abs(k - target) < 1 or mid in (lo, hi):  # the second: float resolution reached
            force = mid
        elif k > target:  # too dense: more force
            lo = mid
        else:
            hi = mid
    densities = 1.0 / (1.0 + force * n)
    return _make("igq", c, names, numel, np.floor(n * densities), force=force)


def epl(net, compression=None, *, density=None) -> Budget:
    r"""Equal-per-layer budget: every layer gets E/L; overflow is capped and spread
    (docs/definitions.md#budgets).

    E = N - int((1 - d) N), the count the [SF] global threshold keeps. Water-filling: a layer with
    :math:`N_l \le` (remaining E)/(remaining layers) is capped at N_l and leaves; repeat until no
    layer is capped; the rest share the remainder equally, the first layers in graph order taking
    one extra weight each until the total is exactly E.

    Parameters
    ----------
    net, compression, density
        As in :func:`uniform`.

    Returns
    -------
    Budget

    Raises
    ------
    BudgetError
        If the compression is outside [1, N].

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> layers = [Layer("a", "linear", (10, 10), "x", "h"), Layer("b", "linear", (3, 10), "h", "y")]
    >>> g = NetGraph([Group("x", 10), Group("h", 10), Group("y", 3)], layers, [], ["x"], ["y"])
    >>> epl(g, 2).counts  # E = 65: b is capped at 30, a takes the other 35
    {'a': 35, 'b': 30}
    """
    _, c, names, numel = _resolve(net, compression, density)
    remaining = kept_count(int(numel.sum()), c)
    counts = np.zeros_like(numel)
    active = np.ones(len(names), dtype=bool)
    while active.any():
        capped = active & (numel * int(active.sum()) <= remaining)
        if not capped.any():
            break
        counts[capped] = numel[capped]
        remaining -= int(numel[capped].sum())
        active &= ~capped
    if active.any():
        base, extra = divmod(remaining, int(active.sum()))
        counts[active] = base
        counts[np.flatnonzero(active)[:extra]] += 1
    return _make("epl", c, names, numel, counts)


def from_mask(masks, graph=None, *, source: str | None = None) -> Budget:
    """The per-layer counts of an existing mask (docs/definitions.md#budgets).

    This is how [MiCA] compares methods at a matched budget: RPI-SNIP keeps as many weights per
    layer as SNIP's mask, and a functional mask gives matched effective compression.

    Parameters
    ----------
    masks : MaskSet or mapping of str to array-like
        Any mask set.
    graph : NetGraph or torch.nn.Module, optional
        If given, the masks are validated against it and the rows follow its layer order.
    source : str, optional
        The method the mask came from, kept in ``params["source"]``.

    Returns
    -------
    Budget
        ``compression`` is the mask's own N/|M| (``inf`` if it keeps nothing).

    Raises
    ------
    MaskError
        If the masks do not fit `graph`.

    Examples
    --------
    >>> from_mask({"a": [[1, 0], [1, 1]], "b": [[0, 0]]}).counts
    {'a': 3, 'b': 0}
    """
    from .masks import MaskSet

    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    if graph is not None:
        from .graph import as_graph

        graph = as_graph(graph)
        masks.validate(graph)
        names = list(graph.layers)
    else:
        names = list(masks)
    numel = np.array([masks.numel(k) for k in names], dtype=np.int64)
    counts = np.array([masks.kept(k) for k in names], dtype=np.int64)
    return _make("from-mask", masks.compression(), names, numel, counts, source=source)


BUDGETS: dict[str, Callable[..., Budget]] = {
    "uniform": uniform,
    "erk": erk,
    "igq": igq,
    "epl": epl,
}


def make_budget(net, name: str, compression=None, *, density=None, **options) -> Budget:
    """The budget called `name` (a key of ``BUDGETS``) for `net` at `compression`.

    Raises
    ------
    UnknownMethodError
        If `name` is not a budget; the message lists the known ones.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in BUDGETS:
        raise UnknownMethodError(
            f"unknown budget {name!r}; known budgets: {', '.join(sorted(BUDGETS))} (or a method "
            "name for its mask's per-layer counts, or a MaskSet)"
        )
    return BUDGETS[key](net, compression, density=density, **options)
