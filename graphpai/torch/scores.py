"""Weight scores for the ranking methods: magnitude, SNIP, GraSP, SynFlow ([SF];
docs/definitions.md#ranking).

Every function scores a private copy of the model: the model a user passes is left exactly as it
was (weights, BatchNorm statistics, train/eval mode, ``requires_grad``, ``torch.nn.utils.prune``
hooks, the global torch random state and torch's thread setting: scoring runs under
:func:`graphpai.torch.threads.torch_threads`, never more threads than free cores). On the copy,
masks attached by ``torch.nn.utils.prune`` are made permanent first, so a weight is scored as the network uses it
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
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .._progress import bar
from ..budgets import check_compression
from ..errors import DataError, ModelError
from ..masks import MaskSet
from ..threshold import global_threshold
from .extract import canonical_weight, layer_parameters, model_weight, prunable_modules
from .masks import layer_modules, layer_names, masked_copy
from .threads import torch_threads

__all__ = ["magnitude_scores", "snip_scores", "grasp_scores", "synflow_scores", "synflow_masks"]


# ------------------------------------------------------------------------------ helpers
def _scoring_copy(model, dtype=None, input_shape=None):
    """(copy of `model` in eval mode, {layer name: weight Parameter requiring grad}) for the
    layers forward calls (:func:`graphpai.torch.masks.layer_modules`: a module forward never
    calls is named in a warning, gets no score and is not in N)."""
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"scoring needs a torch.nn.Module, got {type(model).__name__}; ranking "
                         "methods score the weights of a model, a NetGraph has none")
    layers = set(layer_modules(model, input_shape=input_shape))
    clone = masked_copy(model)
    if dtype is not None:
        clone.to(dtype)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    modules = prunable_modules(clone)
    extra = set(layer_names(model, input_shape=input_shape)) - set(modules)
    weights = _Weights()
    for name, (module, attr, transposed) in layer_parameters(clone).items():
        if name in layers or name in extra:  # Conv/Linear the forward calls, and other layers
            weights[name] = getattr(module, attr)  # (attention in_proj, HF Conv1D, ...)
            if transposed:
                weights.layouts[name] = getattr(module, "groups", 1)
    if not weights:
        raise ModelError(f"{type(model).__name__} has no Conv1d/Conv2d/Linear layer to prune")
    for w in weights.values():
        w.requires_grad_(True)
    return clone, weights


class _Weights(dict):
    """Layer name -> the model's weight Parameter; ``layouts``: layer name -> groups of the
    weights the model holds transposed to the layer's (out, in) order (HF Conv1D, ...)."""

    def __init__(self):
        super().__init__()
        self.layouts: dict[str, int] = {}


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
            "num_classes) (docs/definitions.md#training uses 10 x classes images)"
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


def _numpy(tensors, layouts=None):
    """float64 numpy arrays in each layer's (out, in, ...) order (`layouts`: see _Weights)."""
    layouts = layouts or {}
    return {name: (canonical_weight(t.detach(), True, layouts[name]) if name in layouts
                   else t.detach()).to("cpu", torch.float64).numpy()
            for name, t in tensors.items()}


def _grads(output, weights, **kwargs):
    """d output / d weight for every weight (zeros where the weight does not reach `output`)."""
    grads = torch.autograd.grad(output, list(weights.values()), allow_unused=True, **kwargs)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights.values(), grads)]


def _device_dtype(model):
    p = next(model.parameters())
    return p.device, p.dtype


# ------------------------------------------------------------------------------ scores
def magnitude_scores(model, *, input_shape=None) -> dict[str, np.ndarray]:
    """|w| of every prunable weight (docs/definitions.md#ranking).

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[-3.0, 0.5]]))
    >>> magnitude_scores(torch.nn.Sequential(layer))["0"].tolist()
    [[3.0, 0.5]]
    """
    _, weights = _scoring_copy(model, input_shape=input_shape)
    return _numpy({name: w.abs() for name, w in weights.items()}, weights.layouts)


def snip_scores(model, data, *, seed=None, progress: bool = False,
                input_shape=None) -> dict[str, np.ndarray]:
    r"""SNIP connection sensitivity :math:`|w \odot \sum_b \partial L_b / \partial w|` ([SNIP]).

    L_b is the mean cross-entropy of batch b; the gradients of all batches are summed before the
    absolute value is taken, as [SF]'s SNIP accumulates ``mask.grad`` (|dL/dm| at m = 1 equals
    |w dL/dw|). [SF] then divides by the sum of scores, which changes no mask and is left out.

    Parameters
    ----------
    model : torch.nn.Module
    data : iterable of (inputs, labels)
        The prune batches (docs/definitions.md#training: 10 x classes images), e.g. a DataLoader or
        :func:`graphpai.torch.data.synthetic_batches`.
    seed : int or numpy.random.Generator, optional
        Seeds torch's RNG during scoring (eval mode draws nothing; the RNG is restored after).
    progress : bool
        A bar over the batches on stderr (:mod:`graphpai._progress`).
    input_shape : tuple of int, optional
        One input without the batch dimension, to trace a model that does not carry
        ``input_shape`` and find its layers (default ``model.input_shape``).

    Raises
    ------
    DataError
        If `data` is None, empty or not made of (inputs, labels) pairs.
    """
    clone, weights = _scoring_copy(model, input_shape=input_shape)
    batches = _batches(data, "snip", *_device_dtype(clone))
    total = [torch.zeros_like(w) for w in weights.values()]
    with _torch_seed(clone, seed), torch_threads():
        for x, y in bar(batches, progress, desc="snip", unit="batch"):
            for t, g in zip(total, _grads(F.cross_entropy(clone(x), y), weights)):
                t += g
    return _numpy({name: (w * g).abs() for (name, w), g in zip(weights.items(), total)},
                  weights.layouts)


