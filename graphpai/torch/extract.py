"""nn.Module -> NetGraph: trace, record shapes, map every op to the graph model (docs/graph.md).

Two tracers give the same kind of graph: ``torch.fx`` (the fast path, on the modules and
functions of the forward) and ``torch.export`` (its ATen graph, for models fx cannot trace, such
as Hugging Face transformers). Both produce an fx graph that one builder reads, with every op
named by a canonical name (``aten.view.default``, ``Tensor.view`` and ``torch.reshape`` are all
a *move*).

- Conv1d/2d/3d and Linear (on tensors of any rank: the axes other than batch and features are
  positions) become layers named by their module path (the names masks use); a weight used as
  ``x @ W`` or by Hugging Face's ``Conv1D`` is a layer whose model weight is the transpose.
- ``nn.Embedding`` of the token ids is the network input (its output, ``(tokens, features)``);
  with ``prune_embeddings=True`` it is a layer from a one-hot vocabulary input.
- Ops that only move elements (view, reshape, flatten, permute, transpose, slicing, chunk,
  split, cat, stack, expand, PixelShuffle, nearest upsampling, multiplication by a constant
  with zeros) are traced on index tensors, so their element map is exact: a ``regroup`` link
  (``flatten`` and ``concat`` where they are the convnet ones). Reductions are ``reduce`` links.
- LayerNorm/GroupNorm/RMSNorm are ``norm`` links, products of two activations ``mul`` links,
  ``softmax(q @ k^T) @ v`` and ``scaled_dot_product_attention`` ``attention`` links; BatchNorm,
  activations, dropout and scalar arithmetic are folded into the tensor they act on; pooling and
  residual sums are as before.

Any other op on the way raises :class:`~graphpai.errors.UnsupportedOpError` naming it and its
module path.
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ModelError, UnsupportedOpError
from ..graph import ChannelMap, Group, Layer, Link, NetGraph

__all__ = ["to_graph", "layer_weights", "layer_parameters", "prunable_modules", "canonical_weight",
           "model_weight", "TRACERS"]

TRACERS = ("auto", "fx", "export")
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_RMSNORM = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
_POOL_MODULES = {
    nn.MaxPool1d: "max", nn.MaxPool2d: "max", nn.AvgPool1d: "avg", nn.AvgPool2d: "avg",
    nn.AdaptiveAvgPool1d: "avg", nn.AdaptiveAvgPool2d: "avg",
    nn.AdaptiveMaxPool1d: "max", nn.AdaptiveMaxPool2d: "max",
}
_FOLDED_MODULES = (
    nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd, nn.Identity,
)
_LEAF_MODULES = (PRUNABLE + tuple(_POOL_MODULES) + _FOLDED_MODULES
                 + (nn.Flatten, nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.Softmax,
                    nn.LogSoftmax, nn.PixelShuffle, nn.PixelUnshuffle, nn.Upsample) + _RMSNORM)

# canonical op names: python functions, tensor methods and ATen ops map to these
_ALIASES = {
    "iadd": "add", "add_": "add", "isub": "sub", "sub_": "sub", "rsub": "sub", "imul": "mul",
    "mul_": "mul", "multiply": "mul", "truediv": "div", "itruediv": "div", "div_": "div",
    "true_divide": "div", "divide": "div", "concat": "cat", "concatenate": "cat", "bmm": "matmul",
    "matmul": "matmul", "mm": "matmul", "unsafe_view": "view", "_unsafe_view": "view",
    "view_as": "view", "reshape_as": "view", "reshape": "view", "swapaxes": "transpose",
    "swapdims": "transpose", "split_with_sizes": "split", "_safe_softmax": "softmax",
    "_softmax": "softmax", "relu_": "relu", "sigmoid_": "sigmoid", "tanh_": "tanh",
    "clamp_": "clamp", "masked_fill_": "masked_fill", "gelu_": "gelu", "silu_": "silu",
    "hardtanh_": "hardtanh", "leaky_relu_": "leaky_relu", "contiguous": "identity",
    "clone": "identity", "detach": "identity", "alias": "identity", "float": "identity",
    "double": "identity", "half": "identity", "bfloat16": "identity", "to": "identity",
    "type_as": "identity", "_to_copy": "identity", "lift_fresh_copy": "identity",
    "type": "identity", "dropout": "identity", "dropout1d": "identity", "dropout2d": "identity",
    "dropout3d": "identity", "alpha_dropout": "identity", "feature_dropout": "identity",
    "native_dropout": "identity", "feature_alpha_dropout": "identity", "batch_norm": "identity",
    "instance_norm": "identity", "_native_batch_norm_legit_no_training": "identity",
    "_native_batch_norm_legit_functional": "identity", "native_batch_norm": "identity",
    "layer_norm": "layer_norm", "native_layer_norm": "layer_norm", "t": "transpose",
    "numpy_T": "transpose", "scaled_dot_product_attention": "sdpa",
    "upsample_nearest1d": "interpolate", "upsample_nearest2d": "interpolate",
    "upsample_nearest3d": "interpolate", "upsample_bilinear2d": "interpolate",
    "_upsample_nearest_exact2d": "interpolate", "upsample": "interpolate",
    "expand_as": "expand", "broadcast_to": "expand",
}
# elementwise ops with f(0) = 0 (a zero stays zero) and ops with f(x) != 0 everywhere
_ZERO_KEEPING = {
    "identity", "relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish",
    "hardtanh", "leaky_relu", "tanh", "neg", "pos", "abs", "erf", "sqrt", "square", "sin",
    "logsigmoid_shifted", "prelu", "rrelu", "softsign", "tanhshrink", "hardshrink",
    "softshrink", "threshold", "clamp", "clamp_min", "clamp_max", "sign", "log_softmax",
}
_NONZERO = {"sigmoid", "exp", "cos", "rsqrt", "reciprocal", "softplus", "hardsigmoid", "cosh",
            "logsigmoid", "log"}
_MOVE = {"view", "flatten", "unflatten", "permute", "transpose", "unsqueeze", "squeeze",
         "expand", "repeat", "getitem", "select", "slice", "narrow", "chunk", "split", "unbind",
         "cat", "stack", "movedim", "moveaxis", "repeat_interleave", "flip", "roll",
         "pixel_shuffle", "pixel_unshuffle", "tile", "index_select", "interpolate"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "norm", "logsumexp",
           "prod"}
_POOL_FUNCTIONS = {
    "max_pool1d": "max", "max_pool2d": "max", "avg_pool1d": "avg", "avg_pool2d": "avg",
    "adaptive_avg_pool1d": "avg", "adaptive_avg_pool2d": "avg",
    "adaptive_max_pool1d": "max", "adaptive_max_pool2d": "max",
    "max_pool1d_with_indices": "max", "max_pool2d_with_indices": "max",
}
_SKIP = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size",
         "_guards_fn", "sym_size", "sym_numel", "sym_stride", "size", "dim", "numel",
         "_assert_async", "assert", "getattr", "GuardsFn"}
_SHAPE_ONLY = {"new_ones", "new_zeros", "new_full", "new_empty", "zeros_like", "ones_like",
               "full_like", "empty_like", "constant"}  # read only a tensor's shape, dtype, device
_BLOCKED = -1e4  # an additive mask value at or below this blocks a (query, key) pair

_SUPPORTED = ("Conv1d/2d/3d, Linear (any rank), Embedding, BatchNorm, LayerNorm/GroupNorm/"
              "RMSNorm, elementwise activations, dropout, pooling, residual sums, products of "
              "two activations, attention (softmax(q @ k^T) @ v, scaled_dot_product_attention), "
              "view/reshape/flatten/permute/transpose/slicing/chunk/split/cat/expand, mean/sum "
              "reductions, PixelShuffle, nearest upsampling (docs/graph.md)")


class _Tracer(fx.Tracer):
    """fx's tracer, with subclasses of the supported modules (a research code's
    ``MaskedConv2d(nn.Conv2d)``, say) kept whole as the op they extend instead of traced into."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAF_MODULES) or super().is_leaf_module(m, qualname)


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> Conv1d/2d/3d or Linear module, the prunable layers (docs/graph.md)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def layer_parameters(model: nn.Module) -> dict[str, tuple[nn.Module, str, bool]]:
    """Layer name -> (module, parameter name, transposed) for every weight the graph may make a
    layer: Conv/Linear weights, the ``in_proj_weight`` of ``nn.MultiheadAttention`` (layer
    ``path.in_proj_weight``), Hugging Face ``Conv1D`` weights (``transposed``: the module holds
    ``(in, out)``, the layer and its masks ``(out, in)``).

    Use it instead of :func:`prunable_modules` to reach the weight of any layer of
    ``to_graph(model)``: ``module, attr, t = layer_parameters(model)[name]``, then
    ``getattr(module, attr)`` (``.T`` when ``t``).
    """
    out = {}
    for path, module in model.named_modules():
        if isinstance(module, PRUNABLE):
            out[path] = (module, "weight", False)
        elif isinstance(module, _CONV_TRANSPOSE):
            out[path] = (module, "weight", True)
        elif type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None \
                and getattr(module.weight, "dim", lambda: 0)() == 2:
            out[path] = (module, "weight", True)
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            out[f"{path}.in_proj_weight" if path else "in_proj_weight"] = (
                module, "in_proj_weight", False)
    return out


