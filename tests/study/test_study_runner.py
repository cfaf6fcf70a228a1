"""The runner and what a point measures (graphpai/study/runner.py, measure.py).

Each row is compared with the public API called directly on the same mask (regenerated here with
graphpai.prune and the point's seed), and the network means of the spectral columns are recomputed
here from the per-layer report rows. Executors are compared with each other: a thread pool, the
default process pool and a Dask LocalCluster give the same table.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import graphpai
from graphpai.generators import GENERATORS
from graphpai.generators._registry import Generator
from graphpai.study import Point, Store, grid, read_table, study_definition
from graphpai.study.measure import measure
from graphpai.study.runner import run, sweep


def strip(table):
    """Rows without the wall-clock column (the only one allowed to differ between runs)."""
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in table]


def same(a, b):
    """Tables equal, nan == nan."""
    assert len(a) == len(b)
    for x, y in zip(strip(a), strip(b)):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) and math.isnan(x[k]):
                assert isinstance(y[k], float) and math.isnan(y[k]), k
            else:
                assert x[k] == y[k], (k, x[k], y[k], x.get("error"), y.get("error"))


def run_threads(points, directory, **kw):
    with Store(directory, study_definition(points)) as store, ThreadPoolExecutor(2) as pool:
        return run(points, kw.pop("measure", measure), store, executor=pool, progress=False, **kw)


SMALL = dict(model="mlp", methods="rpi,mica", budgets="erk,igq", compressions="1:3:1", seeds="0,1")


def test_row_matches_the_api_on_the_same_mask():
    point = Point("lenet5", "rpi", "erk", 10 ** 2.5, 3, measures=("spatial", "paths", "spectral"))
    row = measure(point)
    from graphpai.torch import models
    from graphpai.torch.extract import layer_weights

    model = models.build("lenet5", seed=3)
    graph = graphpai.to_graph(model)
    masks = graphpai.prune(graph, "rpi", budget="erk", compression=10 ** 2.5, seed=3)
    kept = sum(int(np.count_nonzero(m)) for m in masks.values())
    n = sum(m.size for m in masks.values())
    assert (row["N"], row["kept"]) == (n, kept)
    assert row["density"] == kept / n and row["direct_compression"] == n / kept
    for semantics in ("channel", "spatial"):
        a = graphpai.audit(graph, masks, semantics=semantics)
        assert row[f"{semantics}_functional"] == a.functional
        assert row[f"{semantics}_functional_ratio"] == a.functional / kept
        assert row[f"{semantics}_corrected_compression"] == (n / a.functional if a.functional
                                                              else math.inf)
        assert row[f"{semantics}_disconnected"] == (a.functional == 0)
    p = graphpai.paths(graph, masks)
    assert (row["log10_paths"], row["effective_nodes"]) == (p.log10_paths, p.effective_nodes)
    weights = layer_weights(model)
    for profile in ("iclr23", "neurips23"):
        report = graphpai.spectral(graph, masks, weights, profile=profile)
        gaps = [r.delta_r for r in report.layers if r.delta_r is not None]
        for name in ("delta_r_norm", "imdb", "narc", "coordinate_norm"):
            values = [getattr(r, name) for r in report.layers if getattr(r, name) is not None]
            want = float(np.mean(values)) if values else None
            assert row[f"{profile}_{name}"] == pytest.approx(want), (profile, name)
        assert row[f"{profile}_positive_gap_share"] == (
            pytest.approx(np.mean([g > 0 for g in gaps])) if gaps else None)
        assert row[f"{profile}_scored_fraction"] == len(gaps) / len(report.layers)


def test_mica_rows_are_fully_functional_and_rpi_loses_weights(tmp_path):
    # [MiCA]: MiCA masks are fully functional wherever no layer has a zero budget
    points = grid(model="mlp", methods="rpi,mica", budgets="erk", compressions="2:3:1", seeds="0")
    run_threads(points, tmp_path)
    rows = {(r["method"], r["log10_compression"]): r for r in read_table(tmp_path)}
    assert all(rows["mica", x]["channel_functional_ratio"] == 1.0 for x in (2.0, 3.0))
    assert rows["rpi", 3.0]["channel_functional_ratio"] < 1.0
    assert all(r["status"] == "ok" and r["error"] is None for r in rows.values())


def test_failing_points_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    def broken(graph, budget, *, seed=None):
        raise RuntimeError("this method always fails")

    monkeypatch.setitem(GENERATORS, "broken", Generator("broken", broken, "placement", "erk"))
    # mlp has 89,400 weights: 10^6 is an impossible compression for it
    points = (grid(model="mlp", methods="rpi,broken", budgets="erk", compressions="1e2,1e6")
              + grid(model="mlp", methods="mica", budgets="erk", compressions="1e3"))
    summary = run_threads(points, tmp_path)
    table = read_table(tmp_path)
    assert len(table) == 5 and summary.done == 5
    failed = {(r["method"], r["compression"]): r["error"] for r in table if r["status"] == "failed"}
    assert set(failed) == {("broken", 100.0), ("broken", 1e6), ("rpi", 1e6)}
    assert "this method always fails" in failed["broken", 100.0]
    assert "outside the allowed range [1, 89400]" in failed["rpi", 1e6]
    assert {label for label, _, _ in summary.failed} == {
        "broken-erk 10^2 seed 0", "broken-erk 10^6 seed 0", "rpi-erk 10^6 seed 0"}
    ok = [r for r in table if r["status"] == "ok"]
    assert len(ok) == 2 and all(r["kept"] > 0 for r in ok)
    failed_row = next(r for r in table if r["status"] == "failed")
    assert failed_row["kept"] is None and failed_row["model"] == "mlp"
    # a rerun retries the failed points only
    calls = []
    summary = run_threads(points, tmp_path, measure=lambda p: calls.append(p.key) or measure(p))
    assert summary.skipped == 2 and len(calls) == 3


class Stop(Exception):
    pass


def test_resume_after_a_stop_gives_each_point_once_and_the_same_table(tmp_path):
    points = grid(**SMALL)
    assert len(points) == 2 * 2 * 3 * 2
    run_threads(points, tmp_path / "full")
    calls = []

    def counted(point):
        calls.append(point.key)
        return measure(point)

    def stop_after(k):
        seen = []

        def hook(row):
            seen.append(row)
            if len(seen) == k:
                raise Stop
        return hook

    with Store(tmp_path / "part", study_definition(points)) as store:
        with ThreadPoolExecutor(1) as pool, pytest.raises(Stop):
            run(points, counted, store, executor=pool, progress=False, on_point=stop_after(5))
    assert len(read_table(tmp_path / "part")) == 5
    assert len(read_table(tmp_path / "part" / "results.csv")) == 5  # exported after each point
    stored = {r["key"] for r in read_table(tmp_path / "part")}
    calls.clear()
    summary = run_threads(points, tmp_path / "part", measure=counted)
    assert summary.skipped == 5 and summary.done == 19
    assert not stored & set(calls) and len(calls) == 19
    with sqlite3.connect(tmp_path / "part" / "results.sqlite") as db:
        keys = [k for (k,) in db.execute("SELECT key FROM points")]
    assert sorted(keys) == sorted(p.key for p in points)
    same(read_table(tmp_path / "part"), read_table(tmp_path / "full"))


def test_a_killed_sweep_resumes(tmp_path):
    """SIGKILL the whole sweep (parent and workers) mid-way, then rerun the same command."""
    out = tmp_path / "killed"
    args = ["sweep", "--model", "resnet20", "--methods", "mica", "--budgets", "erk",
            "--compressions", "1:3:0.5", "--seeds", "0,1,2", "--out", str(out), "--workers", "1",
            "--quiet", "--no-report"]
    proc = subprocess.Popen([sys.executable, "-m", "graphpai", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = out / "results.sqlite"
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if database.exists():
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                    (stored,) = db.execute("SELECT COUNT(*) FROM points").fetchone()
            except sqlite3.Error:
                stored = 0
            if stored >= 2:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_table(out)
    assert 2 <= len(partial) < 15, "the sweep was not stopped half-way"
    from graphpai.cli import main

    assert main(args) == 0
    table = read_table(out)
    assert len({r["key"] for r in table}) == len(table) == 15
    points = grid(model="resnet20", methods="mica", budgets="erk", compressions="1:3:0.5",
                  seeds="0,1,2")
    reference = tmp_path / "reference"
    run_threads(points, reference)
    same(table, read_table(reference))
    assert {r["key"]: r for r in partial}.items() <= {r["key"]: r for r in table}.items()


def test_default_process_pool_gives_the_thread_pool_rows(tmp_path):
    points = grid(**SMALL, measures=["spatial", "paths"])
    summary = sweep(points, tmp_path / "procs", workers=2, progress=False, report=False)
    assert summary.done == 24 and "2 processes" in summary.workers
    run_threads(points, tmp_path / "threads")
    same(read_table(tmp_path / "procs"), read_table(tmp_path / "threads"))


def test_dask_local_cluster_gives_the_same_rows(tmp_path):
    distributed = pytest.importorskip("distributed", reason="Dask is the optional extra "
                                      "graphpai[dask] (also in [dev])")
    points = grid(**SMALL, measures=["spectral"])
    run_threads(points, tmp_path / "local")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as cluster:
        summary = sweep(points, tmp_path / "dask", scheduler=cluster.scheduler_address,
                        progress=False, report=False)
    assert summary.done == 24 and summary.workers.startswith("Dask at tcp://")
    same(read_table(tmp_path / "dask"), read_table(tmp_path / "local"))


def test_nothing_to_do_starts_no_pool(tmp_path):
    points = grid(model="mlp", methods="rpi", compressions="1e2")
    run_threads(points, tmp_path)
    summary = sweep(points, tmp_path, workers=2, progress=False, report=False)
    assert (summary.done, summary.skipped, summary.workers) == (0, 1, "nothing to do")
