"""The spatial engine: the one seam between the analyses and the code that runs convolutions.

The analyses (:mod:`graphpai.functional`, :mod:`graphpai.paths`) state their algorithms on the
:class:`~graphpai.graph.NetGraph` (docs/audit.md). Where an exact answer needs the real conv
geometry (padding, stride, dilation, groups, pooling windows) they call a **spatial engine**: an
object, or a module of public functions, with the calls below. The default engine is
:mod:`graphpai.torch.spatial` (torch runs the convolutions); :func:`spatial_engine` imports it the
first time an analysis asks for it, so the core never imports torch at import time.

Import arrows run one way: ``graphpai.torch.spatial -> graphpai.engine`` (it implements the
interface and uses the number format below) and ``functional / paths -> graphpai.engine`` (they
call :func:`spatial_engine`). Nothing here imports an analysis or torch.

The interface
-------------
Masks arrive validated (a :class:`~graphpai.masks.MaskSet` of bool arrays, or None for the dense
network); maps come back as numpy bool arrays, group name -> ``(channels, *size)``.

``activity(graph, masks, *, active=None, device="cpu") -> Activity``
    Forward 0/1 maps from an all-ones input, backward 0/1 maps from all-ones at the logits
    (through the transposed ops, OR-ed over consumers), and the functional weights: a kept weight
    whose weight gradient, with the forward map as input and the backward map as output
    gradient, is positive ([VK]'s test).
``forward_maps(graph, masks, *, place=None, active=None, device="cpu") -> dict``
    The forward maps only; ``place(layer, input_map) -> mask`` may choose each layer's mask from
    the map that reaches it (generators such as [MiCA] do).
``active_fan_in(layer, input_map) -> ndarray``
    The fan-in positions of one layer that see an active input pixel at some output position.
``log10_paths(graph, masks, *, bias_ones=False, reference_pools=False, device="cpu") -> float``
    log10 of the input-output path count of the all-ones linearised network, renormalised per op
    in the number format below; ``bias_ones`` adds 1 to every output of a layer with a bias,
    ``reference_pools`` runs max pools as max and functional average pools as means ([NPB]'s
    conventions). ``-inf`` when no path exists.
``path_mass(graph, masks, *, place=None, device="cpu") -> dict``
    The same counting pass (default conventions), per channel: group name -> ``(values,
    scale)`` in the number format below, the paths reaching each (channel, pixel) summed over the
    channel's pixels ([NPB]'s path mass). ``place(layer, (values, scale)) -> mask`` may choose
    each layer's mask from the mass at its input, computed from the masks placed before it (a
    generator such as [NPB] places layers from the input to the output).

``active``, where given, maps a group name to a bool ``(channels,)`` vector of channels that are
active at every pixel once the group is computed, reached or not (a bias, a BatchNorm shift).

An engine that supports a new op (a new :class:`~graphpai.graph.Link` kind) gives its forward
map; the backward map is its transpose (see ``register_link`` in :mod:`graphpai.torch.spatial`).

Number format of path counts
----------------------------
A nonnegative array ``values`` with a float ``scale`` stands for ``values * 10**scale``, with
``values.max() == 1`` (or all zero and ``scale == -inf``). :func:`renormalise` and
:func:`common_scale` work on numpy arrays and torch tensors alike, so that no depth overflows.

References
----------
.. [VK] A. Vysogorets, J. Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens
   of Effective Sparsity", JMLR 2023.
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024.
.. [NPB] H. Pham et al., "Towards Data-Agnostic Pruning at Initialization: What Makes a Good
   Sparse Mask?", NeurIPS 2023.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import numpy as np

from .errors import GraphpaiError

__all__ = [
    "Activity",
    "spatial_engine",
    "set_spatial_engine",
    "check_active",
    "renormalise",
    "common_scale",
]

DEFAULT_ENGINE = "graphpai.torch.spatial"

_engine = None


@dataclass(frozen=True)
class Activity:
    """Spatial activity of a masked graph (docs/audit.md).

    ``forward`` and ``backward``: group name -> bool map ``(channels, *size)``;
    ``functional``: layer name -> bool mask of the functional weights.
    """

    forward: dict
    backward: dict
    functional: dict


def spatial_engine():
    """The spatial engine the analyses call (the torch engine unless one was set).

    Examples
    --------
    >>> engine = spatial_engine()
    >>> all(callable(getattr(engine, name)) for name in
    ...     ("activity", "forward_maps", "active_fan_in", "log10_paths", "path_mass"))
    True
    """
    global _engine
    if _engine is None:
        _engine = importlib.import_module(DEFAULT_ENGINE)
    return _engine


def set_spatial_engine(engine):
    """Use `engine` (an object with the interface above; None: the default) from now on.

    Returns the engine that was in use before, so that a caller can put it back.
    """
    global _engine
    before, _engine = _engine, engine
    return before


def check_active(graph, active) -> dict:
    """`active` (group name -> channels active at every pixel) checked: bool ``(channels,)``
    vectors with at least one True, keyed by groups of `graph`; a one-line error otherwise.

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 1), Group("y", 2)], [Layer("fc", "linear", (2, 1), "x", "y")],
    ...              [], ["x"], ["y"])
    >>> check_active(g, {"y": [0, 1]})
    {'y': array([False,  True])}
    """
    out = {}
    for name, channels in (active or {}).items():
        if name not in graph.groups:
            raise GraphpaiError(f"active names the unknown group {name!r}; the graph's groups "
                                f"are {list(graph.groups)}")
        channels = np.asarray(channels, dtype=bool).reshape(-1)
        if channels.shape != (graph.groups[name].channels,):
            raise GraphpaiError(f"active[{name!r}] has {channels.size} entries; group {name!r} has "
                                f"{graph.groups[name].channels} channels")
        if channels.any():
            out[name] = channels
    return out


def renormalise(values, scale: float):
    """(values / max, scale + log10(max)); (zeros, -inf) when all are 0.

    Examples
    --------
    >>> import numpy as np
    >>> v, s = renormalise(np.array([2.0, 20.0]), 1.0)  # (2, 20) * 10
    >>> v.tolist(), s
    ([0.1, 1.0], 2.3010299956639813)
    """
    top = float(values.max()) if len(values.reshape(-1)) else 0.0
    if top <= 0:
        return values * 0.0, -math.inf
    return values / top, scale + math.log10(top)


def common_scale(pairs):
    """Bring (values, log10 scale) pairs to their largest scale; returns (values list, scale)."""
    scale = max(s for _, s in pairs)
    if scale == -math.inf:
        return [v for v, _ in pairs], -math.inf
    return [v if s == scale else v * 10.0 ** (s - scale) for v, s in pairs], scale
