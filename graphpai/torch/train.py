"""Train a masked network with a published recipe, on the CPU or a CUDA GPU (docs/training.md).

``graphpai.torch.train(model, masks, data, recipe="mica-resnet20")`` (the module is callable) trains in place and returns a
:class:`TrainResult`. The masks stay exact: pruned weights are set to zero before the first step,
their gradients are zeroed before every optimizer step and the weights are multiplied by the mask
after it, so the parameters themselves (not only a forward hook's product) are exactly zero in
every forward pass and at the end, whatever the weight decay, momentum or mixed precision; the
kept weights get the same gradients as under ``torch.nn.utils.prune``'s reparametrisation.

Speed: the whole split lives on the training device, batches are gathered by index and augmented
there in one batched gather (:func:`graphpai.torch.data.crop_flip`); on CUDA the forward runs
under bf16 (or fp16 with loss scaling) autocast, convnets use channels-last, and
``compile=True`` wraps the model in ``torch.compile``.

Resume: with `checkpoint_dir`, a checkpoint is written atomically after every epoch and a later
call with the same settings continues from it; the data order, the augmentation and the global
torch random state of epoch e depend only on (seed, e), so a resumed run ends with the same
weights as an uninterrupted one (exactly, on the CPU).

Extension (dynamic sparse training): `callbacks` get the step, the model, the live
:class:`TrainMasks` and the optimizer after every backward pass (dense gradients), after every
optimizer step and at the end of every epoch; ``masks.update({layer: new_mask})`` changes the
masks in the one place the loop reads them (weights and optimizer state outside the new mask are
zeroed), and the checkpoint stores the current masks and each callback's ``state_dict()``.

References
----------
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024 (the training protocol of the ``mica-*`` recipes).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

from .._callable import callable_module
from .._results import atomic_path, jsonable
from ..errors import DataError, MaskError, TrainError
from ..masks import MaskSet
from .data import DataSplits, ImageSet, crop_flip, load_data
from .extract import prunable_modules
from .recipes import Recipe, get_recipe

__all__ = ["train", "train_point", "TrainResult", "EpochMetrics", "TrainMasks", "TrainInfo",
           "Callback", "resolve_device", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"
_FORMAT = "graphpai-train-1"
# recipe fields that do not change the trained numbers: a checkpoint made with other values of
# these resumes; any other difference is an error
_RESUMABLE = {"epochs", "source", "compile", "eval_batch_size"}


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class EpochMetrics:
    """One epoch: its learning rate, running training loss/accuracy (with augmentation, in train
    mode), validation and test loss/accuracy (None without that split), times and throughput."""

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    test_loss: float | None
    test_acc: float | None
    train_s: float
    eval_s: float
    images_per_s: float


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns: the recipe, the per-epoch history and the accuracies of [MiCA].

    Attributes
    ----------
    recipe : dict
        The recipe's fields as trained (overrides applied).
    seed : int
    device : str
        The torch device and, on CUDA, the GPU's name.
    history : tuple of EpochMetrics
        Every epoch trained so far, those of earlier (resumed) calls included.
    resumed_from : int
        Epochs already done in the checkpoint this call started from (0: a fresh run).
    """

    recipe: dict
    seed: int
    device: str
    history: tuple[EpochMetrics, ...]
    resumed_from: int = 0

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def complete(self) -> bool:
        return self.epochs >= self.recipe["epochs"]

    def _best(self, key):
        values = [getattr(e, key) for e in self.history if getattr(e, key) is not None]
        return max(values) if values else None

    @property
    def best_val_acc(self) -> float | None:
        return self._best("val_acc")

    @property
    def best_test_acc(self) -> float | None:
        """Highest test accuracy over the epochs (the "best" of [MiCA])."""
        return self._best("test_acc")

    @property
    def final_test_acc(self) -> float | None:
        return self.history[-1].test_acc if self.history else None

    @property
    def test_acc_at_best_val(self) -> float | None:
        """Test accuracy of the epoch with the best validation accuracy (first one on ties)."""
        scored = [e for e in self.history if e.val_acc is not None]
        if not scored:
            return None
        return max(scored, key=lambda e: e.val_acc).test_acc

    @property
    def wall_s(self) -> float:
        """Training plus evaluation time summed over all epochs."""
        return float(sum(e.train_s + e.eval_s for e in self.history))

    @property
    def images_per_s(self) -> float | None:
        """Training images per second over all epochs (evaluation excluded)."""
        seconds = sum(e.train_s for e in self.history)
        images = sum(e.images_per_s * e.train_s for e in self.history)
        return images / seconds if seconds > 0 else None

    def columns(self) -> dict:
        """The training columns of a study table row (docs/training.md)."""
        return {"recipe": self.recipe["name"], "epochs": self.epochs,
                "best_val_acc": self.best_val_acc, "best_test_acc": self.best_test_acc,
                "final_test_acc": self.final_test_acc, "train_wall_s": self.wall_s}

    def to_dict(self) -> dict:
        out = {"recipe": self.recipe, "seed": self.seed, "device": self.device,
               "epochs": self.epochs, "complete": self.complete,
               "resumed_from": self.resumed_from, "best_val_acc": self.best_val_acc,
               "best_test_acc": self.best_test_acc, "final_test_acc": self.final_test_acc,
               "test_acc_at_best_val": self.test_acc_at_best_val, "wall_s": self.wall_s,
               "images_per_s": self.images_per_s,
               "history": [asdict(e) for e in self.history]}
        return jsonable(out)

    def table(self) -> str:
        """One line per epoch."""
        from ..report.tables import format_table

        rows = [{k: v for k, v in asdict(e).items() if v is not None} for e in self.history]
        return format_table(rows)


