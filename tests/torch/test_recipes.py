"""Recipes hold the published numbers (written here from the papers' text) and validate overrides."""

import dataclasses

import pytest

pytest.importorskip("torch")
from graphpai.errors import TrainError, UnknownMethodError  # noqa: E402
from graphpai.torch.recipes import RECIPES, get_recipe  # noqa: E402


def test_mica_recipes_match_the_protocol():
    vgg, resnet = RECIPES["mica-vgg16"], RECIPES["mica-resnet20"]
    for r in (vgg, resnet):
        assert (r.optimizer, r.nesterov, r.momentum, r.batch_size, r.epochs, r.val_fraction,
                r.milestones) == ("sgd", True, 0.9, 128, 160, 0.2, (60, 120))
    assert (vgg.lr, vgg.gamma, vgg.weight_decay) == (0.1, 0.1, 1e-4)
    assert (resnet.lr, resnet.gamma, resnet.weight_decay) == (0.01, 0.2, 5e-4)
    sf, npb = RECIPES["sf-cifar"], RECIPES["npb-cifar"]
    assert (sf.nesterov, sf.lr, sf.weight_decay, sf.val_fraction) == (True, 0.1, 1e-4, 0.0)
    assert (npb.nesterov, npb.lr, npb.weight_decay, npb.val_fraction) == (False, 0.1, 1e-4, 0.0)


def test_overrides_and_errors():
    r = get_recipe("mica-vgg16", epochs=5, lr=0.2, batch_size=None)
    assert (r.epochs, r.lr, r.batch_size) == (5, 0.2, 128)
    assert RECIPES["mica-vgg16"].epochs == 160
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.epochs = 3
    with pytest.raises(UnknownMethodError) as exc:
        get_recipe("mica-vgg19")
    assert all(name in str(exc.value) for name in RECIPES)
    with pytest.raises(TrainError, match="unknown recipe field"):
        get_recipe("mica-vgg16", epoch=3)
    for bad in (dict(epochs=0), dict(epochs=-1), dict(lr=0.0), dict(batch_size=0),
                dict(milestones=(120, 60)), dict(val_fraction=1.0), dict(optimizer="lbfgs")):
        with pytest.raises(TrainError):
            get_recipe("mica-resnet20", **bad)
