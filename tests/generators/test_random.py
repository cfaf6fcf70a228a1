"""RPI (docs/definitions.md#rpi): exact per-layer counts, placed by a seeded random
permutation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphpai.budgets import erk, uniform
from graphpai.generators import rpi
from graphpai.graph import Group, Layer, NetGraph

NET = NetGraph([Group("x", 3), Group("h", 4), Group("y", 5)],
               [Layer("conv", "conv", (4, 3, 3, 3), "x", "h"),
                Layer("fc", "linear", (5, 4), "h", "y")], [], ["x"], ["y"])


@given(st.floats(1, 128), st.integers(0, 2**32))
def test_rpi_keeps_exactly_the_budget(c, seed):
    budget = erk(NET, c)
    masks = rpi(NET, budget, seed=seed)
    assert masks.counts() == budget.counts
    assert all(masks[k].shape == layer.weight_shape for k, layer in NET.layers.items())


def test_rpi_is_the_prefix_of_a_permutation():
    # the algorithm, written out: one numpy Generator, layers in graph order
    budget = uniform(NET, 3)
    rng = np.random.default_rng(42)
    expected = {}
    for name, layer in NET.layers.items():
        flat = np.zeros(layer.numel, dtype=bool)
        flat[rng.permutation(layer.numel)[: budget.counts[name]]] = True
        expected[name] = flat.reshape(layer.weight_shape)
    assert rpi(NET, budget, seed=42) == expected
    assert rpi(NET, budget, seed=np.random.default_rng(42)) == expected


def test_rpi_same_seed_same_mask_other_seed_other_mask():
    budget = uniform(NET, 2)
    assert rpi(NET, budget, seed=7) == rpi(NET, budget, seed=7)
    assert rpi(NET, budget, seed=7) != rpi(NET, budget, seed=8)


def test_rpi_is_uniform_over_subsets():
    # one 6-weight layer keeping 2: each of the 15 pairs has probability 1/15
    net = NetGraph([Group("x", 3), Group("y", 2)], [Layer("fc", "linear", (2, 3), "x", "y")],
                   [], ["x"], ["y"])
    budget = uniform(net, 3)
    rng = np.random.default_rng(0)
    pairs = {}
    trials = 3000
    for _ in range(trials):
        key = tuple(np.flatnonzero(rpi(net, budget, seed=rng)["fc"].ravel()))
        pairs[key] = pairs.get(key, 0) + 1
    assert len(pairs) == 15
    counts = np.array(list(pairs.values()))
    chi2 = ((counts - trials / 15) ** 2 / (trials / 15)).sum()
    assert chi2 < 36.1  # 14 degrees of freedom, p = 0.001


def test_rpi_zero_and_full_layers():
    budget = uniform(NET, NET.num_weights)  # floor(108/128) = 0, floor(20/128) = 0
    masks = rpi(NET, budget, seed=0)
    assert masks.kept() == 0
    assert rpi(NET, uniform(NET, 1), seed=0).kept() == NET.num_weights
