"""Weight scores for the ranking methods: magnitude, SNIP, GraSP, SynFlow ([SF]; SPEC §7).

Every function scores a private copy of the model: the model a user passes is left exactly as it
was (weights, BatchNorm statistics, train/eval mode, ``requires_grad``, ``torch.nn.utils.prune``
hooks, and the global torch random state). On the copy, masks attached by
``torch.nn.utils.prune`` are made permanent first, so a weight is scored as the network uses it
(``weight_orig * weight_mask``), and the model is put in eval mode ([SF]'s default).

Scores are returned as ``{layer name: float64 ndarray of the weight's shape}``; larger scores are
kept by :func:`graphpai.generators.global_threshold`. Layer names are module paths of the
Conv1d/Conv2d/Linear layers, as in the NetGraph.

References
----------
.. [SF] H. Tanaka, D. Kunin, D. L. K. Yamins, S. Ganguli, "Pruning neural networks without any data
   by iteratively conserving synaptic flow", NeurIPS 2020 (ganguli-lab/Synaptic-Flow).
.. [SNIP] N. Lee, T. Ajanthan, P. H. S. Torr, "SNIP: Single-shot Network Pruning based on
   Connection Sensitivity", ICLR 2019.
.. [GraSP] C. Wang, G. Zhang, R. Grosse, "Picking Winning Tickets Before Training by Preserving
   Gradient Flow", ICLR 2020.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..budgets import check_compression
from ..errors import DataError, ModelError
from ..generators.ranking import global_threshold
from ..masks import MaskSet
from .extract import prunable_modules
from .masks import masked_copy

__all__ = ["magnitude_scores", "snip_scores", "grasp_scores", "synflow_scores", "synflow_masks"]


# ------------------------------------------------------------------------------ helpers
def _scoring_copy(model, dtype=None):
    """(copy of `model` in eval mode, {layer name: weight Parameter requiring grad})."""
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"scoring needs a torch.nn.Module, got {type(model).__name__}; ranking "
                         "methods score the weights of a model, a NetGraph has none")
    clone = masked_copy(model)
    if dtype is not None:
        clone.to(dtype)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    weights = {name: m.weight for name, m in prunable_modules(clone).items()}
    if not weights:
        raise ModelError(f"{type(model).__name__} has no Conv1d/Conv2d/Linear layer to prune")
    for w in weights.values():
        w.requires_grad_(True)
    return clone, weights


@contextmanager
def _torch_seed(model, seed):
    """Fork the torch RNG (CPU and the model's GPUs), seed it, restore it afterwards."""
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2**63 - 1))
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0 if seed is None else int(seed))
        yield


def _batches(data, method, device, dtype):
    """`data` as a list of (x, y) tensor pairs on `device`; DataError if missing or malformed."""
    if data is None:
        raise DataError(
            f"{method} needs batches: pass data=, an iterable of (inputs, labels) such as a "
            "DataLoader, or for a demo graphpai.torch.data.synthetic_batches(input_shape, "
            "num_classes) (SPEC §8 uses 10 x classes images)"
        )
    batches = []
    for i, batch in enumerate(data):
        try:
            x, y = batch
        except (TypeError, ValueError):
            raise DataError(f"batch {i} of the {method} data is not an (inputs, labels) "
                            "pair") from None
        x = torch.as_tensor(x).to(device)
        x = x.to(dtype) if x.is_floating_point() else x
        batches.append((x, torch.as_tensor(y).to(device)))
    if not batches:
        raise DataError(f"the {method} data holds no batch; give at least one (inputs, labels) "
                        "pair")
    return batches


def _numpy(tensors):
    return {name: t.detach().to("cpu", torch.float64).numpy() for name, t in tensors.items()}


def _grads(output, weights, **kwargs):
    """d output / d weight for every weight (zeros where the weight does not reach `output`)."""
    grads = torch.autograd.grad(output, list(weights.values()), allow_unused=True, **kwargs)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights.values(), grads)]


def _device_dtype(model):
    p = next(model.parameters())
    return p.device, p.dtype