def canonical_weight(weight, transposed: bool, groups: int = 1):
    """A model's weight in its layer's ``(out, in/groups, ...)`` order: the transpose of a 2-D
    ``(in, out)`` weight; for a transposed conv ``(C_in, C_out/g, k...)`` -> ``(C_out, C_in/g,
    k...)`` group by group. The same map turns a model-shaped mask into a layer mask, and (it is
    its own inverse) a layer-shaped array back into the model's order (:func:`model_weight`)."""
    if not transposed:
        return weight
    if weight.dim() == 2:
        return weight.T
    first, second = weight.shape[:2]
    rest = tuple(weight.shape[2:])
    w = weight.reshape((groups, first // groups, second) + rest).transpose(1, 2)
    return w.reshape((groups * second, first // groups) + rest)


def model_weight(weight, transposed: bool, groups: int = 1):
    """A layer-shaped array in the model's order: the inverse of :func:`canonical_weight`,
    which is the same swap of the two leading axes within each group."""
    return canonical_weight(weight, transposed, groups)


def layer_tensors(model: nn.Module) -> dict:
    """Layer name -> its weight as a torch tensor in the layer's ``(out, in, ...)`` order
    (``weight_orig`` when torch prune is applied), detached, without a copy: for a caller that
    converts them later, one at a time or after a memory check (``graphpai spectral``)."""
    out = {}
    for name, (module, attr, transposed) in layer_parameters(model).items():
        weight = getattr(module, f"{attr}_orig", None)
        if weight is None:
            weight = getattr(module, attr)
        out[name] = canonical_weight(weight.detach(), transposed, getattr(module, "groups", 1))
    return out


def layer_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Layer name -> float64 copy of its weight in the layer's ``(out, in, ...)`` order
    (``weight_orig`` when torch prune is applied), for every layer of :func:`layer_parameters`."""
    return {name: weight.to("cpu", torch.float64).numpy().copy()
            for name, weight in layer_tensors(model).items()}


def _first_line(exc) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


# ------------------------------------------------------------------------------ entry point
def to_graph(model: nn.Module, input_shape=None, *, example_inputs=None, input_dtype=None,
             vocab_size: int | None = None, tracer: str = "auto",
             prune_embeddings: bool = False) -> NetGraph:
    """Trace `model` and build its NetGraph (docs/graph.md).

    Parameters
    ----------
    model : torch.nn.Module
        Any model made of the supported ops; layers are named by module path.
    input_shape : tuple of int, optional
        One input without the batch dimension: ``(3, 32, 32)`` for an image, ``(16,)`` for 16
        token ids (with ``input_dtype=torch.long``). Zoo models carry their own
        (``model.input_shape``, ``model.input_dtype``).
    example_inputs : tensor, tuple or dict, optional
        Real inputs with their batch dimension: a tensor, a tuple of positional arguments or a
        dict of keyword arguments (as Hugging Face models take ``input_ids=``). Replaces
        `input_shape`.
    input_dtype : torch.dtype or str, optional
        ``torch.long`` (or ``"long"``) for token ids, drawn in ``range(vocab_size)``.
    vocab_size : int, optional
        The vocabulary for token ids; by default the first ``nn.Embedding``'s size.
    tracer : {"auto", "fx", "export"}
        ``"auto"`` tries torch.fx and falls back to torch.export when fx cannot trace.
    prune_embeddings : bool
        Make token embeddings prunable layers from a one-hot vocabulary input (default: they
        are the network input, not prunable, as in the LLM pruning literature).

    Raises
    ------
    ModelError
        If neither tracer can read the model, the input does not fit, or no input is known.
    UnsupportedOpError
        If an op between the input and the outputs has no graph meaning (the message names the
        op and its module path).
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"to_graph needs a torch.nn.Module, got {type(model).__name__}")
    if tracer not in TRACERS:
        raise ModelError(f"unknown tracer {tracer!r}; use one of {list(TRACERS)}")
    args, kwargs, shown = _inputs(model, input_shape, example_inputs, input_dtype, vocab_size)
    fx_error = None
    if tracer in ("auto", "fx"):
        try:
            gm = _fx_trace(model, args, kwargs)
        except ModelError as exc:
            if tracer == "fx":
                raise
            gm, fx_error = None, exc
        if gm is not None:
            record = _record(model, gm, args, kwargs, shown)  # a wrong input fails here
            try:
                with torch.device("cpu"):  # index tensors, whatever the default device
                    return _Builder(gm, record, prune_embeddings, prefix="").build()
            except UnsupportedOpError as exc:
                if tracer == "fx":
                    raise
                fx_error = exc
    try:
        gm = _export(model, args, kwargs)
        record = _record(model, gm, _flat_inputs(args, kwargs), {}, shown)
        with torch.device("cpu"):
            return _Builder(gm, record, prune_embeddings, prefix="m.").build()
    except ModelError as exc:
        if isinstance(fx_error, UnsupportedOpError):
            raise fx_error from None  # the fx graph names the modules best
        if fx_error is not None and not isinstance(exc, UnsupportedOpError):
            raise ModelError(f"{fx_error} (torch.export cannot trace it either: "
                             f"{_first_line(exc)})") from None
        raise


def _inputs(model, input_shape, example_inputs, input_dtype, vocab_size):
    """(args, kwargs, description) for one run with a batch of 2."""
    if example_inputs is not None:
        if isinstance(example_inputs, torch.Tensor):
            args, kwargs = (example_inputs,), {}
        elif isinstance(example_inputs, dict):
            args, kwargs = (), dict(example_inputs)
        elif isinstance(example_inputs, (tuple, list)):
            args, kwargs = tuple(example_inputs), {}
        else:
            raise ModelError(f"example_inputs must be a tensor, a tuple or a dict, got "
                             f"{type(example_inputs).__name__}")
        args = tuple(_batch_of_two(a) for a in args)
        kwargs = {k: _batch_of_two(v) for k, v in kwargs.items()}
        shown = ", ".join([_shape_text(a) for a in args]
                          + [f"{k}={_shape_text(v)}" for k, v in kwargs.items()])
        return args, kwargs, shown
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise ModelError(
            f"no input shape known for {type(model).__name__}; pass input_shape=(C, H, W) "
            "(one example, without the batch dimension), or example_inputs=")
    input_shape = tuple(int(s) for s in input_shape)
    dtype = input_dtype if input_dtype is not None else getattr(model, "input_dtype", None)
    dtype = _dtype(dtype)
    if dtype is not None and not dtype.is_floating_point:
        vocab = vocab_size or getattr(model, "vocab_size", None) or next(
            (m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)), None)
        if vocab is None:
            raise ModelError(f"{type(model).__name__} takes integer inputs but has no "
                             "nn.Embedding; pass vocab_size=")
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randint(0, int(vocab), (2,) + input_shape, generator=gen, device="cpu").to(dtype)
    else:
        param = next(model.parameters(), None)
        fdtype = dtype or (param.dtype if param is not None and param.is_floating_point()
                           else torch.float32)
        device = param.device if param is not None else "cpu"
        x = torch.zeros((2,) + input_shape, dtype=fdtype, device=device)
    if x.device.type == "cpu":
        param = next(model.parameters(), None)
        if param is not None and param.device.type != "cpu":
            x = x.to(param.device)  # a meta-device model runs on meta inputs
    return (x,), {}, str((2,) + input_shape)


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"long": torch.long, "int64": torch.long, "int": torch.int32, "int32": torch.int32,
             "float": torch.float32, "float32": torch.float32, "float64": torch.float64,
             "double": torch.float64, "bfloat16": torch.bfloat16, "half": torch.float16,
             "float16": torch.float16}
    try:
        return names[str(dtype).replace("torch.", "")]
    except KeyError:
        raise ModelError(f"unknown input dtype {dtype!r}; use one of {sorted(names)}") from None


def _batch_of_two(value):
    if isinstance(value, torch.Tensor) and value.dim() >= 1:
        if value.shape[0] == 1:
            return torch.cat([value, value])
        return value[:2]
    return value


def _shape_text(value):
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else repr(value)


def _flat_inputs(args, kwargs):
    return tuple(args) + tuple(v for v in kwargs.values() if isinstance(v, torch.Tensor))


def _fx_trace(model, args, kwargs):
    try:
        concrete = None
        if kwargs:
            names = list(inspect.signature(model.forward).parameters)
            concrete = {n: None for n in names[len(args):] if n not in kwargs}
        graph = _Tracer().trace(model, concrete_args=concrete)
        return fx.GraphModule(model, graph)
    except Exception as exc:
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: "
            f"{_first_line(exc)}. graphpai needs a forward without data-dependent Python control "
            "flow (tracer='export' reads more models)") from None


class _Outputs(nn.Module):
    """`model` called with keyword inputs, its outputs flattened to a tuple of tensors (a
    Hugging Face ModelOutput or a nested tuple; caches are dropped)."""

    def __init__(self, model, names, kwargs_names):
        super().__init__()
        self.m = model
        self._names = names
        self._kw = kwargs_names
        self._extra = {}
        try:
            if "use_cache" in inspect.signature(model.forward).parameters:
                self._extra["use_cache"] = False
        except (TypeError, ValueError):
            pass

    def forward(self, *inputs):
        args = inputs[:len(self._names)]
        kwargs = dict(zip(self._kw, inputs[len(self._names):]), **self._extra)
        return tuple(_tensors_of(self.m(*args, **kwargs)))


