"""Masks from Hugging Face-style state dicts and checkpoint files, matched to a model's layers.

LLM pruning code (Wanda, SparseGPT) saves a pruned model as an ordinary checkpoint: the pruned
weights are zeros in ``model.layers.0.mlp.up_proj.weight``, in a ``.safetensors`` file (one or
several shards) or a ``pytorch_model.bin``. A model pruned with ``torch.nn.utils.prune`` has
``*.weight_orig`` and ``*.weight_mask`` entries instead, and graphpai's own mask files hold bare
layer names. :func:`masks_from_state_dict` reads all three for a given model:

- a ``*.weight_mask`` entry is the layer's mask; otherwise the mask is ``weight != 0`` (a 0/1 mask
  stored as the weight gives the same answer);
- keys are matched to the model's layer names (module paths) up to one common prefix, either way:
  a ``LlamaForCausalLM`` checkpoint (``model.layers.0...``) read for a bare ``LlamaModel``, a
  ``module.`` prefix from DistributedDataParallel, or the reverse;
- a tied weight (``lm_head`` sharing ``embed_tokens``' tensor, which Hugging Face leaves out of
  the file) is read from the key of the weight it is tied to;
- a layer without an entry, an entry of the wrong shape, or masks for layers the model does not
  have is one :class:`~graphpai.errors.MaskError` naming them.

Safetensors files are read one tensor at a time from a memory map, so a checkpoint of a
billion-parameter model needs about one byte per weight for its masks, not its float size. See
docs/llm.md.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from ..errors import MaskError
from ..masks import MaskSet, _as_bool, _nonzero_values, _safetensors
from .extract import canonical_weight, layer_parameters

__all__ = ["masks_from_state_dict", "load_masks", "state_dict_keys"]

_KINDS = {".weight_mask": "mask", ".weight_orig": "weight", ".weight": "weight"}


def _split(key: str):
    """(layer name, kind) of a state-dict key; a bare key (graphpai's mask files) is a mask."""
    for suffix, kind in _KINDS.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return key, "bare"


def _model_layers(model: nn.Module) -> dict[str, tuple]:
    """Layer name -> (weight shape in the model's order, attribute, transposed, groups) for
    every layer of ``to_graph(model)`` (``layer_parameters``: Conv/Linear weights,
    ``in_proj_weight``, Hugging Face ``Conv1D`` held as ``(in, out)``)."""
    out = {}
    for name, (module, attr, transposed) in layer_parameters(model).items():
        weight = getattr(module, f"{attr}_orig", None)
        weight = getattr(module, attr) if weight is None else weight
        out[name] = (tuple(weight.shape), attr, transposed, getattr(module, "groups", 1))
    return out


def _tied(model: nn.Module) -> dict[str, list[str]]:
    """Layer name -> the other module paths that hold the same weight tensor (tied weights)."""
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        for suffix in (".weight_orig", ".weight"):
            if name.endswith(suffix):
                owners.setdefault(id(param), []).append(name[: -len(suffix)])
    out = {}
    for names in owners.values():
        for name in names:
            out[name] = [other for other in names if other != name]
    return out


def _prefix_map(files: set[str], layers: list[str]):
    """The function from a layer name to a file name that matches the most layers: identity, or
    adding or stripping one dotted prefix."""
    if all(name in files for name in layers):
        return lambda name: name
    votes: Counter = Counter()
    layer_set = set(layers)
    for key in files:  # the file has an extra prefix: "model." + layer
        parts = key.split(".")
        for cut in range(1, len(parts)):
            if ".".join(parts[cut:]) in layer_set:
                votes[("add", ".".join(parts[:cut]) + ".")] += 1
    for name in layers:  # the model has an extra prefix: layer = "model." + key
        parts = name.split(".")
        for cut in range(1, len(parts)):
            if ".".join(parts[cut:]) in files:
                votes[("strip", ".".join(parts[:cut]) + ".")] += 1
    exact = sum(name in files for name in layers)
    if not votes or max(votes.values()) <= exact:
        return lambda name: name
    (how, prefix), _ = max(votes.items(), key=lambda item: (item[1], -len(item[0][1])))
    if how == "add":
        return lambda name: prefix + name
    return lambda name: name[len(prefix):] if name.startswith(prefix) else name


def masks_from_state_dict(model: nn.Module, state: Mapping, *, missing: str = "error",
                          source: str = "state dict") -> MaskSet:
    """The MaskSet of `model`'s prunable layers read from a state dict (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Gives the layer names and weight shapes (its weights are not read; the meta device is
        fine).
    state : mapping of str to tensor or array
        A pruned model's state dict (pruned weights are 0), a ``torch.nn.utils.prune`` state dict
        (``*.weight_mask``), or ``{layer name: mask}``. Entries may also be safetensors slices
        (anything with ``get_shape()``; they are read only when matched).
    missing : {"error", "dense"}
        What a layer with no entry means: an error (default), or all weights kept.
    source : str
        How the messages name `state` (a file name).

    Returns
    -------
    MaskSet
        One bool mask per prunable layer of `model`, in the model's order.

    Raises
    ------
    MaskError
        If a layer has no entry (and ``missing="error"``), an entry's shape differs from the
        layer's weight, masks are given for layers the model does not have, or a mask is not 0/1.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 2, bias=False))
    >>> sd = {"model.0.weight": torch.tensor([[0.5, 0.0], [0.0, 1.0]])}  # an extra prefix
    >>> masks_from_state_dict(net, sd)["0"].astype(int).tolist()
    [[1, 0], [0, 1]]
    """
    if missing not in ("error", "dense"):
        raise MaskError(f"missing={missing!r}: use 'error' or 'dense'")
    if not isinstance(state, Mapping):
        raise MaskError(f"{source} holds a {type(state).__name__}, not a mapping of tensors")
    layers = _model_layers(model)
    entries: dict[str, dict[str, str]] = {}  # file layer name -> kind -> key
    for key in state:
        name, kind = _split(key)
        if kind == "weight" and len(_shape(state[key])) < 2:
            continue  # a norm's or embedding-free 1-D weight
        if kind == "bare" and len(_shape(state[key])) < 2:
            continue
        entries.setdefault(name, {})[kind] = key
    to_file = _prefix_map(set(entries), list(layers))
    tied = _tied(model)
    out, absent, wrong = {}, [], {}
    used = set()  # keys read
    for name, (shape, attr, transposed, groups) in layers.items():
        candidates = [to_file(name)] + [to_file(other) for other in tied.get(name, [])]
        key, is_mask, siblings = _entry(entries, candidates, attr)
        if key is None:
            absent.append(name)
            continue
        used.update(siblings)
        got = _shape(state[key])
        if got != shape:
            wrong[name] = (key, got, shape)
            continue
        value = _fetch(state[key])
        mask = _as_bool(name, value) if is_mask else _nonzero_values(value)
        if transposed:  # the model holds (in, out); masks are in the layer's (out, in) order
            mask = canonical_weight(torch.from_numpy(mask), True, groups).numpy().copy()
        out[name] = mask
    if wrong:
        name, (key, got, shape) = next(iter(wrong.items()))
        hint = " (transposed: was it saved from a Conv1D-style (in, out) weight?)" \
            if got == shape[::-1] else ""
        raise MaskError(f"{len(wrong)} layer(s) do not match {source}: layer {name!r} has weight "
                        f"shape {shape} but {key!r} has shape {got}{hint}; use the checkpoint of "
                        "this model's configuration")
    if absent and missing == "error":
        sample = sorted(entries)[:3]
        raise MaskError(f"{source} has no mask or weight for {len(absent)} layer(s) of the model, "
                        f"e.g. {absent[:3]} (its entries look like {sample}); check that it "
                        "belongs to this model, or pass missing='dense' to keep those layers "
                        "dense")
    for name in absent:
        shape, _, transposed, _ = layers[name]
        out[name] = np.ones(shape[::-1] if transposed else shape, dtype=bool)
    stray = [name for name, kinds in entries.items()
             if ("mask" in kinds or "bare" in kinds) and not set(kinds.values()) & used]
    if stray:
        raise MaskError(f"{source} has masks for {len(stray)} layer(s) the model does not have, "
                        f"e.g. {stray[:3]}; the model's layers look like {list(layers)[:3]}")
    return MaskSet({name: out[name] for name in layers})


def _entry(entries, candidates, attr: str):
    """(key, is_mask, the layer's keys) of the first candidate layer found in `entries`, or
    (None, False, ()).

    A module weight (``attr == "weight"``) is ``path.weight_mask`` / ``path`` (a mask) or
    ``path.weight_orig`` / ``path.weight``; any other parameter (``path.in_proj_weight``) is
    ``path.in_proj_weight_mask`` or the parameter itself, read as a weight (non-zero = kept, which
    is also right for a 0/1 mask)."""
    for base in candidates:
        if attr == "weight":
            kinds = entries.get(base)
            if kinds:
                if "mask" in kinds or "bare" in kinds:
                    return kinds.get("mask") or kinds["bare"], True, tuple(kinds.values())
                return kinds["weight"], False, tuple(kinds.values())
        else:
            found = [(key, is_mask) for key, is_mask in
                     ((base + "_mask", True), (base + "_orig", False), (base, False))
                     if key in entries and "bare" in entries[key]]
            if found:
                return found[0][0], found[0][1], tuple(key for key, _ in found)
    return None, False, ()


def _shape(value) -> tuple[int, ...]:
    if hasattr(value, "get_shape"):
        return tuple(value.get_shape())
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _fetch(value):
    return value[:] if hasattr(value, "get_shape") else value


def state_dict_keys(path) -> list[str]:
    """The tensor names in a checkpoint file (``.safetensors``, ``.pt``/``.bin``, ``.npz``),
    without reading the tensors of a safetensors file."""
    paths = _shards(os.fspath(path))
    keys: list[str] = []
    for p in paths:
        if p.endswith(".safetensors"):
            with _safetensors("safe_open")(p, framework="pt") as archive:
                keys.extend(archive.keys())
        else:
            keys.extend(_load_other(p))
    return keys


def _shards(path: str) -> list[str]:
    """A file, or every ``*.safetensors`` shard of a directory (a Hugging Face model folder)."""
    if os.path.isdir(path):
        shards = sorted(os.path.join(path, f) for f in os.listdir(path)
                        if f.endswith(".safetensors"))
        if not shards:
            raise MaskError(f"directory {path!r} holds no .safetensors file")
        return shards
    if not os.path.exists(path):
        raise MaskError(f"checkpoint {path!r} does not exist")
    return [path]


def _load_other(path: str) -> dict:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if not path.endswith((".pt", ".pth", ".bin")):
        raise MaskError(f"unknown checkpoint type {path!r}; use .safetensors, .pt, .bin or .npz "
                        "(or a directory of .safetensors shards)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MaskError(f"cannot read {path!r}: {reason}") from None


def load_masks(model: nn.Module, path, *, missing: str = "error") -> MaskSet:
    """Masks of `model` from a checkpoint file or a Hugging Face model directory.

    `path` is a ``.safetensors`` file, a directory of ``.safetensors`` shards, a ``.pt`` /
    ``.bin`` torch file or a ``.npz``; what it may hold and how keys are matched is
    :func:`masks_from_state_dict`. Safetensors tensors are read one at a time, only those
    matched to a layer.

    Raises
    ------
    MaskError
        If the file is missing or unreadable, or its entries do not match the model's layers.
    """
    path = os.fspath(path)
    paths = _shards(path)
    state: dict = {}
    handles = []
    try:
        for p in paths:
            if p.endswith(".safetensors"):
                try:
                    handle = _safetensors("safe_open")(p, framework="pt")
                    archive = handle.__enter__()
                except Exception as exc:
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise MaskError(f"cannot read {p!r}: it is not a safetensors file "
                                    f"({reason})") from None
                handles.append(handle)
                state.update({k: archive.get_slice(k) for k in archive.keys()})
            else:
                state.update(_load_other(p))
        return masks_from_state_dict(model, state, missing=missing, source=path)
    finally:
        for handle in handles:
            handle.__exit__(None, None, None)
