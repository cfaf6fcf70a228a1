"""The torch spatial engine: exact 0/1 activity maps per pixel through the real geometry.

This module is the default implementation of the spatial engine interface of
:mod:`graphpai.engine` (``activity``, ``forward_maps``, ``active_fan_in``, ``log10_paths``,
``path_mass``): the
analyses in :mod:`graphpai.functional` and :mod:`graphpai.paths` reach it only through
:func:`graphpai.engine.spatial_engine`, and it imports nothing from them. The algorithm is stated
on the :class:`~graphpai.graph.NetGraph` (docs/audit.md); torch only runs the convolutions.

Every op of the graph is a *linear* map with nonnegative coefficients once the network is
linearised (BN, biases and ReLU removed, every kept weight replaced by 1):

- conv: the convolution with the 0/1 mask as its weight, with the layer's exact zero padding
  (``(before, after)`` pairs, asymmetric included), stride, dilation and groups;
- linear: the 0/1 mask as a matrix;
- pool: the **sum over the window** (max and average pools alike), with the link's kernel,
  stride, padding, dilation and ``ceil_mode`` (the window grid is the one PyTorch uses: the input
  is zero-padded or cropped at the end so that the output has the target group's size); adaptive
  pools sum over PyTorch's adaptive windows ``[floor(i L / T), ceil((i + 1) L / T))``; a global
  pool sums over all pixels;
- add: the sum; concat: stacking on channels; flatten: PyTorch's ``(C, H, W)`` order.

Links are dispatched on their kind through a table: :func:`register_link` adds a kind (its
forward map on a batch; the transpose defaults to autograd through it, which is exact for any
linear op), so a new op needs no change elsewhere in this module.

``active`` (``activity``, ``forward_maps``): group name -> bool ``(channels,)`` of channels set
active at every pixel once the group is computed (a bias or a BatchNorm shift, reached or not).

**Forward maps** ``f``: all-ones input, each op applied, then clamped ``f = (op(f) > 0)``.
**Backward maps** ``g``: all-ones at the logits, each op's transpose applied in reverse
topological order, clamped, and OR-ed over the consumers of a group. Because every coefficient
is nonnegative, a clamped value is 1 exactly when some path of kept weights reaches that pixel, so
nothing can overflow or underflow at any depth. A kept conv weight ``(o, i, a, b)`` is
**functional** iff some output pixel ``p`` has ``g[o, p] = 1`` and
``f[i, p * stride + (a, b) * dilation - padding] = 1`` inside the image: the weight gradient of the
conv with ``f`` as input and ``g`` as output gradient is ``> 0``. This is the gradient test of
[VK]: ``dR/dw`` for ``R = sum(net(1))`` in the linearised net with weights ``|w| > 0`` is a sum of
positive products over exactly these (pixel, path) pairs.

Memory: masks stay bool until an op needs numbers; a layer's float weight exists one block of
output channels at a time (at most ``BLOCK_BYTES``), never for every layer at once. Before a
layer runs, the memory it needs is compared with what is free (``/proc/meminfo`` or CUDA's
``mem_get_info``); when it cannot fit, a one-line :class:`~graphpai.errors.GraphpaiError` names
the layer and the GiB needed.

Maps are float tensors holding 0/1 (float32: every intermediate value is an integer count below
2**24, and the threshold is 0.5, so results are exact on any convolution algorithm). On CUDA,
cuDNN's TF32 (10 mantissa bits, on by default for convolutions) is switched off while the maps
are computed: in a Winograd or FFT transform its rounding could move a count by more than 0.5.

References
----------
.. [VK] A. Vysogorets, J. Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens
   of Effective Sparsity", JMLR 2023.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._memory import available_memory
from ..engine import Activity, check_active, common_scale, renormalise
from ..errors import GraphpaiError, MaskError
from ..graph import Layer, Link, NetGraph
from .extract import model_weight
from ..masks import MaskSet

__all__ = [
    "Activity",
    "forward_maps",
    "backward_maps",
    "active_fan_in",
    "activity",
    "functional_masks",
    "log10_paths",
    "path_mass",
    "register_link",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

# a layer whose float weight would take more than this runs on blocks of output channels
BLOCK_BYTES = 256 << 20
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


# ---------------------------------------------------------------------------------- geometry
def _pad_arg(pairs) -> list[int]:
    """(before, after) per spatial dim -> F.pad's flat list (last dimension first)."""
    return [int(p) for pair in reversed(tuple(pairs)) for p in pair]


def _symmetric(pairs) -> bool:
    return all(a == b for a, b in pairs)


def _check_size(y, size, what):
    if tuple(y.shape[2:]) != tuple(size):
        raise GraphpaiError(
            f"{what}: the geometry gives an output of spatial size {tuple(y.shape[2:])} but the "
            f"graph says {tuple(size)}; the NetGraph does not match its layer parameters")


