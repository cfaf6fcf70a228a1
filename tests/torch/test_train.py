"""Masked training: learns, keeps masks exact on the parameters, resumes exactly, callbacks."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils import prune as torch_prune  # noqa: E402

from graphpai.errors import MaskError, TrainError, UnknownMethodError  # noqa: E402
from graphpai.torch.data import synthetic_data  # noqa: E402
from graphpai.torch.extract import prunable_modules  # noqa: E402
from graphpai.torch.train import Callback, train  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def convnet(seed=0, classes=10):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(64, classes))


def random_masks(model, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.random(tuple(m.weight.shape)) < density
            for name, m in prunable_modules(model).items()}


DATA = synthetic_data(10, (3, 12, 12), train_size=800, test_size=300, seed=0)
FAST = dict(device="cpu", progress=False, lr=0.05, batch_size=64, crop_padding=2)


def test_sparse_convnet_learns_and_masked_weights_are_zero():
    model = convnet()
    masks = random_masks(model)  # 10x compression
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    assert 9 < total / kept < 11
    init = {n: m.weight.detach().clone() for n, m in prunable_modules(model).items()}
    result = train(model, masks, DATA, recipe="mica-resnet20", epochs=4, **FAST)
    # accuracy measured here, not taken from the result: well above chance (0.1)
    model.eval()
    with torch.no_grad():
        x = DATA.test.normalize(DATA.test.images)
        acc = (model(x).argmax(1) == DATA.test.labels).float().mean().item()
    assert acc > 0.5
    assert result.final_test_acc == pytest.approx(acc, abs=1e-6)
    assert result.best_test_acc >= result.final_test_acc and result.epochs == 4
    for name, module in prunable_modules(model).items():
        mask = torch.as_tensor(masks[name])
        assert not hasattr(module, "weight_orig")  # a plain parameter, checked directly
        assert torch.all(module.weight[~mask] == 0)
        assert torch.all(module.weight[mask] != init[name][mask])  # the kept weights trained


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_masks_survive_weight_decay_momentum_and_optimizers(optimizer):
    model = convnet(1)
    masks = random_masks(model, 0.3, seed=1)
    train(model, masks, DATA, epochs=1, optimizer=optimizer, weight_decay=0.05,
          **{**FAST, "lr": 0.01})
    for name, module in prunable_modules(model).items():
        assert torch.all(module.weight[~torch.as_tensor(masks[name])] == 0)


def test_one_step_equals_torch_prune_reparametrisation():
    """Oracle: torch.nn.utils.prune's weight_orig * mask with a hand-built SGD step."""
    data = synthetic_data(4, (3, 6, 6), train_size=40, test_size=0, val_fraction=0.0, seed=4)
    ours, theirs = convnet(2, 4), convnet(2, 4)
    masks = random_masks(ours, 0.4, seed=2)
    train(ours, masks, data, epochs=1, batch_size=40, augment=False, lr=0.1,
          weight_decay=1e-3, device="cpu", progress=False)
    for name, module in prunable_modules(theirs).items():
        torch_prune.custom_from_mask(module, "weight", torch.as_tensor(masks[name]))
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=1e-3)
    theirs.train()
    loss = F.cross_entropy(theirs(data.train.normalize(data.train.images)), data.train.labels)
    loss.backward()
    optimizer.step()
    for name, module in prunable_modules(theirs).items():
        expected = (module.weight_orig * module.weight_mask).detach()
        got = prunable_modules(ours)[name].weight.detach()
        assert torch.allclose(got, expected, atol=1e-6)


