"""Dynamic sparse training: exact masks through SET/RigL updates, RigL vs a direct computation,
SET uniform and seeded, cosine schedule, optimizer state reset, exact resume."""

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

from graphpai.errors import TrainError  # noqa: E402
from graphpai.torch.data import synthetic_data  # noqa: E402
from graphpai.torch.dst import (DynamicSparsity, drop_fraction_at, gradient_regrow,  # noqa: E402
                                initial_masks, magnitude_drop, random_regrow)
from graphpai.torch.extract import prunable_modules  # noqa: E402
from graphpai.torch.train import Callback, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = synthetic_data(4, (3, 6, 6), train_size=160, test_size=40, seed=3)
FAST = dict(device="cpu", progress=False, lr=0.05, batch_size=16, augment=False)


def mlp(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(108, 40), nn.Tanh(), nn.Linear(40, 24),
                             nn.Tanh(), nn.Linear(24, 4))


def masks_of(model, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.random(tuple(m.weight.shape)) < density
            for name, m in prunable_modules(model).items()}


class Watch(Callback):
    """Checks, on every forward pass, that pruned weights are exactly 0 and, after every update
    (placed after the DST callback), that counts are unchanged, regrown weights are 0 and the
    momentum of changed weights is 0."""

    def __init__(self, model, masks):
        self.modules = prunable_modules(model)
        self.prev = {n: torch.as_tensor(m).clone() for n, m in masks.items()}
        self.live = None
        self.forwards = self.updates = 0
        self.counts = {n: int(m.sum()) for n, m in self.prev.items()}
        for name, module in self.modules.items():
            module.register_forward_pre_hook(self._hook(name))

    def _hook(self, name):
        def check(module, inputs):
            mask = self.live[name] if self.live is not None else self.prev[name]
            assert torch.all(module.weight[~mask] == 0), f"pruned weight nonzero in {name}"
            self.forwards += 1
        return check

    def on_backward(self, step, model, masks, optimizer):
        self.live = masks

    def on_step(self, step, model, masks, optimizer):
        changed_any = False
        for name in masks:
            mask, old = masks[name], self.prev[name]
            assert int(mask.sum()) == self.counts[name]
            if torch.equal(mask, old):
                continue
            changed_any = True
            weight = masks.weight(name)
            assert torch.all(weight[mask & ~old] == 0)  # regrown weights join at 0
            buffers = [v for v in optimizer.state[weight].values()
                       if isinstance(v, torch.Tensor) and v.shape == weight.shape]
            assert buffers  # momentum, or Adam's two moments
            for buffer in buffers:
                assert torch.all(buffer[mask ^ old] == 0)
                assert torch.all(buffer[~mask] == 0)
        self.updates += changed_any
        self.prev = {n: masks[n].clone() for n in masks}


@pytest.mark.parametrize("method,optimizer", [("set", "sgd"), ("rigl", "sgd"),
                                              ("rigl", "adam")])
def test_counts_constant_pruned_zero_every_forward_regrown_zero(method, optimizer):
    model = mlp()
    masks = masks_of(model)
    watch = Watch(model, masks)
    dst = DynamicSparsity(method, update_every=5, drop_fraction=0.4, stop_fraction=0.8)
    train(model, masks, DATA, epochs=3, momentum=0.9, weight_decay=1e-3, callbacks=[dst, watch],
          optimizer=optimizer, **{**FAST, "lr": 0.05 if optimizer == "sgd" else 0.005})
    steps = 3 * 8  # 128 training images / 16
    expected = [s for s in range(5, steps + 1, 5) if s < 0.8 * steps]
    assert [u.step for u in dst.history] == expected
    assert watch.updates == len(expected) and watch.forwards > 3 * steps
    for update in dst.history:  # the check of every update, recorded
        assert update.kept == watch.counts
        assert update.dropped == update.regrown
        assert update.changed > 0
        assert update.drop_fraction == pytest.approx(
            0.4 / 2 * (1 + math.cos(math.pi * update.step / (0.8 * steps))))
    for name, module in prunable_modules(model).items():  # on the parameters at the end
        assert torch.all(module.weight[~watch.prev[name]] == 0)


def test_cosine_schedule_by_hand():
    assert drop_fraction_at(0, drop_fraction=0.5, end_step=10) == 0.5
    assert drop_fraction_at(5, drop_fraction=0.5, end_step=10) == pytest.approx(0.25)
    assert drop_fraction_at(10, drop_fraction=0.5, end_step=10) == 0.0
    assert drop_fraction_at(12, drop_fraction=0.5, end_step=10) == 0.0
    # cos(pi/3) = 1/2: f = 0.3 / 2 * 1.5
    assert drop_fraction_at(2, drop_fraction=0.3, end_step=6) == pytest.approx(0.225)


