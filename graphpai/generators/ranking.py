"""Ranking methods ([SF] conventions): magnitude, SNIP, GraSP, SynFlow
(docs/definitions.md#ranking).

Each scores every prunable weight of a torch model (the scores live in
:mod:`graphpai.torch.scores`) and keeps the best globally with :func:`global_threshold`. The
functions here are the registry glue; torch is imported only when one of them runs. The
threshold itself is :func:`graphpai.threshold.global_threshold` (re-exported here), which the
torch scorers import directly, so the arrows run one way: generators -> torch.scores -> threshold.
"""

from __future__ import annotations

from ..masks import MaskSet
from ..threshold import global_threshold
from ._registry import register

__all__ = ["global_threshold", "magnitude", "snip", "grasp", "synflow"]


@register("magnitude", kind="ranking")
def magnitude(model, compression, *, seed=None, data=None, input_shape=None) -> MaskSet:
    """Keep the largest |w| globally (docs/definitions.md#ranking). `seed` and `data` are not
    used; `input_shape` traces a model that does not carry one, to find its layers."""
    from ..torch.scores import magnitude_scores

    return global_threshold(magnitude_scores(model, input_shape=input_shape), compression)


@register("snip", kind="ranking", needs_data=True)
def snip(model, compression, *, seed=None, data=None, input_shape=None,
         progress: bool = False) -> MaskSet:
    """SNIP: keep the largest |w * dL/dw| over the batches in `data`
    (docs/definitions.md#ranking).

    See :func:`graphpai.torch.scores.snip_scores`.
    """
    from ..torch.scores import snip_scores

    return global_threshold(snip_scores(model, data, seed=seed, progress=progress,
                                        input_shape=input_shape), compression)


@register("grasp", kind="ranking", needs_data=True)
def grasp(model, compression, *, seed=None, data=None, input_shape=None,
          temperature: float = 200.0, progress: bool = False) -> MaskSet:
    """GraSP: keep the largest w ⊙ Hg at temperature 200 (docs/definitions.md#ranking).

    See :func:`graphpai.torch.scores.grasp_scores` for the sign convention.
    """
    from ..torch.scores import grasp_scores

    return global_threshold(grasp_scores(model, data, temperature=temperature, seed=seed,
                                         progress=progress, input_shape=input_shape), compression)


@register("synflow", kind="ranking")
def synflow(model, compression, *, seed=None, data=None, input_shape=None,
            iterations: int = 100, progress: bool = False) -> MaskSet:
    """SynFlow: iterative, data-free synaptic-flow pruning (docs/definitions.md#synflow). `data`
    is not used.

    See :func:`graphpai.torch.scores.synflow_masks`.
    """
    from ..torch.scores import synflow_masks

    return synflow_masks(model, compression, iterations=iterations, input_shape=input_shape,
                         seed=seed, progress=progress)
