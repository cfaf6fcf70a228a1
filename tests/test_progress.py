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


def _tiny_model():
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    model.input_shape = (1, 4, 4)
    return model


@pytest.mark.parametrize("method,desc", [("snip", "snip"), ("grasp", "grasp"),
                                         ("synflow", "synflow"), ("mica", "mica")])
def test_long_jobs_draw_a_bar_only_on_a_terminal(monkeypatch, method, desc):
    """Issue 13 item 13: SNIP, GraSP, SynFlow and MiCA take progress= and draw on stderr."""
    import graphpai
    from graphpai.torch.data import synthetic_batches

    model = _tiny_model()
    kwargs = {"data": synthetic_batches((1, 4, 4), 3, batch_size=6, seed=0)} \
        if method in ("snip", "grasp") else {}
    kwargs["budget"] = "erk" if method == "mica" else None
    for tty, shown in [(True, True), (False, False)]:
        err = _TTY() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        graphpai.prune(model, method, compression=3, seed=0, progress=True, **kwargs)
        assert (desc in err.getvalue()) == shown, (tty, err.getvalue())
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    graphpai.prune(model, method, compression=3, seed=0, progress=False, **kwargs)
    assert err.getvalue() == ""


def test_audit_draws_its_rows_and_passes_the_flag_to_an_engine_that_takes_it(monkeypatch):
    import graphpai
    import graphpai.engine as engine
    import graphpai.torch.spatial as torch_engine

    seen = []

    class Engine:
        def activity(self, graph, masks, *, active=None, device="cpu", progress=False):
            seen.append(progress)
            return torch_engine.activity(graph, masks, active=active, device=device)

        def log10_paths(self, graph, masks, **kwargs):  # takes no progress: gets none
            assert "progress" not in kwargs
            return torch_engine.log10_paths(graph, masks, **kwargs)

    graph = graphpai.to_graph(_tiny_model())
    err = _TTY()
    monkeypatch.setattr(sys, "stderr", err)
    before = engine.set_spatial_engine(Engine())
    try:
        graphpai.audit(graph, semantics="spatial", progress=True)
        graphpai.paths(graph, progress=True)
    finally:
        engine.set_spatial_engine(before)
    assert seen == [True, True] and "audit" in err.getvalue()
