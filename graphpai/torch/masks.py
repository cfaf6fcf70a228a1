"""MaskSets to and from torch models: ``torch.nn.utils.prune`` buffers and state dicts
(docs/definitions.md#masks)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils import prune

from ..errors import MaskError
from ..masks import MaskSet
from .extract import prunable_modules

__all__ = ["apply_masks", "masks_from_model", "dense_masks", "remove_masks", "masked_copy"]


def dense_masks(model: nn.Module) -> MaskSet:
    """All-ones masks for every Conv1d/Conv2d/Linear weight of `model`."""
    return MaskSet({name: torch.ones_like(_weight(m), dtype=torch.bool)
                    for name, m in prunable_modules(model).items()})


def masks_from_model(model: nn.Module, *, missing: str = "dense") -> MaskSet:
    """Read the ``weight_mask`` buffers that ``torch.nn.utils.prune`` left on `model`.

    Parameters
    ----------
    missing : {"dense", "error"}
        What a prunable layer without a mask means: all kept (default), or an error.
    """
    out = {}
    for name, module in prunable_modules(model).items():
        mask = getattr(module, "weight_mask", None)
        if mask is None:
            if missing == "error":
                raise MaskError(f"layer {name!r} has no weight_mask buffer; prune it first or use "
                                "missing='dense'")
            mask = torch.ones_like(_weight(module))
        out[name] = mask
    return MaskSet(out)


def apply_masks(model: nn.Module, masks) -> nn.Module:
    """Attach `masks` to `model` with ``prune.custom_from_mask`` and return the model.

    Every mask is validated against its layer before the model is touched, so a bad mask set
    leaves the model unchanged. A layer that already carries a mask gets the new one in its place
    (not the product of both).
    """
    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    modules = prunable_modules(model)
    unknown = [k for k in masks if k not in modules]
    if unknown:
        raise MaskError(f"masks for unknown layer(s) {unknown}; this model's prunable layers are "
                        f"{list(modules)}")
    for name, mask in masks.items():
        shape = tuple(_weight(modules[name]).shape)
        if mask.shape != shape:
            raise MaskError(f"mask for {name!r} has shape {mask.shape} but the weight is {shape}; "
                            "regenerate the mask for this model")
    for name, mask in masks.items():
        module = modules[name]
        if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
            with torch.no_grad():  # already pruned: swap the buffer, keep the original weights
                module.weight_mask.copy_(torch.as_tensor(mask))
            module.weight = module.weight_orig * module.weight_mask
        else:
            weight = module.weight
            prune.custom_from_mask(module, "weight", torch.as_tensor(mask, device=weight.device))
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Make every mask permanent (``prune.remove``): pruned weights stay zero, buffers go."""
    for module in prunable_modules(model).values():
        if hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    return model


def masked_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with every torch prune mask made permanent (hooks and buffers gone,
    pruned weights 0); `model` itself is untouched."""
    memo = {}  # a pruned weight is a non-leaf tensor, which deepcopy refuses: give it a copy
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                tensor = getattr(module, hook._tensor_name, None)
                if isinstance(tensor, torch.Tensor) and not tensor.is_leaf:
                    memo[id(tensor)] = tensor.detach().clone()
    clone = copy.deepcopy(model, memo)
    for module in clone.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return clone


def _weight(module: nn.Module) -> torch.Tensor:
    orig = getattr(module, "weight_orig", None)
    return module.weight if orig is None else orig
