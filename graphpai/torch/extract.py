"""nn.Module -> NetGraph: trace with torch.fx, propagate shapes, map every op (SPEC §2).

Conv1d/Conv2d and Linear become layers named by their module path (the names masks use).
Elementwise ops (BatchNorm, LayerNorm, activations, dropout, Identity, scalar arithmetic) are
folded into the group they act on; pooling, residual adds, concat and flatten become links. Any
other op on the way raises :class:`~graphpai.errors.UnsupportedOpError` naming it.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ModelError, UnsupportedOpError
from ..graph import Group, Layer, Link, NetGraph

__all__ = ["to_graph", "layer_weights", "prunable_modules"]

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
_POOL_MODULES = {
    nn.MaxPool1d: "max", nn.MaxPool2d: "max", nn.AvgPool1d: "avg", nn.AvgPool2d: "avg",
    nn.AdaptiveAvgPool1d: "avg", nn.AdaptiveAvgPool2d: "avg",
    nn.AdaptiveMaxPool1d: "max", nn.AdaptiveMaxPool2d: "max",
}
_ELEMENTWISE_MODULES = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.modules.dropout._DropoutNd,
    nn.Identity, nn.Softmax, nn.LogSoftmax,
)
_LEAF_MODULES = PRUNABLE + tuple(_POOL_MODULES) + _ELEMENTWISE_MODULES + (nn.Flatten,)
_POOL_FUNCTIONS = {
    F.max_pool1d: "max", F.max_pool2d: "max", F.avg_pool1d: "avg", F.avg_pool2d: "avg",
    F.adaptive_avg_pool1d: "avg", F.adaptive_avg_pool2d: "avg",
    F.adaptive_max_pool1d: "max", F.adaptive_max_pool2d: "max",
    torch.max_pool1d: "max", torch.max_pool2d: "max", torch.avg_pool1d: "avg",
}
_ADD = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub,
        "add", "add_", "sub", "sub_"}
_SCALAR_ARITHMETIC = {operator.mul, operator.imul, operator.truediv, operator.itruediv,
                      operator.neg, operator.pos, torch.mul, torch.div, torch.neg,
                      "mul", "mul_", "div", "div_", "neg"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_RESHAPE = {torch.flatten, torch.reshape, "flatten", "view", "reshape"}
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu_, F.relu6, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.leaky_relu, F.softplus, F.tanh, F.sigmoid, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.batch_norm, F.layer_norm,
    F.group_norm, F.instance_norm, F.softmax, F.log_softmax,
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.softmax, torch.log_softmax,
    torch.dropout, torch.abs, torch.clamp, torch.exp,
}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "log_softmax",
    "contiguous", "clone", "detach", "float", "double", "half", "to", "type_as", "clamp",
    "clamp_", "abs", "exp",
}
_NON_TENSOR_METHODS = {"size", "dim", "numel"}


class _Tracer(fx.Tracer):
    """fx's tracer, with subclasses of the supported modules (a research code's
    ``MaskedConv2d(nn.Conv2d)``, say) kept whole as the op they extend instead of traced into."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAF_MODULES) or super().is_leaf_module(m, qualname)


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> Conv1d/Conv2d/Linear module, the prunable layers (SPEC §1)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def layer_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Layer name -> float64 copy of its weight (``weight_orig`` when torch prune is applied)."""
    out = {}
    for name, module in prunable_modules(model).items():
        weight = getattr(module, "weight_orig", None)
        if weight is None:
            weight = module.weight
        out[name] = weight.detach().to("cpu", torch.float64).numpy().copy()
    return out


def _describe(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} at module path {node.target!r}"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {target!r} (fx node {node.name!r})"


_SUPPORTED = ("Conv1d/Conv2d, Linear, BatchNorm/LayerNorm/GroupNorm, elementwise activations, "
              "Dropout, Identity, Max/Avg/AdaptiveAvg pooling, flatten/view/reshape to features, "
              "+ / torch.add residuals, torch.cat on channels, mean over spatial dims")


def to_graph(model: nn.Module, input_shape=None) -> NetGraph:
    """Trace `model` with torch.fx and build its NetGraph (SPEC §2).

    Parameters
    ----------
    model : torch.nn.Module
        Any model made of the supported ops; layers are named by module path.
    input_shape : tuple of int, optional
        One input without the batch dimension, e.g. ``(3, 32, 32)``. Zoo models carry their own
        (``model.input_shape``).

    Raises
    ------
    ModelError
        If fx cannot trace the model, the input shape does not fit, or no input shape is known.
    UnsupportedOpError
        If an op on the way between the input and the outputs has no graph meaning.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"to_graph needs a torch.nn.Module, got {type(model).__name__}")
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise ModelError(
            f"no input shape known for {type(model).__name__}; pass input_shape=(C, H, W) "
            "(one example, without the batch dimension)"
        )
    input_shape = tuple(int(s) for s in input_shape)
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: {reason}. graphpai "
            "needs a forward without data-dependent Python control flow"
        ) from None
    shapes = _propagate_shapes(model, gm, input_shape)
    return _Builder(gm, shapes).build()


