"""Batches for the data-driven pruning methods (SNIP, GraSP) and demos."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError

__all__ = ["synthetic_batches"]


def synthetic_batches(input_shape, num_classes: int = 10, batch_size: int | None = None,
                      num_batches: int = 1, seed=0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random (inputs, labels) batches: standard-normal inputs and uniform labels.

    For demos and tests of SNIP/GraSP without a data set; real pruning uses real images (SPEC §8:
    10 x classes images). Drawn with numpy, so the same seed gives the same batches on every
    machine; the torch random state is not touched. A list, so it can be read more than once.

    Parameters
    ----------
    input_shape : tuple of int
        One input without the batch dimension, e.g. ``(3, 32, 32)``.
    num_classes : int
        Labels are drawn from ``0 .. num_classes - 1``.
    batch_size : int, optional
        Default ``10 * num_classes``.
    num_batches : int
    seed : int or numpy.random.Generator

    Returns
    -------
    list of (float32 tensor of shape (batch_size, *input_shape), int64 tensor of shape (batch_size,))

    Raises
    ------
    DataError
        If a size is not a positive whole number (an empty batch gives NaN losses).

    Examples
    --------
    >>> batches = synthetic_batches((3, 8, 8), num_classes=4, num_batches=2)
    >>> len(batches), tuple(batches[0][0].shape), int(batches[0][1].max()) < 4
    (2, (40, 3, 8, 8), True)
    """
    try:
        shape = tuple(int(s) for s in input_shape)
        sizes = (int(num_classes), 10 * int(num_classes) if batch_size is None else int(batch_size),
                 int(num_batches))
    except (TypeError, ValueError):
        shape, sizes = (), (0,)
    if not shape or min(shape) < 1 or min(sizes[:2]) < 1 or sizes[2] < 0:
        raise DataError(f"synthetic_batches needs positive sizes: input_shape={input_shape!r} "
                        f"(like (3, 32, 32)), num_classes={num_classes!r}, batch_size="
                        f"{batch_size!r}, num_batches={num_batches!r}")
    rng = np.random.default_rng(seed)
    num_classes, size, num_batches = sizes
    shape = (size, *shape)
    return [(torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)),
             torch.from_numpy(rng.integers(0, num_classes, size=size, dtype=np.int64)))
            for _ in range(num_batches)]
