"""Studies: sweeps of masks over methods, budgets, compressions and seeds (docs/study.md).

- :mod:`.grid`: `Point` (one mask and what is measured on it, with a stable `Point.key`), `grid`,
  `parse_compressions`.
- :mod:`.store`: `Store` (SQLite in the output directory, CSV/JSON exports), `read_table`.
- :mod:`.measure`: what a point measures, `measure` and the `MEASURES` registry.
- :mod:`.runner`: `run` on any `concurrent.futures.Executor` (processes here, Dask's on a
  cluster).

Import by name: ``import graphpai.study``; nothing here imports torch until a point is measured.
"""

from .grid import (DEFINITIONS_VERSION, Point, grid, parse_compressions, parse_options,
                   parse_seeds)
from .store import COLUMNS, Store, read_study, read_table, study_definition

__all__ = ["Point", "grid", "parse_compressions", "parse_seeds", "parse_options", "DEFINITIONS_VERSION",
           "Store", "read_table", "read_study", "study_definition", "COLUMNS"]
