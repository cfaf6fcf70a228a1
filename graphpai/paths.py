"""Effective paths and effective nodes of a masked network ([NPB]; docs/definitions.md#paths).

- **Effective paths**: the number R of input-to-output paths in the spatially unrolled network
  with every kept weight set to 1, biases 0, BN removed, ReLU ignored and every pooling window
  summed; equivalently R = sum(f(1)) for that linear network. Reported as log10(R) (``-inf`` when
  no path exists). Computed in float64 with per-op renormalisation (each activation is divided by
  its maximum and the log10 of the scale is carried), so no depth overflows. The propagation runs
  in the spatial engine (:mod:`graphpai.engine`; by default :mod:`graphpai.torch.spatial`, where
  torch performs the convolutions).
- **Channel-level paths**: ``1^T (prod of channel multiplicity matrices through the DAG) 1``, where
  the multiplicity of (o, i) is the number of kept taps of kernel (o, i) and links follow
  docs/definitions.md#graph
  (a residual add sums, concat stacks, flatten repeats a channel over its pixels). Reported as
  log10, with the same renormalisation, with numpy/scipy only.
- **Effective nodes** as [NPB] counts them: every activation tensor that a layer consumes is
  counted once, through its consumers, skipping 1x1 shortcut convs (a 1x1 conv whose output is
  added to a residual sum, when the tensor has another consumer); a channel counts if it has at
  least one functional outgoing weight in those consumers; the logits count if they have a
  functional incoming weight. Dense ResNet-20 has 701.

``profile="npb"`` reproduces the authors' measure: biases set to 1 on layers that have one (a
disconnected ResNet-20 then has R = 10), max pools take the max and average pools called as
functions (``F.avg_pool2d``, ``torch.mean``, ``F.adaptive_avg_pool2d``) divide by their window.
Effective nodes and weights follow the same convention: [NPB] sets every parameter to 1, biases
included, and calls a weight effective when dR/dw != 0, so every channel of a layer with a bias
is active at every pixel, reached or not, and a channel fed only by a bias counts when it has an
effective outgoing weight. (On VGG-19 with conv biases, RPI-ERK at 10^3: 5,288 nodes and 18,338
effective weights this way, 4,982 and 16,883 by the clean definition.)

Two differences from the NPB code that its published models never meet: its copy of a network
scales an ``nn.AvgPool2d(k)`` *module* by ``k`` (an int) or ``sum(k)`` (a tuple), the window
area only for (2, 2), where this profile sums the window as for any pooling module; and its
effective weights follow the gradient of max pools, which reaches one input per window, where
here every input of an active window counts.

References
----------
.. [NPB] H. Pham et al., "Towards Data-Agnostic Pruning at Initialization: What Makes a Good
   Sparse Mask?", NeurIPS 2023.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ._callable import callable_module
from ._memory import fits, require
from ._progress import option
from ._results import jsonable
from .engine import common_scale, renormalise, spatial_engine
from .errors import UnknownMethodError
from .functional import functional_edges, inputs_used, outputs_fed, prepare
from .graph import Layer, NetGraph

__all__ = [
    "PROFILES",
    "TensorNodes",
    "PathsResult",
    "paths",
    "effective_paths",
    "channel_paths",
    "effective_nodes",
]

PROFILES = ("default", "npb")

# graph.multiplicity's peak per nonzero (o, i) pair: int64 flat indices, rows, columns and
# counts with their temporaries, then the CSR arrays (measured: 37-38 bytes on a linear layer)
_PAIR_BYTES = 40


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise UnknownMethodError(f"unknown paths profile {profile!r}; use one of {list(PROFILES)}")


def effective_paths(net, masks=None, *, profile: str = "default", input_shape=None,
                    device="cpu", progress: bool = False) -> float:
    """log10 of the number of effective input-output paths (docs/definitions.md#paths; needs torch).

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
    masks : MaskSet or mapping, optional
        Layer name -> keep-mask; None counts the dense network.
    profile : {"default", "npb"}
        ``"npb"``: biases 1, max pools as max, functional average pools divide ([NPB]).
    input_shape : tuple of int, optional
        For a torch model without ``input_shape``.
    device : str
        Where the convolutions run.
    progress : bool
        A bar on stderr where the spatial engine takes the flag (:mod:`graphpai._progress`).

    Returns
    -------
    float
        log10(R); ``-inf`` when no path exists (the network is disconnected).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 3), Group("h", 4), Group("y", 2)],
    ...              [Layer("a", "linear", (4, 3), "x", "h"), Layer("b", "linear", (2, 4), "h", "y")],
    ...              [], ["x"], ["y"])
    >>> round(10 ** effective_paths(g))  # dense MLP: 3 * 4 * 2 paths
    24
    """
    _check_profile(profile)
    graph, masks = prepare(net, masks, input_shape)
    npb = profile == "npb"
    engine = spatial_engine()
    return engine.log10_paths(graph, masks, bias_ones=npb, reference_pools=npb, device=device,
                              **option(engine.log10_paths, progress))


def _check_channel_paths(graph: NetGraph, masks) -> None:
    """One error naming the layer whose sparse channel matrix cannot fit, before any is built:
    a first bound from the shape (every (o, i) pair kept), the kept count only if that fails."""
    for layer in graph.layers.values():
        pairs = layer.out_channels * layer.weight_shape[1]
        counts = pairs if layer.fan_in > layer.weight_shape[1] else 0  # a conv's tap counts
        need = _PAIR_BYTES * pairs + counts
        if not fits(need):
            need = _PAIR_BYTES * min(pairs, int(np.count_nonzero(masks[layer.name]))) + counts
            require(need, f"the sparse channel matrix of layer {layer.name!r} "
                          f"{tuple(layer.weight_shape)} (channel paths)",
                    "free memory, run on a machine with more, or prune the layer further")


def channel_paths(net, masks=None, *, input_shape=None) -> float:
    """log10 of ``1^T (prod of channel multiplicity matrices) 1`` through the DAG
    (docs/definitions.md#paths).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 1, (4,)), Group("y", 2, (4,))],
    ...              [Layer("c", "conv", (2, 1, 3), "x", "y", (1,), ((1, 1),), (1,),
    ...                     in_size=(4,), out_size=(4,))], [], ["x"], ["y"])
    >>> round(10 ** channel_paths(g, {"c": [[[1, 1, 0]], [[0, 0, 1]]]}))  # 2 + 1 kept taps
    3
    """
    graph, masks = prepare(net, masks, input_shape)
    _check_channel_paths(graph, masks)
    state = {name: (np.ones(graph.groups[name].channels), 0.0) for name in graph.inputs}
    for op in graph.order:
        if isinstance(op, Layer):
            values, scale = state[op.source]
            out = graph.multiplicity(op, masks[op.name]) @ values
        else:
            values, scale = common_scale([state[s] for s in op.sources])
            out = sum(graph.link_matrix(op, position) @ v for position, v in enumerate(values))
        state[op.target] = renormalise(out, scale)
    values, scale = common_scale([state[name] for name in graph.outputs])
    total = sum(float(v.sum()) for v in values)
    return math.log10(total) + scale if total > 0 and scale > -math.inf else -math.inf


@dataclass(frozen=True)
class TensorNodes:
    """One activation tensor in the effective-node count: ``group`` counted through the layers
    ``via`` (``"logits"`` for an output), ``channels`` of it, ``effective`` of them."""

    group: str
    via: tuple[str, ...]
    channels: int
    effective: int


@dataclass(frozen=True)
class PathsResult:
    """Effective paths, channel paths and effective nodes (docs/definitions.md#paths).

    ``log10_paths`` and ``log10_channel_paths`` are ``-inf`` when the network is disconnected;
    ``effective_nodes`` of ``nodes`` counted channels are effective, from the
    ``effective_weights`` functional weights of ``semantics`` (under ``profile``'s convention).
    """

    profile: str
    semantics: str
    log10_paths: float
    log10_channel_paths: float
    effective_nodes: int
    nodes: int
    tensors: tuple[TensorNodes, ...]
    effective_weights: int

    @property
    def disconnected(self) -> bool:
        return self.log10_paths == -math.inf

    def __repr__(self) -> str:
        from .report.notebook import paths_repr
        return paths_repr(self)

    def _repr_html_(self) -> str:
        from .report.notebook import paths_html
        return paths_html(self)

    def table(self) -> str:
        """The counted tensors as a table, then the path counts (``-inf (disconnected)`` when
        no path exists) and the effective nodes."""
        from .report.tables import format_table

        rows = [{"tensor": t.group, "via": ", ".join(t.via), "channels": t.channels,
                 "effective": t.effective} for t in self.tensors]
        return "\n".join([
            format_table(rows), "",
            f"profile: {self.profile}, effective nodes from {self.semantics} functional weights",
            f"log10 effective paths = {_fmt_log10(self.log10_paths)}",
            f"log10 channel paths = {_fmt_log10(self.log10_channel_paths)}",
            f"effective nodes = {self.effective_nodes}/{self.nodes}",
            f"effective weights = {self.effective_weights}",
        ])

    def to_dict(self) -> dict:
        """JSON-ready (``-inf`` as "-inf")."""
        return jsonable({
            "profile": self.profile, "semantics": self.semantics,
            "log10_paths": self.log10_paths, "log10_channel_paths": self.log10_channel_paths,
            "disconnected": self.disconnected, "effective_nodes": self.effective_nodes,
            "nodes": self.nodes, "effective_weights": self.effective_weights,
            "tensors": [asdict(t) for t in self.tensors],
        })


def _fmt_log10(value: float) -> str:
    return "-inf (disconnected)" if value == -math.inf else f"{value:.4f}"


def _is_shortcut(graph: NetGraph, layer: Layer) -> bool:
    """A 1x1 conv whose output goes straight into a residual add."""
    if layer.kind != "conv" or any(k != 1 for k in layer.kernel):
        return False
    return any(getattr(op, "kind", None) == "add" for op in graph.consumers(layer.target))


def _node_rows(graph: NetGraph, functional) -> list[TensorNodes]:
    rows = []
    sources = dict.fromkeys(layer.source for layer in graph.layers.values())
    for group in sources:
        consumers = [op for op in graph.consumers(group) if isinstance(op, Layer)]
        counted = [op for op in consumers if not _is_shortcut(graph, op)] or consumers
        used = np.zeros(graph.groups[group].channels, dtype=bool)
        for layer in counted:
            used |= inputs_used(layer, functional[layer.name])
        rows.append(TensorNodes(group, tuple(op.name for op in counted), len(used),
                                int(np.count_nonzero(used))))
    incoming = {name: np.zeros(g.channels, dtype=bool) for name, g in graph.groups.items()}
    for op in graph.order:
        if isinstance(op, Layer):
            incoming[op.target] |= outputs_fed(op, functional[op.name])
        else:
            for position, source in enumerate(op.sources):
                incoming[op.target] |= (graph.link_matrix(op, position)
                                        @ incoming[source].astype(float)) > 0
    for name in graph.outputs:
        rows.append(TensorNodes(name, ("logits",), graph.groups[name].channels,
                                int(np.count_nonzero(incoming[name]))))
    return rows


def effective_nodes(net, masks=None, *, semantics: str = "spatial", input_shape=None,
                    device="cpu", profile: str = "default") -> int:
    """The number of effective nodes as [NPB] counts them (docs/definitions.md#paths; see the
    module docstring).

    The functional weights come from :func:`graphpai.functional.functional_edges` with
    `semantics` (``"spatial"``, the exact one, needs torch); ``profile="npb"`` makes every
    channel of a layer with a bias active ([NPB]'s biases of 1).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 3), Group("h", 4), Group("y", 2)],
    ...              [Layer("a", "linear", (4, 3), "x", "h"), Layer("b", "linear", (2, 4), "h", "y")],
    ...              [], ["x"], ["y"])
    >>> effective_nodes(g, semantics="channel")  # 3 inputs + 4 hidden + 2 logits
    9
    """
    _check_profile(profile)
    graph, masks = prepare(net, masks, input_shape)
    functional = _effective_weights(graph, masks, profile, semantics, device)
    return sum(row.effective for row in _node_rows(graph, functional))


def _effective_weights(graph, masks, profile, semantics, device, progress=False):
    """The functional weights under `profile`'s convention ("npb": biases active everywhere)."""
    active = None
    if profile == "npb":
        active = {layer.target: np.ones(layer.out_channels, dtype=bool)
                  for layer in graph.layers.values() if layer.bias}
    return functional_edges(graph, masks, semantics=semantics, device=device, active=active,
                            progress=progress)


def paths(net, masks=None, *, profile: str = "default", semantics: str = "spatial",
          input_shape=None, device="cpu", progress: bool = False) -> PathsResult:
    """Effective paths, channel-level paths and effective nodes of a mask
    (docs/definitions.md#paths, [NPB]).

    Parameters
    ----------
    net : NetGraph or torch.nn.Module
    masks : MaskSet or mapping, optional
        Layer name -> keep-mask; None counts the dense network.
    profile : {"default", "npb"}
        Conventions of the path count and of the effective weights and nodes (see the module
        docstring).
    semantics : {"spatial", "channel", "mica"}
        Which functional weights decide the effective nodes.
    input_shape : tuple of int, optional
        For a torch model without ``input_shape``.
    device : str
        Where the convolutions run.
    progress : bool
        Bars on stderr for the spatial passes where the engine takes the flag
        (:mod:`graphpai._progress`).

    Returns
    -------
    PathsResult

    Examples
    --------
    >>> import graphpai.paths
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 3), Group("h", 4), Group("y", 2)],
    ...              [Layer("a", "linear", (4, 3), "x", "h"), Layer("b", "linear", (2, 4), "h", "y")],
    ...              [], ["x"], ["y"])
    >>> r = graphpai.paths(g)  # the module is callable
    >>> round(10 ** r.log10_paths), r.effective_nodes
    (24, 9)
    """
    _check_profile(profile)
    graph, masks = prepare(net, masks, input_shape)
    _check_channel_paths(graph, masks)  # before the other counts run, not after
    functional = _effective_weights(graph, masks, profile, semantics, device, progress)
    rows = _node_rows(graph, functional)
    return PathsResult(
        profile=profile, semantics=semantics,
        log10_paths=effective_paths(graph, masks, profile=profile, device=device,
                                    progress=progress),
        log10_channel_paths=channel_paths(graph, masks),
        effective_nodes=sum(r.effective for r in rows), nodes=sum(r.channels for r in rows),
        tensors=tuple(rows),
        effective_weights=functional.kept(),
    )


callable_module(__name__, paths)
