"""The one progress-bar rule: stderr only, on when asked and stderr is a terminal."""

import io
import sys

import pytest

from graphpai import _progress


class _TTY(io.StringIO):
    def isatty(self):
        return True


def test_off_when_not_asked_or_not_a_terminal(monkeypatch):
    items = [1, 2, 3]
    monkeypatch.setattr(sys, "stderr", _TTY())
    assert _progress.bar(items, False) is items            # not asked
    monkeypatch.setattr(sys, "stderr", io.StringIO())      # a pipe / log file
    assert _progress.bar(items, True) is items
    assert not _progress.should_show(True)
    off = _progress.bar(None, True, total=3)
    with off as b:
        b.update(2)
        b.set_postfix(x=1)
    assert list(off) == [] and off.n == 2


def test_on_a_terminal_the_bar_goes_to_stderr_not_stdout(monkeypatch, capsys):
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    assert _progress.should_show(True)
    out = list(_progress.bar(range(4), True, desc="unit-test", mininterval=0))
    assert out == [0, 1, 2, 3]
    assert "unit-test" in err.getvalue() and "4/4" in err.getvalue()
    assert capsys.readouterr().out == ""


def test_closed_stream_counts_as_no_terminal(monkeypatch):
    s = io.StringIO()
    s.close()
    monkeypatch.setattr(sys, "stderr", s)
    assert not _progress.should_show(True)


def test_write_goes_to_stderr(monkeypatch, capsys):
    _progress.write("hello", progress=True)
    captured = capsys.readouterr()
    assert captured.err.strip() == "hello" and captured.out == ""