# ------------------------------------------------------------------------------ scores
def magnitude_scores(model) -> dict[str, np.ndarray]:
    """|w| of every prunable weight (SPEC §7).

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[-3.0, 0.5]]))
    >>> magnitude_scores(torch.nn.Sequential(layer))["0"].tolist()
    [[3.0, 0.5]]
    """
    _, weights = _scoring_copy(model)
    return _numpy({name: w.abs() for name, w in weights.items()})


def snip_scores(model, data, *, seed=None) -> dict[str, np.ndarray]:
    r"""SNIP connection sensitivity :math:`|w \odot \sum_b \partial L_b / \partial w|` ([SNIP]).

    L_b is the mean cross-entropy of batch b; the gradients of all batches are summed before the
    absolute value is taken, as [SF]'s SNIP accumulates ``mask.grad`` (|dL/dm| at m = 1 equals
    |w dL/dw|). [SF] then divides by the sum of scores, which changes no mask and is left out.

    Parameters
    ----------
    model : torch.nn.Module
    data : iterable of (inputs, labels)
        The prune batches (SPEC §8: 10 x classes images), e.g. a DataLoader or
        :func:`graphpai.torch.data.synthetic_batches`.
    seed : int or numpy.random.Generator, optional
        Seeds torch's RNG during scoring (eval mode draws nothing; the RNG is restored after).

    Raises
    ------
    DataError
        If `data` is None, empty or not made of (inputs, labels) pairs.
    """
    clone, weights = _scoring_copy(model)
    batches = _batches(data, "snip", *_device_dtype(clone))
    total = [torch.zeros_like(w) for w in weights.values()]
    with _torch_seed(clone, seed):
        for x, y in batches:
            for t, g in zip(total, _grads(F.cross_entropy(clone(x), y), weights)):
                t += g
    return _numpy({name: (w * g).abs() for (name, w), g in zip(weights.items(), total)})


def grasp_scores(model, data, *, temperature: float = 200.0, seed=None) -> dict[str, np.ndarray]:
    r"""GraSP score :math:`w \odot Hg` at temperature T, larger is kept ([GraSP], [SF]).

    With :math:`L_b` the mean cross-entropy of the logits divided by T on batch b,
    :math:`g = \sum_b \nabla_w L_b` (no graph kept) and :math:`Hg = \sum_b \nabla_w (g^\top \nabla_w
    L_b)`, the Hessian of the loss in the prunable weights times g. The paper's score is
    :math:`S = -w \odot Hg` and removes the weights with the largest S; keeping the largest
    :math:`w \odot Hg`, as SPEC §7 and [SF]'s code do, gives the same mask. [SF] divides by
    :math:`|\sum S|`, which changes no mask and is left out.

    Parameters
    ----------
    model : torch.nn.Module
    data : iterable of (inputs, labels)
        The prune batches; it is read once and used for both passes.
    temperature : float
        T, 200 in [GraSP] and [SF].
    seed : int or numpy.random.Generator, optional
        Seeds torch's RNG during scoring (restored after).

    Raises
    ------
    DataError
        If `data` is None, empty or not made of (inputs, labels) pairs.
    ModelError
        If `temperature` is not a positive number.
    """
    if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
        raise ModelError(f"GraSP temperature {temperature!r} must be a positive number ([GraSP] "
                         "and [SF] use 200)")
    clone, weights = _scoring_copy(model)
    batches = _batches(data, "grasp", *_device_dtype(clone))
    with _torch_seed(clone, seed):
        stopped = [torch.zeros_like(w) for w in weights.values()]
        for x, y in batches:
            for s, g in zip(stopped, _grads(F.cross_entropy(clone(x) / temperature, y), weights)):
                s += g
        hg = [torch.zeros_like(w) for w in weights.values()]
        for x, y in batches:
            grads = _grads(F.cross_entropy(clone(x) / temperature, y), weights, create_graph=True)
            inner = sum((s * g).sum() for s, g in zip(stopped, grads))
            for h, d in zip(hg, _grads(inner, weights)):
                h += d
    return _numpy({name: w.detach() * h for (name, w), h in zip(weights.items(), hg)})


def _input_shape(model, input_shape):
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ModelError(f"SynFlow needs the input shape of {type(model).__name__}; pass "
                         "input_shape=(C, H, W) (one example, without the batch dimension)")
    return tuple(int(s) for s in shape)


