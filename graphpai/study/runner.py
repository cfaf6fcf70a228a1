"""Run a study's points on any `concurrent.futures.Executor` (docs/study.md).

One code path serves one machine and a cluster: :func:`run` submits every point the store does
not have yet to the executor (a process pool here, ``distributed.Client(addr).get_executor()``
on a Dask cluster), and the parent process alone writes each result to the store as it arrives.
Resuming is "skip what the store has". A point whose measure raises is recorded with status
``failed`` and its error, and the sweep goes on.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from ..errors import StudyError
from .grid import Point

__all__ = ["run", "sweep", "Summary", "evaluate", "process_pool", "dask_executor", "worker_index",
           "worker_device"]


@dataclass(frozen=True)
class Summary:
    """What :func:`run` did: points asked for, already stored (skipped), computed now, and the
    failures as ``(label, key, error)``."""

    points: int
    skipped: int
    done: int
    failed: tuple = ()
    elapsed_s: float = 0.0
    workers: str = ""

    def to_dict(self) -> dict:
        return {"points": self.points, "skipped": self.skipped, "done": self.done,
                "failed": [{"point": label, "key": key, "error": error}
                           for label, key, error in self.failed],
                "elapsed_s": self.elapsed_s, "workers": self.workers}

    def text(self) -> str:
        lines = [f"{self.points} points: {self.done} computed, {self.skipped} already stored, "
                 f"{len(self.failed)} failed, in {self.elapsed_s:.1f} s ({self.workers})"]
        lines += [f"  failed: {label} [{key}]: {error}" for label, key, error in self.failed]
        return "\n".join(lines)


def evaluate(measure: Callable[[Point], dict], point: Point) -> dict:
    """``measure(point)`` as a complete row with ``key``, ``status``, ``error`` and
    ``elapsed_s``; an exception becomes a ``failed`` row with its message (no traceback
    object crosses the process boundary)."""
    start = time.perf_counter()
    try:
        row = dict(measure(point))
        row.update(status="ok", error=None)
    except Exception as exc:  # recorded, never raised: one bad point does not stop a sweep
        row = _failed(point, f"{type(exc).__name__}: {exc}")
    row["key"] = point.key
    row["elapsed_s"] = time.perf_counter() - start
    return row


def _failed(point: Point, error: str) -> dict:
    from .. import __version__
    from .grid import DEFINITIONS_VERSION

    return {"key": point.key, "status": "failed", "error": error, "model": point.model,
            "method": point.method, "budget": point.budget, "compression": point.compression,
            "log10_compression": point.log10_compression, "seed": point.seed,
            "options": _options_text(point), **({"dst": point.dst} if point.dst else {}),
            "graphpai_version": __version__,
            "definitions_version": DEFINITIONS_VERSION}


def _options_text(point: Point) -> str:
    import json

    return json.dumps(point.option_dict, sort_keys=True)


_WORKER = {"index": 0}


def worker_index() -> int:
    """This worker process's index in its pool, 0 .. workers-1 (0 outside a pool)."""
    return _WORKER["index"]


def worker_device(device: str = "auto") -> str:
    """The training device of this worker: with ``"auto"`` and several CUDA GPUs, one GPU per
    worker (``cuda:{worker_index() % count}``); otherwise `device` unchanged."""
    if device != "auto":
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{worker_index() % count}" if count > 1 else device


def _init_worker(counter=None) -> None:
    """One thread per worker process (the pool supplies the parallelism), and the worker's
    index from the pool's shared counter."""
    if counter is not None:
        with counter.get_lock():
            _WORKER["index"] = counter.value
            counter.value += 1
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    import torch

    torch.set_num_threads(1)


_PRELOAD = ["torch", "graphpai.torch.extract", "graphpai.torch.models", "graphpai.prune",
            "graphpai.functional", "graphpai.paths", "graphpai.spectral", "graphpai.study.measure"]


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """The default executor: `workers` processes (default: the CPUs this process may use).

    On Linux the workers fork from a forkserver that has imported graphpai and torch once, so
    a worker starts in milliseconds and no thread of the parent is forked.
    """
    workers = workers or _cpus()
    if workers < 1:
        raise StudyError(f"--workers {workers} must be at least 1")
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
    else:  # pragma: no cover - macOS/Windows
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_init_worker, initargs=(context.Value("i", 0),))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def dask_executor(address: str):
    """``(client, executor)`` for the Dask scheduler at `address` (``tcp://HOST:PORT``).

    Raises
    ------
    StudyError
        If Dask is not installed (the message says ``pip install "graphpai[dask]"``) or the
        scheduler cannot be reached.
    """
    try:
        from distributed import Client
    except ImportError:
        raise StudyError('--scheduler needs Dask: pip install "graphpai[dask]"') from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise StudyError(f"cannot reach the Dask scheduler at {address!r}: {exc}; start it with "
                         "`dask scheduler` or check the address (tcp://HOST:PORT)") from None
    return client, client.get_executor()


