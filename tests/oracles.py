"""Naive reference implementations the tests compare graphpai against.

Each oracle is written from the definition in docs/definitions.md, as directly as possible (Python loops,
explicit graphs, autograd), and shares no code with the implementation it checks. Others may
append their own oracles below; keep each one independent.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np

# ---------------------------------------------------------------------------------------------
# Unrolled pixel graph (docs/definitions.md#functional, #paths): every (group, channel, pixel) is a
# node; a kept conv tap
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
    """Loop version of docs/definitions.md#graph, #functional's active fan-in positions of a conv
    (groups == 1)."""
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
# Linearised torch model (docs/definitions.md#functional, #paths): rewrite the real model with
# torch.fx (BN, ReLU, dropout
# removed; weights replaced; biases set) and evaluate R = sum(f(1)) in float64.
# - [VK] gradient test: weights |w| * mask, biases 0, max pools -> average pools (a positive
#   multiple of the window sum, so the zero pattern of dR/dw is that of the sum); functional iff
#   dR/dw != 0.
# - path count: weights = mask, biases 0, every pool an exact window sum (loops below);
#   profile "npb": biases 1, max pools kept, average-pool modules summed, functional average
#   pools kept (they divide).
# ---------------------------------------------------------------------------------------------


def _pool_out(length, k, s, p, d, ceil_mode):
    """PyTorch's pooling output length."""
    num = length + 2 * p - d * (k - 1) - 1
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= length + p:
        out -= 1
    return out


def _window_sum(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, **_):
    """Sum over PyTorch's pooling windows, by loops over output pixels."""
    import torch

    nd = x.dim() - 2
    tup = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)  # noqa: E731
    k, p, d = tup(kernel_size), tup(padding), tup(dilation)
    s = tup(stride) if stride not in (None, (), []) else k
    sizes = x.shape[2:]
    outs = [_pool_out(sizes[i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(nd)]
    windows = [[[o * s[i] - p[i] + j * d[i] for j in range(k[i])
                 if 0 <= o * s[i] - p[i] + j * d[i] < sizes[i]] for o in range(outs[i])]
               for i in range(nd)]
    y = torch.zeros(x.shape[:2] + tuple(outs), dtype=x.dtype)
    for pix in itertools.product(*[range(n) for n in outs]):
        part = x
        for i in range(nd):
            part = part.index_select(2 + i, torch.tensor(windows[i][pix[i]], dtype=torch.long))
        y[(slice(None), slice(None)) + pix] = part.sum(dim=tuple(range(2, 2 + nd)))
    return y


def _adaptive_sum(x, output_size, **_):
    import torch

    nd = x.dim() - 2
    outs = (output_size,) * nd if isinstance(output_size, int) else tuple(output_size)
    outs = tuple(x.shape[2 + i] if o is None else o for i, o in enumerate(outs))
    y = torch.zeros(x.shape[:2] + outs, dtype=x.dtype)
    for pix in itertools.product(*[range(n) for n in outs]):
        part = x
        for i in range(nd):
            n = x.shape[2 + i]
            lo, hi = (pix[i] * n) // outs[i], -((-(pix[i] + 1) * n) // outs[i])
            part = part.narrow(2 + i, lo, hi - lo)
        y[(slice(None), slice(None)) + pix] = part.sum(dim=tuple(range(2, 2 + nd)))
    return y


def _mean_as_sum(x, dim=None, keepdim=False, **_):
    return x.sum(dim=dim, keepdim=keepdim)


def linearise(model, masks, *, weights="abs", pools="avg", bias=0.0, rescale=False):
    """The model as a float64 linear fx GraphModule (see the comment above); returns
    (module, {layer name: weight parameter})."""
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
    max_modules = (nn.MaxPool1d, nn.MaxPool2d)
    avg_modules = (nn.AvgPool1d, nn.AvgPool2d)
    adaptive_max = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
    adaptive_avg = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, identity_modules):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                continue
            summed = (pools == "sum" and isinstance(module, max_modules + avg_modules)) or (
                pools == "npb" and isinstance(module, avg_modules))
            adaptive_summed = (pools == "sum" and isinstance(module, adaptive_max + adaptive_avg)) or (
                pools == "npb" and isinstance(module, adaptive_avg))
            if summed:
                _to_function(gm, node, _window_sum, kernel_size=module.kernel_size,
                             stride=module.stride, padding=module.padding,
                             dilation=getattr(module, "dilation", 1), ceil_mode=module.ceil_mode)
            elif adaptive_summed:
                _to_function(gm, node, _adaptive_sum, output_size=module.output_size)
            elif pools == "avg" and isinstance(module, max_modules):
                nd = 2 if isinstance(module, nn.MaxPool2d) else 1
                if module.dilation not in (1, (1,) * nd):
                    raise NotImplementedError("dilated max pools")
                cls = nn.AvgPool2d if nd == 2 else nn.AvgPool1d
                _replace_module(gm, node, cls(module.kernel_size, module.stride, module.padding,
                                              ceil_mode=module.ceil_mode))
            elif pools == "avg" and isinstance(module, adaptive_max):
                cls = nn.AdaptiveAvgPool2d if "2d" in type(module).__name__ else nn.AdaptiveAvgPool1d
                _replace_module(gm, node, cls(module.output_size))
        elif node.op in ("call_function", "call_method"):
            name = getattr(node.target, "__name__", node.target)
            if node.target in identity_functions or node.target in ("relu", "relu_"):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
            elif pools == "avg" and name in _AVG_FOR_MAX:
                node.target = _AVG_FOR_MAX[name]
            elif pools == "sum" and name in ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
                                             "_max_pool1d", "_max_pool2d"):
                node.target = _window_sum
            elif pools == "sum" and "adaptive" in str(name):
                node.target = _adaptive_sum
            elif pools == "sum" and name in ("mean", "amax"):
                node.target = _mean_as_sum
                if node.op == "call_method":
                    node.op = "call_function"
    gm.graph.lint()
    gm.recompile()
    params = {}
    with torch.no_grad():
        for name, module in gm.named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m = torch.as_tensor(np.asarray(masks[name], dtype=bool))
                w = module.weight.abs() * m if weights == "abs" else m.double()
                if rescale:
                    top = w.reshape(w.shape[0], -1).sum(1).max()
                    if top > 0:
                        w = w / top
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.fill_(bias)
                params[name] = module.weight
    return gm, params


