"""NetGraph: the layered graph of a (masked) network (SPEC §2).

A network is a DAG of **activation groups** (one per tensor: the input, each conv/linear output,
each pooling output, residual sum, concatenation and flatten) joined by **layers** (conv and linear,
the prunable weights) and **links** (parameter-free ops). Elementwise ops (BN, ReLU, dropout, ...)
do not change the channel set and are folded into the group they act on.

Conventions, stated once:

- A group has ``channels`` (conv channels or linear features) and a spatial ``size`` (``(H, W)``,
  ``(L,)`` or ``()`` for feature vectors).
- Channel view of a layer: ``multiplicity(layer, mask)`` is a sparse (C_out, C_in) matrix whose
  entry (o, i) counts the kept taps of kernel (o, i); grouped convs connect within their group.
- Fan-in view: ``biadjacency(layer, mask)`` is a sparse (fan_in, C_out) matrix with
  ``B[j, o] = mask[o].reshape(-1)[j]``, the order of ``weight.reshape(C_out, -1)``.
- Links map channels one way: ``link_matrix(link, position)`` is a sparse 0/1 (target channels,
  source channels) matrix. Pooling is the identity on channels, a residual add the union of its
  inputs, concat stacks its inputs in order, flatten sends channel c of an H x W map to features
  ``c*H*W ... (c+1)*H*W - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod
from typing import Mapping, Union

import numpy as np
import scipy.sparse as sp

from .errors import GraphpaiError, MaskError
from .masks import _as_bool

__all__ = ["Group", "Layer", "Link", "NetGraph", "as_graph"]

LINK_KINDS = ("pool", "add", "concat", "flatten")


@dataclass(frozen=True)
class Group:
    """One activation tensor: ``channels`` x spatial ``size`` (``()`` for features)."""

    name: str
    channels: int
    size: tuple[int, ...] = ()

    @property
    def numel(self) -> int:
        return self.channels * prod(self.size)


@dataclass(frozen=True)
class Layer:
    """A prunable conv or linear layer from group ``source`` to group ``target``.

    ``padding`` holds one (before, after) pair per spatial dimension, so asymmetric ``'same'``
    padding is exact. ``in_size``/``out_size`` are the spatial sizes of input and output.
    """

    name: str
    kind: str  # "conv" or "linear"
    weight_shape: tuple[int, ...]
    source: str
    target: str
    stride: tuple[int, ...] = ()
    padding: tuple[tuple[int, int], ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = False
    in_size: tuple[int, ...] = ()
    out_size: tuple[int, ...] = ()

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.weight_shape[2:])

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight_shape[1] * self.groups

    @property
    def fan_in(self) -> int:
        """Fan-in positions per output: C_in/groups * prod(kernel)."""
        return prod(self.weight_shape[1:])

    @property
    def numel(self) -> int:
        return prod(self.weight_shape)


@dataclass(frozen=True)
class Link:
    """A parameter-free op: ``kind`` is one of pool, add, concat, flatten.

    ``params`` holds the geometry of a pool (``mode`` "max"/"avg", ``kernel``, ``stride``,
    ``padding`` pairs, ``dilation``, ``ceil_mode``, ``count_include_pad``, ``divisor_override``,
    ``output_size`` for adaptive pools, ``functional`` when it was called as a function). A
    global pool has ``output_size == ()``: its target is a feature vector.
    """

    name: str
    kind: str
    sources: tuple[str, ...]
    target: str
    params: dict = field(default_factory=dict, compare=True, hash=False)


Op = Union[Layer, Link]


class NetGraph:
    """The graph of a network: groups, layers and links in topological order (SPEC §2).

    Parameters
    ----------
    groups : iterable of Group
    layers : iterable of Layer
    links : iterable of Link
    inputs, outputs : sequence of str
        Names of the input groups (the image) and output groups (the logits).

    Raises
    ------
    GraphpaiError
        If a name is used twice, an op refers to an unknown group, a group has two producers, or
        the ops contain a cycle.
    """

    def __init__(self, groups, layers, links, inputs, outputs):
        self.groups: dict[str, Group] = {}
        for group in groups:
            if group.name in self.groups:
                raise GraphpaiError(f"group name {group.name!r} is used twice")
            self.groups[group.name] = group
        ops = list(layers) + list(links)
        names = [op.name for op in ops]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise GraphpaiError(f"op names {dup} are used twice; every layer/link needs a unique name")
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        producer: dict[str, Op] = {}
        for op in ops:
            for name in self._sources(op) + (op.target,):
                if name not in self.groups:
                    raise GraphpaiError(f"{op.name!r} refers to unknown group {name!r}")
            if op.target in producer or op.target in self.inputs:
                raise GraphpaiError(f"group {op.target!r} is produced twice")
            producer[op.target] = op
        for name in self.inputs + self.outputs:
            if name not in self.groups:
                raise GraphpaiError(f"input/output group {name!r} is not a group")
        self._producer = producer
        self.order: tuple[Op, ...] = self._toposort(ops)
        self.layers: dict[str, Layer] = {op.name: op for op in self.order if isinstance(op, Layer)}
        self.links: tuple[Link, ...] = tuple(op for op in self.order if isinstance(op, Link))
        consumers: dict[str, list[Op]] = {name: [] for name in self.groups}
        for op in self.order:
            for name in self._sources(op):
                consumers[name].append(op)
        self._consumers = {k: tuple(v) for k, v in consumers.items()}

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _sources(op: Op) -> tuple[str, ...]:
        return (op.source,) if isinstance(op, Layer) else tuple(op.sources)

    def sources(self, op: Op) -> tuple[str, ...]:
        """The group names an op reads."""
        return self._sources(op)

    def _toposort(self, ops):
        ready = set(self.inputs)
        pending = list(ops)
        order = []
        while pending:
            still = [op for op in pending if not all(s in ready for s in self._sources(op))]
            done = [op for op in pending if all(s in ready for s in self._sources(op))]
            if not done:
                missing = sorted({s for op in still for s in self._sources(op)} - ready)
                raise GraphpaiError(f"the ops form a cycle or read groups nothing produces: {missing}")
            order.extend(done)
            ready.update(op.target for op in done)
            pending = still
        return tuple(order)

    def producer(self, group: str) -> Op | None:
        """The op that writes `group` (None for an input group)."""
        return self._producer.get(group)

    def consumers(self, group: str) -> tuple[Op, ...]:
        """The ops that read `group`, in topological order."""
        return self._consumers[group]

    @property
    def num_weights(self) -> int:
        """N: the number of prunable weights (SPEC §1)."""
        return sum(layer.numel for layer in self.layers.values())

    def layer(self, name: str) -> Layer:
        try:
            return self.layers[name]
        except KeyError:
            raise MaskError(f"unknown layer {name!r}; layers are {list(self.layers)}") from None

    # ------------------------------------------------------------------ views
    def _mask_of(self, layer: Layer, mask) -> np.ndarray:
        if mask is None:
            return np.ones(layer.weight_shape, dtype=bool)
        if isinstance(mask, Mapping):
            if layer.name not in mask:
                raise MaskError(f"no mask for layer {layer.name!r}; pass one or use MaskSet.dense")
            mask = mask[layer.name]
        mask = _as_bool(layer.name, mask)  # a 0.5 or NaN must not count as kept
        if mask.shape != layer.weight_shape:
            raise MaskError(
                f"mask for {layer.name!r} has shape {mask.shape} but the weight is "
                f"{layer.weight_shape}; regenerate the mask for this model"
            )
        return mask

    def multiplicity(self, layer, mask=None) -> sp.csr_array:
        """Channel view: sparse (C_out, C_in) count of kept taps per kernel (SPEC §2).

        `mask` is a bool array of the weight's shape or a MaskSet/mapping (None: dense).
        """
        layer = layer if isinstance(layer, Layer) else self.layer(layer)
        m = self._mask_of(layer, mask)
        c_out, c_in_g = layer.weight_shape[:2]
        taps = m.reshape(c_out, c_in_g, -1)
        if taps.shape[2] == 1:
            counts = taps[:, :, 0]
        elif taps.shape[2] < 256:  # a uint8 product is ~7x faster than sum(axis=2)
            counts = taps.view(np.uint8) @ np.ones(taps.shape[2], dtype=np.uint8)
        else:
            counts = taps.sum(axis=2)
        flat, indptr = _row_major_nonzero(counts)
        rows = flat // c_in_g
        cols = flat - rows * c_in_g + (rows // (c_out // layer.groups)) * c_in_g
        data = counts.reshape(-1)[flat].astype(np.int64)
        return sp.csr_array((data, cols.astype(indptr.dtype), indptr), shape=(c_out, layer.in_channels))

    def biadjacency(self, layer, mask=None, weights=None) -> sp.csr_array:
        """Fan-in view: sparse (fan_in, C_out) matrix, ``B[j, o] = mask[o].flat[j]`` (SPEC §2).

        With `weights` (an array of the weight's shape) the entries are ``|w|`` on kept weights,
        so a kept weight that is exactly 0 is not an edge; otherwise 0/1 (float64).
        """
        layer = layer if isinstance(layer, Layer) else self.layer(layer)
        c_out = layer.out_channels
        keep = self._mask_of(layer, mask).reshape(c_out, -1).T  # (fan_in, C_out)
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != layer.weight_shape:
                raise MaskError(
                    f"weights for {layer.name!r} have shape {w.shape} but the layer is "
                    f"{layer.weight_shape}"
                )
            magnitude = np.abs(w.reshape(c_out, -1).T)
            keep = keep & (magnitude != 0)
        flat, indptr = _row_major_nonzero(keep)
        columns = flat % c_out
        data = (np.ones(len(flat)) if weights is None
                else np.ascontiguousarray(magnitude).reshape(-1)[flat])
        return sp.csr_array((data, columns.astype(indptr.dtype), indptr), shape=keep.shape)

    def link_matrix(self, link, position: int = 0) -> sp.csr_array:
        """Sparse 0/1 (target channels, source channels) map of a link from its `position`-th
        source (a concat may read the same group twice, so sources are addressed by position)."""
        link = link if isinstance(link, Link) else self._link(link)
        source = link.sources[position]
        src = self.groups[source]
        tgt = self.groups[link.target]
        n = src.channels
        if link.kind in ("pool", "add"):
            rows = np.arange(n)
        elif link.kind == "concat":
            offset = sum(self.groups[name].channels for name in link.sources[:position])
            rows = offset + np.arange(n)
        elif link.kind == "flatten":
            per = prod(src.size)
            rows = np.arange(n * per)
            return sp.csr_array((np.ones(n * per), (rows, rows // per)), shape=(tgt.channels, n))
        else:
            raise GraphpaiError(f"unknown link kind {link.kind!r}")
        return sp.csr_array((np.ones(n), (rows, np.arange(n))), shape=(tgt.channels, n))

    def _link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise GraphpaiError(f"unknown link {name!r}")

    # ------------------------------------------------------------------ transforms
    def rename(self, mapping: Mapping[str, str]) -> "NetGraph":
        """A copy with layers, links and groups renamed by `mapping` (names not in it are kept)."""

        def r(name):
            return mapping.get(name, name)

        groups = [replace(g, name=r(g.name)) for g in self.groups.values()]
        layers = [replace(l, name=r(l.name), source=r(l.source), target=r(l.target))
                  for l in self.layers.values()]
        links = [replace(k, name=r(k.name), sources=tuple(r(s) for s in k.sources), target=r(k.target))
                 for k in self.links]
        return NetGraph(groups, layers, links, [r(i) for i in self.inputs], [r(o) for o in self.outputs])

    # ------------------------------------------------------------------ exports
    def _channel_edges(self, mask=None, weights=None):
        """Yield (source group, target group, src idx, tgt idx, attrs) edge arrays per op."""
        for op in self.order:
            if isinstance(op, Layer):
                mult = self.multiplicity(op, mask).tocoo()
                attrs = {"multiplicity": mult.data, "layer": op.name}
                if weights is not None:
                    if op.name not in weights:
                        raise MaskError(f"no weights for layer {op.name!r}; pass one array per "
                                        "layer, e.g. graphpai.torch.layer_weights(model)")
                    w = np.abs(np.asarray(weights[op.name], dtype=np.float64))
                    if w.shape != op.weight_shape:
                        raise MaskError(f"weights for {op.name!r} have shape {w.shape} but the "
                                        f"layer is {op.weight_shape}")
                    m = self._mask_of(op, mask)
                    c_out, c_in_g = op.weight_shape[:2]
                    wsum = (w * m).reshape(c_out, c_in_g, -1).sum(axis=2)
                    attrs["weight"] = wsum[mult.row, mult.col % c_in_g]
                yield op.source, op.target, mult.col, mult.row, attrs
            else:
                for position, source in enumerate(op.sources):
                    if op.kind == "add" and source in op.sources[:position]:
                        continue  # x + x: one edge per channel, as networkx would merge them
                    mat = self.link_matrix(op, position).tocoo()
                    yield source, op.target, mat.col, mat.row, {
                        "multiplicity": np.ones(mat.nnz, dtype=np.int64), "link": op.name}

    def to_networkx(self, mask=None, weights=None):
        """The channel graph as a networkx DiGraph (SPEC §2).

        Nodes are ``(group, channel)`` with attributes ``group`` and ``channel``. Layer edges carry
        ``multiplicity`` (kept taps), ``layer`` and, with `weights` (layer name -> array), ``weight``
        (sum of |w| over kept taps); link edges carry ``multiplicity`` 1 and ``link``. Channel
        pairs with no kept tap have no edge.
        """
        import networkx as nx

        g = nx.DiGraph()
        for group in self.groups.values():
            g.add_nodes_from(((group.name, c), {"group": group.name, "channel": c})
                             for c in range(group.channels))
        for src, tgt, i, o, attrs in self._channel_edges(mask, weights):
            keys = [k for k in attrs if isinstance(attrs[k], np.ndarray)]
            const = {k: v for k, v in attrs.items() if k not in keys}
            cols = [attrs[k].tolist() for k in keys]
            g.add_edges_from(
                ((src, a), (tgt, b), {**const, **dict(zip(keys, vals))})
                for a, b, *vals in zip(i.tolist(), o.tolist(), *cols)
            )
        return g

    def to_igraph(self, mask=None, weights=None):
        """The channel graph as a directed igraph.Graph, attributes as in :meth:`to_networkx`."""
        import igraph as ig

        offsets, total = {}, 0
        for group in self.groups.values():
            offsets[group.name] = total
            total += group.channels
        g = ig.Graph(n=total, directed=True)
        g.vs["group"] = [name for name, grp in self.groups.items() for _ in range(grp.channels)]
        g.vs["channel"] = [c for grp in self.groups.values() for c in range(grp.channels)]
        edges, attrs = [], {"multiplicity": [], "layer": [], "link": [], "weight": []}
        for src, tgt, i, o, a in self._channel_edges(mask, weights):
            edges.append(np.stack([offsets[src] + i, offsets[tgt] + o], axis=1))
            n = len(i)
            attrs["multiplicity"].extend(a["multiplicity"].tolist())
            attrs["layer"].extend([a.get("layer")] * n)
            attrs["link"].extend([a.get("link")] * n)
            attrs["weight"].extend(a["weight"].tolist() if "weight" in a else [None] * n)
        g.add_edges(np.concatenate(edges).tolist() if edges else [])
        for key, values in attrs.items():
            if key != "weight" or weights is not None:
                g.es[key] = values
        return g

    # ------------------------------------------------------------------ summaries
    def summary(self, masks=None) -> dict:
        """A JSON-ready description: groups, links and per-layer shape, size and density."""
        layers = []
        for layer in self.layers.values():
            kept = int(self._mask_of(layer, masks).sum()) if masks is not None else layer.numel
            layers.append({
                "name": layer.name, "kind": layer.kind, "weight_shape": list(layer.weight_shape),
                "source": layer.source, "target": layer.target, "in_size": list(layer.in_size),
                "out_size": list(layer.out_size), "stride": list(layer.stride),
                "groups": layer.groups, "weights": layer.numel, "kept": kept,
                "density": kept / layer.numel,
            })
        return {
            "inputs": list(self.inputs), "outputs": list(self.outputs),
            "groups": [{"name": g.name, "channels": g.channels, "size": list(g.size)}
                       for g in self.groups.values()],
            "links": [{"name": k.name, "kind": k.kind, "sources": list(k.sources), "target": k.target}
                      for k in self.links],
            "layers": layers,
            "num_weights": self.num_weights,
        }

    def __repr__(self):
        return (f"NetGraph({len(self.groups)} groups, {len(self.layers)} layers, "
                f"{len(self.links)} links, {self.num_weights} weights)")


def _row_major_nonzero(array: np.ndarray):
    """Flat indices of the nonzeros of a 2-D array in row-major order, and the CSR ``indptr``
    (index dtype int32 where it fits, as scipy would choose)."""
    array = np.ascontiguousarray(array)
    flat = np.flatnonzero(array)
    dtype = np.int32 if max(array.size, 1) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(array.shape[0] + 1, dtype=dtype)
    np.cumsum(np.count_nonzero(array, axis=1), out=indptr[1:])
    return flat, indptr


def as_graph(net, input_shape=None) -> NetGraph:
    """`net` itself if it is a NetGraph, else the graph of a torch model (see `to_graph`)."""
    if isinstance(net, NetGraph):
        return net
    from .torch.extract import to_graph

    return to_graph(net, input_shape)
