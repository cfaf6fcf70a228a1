"""The SQLite store and its exports (graphpai/study/store.py)."""

from __future__ import annotations

import json
import math
import os

import pytest

from graphpai.errors import OutputError, StudyError
from graphpai.study import COLUMNS, Point, Store, read_study, read_table, study_definition

P = [Point("mlp", "rpi", "erk", c, s) for c in (10.0, 1e3) for s in (1, 0)]


def row(point, **values):
    return {"key": point.key, "status": "ok", "error": None, "model": point.model,
            "method": point.method, "budget": point.budget, "compression": point.compression,
            "seed": point.seed, **values}


def test_rows_read_back_equal_from_every_file(tmp_path):
    definition = study_definition(P)
    with Store(tmp_path, definition) as store:
        store.put(row(P[0], channel_corrected_compression=math.inf, channel_disconnected=True,
                      log10_paths=-math.inf, kept=0))
        store.put(row(P[1], channel_corrected_compression=12.5, channel_disconnected=False,
                      log10_paths=3.25, kept=7, iclr23_imdb=None))
        store.put({**row(P[2]), "status": "failed", "error": "BudgetError: inf, -inf and nan"})
        assert P[0] in store and P[1].key in store and P[2] not in store and len(store) == 3
    tables = [read_table(tmp_path / name) for name in ("", "results.sqlite", "results.json",
                                                       "results.csv")]
    for table in tables[1:]:
        assert table == tables[0]
    first = tables[0]
    # sorted by compression then seed: P[1] (10, seed 0), P[0] (10, seed 1), P[2] (1e3, seed 1)
    assert [r["key"] for r in first] == [P[1].key, P[0].key, P[2].key]
    assert first[1]["channel_corrected_compression"] == math.inf
    assert first[1]["log10_paths"] == -math.inf and first[1]["channel_disconnected"] is True
    assert first[0]["iclr23_imdb"] is None and first[2]["kept"] is None
    assert first[2]["error"] == "BudgetError: inf, -inf and nan"  # text stays text
    assert list(first[0]) == [c for c in COLUMNS if c in first[0]]  # schema order
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["rows"][1]["channel_corrected_compression"] == "inf"
    assert data["study"] == definition == read_study(tmp_path)


def test_a_different_definition_is_refused_and_nothing_is_written(tmp_path):
    with Store(tmp_path, study_definition(P)) as store:
        store.put(row(P[0]))
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    other = [Point("mlp", "rpi", "erk", 10.0, 0, measures=("paths",))]
    with pytest.raises(StudyError, match=r"holds a different study: measures \[\] "
                                         r"\(now \['paths'\]\)"):
        Store(tmp_path, study_definition(other))
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before
    # more points of the same definition are welcome
    with Store(tmp_path, study_definition(P + [Point("mlp", "mica", "igq", 5.0, 9)])) as store:
        assert P[0] in store


def test_points_of_two_definitions_do_not_make_one_study():
    with pytest.raises(StudyError, match="different study definitions"):
        study_definition([P[0], Point("lenet5", "rpi", "erk", 10.0, 0)])


def test_unwritable_and_foreign_directories(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        Store(afile, {})
    with pytest.raises(OutputError, match="cannot create"):
        Store(afile / "sub", {})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.sqlite").write_text("not a database")
    with pytest.raises(StudyError, match="not a graphpai study store"):
        Store(foreign, {})
    with pytest.raises(StudyError, match="holds no study"):
        read_table(tmp_path)
    with pytest.raises(StudyError, match="no study at"):
        read_table(tmp_path / "missing")