def vk_functional(model, masks, input_shape, *, rescale=True):
    """Layer name -> bool: kept weights with dR/dw != 0 in the linearised float64 model.

    With `rescale`, each layer's |w| is divided by its largest per-output sum: this only scales
    R's terms by positive constants (the zero pattern of dR/dw is unchanged) and keeps dense deep
    models far from float64 overflow.
    """
    import torch

    gm, weights = linearise(model, masks, weights="abs", pools="avg", rescale=rescale)
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
            assert torch.isfinite(grad).all(), f"float64 overflow in {name}"
            out[name] = kept & (grad.detach().numpy() != 0)
    return out


def linearised_log10_paths(model, masks, input_shape, *, profile="default"):
    """log10 of R = sum(f(1)) of the model with kept weights 1 (docs/definitions.md#paths), plain
    float64."""
    import torch

    pools, bias = ("npb", 1.0) if profile == "npb" else ("sum", 0.0)
    gm, _ = linearise(model, masks, weights="ones", pools=pools, bias=bias)
    with torch.no_grad():
        r = float(gm(torch.ones((1,) + tuple(input_shape), dtype=torch.float64)).sum())
    assert np.isfinite(r), "float64 overflow"
    return float(np.log10(r)) if r > 0 else -np.inf


def _to_function(gm, node, fn, **kwargs):
    with gm.graph.inserting_after(node):
        new = gm.graph.call_function(fn, (node.args[0],), kwargs)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


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


# ---------------------------------------------------------------------------------------------
# Channel graph with networkx (docs/definitions.md#graph, #functional): nodes (group, channel); an
# edge (i -> o) per layer
# where kernel (o, i) keeps a tap (with the number of kept taps as multiplicity), and link edges
# per docs/definitions.md#graph. Reach = descendants of the input channels, co-reach = ancestors of
# the logits.
# ---------------------------------------------------------------------------------------------


