"""graphpai.prune: the registry, budget resolution, errors and the ``graphpai prune`` command."""

import json

import numpy as np
import pytest

from graphpai import prune as prune_module
from graphpai.budgets import epl, erk, from_mask, igq, uniform
from graphpai.errors import (BudgetError, DataError, GraphpaiError, ModelError,
                             UnknownMethodError)
from graphpai.generators import GENERATORS, register
from graphpai.graph import Group, Layer, NetGraph
from graphpai.masks import MaskSet
from graphpai.prune import prune, resolve_budget

NET = NetGraph([Group("x", 3), Group("h", 8), Group("y", 4)],
               [Layer("conv", "conv", (8, 3, 3, 3), "x", "h"),
                Layer("fc", "linear", (4, 8), "h", "y")], [], ["x"], ["y"])


def tiny_model():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.input_shape = (2, 5, 5)
    return model


@pytest.fixture
def scratch_method():
    """Register throw-away methods; remove them afterwards."""
    added = []

    def add(name, **kw):
        added.append(name)
        return register(name, **kw)

    yield add
    for name in added:
        GENERATORS.pop(name, None)


# ------------------------------------------------------------------------------ budgets by name
@pytest.mark.parametrize("name, fn", [("uniform", uniform), ("erk", erk), ("igq", igq), ("epl", epl)])
def test_rpi_with_named_budget(name, fn):
    masks = prune(NET, "rpi", budget=name, compression="10^1", seed=1)
    assert masks.counts() == fn(NET, 10).counts


def test_rpi_default_budget_is_erk_and_budget_objects_and_masks_work():
    assert prune(NET, "rpi", compression=5, seed=0).counts() == erk(NET, 5).counts
    b = igq(NET, 7)
    assert prune(NET, "rpi", budget=b, seed=0).counts() == b.counts
    mask = MaskSet({"conv": np.arange(216).reshape(8, 3, 3, 3) % 5 == 0, "fc": np.eye(4, 8)})
    assert prune(NET, "RPI", budget=mask, seed=0).counts() == mask.counts()  # from-mask


def test_rpi_x_takes_the_counts_of_method_x():
    model = tiny_model()
    magnitude = prune(model, "magnitude", compression=4)
    rpi_magnitude = prune(model, "rpi", budget="magnitude", compression=4, seed=3)
    assert rpi_magnitude.counts() == magnitude.counts()
    assert rpi_magnitude != magnitude
    b = resolve_budget(model, "magnitude", 4)
    assert b.method == "from-mask" and b.params["source"] == "magnitude"


def test_new_method_plugs_in_with_one_decorator(scratch_method):
    @scratch_method("firstk")
    def firstk(graph, budget, *, seed=None, reverse=False):
        out = {}
        for name, layer in graph.layers.items():
            flat = np.zeros(layer.numel, dtype=bool)
            flat[: budget.counts[name]] = True
            out[name] = (flat[::-1] if reverse else flat).reshape(layer.weight_shape)
        return MaskSet(out)

    masks = prune(NET, "firstk", budget="igq", compression=3, reverse=True)
    assert masks.counts() == igq(NET, 3).counts
    assert masks["fc"].ravel()[-1]
    assert "firstk" in str(pytest.raises(UnknownMethodError, prune, NET, "nope", compression=2).value)
    # and as a budget of another method (firstk with its default budget, ERK)
    assert prune(NET, "rpi", budget="firstk", compression=3).counts() == erk(NET, 3).counts


def test_generator_that_breaks_its_budget_is_caught(scratch_method):
    @scratch_method("greedy")
    def greedy(graph, budget, *, seed=None):
        return MaskSet.dense(graph)

    with pytest.raises(GraphpaiError, match="did not keep its budget"):
        prune(NET, "greedy", budget="uniform", compression=2)


def test_register_refuses_taken_names():
    with pytest.raises(ValueError):
        register("rpi")(lambda *a, **k: None)
    with pytest.raises(ValueError):
        register("erk")(lambda *a, **k: None)  # a budget name
    with pytest.raises(ValueError):
        register("x", kind="other")