_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv_transpose(x, w, layer: Layer):
    """A transposed conv (ConvTranspose, the gradient of a conv): output padding from the sizes."""
    pads = [a for a, _ in layer.padding]
    extra = [o - ((i - 1) * s - 2 * p + d * (k - 1) + 1) for o, i, s, p, d, k in zip(
        layer.out_size, x.shape[2:], layer.stride, pads, layer.dilation, layer.kernel)]
    w = model_weight(w, True, layer.groups)  # the module's (C_in, C_out/g, k) order
    return _CONV_T[len(layer.kernel)](x, w, None, layer.stride,
                                      pads, extra, layer.groups, layer.dilation)


def _conv(x, w, layer: Layer):
    """The conv of `layer` on a batch `x` with weight `w`, exact (asymmetric) zero padding."""
    if layer.transposed:
        return _conv_transpose(x, w, layer)
    conv = _CONV[len(layer.kernel)]
    if _symmetric(layer.padding):
        return conv(x, w, None, layer.stride, [a for a, _ in layer.padding], layer.dilation,
                    layer.groups)
    return conv(F.pad(x, _pad_arg(layer.padding)), w, None, layer.stride, 0, layer.dilation,
                layer.groups)


def _conv_backward(g, x, w, layer: Layer, need_input: bool, need_weight: bool):
    """(grad_input, grad_weight) of `layer`'s conv for output gradient `g` at input `x`."""
    if layer.transposed:  # autograd through the transposed conv: exact for a linear op
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            ws = w.detach().requires_grad_(True)
            gi, gw = torch.autograd.grad(_conv_transpose(xs, ws, layer), (xs, ws), g)
        return (gi if need_input else None), (gw if need_weight else None)
    nd = len(layer.kernel)
    if _symmetric(layer.padding):
        padding, xin = [a for a, _ in layer.padding], x
    else:
        padding, xin = [0] * nd, F.pad(x, _pad_arg(layer.padding))
    gi, gw, _ = torch.ops.aten.convolution_backward(
        g, xin, w, None, list(layer.stride), padding, list(layer.dilation), False, [0] * nd,
        layer.groups, [need_input, need_weight, False])
    if gi is not None and not _symmetric(layer.padding):
        crop = (slice(None), slice(None)) + tuple(
            slice(a, a + n) for (a, _), n in zip(layer.padding, x.shape[2:]))
        gi = gi[crop]
    return gi, gw


def _adaptive_matrix(length: int, target: int, like) -> torch.Tensor:
    """0/1 (target, length) matrix of PyTorch's adaptive pooling windows."""
    i = torch.arange(target, device=like.device)
    start = (i * length) // target
    end = -((-(i + 1) * length) // target)
    pos = torch.arange(length, device=like.device)
    return ((pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])).to(like.dtype)