def _propagate_shapes(model, gm, input_shape):
    """Run the traced model on zeros (eval mode, no grad) and record every tensor's shape.

    Only shapes matter, so the work that cannot change a shape is skipped: a plain Conv1d/Conv2d
    returns an uninitialised tensor of the shape its geometry gives, BatchNorm, activation,
    dropout and identity modules and the sum of two equally shaped tensors return their input.
    The values are garbage; no op the builder accepts has a shape that depends on values.
    (ResNet-50 at 224x224 spent seconds here running convolutions and BN on zeros.)
    """
    shapes: dict[str, tuple[int, ...]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                shapes[n.name] = tuple(result.shape)
            return result

        def call_module(self, target, args, kwargs):
            module = self.fetch_attr(target)
            if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
                shape = _conv_output_shape(module, args[0])
                if shape is not None:
                    return args[0].new_empty(shape)
                if _keeps_shape(module, args[0]):
                    return args[0]
            return super().call_module(target, args, kwargs)

        def call_function(self, target, args, kwargs):
            if (target in (operator.add, operator.iadd) and len(args) == 2 and not kwargs
                    and all(isinstance(a, torch.Tensor) for a in args)
                    and args[0].shape == args[1].shape and args[0].dtype == args[1].dtype):
                return args[0]
            return super().call_function(target, args, kwargs)

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else "cpu"
    inputs = [torch.zeros((2,) + input_shape, dtype=dtype, device=device) for _ in placeholders]
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            Recorder(gm).run(*inputs)
    except Exception as exc:
        # torch appends the fx node and a hint on further lines; the first line says what failed
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ModelError(
            f"running {type(model).__name__} on an input of shape {(2,) + input_shape} failed: "
            f"{type(exc).__name__}: {reason}; pass the input_shape the model expects, "
            "as (C, H, W) without the batch dimension"
        ) from None
    finally:
        for module, training in modes:  # restore each module's own mode (e.g. frozen BN)
            module.training = training
    return shapes


_SHAPE_KEEPING = (nn.modules.dropout._DropoutNd, nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
                  nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                  nn.Hardsigmoid, nn.Hardtanh)


def _keeps_shape(module, x):
    """Whether `module` maps `x` to a tensor of the same shape whatever the values."""
    if not type(module).__module__.startswith("torch.nn.modules."):
        return False  # a user's subclass may do anything in its forward
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return x.dim() >= 2 and x.shape[1] == module.num_features
    return isinstance(module, _SHAPE_KEEPING)


def _conv_output_shape(module, x):
    """Output shape of a plain Conv1d/Conv2d on `x`, or None to let the module run (and raise)."""
    if type(module).forward not in (nn.Conv1d.forward, nn.Conv2d.forward):
        return None
    ndim = len(module.kernel_size)
    if not isinstance(x, torch.Tensor) or x.dim() != ndim + 2 or x.shape[1] != module.in_channels:
        return None
    size = tuple(int(n) for n in x.shape[2:])
    if module.padding == "same":
        out = size
    else:
        padding = (0,) * ndim if module.padding == "valid" else module.padding
        out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in zip(
            size, padding, module.dilation, module.kernel_size, module.stride))
    if min(out) < 1:
        return None
    return (int(x.shape[0]), module.out_channels) + out


