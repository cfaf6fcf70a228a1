"""Wanda scores: |w| times the norm of the input feature it multiplies, from a calibration batch.

[Wanda] scores weight ``(o, j)`` of a linear layer by ``|W[o, j]| * ||X_j||_2``, where ``X_j``
is input feature ``j`` of the layer over every token (every row of every calibration sequence),
and prunes each output row separately (or keeps the N best of every M for N:M sparsity). A
convolution is a linear layer on its unfolded input patches, so weight ``(o, i, a, b)`` is scored
with the norm of input channel ``i`` at kernel offset ``(a, b)`` over every output position (with
the layer's padding, stride and dilation); a grouped convolution reads its own group's channels.

The norms come from forward pre-hooks on every prunable layer during one pass of the model over
`data`; they are summed in float64 over batches, so the score does not depend on how the
calibration set is cut into batches. docs/llm.md shows the method on a decoder.

References
----------
.. [Wanda] M. Sun, Z. Liu, A. Bair, J. Z. Kolter, "A Simple and Effective Pruning Approach for
   Large Language Models", ICLR 2024.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..budgets import check_compression, kept_count
from ..errors import DataError, ModelError
from ..masks import MaskSet
from .extract import canonical_weight, layer_parameters, prunable_modules

__all__ = ["activation_norms", "wanda_scores", "wanda_masks"]


def _inputs(batch):
    """(args, kwargs) for ``model(...)`` from a batch: a tensor, (inputs, labels), or a dict of
    keyword arguments (Hugging Face models: ``{"input_ids": ...}``)."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[0],), {}
    raise DataError(f"a calibration batch must be a tensor, an (inputs, labels) pair or a dict "
                    f"of model keyword arguments, got {type(batch).__name__}")


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _patch_sumsq(module, x: torch.Tensor) -> torch.Tensor:
    """Sum over batch and output positions of the squared unfolded input: ``(C_in, *kernel)``."""
    two_d = isinstance(module, nn.Conv2d)
    if not two_d:  # Conv1d as a 2-D conv of height 1
        x = x.unsqueeze(-2)
    kernel = module.kernel_size if two_d else (1, module.kernel_size[0])
    stride = module.stride if two_d else (1, module.stride[0])
    dilation = module.dilation if two_d else (1, module.dilation[0])
    pad = module._reversed_padding_repeated_twice  # (left, right, top, bottom), 'same' included
    if not two_d:
        pad = list(pad) + [0, 0]
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x.double(), list(pad), mode=mode)
    cols = F.unfold(x.pow(2), kernel, dilation=dilation, stride=stride)  # (B, C*kh*kw, L)
    out = cols.sum(dim=(0, 2))
    return out.reshape(x.shape[1], *module.kernel_size)


def activation_norms(model: nn.Module, data, *, layers=None,
                     unused: str = "error") -> dict[str, np.ndarray]:
    """Layer -> ``||X||_2`` of each fan-in input of the layer over all calibration positions.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode under ``torch.no_grad`` (its mode is restored).
    data : iterable of batches
        Tensors, ``(inputs, labels)`` pairs or dicts of keyword arguments for the model.
    layers : iterable of str, optional
        The layers to measure (default: every Conv1d/Conv2d/Linear).
    unused : {"error", "skip"}
        A layer whose module never runs on the data (``nn.MultiheadAttention``'s ``out_proj``
        is applied through its weight): an error, or left out of the result.

    Returns
    -------
    dict of str to ndarray
        Linear: shape ``(in_features,)``; convolution: ``(C_in, *kernel)`` (all input channels;
        :func:`wanda_scores` picks each group's).

    Raises
    ------
    DataError
        If `data` is empty, a batch has an unknown form, or some layer never ran.
    """
    modules = prunable_modules(model)
    names = list(modules) if layers is None else list(layers)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ModelError(f"unknown layer(s) {unknown}; the prunable layers are {list(modules)}")
    sums: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(module, args):
            x = args[0].detach()
            if isinstance(module, nn.Linear):
                part = x.reshape(-1, x.shape[-1]).double().pow(2).sum(dim=0)
            else:
                batched = x if x.dim() == module.weight.dim() else x.unsqueeze(0)
                part = _patch_sumsq(module, batched)
            sums[name] = part if name not in sums else sums[name] + part
        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batches = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in data:
                args, kwargs = _inputs(batch)
                model(*(_to(a, device) for a in args),
                      **{k: _to(v, device) for k, v in kwargs.items()})
                batches += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if batches == 0:
        raise DataError("Wanda needs calibration data: data= gave no batch")
    silent = [n for n in names if n not in sums]
    if silent and unused == "error":
        raise DataError(f"layer(s) {silent} never ran on the calibration data; Wanda scores need "
                        "every scored layer's input (or leave them out with layers=)")
    return {n: sums[n].sqrt().cpu().numpy() for n in names if n in sums}


