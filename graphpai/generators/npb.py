r"""NPB: node-path balancing masks, solved exactly layer by layer ([NPB]; docs/npb.md).

For every prunable layer, from the input to the output, with a budget of n kept weights, NPB
chooses integer kernel counts :math:`M_{ij} \in \{0, \dots, K\}` (input channel i, output
channel j; K = ``max_p``, the kernel size by default) that maximise

.. math::

    \alpha \frac{C_{in} + C_{out} - \sum_i (1 - \sum_j M_{ij})_+ - \sum_j (1 - \sum_i M_{ij})_+}
    {C_{in} + C_{out}}
    + (1 - \alpha) \frac{\sum_i P_i \sum_j M_{ij}}{\text{max\_path}}
    + \beta \frac{n - \sum_{ij} (1 - M_{ij})_+}{n}

subject to :math:`\sum M \le n`, where :math:`P_i` is the path mass reaching input channel i
(summed over its pixels) through the layers already chosen and max_path the largest value the
path sum can take with n weights. The kept taps of each kernel are then placed at random, and
a move step makes every kept weight functional (spatial semantics, docs/audit.md) while keeping
the budget: bridges from dead-end channels, then non-functional weights moved into free
capable slots (effective kernels first), the spatial audit rerun until it finds none.

The program is solved exactly by :func:`solve_layer`, a combinatorial method proved equal to the
integer program in docs/npb.md (``solver="milp"`` solves the same reduced program with
``scipy.optimize.milp``). The functions here need only numpy and scipy; the move of dead weights
runs the spatial engine (torch).

References
----------
.. [NPB] H. Pham et al., "Towards Data-Agnostic Pruning at Initialization: What Makes a Good
   Sparse Mask?", NeurIPS 2023. Code: pvh1602/NPB.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass
from math import prod
from typing import Mapping

import numpy as np

from .._results import jsonable
from ..budgets import Budget
from ..engine import common_scale, renormalise, spatial_engine
from ..errors import BudgetError, GraphpaiError, ModelError, UnknownMethodError
from ..graph import Layer, NetGraph, as_graph
from ..masks import MaskSet
from ._registry import register

__all__ = ["npb", "solve_npb", "solve_layer", "layer_objective", "max_path", "NPBLayer",
           "NPBResult", "SOLVERS", "PATH_NORMS", "PATH_MASSES", "MOVES"]

SOLVERS = ("exact", "milp")
PATH_NORMS = ("tight", "reference")
PATH_MASSES = ("pixels", "channels")
MOVES = ("bridge", "fill")


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class NPBLayer:
    """One layer of an NPB run.

    Attributes
    ----------
    layer : str
    budget : int
        n, the layer's budget.
    max_p : int
        K, the most taps a kernel may keep (after raising it to ``ceil(n / (C_in C_out))``).
    objective : float
        The program's optimal value (per group, summed, for a grouped conv).
    solved : int
        Weights the program kept (n unless the layer cannot hold them).
    removed : int
        Kept weights taken out by the move step: non-functional ones (and, rarely, a surplus
        trimmed after bridges rescued more than foreseen).
    added : int
        Weights put in by the move step: bridges, fills and weights put in for other layers.
    kept : int
        Final kept weights, ``solved - removed + added``.
    drift : int
        ``kept - budget``.
    seconds : float
        Time spent solving the program and placing taps.
    bridged : int
        Bridges: weights from a dead-end input channel (reached, co-reaching nothing) to a
        co-reached output, which make the weights into that channel functional.
    filled : int
        Weights put into free capable slots of this layer for its own removed ones (taps of
        effective kernels first, then new kernels between functional channels).
    carried_in : int
        Weights this layer holds for other layers: put in for layers that had no capable slot
        left, or bridges and rescued weights above this layer's budget.
    carried_out : int
        Weights of this layer's budget held by other layers.
    """

    layer: str
    budget: int
    max_p: int
    objective: float
    solved: int
    removed: int
    added: int
    kept: int
    drift: int
    seconds: float
    bridged: int = 0
    filled: int = 0
    carried_in: int = 0
    carried_out: int = 0


@dataclass(frozen=True)
class NPBResult:
    """NPB masks with the per-layer program values and the budget drift of the move step.

    ``moved`` is the move step (``"bridge"``, ``"fill"`` or False). ``dropped`` weights found no
    slot where they carry signal in any layer and were left out (``total_drift = -dropped``);
    ``functional`` is True when the last spatial audit of the move step found every kept weight
    functional (None without the move step). ``move_seconds`` and ``audits``: the move step's
    time and its number of spatial audits.
    """

    masks: MaskSet
    layers: tuple[NPBLayer, ...]
    alpha: float
    beta: float
    solver: str
    moved: str | bool
    dropped: int
    functional: bool | None
    seconds: float
    move_seconds: float = 0.0
    audits: int = 0

    @property
    def carried(self) -> int:
        """Weights held by a layer other than the one whose budget they belong to."""
        return sum(row.carried_in for row in self.layers)

    @property
    def budget(self) -> int:
        return sum(row.budget for row in self.layers)

    @property
    def kept(self) -> int:
        return sum(row.kept for row in self.layers)

    @property
    def total_drift(self) -> int:
        """Total kept minus total budget."""
        return self.kept - self.budget

    def rows(self) -> list[dict]:
        """The per-layer table as a list of dicts."""
        return [asdict(row) for row in self.layers]

    def table(self) -> str:
        from ..report.tables import format_table

        return "\n".join([
            format_table(self.rows()), "",
            self.summary(),
        ])

    def summary(self) -> str:
        """One line: kept vs budget, the drift, what moved between layers, functionality."""
        drifted = sum(1 for row in self.layers if row.drift)
        return (f"kept {self.kept:,} of budget {self.budget:,} (drift {self.total_drift:+,}, "
                f"{100 * self.kept / self.budget if self.budget else 100:.2f}%; dropped "
                f"{self.dropped:,}); {self.carried:,} weights held by another layer, "
                f"{drifted} layers off their budget; fully functional: {self.functional}")

    def to_dict(self) -> dict:
        return jsonable({
            "alpha": self.alpha, "beta": self.beta, "solver": self.solver, "moved": self.moved,
            "budget": self.budget, "kept": self.kept, "total_drift": self.total_drift,
            "dropped": self.dropped, "carried": self.carried, "functional": self.functional,
            "seconds": self.seconds, "move_seconds": self.move_seconds, "audits": self.audits,
            "layers": self.rows(),
        })


# ------------------------------------------------------------------------------ one program
def max_path(path_mass, budget: int, out_channels: int, max_p: int, *,
             path_norm: str = "tight") -> float:
    """The largest ``sum_i P_i sum_j M_ij`` with ``sum M <= n`` and ``0 <= M <= K``.

    An input channel holds at most ``K * C_out`` weights, so the n weights go to the inputs of
    largest P first. ``path_norm="reference"`` is [NPB]'s code instead: with
    ``q = floor(n / (K C_out))`` it sums the q largest P times ``K C_out`` plus the remainder
    times the next P, but for q = 0 its slice ``[-0:]`` takes *every* P, which gives
    ``K C_out sum(P) + n max(P)``: far above the tight value at high sparsity, so the path term
    weighs much less there (docs/npb.md).

    Examples
    --------
    >>> max_path([1.0, 3.0, 2.0], 5, out_channels=2, max_p=1)  # 2 on P=3, 2 on P=2, 1 on P=1
    11.0
    """
    if path_norm not in PATH_NORMS:
        raise UnknownMethodError(f"unknown NPB path_norm {path_norm!r}; use one of "
                                 f"{list(PATH_NORMS)}")
    p = np.sort(np.asarray(path_mass, dtype=np.float64))[::-1]
    cap = max_p * out_channels
    if path_norm == "reference":
        q = budget // cap
        rest = budget - q * cap
        head = p.sum() if q == 0 else p[:q].sum()
        return float(cap * head + (rest * p[q] if q < p.size else 0.0))
    full = min(budget // cap, p.size)
    rest = budget - full * cap if full < p.size else 0
    return float(cap * p[:full].sum() + (rest * p[full] if rest else 0.0))


def layer_objective(counts, path_mass, budget: int, *, max_p: int, alpha: float = 0.01,
                    beta: float = 1.0, path_norm: str = "tight") -> float:
    """The value of the NPB program (module docstring) for kernel counts `counts`.

    Parameters
    ----------
    counts : array-like of int, shape (C_in, C_out)
        M_ij, kept taps of the kernel from input i to output j.
    path_mass : array-like, shape (C_in,)
        P_i.
    budget : int
        n.
    max_p : int
        K, used by max_path. A path term with max_path = 0 (no path reaches the layer) is 0.
    alpha, beta : float
    path_norm : {"tight", "reference"}
        Which max_path (see :func:`max_path`).

    Examples
    --------
    >>> # nodes 4 of 4, paths 2 of max_path 2, (n - 2 empty kernels) / n = 0
    >>> layer_objective([[1, 0], [0, 1]], [1.0, 1.0], 2, max_p=1, alpha=0.5, beta=1.0)
    1.0
    """
    m = np.asarray(counts, dtype=np.int64)
    c_in, c_out = m.shape
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    nodes = (c_in + c_out - np.maximum(1 - rows, 0).sum() - np.maximum(1 - cols, 0).sum())
    top = max_path(path_mass, budget, c_out, max_p, path_norm=path_norm)
    path = float(np.asarray(path_mass, dtype=np.float64) @ rows) / top if top > 0 else 0.0
    reg = (budget - np.maximum(1 - m, 0).sum()) / budget if budget else 0.0
    return float(alpha * nodes / (c_in + c_out) + (1 - alpha) * path + beta * reg)


def _check_params(alpha, beta, solver) -> None:
    if solver not in SOLVERS:
        raise UnknownMethodError(f"unknown NPB solver {solver!r}; use one of {list(SOLVERS)}")
    if not (0.0 <= alpha <= 1.0) or not math.isfinite(alpha):
        raise BudgetError(f"NPB alpha must be in [0, 1], got {alpha!r}")
    if not (beta >= 0.0) or not math.isfinite(beta):
        raise BudgetError(f"NPB beta must be a finite number >= 0, got {beta!r}")


def _unit_values(p, a, b, c_out):
    """Row, rank within the row and value of every 'shallow' unit (a row's first C_out units)."""
    c_in = p.size
    rows = np.concatenate([np.arange(c_in), np.repeat(np.arange(c_in), c_out - 1)])
    index = np.concatenate([np.zeros(c_in, dtype=np.int64), np.tile(np.arange(1, c_out), c_in)])
    values = np.concatenate([a + p + b, np.repeat(p + b, c_out - 1)])
    return rows, index, values


def _deep_prefix(p_sorted, cap, m):
    """Sum of the m largest deep units (every row has `cap` units of value P_i), vectorised in m."""
    if cap == 0:
        return np.zeros(np.shape(m))
    cum = np.concatenate([[0.0], np.cumsum(p_sorted)])
    q = np.minimum(m // cap, p_sorted.size)
    rest = m - q * cap
    tail = np.where(q < p_sorted.size, p_sorted[np.minimum(q, p_sorted.size - 1)], 0.0)
    return cap * cum[q] + rest * tail


def _best_split(p, a, b, n, c_out, k):
    """(T, m, shallow values sorted): the number of shallow and deep units of an optimum."""
    c_in = p.size
    _, _, values = _unit_values(p, a, b, c_out)
    shallow = np.concatenate([[0.0], np.cumsum(np.sort(values)[::-1])])
    deep_cap = (k - 1) * c_out
    total_deep = deep_cap * c_in
    t = np.arange(min(n, c_in * c_out) + 1)
    m = np.minimum(n - t, total_deep)
    value = shallow[t] + a * np.minimum(c_out, t) + _deep_prefix(np.sort(p)[::-1], deep_cap, m)
    top = value.max()
    best = int(np.flatnonzero(value >= top - 1e-12 * max(1.0, abs(top)))[-1])  # most kernels
    return best, int(m[best])


def _exact_rows(p, a, b, n, c_out, k, rank):
    """Row sums r_i of an optimum (docs/npb.md, the reduction)."""
    c_in = p.size
    t, m = _best_split(p, a, b, n, c_out, k)
    rows, index, values = _unit_values(p, a, b, c_out)
    order = np.lexsort((rank[rows], index, -values))[:t]  # by value, then round-robin over ties
    x = np.bincount(rows[order], minlength=c_in)
    y = np.zeros(c_in, dtype=np.int64)
    cap = (k - 1) * c_out
    if m and cap:
        order = np.lexsort((rank, -p))
        ps = p[order]
        full = m // cap
        filled = np.zeros(c_in, dtype=np.int64)
        filled[:full] = cap
        rest = m - full * cap
        if rest:  # spread the boundary's tie group evenly
            lo = np.searchsorted(-ps, -ps[full], "left")
            hi = np.searchsorted(-ps, -ps[full], "right")
            share = (full - lo) * cap + rest
            g = hi - lo
            filled[lo:hi] = share // g + (np.arange(g) < share % g)
        y[order] = filled
    return x + y


def _milp_rows(p, a, b, n, c_out, k):
    """Row sums from scipy.optimize.milp on the reduced program (docs/npb.md)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    c_in = p.size
    # variables: x_i (shallow, 0..C_out), y_i (deep, 0..(K-1) C_out), u_i (row active, 0/1), c
    nv = 3 * c_in + 1
    cost = -np.concatenate([p + b, p, np.full(c_in, a), [a]])
    lower = np.zeros(nv)
    upper = np.concatenate([np.full(c_in, c_out), np.full(c_in, (k - 1) * c_out),
                            np.ones(c_in), [c_out]]).astype(float)
    eye = np.eye(c_in)
    rows = [
        np.concatenate([np.ones(2 * c_in), np.zeros(c_in + 1)]),           # sum x + y <= n
        np.concatenate([-np.ones(c_in), np.zeros(2 * c_in), [1.0]]),        # c <= sum x
    ]
    a_ub = np.vstack(rows + [np.hstack([-eye, np.zeros((c_in, c_in)), eye,
                                        np.zeros((c_in, 1))])])              # u_i <= x_i
    ub = np.concatenate([[n, 0.0], np.zeros(c_in)])
    res = milp(cost, constraints=LinearConstraint(a_ub, -np.inf, ub),
               integrality=np.concatenate([np.ones(3 * c_in), [0]]),
               bounds=Bounds(lower, upper), options={"mip_rel_gap": 0.0})
    if res.x is None:
        raise BudgetError(f"scipy.optimize.milp found no solution ({res.message})")
    z = np.round(res.x).astype(np.int64)
    return z[:c_in] + z[c_in:2 * c_in]


def solve_layer(path_mass, budget: int, out_channels: int, max_p: int, *, alpha: float = 0.01,
                beta: float = 1.0, solver: str = "exact", path_norm: str = "tight",
                seed=None) -> np.ndarray:
    """Kernel counts M (C_in, C_out) of an optimum of one layer's NPB program (docs/npb.md).

    Among the optima it returns one that keeps the whole budget (there always is one when it
    fits: every unit adds a nonnegative amount), that spreads each input's weights over as
    many kernels as it can and covers as many outputs as it can, with ties between equal inputs
    and the outputs chosen at random (seeded). Exactness is proved in docs/npb.md and tested
    against brute-force enumeration and ``scipy.optimize.milp`` on the full program.

    Parameters
    ----------
    path_mass : array-like, shape (C_in,)
        P_i >= 0.
    budget : int
        n >= 0.
    out_channels : int
        C_out.
    max_p : int
        K >= 1, the most taps a kernel may keep; raised to ``ceil(n / (C_in C_out))`` if smaller.
    alpha : float in [0, 1]
    beta : float >= 0
    solver : {"exact", "milp"}
        ``"exact"``: the combinatorial method; ``"milp"``: HiGHS on the reduced program.
    path_norm : {"tight", "reference"}
        Which max_path (see :func:`max_path`).
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    ndarray of int64, shape (C_in, C_out)

    Raises
    ------
    BudgetError
        If the budget is negative or larger than ``K * C_in * C_out``, or alpha/beta are out of
        range.

    Examples
    --------
    With 2 weights on 2 inputs and 2 outputs the optimum touches every node:

    >>> m = solve_layer([1.0, 1.0], 2, 2, 1, alpha=0.5, seed=0)
    >>> sorted(m.sum(axis=0).tolist()), sorted(m.sum(axis=1).tolist())
    ([1, 1], [1, 1])
    """
    _check_params(alpha, beta, solver)
    rng = np.random.default_rng(seed)
    p = np.asarray(path_mass, dtype=np.float64).reshape(-1)
    if (p < 0).any() or not np.isfinite(p).all():
        raise BudgetError("NPB path masses must be finite and >= 0")
    c_in, c_out, n = p.size, int(out_channels), int(budget)
    k = max(int(max_p), -(-n // (c_in * c_out)) if c_in * c_out else 0)
    if n < 0 or n > k * c_in * c_out:
        raise BudgetError(f"NPB budget {n} is outside [0, {k * c_in * c_out}] for a "
                          f"{c_in} x {c_out} layer with at most {k} taps per kernel")
    counts = np.zeros((c_in, c_out), dtype=np.int64)
    rank = rng.permutation(c_in)
    columns = rng.permutation(c_out)
    if n == 0:
        return counts
    top = max_path(p, n, c_out, k, path_norm=path_norm)
    p = (1 - alpha) * p / top if top > 0 else np.zeros_like(p)
    a, b = alpha / (c_in + c_out), beta / n
    r = (_exact_rows(p, a, b, n, c_out, k, rank) if solver == "exact"
         else _milp_rows(p, a, b, n, c_out, k))
    # each row on min(r_i, C_out) distinct kernels; consecutive rows continue cyclically over a
    # random column order, so the union covers min(C_out, sum) outputs, loads within one kernel
    order = np.argsort(rank, kind="stable")
    width = np.minimum(r[order], c_out)
    row_of = np.repeat(order, width)
    start = np.repeat(np.cumsum(width) - width, width)
    pos = np.arange(row_of.size) - start
    rr = r[row_of]
    ww = np.minimum(rr, c_out)
    counts[row_of, columns[np.arange(row_of.size) % c_out]] = rr // ww + (pos < rr % ww)
    return counts


# ------------------------------------------------------------------------------ the network
def _path_state(graph: NetGraph):
    return {name: renormalise(np.ones(graph.groups[name].channels), 0.0) for name in graph.inputs}


def _link_mass(graph, link, state):
    values, scale = common_scale([state[s] for s in link.sources])
    out = sum(graph.link_matrix(link, pos) @ v for pos, v in enumerate(values))
    return renormalise(np.asarray(out, dtype=np.float64), scale)


def _max_p_of(layer: Layer, max_p) -> int:
    taps = prod(layer.kernel) if layer.kind == "conv" else 1
    value = max_p.get(layer.name) if isinstance(max_p, Mapping) else max_p
    if value is None:
        return taps
    if int(value) < 1:
        raise BudgetError(f"NPB max_p for {layer.name!r} must be >= 1, got {value!r}")
    return min(int(value), taps)


def _place_taps(counts, taps: int, rng) -> np.ndarray:
    """(C_out, C_in_g) counts -> bool (C_out, C_in_g, taps), the taps of a kernel at random."""
    if taps == 1:
        return (counts > 0)[:, :, None]
    order = np.argsort(rng.random(counts.shape + (taps,)), axis=2)
    mask = np.zeros(counts.shape + (taps,), dtype=bool)
    np.put_along_axis(mask, order, np.arange(taps) < counts[:, :, None], axis=2)
    return mask


def _group_split(budget: int, mass, groups: int, cap: int, rng) -> np.ndarray:
    """A grouped conv's budget per group: evenly over the groups that some path reaches
    (total P > 0; the remainder to those of largest mass first, ties at random), then, if they
    are full, evenly over the others. A depthwise conv at high sparsity keeps a few groups:
    these must be channels the layers before it feed. One group: the whole budget."""
    if groups == 1:
        return np.array([budget])
    masses = np.asarray(mass, dtype=np.float64).reshape(groups, -1).sum(axis=1)
    order = np.lexsort((rng.random(groups), -masses))  # largest mass first
    fed = masses[order] > 0
    parts = (order[fed], order[~fed]) if fed.any() else (order,)
    split = np.zeros(groups, dtype=np.int64)
    left = int(budget)
    for part in parts:
        n = min(left, cap * part.size)
        if part.size and n:
            split[part] = n // part.size + (np.arange(part.size) < n % part.size)
            left -= n
    return split


def _solve_layer_masks(layer, budget, mass, max_p, alpha, beta, solver, path_norm, rng):
    g = layer.groups
    c_out_g, c_in_g = layer.out_channels // g, layer.weight_shape[1]
    taps = prod(layer.kernel) if layer.kind == "conv" else 1
    k = _max_p_of(layer, max_p)
    split = _group_split(budget, mass, g, taps * c_in_g * c_out_g, rng)
    counts = np.zeros((layer.out_channels, c_in_g), dtype=np.int64)
    objective = 0.0
    used_k = k
    for group in range(g):  # a loop over conv groups
        p = mass[group * c_in_g:(group + 1) * c_in_g]
        n_g = int(split[group])
        kg = max(k, -(-n_g // (c_in_g * c_out_g)))
        used_k = max(used_k, kg)
        m = solve_layer(p, n_g, c_out_g, kg, alpha=alpha, beta=beta, solver=solver,
                        path_norm=path_norm, seed=rng)
        objective += layer_objective(m, p, n_g, max_p=kg, alpha=alpha, beta=beta,
                                     path_norm=path_norm)
        counts[group * c_out_g:(group + 1) * c_out_g] = m.T
    mask = _place_taps(counts, taps, rng).reshape(layer.weight_shape)
    return mask, objective, used_k


def _capable(layer: Layer, f_in: np.ndarray, g_out: np.ndarray) -> np.ndarray:
    """Weights of `layer` that would be functional if kept: some output pixel p with
    g_out[o, p] and f_in[i, p*stride + tap*dilation - padding] inside the image (docs/audit.md)."""
    if layer.kind == "linear":  # a feature vector, or a linear layer at every position
        go = np.asarray(g_out, dtype=np.float32).reshape(layer.weight_shape[0], -1)
        fi = np.asarray(f_in, dtype=np.float32).reshape(layer.weight_shape[1], -1)
        return (go @ fi.T) > 0.5
    pad = [(0, 0)] + [tuple(p) for p in layer.padding]
    fp = np.pad(f_in, pad).astype(np.float32)
    out = layer.out_size
    g = layer.groups
    c_out_g, c_in_g = layer.out_channels // g, layer.weight_shape[1]
    result = np.zeros((layer.out_channels, c_in_g) + layer.kernel, dtype=bool)
    go = g_out.reshape(layer.out_channels, -1).astype(np.float32)
    for tap in itertools.product(*(range(k) for k in layer.kernel)):  # a loop over kernel taps
        window = fp[(slice(None),) + tuple(
            slice(t * d, t * d + s * (o - 1) + 1, s)
            for t, d, s, o in zip(tap, layer.dilation, layer.stride, out))]
        window = window.reshape(layer.in_channels, -1)
        for group in range(g):
            rows = slice(group * c_out_g, (group + 1) * c_out_g)
            cols = slice(group * c_in_g, (group + 1) * c_in_g)
            result[(rows, slice(None)) + tap] = (go[rows] @ window[cols].T) > 0.5
    return result


def _engine_call(name: str, why: str, fix: str):
    """``spatial_engine().<name>``, or a one-line error naming the engine, the call and a fix."""
    engine = spatial_engine()
    call = getattr(engine, name, None)
    if not callable(call):
        label = getattr(engine, "__name__", type(engine).__name__)
        raise GraphpaiError(f"the spatial engine {label!r} has no {name}(), which NPB needs for "
                            f"{why}; {fix}, or graphpai.engine.set_spatial_engine(None) to use "
                            "the default engine (docs/npb.md)")
    return call


def _global_inputs(layer: Layer) -> np.ndarray:
    """(C_out, C_in_g) index of the input channel of every kernel (grouped convs offset)."""
    c_out, c_in_g = layer.weight_shape[:2]
    group = np.arange(c_out) // (c_out // layer.groups)
    return group[:, None] * c_in_g + np.arange(c_in_g)[None, :]


def _kernel_matrix(layer: Layer, mask: np.ndarray) -> np.ndarray:
    """Dense (C_out, C_in) kept taps per kernel (grouped convs spread to their channels)."""
    per = mask.reshape(mask.shape[0], mask.shape[1], -1).sum(axis=2)
    out = np.zeros((layer.out_channels, layer.in_channels), dtype=np.int64)
    np.add.at(out, (np.repeat(np.arange(layer.out_channels), per.shape[1]),
                    _global_inputs(layer).reshape(-1)), per.reshape(-1))
    return out


def _lineage(graph: NetGraph) -> dict:
    """Group -> {upstream group G: bool (C_group, C_G) matrix}: which channels of G flow into
    which channels of the group through links only (the group itself included). Co-reaching a
    channel of the group co-reaches those channels of G. Links without a channel map (gated
    kinds) pass nothing: this only ranks bridges, the spatial audit decides."""
    import scipy.sparse as sp

    lineage = {name: {name: sp.identity(graph.groups[name].channels, format="csr", dtype=bool)}
               for name in graph.groups}
    for op in graph.order:
        if isinstance(op, Layer) or op.kind in ("norm", "mul", "attention"):
            continue
        mine = lineage[op.target]
        for pos, source in enumerate(op.sources):
            try:
                link = graph.link_matrix(op, pos).astype(bool)
            except GraphpaiError:
                continue
            for group, matrix in lineage[source].items():
                step = (link @ matrix).astype(bool)
                mine[group] = (mine[group] + step).astype(bool) if group in mine else step
    return lineage


@dataclass
class _Moves:
    """Per-layer counts of the move step (see NPBLayer)."""

    removed: int = 0
    bridged: int = 0
    filled: int = 0
    carried_in: int = 0
    carried_out: int = 0
    placed_in: int = 0  # the part of carried_in put in by _fill (the rest: bridges' surplus)

    @property
    def added(self) -> int:
        return self.bridged + self.filled + self.placed_in


class _Slots:
    """The free capable slots of one layer, taken in fill order: taps of effective kernels
    (those that keep a weight) first, the kernels with the most kept taps first, then new
    kernels; random (seeded) among equal kernels and among the taps of a kernel."""

    def __init__(self, mask: np.ndarray, free: np.ndarray, rng):
        n_kernels = mask.shape[0] * mask.shape[1]
        self.mask = mask.reshape(n_kernels, -1)  # a view: writes go to the layer's mask
        self.free = free.reshape(n_kernels, -1).copy()
        per_kernel = self.mask.sum(axis=1)
        count = self.free.sum(axis=1)
        self.kernels = np.lexsort((rng.random(n_kernels), -per_kernel))
        self.kernels = self.kernels[count[self.kernels] > 0]
        self.rng = rng
        self.next = 0
        self.left = int(count.sum())

    def put(self, count: int) -> int:
        """Keep the next `count` slots (fewer if there are not as many); returns how many."""
        take = min(count, self.left)
        done = 0
        while done < take:  # a loop over the (few) kernels this takes from
            k = self.kernels[self.next]
            taps = np.flatnonzero(self.free[k])
            pick = taps if taps.size <= take - done else self.rng.choice(
                taps, take - done, replace=False)
            self.mask[k, pick] = True
            self.free[k, pick] = False
            done += pick.size
            if not self.free[k].any():
                self.next += 1
        self.left -= take
        return take


def _bridge(graph, masks, act, lineage, writers, rng, min_value: int) -> dict:
    """One pass of bridges: for every layer from the output back to the input, connect input
    channels that are reached but co-reach nothing (dead ends) and whose kept weights upstream
    would become functional (at least `min_value` of them) to a co-reached output, one weight
    per channel, on a tap that reads a reached pixel and writes a co-reached one. A layer places
    at most as many bridges as its own non-functional weights that no bridge downstream is
    expected to rescue (the weights it would lose anyway). Returns layer -> bridges placed."""
    reached = {name: m.reshape(m.shape[0], -1).any(axis=1) for name, m in act.forward.items()}
    marked = {name: m.reshape(m.shape[0], -1).any(axis=1) for name, m in act.backward.items()}
    dead = {}
    for name, layer in graph.layers.items():
        m = masks[name] & ~act.functional[name]
        m = m & reached[layer.source][_global_inputs(layer)].reshape(
            m.shape[:2] + (1,) * (m.ndim - 2))  # a dead weight reading nothing stays dead
        dead[name] = _kernel_matrix(layer, m)
    allowance = {name: int(d.sum()) for name, d in dead.items()}
    placed = {}

    def rescue(group, chans):  # chans of `group` become co-reached: what that rescues upstream
        stack = [(group, chans)]
        while stack:
            group, chans = stack.pop()
            for up, matrix in lineage[group].items():
                hit = np.asarray(matrix[np.flatnonzero(chans)].sum(axis=0)).reshape(-1) > 0
                new = hit & ~marked[up]
                if not new.any():
                    continue
                marked[up] |= new
                for w in writers.get(up, ()):
                    rows = dead[w][new]
                    if rows.any():
                        allowance[w] -= int(rows.sum())
                        src = graph.layers[w].source
                        stack.append((src, rows.any(axis=0)))
                        dead[w][new] = 0

    for layer in reversed(list(graph.layers.values())):
        src, name = layer.source, layer.name
        if allowance[name] <= 0:
            continue
        cand = reached[src] & ~marked[src]
        if not cand.any():
            continue
        value = np.zeros(cand.size, dtype=np.int64)
        for up, matrix in lineage[src].items():
            live = [dead[w].sum(axis=1) for w in writers.get(up, ())]
            if live:
                per = np.where(marked[up], 0, np.sum(live, axis=0))
                value += np.asarray(matrix @ per).reshape(-1).astype(np.int64)
        cand &= value >= min_value
        if not cand.any():
            continue
        f_in = act.forward[src] & cand.reshape((-1,) + (1,) * (act.forward[src].ndim - 1))
        slots = _capable(layer, f_in, act.backward[layer.target]) & ~masks[name]
        kernel_in = _global_inputs(layer)
        o, i = np.nonzero(slots.reshape(slots.shape[0], slots.shape[1], -1).any(axis=2))
        if o.size == 0:
            continue
        chans = kernel_in[o, i]
        # the channels of largest value first (random among equal), one random slot each
        shuffle = rng.permutation(o.size)
        o, i, chans = o[shuffle], i[shuffle], chans[shuffle]
        first = np.unique(chans, return_index=True)[1]
        rank = np.lexsort((rng.random(first.size), -value[chans[first]]))
        first = first[rank][:allowance[name]]
        flat = masks[name].reshape(slots.shape[0], slots.shape[1], -1)
        free = slots.reshape(flat.shape)
        for k in first:  # a loop over the few bridges of one layer
            taps = np.flatnonzero(free[o[k], i[k]])
            flat[o[k], i[k], taps[rng.integers(taps.size)]] = True
        placed[name] = int(first.size)
        allowance[name] -= int(first.size)
        chosen = np.zeros(cand.size, dtype=bool)
        chosen[chans[first]] = True
        rescue(src, chosen)
    return placed


def _fill(graph, masks, act, need: dict, moves: dict, rng, carry: bool) -> int:
    """Put `need[layer]` weights into free capable slots of each layer (:class:`_Slots`: taps of
    effective kernels first, then new kernels between a functional input and a functional
    output channel); with `carry`, what a layer cannot hold goes to the free capable slots of
    the layers after it in topological order (then those before it). Every slot reads a pixel
    the forward map reaches and writes one the backward map co-reaches, so a fully functional
    mask stays fully functional. Returns the number of weights placed."""
    names = list(graph.layers)
    slots = {}

    def put(name, count):
        if name not in slots:  # capable slots of a layer only when it is asked to hold some
            layer = graph.layers[name]
            free = _capable(layer, act.forward[layer.source], act.backward[layer.target])
            slots[name] = _Slots(masks[name], free & ~masks[name], rng)
        return slots[name].put(count)

    total, pending = 0, {}
    for name in names:
        if need.get(name, 0) > 0:
            got = put(name, need[name])
            moves[name].filled += got
            total += got
            if need[name] > got:
                pending[name] = need[name] - got
    if carry:
        for name, rest in pending.items():
            k = names.index(name)
            for other in names[k + 1:] + names[:k]:  # the layers after it first
                if rest == 0:
                    break
                got = put(other, rest)
                if got:
                    moves[other].carried_in += got
                    moves[other].placed_in += got
                    moves[name].carried_out += got
                    total += got
                    rest -= got
    return total


def _move_mode(move):
    """`move` as "bridge", "fill" or False (True is "bridge")."""
    if move is True:
        return "bridge"
    if move is False or move is None or (isinstance(move, str) and move.lower() in
                                         ("false", "off", "none", "no", "0")):
        return False
    if isinstance(move, str) and move.lower() in ("true", "on", "yes", "1"):
        return "bridge"
    if move not in MOVES:
        raise UnknownMethodError(f"unknown NPB move {move!r}; use True, False or one of "
                                 f"{list(MOVES)}")
    return move


def _move(graph: NetGraph, masks: dict, counts: Mapping[str, int], rng, device,
          bridges: bool = True, max_rounds: int = 12) -> tuple[dict, bool, int]:
    """Make every kept weight functional under the spatial semantics, keeping the budget.

    Rounds of the spatial audit (docs/npb.md, "Making every weight functional"): with
    `bridges`, bridges first (:func:`_bridge`: one weight from a dead-end channel to a
    co-reached output makes the weights into that channel functional), then every weight still
    non-functional is removed and as many are put into free capable slots of the same layer,
    then of other layers (:func:`_fill`); the audit is rerun after every batch and the loop ends
    on an audit, so the result is verified. Returns (layer -> _Moves, fully functional,
    number of audits).
    """
    activity = _engine_call("activity", "the move step (the spatial audit)",
                            "pass move=False")
    moves = {name: _Moves() for name in graph.layers}
    for name in masks:  # bridges and fills write through reshaped views
        masks[name] = np.ascontiguousarray(masks[name], dtype=bool)
    lineage = None
    writers = {}
    for name, layer in graph.layers.items():
        writers.setdefault(layer.target, []).append(name)
    audits = 0

    def audit():
        nonlocal audits
        audits += 1
        return activity(graph, masks, device=device)

    act = audit()
    for _ in range(max_rounds if bridges else 0):  # bridges while they pay
        if all(not (masks[n] & ~act.functional[n]).any() for n in masks):
            break
        lineage = _lineage(graph) if lineage is None else lineage
        placed = _bridge(graph, masks, act, lineage, writers, rng, min_value=2)
        if not placed:
            break
        for name, count in placed.items():
            moves[name].bridged += count
        act = audit()
    functional = False
    for _ in range(2 * max_rounds):
        changed = False
        for name in masks:  # non-functional weights out
            off = masks[name] & ~act.functional[name]
            if off.any():
                moves[name].removed += int(off.sum())
                masks[name] = masks[name] & act.functional[name]
                changed = True
        if changed:
            act = audit()  # the maps of what is left (fully functional: the audit is monotone)
            continue
        kept = {name: int(masks[name].sum()) for name in masks}
        need = {name: counts[name] - kept[name] + moves[name].carried_in
                - moves[name].carried_out for name in masks}
        over = _settle(need, moves)
        if over > 0:  # bridges rescued more than foreseen: take the surplus out again
            _trim(masks, need, over, moves, rng)
            act = audit()
            continue
        if not any(v > 0 for v in need.values()):
            functional = True
            break
        if not _fill(graph, masks, act, need, moves, rng, carry=True):
            functional = True  # no free capable slot anywhere: the rest is dropped
            break
        act = audit()
    else:
        functional = all(not (masks[n] & ~act.functional[n]).any() for n in masks)
    return moves, functional, audits


def _settle(need: dict, moves: dict) -> int:
    """Count the surplus of layers above their share (need < 0, after bridges) as weights of
    the layers below theirs (need > 0) carried over; `need` is updated. Returns the surplus
    left (the mask's total above the total budget)."""
    givers = [name for name, v in need.items() if v < 0]
    for name in need:
        while need[name] > 0 and givers:
            giver = givers[0]
            x = min(need[name], -need[giver])
            need[name] -= x
            need[giver] += x
            moves[name].carried_out += x
            moves[giver].carried_in += x
            if need[giver] == 0:
                givers.pop(0)
    return -sum(v for v in need.values() if v < 0)


def _trim(masks, need, over, moves, rng) -> None:
    """Remove `over` weights from the layers above their share (need < 0), from their
    fullest kernels (a kernel that keeps other taps still connects its channels)."""
    for name in sorted(need, key=need.get):
        surplus = min(over, -need[name])
        if surplus <= 0:
            break
        m = masks[name]
        flat = m.reshape(m.shape[0] * m.shape[1], -1)
        per = flat.sum(axis=1)
        kernel, tap = np.nonzero(flat)
        order = np.lexsort((rng.random(kernel.size), -per[kernel]))[:surplus]
        flat[kernel[order], tap[order]] = False
        moves[name].removed += int(order.size)
        over -= int(order.size)


def solve_npb(net, budget: Budget, *, seed=None, alpha: float = 0.01, beta: float = 1.0,
              max_p=None, solver: str = "exact", path_norm: str = "tight",
              path_mass: str = "pixels", move="bridge", progress: bool = False,
              device="cpu", input_shape=None) -> NPBResult:
    """NPB masks for a network, with the program values and the drift of the move step.

    Layers are solved in topological order, so every layer upstream of a layer is placed
    before it. P_i for a layer is the path mass reaching its input channel i through the masks
    already placed: by default (``path_mass="pixels"``, [NPB]'s definition) the number of
    paths from the input pixels to every pixel of channel i, summed over those pixels (the
    counting pass of the spatial engine, ``path_mass``); ``path_mass="channels"`` the path count
    of the channel multigraph whose multiplicities are the kernel counts (docs/npb.md). Kept taps
    are placed at random in each kernel; then the move step (``move``, docs/npb.md) makes every
    kept weight functional under the spatial semantics while keeping the budget: bridges from
    dead-end channels (``move="bridge"``, the default), then every weight still non-functional
    is removed and as many are put into free capable slots of the same layer (taps of effective
    kernels first, then new kernels between functional channels), of other layers only when a
    layer has none left; the spatial audit is rerun after every batch and has the last word.

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
    budget : Budget
        Per-layer counts n (see :mod:`graphpai.budgets`).
    seed : int or numpy.random.Generator, optional
    alpha, beta : float
        The program's weights; [NPB]'s CIFAR setting is alpha = 0.01, beta = 1.
    max_p : int, mapping of layer name to int, or None
        K, the most taps per kernel (never above the kernel size; None: the kernel size). It is
        raised per layer to ``ceil(n / (C_in C_out))`` where that is larger.
    solver : {"exact", "milp"}
    path_norm : {"tight", "reference"}
        max_path as defined (the tight bound) or as [NPB]'s code computes it (see
        :func:`max_path`).
    path_mass : {"pixels", "channels"}
        P_i summed over the pixels of the real geometry (taps placed at random, padding,
        stride, pools) or counted on the channel multigraph of the kernel counts.
    move : {"bridge", "fill", True, False}
        The move step: ``"bridge"`` (or True) bridges dead-end channels first, ``"fill"`` only
        removes and fills (it may drop weights where the functional part is too small to hold
        them), False keeps the program's masks with random taps as they come.
    progress : bool
        A bar over the layers on stderr (when it is a terminal).
    device : str
        Where the spatial engine runs.
    input_shape : tuple of int, optional
        For a torch model without ``input_shape``.

    Returns
    -------
    NPBResult
    """
    _check_params(alpha, beta, solver)
    max_path([1.0], 1, 1, 1, path_norm=path_norm)  # checks the name before any work
    if path_mass not in PATH_MASSES:
        raise UnknownMethodError(f"unknown NPB path_mass {path_mass!r}; use one of "
                                 f"{list(PATH_MASSES)}")
    move = _move_mode(move)
    start = time.perf_counter()
    graph = as_graph(net, input_shape)
    if graph.tied:
        tied = next(op for op in graph.uses.values() if op.param is not None)
        raise ModelError(f"npb solves one program per place a weight is applied, and layer "
                         f"{tied.param!r} is applied at two or more ({tied.name!r}: weight "
                         "tying, docs/graph.md#weight-tying); use mica, rpi or a ranking method "
                         "for this model, or untie the weight")
    counts = budget.check(graph).counts
    rng = np.random.default_rng(seed)
    from .._progress import bar as progress_bar

    masks, info = {}, {}
    bar = progress_bar(None, progress, total=len(graph.layers), unit="layer", desc="npb")

    def place(op: Layer, mass) -> np.ndarray:
        t0 = time.perf_counter()
        mask, objective, k = _solve_layer_masks(op, counts[op.name], mass[0], max_p, alpha,
                                                beta, solver, path_norm, rng)
        masks[op.name] = mask
        info[op.name] = (k, objective, int(mask.sum()), time.perf_counter() - t0)
        bar.update(1)
        return mask

    if path_mass == "pixels":
        _engine_call("path_mass", "the pixel path mass (path_mass='pixels')",
                     "pass path_mass='channels'")(graph, None, place=place, device=device)
    else:
        state = _path_state(graph)
        for op in graph.order:
            if not isinstance(op, Layer):
                state[op.target] = _link_mass(graph, op, state)
                continue
            values, scale = state[op.source]
            mask = place(op, state[op.source])
            out = graph.multiplicity(op, mask) @ values
            state[op.target] = renormalise(np.asarray(out, dtype=np.float64), scale)
    bar.close()
    solved = {name: int(masks[name].sum()) for name in masks}
    moves = {name: _Moves() for name in masks}
    functional, audits, t_move = None, 0, time.perf_counter()
    if move:
        from ..spectral.solvers import one_blas_thread  # small products: threads only spin

        with one_blas_thread():
            moves, functional, audits = _move(graph, masks, counts, rng, device,
                                              bridges=move == "bridge")
    t_move = time.perf_counter() - t_move if move else 0.0
    rows = []
    for name in graph.layers:
        m, kept = moves[name], int(masks[name].sum())
        rows.append(NPBLayer(name, counts[name], info[name][0], info[name][1], solved[name],
                             m.removed, m.added, kept, kept - counts[name], info[name][3],
                             m.bridged, m.filled, m.carried_in, m.carried_out))
    kept = sum(row.kept for row in rows)
    return NPBResult(MaskSet({name: masks[name] for name in graph.layers}), tuple(rows), alpha,
                     beta, solver, move, max(0, sum(counts.values()) - kept), functional,
                     time.perf_counter() - start, t_move, audits)


@register("npb", exact_budget=False)
def npb(graph, budget, *, seed=None, alpha: float = 0.01, beta: float = 1.0, max_p=None,
        solver: str = "exact", path_norm: str = "tight", path_mass: str = "pixels",
        move="bridge", progress: bool = False, device="cpu") -> MaskSet:
    """NPB masks ([NPB]): :func:`solve_npb` without the report (docs/npb.md).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> from graphpai.budgets import uniform
    >>> layers = [Layer("a", "linear", (4, 4), "x", "h"), Layer("b", "linear", (2, 4), "h", "y")]
    >>> g = NetGraph([Group("x", 4), Group("h", 4), Group("y", 2)], layers, [], ["x"], ["y"])
    >>> npb(g, uniform(g, 2), seed=0).counts()
    {'a': 8, 'b': 4}
    """
    return solve_npb(graph, budget, seed=seed, alpha=alpha, beta=beta, max_p=max_p,
                     solver=solver, path_norm=path_norm, path_mass=path_mass, move=move,
                     progress=progress, device=device).masks
