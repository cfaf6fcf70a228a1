"""Helpers shared by the result dataclasses: JSON-safe conversion and atomic writes."""

import math
import os
import tempfile
from contextlib import contextmanager

import numpy as np

__all__ = ["jsonable", "atomic_path"]


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


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A failure leaves no partly written file behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".graphpai-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
