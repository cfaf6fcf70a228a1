"""Ranking scores (docs/definitions.md#ranking) against explicit autograd and closed forms
written in the test."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils import prune as torch_prune  # noqa: E402

from graphpai.errors import DataError, ModelError  # noqa: E402
from graphpai.prune import prune  # noqa: E402
from graphpai.torch.data import synthetic_batches  # noqa: E402
from graphpai.torch.scores import (grasp_scores, magnitude_scores, snip_scores,  # noqa: E402
                                   synflow_masks, synflow_scores)


def mlp(bias=True, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(5, 4, bias=bias), nn.ReLU(), nn.Linear(4, 3, bias=bias))
    model.input_shape = (5,)
    return model


def convnet(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Dropout(0.5), nn.Conv2d(4, 4, 3, padding=1, bias=False),
                              nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 3))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # statistics that |.| or a train step would change
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.data.normal_()
                m.bias.data.normal_()
    model.input_shape = (2, 5, 5)
    return model


def forward(params, x):
    """The MLP written out: relu(x W1^T + b1) W2^T + b2."""
    w1, b1, w2, b2 = params
    return F.relu(x @ w1.T + b1) @ w2.T + b2


def leaves(model):
    return [p.detach().clone().requires_grad_(True) for p in
            (model[0].weight, model[0].bias, model[2].weight, model[2].bias)]


BATCHES = synthetic_batches((5,), num_classes=3, batch_size=6, num_batches=2, seed=1)


# ------------------------------------------------------------------------------ scores
def test_snip_equals_explicit_autograd():
    model = mlp()
    params = leaves(model)
    loss = sum(F.cross_entropy(forward(params, x), y) for x, y in BATCHES)
    g1, g2 = torch.autograd.grad(loss, [params[0], params[2]])
    scores = snip_scores(model, BATCHES)
    np.testing.assert_allclose(scores["0"], (params[0] * g1).abs().detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores["2"], (params[2] * g2).abs().detach().numpy(), rtol=1e-5)
    # [SF] sums dL/dm over the batches, then takes |.|; the test data tell that from the sum of
    # per-batch |w dL_b/dw| (some gradients change sign between the two batches)
    per_batch = sum((params[0] * torch.autograd.grad(F.cross_entropy(forward(params, x), y),
                                                     params[0])[0]).abs() for x, y in BATCHES)
    assert not np.allclose(scores["0"], per_batch.detach().numpy(), rtol=1e-3)


def explicit_scores(model, objective):
    """|w * d objective(model)/dw| of the conv/linear weights on a float64 eval copy, written
    out with autograd; `objective` may rewrite the copy first (e.g. |.| of everything)."""
    clone = copy.deepcopy(model).double().eval()
    weights = {name: m.weight for name, m in clone.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))}
    value = objective(clone)
    grads = torch.autograd.grad(value, list(weights.values()))
    return {name: (w * g).abs().detach().numpy() for (name, w), g in zip(weights.items(), grads)}


def test_synflow_takes_abs_of_every_parameter_and_buffer():
    # BatchNorm with negative running means, weights and biases: R = sum(f(1)) is computed on a
    # copy whose every parameter and buffer is |.|, in eval mode (running statistics)
    model = convnet().train()

    def flow(clone):
        with torch.no_grad():
            for t in list(clone.parameters()) + list(clone.buffers()):
                t.abs_()
        return clone(torch.ones((1, 2, 5, 5), dtype=torch.float64)).sum()

    want = explicit_scores(model, flow)
    got = synflow_scores(model)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10)
    assert (model[1].running_mean < 0).any()  # the buffers matter, and stay signed


def test_snip_scores_in_eval_mode():
    # the model is in train mode with Dropout and BatchNorm: scoring uses eval mode ([SF])
    model = convnet().train()
    batches = synthetic_batches((2, 5, 5), num_classes=3, batch_size=4, num_batches=2, seed=2)

    def loss(clone):
        return sum(F.cross_entropy(clone(x.double()), y) for x, y in batches)

    want = explicit_scores(model, loss)
    got = snip_scores(model, batches)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-6)
    assert model.training


def test_grasp_equals_weight_times_hessian_gradient_product():
    model = mlp()
    p = leaves(model)
    b1, b2 = p[1].detach(), p[3].detach()

    def loss(w1, w2):
        return sum(F.cross_entropy(forward((w1, b1, w2, b2), x) / 200, y) for x, y in BATCHES)

    g = torch.autograd.grad(loss(p[0], p[2]), [p[0], p[2]])
    _, (h1, h2) = torch.autograd.functional.hvp(loss, (p[0].detach(), p[2].detach()), g)
    scores = grasp_scores(model, BATCHES)
    for got, w, hg in ((scores["0"], p[0], h1), (scores["2"], p[2], h2)):
        want = (w.detach() * hg).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    assert (scores["0"] < 0).any() or (scores["2"] < 0).any()  # signed: keep the largest


def test_synflow_equals_closed_form():
    # linearised MLP: R = 1^T |W2| (|W1| 1 + |b1|) + 1^T |b2|, so
    # dR/dW1[i, j] = (1^T |W2|)_i and dR/dW2[k, i] = (|W1| 1 + |b1|)_i.
    model = mlp()
    w1, b1, w2, _ = (np.abs(t.detach().double().numpy()) for t in leaves(model))
    scores = synflow_scores(model)
    np.testing.assert_allclose(scores["0"], w1 * w2.sum(0)[:, None], rtol=1e-12)
    np.testing.assert_allclose(scores["2"], w2 * (w1.sum(1) + b1)[None, :], rtol=1e-12)


def test_synflow_iterative_equals_reference_loop():
    model = mlp(bias=False, seed=3)
    w1 = np.abs(model[0].weight.detach().double().numpy())
    w2 = np.abs(model[2].weight.detach().double().numpy())
    m1, m2 = np.ones_like(w1, bool), np.ones_like(w2, bool)
    density, n = 1 / 8, 100
    for epoch in range(n):  # [SF] prune_loop, exponential schedule, global mask
        a, b = w1 * m1, w2 * m2
        s1, s2 = a * b.sum(0)[:, None], b * a.sum(1)[None, :]
        flat = np.sort(np.concatenate([s1.ravel(), s2.ravel()]))
        k = int((1 - density ** ((epoch + 1) / n)) * flat.size)
        if k >= 1:
            m1, m2 = s1 > flat[k - 1], s2 > flat[k - 1]
    masks = synflow_masks(model, 8, iterations=n)
    assert np.array_equal(masks["0"], m1) and np.array_equal(masks["2"], m2)
    assert masks.kept() == 4  # N = 32, k = 28


def test_magnitude_through_prune_is_a_global_sort():
    model = convnet()
    w = {k: m.weight.detach().abs().numpy() for k, m in model.named_modules()
         if isinstance(m, (nn.Conv2d, nn.Linear))}
    flat = np.sort(np.concatenate([v.ravel() for v in w.values()]))
    k = int((1 - 1 / 10) * flat.size)
    masks = prune(model, "magnitude", compression=10)
    assert all(np.array_equal(masks[name], w[name] > flat[k - 1]) for name in w)


@pytest.mark.parametrize("name", ["vgg19", "resnet56"])
def test_synflow_is_finite_on_deep_dense_networks(name):
    from graphpai.torch import models

    model = models.build(name, seed=0)
    scores = synflow_scores(model)
    assert all(np.isfinite(s).all() for s in scores.values())
    assert sum(float(s.sum()) for s in scores.values()) > 0
    if name == "resnet56":  # the test bites: float32 overflows here
        clone = models.build(name, seed=0).eval()
        with torch.no_grad():
            for t in list(clone.parameters()) + list(clone.buffers()):
                t.abs_()
            assert not torch.isfinite(clone(torch.ones(1, 3, 32, 32)).sum())


# ------------------------------------------------------------------------------ contracts
def snapshot(model):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            {k: p.requires_grad for k, p in model.named_parameters()},
            [len(m._forward_pre_hooks) for m in model.modules()],
            torch.get_rng_state())


def test_model_is_left_unchanged():
    model = convnet()
    model.train()
    model[5].eval()  # a module with its own mode
    model[0].bias.requires_grad_(False)
    torch_prune.custom_from_mask(model[4], "weight", torch.rand(4, 4, 3, 3) > 0.3)  # a prune hook
    before = snapshot(model)
    batches = synthetic_batches((2, 5, 5), num_classes=3, batch_size=4, seed=0)
    for method in ("magnitude", "snip", "grasp", "synflow"):
        prune(model, method, compression=5, data=batches, seed=1, iterations=3) \
            if method == "synflow" else prune(model, method, compression=5, data=batches, seed=1)
        after = snapshot(model)
        assert before[0].keys() == after[0].keys()
        assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]), method
        assert before[1:4] == after[1:4], method
        assert torch.equal(before[4], after[4]), method


def test_existing_prune_masks_are_respected_in_scores():
    model = convnet()
    mask = torch.rand(4, 4, 3, 3) > 0.5
    torch_prune.custom_from_mask(model[4], "weight", mask)
    assert (magnitude_scores(model)["4"][~mask.numpy()] == 0).all()
    assert (synflow_scores(model)["4"][~mask.numpy()] == 0).all()


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "magnitude"])
def test_same_seed_same_mask_bit_for_bit(method):
    model = convnet()
    batches = synthetic_batches((2, 5, 5), num_classes=3, batch_size=4, num_batches=2, seed=0)
    kw = {"iterations": 5} if method == "synflow" else {}
    a = prune(model, method, compression=7, data=batches, seed=11, **kw)
    b = prune(model, method, compression=7, data=batches, seed=11, **kw)
    assert a == b
    assert a.kept() <= a.numel() - int((1 - 1 / 7) * a.numel())


def test_synflow_is_data_free():
    model = convnet()
    masks = prune(model, "synflow", compression=4, iterations=4)
    other = prune(model, "synflow", compression=4, iterations=4, data=BATCHES)
    assert masks == other and masks.kept() <= masks.numel() // 4 + 1


def test_data_errors():
    model = mlp()
    with pytest.raises(DataError, match="synthetic_batches"):
        snip_scores(model, None)
    with pytest.raises(DataError, match="no batch"):
        grasp_scores(model, [])
    with pytest.raises(DataError, match="pair"):
        snip_scores(model, [(torch.ones(2, 5),)])
    with pytest.raises(DataError, match="synthetic_batches"):
        prune(model, "grasp", compression=2)
    # numpy batches and one-shot iterators work (GraSP reads its data twice)
    numpy_batches = ((x.numpy(), y.numpy()) for x, y in BATCHES)
    np.testing.assert_allclose(grasp_scores(model, numpy_batches)["0"],
                               grasp_scores(model, BATCHES)["0"])


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "200"])
def test_issue_4_grasp_temperature_must_be_positive(value):
    # 0 divided the logits by zero and surfaced as "scores are NaN; check the data"
    with pytest.raises(ModelError, match="temperature"):
        grasp_scores(mlp(), BATCHES, temperature=value)


@pytest.mark.parametrize("value", [0, 2.5, "abc", None])
def test_issue_4_synflow_iterations_must_be_a_whole_number(value):
    # "abc" raised a bare ValueError from int(); 2.5 was silently run as 2 iterations
    with pytest.raises(ModelError, match="iterations"):
        synflow_masks(mlp(), 2, iterations=value)


def test_synflow_needs_an_input_shape():
    model = mlp()
    del model.input_shape
    with pytest.raises(ModelError, match="input_shape"):
        synflow_scores(model)
    assert synflow_scores(model, input_shape=(5,))["0"].shape == (4, 5)


@pytest.mark.parametrize("kw", [{"num_classes": 0}, {"batch_size": 0}, {"input_shape": (3, -4)},
                                {"input_shape": None}, {"num_classes": "ten"}])
def test_issue_4_synthetic_batches_need_positive_sizes(kw):
    # num_classes=0 gave empty batches, whose NaN loss was reported as NaN scores of the model
    with pytest.raises(DataError, match="positive sizes"):
        synthetic_batches(**{"input_shape": (3, 4, 4), **kw})


def test_synthetic_batches():
    state = torch.get_rng_state()
    a = synthetic_batches((3, 4, 4), num_classes=5, num_batches=2, seed=9)
    b = synthetic_batches((3, 4, 4), num_classes=5, num_batches=2, seed=9)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(a) == 2 and a[0][0].shape == (50, 3, 4, 4) and a[0][0].dtype == torch.float32
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))
    assert int(a[0][1].min()) >= 0 and int(a[0][1].max()) <= 4
    assert not torch.equal(a[0][0], synthetic_batches((3, 4, 4), 5, seed=10)[0][0])


# ------------------------------------------------------------------------------ issue 13 item 5
def saturating_mlp(last=None, act=nn.ReLU6):
    """5 -> 4 -> 3 with weights large enough that ReLU6 saturates on the all-ones signal
    (|W1| 1 + |b1| >= 7.5 > 6), optionally followed by an output activation."""
    model = mlp(seed=4)
    model[1] = act()
    with torch.no_grad():
        model[0].weight.mul_(0).add_(torch.linspace(-2, 2, 20).reshape(4, 5).sign() * 1.5)
    if last is not None:
        model = nn.Sequential(*model, last)
    model.input_shape = (5,)
    return model


def linear_closed_form(model):
    """The linearised MLP's path sum, as in test_synflow_equals_closed_form."""
    w1, b1 = (np.abs(t.detach().double().numpy()) for t in (model[0].weight, model[0].bias))
    w2 = np.abs(model[2].weight.detach().double().numpy())
    return {"0": w1 * w2.sum(0)[:, None], "2": w2 * (w1.sum(1) + b1)[None, :]}


