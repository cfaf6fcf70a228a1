"""MaskSets to and from torch models: ``torch.nn.utils.prune`` buffers and state dicts
(docs/definitions.md#masks)."""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
from torch.nn.utils import parametrize, prune

from ..errors import GraphpaiError, MaskError
from ..masks import MaskSet
from .extract import prunable_modules

__all__ = ["apply_masks", "masks_from_model", "model_masks", "dense_masks", "remove_masks",
           "masked_copy", "layer_modules", "layer_names", "UncalledModuleWarning"]


class UncalledModuleWarning(UserWarning):
    """Conv/linear modules that `forward` never calls: not layers, left out of masks and N."""


def layer_modules(model: nn.Module, graph=None, *, input_shape=None,
                  warn: bool = True) -> dict[str, nn.Module]:
    """The prunable modules that are layers of `model`'s graph: the ones its forward calls.

    The one rule of every torch entry point (``dense_masks``, ``masks_from_model``,
    ``model_masks``, ``apply_masks``, the ranking methods; docs/definitions.md#graph): a
    Conv1d/Conv2d/Linear module that forward never calls is no layer of the NetGraph, so it gets
    no mask and does not count in N; a :class:`UncalledModuleWarning` names it.

    Parameters
    ----------
    graph : NetGraph, optional
        `model`'s graph if it was already traced; else it is traced here (with `input_shape`, or
        ``model.input_shape``), and, where no input shape is known, the calls are read from a
        shape-free ``torch.fx`` trace. A model neither can trace keeps every prunable module.
    warn : bool
        Issue the warning (the callers that warn once pass False on their second call).
    """
    modules = prunable_modules(model)
    called = _called(model, graph, input_shape)
    if called is None:
        return modules
    unused = [name for name in modules if name not in called]
    if unused and warn:
        warnings.warn(UncalledModuleWarning(
            f"module(s) {', '.join(map(repr, unused))} of {type(model).__name__} are never called "
            "by forward: they are not layers of the graph and are left out of the masks and of N "
            "(docs/definitions.md#graph)"), stacklevel=3)
    return {name: m for name, m in modules.items() if name in called}


def layer_names(model: nn.Module, graph=None, *, input_shape=None) -> list[str]:
    """The names of `model`'s graph layers (every weight the forward uses as a layer: Conv and
    Linear modules, attention ``*.in_proj_weight``, Hugging Face ``Conv1D``, ...). A model that
    cannot be traced without its inputs (a Hugging Face model given no ``input_shape``) keeps
    every such weight, as :func:`layer_modules` keeps every prunable module."""
    from .extract import layer_parameters

    called = _called(model, graph, input_shape)
    return sorted(layer_parameters(model) if called is None else called)


def _called(model, graph, input_shape):
    """Names of the prunable modules forward calls, or None if the model cannot be traced."""
    if graph is not None:
        return set(graph.layers)
    if input_shape is not None or getattr(model, "input_shape", None) is not None:
        from .extract import to_graph

        try:
            return set(to_graph(model, input_shape).layers)
        except GraphpaiError:
            pass
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any fx failure means: no call list
        return None
    return {node.target for node in gm.graph.nodes if node.op == "call_module"}


def dense_masks(model: nn.Module, *, graph=None, input_shape=None) -> MaskSet:
    """All-ones masks for every Conv1d/Conv2d/Linear layer that `model`'s forward calls
    (:func:`layer_modules`)."""
    return MaskSet({name: torch.ones_like(_weight(m), dtype=torch.bool)
                    for name, m in layer_modules(model, graph, input_shape=input_shape).items()})


def _module_mask(module: nn.Module):
    """(mask tensor, where it came from) of one layer, or (None, None)."""
    mask = getattr(module, "weight_mask", None)
    if isinstance(mask, torch.Tensor):
        return mask, "torch.nn.utils.prune weight_mask buffers"
    if parametrize.is_parametrized(module, "weight"):
        shape = module.parametrizations.weight.original.shape
        for p in module.parametrizations.weight:
            mask = getattr(p, "mask", None)
            if isinstance(mask, torch.Tensor) and mask.shape == shape:
                return mask, "torch.ao.pruning parametrizations (FakeSparsity masks)"
    return None, None


def masks_from_model(model: nn.Module, *, missing: str = "dense", graph=None,
                     input_shape=None) -> MaskSet:
    """Read the masks that ``torch.nn.utils.prune`` (``weight_mask`` buffers) or
    ``torch.ao.pruning`` (parametrizations with a ``mask``) left on `model`.

    Only the layers forward calls are read (:func:`layer_modules`).

    Parameters
    ----------
    missing : {"dense", "error"}
        What a prunable layer without a mask means: all kept (default), or an error.
    graph, input_shape
        As in :func:`layer_modules`.
    """
    out = {}
    for name, module in layer_modules(model, graph, input_shape=input_shape).items():
        mask, _ = _module_mask(module)
        if mask is None:
            if missing == "error":
                raise MaskError(f"layer {name!r} has no weight_mask buffer; prune it first or use "
                                "missing='dense'")
            mask = torch.ones_like(_weight(module))
        out[name] = mask
    return MaskSet(out)


