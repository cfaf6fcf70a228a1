"""RPI: random pruning at initialization with a layerwise budget
(docs/definitions.md#rpi)."""

from __future__ import annotations

import numpy as np

from ..masks import MaskSet
from ._registry import register

__all__ = ["rpi"]


@register("rpi")
def rpi(graph, budget, *, seed=None) -> MaskSet:
    """Keep exactly ``budget.counts[l]`` weights per layer, placed uniformly at random.

    Each layer keeps the first |E_l| positions of a random permutation of its N_l flat weight
    indices (not a Bernoulli draw, so the count is exact). One generator is used for all layers,
    in graph order, so the same seed gives the same mask on every machine. With a budget taken
    from method X's mask this is RPI-X ([MiCA]).

    Parameters
    ----------
    graph : NetGraph
    budget : Budget
        Per-layer counts for this graph (see :mod:`graphpai.budgets`).
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    MaskSet

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> from graphpai.budgets import uniform
    >>> g = NetGraph([Group("x", 4), Group("y", 2)], [Layer("fc", "linear", (2, 4), "x", "y")],
    ...              [], ["x"], ["y"])
    >>> rpi(g, uniform(g, 4), seed=0).counts()
    {'fc': 2}
    """
    rng = np.random.default_rng(seed)
    counts = budget.counts
    masks = {}
    for name, layer in graph.layers.items():
        flat = np.zeros(layer.numel, dtype=bool)
        flat[rng.permutation(layer.numel)[: counts[name]]] = True
        masks[name] = flat.reshape(layer.weight_shape)
    return MaskSet(masks)