def channel_multigraph(graph, masks, attributes=True):
    """networkx MultiDiGraph of channels; layer edges carry ``layer`` and ``count`` (kept taps).
    With `attributes` False: a plain DiGraph without attributes (faster, for reachability)."""
    import networkx as nx

    g = nx.MultiDiGraph() if attributes else nx.DiGraph()
    for name, group in graph.groups.items():
        g.add_nodes_from((name, c) for c in range(group.channels))
    for op in graph.order:
        if hasattr(op, "weight_shape"):
            mask = np.asarray(masks[op.name], dtype=bool)
            c_out, c_in_g = op.weight_shape[:2]
            counts = mask.reshape(c_out, c_in_g, -1).sum(axis=2)
            outs, ins = np.nonzero(counts)
            group_base = (outs // (c_out // op.groups)) * c_in_g
            if attributes:
                g.add_edges_from(((op.source, int(gb + i)), (op.target, int(o)),
                                  {"layer": op.name, "count": int(counts[o, i])})
                                 for o, i, gb in zip(outs, ins, group_base))
            else:
                g.add_edges_from(zip(zip([op.source] * len(outs), (group_base + ins).tolist()),
                                     zip([op.target] * len(outs), outs.tolist())))
        else:
            tgt = graph.groups[op.target]
            offset = 0
            for name in op.sources:
                src = graph.groups[name]
                per = int(np.prod(src.size)) if op.kind == "flatten" else 1
                for c in range(src.channels):
                    if op.kind == "flatten":
                        targets = range(c * per, (c + 1) * per)
                    elif op.kind == "concat":
                        targets = [offset + c]
                    else:
                        targets = [c]
                    for t in targets:
                        if attributes:
                            g.add_edge((name, c), (tgt.name, t), count=1)
                        else:
                            g.add_edge((name, c), (tgt.name, t))
                offset += src.channels
    return g


def networkx_functional(graph, masks):
    """Layer -> bool: kept weights whose input channel is reachable from the input and whose
    output channel reaches a logit (networkx reachability on the channel graph, with a virtual
    source before the input channels and a virtual sink after the logits)."""
    import networkx as nx

    g = channel_multigraph(graph, masks, attributes=False)
    source, sink = ("<source>", 0), ("<sink>", 0)
    g.add_edges_from((source, (name, c)) for name in graph.inputs
                     for c in range(graph.groups[name].channels))
    g.add_edges_from(((name, c), sink) for name in graph.outputs
                     for c in range(graph.groups[name].channels))
    reached = nx.descendants(g, source)
    coreached = nx.ancestors(g, sink)
    out = {}
    for op in graph.layers.values():
        c_out, c_in_g = op.weight_shape[:2]
        r = np.array([(op.source, i) in reached for i in range(op.in_channels)])
        c = np.array([(op.target, o) in coreached for o in range(c_out)])
        group = np.arange(c_out) // (c_out // op.groups)
        r_per_out = r.reshape(op.groups, c_in_g)[group]  # (c_out, c_in_g)
        ok = (r_per_out & c[:, None]).reshape((c_out, c_in_g) + (1,) * (len(op.weight_shape) - 2))
        out[op.name] = np.asarray(masks[op.name], dtype=bool) & ok
    return out, reached, coreached


def exact_channel_paths(graph, masks):
    """1^T (prod of multiplicity matrices) 1 as an exact Python int (DP over a topological order
    of the networkx channel multigraph)."""
    import networkx as nx

    g = channel_multigraph(graph, masks)
    count = {}
    starts = {(name, c) for name in graph.inputs for c in range(graph.groups[name].channels)}
    for node in nx.topological_sort(g):
        total = 1 if node in starts else 0
        for pred, _, data in g.in_edges(node, data=True):
            total += count[pred] * data["count"]
        count[node] = total
    return sum(count[(name, c)] for name in graph.outputs for c in range(graph.groups[name].channels))


# ---------------------------------------------------------------------------------------------
# Spectral quantities (docs/definitions.md#spectral) from their definitions: dense numpy SVD,
# explicit loops over
# nodes and degree groups, the gates written out literally. Shares no code with graphpai.spectral.
# ---------------------------------------------------------------------------------------------


def dense_top_singular_values(matrix, k=2):
    """The k largest singular values by numpy's dense SVD, padded with zeros."""
    a = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix, dtype=float)
    values = np.linalg.svd(a, compute_uv=False) if a.size else np.zeros(0)
    out = np.zeros(k)
    out[: min(k, len(values))] = values[:k]
    return out