# ------------------------------------------------------------------------------ errors
def test_unknown_method_and_budget_list_the_known_ones():
    with pytest.raises(UnknownMethodError) as err:
        prune(NET, "snipp", compression=2)
    assert "grasp, magnitude" in str(err.value) and "rpi" in str(err.value)
    with pytest.raises(UnknownMethodError) as err:
        prune(NET, "rpi", budget="erkk", compression=2)
    assert "epl, erk, igq, uniform" in str(err.value) and "snip" in str(err.value)


def test_issue_4_unknown_option_names_the_method_options():
    # was TypeError: rpi() got an unexpected keyword argument 'temperature'
    with pytest.raises(UnknownMethodError, match="'rpi' takes no option 'temperature'.*none"):
        prune(NET, "rpi", budget="erk", compression=4, temperature=3)
    with pytest.raises(UnknownMethodError, match="node_selection, num_classes, repair, device"):
        prune(NET, "mica", budget="erk", compression=4, mode="min")
    with pytest.raises(UnknownMethodError, match="'snip' takes no option 'iterations'"):
        prune(tiny_model(), "snip", compression=4, iterations=3)


@pytest.mark.parametrize("c", [0.5, 1e9, "abc"])
def test_bad_compression(c):
    with pytest.raises(BudgetError):
        prune(NET, "rpi", compression=c)


def test_missing_or_conflicting_compression():
    with pytest.raises(BudgetError, match="needs compression"):
        prune(NET, "rpi", budget="erk")
    with pytest.raises(BudgetError, match="leave compression out"):
        prune(NET, "rpi", budget=uniform(NET, 2), compression=2)


def test_ranking_method_needs_a_model_data_and_no_budget():
    model = tiny_model()
    with pytest.raises(ModelError, match="nn.Module"):
        prune(NET, "magnitude", compression=2)
    with pytest.raises(BudgetError, match="budget='snip'"):
        prune(model, "snip", budget="erk", compression=2)
    for method in ("snip", "grasp"):
        with pytest.raises(DataError, match="synthetic_batches"):
            prune(model, method, compression=2)
    with pytest.raises(DataError, match="synthetic_batches"):
        prune(model, "rpi", budget="grasp", compression=2)


def test_module_is_callable():
    assert prune_module(NET, "rpi", budget="uniform", compression=2, seed=0).counts() == \
        uniform(NET, 2).counts


# ------------------------------------------------------------------------------ CLI
def test_cli_prune_writes_masks_and_prints_table(tmp_path, capsys):
    from graphpai.cli import main

    out = tmp_path / "m.pt"
    assert main(["prune", "--model", "lenet5", "--method", "rpi", "--budget", "igq",
                 "--compression", "10^2", "--seed", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    masks = MaskSet.load(out)
    assert "layer" in text and "density" in text and f"kept {masks.kept():,}" in text
    from graphpai.torch import models
    from graphpai.torch.extract import to_graph

    assert masks.counts() == igq(to_graph(models.build("lenet5")), 100).counts
    # --json, a mask file as budget (from-mask)
    assert main(["prune", "--model", "lenet5", "--method", "rpi", "--budget", str(out),
                 "--out", str(tmp_path / "r.npz"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "rpi" and data["total"] == masks.kept()
    assert MaskSet.load(tmp_path / "r.npz").counts() == masks.counts()


def test_cli_prune_errors(tmp_path, capsys):
    from graphpai.cli import main

    out = str(tmp_path / "m.pt")
    assert main(["prune", "--model", "lenet5", "--method", "snip", "--compression", "10",
                 "--out", out]) == 2
    assert "--data synthetic" in capsys.readouterr().err
    assert main(["prune", "--model", "lenet5", "--method", "rpi", "--compression", "0.5",
                 "--out", out]) == 2
    assert "[1, 61470]" in capsys.readouterr().err
    assert main(["prune", "--model", "lenet5", "--method", "foo", "--compression", "10",
                 "--out", out]) == 2
    assert "known methods" in capsys.readouterr().err
    assert main(["prune", "--model", "lenet5", "--method", "snip", "--data", "synthetic",
                 "--compression", "1e1", "--out", out]) == 0
    assert MaskSet.load(out).kept() <= 6147
