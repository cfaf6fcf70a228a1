"""Plain-text tables and JSON/CSV writers for per-layer result rows (a row is a dict)."""

from __future__ import annotations

import csv
import json
import math
from typing import Iterable, Sequence

from .._results import atomic_path, jsonable

__all__ = ["format_table", "format_value", "write_json", "write_csv"]


def format_value(value) -> str:
    """How one cell reads: None is '-', inf is 'inf', floats get 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(rows: Iterable[dict], columns: Sequence[str] | None = None) -> str:
    """Align `rows` (dicts) under `columns` (default: the first row's keys) as a text table."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    cells = [[format_value(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]

    numeric = [all(isinstance(row.get(col), (int, float)) or row.get(col) is None for row in rows)
               for col in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def write_json(data, path) -> None:
    """Write `data` (a result's ``to_dict()``) as JSON, atomically; inf/nan become strings."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(jsonable(data), fh, indent=2, allow_nan=False)
            fh.write("\n")


def write_csv(rows: Sequence[dict], path, columns: Sequence[str] | None = None) -> None:
    """Write per-layer rows as CSV, atomically."""
    rows = [jsonable(r) for r in rows]
    columns = list(columns or (rows[0] if rows else []))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
