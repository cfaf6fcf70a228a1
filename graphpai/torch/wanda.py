"""Wanda scores: |w| times the norm of the input feature it multiplies, from a calibration batch.

[Wanda] scores weight ``(o, j)`` of a linear layer by ``|W[o, j]| * ||X_j||_2``, where ``X_j``
is input feature ``j`` of the layer over every token (every row of every calibration sequence),
and prunes each output row separately (or keeps the N best of every M for N:M sparsity). A
convolution is a linear layer on its unfolded input patches, so weight ``(o, i, a, b)`` is scored
with the norm of input channel ``i`` at kernel offset ``(a, b)`` over every output position (with
the layer's padding, stride and dilation); a grouped convolution reads its own group's channels.

Layers that are not Conv/Linear modules are scored the same way from the input they multiply:
a Hugging Face ``Conv1D`` (GPT-2) holds its weight as ``(in, out)`` and computes ``x @ W``, so
layer weight ``(o, j)`` (model weight ``W[j, o]``) is scored with ``||x_j||``; the packed
``in_proj_weight`` of ``nn.MultiheadAttention`` maps the query, key and value inputs with its
row blocks ``[0, E)``, ``[E, 2E)`` and ``[2E, 3E)``, so a row of a block is scored with the norms
of that block's input; its ``out_proj`` (applied through its weight, its ``forward`` never runs)
is scored with the norms of the concatenated head outputs, which a forward pre-hook on the
attention module recomputes from the same inputs with an identity output projection.

The norms come from forward pre-hooks on every scored layer during one pass of the model over
`data` (PyTorch's fused fast paths of ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
are turned off meanwhile, so every module runs); they are summed in float64 over batches, so the
score does not depend on how the calibration set is cut into batches. docs/llm.md shows the
method on a decoder.

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
from .extract import canonical_weight, layer_parameters

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


_CONVS = (nn.Conv1d, nn.Conv2d)


def _kind(module, attr: str, transposed: bool) -> str | None:
    """How Wanda reads a layer's input: "linear" (``nn.Linear``, incl. ``out_proj``), "conv"
    (Conv1d/2d), "conv1d_hf" (Hugging Face ``Conv1D``, weight ``(in, out)``), "in_proj"
    (``nn.MultiheadAttention.in_proj_weight``); None: not scored (transposed and 3-D convs)."""
    if attr == "in_proj_weight":
        return "in_proj"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _CONVS):
        return "conv"
    if transposed and type(module).__name__ == "Conv1D" and module.weight.dim() == 2:
        return "conv1d_hf"
    return None


def _scorable(model: nn.Module) -> dict:
    """Layer name -> (module, attr, transposed, kind) for every layer of
    :func:`~graphpai.torch.extract.layer_parameters` that Wanda scores."""
    out = {}
    for name, (module, attr, transposed) in layer_parameters(model).items():
        kind = _kind(module, attr, transposed)
        if kind is not None:
            out[name] = (module, attr, transposed, kind)
    return out


def _sumsq(x: torch.Tensor) -> torch.Tensor:
    """Sum of squares of every feature (last axis) over all the other axes, in float64."""
    return x.detach().reshape(-1, x.shape[-1]).double().pow(2).sum(dim=0)


_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
             "average_attn_weights", "is_causal")


def _mha_call(args, kwargs) -> dict:
    """The arguments of one ``nn.MultiheadAttention`` call by name."""
    bound = dict(zip(_MHA_ARGS, args))
    bound.update(kwargs)
    return bound


def _heads_output(mha: nn.MultiheadAttention, call: dict) -> torch.Tensor:
    """The input of ``mha.out_proj`` in this call: the concatenated head outputs, which is what
    ``mha`` computes with an identity output projection (its non-fused path; dropout off)."""
    query, key, value = call["query"], call["key"], call["value"]
    if mha.batch_first and query.dim() == 3:
        query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    eye = torch.eye(mha.embed_dim, dtype=query.dtype, device=query.device)
    separate = {} if mha._qkv_same_embed_dim else dict(
        use_separate_proj_weight=True, q_proj_weight=mha.q_proj_weight,
        k_proj_weight=mha.k_proj_weight, v_proj_weight=mha.v_proj_weight)
    out, _ = F.multi_head_attention_forward(
        query, key, value, mha.embed_dim, mha.num_heads, mha.in_proj_weight, mha.in_proj_bias,
        mha.bias_k, mha.bias_v, mha.add_zero_attn, 0.0, eye, None, training=False,
        key_padding_mask=call.get("key_padding_mask"),
        need_weights=call.get("need_weights", True), attn_mask=call.get("attn_mask"),
        average_attn_weights=call.get("average_attn_weights", True),
        is_causal=call.get("is_causal", False), **separate)
    return out


class _no_fast_path:
    """Turn off the fused ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` paths
    (which skip the submodules' forward and so their hooks) for the calibration pass."""

    def __enter__(self):
        mha = getattr(torch.backends, "mha", None)
        self.before = mha.get_fastpath_enabled() if mha is not None else None
        if self.before:
            mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        if self.before:
            torch.backends.mha.set_fastpath_enabled(True)


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
        The layers to measure (default: every layer Wanda scores: Conv1d/Conv2d/Linear modules,
        Hugging Face ``Conv1D`` weights, ``nn.MultiheadAttention``'s ``in_proj_weight`` and
        ``out_proj``; transposed and 3-D convolutions are not scored).
    unused : {"error", "skip"}
        A layer whose module never runs on the data: an error, or left out of the result.

    Returns
    -------
    dict of str to ndarray
        Linear, ``out_proj`` and ``Conv1D``: shape ``(in_features,)`` (the layer's fan-in
        order); ``in_proj_weight``: ``(3, E)``, the norms of the query, key and value inputs
        (rows ``[0, E)``, ``[E, 2E)``, ``[2E, 3E)`` of the weight); convolution:
        ``(C_in, *kernel)`` (all input channels; :func:`wanda_scores` picks each group's).

    Raises
    ------
    DataError
        If `data` is empty, a batch has an unknown form, or some layer never ran.
    """
    scored = _scorable(model)
    names = list(scored) if layers is None else list(layers)
    unknown = [n for n in names if n not in scored]
    if unknown:
        raise ModelError(f"unknown layer(s) {unknown}; the layers Wanda scores are "
                         f"{list(scored)}")
    sums: dict[str, torch.Tensor] = {}

    def add(name, part):
        sums[name] = part if name not in sums else sums[name] + part

    def hook_for(name, kind):
        def hook(module, args):
            x = args[0]
            if kind == "conv":
                x = x.detach()
                batched = x if x.dim() == module.weight.dim() else x.unsqueeze(0)
                add(name, _patch_sumsq(module, batched))
            else:  # Linear, Conv1D: features on the last axis
                add(name, _sumsq(x))
        return hook

    def attention_hook(in_proj, out_proj):
        def hook(module, args, kwargs):
            call = _mha_call(args, kwargs)
            if in_proj is not None:
                q = _sumsq(call["query"])
                k = q if call["key"] is call["query"] else _sumsq(call["key"])
                v = k if call["value"] is call["key"] else _sumsq(call["value"])
                add(in_proj, torch.stack([q, k, v]))
            if out_proj is not None:
                add(out_proj, _sumsq(_heads_output(module, call)))
        return hook

    chosen = set(names)
    attention: dict[int, list] = {}  # id(MHA) -> [module, in_proj name, out_proj name]
    for path, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            entry = [module, None, None]
            for layer, slot in ((f"{path}.in_proj_weight" if path else "in_proj_weight", 1),
                                (f"{path}.out_proj" if path else "out_proj", 2)):
                if layer in chosen and scored[layer][0] in (module, module.out_proj):
                    entry[slot] = layer
            if entry[1] or entry[2]:
                attention[id(module)] = entry
    through_attention = {n for _, a, b in attention.values() for n in (a, b) if n}
    handles = [scored[n][0].register_forward_pre_hook(hook_for(n, scored[n][3]))
               for n in names if n not in through_attention]
    handles += [m.register_forward_pre_hook(attention_hook(a, b), with_kwargs=True)
                for m, a, b in attention.values()]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batches = 0
    try:
        model.eval()
        with torch.no_grad(), _no_fast_path():
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


def _layer_scores(entry, norm: np.ndarray, name: str) -> np.ndarray:
    """``|W| * ||X||`` (float64, in the layer's ``(out, in, ...)`` order) of one layer from its
    norms (see :func:`activation_norms`); `entry` is ``(module, attr, transposed, kind)``."""
    module, attr, transposed, kind = entry
    weight = canonical_weight(getattr(module, attr).detach(), transposed)
    weight = weight.abs().to("cpu", torch.float64).numpy()
    if kind in ("linear", "conv1d_hf"):
        out = weight * norm[None, :]
    elif kind == "in_proj":  # row block b of (3E, E) multiplies input b (query, key, value)
        out = weight * np.repeat(norm, weight.shape[0] // 3, axis=0)
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

    The weight is the one the forward pass uses (a torch-pruned layer's pruned weights score 0),
    in the layer's order: a ``Conv1D`` score is ``(out, in)``, the transpose of its weight.
    """
    norms = activation_norms(model, data, layers=layers)
    scored = _scorable(model)
    return {name: _layer_scores(scored[name], norm, name) for name, norm in norms.items()}


def wanda_masks(model: nn.Module, compression, data, *, nm=None, layers=None,
                exclude=()) -> MaskSet:
    """Wanda masks: each output row keeps its best ``|w| * ||x||`` ([Wanda]).

    Per row of ``F`` fan-in weights, ``floor(F (1 - 1/compression))`` are pruned (the row's
    lowest scores; ties keep the lower input index; every row keeps at least one). With
    ``nm="2:4"`` every group of M consecutive input weights keeps its N best instead (the
    compression must then be M/N, see :func:`graphpai.generators.nm.pattern_for`; a layer whose
    input width is not a multiple of M stays dense). Layers in `exclude` (and those not in
    `layers`) stay dense and are not scored, as do layers whose module never runs (with
    ``layers=None``) and layers Wanda does not score (transposed and 3-D convolutions).
    Masks are in the layer's order (a ``Conv1D`` mask is ``(out, in)``). Float scores exist
    for one layer at a time.
    """
    scored = _scorable(model)
    params = layer_parameters(model)
    c = check_compression(compression, sum(getattr(m, attr).numel()
                                           for m, attr, _ in params.values()))
    skip = set(exclude)
    chosen = [n for n in (list(scored) if layers is None else list(layers)) if n not in skip]
    norms = activation_norms(model, data, layers=chosen,
                             unused="skip" if layers is None else "error")
    out = {}
    for name, entry in scored.items():  # one layer's float scores at a time (LLM-size models)
        module, attr, transposed, _ = entry
        shape = tuple(canonical_weight(getattr(module, attr), transposed).shape)
        if name not in norms:
            out[name] = np.ones(shape, dtype=bool)
            continue
        scores = _layer_scores(entry, norms[name], name)
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
    for name, (module, attr, transposed) in params.items():
        if name not in out:  # a layer Wanda does not score: dense
            groups = getattr(module, "groups", 1)
            weight = canonical_weight(getattr(module, attr), transposed, groups)
            out[name] = np.ones(tuple(weight.shape), dtype=bool)
    return MaskSet(out)
