"""Training recipes: the published CIFAR protocols as frozen dataclasses (docs/training.md).

A recipe is every setting that changes a trained number: epochs, batch size, optimizer, learning
rate and its schedule, weight decay, the validation split and the augmentation. ``get_recipe(name,
**overrides)`` returns the named recipe with some fields replaced (the CLI's ``--epochs``,
``--lr``, ``--batch-size`` ...); any field can also be replaced with ``dataclasses.replace``.

- ``mica-vgg16`` and ``mica-resnet20`` ([MiCA]): 80/20 train/validation split, SGD with Nesterov
  momentum 0.9, batch 128, 160 epochs; VGG-16 lr 0.1, x0.1 at epochs 60 and 120, weight decay
  1e-4; ResNet-20 lr 0.01, x0.2 at 60 and 120, weight decay 5e-4.
- ``sf-cifar`` ([SF] code, ganguli-lab/Synaptic-Flow: its ``momentum`` optimizer and the
  ``args.json`` of its stored CIFAR-10/100 VGG runs): the whole training set (no validation
  split), SGD with Nesterov momentum 0.9, lr 0.1, x0.1 at 60 and 120, weight decay 1e-4, batch 128,
  160 epochs, test batch 256.
- ``npb-cifar`` ([NPB] code, pvh1602/NPB: ``scripts/run.sh`` for ResNet-20 on CIFAR-10 and the
  defaults of ``main.py``): as ``sf-cifar`` but with plain (not Nesterov) momentum 0.9.

References
----------
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024.
.. [SF] H. Tanaka, D. Kunin, D. Yamins, S. Ganguli, "Pruning neural networks without any data by
   iteratively conserving synaptic flow", NeurIPS 2020.
.. [NPB] H. Pham et al., "Towards Data-Agnostic Pruning at Initialization: What Makes a Good
   Sparse Mask?", NeurIPS 2023.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Union

from ..errors import TrainError, UnknownMethodError

__all__ = ["Recipe", "RECIPES", "get_recipe", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")
AMP = ("auto", "bf16", "fp16", "none")


@dataclass(frozen=True)
class Recipe:
    """One training protocol; every field can be overridden (``dataclasses.replace``).

    Attributes
    ----------
    name : str
    epochs : int
        Passes over the training split.
    batch_size : int
        Training batch; the last, smaller batch of an epoch is kept unless it holds one image
        (BatchNorm cannot train on one).
    lr : float
        Initial learning rate.
    momentum, nesterov : float, bool
        SGD momentum (``adam``/``adamw`` ignore both).
    weight_decay : float
        L2 penalty on every parameter (the papers' code applies it to BatchNorm and biases too).
    optimizer : {"sgd", "adam", "adamw"} or callable
        A callable is ``optimizer(parameters, recipe) -> torch.optim.Optimizer``.
    schedule : {"multistep", "cosine", "constant"} or callable
        Stepped once per epoch. ``multistep`` multiplies the rate by `gamma` at each of
        `milestones`; ``cosine`` anneals to 0 over `epochs`. A callable is
        ``schedule(optimizer, recipe) -> torch.optim.lr_scheduler.LRScheduler``.
    milestones : tuple of int
    gamma : float
    val_fraction : float
        Share of the official training set held out for validation (seeded; 0 for none).
    augment : bool
        Random crop with `crop_padding` zero pixels on every side and a random horizontal flip.
    crop_padding : int
    eval_batch_size : int
    amp : {"auto", "bf16", "fp16", "none"}
        Mixed precision on CUDA ("auto": bf16 where the GPU has it, else fp16 with loss scaling);
        CPU always trains in float32.
    channels_last : bool or None
        Channels-last memory format for convnets; None: on CUDA only.
    compile : bool
        Wrap the model in ``torch.compile`` (CUDA only; CPU ignores it).
    source : str
        Where the numbers come from.
    """

    name: str
    lr: float
    weight_decay: float
    gamma: float = 0.1
    milestones: tuple[int, ...] = (60, 120)
    epochs: int = 160
    batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    optimizer: Union[str, Callable] = "sgd"
    schedule: Union[str, Callable] = "multistep"
    val_fraction: float = 0.2
    augment: bool = True
    crop_padding: int = 4
    eval_batch_size: int = 1000
    amp: str = "auto"
    channels_last: Union[bool, None] = None
    compile: bool = False
    source: str = field(default="", compare=False)

    def __post_init__(self):
        def bad(name, value, need):
            raise TrainError(f"recipe {self.name!r}: {name}={value!r} is not valid; it must be "
                             f"{need}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(name, value, "a positive whole number (like --epochs 160)")
        for name in ("lr", "weight_decay", "momentum", "gamma"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0 or (name == "lr" and value == 0)):
                bad(name, value, "a finite number >= 0" + (" and > 0" if name == "lr" else ""))
        if not 0 <= self.val_fraction < 1:
            bad("val_fraction", self.val_fraction, "in [0, 1)")
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) \
                or self.crop_padding < 0:
            bad("crop_padding", self.crop_padding, "a whole number >= 0")
        try:
            milestones = tuple(int(m) for m in self.milestones)
        except (TypeError, ValueError):
            bad("milestones", self.milestones, "a sequence of epochs like (60, 120)")
        if any(m < 1 for m in milestones) or list(milestones) != sorted(milestones):
            bad("milestones", self.milestones, "increasing positive epochs like (60, 120)")
        object.__setattr__(self, "milestones", milestones)
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            bad("optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)} or a callable")
        if isinstance(self.schedule, str) and self.schedule not in SCHEDULES:
            bad("schedule", self.schedule, f"one of {', '.join(SCHEDULES)} or a callable")
        if self.amp not in AMP:
            bad("amp", self.amp, f"one of {', '.join(AMP)}")

    def to_dict(self) -> dict:
        """The fields as plain values (a callable optimizer or schedule by its name)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if callable(value):
                value = getattr(value, "__qualname__", repr(value))
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _recipes(*recipes: Recipe) -> dict[str, Recipe]:
    return {r.name: r for r in recipes}


RECIPES: dict[str, Recipe] = _recipes(
    Recipe("mica-vgg16", lr=0.1, gamma=0.1, weight_decay=1e-4,
           source="[MiCA] CIFAR VGG-16: 80/20 split, SGD Nesterov 0.9, batch 128, 160 epochs, "
                  "lr 0.1 x0.1 at 60/120, wd 1e-4"),
    Recipe("mica-resnet20", lr=0.01, gamma=0.2, weight_decay=5e-4,
           source="[MiCA] CIFAR ResNet-20: 80/20 split, SGD Nesterov 0.9, batch 128, 160 epochs, "
                  "lr 0.01 x0.2 at 60/120, wd 5e-4"),
    Recipe("sf-cifar", lr=0.1, gamma=0.1, weight_decay=1e-4, val_fraction=0.0,
           eval_batch_size=256,
           source="[SF] code (ganguli-lab/Synaptic-Flow): full training set, SGD Nesterov 0.9, "
                  "batch 128, 160 epochs, lr 0.1 x0.1 at 60/120, wd 1e-4"),
    Recipe("npb-cifar", lr=0.1, gamma=0.1, weight_decay=1e-4, val_fraction=0.0, nesterov=False,
           eval_batch_size=256,
           source="[NPB] code (pvh1602/NPB scripts/run.sh): full training set, SGD momentum 0.9 "
                  "(no Nesterov), batch 128, 160 epochs, lr 0.1 x0.1 at 60/120, wd 1e-4"),
)


def get_recipe(recipe="mica-resnet20", **overrides) -> Recipe:
    """The recipe named `recipe` (or a `Recipe` itself) with `overrides` replacing its fields.

    Parameters
    ----------
    recipe : str or Recipe
        A key of `RECIPES`.
    **overrides
        Field values, e.g. ``epochs=10, lr=0.05``; a None value keeps the recipe's.

    Returns
    -------
    Recipe

    Raises
    ------
    UnknownMethodError
        If `recipe` is not a known name; the message lists the names.
    TrainError
        If an override names no field, or a value is out of range (``epochs=0``).

    Examples
    --------
    >>> r = get_recipe("mica-resnet20", epochs=10)
    >>> r.epochs, r.lr, r.gamma, r.milestones, r.nesterov
    (10, 0.01, 0.2, (60, 120), True)
    """
    if not isinstance(recipe, Recipe):
        try:
            recipe = RECIPES[recipe]
        except (KeyError, TypeError):
            raise UnknownMethodError(f"unknown recipe {recipe!r}; known recipes: "
                                     f"{', '.join(sorted(RECIPES))}") from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TrainError(f"unknown recipe field(s) {unknown}; the fields are "
                         f"{', '.join(sorted(names - {'name', 'source'}))}")
    return dataclasses.replace(recipe, **overrides) if overrides else recipe
