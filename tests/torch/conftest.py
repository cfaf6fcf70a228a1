"""Fixtures of the torch adapter tests."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread (small training runs are faster and repeatable so)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