def run(points: Iterable[Point], measure: Callable[[Point], dict], store, *,
        executor: Executor | None = None, workers: int | None = None, progress: bool = True,
        on_point: Callable[[dict], None] | None = None) -> Summary:
    """Evaluate every point not yet in `store` on `executor` and store each row as it arrives.

    Parameters
    ----------
    points : iterable of Point
        Duplicates (same key) are evaluated once.
    measure : callable
        ``measure(point) -> dict`` of columns, picklable (a module-level function such as
        :func:`graphpai.study.measure.measure`).
    store : Store
        Only this (parent) process writes it, one transaction per point.
    executor : concurrent.futures.Executor, optional
        Any executor: a process pool, ``distributed.Client(...).get_executor()``, a thread pool.
        It is not shut down here. None: :func:`process_pool` with `workers` processes, shut down
        at the end.
    workers : int, optional
        Processes of the default pool (default: the CPU count).
    progress : bool
        A tqdm bar on stderr: points done, failures, ETA.
    on_point : callable, optional
        Called with each stored row (tests use it to stop a sweep half-way).

    Returns
    -------
    Summary
    """
    start = time.perf_counter()
    unique = list({p.key: p for p in points}.values())
    todo = [p for p in unique if p not in store]
    failed = []
    own = executor is None and bool(todo)
    pool = process_pool(min(workers or _cpus(), len(todo))) if own else executor
    label = (f"{pool._max_workers} processes" if isinstance(pool, ProcessPoolExecutor)
             else type(pool).__name__ if pool is not None else "nothing to do")
    try:
        if todo:
            _drive(pool, todo, measure, store, progress, on_point, failed)
    except BaseException:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)
            own = False
        raise
    finally:
        if own:
            pool.shutdown(wait=True)
    return Summary(points=len(unique), skipped=len(unique) - len(todo), done=len(todo),
                   failed=tuple(failed), elapsed_s=time.perf_counter() - start, workers=label)


def _drive(pool, todo, measure, store, progress, on_point, failed) -> None:
    from tqdm import tqdm

    futures = {pool.submit(evaluate, measure, p): p for p in todo}
    bar = tqdm(total=len(futures), disable=not progress, file=sys.stderr, unit="pt",
               desc="sweep", dynamic_ncols=True)
    try:
        for done in as_completed(futures):
            point = futures[done]
            try:
                row = done.result()
            except Exception as exc:  # the worker died or the executor lost the task
                row = _failed(point, f"{type(exc).__name__}: {exc}")
            store.put(row)
            if row["status"] != "ok":
                failed.append((point.label, point.key, row["error"]))
                bar.set_postfix(failed=len(failed), refresh=False)
            bar.update(1)
            if on_point is not None:
                on_point(row)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        bar.close()


def sweep(points, out, *, measure: Callable[[Point], dict] | None = None,
          workers: int | None = None, scheduler: str | None = None, progress: bool = True,
          report: bool = True, params: dict | None = None) -> Summary:
    """Run a study into directory `out`: store, executor, run, then the HTML report.

    The one call behind ``graphpai sweep``: checks `out` and the store's definition before any
    work, runs the points not yet stored (on a local process pool, or on the Dask scheduler at
    `scheduler`), and writes ``out/report.html`` with its figures when
    :mod:`graphpai.report.html` is available.

    Parameters
    ----------
    points : list of Point
        From :func:`graphpai.study.grid`.
    out : path
        The study directory (created if missing).
    measure : callable, optional
        Default :func:`graphpai.study.measure.measure`.
    workers : int, optional
        Local processes (default: the CPU count); ignored with `scheduler`.
    scheduler : str, optional
        A Dask scheduler address, ``tcp://HOST:PORT`` (needs ``graphpai[dask]``).
    progress : bool
        Show the tqdm bar.
    report : bool
        Write the figures and ``report.html`` at the end.
    params : dict, optional
        The study's parameters as the user gave them, shown in the report.

    Returns
    -------
    Summary

    Raises
    ------
    OutputError
        If `out` cannot be written.
    StudyError
        If `out` holds a different study, or the scheduler cannot be used.
    """
    from .measure import measure as default_measure
    from .store import Store, read_table, study_definition

    points = list(points)
    definition = study_definition(points)
    if workers is not None and workers < 1:
        raise StudyError(f"--workers {workers} must be at least 1")
    client = executor = None
    if scheduler:
        client, executor = dask_executor(scheduler)
    try:
        with Store(out, definition) as store:
            summary = run(points, measure or default_measure, store, executor=executor,
                          workers=workers, progress=progress)
    finally:
        if client is not None:
            client.close()
    if scheduler:
        summary = replace(summary, workers=f"Dask at {scheduler}")
    if report:
        _report(out, read_table(out), {**definition, **(params or {})})
    return summary


def _report(out, table, params) -> None:
    """Figures and report.html by graphpai.report.html (skipped if that module is absent)."""
    try:
        from ..report.html import write_study_report
    except ImportError:  # the report extra is not there: the tables are the result
        return
    write_study_report(table, out, params=params)