def _spectral_gate(profile, d_l, d_r):
    if profile == "iclr23":
        return d_l >= 3 and d_r >= 3
    if profile == "neurips23":
        return d_r >= 3 and d_l > 1
    if profile == "fs-subgraph":
        return d_l >= 3 and d_r > 1
    raise ValueError(profile)


def _bipartite(a):
    """(n_l, n_r, E, sigma_1, sigma_2) of a matrix after dropping empty rows/columns by loops."""
    rows = [i for i in range(a.shape[0]) if any(a[i, j] != 0 for j in range(a.shape[1]))]
    cols = [j for j in range(a.shape[1]) if any(a[i, j] != 0 for i in range(a.shape[0]))]
    edges = sum(1 for i in rows for j in cols if a[i, j] != 0)
    s1, s2 = dense_top_singular_values(a[np.ix_(rows, cols)]) if edges else (0.0, 0.0)
    return len(rows), len(cols), edges, s1, s2


def naive_layer_spectrum(b, x=None, *, profile="iclr23"):
    """Every docs/definitions.md#spectral quantity of one layer, as a dict (None = not scored).

    `b` is the 0/1 fan-in biadjacency (n_in x n_out), `x` the weighted |W * M| or None.
    """
    b = np.asarray(b.toarray() if hasattr(b, "toarray") else b, dtype=float)
    n_in, n_out = b.shape
    out = {}
    n_l, n_r, E, s1, s2 = _bipartite(b)
    out.update(n_l=n_l, n_r=n_r, E=E, sigma_1=s1 if E else None, sigma_2=s2 if E else None)
    d_l = E / n_l if E else None
    d_r = E / n_r if E else None
    out.update(d_L=d_l, d_R=d_r)
    scored = E > 0 and _spectral_gate(profile, d_l, d_r)
    bound = (d_l - 1) ** 0.5 + (d_r - 1) ** 0.5 if E else None
    out["delta_r"] = bound - s2 if scored else None
    out["delta_r_norm"] = (bound - s2) / bound if scored else None
    canon = 2 * (s1 - 1) ** 0.5 if E else None
    out["delta_s"] = canon - s2 if scored else None
    out["delta_s_norm"] = (canon - s2) / canon if scored else None
    out["narc"] = (((s2 ** 2 / 4 + 1) * (n_l * n_r) ** 0.5 - abs(2 * E - d_l / n_out * n_l * n_r))
                   / (n_in * n_out)) if scored else None

    degree = {}
    for i in range(n_in):
        degree.setdefault(int(sum(b[i] != 0)), []).append(i)
    ram_raw, ram_norm, fs_r, fs_l = [], [], [], []
    for d in sorted(degree):
        rows = degree[d]
        if d == 0 or len(rows) < 2:
            continue
        cols = [j for j in range(n_out) if any(b[i, j] != 0 for i in rows)]
        n_d, n_o = len(rows), len(cols)
        d_r_k = n_d * d / n_o
        mu = dense_top_singular_values(b[np.ix_(rows, cols)])[1]
        gap = (d - 1) ** 0.5 + (d_r_k - 1) ** 0.5 - mu
        if len(rows) >= 3 and _spectral_gate(profile, d, d_r_k):
            ram_raw.append(gap)
            ram_norm.append(gap / ((d - 1) ** 0.5 + (d_r_k - 1) ** 0.5))
        if _spectral_gate("fs-subgraph", d, d_r_k):
            cheeger = max(n_d, n_o) / (n_d + n_o - 1)
            fs_r.append(cheeger * gap)
            if x is not None:
                xs = dense_top_singular_values(np.asarray(x, dtype=float)[np.ix_(rows, cols)])
                fs_l.append(cheeger * (xs[0] - xs[1]))
    out["imdb"] = float(np.mean(ram_norm)) if ram_norm else None
    out["imdb_raw"] = float(np.mean(ram_raw)) if ram_raw else None
    out["imdb_subgraphs"] = len(ram_raw)
    out["imdb_r"] = float(np.mean(fs_r)) if fs_r else None
    out["fs_subgraphs"] = len(fs_r)
    out["imdb_lambda"] = float(np.mean(fs_l)) if fs_l else None

    if x is None:
        out.update(weighted_sigma_1=None, weighted_sigma_2=None, weighted_gap=None,
                   coordinate=None, coordinate_norm=None)
        return out
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=float)
    wl, wr, wE, w1, w2 = _bipartite(x)
    out.update(weighted_sigma_1=w1 if wE else None, weighted_sigma_2=w2 if wE else None)
    out["weighted_gap"] = w1 - w2 if wE and _spectral_gate(profile, wE / wl, wE / wr) else None
    v = [out[k] if out[k] is not None else 0.0
         for k in ("delta_r", "weighted_gap", "imdb_r", "imdb_lambda")]
    out["coordinate"] = tuple(v)
    out["coordinate_norm"] = sum(e * e for e in v) ** 0.5
    return out


