"""``graphpai sweep``: the success path and bad inputs (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os

import pytest

from graphpai.cli import main
from graphpai.study import read_table

GRID = ["--model", "mlp", "--methods", "rpi,mica", "--budgets", "erk", "--compressions",
        "1:3:1", "--seeds", "0", "--workers", "1", "--quiet"]


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))
            if (directory / name).is_file()}


def test_sweep_writes_the_table_and_the_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["sweep", *GRID, "--out", str(out), "--json", "--paths"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["points"], summary["done"], summary["skipped"], summary["failed"]) == (
        6, 6, 0, [])
    table = read_table(out)
    assert [(r["method"], r["compression"]) for r in table] == [
        (m, c) for m in ("mica", "rpi") for c in (10.0, 100.0, 1000.0)]
    assert all(r["status"] == "ok" and r["nodes"] is not None for r in table)
    for name in ("results.sqlite", "results.csv", "results.json", "report.html"):
        assert (out / name).stat().st_size > 0
    assert main(["sweep", *GRID, "--out", str(out), "--paths"]) == 0
    text = capsys.readouterr().out
    assert "6 points: 0 computed, 6 already stored, 0 failed" in text


def test_failed_points_exit_1_and_are_listed(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["sweep", "--model", "mlp", "--methods", "rpi", "--compressions", "1e2,1e6",
            "--out", str(out), "--workers", "1", "--quiet", "--no-report"]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "1 failed" in text and "failed: rpi-erk 10^6 seed 0" in text
    assert "outside the allowed range" in text
    assert not (out / "report.html").exists()


@pytest.mark.parametrize("change, message", [
    ({"--model": "nope"}, "unknown model 'nope'"),
    ({"--methods": "rpi,nope"}, "unknown pruning method 'nope'"),
    ({"--budgets": "nope"}, "unknown budget 'nope'"),
    ({"--compressions": "6:0.5:1"}, "cannot read compression range '6:0.5:1'"),
    ({"--compressions": "1e2,x"}, "cannot read compression 'x'"),
    ({"--seeds": "a"}, "cannot read seeds 'a'"),
    ({"--workers": "0"}, "--workers 0 must be at least 1"),
])
def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys, change, message):
    args = dict(zip(GRID[::2], GRID[1::2]))
    args.update(change)
    out = tmp_path / "study"
    flat = [x for kv in args.items() for x in kv if x != "--quiet"]
    assert main(["sweep", *flat, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("graphpai: error:")
    assert not out.exists()


def test_unwritable_out_and_another_study_are_refused(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["sweep", *GRID, "--out", str(afile / "study")]) == 2
    assert "cannot create the study directory" in capsys.readouterr().err
    out = tmp_path / "study"
    assert main(["sweep", *GRID, "--out", str(out), "--no-report"]) == 0
    capsys.readouterr()
    before = snapshot(out)
    for other in (["--model", "lenet5"], ["--spectral"], ["--option", "node_selection=min", "--methods",
                                                            "mica"]):
        args = dict(zip(GRID[::2], GRID[1::2]))
        flat = [x for kv in args.items() for x in kv if x != "--quiet"]
        assert main(["sweep", *flat, *other, "--quiet", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "holds a different study" in err and err.count("\n") == 1
        assert snapshot(out) == before


def test_missing_dask_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.split(".")[0] in ("distributed", "dask"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    out = tmp_path / "study"
    assert main(["sweep", *GRID, "--out", str(out), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert 'pip install "graphpai[dask]"' in capsys.readouterr().err
    assert not out.exists()
