"""Test configuration: a deterministic hypothesis profile by default, and shared fixtures.

Set GRAPHPAI_HYPOTHESIS=long for a longer randomised run.
"""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=25)
settings.register_profile("long", database=None, deadline=None, max_examples=500)
settings.load_profile(os.environ.get("GRAPHPAI_HYPOTHESIS", "ci"))


@pytest.fixture
def pool_sizes(monkeypatch):
    """``pool_sizes(module)`` returns a list that records the worker count of every
    ``ThreadPoolExecutor`` that `module` creates from then on."""
    def watch(module):
        sizes, real = [], module.ThreadPoolExecutor

        def spy(workers):
            sizes.append(workers)
            return real(workers)

        monkeypatch.setattr(module, "ThreadPoolExecutor", spy)
        return sizes

    return watch