def _pool_sum(x, link: Link, target_size):
    """Sum over every pooling window of `link` (the linear form of "any input active")."""
    params = link.params
    if not target_size:  # global pooling to a feature vector
        return x.sum(dim=tuple(range(2, x.dim())))
    size = tuple(x.shape[2:])
    if len(size) != len(target_size):
        raise GraphpaiError(f"pool {link.name!r} maps spatial size {size} to {tuple(target_size)}; "
                            "graphpai expects the same number of spatial dimensions")
    if params.get("adaptive"):
        for d, (length, target) in enumerate(zip(size, target_size)):
            if length != target:
                p = _adaptive_matrix(length, target, x)
                x = (x.movedim(2 + d, -1) @ p.T).movedim(-1, 2 + d)
        return x
    nd = len(size)
    kernel = tuple(params["kernel"])
    stride = tuple(params.get("stride") or kernel)
    dilation = tuple(params.get("dilation") or (1,) * nd)
    padding = tuple(params.get("padding") or ((0, 0),) * nd)
    if (nd in (1, 2) and all(d == 1 for d in dilation) and _symmetric(padding)
            and all(2 * a <= k for (a, _), k in zip(padding, kernel))):
        # PyTorch's own window grid, summed (divisor 1): the fast path
        pads = [a for a, _ in padding]
        x2 = x.unsqueeze(2) if nd == 1 else x
        y = F.avg_pool2d(x2, ((1,) * (2 - nd)) + kernel, ((1,) * (2 - nd)) + stride,
                         ([0] * (2 - nd)) + pads, ceil_mode=bool(params.get("ceil_mode")),
                         count_include_pad=True, divisor_override=1)
        y = y.squeeze(2) if nd == 1 else y
        if tuple(y.shape[2:]) == tuple(target_size):
            return y
    pads = []
    for d in range(nd):
        before = padding[d][0]
        need = (target_size[d] - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1
        pads.append((before, need - size[d] - before))  # PyTorch's window grid; after may be < 0
    channels = x.shape[1]
    ones = torch.ones((channels, 1) + kernel, dtype=x.dtype, device=x.device)
    return _CONV[nd](F.pad(x, _pad_arg(pads)), ones, None, stride, 0, dilation, channels)


def _pool_reference(x, link: Link, target_size):
    """The pool as [NPB] runs it: max pools take the max, functional average pools divide by
    their window (PyTorch's own op), average-pool modules sum (as :func:`_pool_sum`)."""
    params = link.params
    mode = params.get("mode", "avg")
    if mode == "avg" and not params.get("functional"):
        return _pool_sum(x, link, target_size)
    dims = tuple(range(2, x.dim()))
    if not target_size:
        return x.amax(dim=dims) if mode == "max" else x.mean(dim=dims)
    nd = len(target_size)
    if params.get("adaptive"):
        fn = getattr(F, f"adaptive_{mode}_pool{nd}d")
        return fn(x, tuple(target_size))
    kernel = tuple(params["kernel"])
    stride = tuple(params.get("stride") or kernel)
    padding = [a for a, _ in (params.get("padding") or ((0, 0),) * nd)]
    if mode == "max":
        fn = getattr(F, f"max_pool{nd}d")
        return fn(x, kernel, stride, padding, tuple(params.get("dilation") or (1,) * nd),
                  ceil_mode=bool(params.get("ceil_mode")))
    fn = getattr(F, f"avg_pool{nd}d")
    kw = {"ceil_mode": bool(params.get("ceil_mode")),
          "count_include_pad": bool(params.get("count_include_pad", True))}
    if nd == 2 and params.get("divisor_override"):
        kw["divisor_override"] = params["divisor_override"]
    return fn(x, kernel, stride, padding, **kw)


def _add(xs, link, graph, pool):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def _pool(xs, link, graph, pool):
    target = graph.groups[link.target]
    y = pool(xs[0], link, target.size)
    if tuple(y.shape[2:]) != tuple(target.size):
        _check_size(y, target.size, f"pool {link.name!r}")
    return y


# kind -> (forward(xs, link, graph, pool) -> tensor, transpose(g, shapes, link, graph) or None)
_LINKS: dict = {
    "add": (_add, lambda g, shapes, link, graph: [g for _ in shapes]),
    "concat": (lambda xs, link, graph, pool: torch.cat(xs, dim=1),
               lambda g, shapes, link, graph: list(torch.split(g, [s[1] for s in shapes], dim=1))),
    "flatten": (lambda xs, link, graph, pool: xs[0].reshape(xs[0].shape[0], -1),
                lambda g, shapes, link, graph: [g.reshape(shapes[0])]),
    "pool": (_pool, None),
}


# ---------------------------------------------------------------------------------- new kinds
def _index(em, device):
    return (torch.from_numpy(np.array(em.rows)).to(device), torch.from_numpy(np.array(em.cols)).to(device))


def _elements(xs, link, graph, pool):
    """regroup / reduce: ``y[t] = sum of x[s]`` over the link's element pairs (t, s)."""
    tgt = graph.groups[link.target]
    y = xs[0].new_zeros(tgt.numel)
    for x, em in zip(xs, link.params["elements"]):
        rows, cols = _index(em, x.device)
        y.index_add_(0, rows, x.reshape(-1)[cols])
    return y.reshape((1, tgt.channels) + tuple(tgt.size))


def _elements_t(g, shapes, link, graph, xs=None):
    out = []
    flat = g.reshape(-1)
    for shape, em in zip(shapes, link.params["elements"]):
        rows, cols = _index(em, g.device)
        gx = g.new_zeros(math.prod(shape))
        gx.index_add_(0, cols, flat[rows])
        out.append(gx.reshape(shape))
    return out


def _regions(x, link):
    """(groups, per, positions) view of a map and the any-over-region of it, broadcast back."""
    groups = int(link.params.get("groups", 1))
    c = x.shape[1]
    if link.params.get("positions", "each") == "all":
        r = x.reshape(groups, -1).amax(dim=1, keepdim=True)
        return torch.broadcast_to(r, (groups, x[0].numel() // groups)).reshape(x.shape)
    v = x.reshape(groups, c // groups, -1)
    return torch.broadcast_to(v.amax(dim=1, keepdim=True), v.shape).reshape(x.shape)


def _norm(xs, link, graph, pool):
    x = xs[0]
    return _regions(x, link) if link.params.get("centred", True) else x


def _norm_t(g, shapes, link, graph, xs=None):
    if link.params.get("centred", True):
        return [_regions(g, link)]
    x = xs[0]
    return [torch.maximum(g, x * _regions(g * x, link))]


def _gating(link):
    return tuple(link.params.get("gating") or (True,) * len(link.sources))


def _mul(xs, link, graph, pool):
    gated = [x for x, gate in zip(xs, _gating(link)) if gate]
    if not gated:
        return torch.stack(xs).amax(dim=0)
    y = gated[0]
    for x in gated[1:]:
        y = y * x
    return y


def _mul_t(g, shapes, link, graph, xs=None):
    gating = _gating(link)
    out = []
    for k in range(len(shapes)):
        y = g
        for j, (x, gate) in enumerate(zip(xs, gating)):
            if j != k and gate:
                y = y * x
        out.append(y)
    return out


def _allowed(link, tq, tk, like):
    allowed = link.params.get("allowed")
    if allowed is None:
        return torch.ones((tq, tk), dtype=like.dtype, device=like.device)
    a = torch.zeros((tq, tk), dtype=like.dtype, device=like.device)
    a[torch.from_numpy(np.array(allowed.rows)), torch.from_numpy(np.array(allowed.cols))] = 1
    return a


def _attention_parts(xs, link):
    q, k, v = (x.reshape(x.shape[1], -1) for x in xs)
    p = link.params
    a = _allowed(link, q.shape[1], k.shape[1], q)
    v_idx = torch.as_tensor(p["v"], device=q.device)
    return q, k, v, a, v_idx


def _attention(xs, link, graph, pool):
    """out[j, t] reads v[v_j, s] at every allowed key position s (the mixing weights are
    positive whatever q and k are)."""
    q, k, v, a, v_idx = _attention_parts(xs, link)
    out = v[v_idx] @ a.T
    tgt = graph.groups[link.target]
    return out.reshape((1, tgt.channels) + tuple(tgt.size))


def _attention_t(g, shapes, link, graph, xs=None):
    q, k, v, a, v_idx = _attention_parts(xs, link)
    p = link.params
    g2 = g.reshape(g.shape[1], -1)
    heads_v = torch.as_tensor(p["v_head"], device=g.device)
    heads_p = torch.as_tensor(p["pair_head"], device=g.device)
    qi, ki = torch.as_tensor(p["q"], device=g.device), torch.as_tensor(p["k"], device=g.device)
    n_heads = int(max(max(p["v_head"], default=-1), max(p["pair_head"], default=-1))) + 1
    gv = torch.zeros_like(v)
    gv.index_add_(0, v_idx, g2 @ a)
    # a score (h, t, s) moves the output when position t mixes two or more keys, its head has
    # a co-reached output at t and a reached value at some allowed key
    feeds = g2 * (_binary(v[v_idx] @ a.T))
    live = torch.zeros((n_heads, g2.shape[1]), dtype=g.dtype, device=g.device)
    live.index_add_(0, heads_v, feeds)
    live = _binary(live) * (a.sum(dim=1) >= 2).to(g.dtype)[None, :]
    live_pairs = live[heads_p]                                  # (pairs, Tq)
    gq = torch.zeros_like(q)
    gq.index_add_(0, qi, live_pairs * _binary(k[ki] @ a.T))
    gk = torch.zeros_like(k)
    gk.index_add_(0, ki, (live_pairs * q[qi]) @ a)
    return [x.reshape(shape) for x, shape in zip((gq, gk, gv), shapes)]


def _sum_of(xs, link, graph, pool):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


# kind -> (binary forward, transpose given the forward maps, forward for counting paths)
_GATED_LINKS = {
    "regroup": (_elements, _elements_t, _elements),
    "reduce": (_elements, _elements_t, _elements),
    "norm": (_norm, _norm_t, lambda xs, link, graph, pool: xs[0]),
    "mul": (_mul, _mul_t, _sum_of),
    "attention": (_attention, _attention_t, _attention),
}


def register_link(kind: str, forward: Callable, transpose: Callable | None = None) -> None:
    """Teach the engine a new :class:`~graphpai.graph.Link` kind.

    Parameters
    ----------
    kind : str
        The ``Link.kind`` it handles.
    forward : callable
        ``forward(xs, link, graph, pool) -> tensor``: the op on the batches ``xs`` (one per source
        position, ``(1, C, *size)``) of the linearised network: nonnegative coefficients, so that
        a 0/1 map clamped after it is "some path reaches this pixel". ``pool`` is the pooling
        function of the running convention (ignore it unless the op pools).
    transpose : callable, optional
        ``transpose(g, shapes, link, graph) -> list of tensors``, one gradient per source; by
        default autograd through `forward`, exact for any linear op.
    """
    _LINKS[kind] = (forward, transpose)


def _link_entry(link: Link):
    if link.kind in _GATED_LINKS and link.kind not in _LINKS:
        forward, transpose, _ = _GATED_LINKS[link.kind]
        return forward, transpose
    try:
        return _LINKS[link.kind]
    except KeyError:
        raise GraphpaiError(f"unknown link kind {link.kind!r} of {link.name!r}; the spatial engine "
                            f"knows {sorted(_LINKS)}") from None


def _link_forward(xs, link: Link, graph: NetGraph, pool=_pool_sum, counting=False):
    """Apply a parameter-free link to its source batches `xs` (one per position); `counting`:
    the op of the all-ones network whose paths are counted (a product sums its branches)."""
    if counting and link.kind in _GATED_LINKS and link.kind not in _LINKS:
        return _GATED_LINKS[link.kind][2](xs, link, graph, pool)
    return _link_entry(link)[0](xs, link, graph, pool)


def _link_transpose(g, xs_shapes, link: Link, graph: NetGraph, xs=None):
    """The transposed link applied to `g`: one gradient per source position (`xs`, the forward
    maps of the sources, for the links whose transpose depends on them)."""
    transpose = _link_entry(link)[1]
    if link.kind in _GATED_LINKS and link.kind not in _LINKS:
        return transpose(g, xs_shapes, link, graph, xs=xs)
    if transpose is not None:
        return transpose(g, xs_shapes, link, graph)
    xs = [torch.zeros(shape, dtype=g.dtype, device=g.device, requires_grad=True)
          for shape in xs_shapes]
    with torch.enable_grad():
        y = _link_forward(xs, link, graph)
        return list(torch.autograd.grad(y, xs, g, allow_unused=True, materialize_grads=True))


def _binary(y):
    return (y > 0.5).to(y.dtype)


# ---------------------------------------------------------------------------------- helpers
def _device(device) -> torch.device:
    """`device` (None: torch's default) as a torch.device that can hold a tensor; else a
    one-line GraphpaiError."""
    try:
        device = torch.empty(0, device=device).device
    except (RuntimeError, AssertionError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GraphpaiError(f"device {str(device)!r} cannot run the spatial activity ({reason}); "
                            "use device='cpu' or an available accelerator such as 'cuda'") from None
    return device


@contextmanager
def _exact(device: torch.device):
    """float32 convolutions without TF32 on CUDA (see the module docstring); a no-op elsewhere."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _checked_masks(graph: NetGraph, masks):
    if masks is None:
        return None
    return (masks if isinstance(masks, MaskSet) else MaskSet(masks)).validate(graph)


def _mask(layer: Layer, masks) -> np.ndarray:
    if masks is None:
        return np.ones(layer.weight_shape, dtype=bool)
    return masks[layer.name]


def _placed(layer: Layer, mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(layer.weight_shape):
        raise MaskError(f"place() returned a mask of shape {mask.shape} for {layer.name!r}, whose "
                        f"weight is {tuple(layer.weight_shape)}")
    if mask.dtype != bool:
        mask = MaskSet({layer.name: mask})[layer.name]
    return mask


def _weight(mask: np.ndarray, like) -> torch.Tensor:
    # numpy's bool -> float cast is much faster than torch's on CPU
    dtype = np.float64 if like.dtype == torch.float64 else np.float32
    return torch.from_numpy(np.asarray(mask, dtype=dtype)).to(device=like.device, dtype=like.dtype)


def _ones(group, dtype, device):
    return torch.ones((1, group.channels) + tuple(group.size), dtype=dtype, device=device)


def _apply(x, w, layer: Layer):
    if layer.kind != "linear":
        return _conv(x, w, layer)
    if x.dim() == 2:
        return x @ w.T
    # a linear layer at every position: (1, I, *positions) -> (1, O, *positions)
    return (w @ x.reshape(x.shape[1], -1)).reshape((1, w.shape[0]) + tuple(x.shape[2:]))


def _blocks(layer: Layer, itemsize: int) -> list[slice]:
    """Blocks of output channels whose float weights hold at most BLOCK_BYTES each (one block
    for a grouped conv): masks stay bool, and only one block is ever a float copy."""
    n = layer.out_channels
    step = n if layer.groups > 1 else max(1, BLOCK_BYTES // max(1, layer.fan_in * itemsize))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def _available(device: torch.device) -> int | None:
    """Bytes of memory free for new tensors on `device` (None if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


@contextmanager
def _fits(layer: Layer, need: int, what: str, device: torch.device):
    """Raise a one-line GraphpaiError naming `layer` when `need` bytes cannot fit (checked before
    allocating, and if the allocation fails all the same)."""
    def error():
        free = _available(device)
        have = f"only {free / 2**30:.2f} GiB is free" if free is not None else "it does not fit"
        return GraphpaiError(
            f"layer {layer.name!r} (weight {tuple(layer.weight_shape)}) needs about "
            f"{need / 2**30:.2f} GiB for {what} on {device}, but {have}; free memory, run on a "
            "machine with more, or prune the layer to a smaller shape")

    free = _available(device)
    if free is not None and need > free:
        raise error()
    try:
        yield
    except (MemoryError, _OUT_OF_MEMORY):
        raise error() from None


def _layer_need(layer: Layer, x, graph: NetGraph, *, functional: bool) -> int:
    """Bytes a layer's step allocates: one float weight block (twice when its weight gradient is
    computed), the output map, and the bool functional mask."""
    block = _blocks(layer, x.element_size())[0]
    weight = (block.stop - block.start) * layer.fan_in * x.element_size()
    out = graph.groups[layer.target].numel * x.element_size()
    return weight * (2 if functional else 1) + 2 * out + (layer.numel if functional else 0)


def _layer_forward(x, mask, layer: Layer, graph: NetGraph):
    """The layer with its 0/1 mask as weights on `x`, block by block of output channels."""
    with _fits(layer, _layer_need(layer, x, graph, functional=False), "its forward map",
               x.device):
        blocks = _blocks(layer, x.element_size())
        if len(blocks) == 1:
            y = _apply(x, _weight(mask, x), layer)
        else:
            y = torch.cat([_apply(x, _weight(mask[b], x), layer) for b in blocks], dim=1)
    if layer.kind != "linear":
        _check_size(y, graph.groups[layer.target].size, f"layer {layer.name!r}")
    return y


def _layer_backward(g, x, mask, layer: Layer, graph: NetGraph):
    """(input gradient, functional mask) of `layer` for output map `g` at input map `x`."""
    functional = np.zeros(layer.weight_shape, dtype=bool)
    gi = None
    with _fits(layer, _layer_need(layer, x, graph, functional=True), "its functional weights",
               x.device):
        live = bool(x.any())
        positional = layer.kind == "linear" and x.dim() > 2
        x_np = _numpy(x) if layer.kind == "linear" and not positional else None
        x2 = x.reshape(x.shape[1], -1) if positional else None
        for b in _blocks(layer, x.element_size()):
            w = _weight(mask[b], x)
            if positional:  # the weight gradient sums over positions: (O_b, P) @ (P, I)
                gb = g[:, b].reshape(b.stop - b.start, -1)
                part = (w.T @ gb).reshape((1, x.shape[1]) + tuple(x.shape[2:]))
                functional[b] = mask[b] & ((gb @ x2.T) > 0.5).cpu().numpy()
            elif layer.kind == "linear":
                part = g[:, b] @ w
                functional[b] = mask[b] & _numpy(g[:, b])[:, None] & x_np[None, :]
            else:
                part, gw = _conv_backward(g[:, b], x, w, layer, need_input=True, need_weight=live)
                if live:
                    functional[b] = mask[b] & (gw > 0.5).cpu().numpy()
            gi = part if gi is None else gi + part
            del w
    return gi, functional


def _numpy(t) -> np.ndarray:
    return (t[0] > 0.5).cpu().numpy()


# ---------------------------------------------------------------------------------- API
def forward_maps(graph: NetGraph, masks=None, *, place: Callable | None = None, active=None,
                 device="cpu") -> dict[str, np.ndarray]:
    """0/1 forward activity map of every group, from an all-ones input (docs/definitions.md#functional).

    Parameters
    ----------
    graph : NetGraph
    masks : MaskSet or mapping, optional
        Layer name -> keep-mask; None (and no `place`) means dense.
    place : callable, optional
        ``place(layer, input_map) -> mask`` is called for every layer in topological order with
        the layer's :class:`~graphpai.graph.Layer` and the bool forward map of its input
        (``(C_in, *size)``, or ``(features,)`` for a linear layer); the returned bool array of the
        weight's shape is used as that layer's mask (masks then may be None). This lets a
        generator place a layer's edges knowing what reaches it ([MiCA]).
    active : mapping of str to array of bool, optional
        Group name -> ``(channels,)``: channels set active at every pixel once the group is
        computed (a bias, a BatchNorm shift), reached or not.
    device : str or torch.device
        Where the convolutions run.

    Returns
    -------
    dict of str to ndarray of bool
        Group name -> map of shape ``(channels, *size)``: True where some path of kept weights
        reaches that pixel (pools as "any input in the window active", adds as OR, concat as
        stack, flatten in PyTorch order).

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 1, (3,)), Group("y", 1, (3,))],
    ...              [Layer("c", "conv", (1, 1, 3), "x", "y", (1,), ((1, 1),), (1,),
    ...                     in_size=(3,), out_size=(3,))], [], ["x"], ["y"])
    >>> forward_maps(g, {"c": [[[1, 0, 0]]]})["y"]  # tap 0 reads the pixel on the left
    array([[False,  True,  True]])
    """
    masks = _checked_masks(graph, masks) if place is None else masks
    maps = _forward(graph, masks, place=place, active=check_active(graph, active),
                    device=_device(device))
    return {name: _numpy(t) for name, t in maps.items()}


def _force(y, channels):
    """`y` (1, C, *size) with the True `channels` set to 1 at every pixel."""
    index = torch.from_numpy(np.flatnonzero(channels)).to(y.device)
    y = y.clone()
    y[:, index] = 1
    return y


def _forward(graph, masks, *, place=None, active=None, device="cpu", dtype=torch.float32):
    """Binary forward pass; returns group -> (1, C, *size) 0/1 tensor (masks and `active`
    already checked)."""
    active = active or {}
    maps = {name: _ones(graph.groups[name], dtype, device) for name in graph.inputs}
    with torch.no_grad(), _exact(torch.device(device)):
        for op in graph.order:
            if isinstance(op, Layer):
                x = maps[op.source]
                mask = _placed(op, place(op, _numpy(x))) if place is not None else _mask(op, masks)
                y = _binary(_layer_forward(x, mask, op, graph))
            else:
                y = _binary(_link_forward([maps[s] for s in op.sources], op, graph))
            maps[op.target] = _force(y, active[op.target]) if op.target in active else y
    return maps


def active_fan_in(layer: Layer, input_map) -> np.ndarray:
    """Which fan-in positions of `layer` can see an active input pixel (docs/definitions.md#graph, #functional).

    Position ``c*kh*kw + a*kw + b`` (the order of ``weight.reshape(C_out, -1)[o]``) is active iff
    some output pixel ``p`` reads an active input pixel at that tap, inside the image:
    ``input_map[c, p*stride + (a, b)*dilation - padding] = 1`` (padding-exact).

    Parameters
    ----------
    layer : Layer
    input_map : array-like of bool
        The forward map of the layer's input, ``(C_in, *in_size)`` (a linear layer: ``(features,)``).

    Returns
    -------
    ndarray of bool
        Shape ``(fan_in,)`` when ``layer.groups == 1`` (a linear layer: the input map itself);
        shape ``(groups, fan_in)`` for a grouped conv, row ``k`` for the outputs of group ``k``
        (output ``o`` is in group ``o // (C_out // groups)``).

    Examples
    --------
    >>> from graphpai.graph import Layer
    >>> conv = Layer("c", "conv", (1, 1, 3), "x", "y", (1,), ((1, 1),), (1,),
    ...              in_size=(2,), out_size=(2,))
    >>> active_fan_in(conv, [[False, True]])  # tap 0 sees only padding or the inactive pixel 0
    array([False,  True,  True])
    """
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(input_map, dtype=bool))).to(torch.float32)
    if layer.kind == "linear":
        expected = (layer.weight_shape[1],) + tuple(layer.in_size)
        if tuple(x.shape) != expected:
            raise GraphpaiError(f"input map of {layer.name!r} has shape {tuple(x.shape)}, "
                                f"expected {expected}")
        return x.reshape(x.shape[0], -1).numpy().max(axis=1) > 0.5
    expected = (layer.in_channels,) + tuple(layer.in_size)
    if tuple(x.shape) != expected:
        raise GraphpaiError(f"input map of {layer.name!r} has shape {tuple(x.shape)}, "
                            f"expected {expected}")
    kernel = layer.kernel
    w = torch.ones((layer.groups, layer.weight_shape[1]) + kernel)
    out = _conv(x[None], w, layer)  # only the output size matters
    g = torch.ones_like(out)
    with torch.no_grad():
        _, gw = _conv_backward(g, x[None], w, layer, need_input=False, need_weight=True)
    active = (gw > 0.5).reshape(layer.groups, -1).numpy()
    return active[0] if layer.groups == 1 else active


def activity(graph: NetGraph, masks=None, *, active=None, device="cpu") -> Activity:
    """Forward maps, backward maps and the functional weights in one pass (docs/definitions.md#functional).

    The functional mask of a conv is ``mask & (grad_weight(f_in, g_out) > 0)``; of a linear
    layer ``mask & g_out[:, None] & f_in[None, :]``. See the module docstring for the algorithm;
    `active` as in :func:`forward_maps`.

    Examples
    --------
    On a one-pixel map a 3-tap conv with padding 1 reads only padding at its side taps: the
    channel graph calls all three taps functional, the exact spatial test only the centre one.

    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 1, (1,)), Group("y", 1, (1,))],
    ...              [Layer("c", "conv", (1, 1, 3), "x", "y", (1,), ((1, 1),), (1,),
    ...                     in_size=(1,), out_size=(1,))], [], ["x"], ["y"])
    >>> activity(g).functional["c"].astype(int).tolist()
    [[[0, 1, 0]]]
    """
    masks = _checked_masks(graph, masks)
    active = check_active(graph, active)
    device = _device(device)
    with torch.no_grad(), _exact(device):
        f = _forward(graph, masks, active=active, device=device)
        g = {name: _ones(graph.groups[name], torch.float32, device) for name in graph.outputs}
        functional = {}
        for op in reversed(graph.order):
            gt = g.get(op.target)
            if gt is not None and not bool(gt.any()):
                gt = None
            if isinstance(op, Layer):
                mask = _mask(op, masks)
                if gt is None or not mask.any():  # nothing reaches the logits through it
                    functional[op.name] = np.zeros(op.weight_shape, dtype=bool)
                    continue
                gi, functional[op.name] = _layer_backward(gt, f[op.source], mask, op, graph)
                gis, sources = [gi], [op.source]
            else:
                if gt is None:
                    continue
                sources = list(op.sources)
                gis = _link_transpose(gt, [tuple(f[s].shape) for s in sources], op, graph,
                                      xs=[f[s] for s in sources])
            for source, gi in zip(sources, gis):
                gi = _binary(gi)
                g[source] = gi if source not in g else torch.maximum(g[source], gi)
        for name, group in graph.groups.items():
            if name not in g:
                g[name] = torch.zeros((1, group.channels) + tuple(group.size))
    return Activity(
        forward={name: _numpy(t) for name, t in f.items()},
        backward={name: _numpy(g[name]) for name in graph.groups},
        functional={name: functional[name] for name in getattr(graph, "uses", graph.layers)},
    )


def backward_maps(graph: NetGraph, masks=None, *, device="cpu") -> dict[str, np.ndarray]:
    """0/1 backward map of every group, from all-ones at the logits (docs/definitions.md#functional): True where some
    path of kept weights leads from that pixel to a logit.

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 1, (3,)), Group("y", 1, (3,))],
    ...              [Layer("c", "conv", (1, 1, 3), "x", "y", (1,), ((1, 1),), (1,),
    ...                     in_size=(3,), out_size=(3,))], [], ["x"], ["y"])
    >>> backward_maps(g, {"c": [[[1, 0, 0]]]})["x"]  # tap 0: output p reads pixel p - 1
    array([[ True,  True, False]])
    """
    return activity(graph, masks, device=device).backward


def functional_masks(graph: NetGraph, masks=None, *, device="cpu") -> dict[str, np.ndarray]:
    """Layer name -> bool mask of the spatially functional weights (docs/definitions.md#functional)."""
    return activity(graph, masks, device=device).functional


def _counting(graph: NetGraph, mask_of: Callable, *, device, pool=_pool_sum,
              bias_ones: bool = False) -> dict:
    """The counting forward pass of the all-ones network in float64, renormalised per op:
    group -> (1, C, *size) tensor and log10 scale; ``mask_of(layer, x, scale)`` gives each
    layer's mask from its input (in topological order)."""
    state = {name: (_ones(graph.groups[name], torch.float64, device), 0.0)
             for name in graph.inputs}
    with torch.no_grad():
        for op in graph.order:
            if isinstance(op, Layer):
                x, scale = state[op.source]
                y = _layer_forward(x, mask_of(op, x, scale), op, graph)
                if bias_ones and op.bias:
                    if scale == -math.inf:
                        y, scale = torch.ones_like(y), 0.0
                    else:
                        y = y + 10.0 ** (-scale)
            else:
                xs, scale = common_scale([state[s] for s in op.sources])
                y = _link_forward(xs, op, graph, pool=pool, counting=True)
            state[op.target] = renormalise(y, scale)
    return state


def log10_paths(graph: NetGraph, masks=None, *, bias_ones: bool = False,
                reference_pools: bool = False, device="cpu") -> float:
    """log10 of the number of input-output paths of the unrolled all-ones network (docs/definitions.md#paths).

    Every kept weight is 1, biases 0, BN removed, ReLU ignored, pools sum over their window.
    ``bias_ones``: biases 1 on layers that have one; ``reference_pools``: max pools take the max,
    functional average pools divide ([NPB]'s conventions, ``profile="npb"`` of
    :func:`graphpai.paths.effective_paths`). Computed in float64 with per-op renormalisation
    (the number format of :mod:`graphpai.engine`), so no depth overflows. Returns ``-inf`` when
    no path exists.

    Examples
    --------
    A dense 3-tap conv with padding 1 on 3 pixels: the outputs read 2, 3 and 2 input pixels.

    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 1, (3,)), Group("y", 1, (3,))],
    ...              [Layer("c", "conv", (1, 1, 3), "x", "y", (1,), ((1, 1),), (1,),
    ...                     in_size=(3,), out_size=(3,))], [], ["x"], ["y"])
    >>> round(10 ** log10_paths(g))
    7
    >>> log10_paths(g, {"c": [[[0, 0, 0]]]})
    -inf
    """
    masks = _checked_masks(graph, masks)
    state = _counting(graph, lambda op, x, scale: _mask(op, masks), device=_device(device),
                      pool=_pool_reference if reference_pools else _pool_sum,
                      bias_ones=bias_ones)
    with torch.no_grad():
        ys, scale = common_scale([state[name] for name in graph.outputs])
        total = float(sum(float(y.sum()) for y in ys))
    if total <= 0 or scale == -math.inf:
        return -math.inf
    return math.log10(total) + scale


def _channel_sums(x, scale: float):
    """(1, C, *size) or (1, F) tensor with its log10 scale -> per-channel sums over the pixels,
    as float64 numpy values with max 1 and a scale (the number format of graphpai.engine)."""
    sums = x[0].reshape(x.shape[1], -1).sum(dim=1) if x.dim() > 2 else x[0]
    return renormalise(sums.cpu().numpy().astype(np.float64), scale)


def path_mass(graph: NetGraph, masks=None, *, place: Callable | None = None,
              device="cpu") -> dict[str, tuple[np.ndarray, float]]:
    """Per channel of every group, the number of paths reaching it, summed over its pixels
    (docs/definitions.md#paths; [NPB]'s path mass).

    The counting forward pass of :func:`log10_paths` (default conventions: all-ones input and
    weights, biases 0, pools summing over their window, float64, renormalised per op): entry c
    of group G is the sum over the pixels p of G's channel c of the number of paths from any
    input pixel to (c, p). ``place(layer, (values, scale)) -> mask``, where given, is called for
    every layer in topological order with the mass at the layer's input (computed from the masks
    placed so far: everything upstream of a layer comes before it in the order) and returns that
    layer's mask, as in :func:`forward_maps`.

    Returns
    -------
    dict of str to (ndarray of float64, float)
        Group name -> ``(values, scale)``: the masses are ``values * 10**scale`` (values of shape
        ``(channels,)``, max 1; all zero and ``-inf`` when nothing reaches the group).

    Examples
    --------
    A dense 3-tap conv with padding 1 on 3 pixels: 2 + 3 + 2 paths reach the output channel.

    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> g = NetGraph([Group("x", 1, (3,)), Group("y", 1, (3,))],
    ...              [Layer("c", "conv", (1, 1, 3), "x", "y", (1,), ((1, 1),), (1,),
    ...                     in_size=(3,), out_size=(3,))], [], ["x"], ["y"])
    >>> values, scale = path_mass(g)["y"]
    >>> round(float(values[0]) * 10 ** scale)
    7
    """
    masks = _checked_masks(graph, masks) if place is None else masks

    def mask_of(op, x, scale):
        if place is None:
            return _mask(op, masks)
        return _placed(op, place(op, _channel_sums(x, scale)))

    state = _counting(graph, mask_of, device=_device(device))
    return {name: _channel_sums(x, scale) for name, (x, scale) in state.items()}
