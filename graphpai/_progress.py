"""One progress-bar helper for every long computation (a tiny wrapper over tqdm).

Usage in a function that takes ``progress: bool = False``::

    from graphpai._progress import bar

    for layer in bar(graph.layers, progress, desc="snip", unit="layer"):
        ...

    with bar(None, progress, total=n, desc="paths", unit="layer") as b:
        for ...:
            b.update(1)

Rules (the same everywhere, so users see one behaviour):

* the bar goes to **stderr**, never stdout (stdout carries results and JSON);
* it is shown only when ``progress`` is true **and** stderr is a terminal, so a pipe,
  a log file or a test run never gets bar noise; the CLI passes ``progress=not --quiet``
  (see ``graphpai.cli.progress``);
* when off it costs nothing: the iterable comes back unchanged (a no-op object with
  ``update``/``set_postfix``/``write``/``close`` when there is no iterable).

``should_show(progress)`` answers the rule alone; ``write(msg, progress)`` prints a line
on stderr that does not break a running bar; ``option(func, progress)`` is ``{"progress":
progress}`` when `func` has a ``progress`` parameter (a pluggable engine may not), else ``{}``.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["bar", "should_show", "write", "option"]


def should_show(progress: bool, stream=None) -> bool:
    """True when ``progress`` is asked for and `stream` (default stderr) is a terminal."""
    if not progress:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


class _Off:
    """A do-nothing bar: iterates the iterable, ignores updates."""

    def __init__(self, iterable=None):
        self._iterable = iterable
        self.n = 0

    def __iter__(self):
        return iter(() if self._iterable is None else self._iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def write(self, msg: str) -> None:
        print(msg, file=sys.stderr)

    def close(self) -> None:
        pass


def bar(iterable: Iterable[T] | None = None, progress: bool = False, *, total: int | None = None,
        desc: str | None = None, unit: str = "it", leave: bool = False, **kwargs):
    """A tqdm bar on stderr when :func:`should_show` says so, else a free no-op.

    With an iterable and the bar off, the iterable itself is returned (no wrapper cost).
    Extra keyword arguments go to ``tqdm`` (``unit_scale``, ``mininterval``, ...).
    """
    if not should_show(progress):
        return iterable if iterable is not None else _Off()
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                dynamic_ncols=True, **kwargs)


def write(msg: str, progress: bool = False) -> None:
    """Print `msg` on stderr without breaking a running bar (tqdm.write when bars are on)."""
    if should_show(progress):
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr)



def option(func, progress: bool) -> dict:
    """``{"progress": progress}`` if `func` names a ``progress`` parameter, else ``{}`` (so a
    caller can pass the flag on to code, such as a spatial engine, that may not take it)."""
    import inspect

    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}
    return {"progress": progress} if "progress" in params else {}
