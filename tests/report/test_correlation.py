"""Correlations per compression against scipy.stats on the stored columns."""

import math

import numpy as np
import pytest
from scipy import stats

from graphpai.report.correlation import correlations


def table(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in (10.0, 100.0):
        for i in range(6):
            rows.append({"status": "ok", "compression": c, "best_test_acc": float(rng.random()),
                         "log10_paths": float(rng.normal()), "channel_functional_ratio":
                         float(rng.random()), "effective_nodes": None})
    rows[0]["log10_paths"] = "-inf"  # a disconnected point, as results.json stores it
    rows.append({"status": "failed", "compression": 10.0, "best_test_acc": 1.0,
                 "log10_paths": 9.0})
    return rows


def test_against_scipy_on_the_columns():
    rows = table()
    got = correlations(rows)
    assert {r["metric"] for r in got} == {"log10_paths", "channel_functional_ratio"}
    for r in got:
        group = [x for x in rows if x["status"] == "ok" and x["compression"] == r["compression"]]
        a = np.array([float(x[r["metric"]]) for x in group])
        a[np.isinf(a)] = a[np.isfinite(a)].min() - 1  # -inf ranks lowest
        b = np.array([x["best_test_acc"] for x in group])
        assert r["n"] == 6
        assert r["kendall_tau"] == pytest.approx(stats.kendalltau(a, b)[0])
        assert r["spearman_rho"] == pytest.approx(stats.spearmanr(a, b)[0])
        assert r["spearman_p"] == pytest.approx(stats.spearmanr(a, b)[1])


def test_too_few_or_constant_is_nan():
    rows = [{"compression": 10, "best_test_acc": a, "log10_paths": 1.0} for a in (0.1, 0.2, 0.3)]
    assert math.isnan(correlations(rows)[0]["kendall_tau"])
    assert math.isnan(correlations(rows[:2], metrics=["log10_paths"])[0]["spearman_rho"])
    perfect = [{"compression": 10, "best_test_acc": a, "m": a * 2} for a in (0.1, 0.2, 0.4, 0.3)]
    assert correlations(perfect, metrics=["m"])[0]["kendall_tau"] == pytest.approx(1.0)