def _pairs(padding, ndim):
    if isinstance(padding, int):
        padding = (padding,) * ndim
    return tuple((int(p), int(p)) for p in padding)


def _tuple(value, ndim):
    return (int(value),) * ndim if isinstance(value, int) else tuple(int(v) for v in value)


class _Builder:
    """One pass over the fx graph, mapping nodes to groups, layers and links."""

    def __init__(self, gm: fx.GraphModule, shapes):
        self.gm = gm
        self.shapes = shapes
        self.group_of: dict[str, str] = {}  # fx node name -> group name
        self.groups: dict[str, Group] = {}
        self.layers: list[Layer] = []
        self.links: list[Link] = []
        self.names: set[str] = set()
        self.used_modules: set[str] = set()
        # layer names are module paths (mask keys): other groups and links must not take them
        self.reserved = {n.target for n in gm.graph.nodes if n.op == "call_module"
                         and isinstance(gm.get_submodule(n.target), PRUNABLE)}

    # groups ------------------------------------------------------------
    def _new_group(self, name, node, *, layer=False):
        shape = self.shapes[node.name]
        if len(shape) < 2:
            raise UnsupportedOpError(f"{_describe(node, self.gm)} produces shape {shape}; "
                                     "expected (batch, channels, ...)")
        base, k = name, 0
        while name in self.names or (not layer and name in self.reserved):
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        self.groups[name] = Group(name, int(shape[1]), tuple(int(s) for s in shape[2:]))
        self.group_of[node.name] = name
        return name

    def _tensor_args(self, node):
        """Groups of the fx nodes among the args that carry activations."""
        found = []
        for arg in _flat(node.args, node.kwargs):
            if isinstance(arg, fx.Node) and arg.name in self.group_of:
                found.append(self.group_of[arg.name])
        return found

    # main --------------------------------------------------------------
    def build(self) -> NetGraph:
        inputs, outputs = [], []
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                name = "input" if len(placeholders) == 1 else node.name
                inputs.append(self._new_group(name, node))
            elif node.op == "output":
                outputs = [self.group_of[a.name] for a in _flat(node.args, {})
                           if isinstance(a, fx.Node) and a.name in self.group_of]
            elif node.op == "get_attr":
                continue
            else:
                self._visit(node)
        if not outputs:
            raise ModelError("the model returns no activation tensor")
        return NetGraph(self.groups.values(), self.layers, self.links, inputs, list(dict.fromkeys(outputs)))

    def _visit(self, node):
        srcs = self._tensor_args(node)
        if node.name not in self.shapes:  # an int or a shape: not an activation
            if node.op == "call_method" and node.target in _NON_TENSOR_METHODS or not srcs:
                return
            if node.target is getattr or node.target is operator.getitem:
                return
            raise UnsupportedOpError(f"{_describe(node, self.gm)} does not return a tensor; "
                                     f"supported ops: {_SUPPORTED}")
        if not srcs:  # a constant computed from parameters or literals
            return
        if node.op == "call_module":
            self._visit_module(node, srcs)
        else:
            self._visit_function(node, srcs)

    def _same(self, node, srcs):
        if len(set(srcs)) != 1:
            raise UnsupportedOpError(
                f"{_describe(node, self.gm)} combines activations of {sorted(set(srcs))} in a way "
                f"graphpai does not model; supported ops: {_SUPPORTED}")
        source = srcs[0]
        if self.shapes[node.name][1:] != (self.groups[source].channels,) + self.groups[source].size:
            raise UnsupportedOpError(
                f"{_describe(node, self.gm)} changes the shape {self.groups[source]} -> "
                f"{self.shapes[node.name]}; only elementwise ops may do so silently")
        self.group_of[node.name] = source

    def _visit_module(self, node, srcs):
        module = self.gm.get_submodule(node.target)
        if isinstance(module, PRUNABLE):
            self._layer(node, module, srcs)
        elif isinstance(module, tuple(_POOL_MODULES)):
            mode = _POOL_MODULES[type(module)] if type(module) in _POOL_MODULES else (
                "max" if "Max" in type(module).__name__ else "avg")
            self._pool(node, srcs, mode, _module_pool_params(module), functional=False)
        elif isinstance(module, nn.Flatten):
            self._reshape(node, srcs)
        elif isinstance(module, _ELEMENTWISE_MODULES) or (
                type(module).__module__ == "torch.nn.modules.activation"
                and not isinstance(module, nn.MultiheadAttention)):
            self._same(node, srcs)
        else:
            raise UnsupportedOpError(
                f"unsupported module {_describe(node, self.gm)}; supported ops: {_SUPPORTED}")

    def _visit_function(self, node, srcs):
        target = node.target
        if target in _ADD:
            if len(srcs) >= 2:
                self._link(node, "add", srcs)
            else:
                self._same(node, srcs)
        elif target in _SCALAR_ARITHMETIC or target in _ELEMENTWISE_FUNCTIONS or (
                node.op == "call_method" and target in _ELEMENTWISE_METHODS):
            self._same(node, srcs)
        elif target in _CAT:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            ndim = len(self.shapes[node.name])
            if dim % ndim != 1:
                raise UnsupportedOpError(f"{_describe(node, self.gm)} concatenates along dim {dim}; "
                                         "graphpai supports concatenation of channels (dim=1)")
            self._link(node, "concat", srcs)
        elif target in _RESHAPE:
            self._reshape(node, srcs)
        elif target in _POOL_FUNCTIONS:
            params = _function_pool_params(node, self.gm, self.groups[srcs[0]])
            self._pool(node, srcs, _POOL_FUNCTIONS[target], params, functional=True)
        elif target in (torch.mean, torch.amax, "mean", "amax"):
            self._global_pool(node, srcs, "avg" if target in (torch.mean, "mean") else "max")
        else:
            raise UnsupportedOpError(f"unsupported op {_describe(node, self.gm)}; supported ops: {_SUPPORTED}")

    # ops ---------------------------------------------------------------
    def _layer(self, node, module, srcs):
        name = node.target
        if name in self.used_modules:
            raise UnsupportedOpError(
                f"module {name!r} is called more than once; weight sharing is not supported "
                "(use a separate module per call)")
        self.used_modules.add(name)
        source = srcs[0]
        src = self.groups[source]
        weight = getattr(module, "weight_orig", None)
        weight = module.weight if weight is None else weight
        if isinstance(module, nn.Linear):
            if src.size:
                raise UnsupportedOpError(
                    f"Linear at module path {name!r} is applied to a tensor of shape "
                    f"{(src.channels,) + src.size}; graphpai supports linear layers on "
                    "(batch, features) inputs: flatten first")
            target = self._new_group(name, node, layer=True)
            self.layers.append(Layer(name, "linear", tuple(weight.shape), source, target,
                                     bias=module.bias is not None))
            return
        if module.padding_mode != "zeros":
            raise UnsupportedOpError(
                f"{type(module).__name__} at module path {name!r} uses padding_mode="
                f"{module.padding_mode!r}; graphpai models zero padding only")
        ndim = len(module.kernel_size)
        dilation = _tuple(module.dilation, ndim)
        if isinstance(module.padding, str):
            if module.padding == "valid":
                padding = ((0, 0),) * ndim
            else:  # 'same': PyTorch pads the extra pixel at the end
                total = [d * (k - 1) for d, k in zip(dilation, module.kernel_size)]
                padding = tuple((t // 2, t - t // 2) for t in total)
        else:
            padding = _pairs(module.padding, ndim)
        target = self._new_group(name, node, layer=True)
        self.layers.append(Layer(
            name, "conv", tuple(weight.shape), source, target, stride=_tuple(module.stride, ndim),
            padding=padding, dilation=dilation, groups=int(module.groups),
            bias=module.bias is not None, in_size=src.size, out_size=self.groups[target].size))

    def _link(self, node, kind, srcs, params=None, name=None):
        if kind == "add":
            shapes = {(self.groups[s].channels,) + self.groups[s].size for s in srcs}
            if len(shapes) != 1:
                raise UnsupportedOpError(
                    f"{_describe(node, self.gm)} adds tensors of shapes {sorted(shapes)}; a residual "
                    "add needs equal shapes (broadcasting between activations is not modelled)")
        target = self._new_group(name or node.name, node)
        self.links.append(Link(target, kind, tuple(srcs), target, params or {}))

    def _pool(self, node, srcs, mode, params, functional):
        name = node.target if node.op == "call_module" else node.name
        params = dict(params, mode=mode, functional=functional)
        self._link(node, "pool", srcs[:1], params, name=name)

    def _global_pool(self, node, srcs, mode):
        src = self.groups[srcs[0]]
        shape = self.shapes[node.name]
        if shape[:2] != (shape[0], src.channels) or math.prod(shape[2:]) != 1 or not src.size:
            raise UnsupportedOpError(
                f"{_describe(node, self.gm)} reduces to shape {shape}; graphpai supports a mean/max "
                "over all spatial dimensions (global pooling) only")
        params = {"output_size": tuple(shape[2:]), "adaptive": True}
        self._pool(node, srcs, mode, params, functional=True)

    def _reshape(self, node, srcs):
        src = self.groups[srcs[0]]
        shape = self.shapes[node.name]
        if shape[1:] == (src.channels,) + src.size:
            self.group_of[node.name] = srcs[0]
        elif len(shape) == 2 and shape[1] == src.numel:
            name = node.target if node.op == "call_module" else node.name
            self._link(node, "flatten", srcs[:1], name=name)
        else:
            raise UnsupportedOpError(
                f"{_describe(node, self.gm)} reshapes {(src.channels,) + src.size} to {shape[1:]}; "
                "graphpai supports flattening (batch, C, ...) to (batch, features) only")


def _flat(args, kwargs):
    out = []

    def visit(a):
        if isinstance(a, (list, tuple)):
            for b in a:
                visit(b)
        elif isinstance(a, dict):
            for b in a.values():
                visit(b)
        else:
            out.append(a)

    visit(args)
    visit(kwargs)
    return out


def _module_pool_params(module):
    if hasattr(module, "output_size"):
        ndim = 2 if "2d" in type(module).__name__ else 1
        size = module.output_size
        size = (size,) * ndim if isinstance(size, int) or size is None else tuple(size)
        return {"adaptive": True, "output_size": size}
    ndim = 2 if "2d" in type(module).__name__ else 1
    kernel = _tuple(module.kernel_size, ndim)
    stride = _tuple(module.stride if module.stride else module.kernel_size, ndim)
    return {
        "adaptive": False, "kernel": kernel, "stride": stride,
        "padding": _pairs(module.padding, ndim), "dilation": _tuple(getattr(module, "dilation", 1), ndim),
        "ceil_mode": bool(module.ceil_mode),
        "count_include_pad": bool(getattr(module, "count_include_pad", True)),
        "divisor_override": getattr(module, "divisor_override", None),
    }


def _function_pool_params(node, gm, src):
    args = node.normalized_arguments(gm, normalize_to_only_use_kwargs=True)
    if args is None:
        raise UnsupportedOpError(f"cannot read the arguments of {_describe(node, gm)}")
    kw = dict(args.kwargs)
    ndim = len(src.size)
    if "output_size" in kw:
        size = kw["output_size"]
        size = (size,) * ndim if isinstance(size, int) else tuple(size)
        return {"adaptive": True, "output_size": size}
    kernel = _tuple(kw["kernel_size"], ndim)
    stride = kw.get("stride") or kernel
    return {
        "adaptive": False, "kernel": kernel, "stride": _tuple(stride, ndim),
        "padding": _pairs(kw.get("padding", 0), ndim), "dilation": _tuple(kw.get("dilation", 1), ndim),
        "ceil_mode": bool(kw.get("ceil_mode", False)),
        "count_include_pad": bool(kw.get("count_include_pad", True)),
        "divisor_override": kw.get("divisor_override"),
    }
