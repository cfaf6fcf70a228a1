"""graphpai._results: atomic writes with the umask's mode, and clear errors for bad paths."""

from __future__ import annotations

import os
import stat

import pytest

from graphpai._results import atomic_path, check_writable
from graphpai.errors import GraphpaiError, OutputError
from graphpai.masks import MaskSet
from graphpai.report.tables import write_json


@pytest.fixture
def umask():
    def set_mask(mask):
        old = os.umask(mask)
        restore.append(old)

    restore = []
    yield set_mask
    for old in reversed(restore):
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_get_the_mode_a_plain_open_gives(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as fh:
        fh.write("x")
    expected = stat.S_IMODE(os.stat(plain).st_mode)
    assert expected == 0o666 & ~mask
    write_json({"a": 1}, tmp_path / "r.json")
    MaskSet({"a": [[1, 0]]}).save(tmp_path / "m.npz")
    for name in ("r.json", "m.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name


def test_a_directory_target_is_an_output_error_and_leaves_nothing(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        write_json({}, tmp_path / "d")
    assert os.listdir(tmp_path / "d") == []


def test_a_path_under_a_regular_file_is_an_output_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_writable(tmp_path / "f" / "sub" / "r.json")
    with pytest.raises(GraphpaiError):
        with atomic_path(tmp_path / "f" / "r.json"):
            pass


def read_only_directory(tmp_path):
    """A directory this process cannot write in: a 0500 folder, or /sys for root (which ignores
    permission bits but not a read-only file system)."""
    if os.geteuid() == 0:
        return "/sys"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return str(ro)


def test_a_read_only_directory_is_an_output_error(tmp_path):
    ro = read_only_directory(tmp_path)
    with pytest.raises(OutputError, match="cannot write"):
        write_json({}, os.path.join(ro, "r.json"))


def test_missing_folders_are_created(tmp_path):
    write_json({"a": 1}, tmp_path / "x" / "y" / "r.json")
    assert (tmp_path / "x" / "y" / "r.json").read_text().startswith("{")