def grasp_scores(model, data, *, temperature: float = 200.0, seed=None,
                 progress: bool = False, input_shape=None) -> dict[str, np.ndarray]:
    r"""GraSP score :math:`w \odot Hg` at temperature T, larger is kept ([GraSP], [SF]).

    With :math:`L_b` the mean cross-entropy of the logits divided by T on batch b,
    :math:`g = \sum_b \nabla_w L_b` (no graph kept) and :math:`Hg = \sum_b \nabla_w (g^\top \nabla_w
    L_b)`, the Hessian of the loss in the prunable weights times g. The paper's score is
    :math:`S = -w \odot Hg` and removes the weights with the largest S; keeping the largest
    :math:`w \odot Hg`, as docs/definitions.md#ranking and [SF]'s code do, gives the same mask.
    [SF] divides by
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
    progress : bool
        A bar over both passes' batches on stderr (:mod:`graphpai._progress`).
    input_shape : tuple of int, optional
        One input without the batch dimension, to trace a model that does not carry
        ``input_shape`` and find its layers (default ``model.input_shape``).

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
    clone, weights = _scoring_copy(model, input_shape=input_shape)
    batches = _batches(data, "grasp", *_device_dtype(clone))
    with _torch_seed(clone, seed), torch_threads(), \
            bar(None, progress, total=2 * len(batches), desc="grasp", unit="batch") as shown:
        stopped = [torch.zeros_like(w) for w in weights.values()]
        for x, y in batches:
            for s, g in zip(stopped, _grads(F.cross_entropy(clone(x) / temperature, y), weights)):
                s += g
            shown.update(1)
        hg = [torch.zeros_like(w) for w in weights.values()]
        for x, y in batches:
            grads = _grads(F.cross_entropy(clone(x) / temperature, y), weights, create_graph=True)
            inner = sum((s * g).sum() for s, g in zip(stopped, grads))
            for h, d in zip(hg, _grads(inner, weights)):
                h += d
            shown.update(1)
    return _numpy({name: w.detach() * h for (name, w), h in zip(weights.items(), hg)},
                  weights.layouts)


def _input_shape(model, input_shape):
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ModelError(f"SynFlow needs the input shape of {type(model).__name__}; pass "
                         "input_shape=(C, H, W) (one example, without the batch dimension)")
    return tuple(int(s) for s in shape)


# Activations that are not the identity on SynFlow's positive signal: the scoring pass replaces
# them by the identity, so R is the linearised network's path sum ([SF]). ReLU stays: on the
# positive signal it is the identity already, and [SF]'s code applies it (a BatchNorm shift of
# -|running_mean| can make a pre-activation negative, and ReLU clips it there too).
_SATURATING_MODULES = (
    nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.Softplus, nn.LogSigmoid, nn.Softmax,
    nn.LogSoftmax, nn.Tanhshrink, nn.Softsign,
)  # nn.ReLU6 is a Hardtanh
_SATURATING_FUNCTIONS = {
    F.relu6, F.hardtanh, F.hardtanh_, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.leaky_relu, F.softplus, F.tanh, F.sigmoid, F.logsigmoid,
    F.softmax, F.log_softmax, F.softsign, F.tanhshrink, torch.sigmoid, torch.tanh,
    torch.softmax, torch.log_softmax, torch.clamp, torch.clip,
}
_SATURATING_METHODS = {"sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "log_softmax",
                       "clamp", "clamp_", "clip", "clip_"}


class _LeafTracer(torch.fx.Tracer):
    """fx's tracer, with subclasses of the layers and activations kept whole."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear) + _SATURATING_MODULES) \
            or super().is_leaf_module(m, qualname)


