"""``graphpai sweep --train`` on synthetic data: accuracies stored, the accuracy and correlation
figures drawn, and the correlations equal scipy.stats on the stored columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("torch")

from graphpai.cli import main  # noqa: E402
from graphpai.report.accuracy import METRIC_LABELS, accuracy_figures  # noqa: E402
from graphpai.report.correlation import correlations  # noqa: E402
from graphpai.study import read_table  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "study"
    # 2 compressions x 2 methods x 1 seed, and two budgets so that a compression has 4 points
    assert main(["sweep", "--model", "mlp", "--methods", "rpi,mica", "--budgets", "erk,igq",
                 "--compressions", "1e1,1e2", "--seeds", "0", "--out", str(out), "--train",
                 "mica-resnet20", "--data", "synthetic", "--epochs", "1", "--device", "cpu",
                 "--workers", "1", "--paths", "--spectral", "--quiet"]) == 0
    return out


def test_accuracies_are_stored(study):
    rows = read_table(study)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["recipe"] == "mica-resnet20" and r["epochs"] == 1
        assert 0.0 <= r["final_test_acc"] <= r["best_test_acc"] <= 1.0


def test_the_report_draws_accuracy_and_correlation_figures(study):
    rows = read_table(study)
    figures = accuracy_figures(rows)
    metrics = [m for m in METRIC_LABELS if any(r.get(m) is not None for r in rows)]
    assert {"channel_functional_ratio", "log10_paths", "effective_nodes", "iclr23_imdb",
            "iclr23_narc", "iclr23_delta_r_norm", "neurips23_coordinate_norm"} <= set(metrics)
    assert set(figures) == {"accuracy_vs_compression"} | {f"metric_accuracy_{m}"
                                                          for m in metrics}
    (ax,) = figures["accuracy_vs_compression"].axes
    assert len([line for line in ax.get_lines() if line.get_gid().startswith("series:")]) == 4
    assert ax.get_xscale() == "log"
    for name in figures:
        png = study / "figures" / f"{name}.png"
        assert png.stat().st_size > 0 and (study / "figures" / f"{name}.svg").stat().st_size > 0
        panels = [a for a in figures[name].axes if a.get_visible()]
        assert len(panels) == (1 if name == "accuracy_vs_compression" else 2)
    page = (study / "report.html").read_text()
    assert "Accuracy and graph metrics" in page and "metric_accuracy_log10_paths" in page


def test_correlations_equal_scipy_on_the_stored_columns(study):
    rows = read_table(study)
    got = {(g["compression"], g["metric"]): g for g in correlations(rows)}
    checked = 0
    for c in (10.0, 100.0):
        group = [r for r in rows if r["compression"] == c]
        for metric in METRIC_LABELS:
            pairs = [(float(r[metric]), r["best_test_acc"]) for r in group
                     if r.get(metric) is not None and not math.isnan(float(r[metric]))]
            entry = got[(c, metric)]
            assert entry["n"] == len(pairs)
            xs, ys = np.array(pairs).T if pairs else ([], [])
            if len(pairs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
                assert math.isnan(entry["kendall_tau"])
                continue
            assert entry["kendall_tau"] == pytest.approx(stats.kendalltau(xs, ys)[0])
            assert entry["spearman_rho"] == pytest.approx(stats.spearmanr(xs, ys)[0])
            checked += 1
    assert checked >= 4  # the metrics vary between methods and budgets at one compression