def test_magnitude_drop_and_gradient_regrow_by_hand():
    w = torch.tensor([[0.5, -0.1, 0.0], [2.0, -0.3, 0.2]])
    m = torch.tensor([[True, True, False], [True, True, False]])
    dropped = magnitude_drop(w, m, 2)  # |w| of the kept: .5 .1 2 .3 -> drop .1 and .3
    assert dropped.tolist() == [[True, False, False], [True, False, False]]
    g = torch.tensor([[9.0, 1.0, -3.0], [9.0, 2.0, 0.5]])
    grown = gradient_regrow(dropped, g, 2)  # inactive |g|: 1, 3, 2, .5 -> 3 and 2
    assert grown.tolist() == [[True, False, True], [True, True, False]]


class RigLOracle(Callback):
    """Before the DST callback: the expected RigL mask from numpy (argsort of |w| and |g|)."""

    def __init__(self, dst):
        self.dst, self.expected, self.grads, self.checked = dst, None, None, 0

    def on_backward(self, step, model, masks, optimizer):
        self.grads = {n: masks.weight(n).grad.detach().numpy().copy() for n in masks}

    def on_step(self, step, model, masks, optimizer):
        if not self.dst.is_update_step(step):
            return
        f = self.dst.fraction(step)
        self.expected = {}
        for name in masks:
            w = masks.weight(name).detach().numpy().ravel()
            m = masks[name].numpy().ravel().copy()
            g = np.abs(self.grads[name].ravel())
            k = int(math.floor(f * m.sum()))
            active = np.flatnonzero(m)
            m[active[np.argsort(np.abs(w[active]))[:k]]] = False
            inactive = np.flatnonzero(~m)
            m[inactive[np.argsort(-g[inactive])[:k]]] = True
            self.expected[name] = m.reshape(masks[name].shape)


class Compare(Callback):
    def __init__(self, oracle):
        self.oracle = oracle

    def on_step(self, step, model, masks, optimizer):
        if self.oracle.expected is not None:
            for name, m in self.oracle.expected.items():
                np.testing.assert_array_equal(masks[name].numpy(), m)
            self.oracle.expected = None
            self.oracle.checked += 1


def test_rigl_regrows_largest_gradient_inactive_weights():
    model = mlp(1)
    masks = masks_of(model, 0.2, seed=1)
    dst = DynamicSparsity("rigl", update_every=3, drop_fraction=0.5, stop_fraction=1.0)
    oracle = RigLOracle(dst)
    train(model, masks, DATA, epochs=2, callbacks=[oracle, dst, Compare(oracle)], **FAST)
    assert oracle.checked == len(dst.history) == 5
    assert all(u.changed > 0 for u in dst.history)


def test_set_regrowth_is_uniform_chi_square():
    from scipy.stats import chisquare

    mask = torch.zeros(60, dtype=torch.bool)
    mask[:20] = True  # 40 inactive positions, 10 drawn each time
    generator = torch.Generator().manual_seed(0)
    counts = np.zeros(60)
    draws = 2000
    for _ in range(draws):
        grown = random_regrow(mask, 10, generator)
        assert torch.all(grown[:20]) and int(grown.sum()) == 30
        counts += (grown & ~mask).numpy()
    observed = counts[20:]
    assert observed.sum() == 10 * draws
    assert chisquare(observed).pvalue > 1e-3  # expected 500 each
    # a biased draw (only the first 30 inactive positions) is rejected by the same test
    biased = np.concatenate([np.full(30, 10 * draws / 30), np.zeros(10)])
    assert chisquare(biased).pvalue < 1e-6


def test_set_is_seeded():
    def run(seed):
        model = mlp(2)
        dst = DynamicSparsity("set", update_every=4, drop_fraction=0.3, seed=seed)
        train(model, masks_of(model, 0.3, 2), DATA, epochs=1, callbacks=[dst], **FAST)
        assert dst.history
        return np.concatenate([(m.weight != 0).numpy().ravel()
                               for m in prunable_modules(model).values()])

    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_dense_layer_and_bad_settings():
    model = mlp(3)
    masks = masks_of(model, 0.3, 3)
    masks["1"] = np.ones((40, 108), bool)  # a dense layer has nothing to regrow into: unchanged
    dst = DynamicSparsity("set", update_every=2, drop_fraction=0.3)
    train(model, masks, DATA, epochs=1, callbacks=[dst], **FAST)
    assert all(u.dropped["1"] == 0 for u in dst.history) and dst.history
    for bad in [dict(method="snip"), dict(update_every=0), dict(drop_fraction=1.0),
                dict(stop_fraction=0.0)]:
        with pytest.raises(TrainError):
            DynamicSparsity(**{"method": "set", **bad})