@pytest.mark.parametrize("act, last", [(nn.ReLU6, None), (nn.Hardtanh, None), (nn.Sigmoid, None),
                                       (nn.ReLU, nn.Softmax(dim=1)), (nn.ReLU6, nn.Sigmoid())])
def test_synflow_is_the_linearised_path_sum_under_saturating_activations(act, last):
    # with ReLU6 the all-ones signal saturates (h = 6) and dR/dW1 = 0; a softmax output sums to 1
    # whatever the weights, so every gradient is 0. [SF]'s R is the linear network's path sum.
    model = saturating_mlp(last, act)
    want = linear_closed_form(model)
    got = synflow_scores(model)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12)
    masks = prune(model, "synflow", compression=4, iterations=3)
    assert masks.kept() == 8  # N = 32, int((1 - 1/4) 32) = 24 pruned: nothing ties at 0


def test_synflow_linearises_functional_activations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = saturating_mlp()[0], saturating_mlp()[2]

        def forward(self, x):
            return self.b(F.relu6(self.a(x)).clamp(max=6))

    net = Net()
    net.input_shape = (5,)
    want = linear_closed_form(nn.Sequential(net.a, nn.Identity(), net.b))
    got = synflow_scores(net)
    np.testing.assert_allclose(got["a"], want["0"], rtol=1e-12)
    np.testing.assert_allclose(got["b"], want["2"], rtol=1e-12)