def _layer_scores(module, norm: np.ndarray, name: str) -> np.ndarray:
    """``|W| * ||X||`` (float64) of one layer from its norms (see :func:`activation_norms`)."""
    weight = module.weight.detach().abs().to("cpu", torch.float64).numpy()
    if isinstance(module, nn.Linear):
        out = weight * norm[None, :]
    else:
        groups = module.groups
        per_in = norm.reshape(groups, -1, *norm.shape[1:])  # (g, C_in/g, *k)
        owner = np.arange(weight.shape[0]) // (weight.shape[0] // groups)
        out = weight * per_in[owner]
    if np.isnan(out).any():
        raise ModelError(f"Wanda scores of layer {name!r} are NaN; check the model's weights "
                         "and the calibration data for NaN or inf")
    return out


def wanda_scores(model: nn.Module, data, *, layers=None) -> dict[str, np.ndarray]:
    """Layer -> ``|W| * ||X||`` (float64) of the weight's shape ([Wanda]); see
    :func:`activation_norms`.

    The weight is the one the forward pass uses (a torch-pruned layer's pruned weights score 0).
    """
    norms = activation_norms(model, data, layers=layers)
    modules = prunable_modules(model)
    return {name: _layer_scores(modules[name], norm, name) for name, norm in norms.items()}


def wanda_masks(model: nn.Module, compression, data, *, nm=None, layers=None,
                exclude=()) -> MaskSet:
    """Wanda masks: each output row keeps its best ``|w| * ||x||`` ([Wanda]).

    Per row of ``F`` fan-in weights, ``floor(F (1 - 1/compression))`` are pruned (the row's
    lowest scores; ties keep the lower input index; every row keeps at least one). With
    ``nm="2:4"`` every group of M consecutive input weights keeps its N best instead (the
    compression must then be M/N, see :func:`graphpai.generators.nm.pattern_for`; a layer whose
    input width is not a multiple of M stays dense). Layers in `exclude` (and those not in
    `layers`) stay dense and are not scored, as do layers whose module never runs (with
    ``layers=None``) and graph layers that are not Conv/Linear modules (``in_proj_weight``).
    Float scores exist for one layer at a time.
    """
    modules = prunable_modules(model)
    c = check_compression(compression, sum(m.weight.numel() for m in modules.values()))
    skip = set(exclude)
    chosen = [n for n in (list(modules) if layers is None else list(layers)) if n not in skip]
    norms = activation_norms(model, data, layers=chosen,
                             unused="skip" if layers is None else "error")
    out = {}
    for name, module in modules.items():  # one layer's float scores at a time (LLM-size models)
        shape = tuple(module.weight.shape)
        if name not in norms:
            out[name] = np.ones(shape, dtype=bool)
            continue
        scores = _layer_scores(module, norms[name], name)
        if nm is not None:  # a layer whose width is not a multiple of M stays dense
            from ..generators.nm import nm_masks

            out[name] = nm_masks({name: scores}, nm, scores={name: scores})[name]
            continue
        rows = scores.reshape(shape[0], -1)
        keep = kept_count(rows.shape[1], c)  # at least one per row
        order = np.argsort(-rows, axis=1, kind="stable")[:, :keep]
        mask = np.zeros(rows.shape, dtype=bool)
        np.put_along_axis(mask, order, True, axis=1)
        out[name] = mask.reshape(shape)
    for name, (module, attr, transposed) in layer_parameters(model).items():
        if name not in out:  # a layer that is not a Conv/Linear module: dense, not scored
            groups = getattr(module, "groups", 1)
            weight = canonical_weight(getattr(module, attr), transposed, groups)
            out[name] = np.ones(tuple(weight.shape), dtype=bool)
    return MaskSet(out)
