"""Thread policy for torch work (issue 13 item 14; the torch side of what
:func:`graphpai.spectral.solvers.one_blas_thread` does for BLAS).

torch starts one intra-op thread per core whatever else the machine runs. On a busy machine the
threads wait on each other: SynFlow on VGG-16 took 171 s with torch's default threads on a loaded
2-core machine and 41 s with one (benchmarks/README.md, "Threads"). graphpai's rule:

- **default**: never more threads than *free* cores, ``max(1, round(cores - load))`` with
  ``cores`` the CPUs this process may run on and ``load`` the 1-minute load average; a lower
  ``torch.set_num_threads`` the user chose is kept;
- ``threads=N`` (the CLI's ``--threads N``): exactly N, also for every block nested inside
  (the scorers' own default-policy blocks keep an explicit outer choice).

:func:`torch_threads` applies it for the duration of a block and restores torch's setting after,
so a library call never leaves the caller's process changed.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from ..errors import GraphpaiError

__all__ = ["free_cores", "policy_threads", "torch_threads"]

_explicit: list[int] = []  # thread counts chosen explicitly by the enclosing torch_threads blocks


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: ``max(1, round(cores - load))``, at most `cores`.

    Examples
    --------
    >>> free_cores(cores=2, load=4.3), free_cores(cores=16, load=3.6), free_cores(cores=4, load=0)
    (1, 12, 4)
    """
    cores = _cores() if cores is None else int(cores)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not available: assume an idle machine
            load = 0.0
    return max(1, min(cores, int(round(cores - load))))


def policy_threads(threads: int | None = None, current: int | None = None) -> int:
    """The intra-op thread count the policy picks: `threads` if given, else
    ``min(current, free_cores())`` with `current` torch's setting.

    Raises
    ------
    GraphpaiError
        If `threads` is given and is not a whole number >= 1.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise GraphpaiError(f"threads must be a whole number >= 1, got {threads!r}")
        return threads
    if current is None:
        import torch

        current = torch.get_num_threads()
    return max(1, min(int(current), free_cores()))


@contextmanager
def torch_threads(threads: int | None = None):
    """Run the block with the policy's torch thread count; torch's own setting comes back after.

    Examples
    --------
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    if threads is None and _explicit:
        threads = _explicit[-1]  # an explicit outer choice (--threads) wins over the default
    wanted = policy_threads(threads, before)
    if threads is not None:
        _explicit.append(wanted)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if threads is not None:
            _explicit.pop()
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
