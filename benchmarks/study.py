"""Benchmark issue 9: the time of the README study and of a 100-point ResNet-20 channel-audit
sweep with 1 and 2 workers, and the runner's per-point overhead next to the work of a point.

- ``readme``: the README's main job (RPI and MiCA, ERK and IGQ, ResNet-20, 10^1..10^4 in steps
  of 10^0.5, spatial audit and paths: 28 points) through :func:`graphpai.study.runner.sweep`
  into a fresh directory; the sweep and the report (figures and page) are timed apart.
- ``audit100``: RPI and MiCA, ERK and IGQ, ResNet-20, 10^1..10^4 in steps of 10^0.125 (25
  compressions: 100 points), channel audit only, no report.
- ``serial``: the same 100 points measured in this process, one after another, with no runner,
  no pool and no store: the work itself. Each point's ``elapsed_s`` (mask generation and
  audit, measured inside the worker) is summed too.
- ``store``: 100 rows put into a fresh store (one transaction each), then the CSV/JSON export
  of those 100 rows: the part of the runner's overhead that is the parent's.

The runner's overhead per point is ``(wall x workers - sum of the points' elapsed_s) / points``:
what the pool start, the forkserver, pickling, the store and the exports add to the work.
Runs alternate between 1 and 2 workers (``--repeat`` rounds) so a load spike hits both alike.

Usage::

    python benchmarks/study.py [--repeat 2] [--json out.json]

Record results in benchmarks/README.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

README = dict(model="resnet20", methods="rpi,mica", budgets="erk,igq", compressions="1:4:0.5",
              seeds="0", measures=("spatial", "paths"))
AUDIT100 = dict(model="resnet20", methods="rpi,mica", budgets="erk,igq",
                compressions="1:4:0.125", seeds="0", measures=())


def points_of(spec):
    from graphpai.study import grid

    return grid(**spec)


def timed_sweep(spec, workers, *, report):
    from graphpai.report.html import write_study_report
    from graphpai.study import read_table
    from graphpai.study.runner import sweep

    points = points_of(spec)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = sweep(points, out, workers=workers, progress=False, report=False)
        wall = time.perf_counter() - start
        table = read_table(out)
        report_s = None
        if report:
            start = time.perf_counter()
            write_study_report(table, out)
            report_s = time.perf_counter() - start
    assert not summary.failed, summary.text()
    work = sum(r["elapsed_s"] for r in table)
    return {"points": len(points), "workers": workers, "wall_s": wall, "report_s": report_s,
            "work_s": work,
            "overhead_per_point_ms": 1e3 * (wall * workers - work) / len(points)}


def serial(spec):
    from graphpai.study.measure import measure

    points = points_of(spec)
    measure(points[0])  # the graph and the model are cached per process, as in a worker
    times = []
    for p in points:
        start = time.perf_counter()
        measure(p)
        times.append(time.perf_counter() - start)
    return {"points": len(points), "wall_s": sum(times),
            "median_point_ms": 1e3 * statistics.median(times)}


def audit_only(spec):
    """The channel audit alone (mask generation excluded), median over the 100 points' masks."""
    from graphpai.functional import audit
    from graphpai.study.measure import Context

    times = []
    for p in points_of(spec):
        ctx = Context(p)
        start = time.perf_counter()
        audit(ctx.graph, ctx.masks, semantics="channel")
        times.append(time.perf_counter() - start)
    return {"median_audit_ms": 1e3 * statistics.median(times)}


def store_puts(spec):
    from graphpai.study import Store, study_definition
    from graphpai.study.runner import evaluate

    points = points_of(spec)
    rows = [evaluate(lambda p: {"model": p.model, "method": p.method, "budget": p.budget,
                                "compression": p.compression, "seed": p.seed, "N": 1,
                                "kept": 1}, p) for p in points]
    with tempfile.TemporaryDirectory() as out:
        with Store(out, study_definition(points), export=False) as store:
            start = time.perf_counter()
            for row in rows:
                store.put(row)  # the transaction alone
            commit = (time.perf_counter() - start) / len(rows)
            exports = []
            for _ in range(5):  # rewriting results.csv and results.json of 100 rows
                start = time.perf_counter()
                store.export()
                exports.append(time.perf_counter() - start)
    return {"rows": len(rows), "commit_ms": 1e3 * commit,
            "export_ms_100_rows": 1e3 * statistics.median(exports)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from graphpai import __version__

    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                          f"{platform.python_version()}, torch {torch.__version__}",
               "graphpai": __version__, "load": os.getloadavg(), "readme": [], "audit100": []}
    for _ in range(args.repeat):
        for workers in (1, 2):
            results["readme"].append(timed_sweep(README, workers, report=True))
            results["audit100"].append(timed_sweep(AUDIT100, workers, report=False))
            print(json.dumps(results["readme"][-1]), json.dumps(results["audit100"][-1]),
                  flush=True)
    results["serial"] = serial(AUDIT100)
    results["audit_only"] = audit_only(AUDIT100)
    results["store"] = store_puts(AUDIT100)
    results["load_after"] = os.getloadavg()

    def best(name, workers, key="wall_s"):
        return min(r[key] for r in results[name] if r["workers"] == workers)

    lines = [f"machine: {results['machine']}; load average {results['load'][0]:.1f} before, "
             f"{results['load_after'][0]:.1f} after",
             "| sweep | points | 1 worker (s) | 2 workers (s) | 1 -> 2 speed-up | report (s) | "
             "runner overhead per point, 1 / 2 workers (ms) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label in (("readme", "README study"), ("audit100", "ResNet-20 channel audit")):
        one, two = best(name, 1), best(name, 2)
        report = (f"{min(r['report_s'] for r in results[name]):.1f}"
                  if results[name][0]["report_s"] is not None else "-")
        over1 = min(r["overhead_per_point_ms"] for r in results[name] if r["workers"] == 1)
        over2 = min(r["overhead_per_point_ms"] for r in results[name] if r["workers"] == 2)
        lines.append(f"| {label} | {results[name][0]['points']} | {one:.1f} | {two:.1f} | "
                     f"{one / two:.2f} | {report} | {over1:.0f} / {over2:.0f} |")
    s = results["serial"]
    lines.append(f"serial, in process, no runner: {s['wall_s']:.1f} s for {s['points']} points "
                 f"(median {s['median_point_ms']:.0f} ms a point, of which the channel audit "
                 f"{results['audit_only']['median_audit_ms']:.0f} ms); store: "
                 f"{results['store']['commit_ms']:.1f} ms a commit, "
                 f"{results['store']['export_ms_100_rows']:.1f} ms to export 100 rows")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