def model_masks(model: nn.Module, graph=None, *, input_shape=None):
    """(MaskSet, description) of the masks `model` carries, or (None, None) if it carries none.

    What ``graphpai.audit(model)``, ``graphpai.paths(model)`` and the CLI's ``--model-file`` use
    when no masks are given: a model pruned with ``torch.nn.utils.prune`` or ``torch.ao.pruning``
    is audited with its masks, not as dense. Layers without a mask are dense. The description
    says where the masks came from, for the output ("torch.nn.utils.prune weight_mask buffers
    on 22 of 22 layers").
    """
    modules = layer_modules(model, graph, input_shape=input_shape)
    found = {name: _module_mask(m) for name, m in modules.items()}
    sources = sorted({src for _, src in found.values() if src})
    if not sources:
        return None, None
    masks = MaskSet({name: (mask if mask is not None else torch.ones_like(_weight(modules[name])))
                     for name, (mask, _) in found.items()})
    carried = sum(1 for mask, _ in found.values() if mask is not None)
    return masks, f"{' and '.join(sources)} on {carried} of {len(found)} layers"


def apply_masks(model: nn.Module, masks, *, graph=None) -> nn.Module:
    """Attach `masks` to `model` with ``prune.custom_from_mask`` and return the model.

    Every mask is validated against its layer before the model is touched, so a bad mask set
    leaves the model unchanged. A layer that already carries a mask gets the new one in its place
    (not the product of both). A mask for a module that forward never calls is skipped with an
    :class:`UncalledModuleWarning` (:func:`layer_modules`).

    A tied weight (docs/graph.md#weight-tying) has one mask, and every module that holds the
    same parameter gets it: the ``nn.Embedding`` whose weight is the LM head's reads the pruned
    weight too (torch prune alone would mask the head only).
    """
    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    every = prunable_modules(model)
    unknown = [k for k in masks if k not in every]
    if unknown:
        raise MaskError(f"masks for unknown layer(s) {unknown}; this model's prunable layers are "
                        f"{list(every)}")
    modules = layer_modules(model, graph, warn=False)
    skipped = [k for k in masks if k not in modules]
    if skipped:
        warnings.warn(UncalledModuleWarning(
            f"mask(s) for {', '.join(map(repr, skipped))} skipped: forward never calls those "
            "modules, so they are not layers (docs/definitions.md#graph)"), stacklevel=2)
        masks = MaskSet({k: v for k, v in masks.items() if k not in skipped}) \
            if len(skipped) < len(masks) else None
    if masks is None:
        return model
    for name, mask in masks.items():
        shape = tuple(_weight(modules[name]).shape)
        if mask.shape != shape:
            raise MaskError(f"mask for {name!r} has shape {mask.shape} but the weight is {shape}; "
                            "regenerate the mask for this model")
    holders = _weight_holders(model)
    for name, mask in masks.items():
        for module in holders.get(id(_weight(modules[name])), [modules[name]]):
            _attach(module, mask)
    return model


def _weight_holders(model: nn.Module) -> dict[int, list[nn.Module]]:
    """id of a weight parameter -> the modules that hold it as ``weight`` (a tied weight: more
    than one)."""
    out: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        if isinstance(getattr(module, "weight_orig", None), torch.Tensor) or isinstance(
                getattr(module, "weight", None), nn.Parameter):
            out.setdefault(id(_weight(module)), []).append(module)
    return out


def _attach(module: nn.Module, mask) -> None:
    if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
        with torch.no_grad():  # already pruned: swap the buffer, keep the original weights
            module.weight_mask.copy_(torch.as_tensor(mask))
        module.weight = module.weight_orig * module.weight_mask
    else:
        weight = module.weight
        prune.custom_from_mask(module, "weight", torch.as_tensor(mask, device=weight.device))


def _remove_pruning(modules, only_weight: bool = False) -> None:
    """``prune.remove`` on every pruned weight of `modules`, keeping tied weights tied: the
    modules that shared one ``weight_orig`` share the one pruned parameter afterwards."""
    tied: dict[int, list[nn.Module]] = {}
    for module in modules:
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                if hook._tensor_name == "weight":
                    tied.setdefault(id(module.weight_orig), []).append(module)
                elif only_weight:
                    continue
                prune.remove(module, hook._tensor_name)
    for group in tied.values():
        for module in group[1:]:
            module.weight = group[0].weight


def remove_masks(model: nn.Module) -> nn.Module:
    """Make every mask permanent (``prune.remove``): pruned weights stay zero, buffers go; a
    tied weight stays tied."""
    _remove_pruning([m for m in model.modules() if hasattr(m, "weight_orig")], only_weight=True)
    return model


def masked_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with every torch prune mask made permanent (hooks and buffers gone,
    pruned weights 0; ``torch.ao``/``parametrize`` parametrizations of weights folded into plain
    parameters); `model` itself is untouched."""
    memo = {}  # a pruned weight is a non-leaf tensor, which deepcopy refuses: give it a copy
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                tensor = getattr(module, hook._tensor_name, None)
                if isinstance(tensor, torch.Tensor) and not tensor.is_leaf:
                    memo[id(tensor)] = tensor.detach().clone()
    clone = copy.deepcopy(model, memo)
    _remove_pruning(list(clone.modules()))
    for module in clone.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                with torch.no_grad():
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return clone


def _weight(module: nn.Module) -> torch.Tensor:
    orig = getattr(module, "weight_orig", None)
    if orig is not None:
        return orig
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight
