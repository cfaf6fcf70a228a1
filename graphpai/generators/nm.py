"""N:M semi-structured masks: N kept weights in every M consecutive input weights of a row.

A weight of shape ``(C_out, C_in/groups, *kernel)`` is cut into **groups** of M consecutive
input channels: for a linear layer, row ``o`` splits into ``w[o, 0:M], w[o, M:2M], ...``; for a
convolution the groups run along the input channels at each output channel and kernel tap
(``w[o, kM:(k+1)M, a, b]``), the layout NVIDIA's 2:4 sparse tensor cores and its ASP library use.
A mask is **N:M compliant** when its input width is a multiple of M and no group keeps more than N
weights (a sparse kernel stores exactly N values per group, zeros allowed). docs/llm.md explains
where the pattern comes from and how the audit reports it.

:func:`nm_masks` builds such masks (keep the N best of each group by magnitude, by any scores
such as Wanda's, or at random); :func:`nm_compliant` and :func:`nm_violations` check one. The
registered method ``"nm"`` is the :func:`graphpai.prune` glue.

References
----------
.. [NM] A. Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378 (2021):
   2:4 structured sparsity on NVIDIA Ampere.
.. [Wanda] M. Sun, Z. Liu, A. Bair, J. Z. Kolter, "A Simple and Effective Pruning Approach for
   Large Language Models", ICLR 2024.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping

import numpy as np

from .._memory import available_memory
from ..errors import BudgetError, GraphpaiError, MaskError, ModelError, UnknownMethodError
from ..masks import MaskSet, nm_compliant, nm_eligible, nm_violations, parse_nm
from ..masks import _nm_groups as _groups
from ._registry import register

__all__ = ["parse_nm", "nm_masks", "nm_compliant", "nm_violations", "nm_eligible", "nm",
           "pattern_for"]

SCORES = ("magnitude", "random")
_BLOCK = 1 << 22  # weights per block of rows when ranking inside groups (bounded memory)


def _top_n(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Bool mask keeping the `n` largest scores of every group (ties: the lower index)."""
    groups = _groups(scores, m)
    flat = groups.reshape(-1, m)
    keep = np.zeros(flat.shape, dtype=bool)
    rows = max(1, _BLOCK // m)
    for start in range(0, flat.shape[0], rows):
        block = flat[start:start + rows]
        if np.isnan(block).any():
            raise ModelError("scores contain NaN; check the model's weights and the data for "
                             "NaN or inf")
        order = np.argsort(-block, axis=1, kind="stable")[:, :n]
        np.put_along_axis(keep[start:start + rows], order, True, axis=1)
    return _ungroup(keep, scores.shape)


def _random_n(shape, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Bool mask keeping `n` of every `m` at random: each group draws one of the C(m, n)
    subsets uniformly (the same law as the top n of i.i.d. scores)."""
    patterns = np.zeros((math.comb(m, n), m), dtype=bool)
    for row, chosen in enumerate(itertools.combinations(range(m), n)):
        patterns[row, list(chosen)] = True
    n_groups = math.prod(shape) // m
    keep = np.empty((n_groups, m), dtype=bool)
    step = max(1, _BLOCK // m)
    for start in range(0, n_groups, step):
        stop = min(n_groups, start + step)
        keep[start:stop] = patterns[rng.integers(0, len(patterns), stop - start)]
    return _ungroup(keep, shape)


def _ungroup(keep: np.ndarray, shape) -> np.ndarray:
    """Inverse of :func:`_groups` for a ``(groups, m)`` bool array."""
    if len(shape) > 2:
        moved = (shape[0], *shape[2:], shape[1])
        return np.ascontiguousarray(np.moveaxis(keep.reshape(moved), -1, 1))
    return keep.reshape(shape)


def _check_fits(name: str, shape, per_weight: float) -> None:
    """A one-line GraphpaiError naming the layer and the GiB its masks need when they cannot
    fit, instead of a MemoryError or the kernel's out-of-memory kill."""
    need = math.prod(shape) * per_weight
    free = available_memory()
    if free is not None and need > free:
        raise GraphpaiError(f"layer {name!r} {tuple(shape)} needs {need / 2**30:.2f} GiB for its "
                            f"N:M mask but only {free / 2**30:.2f} GiB is free")


def _torch_layers(model) -> dict:
    """Layer name -> (weight in the model's order, transposed, groups) for every layer of
    ``to_graph(model)`` (Conv/Linear weights, ``in_proj_weight``, Hugging Face ``Conv1D``)."""
    from ..torch.extract import layer_parameters

    out = {}
    for name, (module, attr, transposed) in layer_parameters(model).items():
        weight = getattr(module, f"{attr}_orig", None)
        out[name] = (getattr(module, attr) if weight is None else weight, transposed,
                     getattr(module, "groups", 1))
    return out


def _layer_shapes(net) -> dict[str, tuple[int, ...]]:
    from ..graph import NetGraph

    if isinstance(net, NetGraph):
        return {name: tuple(layer.weight_shape) for name, layer in net.layers.items()}
    if isinstance(net, Mapping):
        return {name: tuple(np.shape(value)) for name, value in net.items()}
    from ..torch.extract import canonical_weight  # a torch model

    return {name: tuple(canonical_weight(w, t, g).shape)
            for name, (w, t, g) in _torch_layers(net).items()}


def _magnitudes(net, name):
    """|w| of layer `name` as float32 numpy in the layer's (out, in, ...) order (one layer at a
    time: an LLM never has all of its weights copied at once)."""
    from ..graph import NetGraph

    if isinstance(net, NetGraph):
        raise ModelError("magnitude N:M needs the weights: pass the torch model, a mapping of "
                         "layer name to weight, or scores='random' for a NetGraph")
    if isinstance(net, Mapping):
        value = net[name]
        if hasattr(value, "detach"):
            value = value.detach().abs().float().cpu().numpy()
        return np.abs(np.asarray(value, dtype=np.float32))
    import torch

    from ..torch.extract import canonical_weight

    weight, transposed, groups = _torch_layers(net)[name]
    if weight.is_meta:
        raise ModelError(f"layer {name!r} has its weight on the meta device (no values); "
                         "magnitude N:M needs real weights: use scores='random' or load them")
    with torch.no_grad():
        w = canonical_weight(weight.detach(), transposed, groups)
        return w.abs().to("cpu", torch.float32).contiguous().numpy()


def nm_masks(net, pattern="2:4", *, scores="magnitude", seed=None, layers=None,
             exclude=()) -> MaskSet:
    """N:M masks: keep the N best of every group of M consecutive input weights ([NM]).

    Parameters
    ----------
    net : torch.nn.Module, NetGraph or mapping of str to array
        The layers to mask. A NetGraph gives only shapes (``scores="random"`` or a mapping of
        scores); a mapping of weights or a model gives magnitudes.
    pattern : str or (int, int)
        ``"2:4"`` (the default, what Ampere and later GPUs accelerate), ``"4:8"``, ...
    scores : {"magnitude", "random"} or mapping of str to array
        What decides the N kept weights of a group: the largest ``|w|``, a uniform random choice,
        or given scores of each layer's shape (larger is kept; Wanda's from
        :func:`graphpai.torch.wanda.wanda_scores`). Ties keep the lower input index.
    seed : int or numpy.random.Generator, optional
        For ``scores="random"``; one generator is used for all layers in order.
    layers : iterable of str, optional
        The layers to make N:M. None: every layer whose input width (``C_in/groups``) is a
        multiple of M; the others, and those in `exclude`, are kept dense (as NVIDIA's ASP does).
        A layer named here that cannot be grouped is an error.
    exclude : iterable of str
        Layers kept dense (e.g. ``["lm_head"]``: LLM pruning leaves the LM head dense).

    Returns
    -------
    MaskSet
        Every layer of `net`: N:M layers keep exactly N of every M, the others are all ones.

    Raises
    ------
    BudgetError
        If the pattern is malformed.
    MaskError
        If `layers` or `exclude` names an unknown layer, or a layer in `layers` has an input width
        that is not a multiple of M.

    Examples
    --------
    >>> w = {"fc": np.array([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, -1.0, 0.0]])}
    >>> nm_masks(w, "2:4")["fc"].astype(int).tolist()  # ties keep the lower index
    [[0, 1, 1, 0, 1, 1, 0, 0]]
    """
    n, m = parse_nm(pattern)
    shapes = _layer_shapes(net)
    named = None if layers is None else list(layers)
    excluded = list(exclude)
    unknown = [k for k in (named or []) + excluded if k not in shapes]
    if unknown:
        raise MaskError(f"unknown layer(s) {unknown} in layers=/exclude=; the layers are "
                        f"{list(shapes)}")
    if named is not None:
        bad = {k: shapes[k] for k in named if not nm_eligible(shapes[k], m)}
        if bad:
            raise MaskError(f"layer(s) {bad} (name: weight shape) have an input width that is not "
                            f"a multiple of {m}, so they cannot be {n}:{m}; leave them out of "
                            "layers=")
        chosen = set(named) - set(excluded)
    else:
        chosen = {k for k, s in shapes.items() if nm_eligible(s, m)} - set(excluded)
    if isinstance(scores, str) and scores not in SCORES:
        raise UnknownMethodError(f"unknown N:M scores {scores!r}; use one of {SCORES} or a "
                                 "mapping of layer name to scores")
    if not isinstance(scores, str):
        missing = [k for k in chosen if k not in scores]
        if missing:
            raise MaskError(f"no scores for layer(s) {missing}")
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        # the mask, plus float32 magnitudes or scores while ranking (blocks are small)
        _check_fits(name, shape, 1 if name not in chosen or scores == "random" else 5)
        if name not in chosen:
            out[name] = np.ones(shape, dtype=bool)
        elif scores == "random":
            out[name] = _random_n(shape, n, m, rng)
        else:
            values = _magnitudes(net, name) if scores == "magnitude" else _as_scores(scores[name])
            if values.shape != shape:
                raise MaskError(f"scores for {name!r} have shape {values.shape} but the weight "
                                f"is {shape}")
            out[name] = _top_n(values, n, m)
    return MaskSet(out)


def _as_scores(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def pattern_for(compression, pattern=None) -> tuple[int, int]:
    """The (N, M) that `prune`'s compression asks for: `pattern` when given (its M/N must equal
    the compression), else N = 4 / compression of M = 4."""
    from ..budgets import parse_compression

    c = parse_compression(compression)
    if pattern is not None:
        n, m = parse_nm(pattern)
        if not math.isclose(c, m / n, rel_tol=1e-9):
            raise BudgetError(f"pattern {n}:{m} keeps {n}/{m} of each group, a compression of "
                              f"{m / n:g}, but compression={compression!r} was asked; give "
                              f"compression={m / n:g} or leave it out of pattern=")
        return n, m
    n = 4 / c
    if not math.isclose(n, round(n)) or round(n) < 1:
        raise BudgetError(f"compression {compression!r} is not M/N for an N:M pattern with M = 4 "
                          "(4, 2 or 4/3); pass pattern='4:8' or similar with compression=M/N")
    return int(round(n)), 4


@register("nm", kind="ranking")
def nm(model, compression, *, seed=None, data=None, input_shape=None, pattern=None,
       scores="magnitude", layers=None, exclude=()) -> MaskSet:
    """N:M semi-structured masks for :func:`graphpai.prune` ([NM]).

    ``prune(model, "nm", compression=2)`` is 2:4 by magnitude; ``compression=2,
    pattern="4:8"`` is 4:8 (the compression must be M/N); ``scores="random"`` draws each group's
    N at random. Compression counts the N:M layers only: layers that cannot be grouped stay dense.
    See :func:`nm_masks`; `data` and `input_shape` are not used.
    """
    n, m = pattern_for(compression, pattern)
    return nm_masks(model, (n, m), scores=scores, seed=seed, layers=layers, exclude=exclude)