def test_same_seed_same_weights_and_resume_is_exact(tmp_path):
    a, b, c = convnet(3), convnet(3), convnet(3)
    masks = random_masks(a, 0.2, seed=3)
    full = train(a, masks, DATA, epochs=3, seed=7, **FAST)
    train(b, masks, DATA, epochs=1, seed=7, checkpoint_dir=tmp_path, **FAST)  # interrupted
    resumed = train(c, masks, DATA, epochs=3, seed=7, checkpoint_dir=tmp_path, **FAST)
    assert resumed.resumed_from == 1 and resumed.epochs == 3
    for (k, x), (_, y) in zip(a.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), k
    assert [e.test_acc for e in resumed.history] == [e.test_acc for e in full.history]
    other = convnet(3)
    train(other, masks, DATA, epochs=1, seed=8, **FAST)
    again = convnet(3)
    train(again, masks, DATA, epochs=1, seed=7, **FAST)
    assert not torch.equal(other[0].weight, again[0].weight)
    with pytest.raises(TrainError, match="other settings"):
        train(convnet(3), masks, DATA, epochs=3, seed=7, checkpoint_dir=tmp_path,
              **{**FAST, "lr": 0.2})


class Recorder(Callback):
    def __init__(self):
        self.steps, self.epochs, self.dense_grad, self.info = [], [], False, None

    def on_train_begin(self, info):
        self.info = info

    def on_backward(self, step, model, masks, optimizer):
        grad = masks.weight("0").grad
        self.dense_grad |= bool((grad[~masks["0"]] != 0).any())

    def on_step(self, step, model, masks, optimizer):
        self.steps.append(step)

    def on_epoch_end(self, epoch, model, masks, optimizer, result):
        self.epochs.append((epoch, result.epochs))
        if epoch == 1:  # a DST-like swap: drop the kept weights of layer 0, grow the others
            masks.update({"0": ~masks["0"]})


def test_callbacks_and_mask_update():
    model = convnet(4)
    masks = random_masks(model, 0.5, seed=4)
    rec = Recorder()
    train(model, masks, DATA, epochs=2, callbacks=[rec], **FAST)
    per_epoch = rec.info.steps_per_epoch
    assert per_epoch == 10 and rec.info.total_steps == 20  # 640 training images, batch 64
    assert rec.steps == list(range(1, 21)) and rec.epochs == [(1, 1), (2, 2)]
    assert rec.dense_grad
    new = ~torch.as_tensor(masks["0"])
    assert torch.all(model[0].weight[~new] == 0) and torch.any(model[0].weight[new] != 0)
    from graphpai.torch.train import TrainMasks

    with pytest.raises(MaskError, match="has shape"):
        TrainMasks({"0": model[0].weight}, {"0": new}).update({"0": torch.ones(2, 2)})


def test_bad_input():
    model = convnet()
    with pytest.raises(MaskError, match="unknown layer"):
        train(model, {"nope": np.ones(3)}, DATA, epochs=1, **FAST)
    with pytest.raises(MaskError, match="has shape"):
        train(model, {"0": np.ones((2, 2))}, DATA, epochs=1, **FAST)
    with pytest.raises(TrainError, match="positive whole number"):
        train(model, None, DATA, epochs=0, **FAST)
    with pytest.raises(UnknownMethodError, match="mica-resnet20"):
        train(model, None, DATA, recipe="nope", **FAST)
    with pytest.raises(TrainError, match="data has 10 classes"):
        train(convnet(classes=3), None, DATA, epochs=1, **FAST)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing to refuse")
def test_cuda_requested_without_cuda():
    with pytest.raises(TrainError) as exc:
        train(convnet(), None, DATA, epochs=1, device="cuda", progress=False)
    assert "no CUDA GPU" in str(exc.value) and "--device cpu" in str(exc.value)


def test_prune_buffers_are_the_masks():
    model = convnet(5)
    masks = random_masks(model, 0.3, seed=5)
    for name, module in prunable_modules(model).items():
        torch_prune.custom_from_mask(module, "weight", torch.as_tensor(masks[name]))
    train(model, None, DATA, epochs=1, **FAST)
    for name, module in prunable_modules(model).items():
        assert torch.all(module.weight[~torch.as_tensor(masks[name])] == 0)
        assert isinstance(module.weight, nn.Parameter)
    copy.deepcopy(model)  # a plain model again
