"""Wanda ([Wanda]): |w| times the input activation norm, compared within each output row.

The registry glue for :func:`graphpai.torch.wanda.wanda_masks` (scores and masks live there);
torch is imported only when the method runs. docs/llm.md.

References
----------
.. [Wanda] M. Sun, Z. Liu, A. Bair, J. Z. Kolter, "A Simple and Effective Pruning Approach for
   Large Language Models", ICLR 2024.
"""

from __future__ import annotations

from ..masks import MaskSet
from ._registry import register

__all__ = ["wanda"]


@register("wanda", kind="ranking", needs_data=True)
def wanda(model, compression, *, seed=None, data=None, input_shape=None, nm=None, layers=None,
          exclude=()) -> MaskSet:
    """Wanda masks from the calibration batches in `data` (tensors, (inputs, labels) pairs or
    dicts of keyword arguments): each output row keeps its largest ``|w| * ||x||``; with
    ``nm="2:4"`` each group of 4 input weights keeps its 2 best (compression must be 2).
    Scored: Conv1d/2d and Linear modules, Hugging Face ``Conv1D`` weights (transposed: the
    masks are in the layer's (out, in) order) and ``nn.MultiheadAttention``'s
    ``in_proj_weight`` and ``out_proj``. `seed` and `input_shape` are not used. See
    :func:`graphpai.torch.wanda.wanda_masks`.
    """
    from ..torch.wanda import wanda_masks

    if nm is not None:
        from .nm import pattern_for

        nm = pattern_for(compression, nm)
    return wanda_masks(model, compression, data, nm=nm, layers=layers, exclude=exclude)
