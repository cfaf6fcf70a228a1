"""The [SF] global threshold (docs/definitions.md#ranking) against a naive sort."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphpai.errors import BudgetError, ModelError
from graphpai.generators import global_threshold


def naive(scores, c):
    flat = sorted(x for v in scores.values() for x in np.ravel(v))
    k = int((1 - 1 / c) * len(flat) + 1e-9)
    if k < 1:
        return {name: np.ones(np.shape(v), dtype=bool) for name, v in scores.items()}
    return {name: np.asarray(v) > flat[k - 1] for name, v in scores.items()}


@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=12), min_size=1, max_size=4),
       st.floats(1, 60))
def test_global_threshold_matches_sort_ties_pruned(values, c):
    scores = {f"l{i}": np.array(v, dtype=float) for i, v in enumerate(values)}
    n = sum(len(v) for v in values)
    c = min(c, n)
    masks = global_threshold(scores, c)
    expected = naive(scores, c)
    assert all(np.array_equal(masks[k], expected[k]) for k in scores)
    assert masks.kept() <= n - int((1 - 1 / c) * n + 1e-9)  # ties only prune more


def test_ties_at_the_threshold_are_pruned():
    scores = {"a": np.array([1.0, 2.0, 2.0, 2.0]), "b": np.array([[3.0, 0.5]])}
    # N = 6, c = 2: k = 3, the 3rd smallest is 2.0, so all three 2.0 go: only 3.0 stays
    masks = global_threshold(scores, 2)
    assert masks["a"].tolist() == [False] * 4 and masks["b"].tolist() == [[True, False]]


def test_compression_one_keeps_everything_and_n_keeps_the_best():
    scores = {"a": np.array([0.0, 0.0, 1.0]), "b": np.array([5.0])}
    assert global_threshold(scores, 1).kept() == 4
    assert global_threshold(scores, 4).counts() == {"a": 0, "b": 1}
    with pytest.raises(BudgetError, match=r"\[1, 4\]"):
        global_threshold(scores, 5)


def test_nan_scores_are_an_error():
    with pytest.raises(ModelError, match="NaN"):
        global_threshold({"a": np.array([1.0, np.nan])}, 2)
