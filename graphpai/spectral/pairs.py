r"""Layer-pair scores of [RAM]'s code, defined on the NetGraph so that they work on any DAG.

[RAM]'s code scores two consecutive layers by how well the first one's output channels feed the
second one's inputs; "consecutive" there is a list of layer names. Here a *pair* is a layer P
and each layer C that reads P's output group, directly or through links (pool, add, concat,
flatten, norm, ...): the links' channel maps (:meth:`graphpai.NetGraph.link_matrix`) compose into
a 0/1 map ``Q`` from C's input channels to P's output channels (a norm passes each channel on as
itself; an attention passes its values on, its queries and keys only weight them). With

- ``in_deg[o]``: the number of kept weights into output channel ``o`` of P, and ``n_l(P)`` the
  number of P's fan-in positions with a kept weight;
- ``out_deg[c, k]``: the number of kept weights out of C's fan-in position (input channel ``c``,
  kernel tap ``k``), and ``n_r(C)`` the number of C's output channels with a kept weight;

the pair scores are (docs/spectral.md#layer-pairs):

- **Copeland (throughput) score**: the mean of
  ``(out_deg[c, k] / n_r(C)) / (in_deg[o] / n_l(P))`` over every ``(o, c, k)`` with
  ``Q[c, o] = 1`` and ``in_deg[o] > 0``; about 1 is balanced, above 1 compression, below 1 a
  bottleneck ([RAM]'s reading);
- **compatibility ratio**: among P's output channels with ``in_deg > 0``, the share whose
  input side in C (some ``(c, k)`` with ``Q[c, o] = 1``) keeps a weight.

For consecutive layers (``Q`` the identity, or a flatten's channel-major map) these are exactly
the reference code's ``copeland_score`` and ``compatibility_ratio``. One layer's **channel
overlap coefficient** is the mean over its input channels ``c`` of
``|T_c0 ∩ T_c1 ∩ ...| / min_k |T_ck|``, ``T_ck`` the output channels that tap ``k`` of ``c``
reaches (channels with an empty tap are skipped), the reference's ``channel_overlap_coefs``.
Where the reference returns 0 for an undefined score (an empty layer), these return None.

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
from ..graph import Layer, NetGraph

__all__ = ["LayerPair", "layer_pairs", "pair_scores", "channel_overlap"]


@dataclass(frozen=True)
class LayerPair:
    """[RAM]'s pair scores of a layer and one layer that consumes its output (module docstring)."""

    producer: str
    consumer: str
    copeland: float | None
    compatibility: float | None

    def to_dict(self) -> dict:
        return jsonable(asdict(self))


def layer_pairs(graph: NetGraph) -> list[tuple[str, str, sp.csr_array]]:
    """Every (producer, consumer, Q) of `graph`: Q (consumer input channels x producer output
    channels) is the 0/1 channel map through the links between them; in graph order."""
    out = []
    order = {c: i for i, c in enumerate(graph.uses)}   # a tied weight's uses each (graph.md)
    for name, layer in graph.uses.items():
        # one topological sweep from the layer's output: each group's map is the sum over the
        # links that feed it, so every group is visited once (a depth-first walk would follow
        # every path, 2^depth of them through residual streams and hand-written norms)
        reach = {layer.target: sp.identity(graph.groups[layer.target].channels, format="csr")}
        found: dict[str, sp.csr_array] = {}
        for op in graph.order:
            if isinstance(op, Layer):
                if op.source in reach:
                    q = reach[op.source]
                    found[op.name] = q if op.name not in found else found[op.name] + q
                continue
            parts = [_through(graph, op, position, reach[source])
                     for position, source in enumerate(op.sources)
                     if source in reach and _carries_values(graph, op, position)]
            if parts:
                reach[op.target] = sum(parts[1:], parts[0])
        for consumer in sorted(found, key=order.get):
            q = found[consumer]
            q = sp.csr_array((np.ones(q.nnz), q.indices, q.indptr), shape=q.shape)  # 0/1
            out.append((name, consumer, q))
    return out


def _carries_values(graph, link, position) -> bool:
    """Whether a link passes its `position`-th source's channels on as values. An attention's
    queries and keys only weight the values, and a reduction over the channels (the mean of
    x^2 in a hand-written RMSNorm) is a statistic, like a norm's: the pairs follow the values."""
    if link.kind == "attention":
        return position == 2
    if link.kind == "reduce":
        source = graph.groups[link.sources[position]].channels
        return graph.groups[link.target].channels == source
    return True


def _through(graph, link, position, q):
    """The channel map `q` carried through `link`. A norm passes channel c on as channel c (its
    statistics mix channels, but the values do not move), so it is the identity here, which
    also keeps the maps as sparse as the channel counts."""
    if link.kind == "norm":
        return q
    return sp.csr_array(graph.link_matrix(link, position) @ q)


def _count(mask: np.ndarray, axis: int) -> np.ndarray:
    """Kept entries of a bool array along `axis`, as int64; counted in the narrowest integer
    type that holds them (an int64 sum over a middle axis is 2-4 times slower)."""
    mask = np.asarray(mask, dtype=bool)  # no copy for a bool array
    dtype = np.uint16 if mask.shape[axis] < 2 ** 16 else np.int64
    return np.add.reduce(mask.view(np.uint8), axis=axis, dtype=dtype).astype(np.int64)


