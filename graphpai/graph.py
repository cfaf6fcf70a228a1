"""NetGraph: the layered graph of a (masked) network (docs/definitions.md#graph).

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
- Beyond convnets (docs/graph.md#beyond-convnets): every axis of an activation other than batch and channels is a
  position (tokens are the pixels of a 1-D map), and a linear layer acts per position. Links of
  kind ``regroup`` (permute, reshape, chunk, split, slicing: any op that moves elements), ``reduce``
  (a sum or mean over features) carry an explicit (target, source) channel map; ``norm``
  (LayerNorm/GroupNorm centre over the features of a position, RMSNorm does not), ``mul`` (the
  elementwise product of two branches) and ``attention`` (heads of a score product, softmax and
  value product) have their own reach rules, in :meth:`NetGraph.link_forward` and
  :meth:`NetGraph.link_backward`.
- Weight tying (docs/graph.md#weight-tying): ``layers`` has one :class:`Layer` per prunable
  weight (the masks' keys, counted once in N); ``uses`` has every op that applies a weight, and
  a tied use (``Layer.param`` set) reads its layer's mask, transposed where
  ``param_transposed`` (an embedding and its LM head).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod
from typing import Mapping, Union

import numpy as np
import scipy.sparse as sp

from .errors import GraphpaiError, MaskError
from .masks import _as_bool

__all__ = ["ChannelMap", "Group", "Layer", "Link", "NetGraph", "as_graph"]

LINK_KINDS = ("pool", "add", "concat", "flatten", "regroup", "reduce", "norm", "mul", "attention")
# links whose co-reach needs the forward reach of their sources (not a union of link matrices)
_GATED = ("norm", "mul", "attention")


class ChannelMap:
    """A fixed sparse 0/1 (target channels, source channels) map, held by value.

    ``rows[k]`` (a target channel) is connected to ``cols[k]`` (a source channel). Two maps are
    equal when they connect the same pairs (a plain ndarray in ``Link.params`` would make the
    dataclass comparison ambiguous).
    """

    __slots__ = ("rows", "cols")

    def __init__(self, rows, cols):
        rows = np.asarray(rows, np.int64).reshape(-1)
        cols = np.asarray(cols, np.int64).reshape(-1)
        width = int(cols.max(initial=0)) + 1
        if len(rows) and int(rows.max()) < np.iinfo(np.int64).max // width:
            keys = np.unique(rows * width + cols)  # one sorted key per pair: (row, col) order
            self.rows, self.cols = keys // width, keys % width
        else:
            pairs = np.unique(np.stack([rows, cols]), axis=1)
            self.rows, self.cols = pairs[0], pairs[1]
        self.rows.flags.writeable = self.cols.flags.writeable = False

    def matrix(self, n_target: int, n_source: int) -> sp.csr_array:
        return sp.csr_array((np.ones(len(self.rows)), (self.rows, self.cols)),
                            shape=(n_target, n_source))

    def __eq__(self, other):
        return (isinstance(other, ChannelMap) and np.array_equal(self.rows, other.rows)
                and np.array_equal(self.cols, other.cols))

    def __hash__(self):
        return hash((len(self.rows), self.rows[:8].tobytes(), self.cols[:8].tobytes()))

    def __repr__(self):
        return f"ChannelMap({len(self.rows)} pairs)"


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
    padding is exact. ``in_size``/``out_size`` are the spatial sizes of input and output; a
    linear layer on a tensor of rank > 2 acts at every position (a token is a pixel of a 1-D map)
    and has ``in_size == out_size`` (its positions). ``transposed``: the model holds this weight
    as the transpose of ``weight_shape`` (Hugging Face ``Conv1D``, ``x @ W``, an ``nn.Embedding``
    made prunable); masks are always in ``weight_shape`` order (docs/graph.md#transposed-weights).

    Weight tying (docs/graph.md#weight-tying): ``param`` names the layer whose weight this op
    applies again (None: its own weight, the mask key is ``name``). Such a *use* is in
    ``graph.order`` but not in ``graph.layers`` (one entry per prunable weight); its mask is
    the mask of ``param``, transposed when ``param_transposed`` (an embedding and its tied LM
    head apply the same ``(vocab, features)`` weight as ``(features, vocab)`` and
    ``(vocab, features)`` matrices).
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
    transposed: bool = False
    param: str | None = None
    param_transposed: bool = False

    @property
    def mask_key(self) -> str:
        """The name of the mask this op reads: ``param`` for a tied use, else ``name``."""
        return self.param or self.name

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
    """A parameter-free op: ``kind`` is one of ``LINK_KINDS``.

    ``params`` holds the geometry of a pool (``mode`` "max"/"avg", ``kernel``, ``stride``,
    ``padding`` pairs, ``dilation``, ``ceil_mode``, ``count_include_pad``, ``divisor_override``,
    ``output_size`` for adaptive pools, ``functional`` when it was called as a function). A
    global pool has ``output_size == ()``: its target is a feature vector.

    The kinds of docs/graph.md: ``regroup``, ``reduce`` and ``mul`` hold ``maps``, one
    :class:`ChannelMap` per source (and ``elements``, the same maps between flat element indices
    in ``(channels, *size)`` order, for the spatial semantics); ``mul`` may hold ``gating`` (per
    source: False when the branch is non-zero everywhere); ``norm`` holds ``centred`` (bool),
    ``groups`` and ``positions`` (``"each"``: statistics per position, ``"all"``: over every
    position, as GroupNorm on a map); ``attention``
    reads (q, k, v) and holds ``q``, ``k`` (the channels of q and k multiplied together, pair by
    pair), ``pair_head`` (the head of each pair), ``v`` (the value channel of each output
    channel) and ``v_head`` (its head), as tuples, and ``allowed`` (None, or a :class:`ChannelMap`
    of the (query position, key position) pairs a causal or explicit mask lets through); ``op``
    names the torch op a link came from.
    """

    name: str
    kind: str
    sources: tuple[str, ...]
    target: str
    params: dict = field(default_factory=dict, compare=True, hash=False)


Op = Union[Layer, Link]


class NetGraph:
    """The graph of a network: groups, layers and links in topological order (docs/definitions.md#graph).

    Parameters
    ----------
    groups : iterable of Group
    layers : iterable of Layer
    links : iterable of Link
    inputs, outputs : sequence of str
        Names of the input groups (the image) and output groups (the logits).
    notes : sequence of str
        Where the graph is not exact for the model it came from (a mask the extractor could not
        read, a tied weight), one line each; empty for an exact graph.

    Raises
    ------
    GraphpaiError
        If a name is used twice, an op refers to an unknown group, a group has two producers, or
        the ops contain a cycle.
    """

    def __init__(self, groups, layers, links, inputs, outputs, notes=()):
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
        # where the graph is not exact (docs/graph.md#beyond-convnets): one line each
        self.notes: tuple[str, ...] = tuple(notes)
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
        # every op that applies a prunable weight, and one layer per weight (the masks' keys):
        # a tied use (``param`` set) is in ``uses`` only (docs/graph.md#weight-tying)
        self.uses: dict[str, Layer] = {op.name: op for op in self.order if isinstance(op, Layer)}
        self.layers: dict[str, Layer] = {name: op for name, op in self.uses.items()
                                         if op.param is None}
        tied: dict[str, list[str]] = {}
        for op in self.uses.values():
            if op.param is None:
                continue
            primary = self.layers.get(op.param)
            if primary is None:
                raise GraphpaiError(f"layer {op.name!r} ties its weight to {op.param!r}, which is "
                                    "not a layer of its own weight")
            expected = (tuple(reversed(primary.weight_shape)) if op.param_transposed
                        else tuple(primary.weight_shape))
            if tuple(op.weight_shape) != expected or (op.param_transposed
                                                      and len(expected) != 2):
                raise GraphpaiError(
                    f"layer {op.name!r} applies the weight of {op.param!r} "
                    f"{tuple(primary.weight_shape)} as {tuple(op.weight_shape)}; a tied use has "
                    "the same shape, or the transpose of a 2-D weight (param_transposed)")
            tied.setdefault(op.param, [op.param]).append(op.name)
        self._uses_of = {name: tuple(tied.get(name, (name,))) for name in self.layers}
        self.links: tuple[Link, ...] = tuple(op for op in self.order if isinstance(op, Link))
        consumers: dict[str, list[Op]] = {name: [] for name in self.groups}
        for op in self.order:
            for name in self._sources(op):
                consumers[name].append(op)
        self._consumers = {k: tuple(v) for k, v in consumers.items()}
        self._matrices: dict = {}  # (link name, position) -> (link, its matrix), built once

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
        """N: the number of prunable weights (docs/definitions.md#masks)."""
        return sum(layer.numel for layer in self.layers.values())

    def layer(self, name: str) -> Layer:
        """The layer `name`, or the tied use of that name (docs/graph.md#weight-tying)."""
        try:
            return self.uses[name]
        except KeyError:
            raise MaskError(f"unknown layer {name!r}; layers are {list(self.layers)}") from None

    def uses_of(self, name: str) -> tuple[Layer, ...]:
        """The ops that apply layer `name`'s weight: the layer itself first, then its tied uses
        in graph order (one op for an untied weight)."""
        self.layer(name)
        return tuple(self.uses[n] for n in self._uses_of[name])

    @property
    def tied(self) -> bool:
        """Whether some weight is applied at two or more places."""
        return len(self.uses) != len(self.layers)

    def use_masks(self, masks) -> dict[str, np.ndarray]:
        """Op name -> mask of every layer op, in the op's own ``weight_shape`` order: a tied
        use reads its layer's mask (transposed where ``param_transposed``)."""
        return {name: self._mask_of(op, masks) for name, op in self.uses.items()}

    def param_mask(self, use: Layer, array) -> np.ndarray:
        """An array in the order of `use` (a layer or tied use) in its layer's order."""
        array = np.asarray(array)
        return array.T if use.param_transposed else array

    # ------------------------------------------------------------------ views
    def _mask_of(self, layer: Layer, mask) -> np.ndarray:
        if mask is None:
            return np.ones(layer.weight_shape, dtype=bool)
        if isinstance(mask, Mapping):
            if layer.name in mask:
                mask = mask[layer.name]
            elif layer.param is not None and layer.param in mask:  # a tied use: its layer's mask
                mask = self.param_mask(layer, _as_bool(layer.param, mask[layer.param]))
            else:
                raise MaskError(f"no mask for layer {layer.mask_key!r}; pass one or use "
                                "MaskSet.dense")
        mask = _as_bool(layer.name, mask)  # a 0.5 or NaN must not count as kept
        if mask.shape != layer.weight_shape:
            raise MaskError(
                f"mask for {layer.name!r} has shape {mask.shape} but the weight is "
                f"{layer.weight_shape}; regenerate the mask for this model"
            )
        return mask

    def multiplicity(self, layer, mask=None) -> sp.csr_array:
        """Channel view: sparse (C_out, C_in) count of kept taps per kernel (docs/definitions.md#graph).

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
        """Fan-in view: sparse (fan_in, C_out) matrix, ``B[j, o] = mask[o].flat[j]`` (docs/definitions.md#graph).

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
        key = (link.name, position)
        cached = self._matrices.get(key)
        if cached is not None and cached[0] is link:
            return cached[1]
        matrix = self._link_matrix(link, position)
        self._matrices[key] = (link, matrix)
        return matrix

    def _link_matrix(self, link: Link, position: int) -> sp.csr_array:
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
        elif link.kind in ("regroup", "reduce", "mul"):
            return link.params["maps"][position].matrix(tgt.channels, n)
        elif link.kind == "norm":
            size = n // link.params.get("groups", 1)
            block = np.arange(n) // size
            rows, cols = np.nonzero(block[:, None] == block[None, :])
            return sp.csr_array((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        elif link.kind == "attention":
            p = link.params
            if position == 2:
                return sp.csr_array((np.ones(len(p["v"])), (np.arange(len(p["v"])), p["v"])),
                                    shape=(tgt.channels, n))
            channels = np.asarray(p["q"] if position == 0 else p["k"])
            t, pair = np.nonzero(np.asarray(p["v_head"])[:, None] == np.asarray(p["pair_head"])[None, :])
            return ChannelMap(t, channels[pair]).matrix(tgt.channels, n)
        else:
            raise GraphpaiError(f"unknown link kind {link.kind!r}")
        return sp.csr_array((np.ones(n), (rows, np.arange(n))), shape=(tgt.channels, n))

    @property
    def gated(self) -> bool:
        """Whether co-reach needs the forward reach (a norm, product or attention link)."""
        return any(link.kind in _GATED for link in self.links)

    def link_forward(self, link: Link, reached: Mapping[str, np.ndarray]) -> np.ndarray:
        """Channel-level reach of a link's target from its sources' (docs/graph.md#beyond-convnets).

        A union of the link matrices for every kind except ``norm`` (a centring norm reaches every
        feature of a norm group with one reached feature; RMSNorm keeps reach), ``mul`` (reached
        on every branch) and ``attention`` (an output channel is reached when its value channel
        is: the mixing weights are positive whatever q and k are).
        """
        srcs = [np.asarray(reached[s], dtype=bool) for s in link.sources]
        if link.kind == "norm":
            x = srcs[0]
            if not link.params.get("centred", True):
                return x.copy()
            groups = x.reshape(link.params.get("groups", 1), -1)
            return np.repeat(groups.any(axis=1), groups.shape[1])
        if link.kind == "attention":
            return srcs[2][np.asarray(link.params["v"])]
        parts = [self.link_matrix(link, k) @ x.astype(np.float64) > 0 for k, x in enumerate(srcs)]
        if link.kind == "mul":
            gating = _gating(link)
            gated = [x for x, g in zip(parts, gating) if g]
            return np.logical_and.reduce(gated) if gated else np.logical_or.reduce(parts)
        return np.logical_or.reduce(parts)

    def link_backward(self, link: Link, coreached: np.ndarray, reached=None) -> list[np.ndarray]:
        """Channel-level co-reach of each source position from the target's `coreached`.

        The transpose of :meth:`link_forward`: a union of transposed link matrices, except that a
        branch of a product is co-reached where the other branches are reached, a Q or K channel
        where its partner in the score product is reached and its head has a reached and
        co-reached value channel, and an RMSNorm input through the norm where it is reached and a
        reached feature of its group is co-reached. `reached` (group -> bool) is needed for
        these kinds only.
        """
        target = np.asarray(coreached, dtype=bool)
        kind, p = link.kind, link.params
        if kind in _GATED and reached is None:  # structure only: every channel a link connects
            return [self.link_matrix(link, k).T @ target.astype(np.float64) > 0
                    for k in range(len(link.sources))]
        if kind == "norm":
            x = np.asarray(reached[link.sources[0]], dtype=bool)
            g = p.get("groups", 1)
            if p.get("centred", True):
                return [np.repeat(target.reshape(g, -1).any(axis=1), target.size // g)]
            live = (target & x).reshape(g, -1).any(axis=1)
            return [target | (x & np.repeat(live, target.size // g))]
        if kind == "attention":
            q, k, v = (np.asarray(reached[s], dtype=bool) for s in link.sources)
            heads_v, heads_p = np.asarray(p["v_head"]), np.asarray(p["pair_head"])
            qi, ki, vi = np.asarray(p["q"]), np.asarray(p["k"]), np.asarray(p["v"])
            n_heads = int(max(heads_v.max(initial=-1), heads_p.max(initial=-1))) + 1
            live = np.zeros(n_heads, dtype=bool)
            live[heads_v[target & v[vi]]] = True
            out = [np.zeros(self.groups[s].channels, dtype=bool) for s in link.sources]
            out[0][qi[live[heads_p] & k[ki]]] = True
            out[1][ki[live[heads_p] & q[qi]]] = True
            out[2][vi[target]] = True
            return out
        mats = [self.link_matrix(link, k) for k in range(len(link.sources))]
        if kind == "mul":
            parts = [m @ np.asarray(reached[s], dtype=np.float64) > 0
                     for m, s in zip(mats, link.sources)]
            out, gating = [], _gating(link)
            for k, m in enumerate(mats):
                others = np.logical_and.reduce([x for j, x in enumerate(parts) if j != k and gating[j]]
                                               or [np.ones_like(target)])
                out.append(m.T @ (target & others).astype(np.float64) > 0)
            return out
        return [m.T @ target.astype(np.float64) > 0 for m in mats]

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
        layers = [replace(l, name=r(l.name), source=r(l.source), target=r(l.target),
                          param=None if l.param is None else r(l.param))
                  for l in self.uses.values()]
        links = [replace(k, name=r(k.name), sources=tuple(r(s) for s in k.sources), target=r(k.target))
                 for k in self.links]
        return NetGraph(groups, layers, links, [r(i) for i in self.inputs],
                        [r(o) for o in self.outputs], self.notes)

    # ------------------------------------------------------------------ exports
    def _channel_edges(self, mask=None, weights=None):
        """Yield (source group, target group, src idx, tgt idx, attrs) edge arrays per op."""
        for op in self.order:
            if isinstance(op, Layer):
                mult = self.multiplicity(op, mask).tocoo()
                attrs = {"multiplicity": mult.data, "layer": op.name}
                if weights is not None:
                    if op.name in weights:
                        w = weights[op.name]
                    elif op.mask_key in weights:  # a tied use: its layer's weight
                        w = self.param_mask(op, weights[op.mask_key])
                    else:
                        raise MaskError(f"no weights for layer {op.mask_key!r}; pass one array "
                                        "per layer, e.g. graphpai.torch.layer_weights(model)")
                    w = np.abs(np.asarray(w, dtype=np.float64))
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
        """The channel graph as a networkx DiGraph (docs/definitions.md#graph).

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
            if len(self._uses_of[layer.name]) > 1:  # a tied weight: where it is applied again
                layers[-1]["tied_uses"] = list(self._uses_of[layer.name][1:])
        return {
            "inputs": list(self.inputs), "outputs": list(self.outputs),
            "groups": [{"name": g.name, "channels": g.channels, "size": list(g.size)}
                       for g in self.groups.values()],
            "links": [{"name": k.name, "kind": k.kind, "sources": list(k.sources), "target": k.target}
                      for k in self.links],
            "layers": layers,
            "num_weights": self.num_weights,
            "notes": list(self.notes),
        }

    def __repr__(self):
        tied = f", {len(self.uses) - len(self.layers)} tied uses" if self.tied else ""
        return (f"NetGraph({len(self.groups)} groups, {len(self.layers)} layers{tied}, "
                f"{len(self.links)} links, {self.num_weights} weights)")


def _gating(link: Link) -> tuple[bool, ...]:
    """Which branches of a ``mul`` link are zero where they are not reached (a branch that is
    non-zero everywhere, such as ``sigmoid(b)`` or ``rsqrt(mean(x**2) + eps)``, does not gate)."""
    return tuple(link.params.get("gating") or (True,) * len(link.sources))


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
