"""graphpai sweep --train: accuracies stored per point; correlations from the stored columns."""

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("torch")
from graphpai.cli import main  # noqa: E402
from graphpai.report.correlation import correlations  # noqa: E402


def test_sweep_with_train_stores_accuracies(tmp_path):
    out = str(tmp_path / "study")
    assert main(["sweep", "--model", "mlp", "--methods", "rpi,mica", "--compressions", "1e1,1e2",
                 "--out", out, "--train", "mica-resnet20", "--epochs", "1", "--device", "cpu",
                 "--workers", "1", "--paths", "--quiet", "--no-report"]) == 0
    from graphpai.study.store import read_table

    rows = read_table(out)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["recipe"] == "mica-resnet20" and r["epochs"] == 1
        assert 0 <= r["best_test_acc"] <= 1 and r["final_test_acc"] <= r["best_test_acc"]
        assert r["train_wall_s"] > 0
    got = correlations(rows, metrics=["log10_paths"], accuracy="final_test_acc")
    assert [g["compression"] for g in got] == [10.0, 100.0] and all(g["n"] == 2 for g in got)
    # two points per compression: too few for a rank correlation
    assert all(np.isnan(g["kendall_tau"]) for g in got)
    pooled = correlations([{**r, "compression": 0} for r in rows], metrics=["log10_paths"],
                          accuracy="final_test_acc")[0]
    x = [float(r["log10_paths"]) for r in rows]
    y = [r["final_test_acc"] for r in rows]
    if len(set(x)) > 1 and len(set(y)) > 1:
        assert pooled["kendall_tau"] == pytest.approx(stats.kendalltau(x, y)[0])
        assert pooled["spearman_rho"] == pytest.approx(stats.spearmanr(x, y)[0])
