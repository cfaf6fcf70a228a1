"""The torch thread policy (issue 13 item 14): free cores by default, --threads N exactly."""

import pytest
import torch

from graphpai.errors import GraphpaiError
from graphpai.torch import threads


def test_free_cores_is_cores_minus_load_at_least_one():
    assert threads.free_cores(cores=2, load=4.3) == 1          # the loaded 2-core machine
    assert threads.free_cores(cores=2, load=0.4) == 2
    assert threads.free_cores(cores=16, load=3.6) == 12
    assert threads.free_cores(cores=8, load=-1) == 8           # never above the cores


def test_default_never_raises_threads_and_explicit_wins(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 1)
    assert threads.policy_threads(None, current=8) == 1
    assert threads.policy_threads(None, current=1) == 1
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 6)
    assert threads.policy_threads(None, current=2) == 2       # the user's lower choice stays
    assert threads.policy_threads(5, current=2) == 5
    for bad in (0, -1, 1.5, True):
        with pytest.raises(GraphpaiError, match="whole number"):
            threads.policy_threads(bad)


def test_blocks_restore_and_an_explicit_outer_choice_survives_nesting(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 1)
    with threads.torch_threads(2) as outer:
        assert outer == torch.get_num_threads() == 2
        with threads.torch_threads() as inner:                  # a scorer's default block
            assert inner == torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with threads.torch_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_scorers_run_under_the_policy_and_leave_torch_as_it_was(monkeypatch):
    import graphpai
    from graphpai.torch import models

    seen = []
    real = threads.policy_threads

    def spy(t=None, current=None):
        out = real(t, current)
        seen.append(out)
        return out

    monkeypatch.setattr(threads, "policy_threads", spy)
    monkeypatch.setattr(threads, "free_cores", lambda *a, **k: 1)
    before = torch.get_num_threads()
    graphpai.prune(models.build("lenet300_100", seed=0), "synflow", compression=10, iterations=2)
    assert seen == [1] and torch.get_num_threads() == before
