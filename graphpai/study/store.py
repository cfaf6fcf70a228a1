"""Where a study's rows live: one SQLite database per output directory (docs/study.md).

``DIR/results.sqlite`` holds one row per finished point, keyed by :attr:`Point.key`, each written
in its own transaction by the parent process, so a crash loses at most the points in flight
(while a store is open the database keeps a write-ahead log beside it, ``-wal`` and ``-shm``
files, folded back into the one file when it closes).
After every point the whole table is exported atomically to ``DIR/results.csv`` and
``DIR/results.json`` (in a very large study, whenever the export takes less than a 20th of the
time since the last one, and always when the store closes). The database also records the study's definition (model, options, measures,
settings, graphpai and definitions versions): a directory made by a different definition is
refused, while a rerun with more methods, budgets, compressions or seeds adds its new points.

:func:`read_table` reads the rows back (from the directory, the database, the JSON or the CSV
file) as flat dicts with the column names of `COLUMNS`.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from contextlib import closing
from typing import Iterable, Mapping

from .._results import atomic_path, jsonable
from ..errors import OutputError, StudyError

__all__ = ["Store", "read_table", "read_study", "COLUMNS", "DATABASE", "CSV", "JSON",
           "study_definition"]

DATABASE, CSV, JSON = "results.sqlite", "results.csv", "results.json"

_PROFILES = ("iclr23", "neurips23")
_SPECTRAL = ("delta_r_norm", "delta_s_norm", "imdb", "narc", "weighted_gap", "imdb_r",
             "coordinate_norm", "positive_gap_share", "scored_fraction")
_AUDIT = ("functional", "functional_ratio", "corrected_compression", "functional_nodes",
          "functional_node_ratio", "disconnected")

COLUMNS = (
    ("key", "status", "error", "elapsed_s",
     "model", "method", "budget", "compression", "log10_compression", "seed", "options",
     "N", "kept", "density", "direct_compression")
    + tuple(f"channel_{c}" for c in _AUDIT)
    + tuple(f"spatial_{c}" for c in _AUDIT)
    + ("log10_paths", "log10_channel_paths", "effective_nodes", "nodes")
    + tuple(f"{p}_{c}" for p in _PROFILES for c in _SPECTRAL)
    + ("recipe", "epochs", "best_val_acc", "best_test_acc", "final_test_acc", "train_wall_s",
       "dst", "graphpai_version", "definitions_version")
)
"""Every column a study row can have, in table order (a measure that was not taken is None)."""

_ALWAYS = ("key", "status", "error", "elapsed_s", "model", "method", "budget", "compression",
           "log10_compression", "seed", "options", "graphpai_version", "definitions_version")
_TEXT = {"key", "status", "error", "model", "method", "budget", "options", "recipe", "dst",
         "graphpai_version"}


def study_definition(points: Iterable) -> dict:
    """The definition shared by `points` (see :meth:`Point.definition`).

    Raises
    ------
    StudyError
        If the points come from more than one definition (for example two models).
    """
    seen = {json.dumps(p.definition(), sort_keys=True) for p in points}
    if len(seen) > 1:
        raise StudyError("these points belong to different study definitions (model, options, "
                         "measures or settings differ); run each study into its own directory")
    return json.loads(seen.pop()) if seen else {}


def _columns(rows: list[dict]) -> list[str]:
    present = set(_ALWAYS).union(*[r.keys() for r in rows]) if rows else set(_ALWAYS)
    known = [c for c in COLUMNS if c in present]
    return known + sorted(present - set(COLUMNS))  # columns of a plugged-in measure go last


def _sort_key(row: Mapping):
    return (str(row.get("model")), str(row.get("method")), str(row.get("budget") or ""),
            float(row.get("compression") or 0), int(row.get("seed") or 0), str(row.get("key")))


def _complete(rows: list[dict]) -> list[dict]:
    columns = _columns(rows)
    return [{c: row.get(c) for c in columns} for row in sorted(rows, key=_sort_key)]


class Store:
    """The SQLite store of one study directory.

    Parameters
    ----------
    directory : path
        Created if missing. Checked for writing before anything is written.
    definition : dict
        The study definition (:func:`study_definition` of its points). A directory that holds
        another definition is refused.
    export : bool
        Write ``results.csv`` and ``results.json`` after every point (and on open).

    Raises
    ------
    OutputError
        If the directory cannot be created or written.
    StudyError
        If it holds a study of another definition, or its database is not a graphpai store.
    """

    def __init__(self, directory, definition: Mapping, *, export: bool = True):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, DATABASE)
        self.definition = dict(definition)
        self.export_files = export
        _check_directory(self.directory)
        existing = os.path.exists(self.path)
        if existing:
            self._check_definition()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions
            # while the sweep runs: a write-ahead log, synced at checkpoints. A killed sweep
            # loses nothing it committed (only a power cut can drop the last points, never
            # corrupt the file), and a commit costs ~0.1 ms instead of an fsync (~20 ms here)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise OutputError(f"cannot open {self.path!r}: {exc}") from None
        if not existing:
            with self._transaction():
                self._db.execute("CREATE TABLE study (name TEXT PRIMARY KEY, value TEXT)")
                self._db.execute("CREATE TABLE points (key TEXT PRIMARY KEY, status TEXT NOT NULL,"
                                 " row TEXT NOT NULL, finished REAL NOT NULL)")
                self._db.execute("INSERT INTO study VALUES ('definition', ?)",
                                 (json.dumps(self.definition, sort_keys=True),))
        self._ok = {k for (k,) in self._db.execute("SELECT key FROM points WHERE status = 'ok'")}
        # decoded rows and their export lines, kept so that an export after each point costs
        # one encoding of the new row plus writing the files, not a decode of the whole table
        self._rows = {key: _decode(json.loads(text))
                      for key, text in self._db.execute("SELECT key, row FROM points")}
        self._lines: dict = {}
        self._line_columns: tuple = ()
        self._export_s = 0.0
        self._exported_at = 0.0
        self._pending = False
        if self.export_files:
            self.export()

    def _check_definition(self) -> None:
        try:
            with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
                (text,) = db.execute("SELECT value FROM study WHERE name = 'definition'").fetchone()
        except (sqlite3.Error, TypeError):
            raise StudyError(f"{self.path!r} is not a graphpai study store; choose another "
                             "--out directory") from None
        stored = json.loads(text)
        if stored != self.definition:
            diff = [f"{k} {stored.get(k)!r} (now {self.definition.get(k)!r})"
                    for k in sorted(set(stored) | set(self.definition))
                    if stored.get(k) != self.definition.get(k)]
            raise StudyError(f"{self.directory!r} holds a different study: {'; '.join(diff)}; "
                             "rerun with the same model, options and measures, or choose another "
                             "--out directory")

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, value, tb):
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def __contains__(self, key) -> bool:
        """True if the point (or its key) has an ``ok`` row; failed points are retried."""
        return getattr(key, "key", key) in self._ok

    def __len__(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM points").fetchone()
        return n

    def put(self, row: Mapping) -> None:
        """Store one finished point's row (replacing a failed attempt) in one transaction, then
        export the table."""
        row = dict(row)
        text = json.dumps(jsonable(row), sort_keys=True, allow_nan=False)
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?)",
                             (row["key"], row["status"], text, time.time()))
        if row["status"] == "ok":
            self._ok.add(row["key"])
        self._rows[row["key"]] = _decode(json.loads(text))
        self._lines.pop(row["key"], None)
        if self.export_files:
            self._pending = True
            # after every point, unless exporting the table would take more than a 20th of
            # the time between points (a very large study); close() exports what is left
            if time.perf_counter() - self._exported_at >= 20 * self._export_s:
                self.export()

    def rows(self) -> list[dict]:
        """Every stored row, completed to the same columns and sorted by model, method, budget,
        compression and seed."""
        return _complete(list(self._rows.values()))

    def export(self) -> None:
        """Write ``results.csv`` and ``results.json`` atomically from the stored rows (one row
        per line in each)."""
        start = time.perf_counter()
        rows = sorted(self._rows.values(), key=_sort_key)
        columns = tuple(_columns(rows))
        if columns != self._line_columns:
            self._lines, self._line_columns = {}, columns
        lines = [self._lines.get(r["key"]) or self._encode(r, columns) for r in rows]
        head = json.dumps({"study": self.definition, "columns": list(columns)},
                          allow_nan=False)[:-1]
        with atomic_path(os.path.join(self.directory, JSON)) as tmp:
            with open(tmp, "w") as fh:
                fh.write(head + ', "rows": [\n' + ",\n".join(j for j, _ in lines) + "\n]}\n")
        with atomic_path(os.path.join(self.directory, CSV)) as tmp:
            with open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)
                fh.write("".join(c for _, c in lines))
        self._pending = False
        self._exported_at = time.perf_counter()
        self._export_s = self._exported_at - start

    def _encode(self, row: dict, columns) -> tuple[str, str]:
        """A row's JSON and CSV lines under `columns` (cached until the columns change)."""
        import io

        full = jsonable({c: row.get(c) for c in columns})
        buffer = io.StringIO()
        csv.writer(buffer).writerow([_csv_cell(full[c]) if full[c] is not None else ""
                                     for c in columns])
        lines = (json.dumps(full, allow_nan=False), buffer.getvalue())
        self._lines[row["key"]] = lines
        return lines

    def close(self) -> None:
        try:
            if self.export_files and self._pending:
                self.export()
        finally:
            try:  # back to one plain file: readers need no -wal/-shm beside it
                self._db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:  # another connection still reads it: SQLite keeps the log
                pass
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_directory(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise OutputError(f"cannot write the study to {directory!r}: it is a file; give a "
                          "directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the study directory {directory!r}: "
                          f"{exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the study to {directory!r}: no permission")


def _csv_cell(value):
    return "" if value is None else jsonable(value)


def _decode(row: dict) -> dict:
    """JSON's "inf"/"-inf"/"nan" strings back to floats in numeric columns."""
    out = {}
    for name, value in row.items():
        if name not in _TEXT and value in ("inf", "-inf", "nan"):
            value = float(value)
        out[name] = value
    return out


def _from_csv(text: str, name: str):
    if text == "":
        return None
    if name in _TEXT:
        return text
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _resolve(path_or_dir) -> str:
    path = os.fspath(path_or_dir)
    if os.path.isdir(path):
        for name in (DATABASE, JSON, CSV):
            if os.path.exists(os.path.join(path, name)):
                return os.path.join(path, name)
        raise StudyError(f"{path!r} holds no study ({DATABASE}, {JSON} or {CSV}); run "
                         "`graphpai sweep --out` there first")
    if not os.path.exists(path):
        raise StudyError(f"no study at {path!r}; give a sweep's --out directory or its "
                         f"{DATABASE}, {JSON} or {CSV}")
    return path


def read_table(path_or_dir) -> list[dict]:
    """The rows of a study: one flat dict per point, with the names of `COLUMNS`.

    Parameters
    ----------
    path_or_dir : path
        A sweep's output directory (its database is read), or its ``results.sqlite``,
        ``results.json`` or ``results.csv``.

    Returns
    -------
    list of dict
        Sorted by model, method, budget, compression, seed; every row has the same keys; floats
        are floats (``inf``, ``-inf``, ``nan`` included) and a measure not taken is None.

    Raises
    ------
    StudyError
        If there is no study there.
    """
    path = _resolve(path_or_dir)
    if path.endswith(".json"):
        with open(path) as fh:
            data = json.load(fh)
        return _complete([_decode(r) for r in (data["rows"] if isinstance(data, dict) else data)])
    if path.endswith(".csv"):
        with open(path, newline="") as fh:
            return _complete([{k: _from_csv(v, k) for k, v in r.items()}
                              for r in csv.DictReader(fh)])
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            texts = db.execute("SELECT row FROM points").fetchall()
    except sqlite3.Error as exc:
        raise StudyError(f"cannot read the study database {path!r}: {exc}") from None
    return _complete([_decode(json.loads(t)) for (t,) in texts])


def read_study(path_or_dir) -> dict:
    """The study definition stored with a study (model, options, measures, settings, versions).

    Raises
    ------
    StudyError
        If there is no study database or JSON export there.
    """
    path = _resolve(path_or_dir)
    if path.endswith(".json"):
        with open(path) as fh:
            data = json.load(fh)
        return dict(data.get("study", {})) if isinstance(data, dict) else {}
    if path.endswith(".csv"):
        raise StudyError(f"{path!r} holds rows only; read the definition from {DATABASE} or "
                         f"{JSON}")
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            (text,) = db.execute("SELECT value FROM study WHERE name = 'definition'").fetchone()
    except (sqlite3.Error, TypeError):
        raise StudyError(f"{path!r} is not a graphpai study store") from None
    return json.loads(text)