def test_synflow_all_zero_scores_are_an_error():
    # no biases, the middle layer pruned away: R = 0 and every gradient is 0
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 3, bias=False),
                          nn.ReLU(), nn.Linear(3, 2, bias=False))
    model.input_shape = (3,)
    torch_prune.custom_from_mask(model[2], "weight", torch.zeros(3, 3))
    with pytest.raises(ModelError, match="all zero"):
        synflow_scores(model)
    with pytest.raises(ModelError, match="all zero"):
        prune(model, "synflow", compression=2, iterations=2)


def test_synflow_nan_weights_say_so():
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match=r"NaN weights in layer\(s\) \['2'\]"):
        prune(model, "synflow", compression=2, iterations=2)
    model = mlp()
    with torch.no_grad():
        model[0].bias[0] = float("nan")
    with pytest.raises(ModelError, match="R is NaN"):
        synflow_scores(model)


# ----------------------------------- layers that are not Conv/Linear modules (attention, Conv1D)
class _Conv1D(torch.nn.Module):
    """A Hugging Face style Conv1D: the weight is held (in, out), the layer is (out, in)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = torch.nn.Parameter(torch.randn(nx, nf))
        self.bias = torch.nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(
            x.shape[:-1] + (self.nf,))


_Conv1D.__name__ = "Conv1D"


class _TwoLayer(torch.nn.Module):
    def __init__(self, transposed):
        super().__init__()
        torch.manual_seed(0)
        self.c = _Conv1D(6, 4) if transposed else torch.nn.Linear(4, 6)
        self.fc = torch.nn.Linear(6, 2)
        self.input_shape = (4,)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)))


def test_transposed_layers_are_scored_in_the_layer_order():
    """SynFlow and magnitude on a Conv1D layer equal those of the same net built with Linear."""
    import graphpai

    conv1d, linear = _TwoLayer(True), _TwoLayer(False)
    with torch.no_grad():
        linear.c.weight.copy_(conv1d.c.weight.T)
        linear.fc.weight.copy_(conv1d.fc.weight)
    for method in ("magnitude", "synflow"):
        a = graphpai.prune(conv1d, method, compression=3)
        b = graphpai.prune(linear, method, compression=3)
        assert a.counts() == b.counts() and all(np.array_equal(a[k], b[k]) for k in b), method
    assert np.array_equal(magnitude_scores(conv1d)["c"], conv1d.c.weight.detach().abs().numpy().T)


def test_attention_in_proj_weight_is_ranked_with_the_other_layers():
    """nn.MultiheadAttention's in_proj_weight is a graph layer: the ranking methods score it."""
    import graphpai

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = torch.nn.Linear(8, 16)
            self.enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(
                16, 2, 32, dropout=0.0, batch_first=True), 1)
            self.head = torch.nn.Linear(16, 3)
            self.input_shape = (5, 8)

        def forward(self, x):
            return self.head(self.enc(self.emb(x)))

    model = Encoder()
    graph = graphpai.to_graph(model)
    name = "enc.layers.0.self_attn.in_proj_weight"
    assert name in graph.layers
    masks = graphpai.prune(model, "magnitude", compression=4)
    assert set(masks) == set(graph.layers)
    weights = {k: np.abs(v.detach().numpy()) for k, v in model.named_parameters()
               if k.replace(".weight", "") in graph.layers or k in graph.layers}
    flat = np.sort(np.concatenate([w.ravel() for w in weights.values()]))
    threshold = flat[int((1 - 1 / 4) * flat.size) - 1]
    expected = np.abs(model.enc.layers[0].self_attn.in_proj_weight.detach().numpy()) > threshold
    assert np.array_equal(masks[name], expected)
    graphpai.audit(model, masks)
    assert set(graphpai.prune(model, "synflow", compression=4, iterations=3)) == set(graph.layers)
    # N counts the in_proj weights too: the largest compression keeps one weight
    assert graphpai.prune(model, "magnitude", compression=graph.num_weights).kept() == 1