def _identity_activations(clone: nn.Module) -> nn.Module:
    """`clone` with every saturating activation replaced by the identity (see above).

    Traced with torch.fx, so ``F.relu6(x)`` in a forward is found as well as ``nn.ReLU6``
    modules; a model fx cannot trace gets its activation modules swapped for ``nn.Identity``.
    """
    try:
        graph = _LeafTracer().trace(clone)
    except Exception:  # data-dependent control flow: modules only
        for name, module in list(clone.named_modules()):
            if name and isinstance(module, _SATURATING_MODULES):
                parent, _, attr = name.rpartition(".")
                setattr(clone.get_submodule(parent) if parent else clone, attr, nn.Identity())
        return clone
    for node in list(graph.nodes):
        if node.op == "call_module":
            hit = isinstance(clone.get_submodule(node.target), _SATURATING_MODULES)
        elif node.op == "call_function":
            hit = node.target in _SATURATING_FUNCTIONS
        else:
            hit = node.op == "call_method" and node.target in _SATURATING_METHODS
        if hit and node.args and isinstance(node.args[0], torch.fx.Node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    return torch.fx.GraphModule(clone, graph)


def _linearised(model, input_shape=None):
    """A float64 copy with |.| of every parameter and buffer and saturating activations replaced
    by the identity, and its prunable weights (the copy's own Parameters)."""
    clone, weights = _scoring_copy(model, dtype=torch.float64, input_shape=input_shape)
    bad = [name for name, w in weights.items() if torch.isnan(w).any()]
    if bad:
        raise ModelError(f"SynFlow: the model has NaN weights in layer(s) {bad}; initialise or "
                         "load finite weights before pruning")
    with torch.no_grad():
        for t in itertools.chain(clone.parameters(), clone.buffers()):
            t.abs_()
    return _identity_activations(clone), weights


def _synflow_round(clone, weights, ones, iteration=None):
    where = "" if iteration is None else f" at iteration {iteration}"
    flow = clone(ones).sum()
    if torch.isnan(flow):
        raise ModelError(f"SynFlow's synaptic flow R is NaN{where}: the model has NaN or inf "
                         "parameters or buffers (BatchNorm statistics included); load finite ones")
    if not torch.isfinite(flow):
        raise ModelError(f"SynFlow's synaptic flow R overflowed float64{where} ({flow.item()}); "
                         "the network is too deep or its weights too large for R = sum(f(1))")
    scores = {name: (w * g).abs_() for (name, w), g in zip(weights.items(), _grads(flow, weights))}
    # one reduction per layer answers both checks: a NaN or inf score shows in the layer's max
    peaks = torch.stack([t.amax() for t in scores.values()])
    if not bool(torch.isfinite(peaks).all()):
        raise ModelError(f"SynFlow scores are not finite{where} (R = {flow.item():.6g}); the "
                         "gradient of R overflowed float64")
    if not bool((peaks > 0).any()):
        raise ModelError(f"SynFlow scores are all zero{where} (R = {flow.item():.6g}): no kept "
                         "path carries the all-ones signal from the input to the output; check "
                         "the masks and the model's last ops (an output that does not depend on "
                         "the input has a zero gradient)")
    return scores


def synflow_scores(model, *, input_shape=None, seed=None) -> dict[str, np.ndarray]:
    r"""One round of SynFlow scores :math:`|w \odot \partial R / \partial w|` ([SF]).

    On a float64 copy whose every parameter and buffer is replaced by its absolute value (eval
    mode), :math:`R = \sum f(\mathbf{1})` for one all-ones input. Data-free. [SF] defines R on
    the linearised network (the path sum :math:`\mathbf{1}^\top \prod_l |W_l| \mathbf{1}`), so
    activations that are not the identity on this positive signal (ReLU6, hardtanh, clamp,
    sigmoid, tanh, GELU, SiLU, softmax, ...) are the identity in the scoring pass, as a module or
    in ``forward`` (torch.fx); ReLU and BatchNorm act as in [SF]'s code. On ReLU networks the
    scores are [SF]'s own. Float64 keeps R finite on dense VGG-19 and ResNet-56; an overflow
    raises instead of returning inf.

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
        If no input shape is known, a weight is NaN ("NaN weights"), R is NaN or overflows, or
        every score is 0 (no kept path joins the input to the output): never silently.
    """
    shape = _input_shape(model, input_shape)
    clone, weights = _linearised(model, shape)
    device, dtype = _device_dtype(clone)
    with _torch_seed(clone, seed), torch_threads():
        return _numpy(_synflow_round(clone, weights, torch.ones((1, *shape), dtype=dtype,
                                                                 device=device)),
                      weights.layouts)


def synflow_masks(model, compression, *, iterations: int = 100, input_shape=None, seed=None,
                  progress: bool = False) -> MaskSet:
    r"""Iterative SynFlow pruning ([SF]; docs/definitions.md#synflow).

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
        A bar on stderr over the iterations (:mod:`graphpai._progress`) (each is a float64 forward and backward
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
    clone, weights = _linearised(model, shape)
    c = check_compression(compression, sum(w.numel() for w in weights.values()))
    device, dtype = _device_dtype(clone)
    ones = torch.ones((1, *shape), dtype=dtype, device=device)
    masks = None
    with _torch_seed(clone, seed), torch_threads():
        for k in bar(range(1, iterations + 1), progress, desc="synflow", unit="round"):
            scores = _synflow_round(clone, weights, ones, k)
            masks = global_threshold(_numpy(scores, weights.layouts), c ** (k / iterations))
            with torch.no_grad():
                for name, w in weights.items():
                    mask = torch.from_numpy(masks[name])
                    if name in weights.layouts:  # back to the model's order
                        mask = model_weight(mask, True, weights.layouts[name])
                    w.mul_(mask.to(device))
    return masks
