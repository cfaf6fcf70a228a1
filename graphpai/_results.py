"""Helpers shared by the result dataclasses: JSON-safe conversion and atomic writes."""

import math
import os
import tempfile
from contextlib import contextmanager

import numpy as np

from .errors import OutputError

__all__ = ["jsonable", "atomic_path", "check_writable"]


def jsonable(obj):
    """Return `obj` with numpy scalars and arrays made plain and inf/nan made strings.

    ``json.dumps(jsonable(x), allow_nan=False)`` always works: ``inf`` becomes ``"inf"``,
    ``-inf`` ``"-inf"`` and nan ``"nan"``; None stays None (an unscored entry).
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return obj


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def check_writable(path) -> str:
    """`path` as a str if a file can be written there; else :class:`~graphpai.errors.OutputError`.

    Checked before a long computation, so that a bad ``--out`` fails at once: the path must not
    be a directory, its parent must be a directory (or creatable) and writable.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path!r}: it is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"cannot write {path!r}: {existing!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path!r}: no permission to write in {existing!r}")
    return path


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A failure leaves no partly written file behind. The file gets the mode a plain ``open()``
    would give it (0666 less the umask), not the temporary file's 0600. A path that cannot be
    written raises :class:`~graphpai.errors.OutputError`.
    """
    path = check_writable(path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".graphpai-", suffix=suffix, dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