class Stop(Callback):
    def on_epoch_end(self, epoch, model, masks, optimizer, result):
        if epoch == 2:
            raise KeyboardInterrupt  # after epoch 1's checkpoint, before epoch 2's


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_resume_after_an_update_gives_the_same_masks_and_weights(tmp_path, method):
    def fresh():
        model = mlp(4)
        return model, masks_of(model, 0.3, 4)

    def dst():
        return DynamicSparsity(method, update_every=3, drop_fraction=0.3, stop_fraction=1.0)

    model, masks = fresh()
    full = dst()
    train(model, masks, DATA, epochs=3, callbacks=[full], **FAST)

    model2, masks2 = fresh()
    first = dst()
    with pytest.raises(KeyboardInterrupt):
        train(model2, masks2, DATA, epochs=3, checkpoint_dir=tmp_path, callbacks=[first, Stop()],
              **FAST)
    assert 0 < len(first.history) < len(full.history)  # stopped after an update
    model3, masks3 = fresh()
    second = dst()
    result = train(model3, masks3, DATA, epochs=3, checkpoint_dir=tmp_path, callbacks=[second],
                   **FAST)
    assert result.resumed_from == 1
    assert second.history == full.history
    for (n, a), b in zip(model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), n

    other = DynamicSparsity(method, update_every=4, drop_fraction=0.3, stop_fraction=1.0)
    with pytest.raises(TrainError, match="other DST settings"):
        train(fresh()[0], masks3, DATA, epochs=3, checkpoint_dir=tmp_path, callbacks=[other],
              **FAST)


def test_dst_refuses_a_static_checkpoint(tmp_path):
    model = mlp(5)
    masks = masks_of(model, 0.3, 5)
    train(copy.deepcopy(model), masks, DATA, epochs=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(TrainError, match="without dynamic sparse training"):
        train(model, masks, DATA, epochs=2, checkpoint_dir=tmp_path,
              callbacks=[DynamicSparsity("set", update_every=2)], **FAST)


def test_initial_masks_default_to_random_erk():
    from graphpai.budgets import make_budget
    from graphpai.torch.extract import to_graph

    model = mlp(6)
    masks = initial_masks(model, 10, input_shape=(3, 6, 6), seed=0)
    graph = to_graph(model, (3, 6, 6))
    assert masks.counts() == make_budget(graph, "erk", 10).counts
    assert initial_masks(model, 10, input_shape=(3, 6, 6), seed=0) == masks
    assert initial_masks(model, 10, method="magnitude", input_shape=(3, 6, 6)).kept() \
        == pytest.approx(masks.kept(), rel=0.05)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.floats(0.05, 0.95), st.floats(0.0, 1.0), st.integers(0, 2 ** 31))
def test_drop_and_regrow_keep_the_count_and_touch_only_allowed_positions(n, density, f, seed):
    rng = np.random.default_rng(seed)
    mask = torch.as_tensor(rng.random((n, 3)) < density)
    weight = torch.as_tensor(rng.normal(size=(n, 3))) * mask
    grad = torch.as_tensor(rng.normal(size=(n, 3)))
    k = int(f * int(mask.sum()))
    dropped = magnitude_drop(weight, mask, k)
    assert int(dropped.sum()) == int(mask.sum()) - k and not torch.any(dropped & ~mask)
    if k and int(dropped.sum()):  # every dropped weight is no larger than every kept one
        assert weight[mask & ~dropped].abs().max() <= weight[dropped].abs().min()
    for grown in (random_regrow(dropped, k, torch.Generator().manual_seed(seed)),
                  gradient_regrow(dropped, grad, k)):
        assert int(grown.sum()) == int(mask.sum()) and torch.all(grown[dropped])
    grown = gradient_regrow(dropped, grad, k)
    new = grown & ~dropped
    if k and bool((~grown).any()):  # every regrown |g| is at least every still-inactive |g|
        assert grad[new].abs().min() >= grad[~grown].abs().max()


def test_fast_top_k_equals_torch_topk_on_big_layers():
    from graphpai.torch.dst import _largest

    g = torch.Generator().manual_seed(0)
    n = 300_000
    inactive = torch.rand(n, generator=g) < 0.9
    cases = {"continuous": torch.randn(n, generator=g).abs(),
             "sorted": torch.linspace(0, 1, n),  # structure the strided sample sees
             "few values": torch.randint(0, 4, (n,), generator=g).float()}
    for name, values in cases.items():
        score = values.masked_fill(~inactive, -math.inf)
        for k in (1, 500, 5000):
            got = _largest(score, k)
            assert len(set(got.tolist())) == k and bool(torch.all(inactive[got])), name
            kth = torch.topk(score, k).values[-1]
            assert bool(torch.all(score[got] >= kth)), (name, k)  # the k largest (ties aside)
            if name != "few values":
                assert set(got.tolist()) == set(torch.topk(score, k).indices.tolist())