def _all_taps(taps: np.ndarray) -> np.ndarray:
    """``taps.all(axis=3)``, as an AND of the tap slices: 2-3 times faster than numpy's
    reduction over a short last axis (ResNet-50's 3x3 convs: 23 against 9 ms), and it stops
    once nothing is left."""
    out = taps[..., 0].copy()
    for k in range(1, taps.shape[3]):
        if not out.any():
            break
        out &= taps[..., k]
    return out


def _tap_degrees(layer: Layer, mask: np.ndarray) -> np.ndarray:
    """out_deg[c, k]: kept weights out of input channel c, tap k (groups respected)."""
    c_out, c_in_g = layer.weight_shape[:2]
    taps = mask.reshape(layer.groups, c_out // layer.groups, c_in_g, -1)
    return _count(taps, 1).reshape(layer.in_channels, -1)


def pair_scores(graph: NetGraph, masks=None) -> tuple[LayerPair, ...]:
    """[RAM]'s Copeland score and compatibility ratio of every layer pair of `graph`.

    Parameters
    ----------
    graph : NetGraph
    masks : MaskSet or mapping of layer name -> bool array, optional
        None: dense.

    Examples
    --------
    >>> from graphpai import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 4), Group("h", 3), Group("y", 2)],
    ...              [Layer("fc1", "linear", (3, 4), "x", "h"),
    ...               Layer("fc2", "linear", (2, 3), "h", "y")], [], ["x"], ["y"])
    >>> m1 = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
    >>> m2 = np.array([[1, 0, 1], [1, 0, 0]], bool)
    >>> p = pair_scores(g, {"fc1": m1, "fc2": m2})[0]
    >>> p.producer, p.consumer, p.copeland, p.compatibility   # (1.5 + 0) / 2; 1 of 2 channels
    ('fc1', 'fc2', 0.75, 0.5)
    """
    stats = {}  # per layer, once: (in_deg, n_l, n_r, out_deg)

    def stats_of(name):
        if name not in stats:
            layer = graph.uses[name]
            mask = graph._mask_of(layer, masks)
            m2d = mask.reshape(layer.out_channels, -1)
            stats[name] = (_count(m2d, 1), int(np.count_nonzero(m2d.any(axis=0))),
                           int(np.count_nonzero(m2d.any(axis=1))), _tap_degrees(layer, mask))
        return stats[name]

    out = []
    for producer, consumer, q in layer_pairs(graph):
        p_layer = graph.uses[producer]
        in_deg, n_l, _, _ = stats_of(producer)
        _, _, n_r, out_deg = stats_of(consumer)  # out_deg: (C's in_channels, K)
        if n_l == 0 or n_r == 0:
            out.append(LayerPair(producer, consumer, None, None))
            continue
        coo = q.tocoo()
        c, o = coo.row, coo.col
        live = in_deg[o] > 0
        ratio = ((out_deg[c[live]] / n_r) / (in_deg[o[live]] / n_l)[:, None])
        copeland = float(ratio.mean()) if ratio.size else None
        fed = np.zeros(p_layer.out_channels, dtype=bool)
        fed[o[out_deg[c].any(axis=1)]] = True
        receiving = in_deg > 0
        compatibility = (float(np.count_nonzero(receiving & fed) / np.count_nonzero(receiving))
                         if receiving.any() else None)
        out.append(LayerPair(producer, consumer, copeland, compatibility))
    return tuple(out)


def channel_overlap(graph: NetGraph, masks=None) -> dict:
    """[RAM]'s channel overlap coefficient of each layer (module docstring): layer -> value or
    None (no input channel whose every tap keeps a weight).

    Examples
    --------
    >>> from graphpai import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 2, (1, 2)), Group("y", 3, (1, 1))],
    ...              [Layer("conv", "conv", (3, 2, 1, 2), "x", "y")], [], ["x"], ["y"])
    >>> m = np.zeros((3, 2, 1, 2), bool)
    >>> m[[0, 1], 0, 0, 0] = m[[1, 2], 0, 0, 1] = True   # channel 0: taps reach {0,1}, {1,2}
    >>> m[0, 1, 0, 0] = True                              # channel 1: tap 1 reaches nothing
    >>> channel_overlap(g, {"conv": m})                   # |{1}| / min(2, 2), channel 1 skipped
    {'conv': 0.5}
    """
    out = {}
    for name, layer in graph.layers.items():
        m = graph._mask_of(layer, masks)
        c_out, c_in_g = layer.weight_shape[:2]
        taps = m.reshape(layer.groups, c_out // layer.groups, c_in_g, -1)
        common = _count(_all_taps(taps), 1).reshape(-1)               # |intersection| per c
        smallest = _count(taps, 1).min(axis=2).reshape(-1)            # min_k |T_ck| per c
        ok = smallest > 0
        out[name] = float(np.mean(common[ok] / smallest[ok])) if ok.any() else None
    return out