def _linearised(model):
    """A float64 copy with |.| of every parameter and buffer, and its prunable weights."""
    clone, weights = _scoring_copy(model, dtype=torch.float64)
    with torch.no_grad():
        for t in itertools.chain(clone.parameters(), clone.buffers()):
            t.abs_()
    return clone, weights


def _synflow_round(clone, weights, ones, iteration=None):
    flow = clone(ones).sum()
    if not torch.isfinite(flow):
        where = "" if iteration is None else f" at iteration {iteration}"
        raise ModelError(f"SynFlow's synaptic flow R overflowed float64{where} ({flow.item()}); "
                         "the network is too deep or its weights too large for R = sum(f(1))")
    return {name: (w * g).abs() for (name, w), g in zip(weights.items(), _grads(flow, weights))}


def synflow_scores(model, *, input_shape=None, seed=None) -> dict[str, np.ndarray]:
    r"""One round of SynFlow scores :math:`|w \odot \partial R / \partial w|` ([SF]).

    On a float64 copy whose every parameter and buffer is replaced by its absolute value (eval
    mode), :math:`R = \sum f(\mathbf{1})` for one all-ones input. Data-free. Float64 keeps R finite
    on dense VGG-19 and ResNet-56; an overflow raises instead of returning inf.

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : tuple of int, optional
        One input without the batch dimension; default ``model.input_shape`` (zoo models).
    seed : int or numpy.random.Generator, optional
        Seeds torch's RNG during scoring (restored after).

    Raises
    ------
    ModelError
        If no input shape is known or R overflows.
    """
    shape = _input_shape(model, input_shape)
    clone, weights = _linearised(model)
    device, dtype = _device_dtype(clone)
    with _torch_seed(clone, seed):
        return _numpy(_synflow_round(clone, weights, torch.ones((1, *shape), dtype=dtype,
                                                                 device=device)))


def synflow_masks(model, compression, *, iterations: int = 100, input_shape=None, seed=None,
                  progress: bool = False) -> MaskSet:
    r"""Iterative SynFlow pruning ([SF]; SPEC §7).

    For k = 1 .. `iterations`: score the masked, linearised float64 copy (see
    :func:`synflow_scores`), then prune globally to density :math:`d^{k/n}` (the exponential
    schedule; compression :math:`c^{k/n}`) with :func:`~graphpai.generators.global_threshold`;
    pruned weights are zeroed on the copy, so their score stays 0. [SF] restores the signs of
    the parameters afterwards; here the model itself is never changed, so nothing needs restoring.

    Parameters
    ----------
    model : torch.nn.Module
    compression : float or str
        Final compression c in [1, N].
    iterations : int
        n, 100 in [SF].
    input_shape : tuple of int, optional
        Default ``model.input_shape``.
    seed : int or numpy.random.Generator, optional
        Seeds torch's RNG during scoring (restored after).
    progress : bool
        Show a tqdm progress bar over the iterations (each is a float64 forward and backward
        pass and a global threshold: VGG-16 takes ~30 s in all on one CPU core).

    Returns
    -------
    MaskSet

    Raises
    ------
    ModelError
        If `iterations` is not a whole number >= 1, no input shape is known or R overflows.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) \
            or iterations < 1:
        raise ModelError(f"SynFlow iterations must be a whole number >= 1 ([SF] uses 100), got "
                         f"{iterations!r}")
    iterations = int(iterations)
    shape = _input_shape(model, input_shape)
    clone, weights = _linearised(model)
    c = check_compression(compression, sum(w.numel() for w in weights.values()))
    device, dtype = _device_dtype(clone)
    ones = torch.ones((1, *shape), dtype=dtype, device=device)
    masks = None
    with _torch_seed(clone, seed):
        for k in tqdm(range(1, iterations + 1), desc="synflow", disable=not progress,
                      leave=False):
            scores = _synflow_round(clone, weights, ones, k)
            masks = global_threshold(_numpy(scores), c ** (k / iterations))
            with torch.no_grad():
                for name, w in weights.items():
                    w.mul_(torch.from_numpy(masks[name]).to(device))
    return masks
