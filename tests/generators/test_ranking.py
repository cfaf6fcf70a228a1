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


@given(st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=10),
                min_size=1, max_size=4), st.floats(1, 40))
def test_global_threshold_matches_sort_on_signed_scores(values, c):
    """GraSP scores are signed: the threshold must not assume a minimum of 0."""
    scores = {f"l{i}": np.array(v) for i, v in enumerate(values)}
    c = min(c, sum(len(v) for v in values))
    masks = global_threshold(scores, c)
    expected = naive(scores, c)
    assert all(np.array_equal(masks[k], expected[k]) for k in scores)


def test_scorers_and_ranking_glue_import_one_way():
    """generators/ranking.py -> torch/scores.py -> graphpai.threshold: the torch scorers never
    import the generators package back (issue 13 item 18), and the core threshold imports no torch."""
    import ast
    from pathlib import Path

    import graphpai

    root = Path(graphpai.__file__).parent

    def imported(path, package):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                    if node.level else []
                names.add(".".join(filter(None, [".".join(base), node.module or ""])))
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        return names

    scores = imported(root / "torch" / "scores.py", "graphpai.torch")
    assert not any(n.startswith("graphpai.generators") for n in scores), scores
    assert "graphpai.threshold" in scores
    threshold = imported(root / "threshold.py", "graphpai")
    assert not any(n.split(".")[0] == "torch" or n.startswith("graphpai.torch") for n in threshold)
    from graphpai.generators import global_threshold as exported
    from graphpai.threshold import global_threshold as core
    assert exported is core


@given(st.lists(st.lists(st.integers(-3, 40), min_size=1, max_size=60), min_size=1, max_size=4),
       st.floats(1, 80), st.integers(1, 6))
def test_threshold_is_exact_whatever_the_sample_brackets(values, c, sample):
    """A tiny sample makes the bracket miss often: the fallback must still give the sort's mask."""
    import graphpai.threshold as threshold

    scores = {f"l{i}": np.array(v, dtype=float) for i, v in enumerate(values)}
    c = min(c, sum(len(v) for v in values))
    old, threshold._SAMPLE = threshold._SAMPLE, sample
    try:
        masks = global_threshold(scores, c)
    finally:
        threshold._SAMPLE = old
    expected = naive(scores, c)
    assert all(np.array_equal(masks[k], expected[k]) for k in scores)


def test_threshold_on_vgg_sized_layers_matches_a_full_sort():
    """Big layers (the sampled path), with SynFlow-like zeros and ties at the threshold."""
    rng = np.random.default_rng(0)
    scores = {"a": rng.integers(0, 50, (300, 200)).astype(float),
              "b": np.where(rng.random((500, 100)) < 0.6, 0.0, rng.random((500, 100)))}
    for c in (1.5, 3, 10, 100, 1000):
        expected = naive(scores, c)
        masks = global_threshold(scores, c)
        assert all(np.array_equal(masks[k], expected[k]) for k in scores), c
