"""Ranking methods ([SF] conventions): magnitude, SNIP, GraSP, SynFlow
(docs/definitions.md#ranking).

Each scores every prunable weight of a torch model (the scores live in
:mod:`graphpai.torch.scores`) and keeps the best globally with :func:`global_threshold`. The
functions here are the registry glue; torch is imported only when one of them runs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..budgets import check_compression, kept_count
from ..errors import ModelError
from ..masks import MaskSet
from ._registry import register

__all__ = ["global_threshold", "magnitude", "snip", "grasp", "synflow"]


def global_threshold(scores: Mapping[str, np.ndarray], compression) -> MaskSet:
    """Global magnitude-style pruning of `scores` at `compression` ([SF] ``_global_mask``).

    With all scores concatenated (N of them) and k = int((1 - d) N): if k >= 1, the k-th smallest
    score is the threshold and every weight with score <= threshold is pruned (ties are pruned,
    so at most N - k weights are kept); if k < 1 nothing is pruned.

    Parameters
    ----------
    scores : mapping of str to array-like
        Layer name -> scores of the weight's shape; larger is kept.
    compression : float or str
        Target compression in [1, N].

    Returns
    -------
    MaskSet

    Raises
    ------
    BudgetError
        If the compression is outside [1, N].
    ModelError
        If a score is NaN (the model or the data hold NaN/inf).

    Examples
    --------
    >>> global_threshold({"a": [3.0, 1.0, 2.0], "b": [2.0]}, 2).counts()  # k = 2: threshold 2
    {'a': 1, 'b': 0}
    """
    arrays = {name: np.asarray(value) for name, value in scores.items()}
    flat = np.concatenate([a.ravel() for a in arrays.values()])
    c = check_compression(compression, flat.size)
    bad = [name for name, a in arrays.items() if np.isnan(a).any()]
    if bad:
        raise ModelError(f"scores of layer(s) {bad} are NaN; check the model's weights and the "
                         "data for NaN or inf")
    k = flat.size - kept_count(flat.size, c)
    if k < 1:
        return MaskSet({name: np.ones(a.shape, dtype=bool) for name, a in arrays.items()})
    # the k-th smallest; the minimum's ties (pruned weights score 0) are counted, not partitioned,
    # since introselect slows down ~15x on arrays that are mostly one value
    low = flat.min()
    ties = int(np.count_nonzero(flat == low))
    if ties >= k:
        threshold = low
    else:
        rest = flat[flat > low]
        threshold = np.partition(rest, k - ties - 1)[k - ties - 1]
    return MaskSet({name: a > threshold for name, a in arrays.items()})


@register("magnitude", kind="ranking")
def magnitude(model, compression, *, seed=None, data=None, input_shape=None) -> MaskSet:
    """Keep the largest |w| globally (docs/definitions.md#ranking). `seed`, `data`,
    `input_shape` are not used."""
    from ..torch.scores import magnitude_scores

    return global_threshold(magnitude_scores(model), compression)


@register("snip", kind="ranking", needs_data=True)
def snip(model, compression, *, seed=None, data=None, input_shape=None) -> MaskSet:
    """SNIP: keep the largest |w * dL/dw| over the batches in `data`
    (docs/definitions.md#ranking).

    See :func:`graphpai.torch.scores.snip_scores`.
    """
    from ..torch.scores import snip_scores

    return global_threshold(snip_scores(model, data, seed=seed), compression)


@register("grasp", kind="ranking", needs_data=True)
def grasp(model, compression, *, seed=None, data=None, input_shape=None,
          temperature: float = 200.0) -> MaskSet:
    """GraSP: keep the largest w ⊙ Hg at temperature 200 (docs/definitions.md#ranking).

    See :func:`graphpai.torch.scores.grasp_scores` for the sign convention.
    """
    from ..torch.scores import grasp_scores

    return global_threshold(grasp_scores(model, data, temperature=temperature, seed=seed),
                            compression)


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
