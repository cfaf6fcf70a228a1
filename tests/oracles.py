"""Naive reference implementations the tests compare graphpai against.

Each oracle is written from the definition in SPEC.md, as directly as possible (Python loops,
explicit graphs, autograd), and shares no code with the implementation it checks. Others may
append their own oracles below; keep each one independent.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from math import prod

import numpy as np

# ---------------------------------------------------------------------------------------------
# Unrolled pixel graph (SPEC §3, §4): every (group, channel, pixel) is a node; a kept conv tap
# connects input pixel q = p*stride + tap*dilation - padding_before (inside the image) to output
# pixel p; a pool connects every pixel of a window to the window's output pixel (PyTorch's window
# grid); add, concat and flatten connect pixels one to one. Written with loops, for tiny nets.
# ---------------------------------------------------------------------------------------------


def _pixels(size):
    return list(itertools.product(*[range(n) for n in size]))


class UnrolledGraph:
    """The spatially unrolled network as explicit adjacency lists (parallel edges kept).

    ``succ[node]`` lists ``(next_node, weight_id)``; ``weight_id`` is ``(layer, index tuple)`` for a
    layer edge and None for a link edge.
    """

    def __init__(self, graph, masks=None):
        self.graph = graph
        self.succ = defaultdict(list)
        self.pred = defaultdict(list)
        for op in graph.order:
            if hasattr(op, "weight_shape"):
                self._layer(op, None if masks is None else np.asarray(masks[op.name], dtype=bool))
            else:
                self._link(op)

    def _edge(self, a, b, wid=None):
        self.succ[a].append((b, wid))
        self.pred[b].append((a, wid))

    def _layer(self, layer, mask):
        g = self.graph
        shape = layer.weight_shape
        mask = np.ones(shape, dtype=bool) if mask is None else mask
        c_out, c_in_g = shape[:2]
        per_group = c_out // layer.groups
        if layer.kind == "linear":
            for o in range(c_out):
                for i in range(c_in_g):
                    if mask[o, i]:
                        self._edge((layer.source, i, ()), (layer.target, o, ()), (layer.name, (o, i)))
            return
        in_size = g.groups[layer.source].size
        out_size = g.groups[layer.target].size
        for o in range(c_out):
            group = o // per_group
            for i_local in range(c_in_g):
                i = group * c_in_g + i_local
                for tap in _pixels(layer.kernel):
                    if not mask[(o, i_local) + tap]:
                        continue
                    for p in _pixels(out_size):
                        q = tuple(p[d] * layer.stride[d] + tap[d] * layer.dilation[d]
                                  - layer.padding[d][0] for d in range(len(p)))
                        if all(0 <= q[d] < in_size[d] for d in range(len(q))):
                            self._edge((layer.source, i, q), (layer.target, o, p),
                                       (layer.name, (o, i_local) + tap))

    def _windows(self, link, in_size, out_size):
        """Output pixel -> list of input pixels of its pooling window (PyTorch's definition)."""
        params = link.params
        if not out_size:
            return {(): _pixels(in_size)}
        per_dim = []
        for d, (length, target) in enumerate(zip(in_size, out_size)):
            rows = []
            for p in range(target):
                if params.get("adaptive"):
                    start = (p * length) // target
                    end = -((-(p + 1) * length) // target)
                    rows.append(list(range(start, end)))
                else:
                    k = params["kernel"][d]
                    s = (params.get("stride") or params["kernel"])[d]
                    dil = (params.get("dilation") or (1,) * len(in_size))[d]
                    pad = (params.get("padding") or ((0, 0),) * len(in_size))[d][0]
                    rows.append([p * s - pad + j * dil for j in range(k)
                                 if 0 <= p * s - pad + j * dil < length])
            per_dim.append(rows)
        return {p: list(itertools.product(*[per_dim[d][p[d]] for d in range(len(p))]))
                for p in _pixels(out_size)}

    def _link(self, link):
        g = self.graph
        tgt = g.groups[link.target]
        if link.kind == "pool":
            src = g.groups[link.sources[0]]
            windows = self._windows(link, src.size, tgt.size)
            for c in range(src.channels):
                for p, window in windows.items():
                    for q in window:
                        self._edge((src.name, c, q), (tgt.name, c, p))
        elif link.kind == "add":
            for name in link.sources:
                src = g.groups[name]
                for c in range(src.channels):
                    for p in _pixels(src.size):
                        self._edge((name, c, p), (tgt.name, c, p))
        elif link.kind == "concat":
            offset = 0
            for name in link.sources:
                src = g.groups[name]
                for c in range(src.channels):
                    for p in _pixels(src.size):
                        self._edge((name, c, p), (tgt.name, offset + c, p))
                offset += src.channels
        elif link.kind == "flatten":
            src = g.groups[link.sources[0]]
            pixels = _pixels(src.size)
            for c in range(src.channels):
                for k, p in enumerate(pixels):
                    self._edge((src.name, c, p), (tgt.name, c * len(pixels) + k, ()))
        else:
            raise ValueError(link.kind)

    def nodes_of(self, names):
        g = self.graph
        return [(name, c, p) for name in names for c in range(g.groups[name].channels)
                for p in _pixels(g.groups[name].size)]

    def _search(self, starts, adjacency):
        seen = set(starts)
        stack = list(starts)
        while stack:
            node = stack.pop()
            for nxt, _ in adjacency.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def forward_reach(self):
        return self._search(self.nodes_of(self.graph.inputs), self.succ)

    def backward_reach(self):
        return self._search(self.nodes_of(self.graph.outputs), self.pred)

    def maps(self, reached):
        """Group name -> bool map (channels, *size) of the reached nodes."""
        out = {}
        for name, group in self.graph.groups.items():
            m = np.zeros((group.channels,) + tuple(group.size), dtype=bool)
            for c in range(group.channels):
                for p in _pixels(group.size):
                    m[(c,) + p] = (name, c, p) in reached
            out[name] = m
        return out

    def functional(self):
        """Layer -> bool mask: kept weights on an edge from a forward- to a backward-reached pixel."""
        fwd, bwd = self.forward_reach(), self.backward_reach()
        out = {name: np.zeros(layer.weight_shape, dtype=bool)
               for name, layer in self.graph.layers.items()}
        for a, edges in self.succ.items():
            if a not in fwd:
                continue
            for b, wid in edges:
                if wid is not None and b in bwd:
                    out[wid[0]][wid[1]] = True
        return out

    def count_paths(self, limit=2_000_000):
        """Brute force: walk every input-to-output path one at a time (no memoisation)."""
        outputs = set(self.nodes_of(self.graph.outputs))
        count = 0
        stack = list(self.nodes_of(self.graph.inputs))
        while stack:
            node = stack.pop()
            if node in outputs:
                count += 1
                if count > limit:
                    raise RuntimeError("too many paths for brute force")
            stack.extend(nxt for nxt, _ in self.succ.get(node, ()))
        return count


def naive_active_fan_in(layer, input_map):
    """Loop version of SPEC §2/§3's active fan-in positions of a conv (groups == 1)."""
    input_map = np.asarray(input_map, dtype=bool)
    c_in = layer.weight_shape[1]
    out = np.zeros((c_in,) + tuple(layer.kernel), dtype=bool)
    for c in range(c_in):
        for tap in _pixels(layer.kernel):
            for p in _pixels(layer.out_size):
                q = tuple(p[d] * layer.stride[d] + tap[d] * layer.dilation[d]
                          - layer.padding[d][0] for d in range(len(p)))
                if all(0 <= q[d] < layer.in_size[d] for d in range(len(q))) and input_map[(c,) + q]:
                    out[(c,) + tap] = True
    return out.reshape(-1)


# ---------------------------------------------------------------------------------------------
# [VK] gradient test on the real torch model (SPEC §3): linearise the model with torch.fx (BN,
# ReLU, dropout removed; max pools replaced by average pools, a positive multiple of the sum;
# biases 0; weights |w| * mask in float64), R = sum(f(1)), functional iff dR/dw != 0.
# ---------------------------------------------------------------------------------------------


def vk_functional(model, masks, input_shape, *, rescale=True):
    """Layer name -> bool: kept weights with dR/dw != 0 in the linearised float64 model.

    With `rescale`, each layer's |w| is divided by its largest per-output sum: this only scales
    R's terms by positive constants (the zero pattern of dR/dw is unchanged) and keeps dense deep
    models far from float64 overflow.
    """
    import copy

    import torch
    import torch.fx as fx
    import torch.nn as nn
    import torch.nn.functional as F

    model = copy.deepcopy(model).double().eval()
    gm = fx.symbolic_trace(model)
    identity_modules = (nn.modules.batchnorm._NormBase, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
                        nn.modules.dropout._DropoutNd, nn.Identity, nn.Softmax, nn.LogSoftmax)
    identity_functions = {F.relu, torch.relu, F.relu6, F.dropout, F.leaky_relu}
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, identity_modules):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
            elif isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
                # a positive multiple of the window sum: the zero pattern of dR/dw is the same
                nd = 2 if isinstance(module, nn.MaxPool2d) else 1
                if module.dilation not in (1, (1,) * nd):
                    raise NotImplementedError("dilated max pools")
                cls = nn.AvgPool2d if nd == 2 else nn.AvgPool1d
                _replace_module(gm, node, cls(module.kernel_size, module.stride, module.padding,
                                              ceil_mode=module.ceil_mode))
            elif isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
                nd = 2 if "2d" in type(module).__name__ else 1
                cls = nn.AdaptiveAvgPool2d if nd == 2 else nn.AdaptiveAvgPool1d
                _replace_module(gm, node, cls(module.output_size))
        elif node.op in ("call_function", "call_method"):
            if node.target in (F.max_pool1d, F.max_pool2d, F.adaptive_max_pool1d,
                               F.adaptive_max_pool2d):
                node.target = _AVG_FOR_MAX[node.target.__name__]
            elif node.target in identity_functions or node.target in ("relu", "relu_"):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    weights = {}
    with torch.no_grad():
        for name, module in gm.named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m = torch.as_tensor(np.asarray(masks[name], dtype=bool))
                w = module.weight.abs() * m
                if rescale:
                    top = w.reshape(w.shape[0], -1).sum(1).max()
                    if top > 0:
                        w = w / top
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.zero_()
                weights[name] = module.weight
    x = torch.ones((1,) + tuple(input_shape), dtype=torch.float64)
    r = gm(x).sum()
    names = list(weights)
    grads = torch.autograd.grad(r, [weights[n] for n in names], allow_unused=True)
    out = {}
    for name, grad in zip(names, grads):
        kept = np.asarray(masks[name], dtype=bool)
        if grad is None:
            out[name] = np.zeros_like(kept)
        else:
            out[name] = kept & (grad.detach().numpy() != 0)
    return out


def _avg_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
              return_indices=False):
    import torch.nn.functional as F

    assert dilation in (1, (1,) * (x.dim() - 2)) and not return_indices
    fn = F.avg_pool2d if x.dim() == 4 else F.avg_pool1d
    return fn(x, kernel_size, stride, padding, ceil_mode=ceil_mode)


def _adaptive_avg_pool(x, output_size, return_indices=False):
    import torch.nn.functional as F

    fn = F.adaptive_avg_pool2d if x.dim() == 4 else F.adaptive_avg_pool1d
    return fn(x, output_size)


_AVG_FOR_MAX = {"max_pool1d": _avg_pool, "max_pool2d": _avg_pool, "_max_pool1d": _avg_pool,
                "_max_pool2d": _avg_pool, "adaptive_max_pool1d": _adaptive_avg_pool,
                "adaptive_max_pool2d": _adaptive_avg_pool,
                "_adaptive_max_pool1d": _adaptive_avg_pool, "_adaptive_max_pool2d": _adaptive_avg_pool}


def _replace_module(gm, node, new_module):
    name = node.target.replace(".", "_") + "_linearised"
    gm.add_submodule(name, new_module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, node.args, node.kwargs)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
