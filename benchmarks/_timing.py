"""Timing helpers shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``).

- :func:`median_time`: the median of `repeat` calls, wall clock or another clock;
- :func:`best_of`: the fastest of `repeat` calls, with that call's CPU time and result;
- :func:`interleaved`: several functions timed in turn, so a load spike on a shared machine hits
  them all alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

__all__ = ["median_time", "best_of", "interleaved"]


def median_time(fn: Callable[[], object], repeat: int, clock=time.perf_counter) -> float:
    """Median over `repeat` calls of ``fn()`` of the seconds `clock` measures.

    `clock` is ``time.perf_counter`` (wall time) or ``time.process_time`` (CPU time of the
    process, all threads).
    """
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of the fastest of `repeat` calls of ``fn()``."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best[0]:
            best = (wall, cpu, result)
    return best


def interleaved(fns: Sequence[Callable[[], object]], repeat: int) -> list[list[float]]:
    """Call every function once to warm up, then `repeat` rounds of all of them in turn; one list
    of wall times per function."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times
