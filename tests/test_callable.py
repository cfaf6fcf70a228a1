"""Callable modules (graphpai/_callable.py) show their function's real signature."""

import inspect

import pytest

import graphpai
from graphpai.paths import paths
from graphpai.prune import prune
from graphpai.spectral import spectral


@pytest.mark.parametrize("module, func", [(graphpai.prune, prune), (graphpai.spectral, spectral),
                                          (graphpai.paths, paths)])
def test_signature_is_the_functions(module, func):
    sig = inspect.signature(module)
    assert sig == inspect.signature(func)
    assert "*args" not in str(sig) and list(sig.parameters)[0] in ("net", "net_or_model")