# ---------------------------------------------------------------------------------------------
# Audit rows (docs/definitions.md#functional) from the reach sets of the oracles above, with loops:
# per layer, the
# output channels reached / co-reached / functional (a functional incoming weight here and a
# functional outgoing weight downstream, through parameter-free links, or a logit), and the
# reached input channels this layer keeps no weight from.
# ---------------------------------------------------------------------------------------------


def _input_channel(layer, index):
    """Input channel read by weight `index` = (o, i_local, ...) of a (grouped) layer."""
    c_out, c_in_g = layer.weight_shape[:2]
    return (index[0] // (c_out // layer.groups)) * c_in_g + index[1]


def audit_rows(graph, masks, semantics="channel"):
    """Layer -> dict(reached, co_reached, functional_channels, lost_inputs), and the functional
    masks, from networkx reachability ("channel") or the unrolled pixel graph ("spatial")."""
    import networkx as nx

    if semantics == "channel":
        functional, reached, coreached = networkx_functional(graph, masks)
    else:
        unrolled = UnrolledGraph(graph, masks)
        functional = unrolled.functional()
        reached = {(g, c) for g, c, _ in unrolled.forward_reach()}
        coreached = {(g, c) for g, c, _ in unrolled.backward_reach()}
    empty = {name: np.zeros(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    links = channel_multigraph(graph, empty, attributes=False)  # link edges only
    read = {(layer.source, _input_channel(layer, index)) for name, layer in graph.layers.items()
            for index in zip(*np.nonzero(functional[name]))}
    logits = {(name, c) for name in graph.outputs for c in range(graph.groups[name].channels)}
    rows = {}
    for name, layer in graph.layers.items():
        mask = np.asarray(masks[name], dtype=bool)
        used = {_input_channel(layer, index) for index in zip(*np.nonzero(mask))}
        channels = [(layer.target, o) for o in range(layer.out_channels)]
        functional_channels = 0
        for o, node in enumerate(channels):
            downstream = nx.descendants(links, node) | {node}
            if functional[name][o].any() and downstream & (read | logits):
                functional_channels += 1
        rows[name] = {
            "reached": sum(node in reached for node in channels),
            "co_reached": sum(node in coreached for node in channels),
            "functional_channels": functional_channels,
            "lost_inputs": sum((layer.source, i) in reached and i not in used
                               for i in range(layer.in_channels)),
        }
    return rows, functional


def mha_encoder():
    """A tiny nn.MultiheadAttention (8 features, 2 heads, packed ``in_proj_weight``) followed by a
    Linear(8, 4): the smallest model whose prunable weight is not a Conv/Linear module's."""
    import torch.nn as nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.attn(x, x, x, need_weights=False)[0])

    return Encoder()