def _tensors_of(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        found = []
        for item in out:
            if isinstance(item, (torch.Tensor, tuple, list, dict)) or hasattr(item, "to_tuple"):
                found.extend(_tensors_of(item))
        return found
    return []


def _export(model, args, kwargs):
    wrapper = _Outputs(model, list(args), [k for k, v in kwargs.items()
                                           if isinstance(v, torch.Tensor)])
    flat = _flat_inputs(args, kwargs)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(wrapper, flat, strict=False)
        return ep.module()
    except Exception as exc:
        raise ModelError(
            f"torch.export cannot trace {type(model).__name__}: "
            f"{type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        for m, training in modes:
            m.training = training


# ------------------------------------------------------------------------------ recording
@dataclass
class _Rec:
    shape: tuple | None = None      # full tensor shape (batch included)
    dtype: torch.dtype | None = None
    value: object = None            # constants (small tensors) and python values


def _record(model, gm, args, kwargs, shown):
    """Run the traced graph once (eval mode, no grad) and record every node's shape, and the
    values of python scalars and of small constant tensors.

    Only shapes of activations matter, so the work that cannot change a shape is skipped: a
    plain Conv/Linear returns zeros of the shape its geometry gives, BatchNorm, activation,
    dropout and identity modules and the sum of two equally shaped tensors return their input.
    """
    rec: dict[str, _Rec] = {}
    live: set[str] = set()  # nodes whose tensor values depend on an input (never kept)

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            tensor = isinstance(result, torch.Tensor) or (
                isinstance(result, (tuple, list)) and any(isinstance(t, torch.Tensor) for t in result))
            if tensor and _canonical(n, gm) not in _SHAPE_ONLY and (n.op == "placeholder" or any(
                    isinstance(a, fx.Node) and a.name in live for a in _flat(n.args, n.kwargs))):
                live.add(n.name)
            r = _Rec()
            if isinstance(result, torch.Tensor):
                r.shape, r.dtype = tuple(result.shape), result.dtype
                if n.name not in live and result.numel() <= (1 << 22) and n.op != "get_attr":
                    r.value = result.detach()
                    if result.is_meta:  # a model on the meta device: its constants on the CPU
                        r.value = _on_cpu(n, rec)
            elif isinstance(result, (tuple, list)) and result and all(
                    isinstance(t, torch.Tensor) for t in result):
                r.shape = tuple(tuple(t.shape) for t in result)
                if n.name not in live:
                    r.value = tuple(t.detach() for t in result)
            else:
                r.value = result
            rec[n.name] = r
            return result

        def call_module(self, target, a, kw):
            module = self.fetch_attr(target)
            if len(a) == 1 and not kw and isinstance(a[0], torch.Tensor) and a[0].is_floating_point():
                shape = _layer_output_shape(module, a[0])
                if shape is not None:
                    return a[0].new_zeros(shape)
                if _keeps_shape(module, a[0]):
                    return a[0]
            return super().call_module(target, a, kw)

        def call_function(self, target, a, kw):
            if (target in (operator.add, operator.iadd) and len(a) == 2 and not kw
                    and all(isinstance(t, torch.Tensor) for t in a)
                    and a[0].shape == a[1].shape and a[0].dtype == a[1].dtype):
                return a[0]
            if (target is torch.ops.aten.linear.default and isinstance(a[0], torch.Tensor)
                    and a[0].is_floating_point() and a[0].shape[-1] == a[1].shape[1]):
                return a[0].new_zeros(tuple(a[0].shape[:-1]) + (a[1].shape[0],))
            return super().call_function(target, a, kw)

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values = list(args)
    for node in placeholders[len(args):]:
        if node.target in kwargs:
            values.append(kwargs[node.target])
        elif node.args:
            values.append(node.args[0])
        else:
            raise ModelError(f"no value for the input {node.target!r} of "
                             f"{type(model).__name__}; pass it in example_inputs")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            Recorder(gm).run(*values[:len(placeholders)])
    except (ModelError, UnsupportedOpError):
        raise
    except Exception as exc:
        raise ModelError(
            f"running {type(model).__name__} on an input of shape {shown} failed: "
            f"{type(exc).__name__}: {_first_line(exc)}; pass the input_shape the model expects, "
            "as (C, H, W) without the batch dimension") from None
    finally:
        for module, training in modes:  # restore each module's own mode (e.g. frozen BN)
            module.training = training
    return rec


def _on_cpu(node, rec):
    """A constant node of a meta-device model computed again on the CPU (masks and position
    tables come from ``arange``; values of meta buffers stay unknown: None)."""
    if node.op not in ("call_function", "call_method"):
        return None
    shape_only = node.op == "call_method" and node.target in _SHAPE_ONLY or getattr(
        node.target, "__name__", None) in _SHAPE_ONLY

    def cpu(a):
        if isinstance(a, fx.Node):
            r = rec.get(a.name)
            if shape_only and r is not None and isinstance(r.shape, tuple) and r.dtype:
                return torch.empty(r.shape, dtype=r.dtype)  # only its shape and dtype are read
            value = r.value if r is not None else None
            if isinstance(value, torch.Tensor) and value.is_meta:
                raise LookupError(a.name)
            if value is None and r is not None and r.shape is not None:
                raise LookupError(a.name)
            return value
        if isinstance(a, torch.device) and a.type == "meta":
            return torch.device("cpu")
        return a

    try:
        with torch.device("cpu"):
            args, kwargs = _nested(tuple(node.args), cpu), _nested(dict(node.kwargs), cpu)
            if node.op == "call_method":
                out = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:
                out = node.target(*args, **kwargs)
    except Exception:
        return None
    if isinstance(out, torch.Tensor) and not out.is_meta:
        return out.detach()
    return None


def _nested(value, leaf):
    """`leaf` applied to every value inside nested lists, tuples and dicts."""
    if isinstance(value, (list, tuple)):
        return type(value)(_nested(v, leaf) for v in value)
    if isinstance(value, dict):
        return {k: _nested(v, leaf) for k, v in value.items()}
    return leaf(value)


def _known(value) -> bool:
    """A constant tensor whose values are known (not on the meta device)."""
    return isinstance(value, torch.Tensor) and not value.is_meta


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


def _layer_output_shape(module, x):
    """Output shape of a plain Conv or Linear on `x`, or None to let the module run."""
    if type(module).forward is nn.Linear.forward:
        if x.dim() >= 1 and x.shape[-1] == module.in_features:
            return tuple(x.shape[:-1]) + (module.out_features,)
        return None
    if type(module).forward not in (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward):
        return None
    ndim = len(module.kernel_size)
    if x.dim() != ndim + 2 or x.shape[1] != module.in_channels:
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


# ------------------------------------------------------------------------------ values
@dataclass
class _Act:
    """An activation held by a group: its tensor shape, and which logical axes are channels."""

    group: str
    full: tuple         # the tensor's shape, batch included
    batch: tuple        # (axis of the batch, merged): the batch is axis `axis` of the tensor,
    #                     or the major part of it when merged (``x.view(-1, features)``)
    ch: tuple           # channel axes among the logical (non-batch) axes
    nonzero: bool = False

    @property
    def shape(self):
        return _logical(self.full, self.batch)


@dataclass
class _Moved:
    """Elements moved from groups: ``index`` (float64, the tensor's shape) holds, per element,
    ``batch * total + offset[k] + e`` for element e (canonical order) of source k, -1 for none."""

    index: torch.Tensor
    sources: list
    offsets: list
    total: int
    nonzero: bool = False
    origin: str | None = None   # the op that moved them: the name of the group they become


@dataclass
class _Score:
    """``q @ k^T`` (and what was done to it before the softmax)."""

    q: object
    k: object           # as multiplied: (..., D, Tk)
    blocked: object = None  # bool (Tq, Tk) or None
    probs: bool = False


@dataclass
class _Tok:
    """Token ids (or values computed from them only)."""


@dataclass
class _Param:
    name: str
    transposed: bool = False


@dataclass
class _Const:
    value: object = None   # tensor or None (unknown, e.g. a meta tensor)
    param: object = None   # _Param when it is a model parameter (or its transpose)


PLAIN = (0, False)  # the batch is the first axis


def _logical(full, batch):
    """The shape of one example: the batch axis removed (or divided by 2 where merged)."""
    full = tuple(full)
    axis, merged = batch
    if merged:
        return full[:axis] + (full[axis] // 2,) + full[axis + 1:]
    return full[:axis] + full[axis + 1:]


def _canon_perm(ch, ndim):
    return tuple(ch) + tuple(a for a in range(ndim) if a not in ch)


class _Builder:
    """One pass over the fx graph, mapping nodes to groups, layers and links."""

    def __init__(self, gm: fx.GraphModule, rec, prune_embeddings, prefix):
        self.gm = gm
        self.rec = rec
        self.prune_embeddings = prune_embeddings
        self.prefix = prefix
        self.val: dict[str, object] = {}
        self.cache: dict = {}  # (id of a _Moved, channel axes) -> its _Act
        self.notes: list[str] = []
        self.groups: dict[str, Group] = {}
        self.layers: list[Layer] = []
        self.links: list[Link] = []
        self.names: set[str] = set()
        self.used_layers: set[str] = set()
        self.uses: dict[int, list[int]] = {}  # id of a weight tensor -> indices in self.layers
        self.embedding_uses: set[int] = set()   # indices of layers that are embeddings
        self.alive: list = []
        self.inputs: list[str] = []
        self.params = {name for name, _ in gm.named_parameters(remove_duplicate=False)}
        self.buffers = {name for name, _ in gm.named_buffers()}
        self.reserved = {n.target for n in gm.graph.nodes if n.op == "call_module"
                         and isinstance(gm.get_submodule(n.target), PRUNABLE + _CONV_TRANSPOSE)}
        layer_ops = {"linear", "addmm", "matmul", "conv1d", "conv2d", "conv3d", "convolution",
                     "embedding", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
        self.layer_tensors = set()  # ids of the parameters used as weights of layers
        for n in gm.graph.nodes:
            if n.op == "call_function" and _canonical(n, gm) in layer_ops:
                for a in map(_through_transposes(gm), n.args):
                    if isinstance(a, fx.Node) and a.op == "get_attr" and str(a.target) in self.params:
                        self.reserved.add(self._strip(str(a.target)).removesuffix(".weight"))
                        if _canonical(n, gm) != "embedding":
                            self.layer_tensors.add(id(gm.get_parameter(str(a.target))))
            elif n.op == "call_module" and isinstance(gm.get_submodule(n.target),
                                                      PRUNABLE + _CONV_TRANSPOSE):
                self.layer_tensors.add(id(gm.get_submodule(n.target).weight))

    # names and groups ---------------------------------------------------
    def _strip(self, name):
        return name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else name

    def _path(self, node):
        if node.op == "call_module":
            return self._strip(node.target)
        stack = node.meta.get("nn_module_stack")
        if stack:
            path = list(stack.values())[-1]
            path = path[0] if isinstance(path, tuple) else path
            return self._strip(str(path))
        return None

    def _describe(self, node):
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            return f"{type(module).__name__} at module path {self._strip(node.target)!r}"
        target = node.target
        name = getattr(target, "__name__", None) or str(target)
        if isinstance(target, torch._ops.OpOverload):
            name = str(target)
        path = self._path(node)
        where = f" at module path {path!r}" if path else ""
        return f"{node.op} {name!r}{where} (fx node {node.name!r})"

    def _unique(self, name, layer=False):
        base, k = name, 0
        while name in self.names or (not layer and name in self.reserved):
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def _new_act(self, name, full, batch, ch, layer=False, nonzero=False):
        shape = _logical(full, batch)
        if any(a >= len(shape) for a in ch):
            raise UnsupportedOpError(f"internal: channel axes {ch} of a tensor of shape {shape}")
        perm = _canon_perm(ch, len(shape))
        channels = math.prod(shape[a] for a in ch)
        size = tuple(int(shape[a]) for a in perm[len(ch):])
        name = self._unique(name, layer)
        self.groups[name] = Group(name, int(channels), size)
        return _Act(name, tuple(full), batch, tuple(ch), nonzero)

    # main --------------------------------------------------------------
    def build(self) -> NetGraph:
        outputs = []
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node, len(placeholders))
            elif node.op == "output":
                for a in _flat(node.args, {}):
                    if isinstance(a, fx.Node) and isinstance(self.val.get(a.name), (_Act, _Moved)):
                        outputs.append(self._act(self.val[a.name], a).group)
                    elif isinstance(a, fx.Node) and isinstance(self.val.get(a.name), _Score):
                        raise UnsupportedOpError(
                            f"the model returns a product of two activations ({self._describe(a)})"
                            " that is not attention (softmax(q @ k^T) @ v); supported ops: "
                            f"{_SUPPORTED}")
            elif node.op == "get_attr":
                self._get_attr(node)
            else:
                self._visit(node)
        if not outputs:
            raise ModelError("the model returns no activation tensor")
        if not self.inputs:
            raise ModelError("no input reaches the outputs")
        layers, swaps = self._tie()
        graph = NetGraph(self.groups.values(), layers, self.links, self.inputs,
                         list(dict.fromkeys(outputs)), tuple(dict.fromkeys(self.notes)))
        return graph.rename(swaps) if swaps else graph

    def _use_name(self, name, tensor):
        """The op name of a layer applying weight `tensor` (docs/graph.md#weight-tying): `name`,
        or ``name@2``, ``name@3`` for later calls of the same weight under the same name."""
        if name not in self.used_layers:
            self.used_layers.add(name)
            return name
        holders = [self.layers[i].name for i in self.uses.get(id(tensor), ())]
        if name not in holders:
            raise UnsupportedOpError(f"two different weights would both be layer {name!r}")
        k = 2
        while f"{name}@{k}" in self.used_layers:
            k += 1
        self.used_layers.add(f"{name}@{k}")
        return f"{name}@{k}"

    def _add_layer(self, layer, tensor, embedding=False):
        if tensor is not None:
            self.alive.append(tensor)  # its id names it only while it lives
            self.uses.setdefault(id(tensor), []).append(len(self.layers))
        if embedding:
            self.embedding_uses.add(len(self.layers))
        self.layers.append(layer)

    def _tie(self):
        """The layers, with every later use of a weight tied to one layer of that weight: the
        first use that is not an embedding (the LM head, whose name the masks of an untied-embedding
        graph use too), else the first use. That layer holds the mask; the others read it
        (``param``), transposed where they apply the weight the other way round. Returns the
        layers and the renaming that gives the mask key the plain name (``embed`` rather than
        ``embed@2`` when the head ``F.linear(h, embed.weight)`` follows the embedding ``embed``):
        a swap of two layer names and of the groups named after them."""
        layers = list(self.layers)
        swaps = {}
        for indices in self.uses.values():
            if len(indices) < 2:
                continue
            heads = [i for i in indices if i not in self.embedding_uses]
            first = heads[0] if heads else indices[0]
            name = layers[first].name
            base = name.split("@")[0]
            holder = next((i for i in indices if layers[i].name == base), None)
            if holder is not None and holder != first:  # the mask key is the plain name
                swaps.update({base: name, name: base})
            primary = layers[first]
            for i in indices:
                if i == first:
                    continue
                use = layers[i]
                flipped = use.transposed != primary.transposed
                expected = tuple(reversed(primary.weight_shape)) if flipped else primary.weight_shape
                if (flipped and len(use.weight_shape) != 2) or use.weight_shape != expected \
                        or use.groups != primary.groups:
                    raise UnsupportedOpError(
                        f"layers {primary.name!r} and {use.name!r} share one weight but apply it "
                        f"as {primary.weight_shape} and {use.weight_shape} (groups "
                        f"{primary.groups}, {use.groups}); graphpai ties a weight used the same "
                        "way twice, or a 2-D weight and its transpose")
                layers[i] = replace(use, param=primary.name, param_transposed=flipped)
        return layers, swaps

    def _tensor(self, param_name):
        full = self.prefix + param_name if self.prefix and not param_name.startswith(self.prefix) \
            else param_name
        return self.gm.get_parameter(full)

    def _placeholder(self, node, count):
        r = self.rec.get(node.name)
        if r is None or r.shape is None or not isinstance(r.shape[0], int):
            self.val[node.name] = _Const(r.value if r else None)
            return
        if r.dtype is not None and not r.dtype.is_floating_point:
            self.val[node.name] = _Tok()
            return
        if len(r.shape) < 2:
            raise UnsupportedOpError(f"input {node.target!r} has shape {r.shape}; expected "
                                     "(batch, channels, ...)")
        name = "input" if count == 1 else str(node.target)
        act = self._new_act(name, r.shape, PLAIN, (0,))
        self.inputs.append(act.group)
        self.val[node.name] = act

    def _get_attr(self, node):
        target = str(node.target)
        r = self.rec.get(node.name)
        if target in self.params:
            self.val[node.name] = _Const(None, _Param(self._strip(target)))
        else:
            value = r.value if r is not None else None
            if value is None:
                try:
                    value = self.gm.get_buffer(target) if target in self.buffers else None
                except AttributeError:
                    value = None
            self.val[node.name] = _Const(value)

    def _kinds(self, node):
        vals = [self.val.get(a.name) for a in _flat(node.args, node.kwargs)
                if isinstance(a, fx.Node)]
        return vals

    def _visit(self, node):
        vals = self._kinds(node)
        name = _canonical(node, self.gm)
        if name in _SKIP:
            self.val[node.name] = _Const(None)
            return
        if node.op == "call_module" and isinstance(self.gm.get_submodule(node.target), nn.Embedding):
            return self._embedding_module(node)
        if name == "embedding":
            return self._embedding_function(node)
        if name in _SHAPE_ONLY:
            self.val[node.name] = self._constant(node)
            return
        if name == "getitem" and isinstance(node.args[0], fx.Node) and isinstance(
                self.val.get(node.args[0].name), _Tuple):
            items = self.val[node.args[0].name].items
            self.val[node.name] = items[self._py(node.args[1])]
            return
        if not any(isinstance(v, (_Act, _Moved, _Score)) for v in vals):
            if any(isinstance(v, _Tok) for v in vals):
                self.val[node.name] = _Tok()
            else:
                self.val[node.name] = self._constant(node)
            return
        if node.op == "call_module":
            return self._visit_module(node)
        return self._visit_function(node, name)

    def _constant(self, node):
        r = self.rec.get(node.name)
        name = _canonical(node, self.gm)
        args = [self.val.get(a.name) if isinstance(a, fx.Node) else a for a in node.args]
        if name in ("transpose", "permute") and args and isinstance(args[0], _Const) and \
                args[0].param is not None:
            return _Const(None, _Param(args[0].param.name, not args[0].param.transposed))
        if name == "identity" and args and isinstance(args[0], _Const) and args[0].param:
            return args[0]
        return _Const(r.value if r is not None else None)

    # helpers -----------------------------------------------------------
    def _arg(self, node, i, key, default=None):
        if len(node.args) > i:
            return node.args[i]
        return node.kwargs.get(key, default)

    def _py(self, a):
        """The recorded python value of an argument (ints computed from sizes included)."""
        if isinstance(a, fx.Node):
            r = self.rec.get(a.name)
            return r.value if r is not None else None
        if isinstance(a, (list, tuple)):
            return type(a)(self._py(b) for b in a)
        return a

    def _shape_of(self, node):
        r = self.rec.get(node.name)
        if r is None or r.shape is None:
            raise UnsupportedOpError(f"{self._describe(node)} does not return a tensor; "
                                     f"supported ops: {_SUPPORTED}")
        return r.shape

    def _act(self, v, node, ch=None, name=None):
        """`v` as an _Act with channel axes `ch` (None: its own or the natural ones)."""
        if isinstance(v, _Act):
            if ch is not None:
                ch = _resolve(ch, len(v.shape))
            if ch is None or tuple(ch) == v.ch:
                return v
            v = self._moved_of([v])
            v = _Moved(v[0][0], [v[1][0]], [0], v[2], nonzero=v[1][0].nonzero, origin=f"{node.name}.in")
        if isinstance(v, _Moved):
            return self._materialize(v, node, ch, name)
        raise UnsupportedOpError(f"{self._describe(node)} reads a value graphpai does not "
                                 f"model as an activation; supported ops: {_SUPPORTED}")

    def _index_of(self, act: _Act, offset, total):
        shape = act.shape
        perm = _canon_perm(act.ch, len(shape))
        canon = torch.arange(math.prod(shape), dtype=torch.float64).reshape(
            [shape[a] for a in perm])
        inverse = [perm.index(a) for a in range(len(shape))]
        logical = canon.permute(inverse) + offset
        axis, merged = act.batch
        full = torch.stack([logical, logical + total], dim=axis + (merged == "minor"))
        return full.reshape(act.full)

    def _moved_of(self, acts):
        """(index tensors, sources, total) for a list of _Act/_Moved operands."""
        sources, offsets, total = [], [], 0
        for a in acts:
            for s in ([a] if isinstance(a, _Act) else a.sources):
                if all(s is not t for t in sources):
                    sources.append(s)
        for s in sources:
            offsets.append(total)
            total += math.prod(s.shape)
        index = []
        for a in acts:
            if isinstance(a, _Act):
                k = next(i for i, s in enumerate(sources) if s is a)
                index.append(self._index_of(a, offsets[k], total))
            else:
                index.append(_reencode(a, sources, offsets, total))
        return index, sources, total, offsets

    def _materialize(self, mv: _Moved, node, ch=None, name=None):
        idx = mv.index
        full = tuple(idx.shape)
        defined = idx >= 0
        if not bool(defined.any()):
            raise UnsupportedOpError(f"{self._describe(node)} reads no activation element")
        batch = torch.where(defined, torch.div(idx, mv.total, rounding_mode="floor"),
                            torch.full_like(idx, -1))
        layout = _batch_layout(batch, defined)
        if layout is None:
            raise UnsupportedOpError(f"{self._describe(node)} mixes the examples of a batch; "
                                     "graphpai models ops that act on each example alone")
        logical = _first_example(idx, layout)
        ok = logical >= 0
        rel = torch.where(ok, logical - 0, torch.full_like(logical, -1))
        rel = torch.where(ok, torch.remainder(rel, mv.total), rel)
        offsets = torch.tensor(mv.offsets, dtype=torch.float64)
        src = torch.where(ok, torch.searchsorted(offsets, rel.contiguous(), right=True) - 1,
                          torch.full_like(rel, -1, dtype=torch.long))
        elem = torch.where(ok, rel - offsets[src.clamp(min=0)], rel)
        shape = tuple(logical.shape)
        if ch is None:
            ch = self._natural_axes(mv, src, elem, ok)
        ch = _resolve(ch, len(shape))
        perm = _canon_perm(ch, len(shape))
        src_c = src.permute(perm).reshape(-1).numpy()
        elem_c = elem.permute(perm).reshape(-1).numpy().astype(np.int64)
        target_ids = np.arange(len(src_c))
        key = (id(mv), tuple(ch))
        if key in self.cache:
            return self.cache[key]
        # the same elements in the same order as a source: the source's group, no link
        if len(mv.sources) == 1 and (src_c == 0).all() and np.array_equal(elem_c, target_ids):
            s = mv.sources[0]
            channels = math.prod(shape[a] for a in ch)
            size = tuple(shape[a] for a in _canon_perm(ch, len(shape))[len(ch):])
            if (channels, size) == (self.groups[s.group].channels, self.groups[s.group].size):
                act = _Act(s.group, full, layout, tuple(ch), mv.nonzero)
                self.cache[key] = act
                return act
        act = self._new_act(name or mv.origin or node.name, full, layout, tuple(ch),
                            nonzero=mv.nonzero)
        self.cache[key] = act
        tgt = self.groups[act.group]
        used = [k for k in range(len(mv.sources)) if (src_c == k).any()]
        if (len(used) == 1 and (src_c == used[0]).all() and len(ch) == len(shape) == 1
                and mv.sources[used[0]].ch == (0,) and np.array_equal(elem_c, target_ids)
                and tgt.channels == self.groups[mv.sources[used[0]].group].numel):
            self.links.append(Link(act.group, "flatten", (mv.sources[used[0]].group,),
                                   act.group, {}))
            return act
        maps, elements = [], []
        per_t = max(1, math.prod(tgt.size))
        for k in used:
            s = self.groups[mv.sources[k].group]
            sel = src_c == k
            t, e = target_ids[sel], elem_c[sel]
            per_s = max(1, math.prod(s.size))
            elements.append(ChannelMap(t, e))
            maps.append(ChannelMap(t // per_t, e // per_s))
        op = _canonical(node, self.gm) if node.op != "call_module" else type(
            self.gm.get_submodule(node.target)).__name__
        self.links.append(Link(act.group, "regroup", tuple(mv.sources[k].group for k in used),
                               act.group, {"maps": tuple(maps), "elements": tuple(elements),
                                           "op": op}))
        return act

    def _natural_axes(self, mv, src, elem, ok):
        """The axes along which the source channel changes (those are channels)."""
        shape = tuple(src.shape)
        if not shape:
            return ()
        per = torch.tensor([max(1, math.prod(self.groups[s.group].size)) for s in mv.sources],
                           dtype=torch.float64)
        chan = torch.where(ok, src.to(torch.float64) * 1e12 + torch.div(
            elem, per[src.clamp(min=0)], rounding_mode="floor"), torch.full_like(elem, -1))
        axes = []
        for a in range(len(shape)):
            if shape[a] < 2:
                continue
            d = chan.narrow(a, 1, shape[a] - 1) != chan.narrow(a, 0, shape[a] - 1)
            both = ok.narrow(a, 1, shape[a] - 1) & ok.narrow(a, 0, shape[a] - 1)
            if bool((d & both).any()):
                axes.append(a)
        return tuple(axes)

    def _moved_result(self, node, acts, run):
        """Run `run(index tensors)` (the op on index tensors) and keep the result lazy."""
        index, sources, total, offsets = self._moved_of(acts)
        out = run(index)
        nonzero = all(getattr(a, "nonzero", False) for a in acts)
        if isinstance(out, (tuple, list)):
            return [_Moved(o, sources, offsets, total, nonzero) for o in out]
        return _Moved(out, sources, offsets, total, nonzero)

    # modules -----------------------------------------------------------
    def _visit_module(self, node):
        module = self.gm.get_submodule(node.target)
        v = self.val[node.args[0].name] if node.args and isinstance(node.args[0], fx.Node) else None
        if isinstance(module, PRUNABLE):
            weight = _stored_weight(module)
            if isinstance(module, nn.Linear):
                return self._linear(node, v, self._strip(node.target), tuple(weight.shape),
                                    module.bias is not None, False, weight)
            if module.padding_mode != "zeros":
                raise UnsupportedOpError(
                    f"{type(module).__name__} at module path {node.target!r} uses padding_mode="
                    f"{module.padding_mode!r}; graphpai models zero padding only")
            return self._conv(node, v, self._strip(node.target), tuple(weight.shape),
                              module.stride, module.padding, module.dilation, module.groups,
                              module.bias is not None, tensor=weight)
        if isinstance(module, _CONV_TRANSPOSE):
            if module.padding_mode != "zeros":
                raise UnsupportedOpError(
                    f"{type(module).__name__} at module path {node.target!r} uses padding_mode="
                    f"{module.padding_mode!r}; graphpai models zero padding only")
            weight = _stored_weight(module)
            return self._conv(node, v, self._strip(node.target), tuple(module.weight.shape),
                              module.stride, module.padding, module.dilation, module.groups,
                              module.bias is not None, transposed=True, tensor=weight)
        if isinstance(module, tuple(_POOL_MODULES)):
            mode = _POOL_MODULES.get(type(module)) or (
                "max" if "Max" in type(module).__name__ else "avg")
            return self._pool(node, v, mode, _module_pool_params(module), False)
        if isinstance(module, nn.LayerNorm):
            return self._norm(node, v, len(module.normalized_shape), True)
        if _RMSNORM and isinstance(module, _RMSNORM):
            return self._norm(node, v, len(module.normalized_shape), False)
        if isinstance(module, nn.GroupNorm):
            return self._group_norm(node, v, module.num_groups)
        if isinstance(module, (nn.Flatten, nn.PixelShuffle, nn.PixelUnshuffle)) or (
                isinstance(module, nn.Upsample) and module.mode == "nearest"):
            return self._move(node, [v], lambda idx: module(idx[0]))
        if isinstance(module, nn.Upsample) and module.mode in ("linear", "bilinear", "trilinear"):
            return self._interpolate(node, v, bool(module.align_corners))
        if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
            return self._softmax(node, v)
        if isinstance(module, _FOLDED_MODULES) or (
                type(module).__module__ == "torch.nn.modules.activation"
                and not isinstance(module, nn.MultiheadAttention)):
            name = type(module).__name__.lower()
            if isinstance(module, _FOLDED_MODULES):
                name = "identity"
            return self._unary(node, v, "sigmoid" if name in ("sigmoid", "hardsigmoid",
                                                               "softplus") else name)
        raise UnsupportedOpError(
            f"unsupported module {self._describe(node)}; supported ops: {_SUPPORTED}")

    # functions ---------------------------------------------------------
    def _visit_function(self, node, name):
        args = [self.val.get(a.name) if isinstance(a, fx.Node) else a for a in node.args]
        v = args[0] if args else None
        if name in ("add", "sub"):
            return self._add(node, args)
        if name in ("mul", "div"):
            return self._mul(node, args, name)
        if name == "matmul":
            return self._matmul(node, args)
        if name in ("linear", "addmm"):
            return self._linear_function(node, name, args)
        if name in ("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d",
                    "conv_transpose2d", "conv_transpose3d"):
            return self._conv_function(node, args)
        if name == "sdpa":
            return self._sdpa(node, args)
        if name in ("softmax", "log_softmax") and isinstance(v, _Score):
            return self._softmax(node, v)
        if name == "masked_fill" and isinstance(v, _Score):
            return self._score_mask(node, v, self._arg(node, 1, "mask"), self._arg(node, 2, "value"))
        if isinstance(v, _Score):
            if name in ("identity", "softmax", "log_softmax"):
                self.val[node.name] = v
                return
            raise UnsupportedOpError(f"{self._describe(node)} acts on attention scores; "
                                     "graphpai models scaling, masking and softmax of scores")
        if name == "layer_norm":
            shape = self._py(self._arg(node, 1, "normalized_shape"))
            return self._norm(node, v, len(shape) if isinstance(shape, (list, tuple)) else 1, True)
        if name == "rms_norm":
            shape = self._py(self._arg(node, 1, "normalized_shape"))
            return self._norm(node, v, len(shape) if isinstance(shape, (list, tuple)) else 1, False)
        if name == "group_norm":
            return self._group_norm(node, v, int(self._py(self._arg(node, 1, "num_groups"))))
        if name in _POOL_FUNCTIONS:
            act = self._act(v, node, (0,))
            params = _function_pool_params(node, self.gm, self.groups[act.group], self._py)
            return self._pool(node, act, _POOL_FUNCTIONS[name], params, True)
        if name in ("mean", "amax", "max", "sum", "amin", "min") and self._is_global_pool(node, v):
            return self._global_pool(node, v, "avg" if name in ("mean", "sum") else "max", name)
        if name in _REDUCE:
            return self._reduce(node, v, name)
        if name == "cat" and self._is_channel_cat(node):
            srcs = [self.val[a.name] for a in node.args[0]]
            acts = [self._act(s, node, (0,)) for s in srcs]
            return self._link(node, "concat", acts, (0,))
        if name in _MOVE:
            return self._move_function(node, name)
        if name == "where":
            raise UnsupportedOpError(f"{self._describe(node)} selects between tensors by a "
                                     f"condition; supported ops: {_SUPPORTED}")
        if name in _ZERO_KEEPING or name in _NONZERO or name == "pow" or name == "softmax":
            if name == "pow":
                exponent = self._py(self._arg(node, 1, "exponent"))
                name = "sigmoid" if isinstance(exponent, (int, float)) and exponent <= 0 \
                    else "identity"
            return self._unary(node, v, name)
        raise UnsupportedOpError(f"unsupported op {self._describe(node)}; supported ops: "
                                 f"{_SUPPORTED}")

    # ops ---------------------------------------------------------------
    def _unary(self, node, v, name):
        full = self._shape_of(node)
        if isinstance(v, _Score):
            self.val[node.name] = v
            return
        if full and isinstance(full[0], tuple):  # (output, statistics...): the output is first
            self.rec[node.name] = _Rec(full[0])
            self._unary(node, v, name)
            self.val[node.name] = _Tuple([self.val[node.name]] + [_Const(None)] * (len(full) - 1))
            return
        shape = tuple(v.index.shape) if isinstance(v, _Moved) else v.full
        if tuple(full) != tuple(shape):
            raise UnsupportedOpError(f"{self._describe(node)} changes the shape {shape[1:]} -> "
                                     f"{tuple(full)[1:]}; only elementwise ops may do so silently")
        if name in _NONZERO:
            nonzero = True
        elif name in ("identity", "neg", "pos", "abs", "sqrt", "sigmoid", "square"):
            nonzero = v.nonzero
        else:
            nonzero = False
        if isinstance(v, _Act):
            self.val[node.name] = _Act(v.group, v.full, v.batch, v.ch, nonzero)
        else:
            self.val[node.name] = _Moved(v.index, v.sources, v.offsets, v.total, nonzero, v.origin)

    def _softmax(self, node, v):
        if isinstance(v, _Score):
            self.val[node.name] = _Score(v.q, v.k, v.blocked, probs=True)
            return
        return self._unary(node, v, "identity")  # softmax of logits: folded, as before

    def _linear(self, node, v, name, weight_shape, bias, transposed, tensor=None):
        name = self._use_name(name, tensor)
        if not isinstance(v, (_Act, _Moved)):
            raise UnsupportedOpError(f"{self._describe(node)} does not read an activation")
        act = self._act(v, node, (-1,))
        full = self._shape_of(node)
        tgt = self._new_act(name, full, act.batch, (len(act.shape) - 1,), layer=True)
        src_group = self.groups[act.group]
        if src_group.channels != (weight_shape[1] if not transposed else weight_shape[0]):
            raise UnsupportedOpError(f"{self._describe(node)} reads {src_group.channels} "
                                     f"features but its weight is {weight_shape}")
        shape_c = tuple(reversed(weight_shape)) if transposed else tuple(weight_shape)
        self._add_layer(Layer(name, "linear", shape_c, act.group, tgt.group, bias=bias,
                              in_size=src_group.size, out_size=self.groups[tgt.group].size,
                              transposed=transposed), tensor)
        self.val[node.name] = tgt

    def _linear_function(self, node, name, args):
        if name == "linear":
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else node.kwargs.get("bias")
            transposed = False
        else:  # addmm(bias, x, W): x @ W + bias
            b, x, w = args[0], args[1], args[2]
            transposed = True
        if not isinstance(w, _Const) or w.param is None:
            raise UnsupportedOpError(f"{self._describe(node)} multiplies by a weight that is not "
                                     f"a parameter; supported ops: {_SUPPORTED}")
        transposed = transposed != w.param.transposed
        shape = self._param_shape(w.param.name)
        layer = w.param.name.removesuffix(".weight")
        return self._linear(node, x, layer, shape, b is not None, transposed,
                            self._tensor(w.param.name))

    def _param_shape(self, name):
        return tuple(self._tensor(name).shape)

    def _conv(self, node, v, name, weight_shape, stride, padding, dilation, groups, bias,
              transposed=False, tensor=None):
        name = self._use_name(name, tensor)
        act = self._act(v, node, (0,))
        src = self.groups[act.group]
        ndim = len(weight_shape) - 2
        dilation = _tuple(dilation, ndim)
        if isinstance(padding, str):
            if padding == "valid":
                padding = ((0, 0),) * ndim
            else:  # 'same': PyTorch pads the extra pixel at the end
                total = [d * (k - 1) for d, k in zip(dilation, weight_shape[2:])]
                padding = tuple((t // 2, t - t // 2) for t in total)
        else:
            padding = _pairs(padding, ndim)
        full = self._shape_of(node)
        tgt = self._new_act(name, full, PLAIN, (0,), layer=True)
        if transposed:  # the module holds (C_in, C_out/groups, k): the layer is (C_out, C_in/g, k)
            g = int(groups)
            c_in, per_out = weight_shape[:2]
            weight_shape = (per_out * g, c_in // g) + tuple(weight_shape[2:])
        self._add_layer(Layer(
            name, "conv", tuple(weight_shape), act.group, tgt.group,
            stride=_tuple(stride, ndim), padding=padding, dilation=dilation, groups=int(groups),
            bias=bias, in_size=src.size, out_size=self.groups[tgt.group].size,
            transposed=transposed), tensor)
        self.val[node.name] = tgt

    def _conv_function(self, node, args):
        x, w = args[0], args[1]
        if not isinstance(w, _Const) or w.param is None:
            raise UnsupportedOpError(f"{self._describe(node)} convolves with a weight that is "
                                     "not a parameter")
        shape = self._param_shape(w.param.name)
        nd = len(shape) - 2
        get = lambda i, k, d: self._py(self._arg(node, i, k, d))  # noqa: E731
        if _canonical(node, self.gm) in ("conv_transpose1d", "conv_transpose2d",
                                          "conv_transpose3d"):
            return self._conv(node, x, w.param.name.removesuffix(".weight"), shape,
                              get(3, "stride", 1) or 1, get(4, "padding", 0), get(7, "dilation", 1),
                              get(6, "groups", 1) or 1, get(2, "bias", None) is not None,
                              transposed=True, tensor=self._tensor(w.param.name))
        if _canonical(node, self.gm) == "convolution" and get(6, "transposed", False):
            raise UnsupportedOpError(f"{self._describe(node)} is a transposed convolution; "
                                     f"supported ops: {_SUPPORTED}")
        bias = get(2, "bias", None) is not None or (len(node.args) > 2 and node.args[2] is not None)
        groups_at = 8 if _canonical(node, self.gm) == "convolution" else 6
        return self._conv(node, x, w.param.name.removesuffix(".weight"), shape,
                          get(3, "stride", 1) or 1, get(4, "padding", 0), get(5, "dilation", 1),
                          get(groups_at, "groups", 1) or 1, bias, tensor=self._tensor(w.param.name))
        del nd

    def _embedding_module(self, node):
        module = self.gm.get_submodule(node.target)
        return self._embedding(node, self._strip(node.target), tuple(module.weight.shape),
                               _stored_weight(module))

    def _embedding_function(self, node):
        # aten.embedding(weight, ids) or F.embedding(ids, weight)
        a0 = self.val.get(node.args[0].name) if isinstance(node.args[0], fx.Node) else None
        w, ids = (node.args[0], node.args[1]) if isinstance(a0, _Const) and a0.param else (
            node.args[1], node.args[0])
        wv = self.val.get(w.name) if isinstance(w, fx.Node) else None
        iv = self.val.get(ids.name) if isinstance(ids, fx.Node) else None
        if not isinstance(iv, _Tok):
            self.val[node.name] = self._constant(node)
            return
        if not isinstance(wv, _Const) or wv.param is None:
            raise UnsupportedOpError(f"{self._describe(node)} looks up a weight that is not a "
                                     "parameter")
        path = self._path(node) or wv.param.name.removesuffix(".weight")
        return self._embedding(node, path, self._param_shape(wv.param.name),
                               self._tensor(wv.param.name))

    def _note(self, node, text):
        self.notes.append(f"{self._describe(node)}: {text}")

    def _embedding(self, node, path, weight_shape, tensor=None):
        vals = self._kinds(node)
        if not any(isinstance(v, _Tok) for v in vals):
            self.val[node.name] = self._constant(node)
            return
        full = self._shape_of(node)
        if not self.prune_embeddings:
            if any(_tied_layer(self, node)):
                self._note(node, "the embedding shares its weight with a layer; the graph takes "
                                 "every embedding entry as kept (to_graph(..., "
                                 "prune_embeddings=True) applies the layer's mask to it too)")
            name = "input" if "input" not in self.names else path
            act = self._new_act(name, full, PLAIN, (len(full) - 2,))
            self.inputs.append(act.group)
            self.val[node.name] = act
            return
        vocab, dim = weight_shape
        onehot_full = tuple(full[:-1]) + (vocab,)
        src = self._new_act("input" if "input" not in self.names else f"{path}.ids",
                            onehot_full, PLAIN, (len(full) - 2,))
        self.inputs.append(src.group)
        name = self._use_name(path, tensor)
        tgt = self._new_act(name, full, PLAIN, (len(full) - 2,), layer=True)
        g = self.groups[src.group]
        self._add_layer(Layer(name, "linear", (dim, vocab), src.group, tgt.group,
                              in_size=g.size, out_size=g.size, transposed=True), tensor,
                        embedding=True)
        self.val[node.name] = tgt

    def _norm(self, node, v, ndims, centred):
        act = self._act(v, node, tuple(range(-ndims, 0)))
        self._link(node, "norm", [act], act.ch, {"centred": bool(centred), "groups": 1,
                                                  "positions": "each"})

    def _group_norm(self, node, v, groups):
        act = self._act(v, node, (0,))
        self._link(node, "norm", [act], (0,), {"centred": True, "groups": int(groups),
                                                "positions": "all"})

    def _link(self, node, kind, acts, ch, params=None, name=None):
        full = self._shape_of(node)
        batch = acts[0].batch
        target = self._new_act(name or (self._strip(node.target) if node.op == "call_module"
                                        else node.name), full, batch, tuple(ch))
        self.links.append(Link(target.group, kind, tuple(a.group for a in acts), target.group,
                               params or {}))
        self.val[node.name] = target
        return target

    def _pool(self, node, v, mode, params, functional):
        act = self._act(v, node, (0,))
        name = self._strip(node.target) if node.op == "call_module" else node.name
        params = dict(params, mode=mode, functional=functional)
        self._link(node, "pool", [act], (0,), params, name=name)

    def _is_global_pool(self, node, v):
        if not isinstance(v, _Act) or v.ch != (0,) or v.batch != PLAIN or len(v.shape) < 2:
            return False
        full = self._shape_of(node)
        dims = self._py(self._arg(node, 1, "dim"))
        if dims is None:
            return False
        dims = [dims] if isinstance(dims, int) else list(dims)
        nd = len(v.full)
        dims = sorted(d % nd for d in dims)
        return dims == list(range(2, nd)) and full[:2] == v.full[:2] and \
            math.prod(full[2:]) == 1

    def _global_pool(self, node, v, mode, name):
        full = self._shape_of(node)
        params = {"output_size": tuple(full[2:]), "adaptive": True}
        if name == "sum":
            raise UnsupportedOpError(f"{self._describe(node)} sums over all pixels; use mean")
        self._pool(node, v, mode, params, True)

    def _is_channel_cat(self, node):
        seq = node.args[0]
        if not isinstance(seq, (list, tuple)) or not seq:
            return False
        vals = [self.val.get(a.name) if isinstance(a, fx.Node) else None for a in seq]
        if not all(isinstance(v, _Act) and v.ch == (0,) and v.batch == PLAIN for v in vals):
            return False
        dim = self._py(self._arg(node, 1, "dim", 0))
        ndim = len(vals[0].full)
        return dim % ndim == 1 and len({v.full[2:] for v in vals}) == 1

    def _move_function(self, node, name):
        if name == "interpolate":
            target = str(getattr(node.target, "__name__", node.target))
            mode = self._py(self._arg(node, 3, "mode", "nearest")) if "upsample" not in target \
                else ("nearest" if "nearest" in target else "bilinear")
            if mode in ("linear", "bilinear", "trilinear") or "bilinear" in target:
                corners = self._py(self._arg(node, 4, "align_corners", False))
                if "upsample" in target:
                    corners = self._py(self._arg(node, 2, "align_corners", False))
                v = self.val[node.args[0].name]
                return self._interpolate(node, v, bool(corners))
            if mode not in ("nearest", "nearest-exact"):
                raise UnsupportedOpError(f"{self._describe(node)} interpolates with mode {mode!r};"
                                         " graphpai models nearest and (bi/tri)linear upsampling")
        if node.op == "call_method":
            fn = lambda *a, **k: getattr(a[0], node.target)(*a[1:], **k)  # noqa: E731
        else:
            fn = node.target
        return self._move(node, None, fn)

    def _interpolate(self, node, v, align_corners):
        """(Bi/tri)linear interpolation: output pixel t reads the input pixels with a non-zero
        weight, per axis (the weights are a product of one 1-D weight per axis): a ``regroup``
        link whose element map is many to one, like a reduction."""
        import scipy.sparse as sp

        act = self._act(v, node, (0,))
        src = self.groups[act.group]
        full = self._shape_of(node)
        out_size = tuple(int(n) for n in full[2:])
        combined = None
        for length, target in zip(src.size, out_size):
            eye = torch.eye(length, dtype=torch.float64).reshape(length, 1, length)
            m = F.interpolate(eye, size=target, mode="linear", align_corners=align_corners)[:, 0]
            m = sp.csr_array((m != 0).numpy())
            combined = m if combined is None else sp.csr_array(sp.kron(combined, m))
        s_idx, t_idx = combined.nonzero()
        per_s, per_t = max(1, math.prod(src.size)), max(1, math.prod(out_size))
        channel = np.repeat(np.arange(src.channels), len(s_idx))
        rows = channel * per_t + np.tile(t_idx, src.channels)
        cols = channel * per_s + np.tile(s_idx, src.channels)
        target = self._new_act(node.name, full, PLAIN, (0,))
        n = src.channels
        self.links.append(Link(target.group, "regroup", (act.group,), target.group, {
            "maps": (ChannelMap(np.arange(n), np.arange(n)),),
            "elements": (ChannelMap(rows, cols),), "op": "interpolate"}))
        self.val[node.name] = target

    def _move(self, node, vals, fn):
        """An op that only moves elements: run it on index tensors."""
        operands = []

        def collect(a):
            if isinstance(a, fx.Node):
                v = self.val.get(a.name)
                if isinstance(v, (_Act, _Moved)):
                    operands.append(v)

        if vals is None:
            for a in _flat(node.args, node.kwargs):
                collect(a)
        else:
            operands = [v for v in vals if isinstance(v, (_Act, _Moved))]
        if not operands:
            self.val[node.name] = self._constant(node)
            return
        index, sources, total, offsets = self._moved_of(operands)
        table = {id(v): t for v, t in zip(operands, index)}

        def sub(a):
            if isinstance(a, fx.Node):
                v = self.val.get(a.name)
                if isinstance(v, (_Act, _Moved)):
                    return table[id(v)]
                if isinstance(v, _Const) and isinstance(v.value, torch.Tensor):
                    value = v.value
                    if value.is_floating_point() and _canonical(node, self.gm) in ("cat", "stack"):
                        return torch.full(value.shape, -1.0, dtype=torch.float64)
                    return value
                if isinstance(v, _Const) and v.param is not None:
                    p = self.gm.get_parameter(self._full_param(v.param.name))
                    return torch.full(p.shape, -1.0, dtype=torch.float64)
                r = self.rec.get(a.name)
                if isinstance(v, _Const) and r is not None and isinstance(r.shape, tuple) and \
                        all(isinstance(n, int) for n in r.shape) and r.dtype is not None and \
                        r.dtype.is_floating_point:
                    # a constant of unknown value (a meta device): its elements have no source
                    return torch.full(r.shape, -1.0, dtype=torch.float64)
                return self._py(a)
            return a

        try:
            with torch.no_grad():
                if vals is None:
                    out = fn(*_nested(tuple(node.args), sub), **_nested(dict(node.kwargs), sub))
                else:
                    out = fn(index)
        except Exception as exc:
            raise UnsupportedOpError(f"{self._describe(node)} could not be followed element by "
                                     f"element ({type(exc).__name__}: {_first_line(exc)})") from None
        nonzero = all(getattr(a, "nonzero", False) for a in operands)
        origin = self._strip(node.target) if node.op == "call_module" else node.name
        if isinstance(out, (tuple, list)):
            self.val[node.name] = _Tuple([
                _Moved(_as_index(o), sources, offsets, total, nonzero, f"{origin}.{k}")
                for k, o in enumerate(out)])
        else:
            self.val[node.name] = _Moved(_as_index(out), sources, offsets, total, nonzero, origin)

    def _full_param(self, name):
        return self.prefix + name if self.prefix else name

    def _add(self, node, args):
        acts = [a for a in args if isinstance(a, (_Act, _Moved))]
        full = self._shape_of(node)
        if any(isinstance(a, _Score) for a in args):
            score = next(a for a in args if isinstance(a, _Score))
            other = next((a for a in args if a is not score), None)
            return self._score_add(node, score, other)
        if len(acts) == 1:
            v = acts[0]
            other = next(a for a in args if a is not v)
            nonzero = v.nonzero or _nonzero_constant(other)
            shape = tuple(v.index.shape) if isinstance(v, _Moved) else v.full
            if tuple(shape) != tuple(full):
                moved = self._broadcast(v, full)
                self.val[node.name] = _Moved(moved.index, moved.sources, moved.offsets,
                                             moved.total, nonzero, node.name)
                return
            self._unary(node, v, "identity")
            cur = self.val[node.name]
            cur.nonzero = nonzero
            return
        operands = [self._broadcast(a, full) if _full(a) != tuple(full) else a for a in acts]
        first = self._act(operands[0], node)
        rest = [self._act(a, node, first.ch) for a in operands[1:]]
        self._link(node, "add", [first] + rest, first.ch, {})

    def _broadcast(self, v, full):
        index, sources, total, offsets = self._moved_of([v])
        return _Moved(torch.broadcast_to(index[0], tuple(full)).contiguous(), sources, offsets,
                      total, v.nonzero)

    def _mul(self, node, args, name):
        full = self._shape_of(node)
        if any(isinstance(a, _Score) for a in args):
            score = next(a for a in args if isinstance(a, _Score))
            self.val[node.name] = score
            return
        acts = [a for a in args if isinstance(a, (_Act, _Moved))]
        if len(acts) == 1:
            v = acts[0]
            other = next(a for a in args if a is not v)
            if name == "div" and other is v:
                raise UnsupportedOpError(f"{self._describe(node)} divides a constant by an "
                                         "activation")
            zeros = _zero_pattern(other)
            if isinstance(other, _Const) and other.param is None and isinstance(
                    other.value, torch.Tensor) and other.value.is_meta:
                self._note(node, "a constant factor whose values are unknown (meta device) is "
                                 "taken as non-zero everywhere")
            if zeros is not None and name == "mul":
                moved = self._broadcast(v, full)
                index = moved.index.clone()
                index[torch.broadcast_to(zeros, tuple(full))] = -1
                self.val[node.name] = _Moved(index, moved.sources, moved.offsets, moved.total,
                                             False, node.name)
                return
            if _full(v) != tuple(full):
                self.val[node.name] = self._broadcast(v, full)
                return
            return self._unary(node, v, "identity")
        if name == "div" and args[1] is args[0]:
            return self._unary(node, args[0], "identity")
        operands = [self._broadcast(a, full) if _full(a) != tuple(full) else a for a in acts]
        gating = [not a.nonzero for a in acts]
        if name == "div":
            gating[1] = False  # a denominator is non-zero where it is defined
        first = self._act(operands[0], node)
        rest = [self._act(a, node, first.ch) for a in operands[1:]]
        srcs = [first] + rest
        n = self.groups[first.group].channels
        maps = tuple(ChannelMap(np.arange(n), np.arange(n)) for _ in srcs)
        target = self._link(node, "mul", srcs, first.ch, {"maps": maps, "gating": tuple(gating)})
        target.nonzero = not any(gating)

    # attention ---------------------------------------------------------
    def _matmul(self, node, args):
        a, b = args[0], args[1]
        if isinstance(a, _Score) and a.probs and isinstance(b, (_Act, _Moved)):
            return self._attention(node, a.q, a.k, b, True, a.blocked)
        if isinstance(b, _Const) and b.param is not None and isinstance(a, (_Act, _Moved)):
            shape = self._param_shape(b.param.name)
            transposed = not b.param.transposed
            return self._linear(node, a, b.param.name.removesuffix(".weight"), shape, False,
                                transposed, self._tensor(b.param.name))
        if isinstance(a, (_Act, _Moved)) and isinstance(b, (_Act, _Moved)):
            self.val[node.name] = _Score(a, b)
            return
        raise UnsupportedOpError(f"unsupported product {self._describe(node)}; graphpai models "
                                 "x @ W with W a parameter and attention softmax(q @ k^T) @ v")

    def _score_mask(self, node, score, mask_node, value):
        mask = self.val.get(mask_node.name) if isinstance(mask_node, fx.Node) else None
        value = self._py(value)
        blocked = score.blocked
        if isinstance(mask, _Const) and not _known(mask.value):
            self._note(node, "an attention mask whose values are unknown (meta device): every "
                             "query-key pair is taken as allowed")
        if isinstance(mask, _Tok):
            self._note(node, "an attention mask computed from an input (attention_mask=): "
                             "every query-key pair is taken as allowed")
        if isinstance(mask, _Const) and _known(mask.value) and (
                isinstance(value, (int, float)) and value <= _BLOCKED):
            m = mask.value.to(torch.bool)
            m = m.reshape((-1,) + tuple(m.shape[-2:])).all(dim=0) if m.dim() > 2 else m
            blocked = m if blocked is None else (blocked | m)
        self.val[node.name] = _Score(score.q, score.k, blocked, score.probs)

    def _score_add(self, node, score, other):
        blocked = score.blocked
        if isinstance(other, _Tok):
            self._note(node, "an attention mask computed from an input (attention_mask=): "
                             "every query-key pair is taken as allowed")
        if isinstance(other, _Const) and _known(other.value):
            m = other.value <= _BLOCKED
            m = m.reshape((-1,) + tuple(m.shape[-2:])).all(dim=0) if m.dim() > 2 else m
            blocked = m if blocked is None else (blocked | m)
        elif isinstance(other, (_Act, _Moved)):
            raise UnsupportedOpError(f"{self._describe(node)} adds an activation to attention "
                                     "scores (a learned bias); not modelled")
        self.val[node.name] = _Score(score.q, score.k, blocked, score.probs)

    def _sdpa(self, node, args):
        q, k, v = args[0], args[1], args[2]
        mask = self._arg(node, 3, "attn_mask")
        causal = self._py(self._arg(node, 5, "is_causal", False))
        blocked = None
        mv = self.val.get(mask.name) if isinstance(mask, fx.Node) else None
        if isinstance(mv, _Const) and not _known(mv.value):
            self._note(node, "an attention mask whose values are unknown (meta device): every "
                             "query-key pair is taken as allowed")
        if isinstance(mv, _Tok):
            self._note(node, "an attention mask computed from an input (attention_mask=): "
                             "every query-key pair is taken as allowed")
        if isinstance(mv, _Const) and _known(mv.value):
            m = mv.value
            m = ~m if m.dtype == torch.bool else m <= _BLOCKED
            blocked = m.reshape((-1,) + tuple(m.shape[-2:])).all(dim=0) if m.dim() > 2 else m
        elif isinstance(mv, (_Act, _Moved)):
            raise UnsupportedOpError(f"{self._describe(node)} takes an attention mask computed "
                                     "from activations; not modelled")
        if causal:
            tq, tk = _full(q)[-2], _full(k)[-2]
            c = torch.ones(tq, tk, dtype=torch.bool).triu(1 + tk - tq)
            blocked = c if blocked is None else blocked | c
        return self._attention(node, q, k, v, False, blocked)

    def _attention(self, node, q, k, v, k_transposed, blocked):
        if len(_full(q)) < 3:
            raise UnsupportedOpError(f"{self._describe(node)}: attention needs (batch, ..., "
                                     "tokens, features) operands")

        def axes(last):
            return lambda n: tuple(range(n - 2)) + (n - 1 if last else n - 2,)

        qa = self._act(q, node, axes(True), name=f"{node.name}.q")
        ka = self._act(k, node, axes(not k_transposed), name=f"{node.name}.k")
        va = self._act(v, node, axes(True), name=f"{node.name}.v")
        nq = len(qa.shape)
        heads = tuple(range(nq - 2))
        h = math.prod(qa.shape[a] for a in heads)
        if math.prod(ka.shape[a] for a in heads) != h or math.prod(
                va.shape[a] for a in heads) != h:
            raise UnsupportedOpError(f"{self._describe(node)}: q, k and v have different heads")
        gq, gk, gv = (self.groups[a.group] for a in (qa, ka, va))
        if gq.channels != gk.channels:
            raise UnsupportedOpError(f"{self._describe(node)}: q and k widths differ")
        d, e = gq.channels // h, gv.channels // h
        allowed = None
        if blocked is not None:
            b = torch.as_tensor(blocked, dtype=torch.bool)
            tq, tk = math.prod(gq.size), math.prod(gk.size)
            b = torch.broadcast_to(b, (tq, tk)) if b.dim() <= 2 else b.reshape(tq, tk)
            if bool(b.any()):
                t, s = np.nonzero(~b.numpy())
                allowed = ChannelMap(t, s)
        pairs = tuple(range(h * d))
        params = {"q": pairs, "k": pairs, "pair_head": tuple(c // d for c in pairs),
                  "v": tuple(range(h * e)), "v_head": tuple(c // e for c in range(h * e)),
                  "allowed": allowed, "op": _canonical(node, self.gm)}
        self._link(node, "attention", [qa, ka, va], heads + (nq - 1,), params)

    # reductions --------------------------------------------------------
    def _reduce(self, node, v, name):
        full = self._shape_of(node)
        if not full or not isinstance(full[0], int):
            raise UnsupportedOpError(f"{self._describe(node)} returns several tensors "
                                     "(values and indices); use amax/amin")
        dims = self._py(self._arg(node, 1, "dim"))
        keep = bool(self._py(self._arg(node, 2, "keepdim", False)))
        if dims is None or dims == [] or dims == ():
            raise UnsupportedOpError(f"{self._describe(node)} reduces over every axis, the "
                                     "batch included")
        act = self._act(v, node)
        nd = len(act.full)
        dims = sorted({d % nd for d in ([dims] if isinstance(dims, int) else dims)})
        b_axis, merged = act.batch
        if b_axis in dims:
            raise UnsupportedOpError(f"{self._describe(node)} reduces over the batch")
        axes = [d if merged or d < b_axis else d - 1 for d in dims]
        shape = act.shape
        kept = tuple(1 if a in axes else n for a, n in enumerate(shape))
        ch_k = tuple(a for a in act.ch if a not in axes)
        ch_out = ch_k if keep else tuple(a - sum(1 for d in axes if d < a) for a in ch_k)
        target = self._new_act(node.name, full, act.batch, ch_out)
        perm_t = _canon_perm(ch_k, len(kept))
        canon_t = torch.arange(math.prod(kept), dtype=torch.float64).reshape(
            [kept[a] for a in perm_t]).permute([perm_t.index(a) for a in range(len(kept))])
        perm_s = _canon_perm(act.ch, len(shape))
        t_c = torch.broadcast_to(canon_t, shape).permute(perm_s).reshape(-1).numpy().astype(
            np.int64)
        e_c = np.arange(len(t_c))
        tg, sg = self.groups[target.group], self.groups[act.group]
        per_t, per_s = max(1, math.prod(tg.size)), max(1, math.prod(sg.size))
        self.links.append(Link(target.group, "reduce", (act.group,), target.group, {
            "maps": (ChannelMap(t_c // per_t, e_c // per_s),),
            "elements": (ChannelMap(t_c, e_c),), "op": name}))
        self.val[node.name] = target


@dataclass
class _Tuple:
    items: list = field(default_factory=list)


def _full(v):
    if isinstance(v, _Act):
        return v.full
    if isinstance(v, _Moved):
        return tuple(v.index.shape)
    if isinstance(v, _Score):
        return None
    raise UnsupportedOpError("internal: not an activation")


def _stored_weight(module):
    """The tensor a module stores its weight in: ``weight_orig`` under torch prune, the
    original of a ``torch.ao``/``parametrize`` parametrization (``module.weight`` is then
    computed anew at every access), else ``weight``. Two uses of one weight store it in one
    tensor."""
    orig = getattr(module, "weight_orig", None)
    if isinstance(orig, torch.Tensor):
        return orig
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations["weight"].original
    return module.weight


def _through_transposes(gm):
    """`node` -> the node it transposes (``w.T``, ``w.t()``, ``w.transpose(0, 1)``), repeatedly:
    a weight used as ``x @ w.T`` is still that parameter."""
    def walk(node):
        for _ in range(4):
            if not (isinstance(node, fx.Node) and node.op in ("call_function", "call_method")
                    and node.args and isinstance(node.args[0], fx.Node)
                    and _canonical(node, gm) in ("transpose", "permute", "t", "getattr",
                                                  "identity")):
                break
            node = node.args[0]
        return node
    return walk


def _tied_layer(builder, node):
    """Whether an embedding's weight is also a layer weight (a tied LM head)."""
    for a in node.args:
        if isinstance(a, fx.Node) and a.op == "get_attr" and str(a.target) in builder.params:
            yield id(builder.gm.get_parameter(str(a.target))) in builder.layer_tensors
    if node.op == "call_module":
        yield id(builder.gm.get_submodule(node.target).weight) in builder.layer_tensors


def _batch_layout(batch, defined):
    """(axis, merged) of the batch in a tensor of example ids (-1 where undefined), or None."""
    full = tuple(batch.shape)
    for axis in range(len(full)):
        n = full[axis]
        if n < 2 or n % 2:
            continue
        ids = torch.arange(n).reshape((1,) * axis + (n,) + (1,) * (len(full) - axis - 1))
        for merged, expect in ((False, ids), (True, ids // (n // 2)), ("minor", ids % 2)):
            if not merged and n != 2:
                continue
            if bool((batch[defined] == torch.broadcast_to(expect, full)[defined].to(
                    batch.dtype)).all()):
                return axis, merged
    return None


def _first_example(idx, layout):
    axis, merged = layout
    if merged == "minor":  # (tokens * batch) with the batch fastest
        return idx.index_select(axis, torch.arange(0, idx.shape[axis], 2))
    if merged:
        return idx.narrow(axis, 0, idx.shape[axis] // 2)
    return idx.select(axis, 0)


def _resolve(ch, ndim):
    """Channel axes with negative entries counted from the end; a callable gets the rank."""
    if callable(ch):
        ch = ch(ndim)
    return tuple(sorted(a % ndim for a in ch)) if ndim else ()


def _as_index(out):
    if not isinstance(out, torch.Tensor):
        raise UnsupportedOpError("an element move returned a non-tensor")
    return out.to(torch.float64) if out.dtype != torch.float64 else out


def _reencode(mv: _Moved, sources, offsets, total):
    """`mv`'s index in the numbering of `sources` (a superset of its own)."""
    idx = mv.index
    ok = idx >= 0
    b = torch.div(idx, mv.total, rounding_mode="floor")
    rel = torch.remainder(idx, mv.total)
    own = torch.tensor(mv.offsets, dtype=torch.float64)
    k = (torch.searchsorted(own, rel.contiguous(), right=True) - 1).clamp(min=0)
    e = rel - own[k]
    mapping = torch.tensor([next(i for i, s in enumerate(sources) if s is t)
                            for t in mv.sources], dtype=torch.long)
    new_off = torch.tensor(offsets, dtype=torch.float64)[mapping[k]]
    return torch.where(ok, b * total + new_off + e, torch.full_like(idx, -1))


def _nonzero_constant(value) -> bool:
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, _Const) and _known(value.value) and value.param is None:
        return bool((value.value != 0).all())
    return False


def _zero_pattern(value):
    """Where a constant factor is zero (None: nowhere, or unknown)."""
    if isinstance(value, _Const) and value.param is None and isinstance(value.value, torch.Tensor) \
            and value.value.device.type != "meta":
        zeros = value.value == 0
        if bool(zeros.any()):
            return zeros
    if isinstance(value, (int, float)) and value == 0:
        return torch.tensor(True)
    return None


def _canonical(node, gm) -> str:
    """The op's canonical name (module class name for call_module)."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    target = node.target
    if node.op == "call_method":
        name = str(target)
    elif isinstance(target, torch._ops.OpOverload):
        name = target._schema.name.split("::")[-1]
    elif isinstance(target, torch._ops.OpOverloadPacket):
        name = str(target).split(".")[-1]
    else:
        name = getattr(target, "__name__", str(target))
        if target is operator.getitem:
            name = "getitem"
        elif target is getattr:
            name = "getattr"
    if name.startswith("__") and name.endswith("__"):
        name = name.strip("_")
    if name in ("interpolate", "upsample"):
        return "interpolate"
    return _ALIASES.get(name, name)


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


_POOL_ARGS = {
    "max": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "avg": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
            "divisor_override"),
}


def _function_pool_params(node, gm, src, py):
    name = _canonical(node, gm)
    ndim = len(src.size)
    if name.startswith("adaptive"):
        size = py(node.args[1]) if len(node.args) > 1 else py(node.kwargs.get("output_size"))
        size = (size,) * ndim if isinstance(size, int) else tuple(size)
        return {"adaptive": True, "output_size": size}
    names = _POOL_ARGS["max" if name.startswith("max") else "avg"]
    kw = {k: py(a) for k, a in zip(names, node.args[1:])}
    kw.update({k: py(a) for k, a in node.kwargs.items()})
    if "kernel_size" not in kw:
        raise UnsupportedOpError(f"cannot read the arguments of {name} (fx node {node.name!r})")
    kernel = _tuple(kw["kernel_size"], ndim)
    stride = kw.get("stride") or kernel
    return {
        "adaptive": False, "kernel": kernel, "stride": _tuple(stride, ndim),
        "padding": _pairs(kw.get("padding", 0) or 0, ndim),
        "dilation": _tuple(kw.get("dilation", 1) or 1, ndim),
        "ceil_mode": bool(kw.get("ceil_mode", False)),
        "count_include_pad": bool(kw.get("count_include_pad", True)),
        "divisor_override": kw.get("divisor_override"),
    }
