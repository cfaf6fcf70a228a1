r"""MiCA: minimum-connection-assured random masks, generated on the graph ([MiCA];
docs/definitions.md#mica).

MiCA is random pruning that keeps a top-to-bottom connection. Given exact per-layer counts
|E_l| (any budget of :mod:`graphpai.budgets`), it works in two passes over the
:class:`~graphpai.graph.NetGraph`:

1. **Node counts** (:func:`node_counts`), output to input. Every activation group gets a
   *request* c: how many of its channels the layers after it want to be live. The logits start at
   ``num_classes``. A layer with budget E, kernel size k (1 for a linear layer) and C_out outputs
   sets ``V_out = max(0, min(c, E, C_out))``; then ``n = 0`` if ``V_out = 0``, else n is drawn
   from the integer range ``[ceil(E/V_out), floor(E/k)]`` (``node_selection``: "rand" uniformly,
   "min"/"max" an end) when that range is not empty, else ``n = ceil(E/V_out)``; it passes
   ``min(n, C_in)`` back to its input group.
2. **Edge placement** (:func:`place_edges`), input to output. The exact (padding-aware) active
   fan-in positions of each layer come from the spatial activity engine
   (:func:`graphpai.torch.spatial.forward_maps`), run on the masks placed so far. The layer keeps
   its first ``n_out = max(1, min(C_out, E, V_out))`` output channels (the classifier, any layer
   that writes the logits directly or through links only, picks its classes at random) and keeps exactly E edges, highest tier first: (i) *assurance pairs*: one
   random active kernel offset of every active input channel, paired in turn with the selected
   outputs (input j with output j, the shorter list padded by sampling with replacement), then
   every other active position paired with a random selected output; (ii) the rest of selected
   outputs x active positions; (iii) active positions x unselected outputs; (iv) everything else.
   A tier that does not fit whole is sampled uniformly; the pairs of (i) are taken in order
   (first those that reach a new input channel), so a short budget still assures as many channels
   as it can.

Generalisation from the paper's VGG/ResNet rules to any DAG (graphpai's, stated once):

- a group's request is the maximum over everything that consumes it; a residual add passes its
  request to each input (an identity shortcut so returns it unchanged, and a block passes back the
  max of its shortcut's and its first conv's requests, as in [MiCA]); pooling and other
  channel-preserving links pass it through; a concat splits the request over its parts in
  channel order (a prefix of the concatenated channels), after giving each part the channels it
  will have live anyway (``ceil(E / fan_in)`` for a part made by a layer with budget E, which
  must feed that many outputs); a flatten turns a request for r features into ``ceil(r / (H*W))``
  channels.
- a linear layer that reads a flattened H x W map is a kernel of size ``k = H*W`` on the
  channels before the flatten (k = 1 after global pooling), so its n counts those channels.
- grouped convs (G groups of ``C_in/G`` inputs and ``C_out/G`` outputs): pass 1 asks for at least
  one input channel in every group that its selected outputs touch
  (``c >= (ceil(V_out / (C_out/G)) - 1) * C_in/G + 1``), and at least ``ceil(E / (C_out/G * k))``
  input channels, since an input channel only feeds the C_out/G outputs of its group (for G = 1
  this never exceeds ``ceil(E/V_out)``, so ordinary layers follow [MiCA] exactly). In pass 2 the
  assurance pairs are formed within each group (an output can only connect to inputs of its
  group); a group with active inputs but no selected output also selects its first output, so
  every active input channel is assured.

**Departure from docs/definitions.md#mica and [MiCA]: the repair** (``repair=True``, the
default; neither the
paper nor the definitions page has it, and ``repair=False`` gives their two passes alone, with the DAG rules above
that reduce to [MiCA]'s on chains and ResNets). The two passes assure a connection channel by
channel; with real geometry a kept weight can still be dead where a channel is live on only a few
pixels and its consumers read other pixels (tiny maps, such as VGG-16's 2 x 2 block at 10^3 and
above), or where DAG branches ask for different numbers of channels. After pass 2 the exact
activity maps find every kept weight that carries no signal, and layers are repaired from the
output back: each dead weight moves to a position that carries signal given the layers after it
(a random one in the same output channel where possible, else anywhere in the layer), so the
counts stay exact; the moves are vectorised per layer, one activity pass per repaired layer.
Where the two passes leave no dead weight the repair changes nothing. A fused Q/K/V
projection has channels that depend on each other (a Q/K weight is live only with a live V in
its head); its dead weights that pass the dense-layer test move anywhere in the layer, and the
round repeats (:func:`_move_coupled`). Removing a dead weight
kills no live one and adding a weight only adds paths, so live weights stay live. The result is
fully functional under both semantics of docs/definitions.md#functional whenever no layer has a
zero budget and every
layer has enough positions that can carry signal; on the VGG and ResNet families this holds over
the whole grid. It can fail in branchy DAGs at one to a few weights per layer, where often no
fully functional mask exists (one weight after a concat of two branches that both keep weights),
and with 3 x 3 kernels on 1 x 1 maps, where only the centre tap ever sees a pixel.
:attr:`Placement.moved` counts the moves.

References
----------
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High
   Compression Range", TMLR 2024. Code: Hikari43/minimum_connection_assurance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod
from typing import Mapping

import numpy as np

from .._progress import bar
from .._results import jsonable
from ..budgets import Budget
from ..engine import spatial_engine
from ..functional import _per_layer
from ..errors import BudgetError, UnknownMethodError
from ..graph import Layer, Link, NetGraph, as_graph
from ..masks import MaskSet
from ._registry import register

__all__ = [
    "mica",
    "node_counts",
    "place_edges",
    "place_layer",
    "shuffle",
    "NodeCounts",
    "LayerNodes",
    "Placement",
    "NODE_SELECTIONS",
]

NODE_SELECTIONS = ("rand", "min", "max")


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class LayerNodes:
    """Pass 1 for one layer (docs/definitions.md#mica).

    Attributes
    ----------
    layer : str
    budget : int
        E, the kept weights.
    kernel : int
        k: kernel positions per input channel (``H*W`` for a linear layer after a flatten).
    request : int
        c at the layer's output group.
    v_out : int
        ``max(0, min(request, E, C_out))``.
    low, high : int
        The integer range ``[ceil(E/V_out), floor(E/k)]`` n was drawn from (0, 0 if V_out = 0);
        empty when ``low > high``, and then ``n = low``. For a grouped conv ``low`` is at least
        ``ceil(E / (C_out/G * k))``.
    n : int
        The node count drawn.
    passed : int
        Input channels asked of the layer before: ``min(n, C_in)`` (raised for grouped convs).
    """

    layer: str
    budget: int
    kernel: int
    request: int
    v_out: int
    low: int
    high: int
    n: int
    passed: int


@dataclass(frozen=True)
class NodeCounts:
    """Pass 1 of MiCA: per-layer node counts and the request of every group
    (docs/definitions.md#mica)."""

    node_selection: str
    layers: tuple[LayerNodes, ...]
    requests: dict = field(default_factory=dict, compare=True, hash=False)

    def __getitem__(self, layer: str) -> LayerNodes:
        for row in self.layers:
            if row.layer == layer:
                return row
        raise KeyError(layer)

    def to_dict(self) -> dict:
        return {"node_selection": self.node_selection,
                "requests": jsonable(self.requests),
                "layers": [jsonable(asdict(row)) for row in self.layers]}


@dataclass(frozen=True)
class Placement:
    """Pass 2 of MiCA: the masks, and how many dead kept weights the repair moved per layer."""

    masks: MaskSet
    moved: dict = field(default_factory=dict, compare=True, hash=False)

    def to_dict(self) -> dict:
        return {"counts": self.masks.counts(), "moved": jsonable(self.moved)}


# ------------------------------------------------------------------------------ helpers
def _counts_of(graph: NetGraph, counts) -> dict[str, int]:
    """Per-layer counts from a Budget or a mapping, checked against the graph."""
    if isinstance(counts, Budget):
        counts = counts.check(graph).counts
    if not isinstance(counts, Mapping):
        raise BudgetError(f"MiCA needs per-layer counts (a Budget or a mapping layer -> count), "
                          f"got {type(counts).__name__}")
    missing = [name for name in graph.layers if name not in counts]
    unknown = [name for name in counts if name not in graph.layers]
    if missing or unknown:
        raise BudgetError(f"counts do not fit this network (missing: {missing}, unknown: "
                          f"{unknown}); make the budget from this graph")
    out = {}
    for name, layer in graph.layers.items():
        value = counts[name]
        try:
            whole = int(value) == value
        except (TypeError, ValueError, OverflowError):  # None, NaN, inf, text
            whole = False
        if not whole or not 0 <= value <= layer.numel:
            raise BudgetError(f"count {value!r} for layer {name!r} is not an integer in "
                              f"[0, {layer.numel}]")
        out[name] = int(value)
    return out


def _units(graph: NetGraph, layer: Layer) -> tuple[int, int]:
    """(k, C_units): kernel positions per input channel and the number of input channels.

    A linear layer that reads a flatten of a (C, *size) map is a kernel of size prod(size) on C
    channels; its fan-in index ``c*k + p`` is the flatten's feature order.
    """
    if layer.kind == "conv":
        return prod(layer.kernel), layer.in_channels
    producer = graph.producer(layer.source)
    if isinstance(producer, Link) and producer.kind == "flatten":
        source = graph.groups[producer.sources[0]]
        return prod(source.size), source.channels
    return 1, layer.in_channels


def _classifiers(graph: NetGraph) -> set[str]:
    """Layers that write the logits: an output group, or one that reaches an output through
    parameter-free links only (the last conv of an all-conv net, before its global pool)."""
    found, seen, todo = set(), set(), list(graph.outputs)
    while todo:
        group = todo.pop()
        if group in seen:
            continue
        seen.add(group)
        op = graph.producer(group)
        if isinstance(op, Layer):
            found.add(op.name)
        elif op is not None:
            todo.extend(op.sources)
    return found


def _check_selection(node_selection: str) -> None:
    if node_selection not in NODE_SELECTIONS:
        raise UnknownMethodError(f"unknown node_selection {node_selection!r}; use one of "
                                 f"{', '.join(NODE_SELECTIONS)}")


# ------------------------------------------------------------------------------ pass 1
def node_counts(graph, counts, *, seed=None, node_selection: str = "rand",
                num_classes: int | None = None) -> NodeCounts:
    r"""Pass 1 of MiCA: node counts from output to input ([MiCA]; docs/definitions.md#mica).

    Every output group starts with the request ``num_classes``; ops are visited in reverse
    topological order, and a group's request is the maximum over its consumers (see the module
    docstring for links, flatten and grouped convs).

    Parameters
    ----------
    graph : NetGraph or torch.nn.Module
    counts : Budget or mapping of str to int
        |E_l| for every layer.
    seed : int or numpy.random.Generator, optional
        Draws n in mode "rand".
    node_selection : {"rand", "min", "max"}
        Draw n uniformly from its range, or take its low or high end.
    num_classes : int, optional
        The request at the output groups (default: their number of channels).

    Returns
    -------
    NodeCounts

    Raises
    ------
    BudgetError
        If `counts` does not fit the graph or `num_classes` exceeds an output's channels.
    UnknownMethodError
        If `node_selection` is not one of "rand", "min", "max".

    Examples
    --------
    A 4 -> 6 -> 3 MLP with budgets 5 and 3: the classifier has V_out = min(3, 3, 3) = 3 and the
    range [ceil(3/3), 3] = [1, 3], so "max" takes n = 3; the hidden layer then has V_out = 3,
    range [ceil(5/3), 5] = [2, 5], and passes min(5, 4) = 4 to the input.

    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 4), Group("h", 6), Group("y", 3)],
    ...              [Layer("fc1", "linear", (6, 4), "x", "h"),
    ...               Layer("fc2", "linear", (3, 6), "h", "y")], [], ["x"], ["y"])
    >>> plan = node_counts(g, {"fc1": 5, "fc2": 3}, node_selection="max")
    >>> [(r.layer, r.v_out, r.low, r.high, r.n, r.passed) for r in plan.layers]
    [('fc1', 3, 2, 5, 5, 4), ('fc2', 3, 1, 3, 3, 3)]
    """
    graph = as_graph(graph)
    _check_selection(node_selection)
    counts = _counts_of(graph, counts)
    rng = np.random.default_rng(seed)
    request = {name: 0 for name in graph.groups}
    for name in graph.outputs:
        channels = graph.groups[name].channels
        if num_classes is not None and not 1 <= num_classes <= channels:
            raise BudgetError(f"num_classes={num_classes} but output {name!r} has {channels} "
                              "channels; give a number in [1, channels] or leave it out")
        request[name] = channels if num_classes is None else int(num_classes)

    least = _least_channels(graph, counts)
    rows = {}
    for op in reversed(graph.order):
        c = request[op.target]
        if isinstance(op, Layer):
            row = _layer_nodes(graph, op, counts[op.mask_key], c, node_selection, rng)
            rows[op.name] = row
            k, _ = _units(graph, op)
            asked = row.passed if op.kind == "conv" or k == 1 else row.passed * k
            request[op.source] = max(request[op.source], min(asked, graph.groups[op.source].channels))
            continue
        if op.kind == "concat":
            for source, share in zip(op.sources, _split(graph, op, c, least)):
                request[source] = max(request[source], share)
        elif op.kind == "flatten":
            source = op.sources[0]
            per = prod(graph.groups[source].size)
            request[source] = max(request[source], -(-c // per))
        else:  # pool, add and any other channel-preserving link
            for source in op.sources:
                request[source] = max(request[source], min(c, graph.groups[source].channels))
    layers = tuple(rows[name] for name in graph.layers)
    return NodeCounts(node_selection, layers, request)


def _least_channels(graph: NetGraph, counts: dict[str, int]) -> dict[str, int]:
    """Channels each group will have live at the least: a layer with budget E must feed
    ``ceil(E / fan_in)`` outputs; pooling keeps it, an add takes the max, a concat the sum."""
    least = {name: 0 for name in graph.groups}
    for op in graph.order:
        if isinstance(op, Layer):
            least[op.target] = -(-counts[op.mask_key] // op.fan_in)
        elif op.kind == "add":
            least[op.target] = max(least[s] for s in op.sources)
        elif op.kind == "concat":
            least[op.target] = sum(least[s] for s in op.sources)
        elif op.kind == "flatten":
            least[op.target] = least[op.sources[0]] * prod(graph.groups[op.sources[0]].size)
        else:
            least[op.target] = least[op.sources[0]]
    return least


def _split(graph: NetGraph, link: Link, c: int, least: dict[str, int]) -> list[int]:
    """A concat's request c over its parts: each part first gets the channels it will have live
    anyway (its producer's least), then the rest of c is filled in channel order."""
    if c == 0:
        return [0] * len(link.sources)
    channels = [graph.groups[s].channels for s in link.sources]
    shares = [min(least[s], n) for s, n in zip(link.sources, channels)]
    left = c - sum(shares)
    for position, n in enumerate(channels):
        extra = int(np.clip(left, 0, n - shares[position]))
        shares[position] += extra
        left -= extra
    return shares


def _layer_nodes(graph, layer: Layer, budget: int, c: int, node_selection: str, rng) -> LayerNodes:
    k, units = _units(graph, layer)
    v_out = max(0, min(c, budget, layer.out_channels))
    if v_out == 0:
        low = high = n = 0
    else:
        cout_g = layer.out_channels // layer.groups
        low = max(-(-budget // v_out), -(-budget // (cout_g * k)))
        high = budget // k
        if low > high:
            n = low
        elif node_selection == "min":
            n = low
        elif node_selection == "max":
            n = high
        else:
            n = int(rng.integers(low, high + 1))
    passed = min(n, units)
    if layer.groups > 1 and v_out > 0:
        cin_g, cout_g = units // layer.groups, layer.out_channels // layer.groups
        passed = min(units, max(passed, (-(-v_out // cout_g) - 1) * cin_g + 1))
    return LayerNodes(layer.name, budget, k, c, v_out, low, high, n, passed)


# ------------------------------------------------------------------------------ pass 2
def place_layer(active: np.ndarray, budget: int, n_out: int, *, out_channels: int, groups: int = 1,
                random_outputs: bool = False, seed=None) -> np.ndarray:
    """Pass 2 for one layer: keep exactly `budget` edges by the priority tiers of
    docs/definitions.md#mica.

    Parameters
    ----------
    active : bool ndarray, shape (C_in, k)
        Active fan-in positions: ``active[c, a]`` is kernel offset a of input channel c (for a
        grouped conv, input channel c belongs to group ``c // (C_in/groups)``).
    budget : int
        E, the number of edges to keep (at most ``out_channels * C_in/groups * k``).
    n_out : int
        Selected outputs: the first `n_out` channels, or `n_out` random ones.
    out_channels : int
    groups : int
    random_outputs : bool
        Pick the selected outputs at random (the classifier) instead of the prefix.
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    bool ndarray, shape (out_channels, C_in/groups * k)
        The mask in the order of ``weight.reshape(C_out, -1)``.

    Raises
    ------
    BudgetError
        If `budget` is not in [0, weights], `n_out` not in [1, out_channels], or `groups` does
        not divide both C_in and `out_channels`.
    """
    rng = np.random.default_rng(seed)
    active = np.asarray(active, dtype=bool)
    if active.ndim != 2:
        raise BudgetError(f"active must be a (C_in, k) array, got shape {active.shape}")
    units, k = active.shape
    if groups < 1 or units % groups or out_channels % groups:
        raise BudgetError(f"groups={groups} must divide C_in={units} and out_channels="
                          f"{out_channels}")
    cin_g, cout_g = units // groups, out_channels // groups
    fan_in = cin_g * k
    mask = np.zeros((out_channels, fan_in), dtype=bool)
    if not 0 <= budget <= mask.size:
        raise BudgetError(f"budget {budget} is outside [0, {mask.size}], the layer's weights")
    if not 1 <= n_out <= out_channels:
        raise BudgetError(f"n_out={n_out} selected outputs must be in [1, {out_channels}]")
    if budget == 0:
        return mask

    # one random active offset per active input channel, channels in random order per group
    keys = rng.random((units, k))
    keys[~active] = -1.0
    offset = keys.argmax(axis=1)
    live = np.flatnonzero(active.any(axis=1))
    live = live[np.lexsort((rng.random(live.size), live // cin_g))]
    a_g = np.bincount(live // cin_g, minlength=groups)
    a_start = np.cumsum(a_g) - a_g

    # selected outputs; a group with active inputs but none selected also selects its first
    # output (grouped convs), so that every active input can be assured
    chosen = rng.choice(out_channels, n_out, replace=False) if random_outputs else np.arange(n_out)
    selected = np.zeros(out_channels, dtype=bool)
    selected[chosen] = True
    orphan = (a_g > 0) & ~selected.reshape(groups, cout_g).any(axis=1)
    if orphan.any():
        chosen = np.concatenate([chosen, np.flatnonzero(orphan) * cout_g])
        selected[chosen] = True
    out_group = chosen // cout_g
    out_list = chosen[np.argsort(out_group, kind="stable")]  # grouped, each group in order
    v_g = np.bincount(out_group, minlength=groups)
    v_start = np.cumsum(v_g) - v_g

    # (i-a) assurance pairs: max(A_g, V_g) in every group with active inputs
    p_g = np.where((a_g > 0) & (v_g > 0), np.maximum(a_g, v_g), 0)
    gid = np.repeat(np.arange(groups), p_g)
    t = np.arange(gid.size) - np.repeat(np.cumsum(p_g) - p_g, p_g)
    pad_in = (rng.random(gid.size) * a_g[gid]).astype(np.int64)
    pad_out = (rng.random(gid.size) * v_g[gid]).astype(np.int64)
    unit = live[a_start[gid] + np.where(t < a_g[gid], t, pad_in)]
    out = out_list[v_start[gid] + np.where(t < v_g[gid], t, pad_out)]
    order = np.lexsort((t, t >= a_g[gid]))  # pairs that assure a new input first, then by t
    pairs = (out * fan_in + (unit - gid * cin_g) * k + offset[unit])[order]

    # (i-b) every other active position, with a random selected output of its group
    rest = active.copy()
    rest[live, offset[live]] = False
    rest &= (v_g > 0)[np.arange(units) // cin_g][:, None]
    ru, roff = np.nonzero(rest)
    rg = ru // cin_g
    ro = out_list[v_start[rg] + (rng.random(ru.size) * v_g[rg]).astype(np.int64)]
    spread = ro * fan_in + (ru - rg * cin_g) * k + roff

    left = budget
    take = pairs[:left]
    mask.flat[take] = True
    left -= take.size
    if left > 0:
        left = _take(mask, spread, left, rng)
    if left > 0:
        act_rows = active.reshape(groups, fan_in)[np.arange(out_channels) // cout_g]
        for tier in (selected[:, None] & act_rows & ~mask, ~selected[:, None] & act_rows, ~act_rows):
            left = _take(mask, np.flatnonzero(tier), left, rng)
            if left == 0:
                break
    return mask


def _take(mask: np.ndarray, candidates: np.ndarray, left: int, rng) -> int:
    """Keep all of `candidates` (flat indices) if they fit in `left`, else a uniform sample."""
    if candidates.size > left:
        candidates = candidates[_sample(candidates.size, left, rng)]
    mask.flat[candidates] = True
    return left - candidates.size


def _sample(m: int, r: int, rng) -> np.ndarray:
    """A uniformly random r-subset of ``range(m)`` (as indices, in no particular order).

    Small r: numpy's choice without replacement. Large r: keep each index with probability
    r/m, then drop or add the difference uniformly, which is uniform over r-subsets too (given
    the Bernoulli count the set is uniform, and the correction preserves that), at a fraction
    of the cost of a permutation.
    """
    if 50 * r < m or r == 0:
        return rng.choice(m, r, replace=False, shuffle=False)
    keep = rng.random(m) < r / m
    have = int(np.count_nonzero(keep))
    if have != r:
        pool = np.flatnonzero(keep if have > r else ~keep)
        keep[pool[rng.choice(pool.size, abs(have - r), replace=False, shuffle=False)]] = have < r
    return np.flatnonzero(keep)


def place_edges(graph, counts, nodes: NodeCounts, *, seed=None, repair: bool = True,
                device="cpu", progress: bool = False) -> Placement:
    """Pass 2 of MiCA: place exactly |E_l| edges per layer, input to output
    (docs/definitions.md#mica).

    Each layer is placed by :func:`place_layer` on the exact active fan-in positions that the
    spatial activity engine (:func:`graphpai.torch.spatial.forward_maps`) finds from the masks
    placed before it; then, with `repair`, kept weights that carry no signal are moved (see the
    module docstring).

    Parameters
    ----------
    graph : NetGraph or torch.nn.Module
    counts : Budget or mapping of str to int
    nodes : NodeCounts
        Pass 1, from :func:`node_counts` with the same counts.
    seed : int or numpy.random.Generator, optional
    repair : bool
        Move dead kept weights to live positions, a departure from docs/definitions.md#mica
        (module docstring);
        skipped when a layer has a zero budget, since then nothing can be functional.
    device : str or torch.device
        Where the activity engine runs its convolutions.
    progress : bool
        A bar on stderr over the layers placed, then over the layers repaired
        (:mod:`graphpai._progress`).

    Returns
    -------
    Placement
    """
    engine = spatial_engine()
    graph = as_graph(graph)
    counts = _counts_of(graph, counts)
    rng = np.random.default_rng(seed)
    classifiers = _classifiers(graph)
    placed = {}
    shown = bar(None, progress, total=len(graph.layers), desc="mica", unit="layer")

    def place(layer: Layer, input_map: np.ndarray) -> np.ndarray:
        k, units = _units(graph, layer)
        active = engine.active_fan_in(layer, input_map).reshape(units, k)
        key = layer.mask_key  # a tied weight is placed at its first use in graph order
        if key in placed:
            return graph.param_mask(layer, placed[key])
        budget = counts[key]
        n_out = max(1, min(layer.out_channels, budget, nodes[key].v_out))
        mask = place_layer(active, budget, n_out, out_channels=layer.out_channels,
                           groups=layer.groups, random_outputs=layer.name in classifiers, seed=rng)
        mask = mask.reshape(layer.weight_shape)
        placed[key] = graph.param_mask(layer, mask)
        shown.update(1)
        return mask

    with shown:
        engine.forward_maps(graph, None, place=place, device=device)
    masks = {name: placed[name] for name in graph.layers}
    moved = {name: 0 for name in graph.layers}
    if repair and min(counts.values(), default=0) > 0:
        moved = _repair(graph, masks, rng, device, progress)
    return Placement(MaskSet(masks), moved)


def _repair(graph: NetGraph, masks: dict, rng, device, progress: bool = False) -> dict[str, int]:
    """Move every dead kept weight to a position that carries signal; edits `masks` in place.

    Layers are repaired from the output back. A dead weight lies on no input-output path, so
    removing it kills no live weight, and adding a weight only adds paths: the set of live
    weights only grows, so a layer with no dead weight at the start never gets one, and a layer's
    new weights stay live while the layers before it are repaired. A layer's live positions are
    the functional weights of the masks with that layer made dense (its own mask changes neither
    the forward map of its input nor the backward map of its output), except where its output
    channels depend on each other (:func:`_move_coupled`); then the round is repeated.
    """
    engine = spatial_engine()
    moved = {name: 0 for name in graph.layers}
    for round_ in range(_ROUNDS):
        live = _live(engine, graph, masks, device)
        todo = [name for name in graph.layers if (masks[name] & ~live[name]).any()]
        if not todo:
            break
        shown = bar(list(reversed(todo)), progress and round_ == 0, desc="mica repair",
                    unit="layer")
        for name in shown:
            mask = masks[name]
            capable = _live(engine, graph, {**masks, name: np.ones_like(mask)}, device)[name]
            dead = mask & ~capable
            if not dead.any():
                continue
            rows = mask.shape[0]
            kept = (mask & capable).reshape(rows, -1)
            new = _refill(capable.reshape(rows, -1) & ~kept, dead.reshape(rows, -1).sum(axis=1),
                          rng)
            short = int(dead.sum()) - int(new.sum())
            if short:  # too few live positions: keep that many dead weights to hold the count
                back = np.flatnonzero(dead)
                new.flat[back[_sample(back.size, short, rng)]] = True
            masks[name] = (kept | new).reshape(mask.shape)
            moved[name] += int(dead.sum()) - short
        if not _move_coupled(engine, graph, masks, moved, rng, device):
            break
    return moved


def _live(engine, graph: NetGraph, masks: dict, device) -> dict:
    """Layer -> its kept weights that carry signal (a tied weight: at one of its uses)."""
    return _per_layer(graph, engine.activity(graph, masks, device=device).functional)


_ROUNDS = 10  # repair rounds; a second one only follows moves of coupled weights (docs/mica.md)


def _move_coupled(engine, graph: NetGraph, masks: dict, moved: dict, rng, device) -> bool:
    """Move the dead weights that the layer-made-dense test calls live; whether any moved.

    That test assumes a layer's output channels carry signal independently. An attention's
    fused Q/K/V projection breaks it: a Q or K channel is functional only when its head has a
    functional V channel (docs/definitions.md#functional), so when pass 2's prefix of selected
    outputs holds Q rows only, every one of its weights is dead, yet live with the layer dense,
    and the per-row moves leave them in place. Such weights move to random positions of the
    layer that can carry signal, in output channels that already carry signal where there are
    any (a weight added there is live), else anywhere (the V rows among them). Where every dead weight has nowhere
    to go this costs one activity pass and changes nothing, so the masks of the VGG/ResNet
    families and the DAGs are those of the per-row moves alone.
    """
    live = _live(engine, graph, masks, device)
    changed = False
    for name in reversed([n for n in graph.layers if (masks[n] & ~live[n]).any()]):
        mask = masks[name]
        if changed:
            live = _live(engine, graph, masks, device)
        capable = _live(engine, graph, {**masks, name: np.ones_like(mask)}, device)[name]
        coupled = np.flatnonzero(mask & capable & ~live[name])
        if not coupled.size:
            continue
        free = (capable & ~mask).reshape(mask.shape[0], -1)
        in_live_rows = free & live[name].reshape(mask.shape[0], -1).any(axis=1, keepdims=True)
        first, rest = np.flatnonzero(in_live_rows), np.flatnonzero(free & ~in_live_rows)
        take = first[_sample(first.size, min(coupled.size, first.size), rng)]
        more = min(coupled.size - take.size, rest.size)
        take = np.concatenate([take, rest[_sample(rest.size, more, rng)]])
        if not take.size:
            continue
        mask = mask.copy()
        mask.flat[coupled[:take.size]] = False
        mask.flat[take] = True
        masks[name] = mask
        moved[name] += int(take.size)
        changed = True
    return changed


def _refill(candidates: np.ndarray, lost: np.ndarray, rng) -> np.ndarray:
    """Pick ``lost[o]`` random candidates in row o, the shortfall anywhere else at random."""
    out = np.zeros_like(candidates)
    rows, cols = np.nonzero(candidates)
    order = np.lexsort((rng.random(rows.size), rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)
    first = rank < lost[rows]
    out[rows[first], cols[first]] = True
    short = int(lost.sum()) - int(first.sum())
    if short > 0:
        rest = np.flatnonzero(~first)
        rest = rest[_sample(rest.size, min(short, rest.size), rng)]
        out[rows[rest], cols[rest]] = True
    return out


# ------------------------------------------------------------------------------ entry points
@register("mica")
def mica(graph, counts, *, seed=None, node_selection: str = "rand", num_classes: int | None = None,
         repair: bool = True, device="cpu", progress: bool = False) -> MaskSet:
    """MiCA: random masks that keep a top-to-bottom connection ([MiCA];
    docs/definitions.md#mica).

    Pass 1 (:func:`node_counts`) and pass 2 (:func:`place_edges`) with one random generator, so
    the same seed gives the same mask. With the per-layer counts of budget X this is MiCA-X;
    :func:`shuffle` turns it into RPI-X.

    Parameters
    ----------
    graph : NetGraph or torch.nn.Module
    counts : Budget or mapping of str to int
        |E_l| for every layer (``graphpai.budgets``: uniform, ERK, IGQ, EPL, from a mask).
    seed : int or numpy.random.Generator, optional
    node_selection : {"rand", "min", "max"}
        How pass 1 picks n from its range.
    num_classes : int, optional
        The request at the logits (default: the output's number of channels).
    repair : bool
        Move weights that carry no signal to ones that do: graphpai's departure from
        docs/definitions.md#mica and
        [MiCA] (module docstring); False gives the two passes alone.
    device : str or torch.device
        Where the activity engine runs.
    progress : bool
        Bars on stderr over the layers placed and repaired (:mod:`graphpai._progress`).

    Returns
    -------
    MaskSet
        Exactly ``counts[l]`` kept weights in every layer. Every kept weight is functional (both
        semantics of docs/definitions.md#functional) whenever no layer has a zero budget and each
        budget fits in its
        layer's live positions.

    Raises
    ------
    BudgetError
        If `counts` does not fit the graph.
    UnknownMethodError
        If `node_selection` is unknown.

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 4), Group("h", 6), Group("y", 3)],
    ...              [Layer("fc1", "linear", (6, 4), "x", "h"),
    ...               Layer("fc2", "linear", (3, 6), "h", "y")], [], ["x"], ["y"])
    >>> m = mica(g, {"fc1": 5, "fc2": 3}, seed=0)
    >>> m.counts()
    {'fc1': 5, 'fc2': 3}
    >>> used = m["fc1"].any(axis=1)        # hidden units with an input ...
    >>> bool((m["fc2"][:, used].any(axis=0)).all())   # ... all feed the classifier
    True
    """
    graph = as_graph(graph)
    rng = np.random.default_rng(seed)
    nodes = node_counts(graph, counts, seed=rng, node_selection=node_selection,
                        num_classes=num_classes)
    return place_edges(graph, counts, nodes, seed=rng, repair=repair, device=device,
                       progress=progress).masks


def shuffle(masks, seed=None) -> MaskSet:
    """RPI with a mask's own budget: each layer's kept positions permuted uniformly
    (docs/definitions.md#mica).

    The result keeps exactly as many weights per layer as `masks` and, since a uniform
    permutation of any fixed set of k positions is a uniform k-subset, has the distribution of
    :func:`graphpai.generators.random.rpi` with that budget (RPI-X from MiCA-X).

    Parameters
    ----------
    masks : MaskSet or mapping of str to array-like
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    MaskSet

    Examples
    --------
    >>> shuffle({"fc": [[1, 0, 0], [1, 1, 0]]}, seed=0).counts()
    {'fc': 3}
    """
    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    rng = np.random.default_rng(seed)
    return MaskSet({name: rng.permutation(mask.ravel()).reshape(mask.shape)
                    for name, mask in masks.items()})
