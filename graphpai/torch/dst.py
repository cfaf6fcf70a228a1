"""Dynamic sparse training: SET and RigL mask updates during ``graphpai.torch.train``
(docs/dst.md, docs/definitions.md#dst).

Every `update_every` optimizer steps, until `stop_fraction` of the run, each masked layer drops
``k = floor(f_t * kept)`` of its kept weights, those of smallest magnitude, and regrows ``k``
positions among the weights inactive after the drop: uniformly at random (SET, [SET]) or those of
largest dense-gradient magnitude at that step (RigL, [RigL]). The drop fraction decays as RigL's
cosine, ``f_t = f_0 / 2 * (1 + cos(pi t / T_end))`` with ``T_end = stop_fraction * total steps``.
The kept count of every layer is checked to be unchanged at every update. A position dropped and
regrown by the same update keeps its weight (the mask did not change there); a newly active
weight starts at exactly 0, and the optimizer state (momentum, Adam moments) of every weight
whose mask changed is reset to 0.

The dense gradient RigL scores with is the ``weight.grad`` of the update step, read before the
loop zeroes the gradients of pruned weights (``Callback.on_backward``); on other steps nothing is
copied. SET's draws come from a generator seeded by (seed, step), so a resumed run makes the same
updates as an uninterrupted one; the update history is in the training checkpoint
(``state_dict``).

References
----------
.. [SET] D. C. Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
   connectivity inspired by network science", Nature Communications 2018.
.. [RigL] U. Evci, T. Gale, J. Menick, P. S. Castro, E. Elsen, "Rigging the Lottery: Making All
   Tickets Winners", ICML 2020.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023 (studies the topology of DST masks).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import MaskError, TrainError
from .train import Callback, TrainInfo, TrainMasks

__all__ = ["DynamicSparsity", "DSTUpdate", "METHODS", "drop_fraction_at", "magnitude_drop",
           "random_regrow", "gradient_regrow", "initial_masks"]

METHODS = ("set", "rigl")


def drop_fraction_at(step: int, *, drop_fraction: float, end_step: float) -> float:
    """RigL's cosine-decayed drop fraction at `step`: ``f_0 / 2 * (1 + cos(pi step / T_end))``,
    0 from `end_step` on.

    >>> [drop_fraction_at(t, drop_fraction=0.3, end_step=100) for t in (0, 50, 100)]
    [0.3, 0.15, 0.0]
    """
    if end_step <= 0 or step >= end_step:
        return 0.0
    return round(drop_fraction / 2 * (1 + math.cos(math.pi * step / end_step)), 12)


def magnitude_drop(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """`mask` without its `k` kept weights of smallest ``|weight|`` (a new bool tensor)."""
    out = mask.clone(memory_format=torch.contiguous_format)
    if k <= 0:
        return out
    kept = mask.flatten().nonzero().squeeze(1)  # rank the kept weights only
    score = weight.detach().flatten()[kept].abs().float()
    out.view(-1)[kept[torch.topk(score, k, largest=False).indices]] = False
    return out


def _largest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` largest entries of the 1-D `score` (as ``torch.topk``, faster for
    k << n): a threshold read off an evenly strided sample keeps ~4k candidates and the top k are
    taken among them; when fewer than k candidates lie strictly above it, the plain top-k. Exact:
    with at least k entries above t, every one of the k largest is above t."""
    n = score.numel()
    if n < 65536 or 16 * k > n:
        return torch.topk(score, k).indices
    sample = score[:: max(1, n // 16384)].float()
    t = torch.quantile(sample, 1.0 - 4.0 * k / n)
    candidates = (score > t).nonzero().squeeze(1)
    if candidates.numel() < k:
        return torch.topk(score, k).indices
    return candidates[torch.topk(score[candidates], k).indices]


def random_regrow(mask: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`mask` plus `k` positions drawn uniformly without replacement from its inactive ones (SET).

    The draw is made on the CPU with `generator` (top-k of iid uniform scores), so it does not
    depend on the device.
    """
    out = mask.clone(memory_format=torch.contiguous_format)
    if k <= 0:
        return out
    score = torch.rand(mask.numel(), generator=generator).to(mask.device)
    score = score.masked_fill(mask.flatten(), -1.0)
    grow = _largest(score, k)
    out.view(-1)[grow] = True
    return out


def gradient_regrow(mask: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
    """`mask` plus its `k` inactive positions of largest ``|grad|`` (RigL)."""
    out = mask.clone(memory_format=torch.contiguous_format)
    if k <= 0:
        return out
    score = grad.detach().abs().float().flatten().masked_fill(mask.flatten(), -math.inf)
    grow = _largest(score, k)
    out.view(-1)[grow] = True
    return out


def initial_masks(model, compression, *, method: str = "rpi", budget="erk", seed=0, **options):
    """The masks a DST run starts from: any graphpai method and budget (random ERK by default).

    A thin call of :func:`graphpai.prune` (ranking methods take no budget)."""
    from ..generators import get_generator
    from ..prune import prune

    if get_generator(method).kind == "ranking":
        budget = None
    return prune(model, method, budget=budget, compression=compression, seed=seed, **options)


@dataclass(frozen=True)
class DSTUpdate:
    """One mask update: its step, drop fraction, and per layer the kept count and the weights that
    left (``dropped``) and joined (``regrown``) the mask (equal counts, net of positions dropped
    and regrown at once)."""

    step: int
    drop_fraction: float
    kept: dict
    dropped: dict
    regrown: dict

    @property
    def changed(self) -> int:
        return int(sum(self.dropped.values()))


class DynamicSparsity(Callback):
    """A training callback that updates the masks by SET or RigL (see the module docstring).

    Parameters
    ----------
    method : {"set", "rigl"}
    update_every : int
        Optimizer steps between updates (100 in [RigL]).
    drop_fraction : float
        Initial drop fraction f_0 in (0, 1) (0.3 in [RigL]).
    stop_fraction : float
        No updates from this fraction of the total steps on (0.75 in [RigL]).
    seed : int, optional
        Seeds SET's regrowth (with the step); None: the training run's seed.

    Attributes
    ----------
    history : list of DSTUpdate

    Examples
    --------
    >>> from graphpai.torch.data import synthetic_data
    >>> from graphpai.torch.train import train
    >>> data = synthetic_data(4, (3, 8, 8), train_size=64, test_size=0, val_fraction=0.0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 32),
    ...                             torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> masks = initial_masks(model, 5, input_shape=(3, 8, 8), seed=0)
    >>> dst = DynamicSparsity("set", update_every=2, drop_fraction=0.3)
    >>> _ = train(model, masks, data, epochs=2, batch_size=16, device="cpu", progress=False,
    ...           callbacks=[dst])
    >>> [u.step for u in dst.history], all(u.kept == dst.history[0].kept for u in dst.history)
    ([2, 4], True)
    """

    def __init__(self, method: str = "set", *, update_every: int = 100, drop_fraction: float = 0.3,
                 stop_fraction: float = 0.75, seed: int | None = None):
        method = str(method).lower()
        if method not in METHODS:
            raise TrainError(f"unknown dynamic sparse training method {method!r}; use one of "
                             f"{', '.join(METHODS)}")
        if isinstance(update_every, bool) or not isinstance(update_every, (int, np.integer)) \
                or update_every < 1:
            raise TrainError(f"update_every must be a whole number >= 1, got {update_every!r}")
        if not 0 < float(drop_fraction) < 1:
            raise TrainError(f"drop_fraction must be in (0, 1), got {drop_fraction!r}")
        if not 0 < float(stop_fraction) <= 1:
            raise TrainError(f"stop_fraction must be in (0, 1], got {stop_fraction!r}")
        self.method = method
        self.update_every = int(update_every)
        self.drop_fraction = float(drop_fraction)
        self.stop_fraction = float(stop_fraction)
        self.seed = None if seed is None else int(seed)
        self.history: list[DSTUpdate] = []
        self.end_step = None
        self._grads = None
        self._loaded = False

    def config(self) -> dict:
        return {"method": self.method, "update_every": self.update_every,
                "drop_fraction": self.drop_fraction, "stop_fraction": self.stop_fraction,
                "seed": self.seed}

    # ------------------------------------------------------------------ schedule
    def is_update_step(self, step: int) -> bool:
        """Whether the masks change after optimizer step `step` (1-based)."""
        return (self.end_step is not None and step > 0 and step % self.update_every == 0
                and step < self.end_step)

    def fraction(self, step: int) -> float:
        return drop_fraction_at(step, drop_fraction=self.drop_fraction, end_step=self.end_step)

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, info: TrainInfo) -> None:
        if info.start_step > 0 and not self._loaded:
            raise TrainError("this run's checkpoint was made without dynamic sparse training (or "
                             "with other callbacks); use another output directory")
        self.end_step = self.stop_fraction * info.total_steps
        if self.seed is None:
            self.seed = int(info.seed)

    def on_backward(self, step, model, masks: TrainMasks, optimizer) -> None:
        if self.method == "rigl" and self.is_update_step(step + 1):
            self._grads = {}
            for name in masks:
                grad = masks.weight(name).grad
                self._grads[name] = None if grad is None else grad.detach().abs().clone()

    @torch.no_grad()
    def on_step(self, step, model, masks: TrainMasks, optimizer) -> None:
        if not self.is_update_step(step):
            return
        self.history.append(self.update(masks, step, grads=self._grads))
        self._grads = None

    @torch.no_grad()
    def update(self, masks: TrainMasks, step: int, grads=None) -> DSTUpdate:
        """Drop and regrow every layer of `masks` once (the update after step `step`).

        Raises
        ------
        MaskError
            If a layer's kept count changed (never expected; the check of every update).
        """
        fraction = self.fraction(step)
        seed = 0 if self.seed is None else self.seed
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, int(step)]).generate_state(1, np.uint64)[0]
                % (2 ** 63)))
        new, kept, dropped, regrown = {}, {}, {}, {}
        for name in masks:
            old = masks[name]
            weight = masks.weight(name)
            count = int(torch.count_nonzero(old))
            k = int(math.floor(fraction * count))
            after_drop = magnitude_drop(weight, old, k)
            if self.method == "set":
                mask = random_regrow(after_drop, k, generator)
            else:
                grad = (grads or {}).get(name)
                if grad is None:
                    grad = torch.zeros_like(weight)
                mask = gradient_regrow(after_drop, grad, k)
            now = int(torch.count_nonzero(mask))
            if now != count:
                raise MaskError(f"DST update at step {step} changed the kept count of {name!r} "
                                f"from {count} to {now}")
            new[name], kept[name] = mask, count
            dropped[name] = int(torch.count_nonzero(old & ~mask))
            regrown[name] = int(torch.count_nonzero(mask & ~old))
        olds = {name: masks[name] for name in new}
        masks.update(new)
        optimizer = getattr(masks, "optimizer", None)
        for name, mask in new.items():
            weight = masks.weight(name)
            changed = olds[name] ^ mask
            weight[mask & ~olds[name]] = 0  # regrown weights join at 0
            state = optimizer.state.get(weight, {}) if optimizer is not None else {}
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    value[changed] = 0
        return DSTUpdate(int(step), fraction, kept, dropped, regrown)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"kind": "graphpai-dst-1", "config": self.config(),
                "history": [asdict(u) for u in self.history]}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("kind") != "graphpai-dst-1":
            raise TrainError("this run's checkpoint holds no dynamic sparse training state at "
                             "this callback's place; use another output directory")
        old, new = dict(state["config"]), self.config()
        if new["seed"] is None:  # the run's seed, which the checkpoint has checked
            new["seed"] = old.get("seed")
        if old != new:
            what = ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new
                             if old.get(k) != new[k])
            raise TrainError(f"this run's checkpoint was made with other DST settings ({what}); "
                             "use another output directory")
        self.seed = new["seed"]
        self.history = [DSTUpdate(**u) for u in state["history"]]
        self._loaded = True
