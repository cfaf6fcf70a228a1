"""Functional (effective) weights and channels of a masked network, and the audit
(docs/definitions.md#masks, #functional).

A kept weight is **functional** when it can carry signal from the input to the logits. Two
semantics, a third for reference, and every result says which it used:

- ``"channel"`` (graph only, fast): forward reach R over channels from the input (all input
  channels reached; an output channel is reached if a kept tap connects it to a reached input
  channel; residual adds take the union, concat stacks, flatten and pooling follow
  docs/definitions.md#graph) and
  backward co-reach C from the logits (a channel is co-reached if a kept tap connects it to a
  co-reached output channel of any layer that consumes it). A kept weight ``(o, i, a, b)`` is
  functional iff ``i in R`` and ``o in C``. This is [VK]'s graph method (``effective_masks_custom``).
  Computed with boolean mat-vecs over the masks in topological order, forward then backward.
- ``"spatial"`` (exact at initialization, [VK]'s reference): 0/1 activity maps per pixel through
  the real geometry, forward from an all-ones input and backward from the logits, clamped after
  every op; a kept conv weight is functional iff its weight gradient with the forward map as input
  and the backward map as output gradient is positive. The algorithm is documented in
  :mod:`graphpai.torch.spatial`, where torch runs the convolutions; this module reaches it only
  through the spatial engine interface of :mod:`graphpai.engine`.
- ``"mica"`` (reference behaviour, to reproduce [MiCA]'s figures): the check in the MiCA code is
  a hybrid of the two. Forward at tap level: from the all-ones input through the masks, a kept
  weight survives if its tap sees an active input pixel at some output position; backward at
  channel level: co-reach over the surviving weights, and a surviving weight is functional iff
  its output channel is co-reached. On VGG-16 RPI-ERK at 10^3 it gives 12,922 functional weights
  where channel gives 13,470 and spatial 12,403. Always spatial ⊆ mica ⊆ channel.

``active`` (all semantics) names channels that are active at every pixel, reached or not: the
MiCA code treats every channel with a non-zero bias or BatchNorm shift so, [NPB] every channel
of a layer with a bias (its biases are set to 1). The NetGraph carries no parameter values, so
these are given explicitly; at initialization BatchNorm shifts are zero, so the default (none)
is the MiCA code's behaviour on its own models, whose biases start at zero.

Channel functional weights always contain the mica ones, and those the spatial ones; they differ
only where a tap only ever sees padding or a channel is active on too few pixels.

A weight applied at two places (weight tying: an embedding and its LM head, a module called
twice; docs/graph.md#weight-tying) is one layer with one mask, and its ops are the graph's
*uses* of it. Reach and co-reach run over every use; a kept tied weight is functional iff it is
functional at one of its uses (the gradient of the outputs is the sum of the uses' gradients,
non-zero almost surely iff one is), and the counts count it once.

A **functional node** is a hidden channel (an output channel of a layer that does not produce the
logits) with at least one functional incoming weight in that layer and one functional outgoing
weight downstream (through adds, concat, pooling and flatten). A logit counts as functional with
one functional incoming weight.

References
----------
.. [VK] A. Vysogorets, J. Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens
   of Effective Sparsity", JMLR 2023.
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ._memory import require_layers
from ._progress import bar, option
from ._results import jsonable
from .engine import check_active, spatial_engine
from .errors import UnknownMethodError
from .graph import Layer, NetGraph, as_graph
from .masks import MaskSet, nm_compliant, parse_nm

__all__ = [
    "SEMANTICS",
    "LayerAudit",
    "AuditResult",
    "audit",
    "functional_edges",
    "reach",
    "coreach",
    "prepare",
    "prepare_masks",
    "inputs_used",
    "outputs_fed",
]

SEMANTICS = ("channel", "spatial", "mica")

# boolean work on a big layer runs over blocks of output rows of at most this many bytes
BLOCK_BYTES = 64 << 20


# ---------------------------------------------------------------------------------- inputs
def prepare(net, masks=None, input_shape=None):
    """(NetGraph, validated MaskSet) from a graph or torch model and masks: the one validation
    gate of the analyses. With no masks, a torch model's own masks are read
    (``torch.nn.utils.prune`` buffers, ``torch.ao.pruning`` parametrizations; see
    :func:`prepare_masks`), and a graph or an unpruned model is dense.

    Raises
    ------
    MaskError
        If a mask is missing, not 0/1, has the wrong shape or names an unknown layer.
    """
    graph, masks, _ = prepare_masks(net, masks, input_shape)
    return graph, masks


def prepare_masks(net, masks=None, input_shape=None):
    """(NetGraph, validated MaskSet, where the masks came from): ``"given"``, ``"dense"``, or
    ``"model: ..."`` naming what was read from a pruned torch model
    (:func:`graphpai.torch.masks.model_masks`), so that a 99.9%-pruned model is never audited
    as dense without a word."""
    graph = as_graph(net, input_shape)
    if masks is None:
        if not isinstance(net, NetGraph):  # a torch model: it may carry its own masks
            from .torch.masks import model_masks

            found, source = model_masks(net, graph)
            if found is not None:
                return graph, found.validate(graph), f"model: {source}"
        require_layers(graph.layers, 1, "the all-ones masks of the dense network",
                       "free memory or run on a machine with more",
                       extra=max((layer.numel for layer in graph.layers.values()), default=0))
        return graph, MaskSet.dense(graph).validate(graph), "dense"
    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    return graph, masks.validate(graph), "given"


def _check_semantics(semantics: str) -> None:
    if semantics not in SEMANTICS:
        raise UnknownMethodError(f"unknown semantics {semantics!r}; use one of {list(SEMANTICS)}")


def _rows(layer: Layer, mask: np.ndarray) -> np.ndarray:
    """The mask as (C_out, fan_in): row o holds kernel o in ``weight.reshape(C_out, -1)`` order."""
    return mask.reshape(layer.out_channels, -1)


def _per_output(layer: Layer, vector: np.ndarray) -> np.ndarray:
    """Input-channel vector -> (C_out, C_in/groups): the inputs each output's group reads."""
    c_in_g = layer.weight_shape[1]
    per = layer.out_channels // layer.groups
    return np.repeat(vector.reshape(layer.groups, c_in_g), per, axis=0)


