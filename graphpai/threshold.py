"""The global threshold of the ranking methods ([SF] ``_global_mask``; docs/definitions.md#ranking).

Scores of every prunable weight -> one MaskSet that keeps the best weights over all layers. It
lives in the core (numpy only) so that the torch scorers (:mod:`graphpai.torch.scores`) and the
registry glue (:mod:`graphpai.generators.ranking`) both import it and neither imports the other.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .budgets import check_compression, kept_count
from .errors import ModelError
from .masks import MaskSet

__all__ = ["global_threshold"]


def global_threshold(scores: Mapping[str, np.ndarray], compression) -> MaskSet:
    """Global magnitude-style pruning of `scores` at `compression` ([SF] ``_global_mask``).

    With all scores taken together (N of them) and k = int((1 - d) N): if k >= 1, the k-th
    smallest score is the threshold and every weight with score <= threshold is pruned (ties are
    pruned, so at most N - k weights are kept); if k < 1 nothing is pruned.

    The scores are never concatenated or partitioned whole: one pass per layer finds its minimum
    (NaN shows there too), a strided sample of about 65,000 scores brackets the threshold, and
    only the scores inside the bracket are partitioned (a bracket that misses falls back to the
    full selection, so the answer is exact). Ties of the bracket's lower end (SynFlow's pruned
    weights all score 0) are counted, never partitioned.

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
    sizes = [a.size for a in arrays.values()]
    n = int(sum(sizes))
    c = check_compression(compression, n)
    lows = {name: (a.min() if a.size else np.inf) for name, a in arrays.items()}
    bad = [name for name, low in lows.items() if np.isnan(low)]
    if bad:
        raise ModelError(f"scores of layer(s) {bad} are NaN; check the model's weights and the "
                         "data for NaN or inf")
    k = n - kept_count(n, c)
    if k < 1:
        return MaskSet({name: np.ones(a.shape, dtype=bool) for name, a in arrays.items()})
    low = min(lows.values())
    threshold = _kth_smallest(list(arrays.values()), k, n, low)
    return MaskSet({name: a > threshold for name, a in arrays.items()})


def _kth_smallest(arrays, k: int, n: int, low):
    """The k-th smallest value (1-based) over all `arrays` (no NaN; `low` is their minimum).

    A strided sample brackets the k-th value in [lo, hi]; one pass per layer counts the values
    <= lo and gathers the few in (lo, hi], and only those are partitioned. The sample only
    chooses the bracket: a miss (the k-th value outside it) falls back to the full selection, so
    the result is exact for every input.
    """
    step = max(1, n // _SAMPLE)
    sample = np.sort(np.concatenate([a.ravel()[::step] for a in arrays]))
    m = sample.size
    pos = k / n * m
    width = 4.0 * np.sqrt(m) + 8
    i_lo, i_hi = int(pos - width), int(np.ceil(pos + width))
    lo = low if i_lo <= 0 else sample[i_lo]
    hi = None if i_hi >= m - 1 else sample[i_hi]
    above = [a > lo for a in arrays]
    at_most_lo = n - sum(int(np.count_nonzero(m)) for m in above)
    if k <= at_most_lo:
        below = 0 if lo == low else sum(int(np.count_nonzero(a < lo)) for a in arrays)
        if below < k:
            return lo
        return _full_selection(arrays, k, low)
    if hi is not None:
        for a, m in zip(arrays, above):
            np.logical_and(m, a <= hi, out=m)
    cand = np.concatenate([a[m] for a, m in zip(arrays, above)])
    j = k - at_most_lo
    if j > cand.size:
        return _full_selection(arrays, k, low)
    return np.partition(cand, j - 1)[j - 1]


def _full_selection(arrays, k: int, low):
    """The k-th smallest by counting the minimum's ties and partitioning the rest."""
    above = [a[a > low] for a in arrays]
    ties = sum(a.size for a in arrays) - sum(r.size for r in above)
    if ties >= k:
        return low
    rest = np.concatenate(above)
    return np.partition(rest, k - ties - 1)[k - ties - 1]


_SAMPLE = 1 << 16  # sample size that brackets the k-th value; any size gives the exact answer