# ------------------------------------------------------------------------------ masks
class TrainMasks(Mapping):
    """The masks of a training run: layer name -> bool tensor on the training device.

    The one place the training loop reads masks from. Layers without a mask train dense. Read a
    mask with ``masks[name]`` (do not modify it in place); change masks with :meth:`update`.
    """

    def __init__(self, weights: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]):
        self._weights = weights
        self._masks: dict[str, torch.Tensor] = {}
        self._factors: list[torch.Tensor] = []
        self.optimizer = None  # set by train(); update() zeroes its state outside new masks
        self._set(masks)

    def _set(self, masks):
        for name, mask in masks.items():
            weight = self._weights[name]
            self._masks[name] = mask.to(device=weight.device, dtype=torch.bool)
        self._names = list(self._masks)
        self._params = [self._weights[n] for n in self._names]
        self._factors = [self._masks[n].to(self._weights[n].dtype) for n in self._names]

    def __getitem__(self, name):
        return self._masks[name]

    def __iter__(self):
        return iter(self._masks)

    def __len__(self):
        return len(self._masks)

    def weight(self, name: str) -> nn.Parameter:
        """The weight parameter that the mask of `name` multiplies."""
        return self._weights[name]

    @torch.no_grad()
    def apply(self) -> None:
        """Multiply every masked weight by its mask (pruned weights become exactly 0)."""
        if self._params:
            torch._foreach_mul_(self._params, self._factors)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights (so momentum and Adam moments stay 0 there)."""
        pairs = [(p.grad, f) for p, f in zip(self._params, self._factors) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [f for _, f in pairs])

    @torch.no_grad()
    def update(self, new: Mapping) -> None:
        """Replace the masks of some layers (dynamic sparse training's drop and regrow).

        Weights outside a new mask are zeroed, and so is every optimizer state tensor of the
        weight's shape (momentum, Adam moments) there; a regrown weight therefore starts at 0
        with no momentum. Per-layer counts are not enforced (that is the caller's rule).

        Raises
        ------
        MaskError
            If a layer has no mask in this run or a new mask has the wrong shape.
        """
        checked = {}
        for name, mask in new.items():
            if name not in self._masks:
                raise MaskError(f"no mask for layer {name!r} in this training run; masked layers "
                                f"are {self._names}")
            mask = torch.as_tensor(mask, device=self._masks[name].device).to(torch.bool)
            if mask.shape != self._masks[name].shape:
                raise MaskError(f"new mask for {name!r} has shape {tuple(mask.shape)} but the "
                                f"weight is {tuple(self._masks[name].shape)}")
            checked[name] = mask
        self._set(checked)
        for name, mask in checked.items():
            weight = self._weights[name]
            weight.mul_(mask)
            state = self.optimizer.state.get(weight, {}) if self.optimizer is not None else {}
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    value.mul_(mask)

    def to_maskset(self) -> MaskSet:
        """The current masks as a (numpy) MaskSet."""
        return MaskSet({n: m.cpu().numpy() for n, m in self._masks.items()})

    def state_dict(self) -> dict:
        return {n: m.cpu() for n, m in self._masks.items()}


# ------------------------------------------------------------------------------ callbacks
@dataclass(frozen=True)
class TrainInfo:
    """What a callback's ``on_train_begin`` learns about the run (`model`, `masks` and
    `optimizer` as they are before the first step, or restored from the checkpoint)."""

    epochs: int
    steps_per_epoch: int
    total_steps: int
    start_epoch: int
    start_step: int
    device: str
    seed: int
    recipe: Recipe
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    masks: TrainMasks | None = field(default=None, repr=False, compare=False)
    optimizer: object = field(default=None, repr=False, compare=False)


class Callback:
    """Hooks into the training loop; subclass and override any (all are no-ops here).

    A callback may also define ``state_dict()`` and ``load_state_dict(state)``: the checkpoint
    then stores its state and a resumed run restores it. A plain function given as a callback is
    called as ``on_step``.
    """

    def on_train_begin(self, info: TrainInfo) -> None:
        """Once, before the first (or the resumed) epoch."""

    def on_backward(self, step: int, model, masks: TrainMasks, optimizer) -> None:
        """After ``loss.backward()`` of step `step` (0-based), before the gradients of pruned
        weights are zeroed: ``weight.grad`` is the dense gradient (RigL's regrowth score). Under
        fp16 loss scaling the gradients are still scaled."""

    def on_step(self, step: int, model, masks: TrainMasks, optimizer) -> None:
        """After the optimizer step and the mask; `step` counts the steps done (1-based)."""

    def on_epoch_end(self, epoch: int, model, masks: TrainMasks, optimizer,
                     result: TrainResult) -> None:
        """After epoch `epoch` (1-based) is evaluated and recorded, before its checkpoint."""


def _hooks(callbacks, name):
    out = []
    for cb in callbacks:
        if name == "on_step" and not hasattr(cb, "on_step") and callable(cb):
            out.append(cb)
        elif callable(getattr(cb, name, None)):
            out.append(getattr(cb, name))
    return out


# ------------------------------------------------------------------------------ device
def resolve_device(device="auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a CUDA request without CUDA is a TrainError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise TrainError(f"device {device!r} is not a torch device; use cpu, cuda or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise TrainError(f"CUDA was requested (device {str(device)!r}) but no CUDA GPU is "
                             f"available to torch {torch.__version__} ({build}); use --device cpu "
                             "or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(f"device {str(device)!r} does not exist: torch sees "
                             f"{torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu":
        raise TrainError(f"device {str(device)!r} is not supported; use cpu, cuda or auto")
    return device


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


# ------------------------------------------------------------------------------ setup helpers
def _as_split(data, role) -> ImageSet | None:
    if data is None or isinstance(data, ImageSet):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y) or len(y) == 0 \
                or y.dtype not in (torch.int64, torch.int32):
            raise DataError(f"{role} data must be (inputs (n, ...), integer labels (n,)) with "
                            f"n > 0; got {tuple(x.shape)} and {tuple(y.shape)} {y.dtype}")
        channels = x.shape[1]
        return ImageSet(x, y.long(), int(y.max()) + 1, torch.zeros(channels), torch.ones(channels))
    raise DataError(f"{role} data must be an ImageSet (graphpai.torch.data), a DataSplits or an "
                    f"(inputs, labels) pair of tensors; got {type(data).__name__}")


def _prepare_masks(model: nn.Module, masks) -> tuple[dict, dict]:
    """(prunable weights by layer, bool masks by layer); torch prune buffers made permanent."""
    modules = prunable_modules(model)
    carried = {n: m.weight_mask.detach().clone() for n, m in modules.items()
               if hasattr(m, "weight_mask") and hasattr(m, "weight_orig")}
    if isinstance(masks, (str, os.PathLike)):
        masks = MaskSet.load(masks)
    if masks is None:
        masks = carried
    if not isinstance(masks, Mapping):
        raise MaskError(f"masks must be a MaskSet, a mapping of layer name to mask or a file; got "
                        f"{type(masks).__name__}")
    masks = {MaskSet.layer_name(k): v for k, v in masks.items()}
    unknown = [k for k in masks if k not in modules]
    if unknown:
        raise MaskError(f"masks for unknown layer(s) {unknown}; this model's prunable layers are "
                        f"{list(modules)}; make the masks for this model")
    out = {}
    for name, mask in masks.items():
        weight = getattr(modules[name], "weight_orig", modules[name].weight)
        mask = torch.as_tensor(np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask))
        if tuple(mask.shape) != tuple(weight.shape):
            raise MaskError(f"mask for {name!r} has shape {tuple(mask.shape)} but the weight is "
                            f"{tuple(weight.shape)}; make the masks for this model")
        out[name] = mask != 0
    for module in modules.values():  # train plain parameters, masked by the loop
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return {n: modules[n].weight for n in out}, out


def _optimizer(model, recipe: Recipe):
    params = [p for p in model.parameters() if p.requires_grad]
    if callable(recipe.optimizer):
        return recipe.optimizer(params, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0,
                               weight_decay=recipe.weight_decay)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _schedule(optimizer, recipe: Recipe):
    if callable(recipe.schedule):
        return recipe.schedule(optimizer, recipe)
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones),
                                                    gamma=recipe.gamma)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def _precision(device, recipe):
    """(autocast dtype or None, GradScaler or None)."""
    if device.type != "cuda" or recipe.amp == "none":
        return None, None
    amp = recipe.amp
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0]
               % (2 ** 63))


def _steps(n, batch_size):
    """Batch boundaries of an epoch: a final batch of one image is dropped (BatchNorm)."""
    stops = list(range(batch_size, n, batch_size)) + [n]
    starts = [0] + stops[:-1]
    bounds = [(a, b) for a, b in zip(starts, stops) if b - a >= 2 or n == 1]
    return bounds


@torch.no_grad()
def _evaluate(forward, data: ImageSet, batch_size, autocast, memory_format):
    total_loss = torch.zeros((), device=data.device)
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    for i in range(0, len(data), batch_size):
        x = data.normalize(data.images[i:i + batch_size]).contiguous(memory_format=memory_format)
        y = data.labels[i:i + batch_size]
        with autocast():
            out = forward(x)
        total_loss += F.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    n = len(data)
    return float(total_loss) / n, int(correct) / n


def _checkpoint_path(checkpoint_dir):
    return None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), CHECKPOINT)


def _load_checkpoint(path, recipe: Recipe, seed: int, masks: TrainMasks):
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise TrainError(f"checkpoint {path!r} cannot be read ({exc}); delete it to start over")
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise TrainError(f"{path!r} is not a graphpai training checkpoint; use another directory")
    old = {k: v for k, v in state["recipe"].items() if k not in _RESUMABLE}
    new = {k: v for k, v in recipe.to_dict().items() if k not in _RESUMABLE}
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed or state["seed"] != seed:
        what = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        if state["seed"] != seed:
            what = ", ".join(filter(None, [what, f"seed {state['seed']} -> {seed}"]))
        raise TrainError(f"checkpoint {path!r} was made with other settings ({what}); use "
                         "another output directory, or delete the checkpoint to start over")
    if set(state["masks"]) != set(masks):
        raise TrainError(f"checkpoint {path!r} masks layers {sorted(state['masks'])} but this "
                         f"run masks {sorted(masks)}; use another output directory")
    return state


# ------------------------------------------------------------------------------ train
def train(model: nn.Module, masks, train_data, *, val_data=None, test_data=None,
          recipe="mica-resnet20", device="auto", seed: int = 0, checkpoint_dir=None,
          progress: bool = True, callbacks=(), **overrides) -> TrainResult:
    """Train `model` in place with fixed `masks` and a recipe; return the per-epoch history.

    Parameters
    ----------
    model : nn.Module
        Initialised model (see ``graphpai.torch.models.build``); torch prune buffers on it are
        made permanent and, when `masks` is None, used as the masks.
    masks : MaskSet, mapping of layer name to 0/1 array or tensor, mask file, or None
        Layers without a mask train dense; None trains the model dense (or with its prune masks).
    train_data : DataSplits, ImageSet or (inputs, labels) tensors
        A DataSplits also supplies `val_data` and `test_data` when those are not given.
    val_data, test_data : ImageSet or (inputs, labels), optional
        Evaluated after every epoch.
    recipe : str or Recipe
        A name of ``graphpai.torch.recipes.RECIPES`` (``mica-resnet20``, ``mica-vgg16``,
        ``sf-cifar``, ``npb-cifar``) or a Recipe.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device
    seed : int
        Seeds the data order, the augmentation and the global torch random state (dropout);
        the model's initial weights are the caller's.
    checkpoint_dir : path, optional
        Write ``checkpoint.pt`` there after every epoch (atomically) and resume from it.
    progress : bool
        A tqdm bar per epoch (images/s, loss, accuracy) and one summary line per epoch.
    callbacks : sequence of Callback (or functions called after each step)
    **overrides
        Recipe fields, e.g. ``epochs=10, lr=0.05, batch_size=64``.

    Returns
    -------
    TrainResult

    Raises
    ------
    MaskError
        If a mask names an unknown layer or has the wrong shape.
    TrainError
        For a bad recipe value, CUDA requested where none is present, a model with fewer outputs
        than the data's classes, or a checkpoint made with other settings.
    UnknownMethodError
        For an unknown recipe name.
    DataError
        For data that is not images and integer labels.

    Examples
    --------
    >>> from graphpai.torch.data import synthetic_data
    >>> data = synthetic_data(4, (3, 8, 8), train_size=64, test_size=32)
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
    ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                             torch.nn.Linear(8, 4))
    >>> result = train(model, None, data, recipe="mica-resnet20", epochs=2, device="cpu",
    ...                progress=False)
    >>> result.epochs, 0 <= result.final_test_acc <= 1
    (2, True)
    """
    recipe = get_recipe(recipe, **overrides)
    device = resolve_device(device)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TrainError(f"seed must be a whole number, got {seed!r}")
    seed = int(seed)
    if isinstance(train_data, DataSplits):
        val_data = train_data.val if val_data is None else val_data
        test_data = train_data.test if test_data is None else test_data
        train_data = train_data.train
    train_set, val_set, test_set = (_as_split(d, r) for d, r in
                                    ((train_data, "training"), (val_data, "validation"),
                                     (test_data, "test")))
    if train_set is None or len(train_set) < 2:
        raise DataError("training needs at least 2 training images")
    weights, bool_masks = _prepare_masks(model, masks)

    model.to(device)
    convnet = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = (device.type == "cuda") if recipe.channels_last is None else recipe.channels_last
    memory_format = torch.channels_last if channels_last and convnet else torch.contiguous_format
    model.to(memory_format=memory_format)
    live = TrainMasks(weights, bool_masks)
    live.apply()
    optimizer = _optimizer(model, recipe)
    live.optimizer = optimizer
    scheduler = _schedule(optimizer, recipe)
    autocast_dtype, scaler = _precision(device, recipe)

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=autocast_dtype)

    forward = model
    if recipe.compile and device.type == "cuda":
        forward = torch.compile(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_set = train_set.to(device)
    val_set = val_set.to(device) if val_set is not None else None
    test_set = test_set.to(device) if test_set is not None else None

    history: list[EpochMetrics] = []
    path = _checkpoint_path(checkpoint_dir)
    resumed_from, step = 0, 0
    callback_list = list(callbacks)
    if path is not None and os.path.exists(path):
        state = _load_checkpoint(path, recipe, seed, live)
        model.load_state_dict(state["model"])
        live.update(state["masks"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        states = list(state.get("callbacks", []))
        if any(s is not None for s in states[len(callback_list):]):
            raise TrainError(f"checkpoint {path!r} holds the state of callbacks this run does "
                             "not have (dynamic sparse training, topology tracking); rerun with "
                             "the same options or use another output directory")
        for cb, cb_state in zip(callback_list, states):
            if cb_state is not None and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(cb_state)
        history = [EpochMetrics(**e) for e in state["history"]]
        resumed_from, step = len(history), state["step"]

    def result_now():
        return TrainResult(recipe.to_dict(), seed, _device_name(device), tuple(history),
                           resumed_from)

    bounds = _steps(len(train_set), recipe.batch_size)
    info = TrainInfo(recipe.epochs, len(bounds), len(bounds) * recipe.epochs, resumed_from, step,
                     str(device), seed, recipe, model, live, optimizer)
    for hook in _hooks(callback_list, "on_train_begin"):
        hook(info)
    on_backward, on_step = _hooks(callback_list, "on_backward"), _hooks(callback_list, "on_step")
    on_epoch_end = _hooks(callback_list, "on_epoch_end")
    from tqdm.auto import tqdm

    cuda_devices = [device] if device.type == "cuda" else []
    checked_outputs = False
    with torch.random.fork_rng(devices=cuda_devices):
        for epoch in range(resumed_from, recipe.epochs):
            epoch_seed = _epoch_seed(seed, epoch)
            torch.manual_seed(epoch_seed)
            generator = torch.Generator().manual_seed(epoch_seed)
            n = len(train_set)
            order = torch.randperm(n, generator=generator).to(device)
            if recipe.augment:
                span = 2 * recipe.crop_padding + 1
                top = torch.randint(0, span, (n,), generator=generator).to(device)
                left = torch.randint(0, span, (n,), generator=generator).to(device)
                flip = torch.randint(0, 2, (n,), generator=generator).bool().to(device)
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            bar = tqdm(total=sum(b - a for a, b in bounds), unit="img", unit_scale=True,
                       desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False,
                       disable=not progress)
            started = time.perf_counter()
            for i, (a, b) in enumerate(bounds):
                index = order[a:b]
                x = train_set.images[index]
                if recipe.augment:
                    x = crop_flip(x, top[a:b], left[a:b], flip[a:b], recipe.crop_padding)
                x = train_set.normalize(x).contiguous(memory_format=memory_format)
                y = train_set.labels[index]
                with autocast():
                    out = forward(x)
                    if not checked_outputs:
                        if out.dim() != 2 or out.shape[1] < train_set.num_classes:
                            raise TrainError(f"the model gives outputs of shape "
                                             f"{tuple(out.shape)} but the data has "
                                             f"{train_set.num_classes} classes; build it with "
                                             f"num_classes={train_set.num_classes}")
                        checked_outputs = True
                    loss = F.cross_entropy(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                for hook in on_backward:
                    hook(step, model, live, optimizer)
                live.mask_gradients()
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                live.apply()
                step += 1
                loss_sum += loss.detach() * (b - a)
                correct += (out.detach().argmax(1) == y).sum()
                seen += b - a
                for hook in on_step:
                    hook(step, model, live, optimizer)
                if progress:
                    bar.update(b - a)
                    if i % 10 == 0 or b == n:
                        bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}",
                                        acc=f"{int(correct) / seen:.3f}")
            train_loss, train_acc = float(loss_sum) / seen, int(correct) / seen
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_s = time.perf_counter() - started
            bar.close()
            scheduler.step()
            started = time.perf_counter()
            model.eval()
            val = (_evaluate(forward, val_set, recipe.eval_batch_size, autocast, memory_format)
                   if val_set is not None else (None, None))
            test = (_evaluate(forward, test_set, recipe.eval_batch_size, autocast, memory_format)
                    if test_set is not None else (None, None))
            eval_s = time.perf_counter() - started
            history.append(EpochMetrics(epoch + 1, lr, train_loss, train_acc, *val, *test,
                                        train_s, eval_s, seen / train_s if train_s > 0 else math.inf))
            if progress:
                parts = [f"epoch {epoch + 1}/{recipe.epochs}", f"loss {train_loss:.4f}",
                         f"acc {train_acc:.4f}"]
                parts += [f"val {val[1]:.4f}"] if val[1] is not None else []
                parts += [f"test {test[1]:.4f}"] if test[1] is not None else []
                parts.append(f"{seen / train_s:,.0f} img/s")
                tqdm.write("  ".join(parts))
            for hook in on_epoch_end:
                hook(epoch + 1, model, live, optimizer, result_now())
            if path is not None:
                _save_checkpoint(path, model, live, optimizer, scheduler, scaler, callback_list,
                                 recipe, seed, step, history)
    return result_now()


def _save_checkpoint(path, model, masks, optimizer, scheduler, scaler, callbacks, recipe, seed,
                     step, history):
    state = {"format": _FORMAT, "recipe": recipe.to_dict(), "seed": seed, "step": step,
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "masks": masks.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None,
             "callbacks": [cb.state_dict() if callable(getattr(cb, "state_dict", None)) else None
                           for cb in callbacks],
             "history": [asdict(e) for e in history]}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_point(model: nn.Module, masks, data, *, recipe="mica-resnet20", seed: int = 0,
                device="auto", checkpoint_dir=None, progress: bool = False, dst=None,
                update_every: int = 100, drop_fraction: float = 0.3, stop_fraction: float = 0.75,
                **overrides) -> dict:
    """Train one study point and return its training columns.

    Parameters
    ----------
    model, masks
        As for :func:`train` (the point's model, initialised with the point's seed, and its masks).
    data : DataSplits, ``"synthetic"`` or a CIFAR directory
        A string is loaded with :func:`graphpai.torch.data.load_data` (cached per process) with the
        recipe's validation split and the model's ``input_shape`` when it has one.
    recipe, seed, device, checkpoint_dir, progress, **overrides
        As for :func:`train`.
    dst : {None, "set", "rigl"}
        Dynamic sparse training from `masks` (:class:`graphpai.torch.dst.DynamicSparsity` with
        `update_every`, `drop_fraction`, `stop_fraction`; docs/dst.md); None keeps them fixed.

    Returns
    -------
    dict
        ``recipe`` (name), ``epochs``, ``best_val_acc``, ``best_test_acc``, ``final_test_acc``
        (accuracies in [0, 1]; None without that split) and ``train_wall_s``; with `dst`, also
        ``dst`` (the method).
    """
    resolved = get_recipe(recipe, **overrides)
    callbacks = []
    if dst is not None:
        from .dst import DynamicSparsity

        callbacks.append(DynamicSparsity(dst, update_every=update_every,
                                         drop_fraction=drop_fraction, stop_fraction=stop_fraction))
    if not isinstance(data, DataSplits):
        data = load_data(data, input_shape=getattr(model, "input_shape", None),
                         val_fraction=resolved.val_fraction)
    result = train(model, masks, data, recipe=resolved, seed=seed, device=device,
                   checkpoint_dir=checkpoint_dir, progress=progress, callbacks=callbacks)
    columns = result.columns()
    if dst is not None:
        columns["dst"] = callbacks[0].method
    return columns


callable_module(__name__, train)
