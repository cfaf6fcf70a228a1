"""Points, keys and compression grids (graphpai/study/grid.py).

Expected grids are computed here from the definition (10 ** (start + i * step) with the exponents
taken from exact fractions), not from the parser's own output.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

import graphpai
from graphpai.errors import StudyError, UnknownMethodError, UnknownModelError
from graphpai.study import Point, grid, parse_compressions, parse_options, parse_seeds

grid_module = importlib.import_module("graphpai.study.grid")  # the package's `grid` is the function

BASE = dict(model="mlp", method="rpi", budget="erk", compression=1000.0, seed=0)


def test_key_is_stable_across_processes_and_hash_seeds():
    point = Point(**BASE, options={"a": 1}, measures=("paths",))
    code = ("from graphpai.study import Point; print(Point('mlp', 'rpi', 'erk', 1e3, 0, "
            "options={'a': 1}, measures=('paths',)).key)")
    for hash_seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"PYTHONHASHSEED": hash_seed, "PATH": ""}, check=True)
        assert out.stdout.strip() == point.key


def test_key_ignores_how_a_value_is_written():
    key = Point(**BASE).key
    assert Point(**{**BASE, "compression": 10 ** 3.0}).key == key
    assert Point(**{**BASE, "compression": parse_compressions("10^3")[0]}).key == key
    assert Point(**{**BASE, "compression": parse_compressions("2.9:3:0.1")[-1]}).key == key
    a = Point(**BASE, options={"x": 1, "y": 2}, measures=("spectral", "paths"))
    b = Point(**BASE, options={"y": 2, "x": 1}, measures=("paths", "spectral", "paths"))
    assert a.key == b.key and a == b


@pytest.mark.parametrize("change", [
    {"model": "lenet5"}, {"method": "mica"}, {"budget": "igq"}, {"budget": None},
    {"compression": 1000.001}, {"seed": 1}, {"options": {"mode": "min"}},
    {"measures": ("spatial",)}, {"settings": {"recipe": "r"}},
])
def test_every_parameter_changes_the_key(change):
    assert Point(**{**BASE, **change}).key != Point(**BASE).key


def test_versions_change_the_key(monkeypatch):
    before = Point(**BASE).key
    monkeypatch.setattr(grid_module, "DEFINITIONS_VERSION", 2)
    assert Point(**BASE).key != before
    monkeypatch.setattr(grid_module, "DEFINITIONS_VERSION", 1)
    monkeypatch.setattr(graphpai, "__version__", "99.0")
    assert Point(**BASE).key != before


def test_keys_of_a_grid_are_distinct():
    points = grid(model="mlp", methods="rpi,mica,magnitude", budgets="erk,igq,uniform",
                  compressions="0.5:6:0.5", seeds="0,1000,2000")
    # placements: 2 methods x 3 budgets x 12 x 3; ranking: 1 x 12 x 3 (no budget)
    assert len(points) == 2 * 3 * 12 * 3 + 12 * 3
    assert len({p.key for p in points}) == len(points)
    assert {p.budget for p in points if p.method == "magnitude"} == {None}


def _expected(start, stop, step):
    start, stop, step = Fraction(start), Fraction(stop), Fraction(step)
    n = int((stop - start) / step) + 1
    return [10.0 ** float(start + i * step) for i in range(n)]


@pytest.mark.parametrize("text, exact", [
    ("0.5:6:0.5", ("0.5", "6", "0.5")),
    ("0.1:0.3:0.1", ("0.1", "0.3", "0.1")),  # 0.1 + 0.2 != 0.3 in floats: the end stays in
    ("0:1:0.1", ("0", "1", "0.1")),
    ("1:4:0.7", ("1", "4", "0.7")),          # 4 is not on the grid: 1 .. 3.8
    ("3:3:1", ("3", "3", "1")),
    ("1:2:0.01", ("1", "2", "0.01")),
])
def test_ranges_are_inclusive_and_float_safe(text, exact):
    got = parse_compressions(text)
    want = _expected(*exact)
    assert len(got) == len(want)
    assert got == pytest.approx(want, rel=1e-12)


@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 20))
def test_range_count_property(a, b, s):
    start, stop = sorted((a, b))
    text = f"{start / 10}:{stop / 10}:{s / 10}"
    assert len(parse_compressions(text)) == (stop - start) // s + 1


def test_lists_and_mixed_items():
    assert parse_compressions("1e2,1e3,10^3.5") == pytest.approx((100, 1000, 10 ** 3.5))
    assert parse_compressions("1000,1e3,10^3,10**3") == (1000.0,)
    assert parse_compressions("1:2:1,10^3") == (10.0, 100.0, 1000.0)
    assert parse_compressions([100, "1e3"]) == (100.0, 1000.0)


@pytest.mark.parametrize("text", ["6:0.5:1", "1:4:0", "1:4:-0.5", "1:4", "1:2:3:4", "a:b:c",
                                  "", "1e3,,1e4", "ten", "0.5", "-1:2:1", "0:1e9:1e-9",
                                  "inf:inf:1", "10^x"])
def test_unreadable_grids_are_one_clear_error(text):
    with pytest.raises(StudyError) as info:
        parse_compressions(text)
    message = str(info.value)
    assert "\n" not in message and repr(text) in message or "below 1" in message \
        or "points" in message


def test_seeds_and_options():
    assert parse_seeds("0,1000,2000,0") == (0, 1000, 2000)
    for bad in ("a", "-1", ""):
        with pytest.raises(StudyError):
            parse_seeds(bad)
    assert parse_options(["mode=min", "iterations=5", "flag=true"]) == {
        "mode": "min", "iterations": 5, "flag": True}
    with pytest.raises(StudyError):
        parse_options(["mode"])


def test_grid_validates_before_any_work():
    with pytest.raises(UnknownModelError, match="known models"):
        grid(model="nope", methods="rpi", compressions="1e2")
    with pytest.raises(UnknownMethodError, match="known methods"):
        grid(model="mlp", methods="rpi,nope", compressions="1e2")
    with pytest.raises(UnknownMethodError, match="known budgets"):
        grid(model="mlp", methods="rpi", budgets="nope", compressions="1e2")
    with pytest.raises(UnknownMethodError, match="known measures"):
        grid(model="mlp", methods="rpi", compressions="1e2", measures=["nope"])
    with pytest.raises(UnknownMethodError, match="no option"):
        grid(model="mlp", methods="rpi", compressions="1e2", options={"bogus": 1})
    with pytest.raises(StudyError, match="prune batches"):
        grid(model="mlp", methods="snip", compressions="1e2")
    with pytest.raises(StudyError, match="prune batches"):
        grid(model="mlp", methods="rpi", budgets="grasp", compressions="1e2")


def test_point_label_and_definition():
    p = Point("mlp", "mica", "igq", 10 ** 2.5, 7)
    assert p.label == "mica-igq 10^2.5 seed 7"
    assert p.log10_compression == 2.5
    d = p.definition()
    assert d["model"] == "mlp" and d["definitions_version"] == grid_module.DEFINITIONS_VERSION
    json.dumps(d)
    assert math.isclose(p.compression, 10 ** 2.5)


def test_dst_is_an_axis_and_static_keys_are_unchanged():
    import hashlib
    import json

    from graphpai import __version__
    from graphpai.study.grid import DEFINITIONS_VERSION, parse_dsts

    points = grid(model="mlp", methods="rpi", compressions="1e2", dsts="static,set,rigl",
                  measures=["train"], settings={"recipe": "mica-resnet20"})
    assert [p.dst for p in points] == [None, "set", "rigl"]
    assert len({p.key for p in points}) == 3 and points[1].label == "rpi-erk set 10^2 seed 0"
    # a static point's key is the one it had before DST was an axis (restated here)
    payload = {"model": "mlp", "options": {}, "measures": ["train"],
               "settings": {"recipe": "mica-resnet20"}, "graphpai_version": __version__,
               "definitions_version": DEFINITIONS_VERSION, "method": "rpi", "budget": "erk",
               "compression": "100", "seed": 0}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert points[0].key == hashlib.sha256(text.encode()).hexdigest()[:20]
    assert parse_dsts(None) == [None] and parse_dsts("rigl,static") == ["rigl", None]
    with pytest.raises(StudyError, match="unknown DST mode"):
        parse_dsts("sst")
    with pytest.raises(StudyError, match="train"):
        grid(model="mlp", methods="rpi", compressions="1e2", dsts="set")