def _taps(layer: Layer) -> int:
    return layer.fan_in // layer.weight_shape[1]


def _blocks(array: np.ndarray):
    """Slices of the first axis of `array`, each at most BLOCK_BYTES of it (at least one row)."""
    n = array.shape[0]
    step = max(1, BLOCK_BYTES // max(1, array[:1].nbytes))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def _forward_layer(layer: Layer, mask: np.ndarray, reached: np.ndarray) -> np.ndarray:
    """Output channels with a kept tap from a True input channel."""
    rows = _rows(layer, mask)
    if reached.all():
        return rows.any(axis=1)
    if layer.groups > 1:
        seen = np.repeat(_per_output(layer, reached), _taps(layer), axis=1)
        return (rows & seen).any(axis=1)
    seen = np.repeat(reached, _taps(layer))  # (fan_in,): the same for every output
    out = np.empty(layer.out_channels, dtype=bool)
    for block in _blocks(rows):
        out[block] = (rows[block] & seen).any(axis=1)
    return out


def _backward_layer(layer: Layer, mask: np.ndarray, coreached=None) -> np.ndarray:
    """Input channels with a kept tap to a True output channel (None: to any output)."""
    per = layer.out_channels // layer.groups
    rows = _rows(layer, mask)
    if coreached is None or coreached.all():
        taps = rows.reshape(layer.groups, per, -1).any(axis=1)  # (groups, fan_in)
    elif layer.groups > 1:
        taps = (rows.reshape(layer.groups, per, -1) & coreached.reshape(layer.groups, per, 1)
                ).any(axis=1)
    else:
        taps = np.zeros((1, layer.fan_in), dtype=bool)
        for block in _blocks(rows):
            chosen = rows[block][coreached[block]]
            if len(chosen):
                taps |= chosen.any(axis=0)
    return taps.reshape(layer.groups, layer.weight_shape[1], _taps(layer)).any(axis=2).reshape(-1)


def outputs_fed(layer: Layer, mask) -> np.ndarray:
    """Output channels (features) of `layer` with at least one kept weight in `mask`.

    Examples
    --------
    >>> from graphpai.graph import Layer
    >>> outputs_fed(Layer("fc", "linear", (2, 3), "x", "y"), np.array([[0, 0, 0], [0, 1, 0]]))
    array([False,  True])
    """
    return _rows(layer, np.asarray(mask, dtype=bool)).any(axis=1)


def inputs_used(layer: Layer, mask) -> np.ndarray:
    """Input channels (features) of `layer` with at least one kept weight in `mask`.

    Examples
    --------
    >>> from graphpai.graph import Layer
    >>> inputs_used(Layer("fc", "linear", (2, 3), "x", "y"), np.array([[0, 0, 0], [0, 1, 0]]))
    array([False,  True, False])
    """
    return _backward_layer(layer, np.asarray(mask, dtype=bool))


def _link_forward(graph: NetGraph, link, vectors) -> np.ndarray:
    return graph.link_forward(link, vectors)  # each link kind's rule lives in graph.py


def _link_backward(graph: NetGraph, link, target: np.ndarray, vectors, reached=None) -> None:
    """OR the channels of `link`'s sources that feed a True channel of `target` into `vectors`
    (`reached` gates products, attention and RMSNorm; without it, the structure alone)."""
    for source, back in zip(link.sources, graph.link_backward(link, target, reached)):
        vectors[source] |= back


def reach(graph: NetGraph, masks=None) -> dict[str, np.ndarray]:
    """Channel-level forward reach R of every group (docs/definitions.md#functional).

    Returns
    -------
    dict of str to ndarray of bool
        Group name -> (channels,): True if a path of kept weights leads from the input to it.

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 2), Group("y", 2)], [Layer("fc", "linear", (2, 2), "x", "y")],
    ...              [], ["x"], ["y"])
    >>> reach(g, {"fc": [[1, 0], [0, 0]]})["y"]
    array([ True, False])
    """
    graph, masks = prepare(graph, masks)
    return _reach(graph, masks)[0]


def _reach(graph, masks, active=None):
    """(group -> reached channels, layer -> its output channels fed from reached inputs);
    `active` channels count as reached."""
    active = active or {}
    vectors = {name: np.ones(graph.groups[name].channels, dtype=bool) for name in graph.inputs}
    fed = {}
    for op in graph.order:
        if isinstance(op, Layer):
            fed[op.name] = _forward_layer(op, masks[op.name], vectors[op.source])
            vectors[op.target] = fed[op.name]
        else:
            vectors[op.target] = _link_forward(graph, op, vectors)
        if op.target in active:
            vectors[op.target] = vectors[op.target] | active[op.target]
    return vectors, fed


def coreach(graph: NetGraph, masks=None) -> dict[str, np.ndarray]:
    """Channel-level backward co-reach C of every group (docs/definitions.md#functional): True if a
    path of kept weights
    leads from the channel to a logit (all logits are co-reached).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 2), Group("y", 2)], [Layer("fc", "linear", (2, 2), "x", "y")],
    ...              [], ["x"], ["y"])
    >>> coreach(g, {"fc": [[1, 0], [0, 0]]})["x"]
    array([ True, False])
    """
    graph, masks = prepare(graph, masks)
    return _coreach(graph, masks)[0]


def _coreach(graph, masks):
    """(group -> co-reached channels, layer -> its input channels with a kept tap to a
    co-reached output)."""
    reached = _reach(graph, masks)[0] if graph.gated else None  # products, attention, norms
    vectors = {name: np.zeros(group.channels, dtype=bool) for name, group in graph.groups.items()}
    for name in graph.outputs:
        vectors[name][:] = True
    back = {}
    for op in reversed(graph.order):
        target = vectors[op.target]
        if isinstance(op, Layer):
            if target.any():
                back[op.name] = _backward_layer(op, masks[op.name], target)
                vectors[op.source] |= back[op.name]
            else:
                back[op.name] = np.zeros(op.in_channels, dtype=bool)
        elif target.any():
            _link_backward(graph, op, target, vectors, reached)
    return vectors, back


def _functional_channel(layer: Layer, mask, reached_in, coreached_out) -> np.ndarray:
    """Kept weights (o, i, ...) with i reached and o co-reached."""
    if reached_in.all() and coreached_out.all():
        return mask.copy()
    shape = (layer.out_channels, layer.weight_shape[1], _taps(layer))
    kernels = mask.reshape(shape)
    if layer.groups > 1:
        ok = _per_output(layer, reached_in) & coreached_out[:, None]  # (C_out, C_in/groups)
        return (kernels & ok[:, :, None]).reshape(layer.weight_shape)
    out = np.empty(shape, dtype=bool)
    for rows in _blocks(kernels):
        ok = coreached_out[rows, None] & reached_in[None, :]  # (rows, C_in): small per block
        np.logical_and(kernels[rows], ok[:, :, None], out=out[rows])
    return out.reshape(layer.weight_shape)


def _surviving(layer: Layer, mask, fan_in) -> np.ndarray:
    """Kept weights at the fan-in positions `fan_in` (``(fan_in,)``, or ``(groups, fan_in)``)
    marks True for the weight's output group."""
    rows = _rows(layer, mask)
    if fan_in.ndim == 2:
        fan_in = np.repeat(fan_in, layer.out_channels // layer.groups, axis=0)
        return (rows & fan_in).reshape(layer.weight_shape)
    if fan_in.all():
        return mask.copy()
    out = np.empty(rows.shape, dtype=bool)
    for block in _blocks(rows):
        out[block] = rows[block] & fan_in
    return out.reshape(layer.weight_shape)


@dataclass(frozen=True)
class _Activity:
    reached: dict      # group -> bool (channels,)
    coreached: dict    # group -> bool (channels,)
    functional: dict   # layer -> bool mask (a tied weight: functional at one of its uses)
    incoming: dict     # use -> bool (C_out,): outputs with a functional weight in the use
    outgoing: dict     # use -> bool (C_in,): inputs with a functional weight in the use


def _per_layer(graph: NetGraph, per_use: dict) -> dict:
    """Layer -> functional mask from use -> functional mask: a tied weight is functional where
    it is at one of its uses (each read back into the layer's order)."""
    out = {name: per_use[name] for name in graph.layers}
    for name, op in graph.uses.items():
        if op.param is not None:
            out[op.param] = out[op.param] | graph.param_mask(op, per_use[name])
    return out


def _pixels_to_channels(maps):
    return {name: m.reshape(m.shape[0], -1).any(axis=1) for name, m in maps.items()}


def _activity(graph, masks, semantics, device, active=None, progress: bool = False):
    """Reach, co-reach and functional weights under `semantics`, with each layer's functional
    in- and out-channels (work done once per layer and shared by the audit's columns)."""
    require_layers(graph.layers, 3 if semantics == "mica" else 2,  # + the MaskSet of them
                   f"the functional masks of a {semantics} audit",
                   "free memory or run on a machine with more")
    active = check_active(graph, active)
    layers = graph.uses  # every op that applies a weight; a tied weight's uses each
    if semantics == "channel":
        (reached, fed), (coreached, back) = _reach(graph, masks, active), _coreach(graph, masks)
        functional = {name: _functional_channel(layer, masks[name], reached[layer.source],
                                                coreached[layer.target])
                      for name, layer in layers.items()}
        # functional (o, i) = kept & i reached & o co-reached: no second pass over the masks
        incoming = {name: fed[name] & coreached[layer.target] for name, layer in layers.items()}
        outgoing = {name: back[name] & reached[layer.source] for name, layer in layers.items()}
        return _Activity(reached, coreached, _per_layer(graph, functional), incoming, outgoing)
    if semantics == "spatial":
        engine = spatial_engine()
        act = engine.activity(graph, masks, active=active, device=device,
                              **option(engine.activity, progress))
        reached, coreached = _pixels_to_channels(act.forward), _pixels_to_channels(act.backward)
        functional = act.functional
    else:  # "mica": tap-level forward, channel-level backward over the surviving weights
        engine = spatial_engine()
        maps = engine.forward_maps(graph, masks, active=active, device=device,
                                   **option(engine.forward_maps, progress))
        surviving = {name: _surviving(layer, masks[name],
                                      engine.active_fan_in(layer, maps[layer.source]))
                     for name, layer in layers.items()}
        reached = _pixels_to_channels(maps)
        coreached = _coreach(graph, surviving)[0]
        functional = {name: _functional_channel(layer, surviving[name],
                                                np.ones(layer.in_channels, dtype=bool),
                                                coreached[layer.target])
                      for name, layer in layers.items()}
    incoming = {name: _rows(layer, functional[name]).any(axis=1) for name, layer in layers.items()}
    outgoing = {name: _backward_layer(layer, functional[name]) for name, layer in layers.items()}
    return _Activity(reached, coreached, _per_layer(graph, functional), incoming, outgoing)


def functional_edges(net, masks=None, *, semantics: str = "channel", input_shape=None,
                     device="cpu", active=None, progress: bool = False) -> MaskSet:
    """The functional weights F ⊆ M as a MaskSet (docs/definitions.md#functional).

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
    masks : MaskSet or mapping, optional
        Layer name -> keep-mask; None audits the dense network.
    semantics : {"channel", "spatial", "mica"}
    input_shape : tuple of int, optional
        For a torch model without ``input_shape`` (see :func:`graphpai.to_graph`).
    device : str
        Where the spatial and mica semantics run their convolutions.
    active : mapping of str to array of bool, optional
        Group name -> channels active at every pixel, reached or not (see the module docstring).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 2), Group("h", 2), Group("y", 1)],
    ...              [Layer("a", "linear", (2, 2), "x", "h"), Layer("b", "linear", (1, 2), "h", "y")],
    ...              [], ["x"], ["y"])
    >>> f = functional_edges(g, {"a": [[1, 1], [1, 0]], "b": [[1, 0]]})  # h[1] is a dead end
    >>> f["a"].astype(int).tolist(), f["b"].astype(int).tolist()
    ([[1, 1], [0, 0]], [[1, 0]])
    """
    _check_semantics(semantics)
    graph, masks = prepare(net, masks, input_shape)
    # bound to the graph: ``f[use]`` of a tied use reads its layer's functional mask
    return MaskSet(_activity(graph, masks, semantics, device, active, progress).functional
                   ).validate(graph)


# ---------------------------------------------------------------------------------- audit
@dataclass(frozen=True)
class LayerAudit:
    """One layer's row of an audit (docs/definitions.md#functional).

    ``reached``, ``co_reached`` and ``functional_channels`` count the layer's output channels;
    ``lost_inputs`` counts its reached input channels (features for a linear layer) with no kept
    weight in this layer. ``functional_ratio`` is functional / kept (None when nothing is kept).
    ``nm_compliant``: whether the kept mask follows the N:M pattern the audit was asked to check
    (``audit(..., nm="2:4")``; None when none was asked; docs/llm.md).
    """

    layer: str
    kind: str
    weights: int
    kept: int
    functional: int
    functional_ratio: float | None
    in_channels: int
    out_channels: int
    reached: int
    co_reached: int
    functional_channels: int
    lost_inputs: int
    nm_compliant: bool | None = None


@dataclass(frozen=True)
class AuditResult:
    """Functional edges and nodes, direct and corrected compression of a mask
    (docs/definitions.md#masks, #functional).

    ``functional_masks`` is the MaskSet of functional weights: save it, apply it, or use it as a
    budget. ``corrected_compression`` is N / functional, ``inf`` when nothing is functional
    (``disconnected``). ``nodes`` counts hidden channels (output channels of layers that do not
    produce the logits), ``functional_nodes`` those that are functional. ``masks_source`` says
    where the masks came from: ``"given"``, ``"dense"`` (none given), or ``"model: ..."`` (read
    from a pruned torch model's ``torch.nn.utils.prune`` buffers or ``torch.ao`` masks).
    """

    semantics: str
    layers: tuple[LayerAudit, ...]
    N: int
    kept: int
    functional: int
    direct_compression: float
    corrected_compression: float
    nodes: int
    functional_nodes: int
    functional_node_ratio: float | None
    disconnected: bool
    functional_masks: MaskSet
    masks_source: str = "given"

    @property
    def total(self) -> dict:
        """The network totals, as in ``to_dict()["total"]`` (before JSON conversion).

        ``channels``, ``reached``, ``co_reached``, ``functional_channels`` and ``lost_inputs`` are
        the sums of the per-layer columns (output channels of every layer, logits included; lost
        inputs counted once per layer that loses them).
        """
        rows = self.layers
        return {
            "N": self.N, "kept": self.kept, "functional": self.functional,
            "density": self.kept / self.N if self.N else None,
            "functional_density": self.functional / self.N if self.N else None,
            "functional_ratio": self.functional / self.kept if self.kept else None,
            "direct_compression": self.direct_compression,
            "corrected_compression": self.corrected_compression,
            "disconnected": self.disconnected, "nodes": self.nodes,
            "functional_nodes": self.functional_nodes,
            "functional_node_ratio": self.functional_node_ratio,
            "channels": sum(r.out_channels for r in rows),
            "reached": sum(r.reached for r in rows),
            "co_reached": sum(r.co_reached for r in rows),
            "functional_channels": sum(r.functional_channels for r in rows),
            "lost_inputs": sum(r.lost_inputs for r in rows),
        }

    def to_dict(self) -> dict:
        """JSON-ready: ``{"semantics", "layers": [...], "total": {...}}`` (inf as "inf")."""
        return {
            "semantics": self.semantics,
            "masks": self.masks_source,
            "layers": [jsonable(asdict(row)) for row in self.layers],
            "total": jsonable(self.total),
        }

    def __repr__(self) -> str:
        from .report.notebook import audit_repr
        return audit_repr(self)

    def _repr_html_(self) -> str:
        from .report.notebook import audit_html
        return audit_html(self)

    def table(self) -> str:
        """A readable per-layer table, a total row, and the network totals below it."""
        from .report.tables import format_table

        t = self.total
        rows = [{"layer": r.layer, "weights": r.weights, "kept": r.kept, "functional": r.functional,
                 "ratio": r.functional_ratio, "channels": r.out_channels, "reached": r.reached,
                 "co-reached": r.co_reached, "func. ch.": r.functional_channels,
                 "lost in": r.lost_inputs} for r in self.layers]
        rows.append({"layer": "total", "weights": self.N, "kept": self.kept,
                     "functional": self.functional, "ratio": t["functional_ratio"],
                     "channels": t["channels"], "reached": t["reached"],
                     "co-reached": t["co_reached"], "func. ch.": t["functional_channels"],
                     "lost in": t["lost_inputs"]})
        lines = [
            format_table(rows),
            "",
            f"semantics: {self.semantics}; masks: {self.masks_source}",
            f"weights N = {self.N}, kept = {self.kept}, functional = {self.functional}",
            f"direct compression = {_fmt_compression(self.direct_compression, self.kept == 0)}",
            f"corrected compression = "
            f"{_fmt_compression(self.corrected_compression, self.disconnected)}",
            f"functional nodes = {self.functional_nodes}/{self.nodes}"
            + (f" ({self.functional_node_ratio:.4f})" if self.nodes else ""),
        ]
        return "\n".join(lines)


def _fmt_compression(value: float, empty: bool) -> str:
    if math.isinf(value):
        return "inf (disconnected)" if empty else "inf"
    return f"{value:.4g}"


def _has_outgoing(graph: NetGraph, outgoing) -> dict[str, np.ndarray]:
    """Group -> channels with a functional weight downstream (logits: True), from each layer's
    input channels with a functional weight."""
    out = {name: np.zeros(group.channels, dtype=bool) for name, group in graph.groups.items()}
    for name in graph.outputs:
        out[name][:] = True
    for op in reversed(graph.order):
        if isinstance(op, Layer):
            out[op.source] |= outgoing[op.name]
        elif out[op.target].any():
            _link_backward(graph, op, out[op.target], out)
    return out


def audit(net, masks=None, *, semantics: str = "channel", input_shape=None,
          device="cpu", active=None, nm=None, progress: bool = False) -> AuditResult:
    """Audit a mask: which weights and channels are functional, and the real compression.

    Per layer: kept, functional and their ratio; reached, co-reached and functional output
    channels; lost inputs (reached input channels with no kept weight). In total: N, kept,
    functional, direct compression N/|M| and corrected compression N/|F|
    (docs/definitions.md#masks; ``inf`` when
    nothing is functional: the network is disconnected), functional nodes and their ratio, and the
    functional MaskSet.

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
    masks : MaskSet or mapping, optional
        Layer name -> keep-mask (0/1 or bool). None: a torch model's own masks
        (``torch.nn.utils.prune``'s ``weight_mask`` buffers or ``torch.ao.pruning``
        parametrizations) if it carries any, else the dense network; ``masks_source`` and the
        table say which.
    semantics : {"channel", "spatial", "mica"}
        ``"channel"``: reachability on the channel graph (fast). ``"spatial"``: exact per-pixel
        activity at initialization ([VK]'s gradient test; needs torch). ``"mica"``: the MiCA
        code's hybrid, for reproducing [MiCA]'s figures (see the module docstring; needs torch).
    input_shape : tuple of int, optional
        Input shape (C, H, W) for a torch model that does not carry one.
    device : str
        Where the spatial and mica semantics run their convolutions.
    active : mapping of str to array of bool, optional
        Group name -> channels active at every pixel, reached or not (a bias, a BatchNorm
        shift; see the module docstring).
    nm : str or (int, int), optional
        An N:M pattern (``"2:4"``) to check on every layer's kept mask: ``nm_compliant``.
    progress : bool
        Bars on stderr (:mod:`graphpai._progress`): the spatial engine's pass where it takes
        the flag, and the per-layer rows.

    Returns
    -------
    AuditResult

    Raises
    ------
    MaskError
        If a mask is missing, not 0/1, has the wrong shape or names an unknown layer.
    UnknownMethodError
        If `semantics` is not one of ``SEMANTICS``.

    References
    ----------
    .. [VK] A. Vysogorets, J. Kempe, "Connectivity Matters: Neural Network Pruning Through the
       Lens of Effective Sparsity", JMLR 2023.

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 2), Group("h", 2), Group("y", 1)],
    ...              [Layer("a", "linear", (2, 2), "x", "h"), Layer("b", "linear", (1, 2), "h", "y")],
    ...              [], ["x"], ["y"])
    >>> r = audit(g, {"a": [[1, 1], [1, 0]], "b": [[1, 0]]})
    >>> r.N, r.kept, r.functional, r.direct_compression, r.corrected_compression
    (6, 4, 3, 1.5, 2.0)
    >>> audit(g, {"a": [[1, 1], [1, 0]], "b": [[0, 0]]}).corrected_compression
    inf
    """
    _check_semantics(semantics)
    pattern = None if nm is None else parse_nm(nm)
    graph, masks, source = prepare_masks(net, masks, input_shape)
    act = _activity(graph, masks, semantics, device, active, progress)
    outgoing = _has_outgoing(graph, act.outgoing)
    # functional output channels of every op that applies a weight (a tied weight's uses each)
    channels_of = {name: int(np.count_nonzero(act.incoming[name] & outgoing[op.target]))
                   for name, op in graph.uses.items()}
    rows = []
    nodes = functional_nodes = 0
    for op in graph.uses.values():
        if op.param is not None and op.target not in graph.outputs:
            nodes += op.out_channels
            functional_nodes += channels_of[op.name]
    for name, layer in bar(graph.layers.items(), progress, total=len(graph.layers),
                           desc="audit", unit="layer"):
        mask, func = masks[name], act.functional[name]
        kept, n_func = int(np.count_nonzero(mask)), int(np.count_nonzero(func))
        channels = channels_of[name]
        used = _backward_layer(layer, mask)
        rows.append(LayerAudit(
            layer=name, kind=layer.kind, weights=layer.numel, kept=kept, functional=n_func,
            functional_ratio=n_func / kept if kept else None,
            in_channels=layer.in_channels, out_channels=layer.out_channels,
            reached=int(np.count_nonzero(act.reached[layer.target])),
            co_reached=int(np.count_nonzero(act.coreached[layer.target])),
            functional_channels=channels,
            lost_inputs=int(np.count_nonzero(act.reached[layer.source] & ~used)),
            nm_compliant=None if pattern is None else nm_compliant(mask, pattern),
        ))
        if layer.target not in graph.outputs:
            nodes += layer.out_channels
            functional_nodes += channels
    n = graph.num_weights
    kept = sum(r.kept for r in rows)
    functional = sum(r.functional for r in rows)
    return AuditResult(
        semantics=semantics, layers=tuple(rows), N=n, kept=kept, functional=functional,
        direct_compression=n / kept if kept else math.inf,
        corrected_compression=n / functional if functional else math.inf,
        nodes=nodes, functional_nodes=functional_nodes,
        functional_node_ratio=functional_nodes / nodes if nodes else None,
        disconnected=functional == 0,
        functional_masks=MaskSet(act.functional).validate(graph),
        masks_source=source,
    )
