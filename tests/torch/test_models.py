"""Tests of the model zoo (graphpai/torch/models.py; docs/definitions.md#masks, #training).

Expected counts are derived here from each architecture's published plan, never from the code.
"""

import math

import pytest
import torch
import torch.fx
from torch import nn

from graphpai.errors import GraphpaiError, UnknownModelError
from graphpai.torch import models
from graphpai.torch.models import MODELS, ModelSpec, build, input_shape

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def prunable(model):
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, PRUNABLE))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ expected counts, by hand

VGG_PLANS = {  # open_lth / Synaptic-Flow "lottery" plans; VGG-16 as in docs/definitions.md#masks
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512],
}


def vgg_expected(plan, classes):
    widths = [3] + [w for w in plan if w != "M"]
    convs = sum(9 * a * b for a, b in zip(widths, widths[1:]))
    return convs + widths[-1] * classes


def cifar_resnet_expected(depth, classes, width=16):
    n = (depth - 2) // 6
    w = [width, 2 * width, 4 * width]
    total = 3 * w[0] * 9                                   # stem
    total += 2 * n * 9 * w[0] ** 2                          # stage 1: all 16 -> 16
    for prev, cur in ((w[0], w[1]), (w[1], w[2])):
        total += 9 * prev * cur + prev * cur               # first conv1 + 1x1 shortcut
        total += (2 * n - 1) * 9 * cur ** 2                 # the rest
    return total + w[2] * classes


def imagenet_resnet_expected(kind, classes, stem_kernel=7):
    blocks, bottleneck = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
                          "resnet50": ((3, 4, 6, 3), True)}[kind]
    total = 3 * 64 * stem_kernel ** 2
    c_in = 64
    for stage, count in enumerate(blocks):
        p = 64 * 2 ** stage
        c_out = 4 * p if bottleneck else p
        for b in range(count):
            if bottleneck:
                total += c_in * p + 9 * p * p + p * c_out
            else:
                total += 9 * c_in * p + 9 * p * p
            stride = 2 if stage > 0 and b == 0 else 1
            if stride != 1 or c_in != c_out:
                total += c_in * c_out
            c_in = c_out
    return total + c_in * classes


def test_vgg16_prunable_count_matches_spec():
    assert prunable(build("vgg16")) == 14_715_584
    assert vgg_expected(VGG_PLANS["vgg16"], 10) == 14_715_584  # the hand formula agrees


def test_resnet20_prunable_count_matches_spec():
    assert prunable(build("resnet20")) == 270_896
    assert cifar_resnet_expected(20, 10) == 270_896


@pytest.mark.parametrize("name", sorted(VGG_PLANS))
@pytest.mark.parametrize("classes", [10, 100])
def test_vgg_prunable_counts(name, classes):
    assert prunable(build(name, classes)) == vgg_expected(VGG_PLANS[name], classes)


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_cifar_resnet_prunable_counts(depth):
    assert prunable(build(f"resnet{depth}", 100)) == cifar_resnet_expected(depth, 100)


def test_cifar_resnet_width_option():
    assert prunable(build("resnet20", width=32)) == cifar_resnet_expected(20, 10, width=32)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("cifar_stem", [False, True])
def test_imagenet_resnet_prunable_counts(name, cifar_stem):
    model = build(name, 1000, cifar_stem=cifar_stem)
    expected = imagenet_resnet_expected(name, 1000, stem_kernel=3 if cifar_stem else 7)
    assert prunable(model) == expected


@pytest.mark.parametrize("name,total", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                        ("resnet50", 25_557_032)])
def test_imagenet_resnet_matches_published_parameter_totals(name, total):
    # Published totals of the standard ImageNet models (weights, biases and BN affine).
    assert n_params(build(name, 1000)) == total


def test_resnet18_imagenet_prunable_count():
    # 11,689,512 total - 1,000 fc biases - 2 * 4,800 BN channels.
    assert prunable(build("resnet18", 1000)) == 11_678_912


def test_lenet_counts():
    assert prunable(build("lenet300_100")) == 784 * 300 + 300 * 100 + 100 * 10
    lenet5 = build("lenet5")
    assert prunable(lenet5) == 1 * 6 * 25 + 6 * 16 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert prunable(build("mlp", widths=(32, 16), input_shape=(3, 8, 8))) == \
        192 * 32 + 32 * 16 + 16 * 10


# --------------------------------------------------------------------------- forward shapes

def small_shape(name):
    shape = input_shape(name)
    if shape == (3, 224, 224):
        return (3, 64, 64)  # ImageNet layouts work at any size >= 32; keep the test fast
    return shape


def example(name, batch=2):
    """An input batch for a zoo model: token ids for the decoder, images otherwise."""
    if name == "gpt":
        return torch.randint(0, 64, (batch,) + input_shape(name))
    return torch.randn(batch, *small_shape(name))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape(name):
    model = build(name, 7, seed=0)
    with torch.no_grad():
        out = model(example(name))
    assert out.shape == ((2, 16, 64) if name == "gpt" else (2, 7))  # gpt: logits per token
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_cifar_stem_forward(name):
    model = build(name, cifar_stem=True).eval()
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape(name, cifar_stem=True))).shape == (2, 10)


def test_input_shapes():
    assert input_shape("vgg16") == (3, 32, 32)
    assert input_shape("resnet20") == (3, 32, 32)
    assert input_shape("resnet50") == (3, 224, 224)
    assert input_shape("resnet34", cifar_stem=True) == (3, 32, 32)
    assert input_shape("resnet34", cifar_stem=False, num_classes=5) == (3, 224, 224)
    assert input_shape("lenet300_100") == (1, 28, 28)
    assert input_shape("lenet5") == (1, 28, 28)
    assert input_shape("mlp", input_shape=[3, 8, 8]) == (3, 8, 8)
    with pytest.raises(TypeError):
        input_shape("vgg16", cifar_stem=True)


def test_registry_entries():
    for name, spec in MODELS.items():
        assert isinstance(spec, ModelSpec)
        assert len(spec.input_shape) == (1 if name == "gpt" else 3) and spec.description
        assert "\n" not in spec.description
    with pytest.raises(AttributeError):  # frozen
        MODELS["vgg16"].description = "x"


# ------------------------------------------------------------------------------------ init

def test_init_statistics():
    torch.manual_seed(0)
    model = build("vgg16")
    conv = model.features[-3]  # the last 512 -> 512 conv: 2.4M weights
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (512, 512, 3, 3)
    sigma = math.sqrt(2 / (512 * 9))  # Kaiming normal, fan-in, ReLU gain
    assert conv.weight.std().item() == pytest.approx(sigma, rel=0.01)
    assert abs(conv.weight.mean().item()) < 5 * sigma / math.sqrt(conv.weight.numel())
    fc = build("resnet50", 1000).fc  # 2048 -> 1000 linear: 2M weights
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / 2048), rel=0.01)
    assert (fc.bias == 0).all()
    for name in ["vgg16", "resnet20", "lenet5"]:
        for m in build(name).modules():
            if isinstance(m, nn.BatchNorm2d):
                assert (m.weight == 1).all() and (m.bias == 0).all()
            if isinstance(m, PRUNABLE) and m.bias is not None:
                assert (m.bias == 0).all()


def test_no_conv_bias_in_vgg_and_resnets():
    for name in ["vgg11", "resnet20", "resnet18"]:
        assert all(m.bias is None for m in build(name).modules() if isinstance(m, nn.Conv2d))


def test_seed_reproducible_and_leaves_global_state():
    state = torch.random.get_rng_state()
    a, b, c = build("resnet20", seed=3), build("resnet20", seed=3), build("resnet20", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values()))
    assert not torch.equal(a.conv.weight, c.conv.weight)


# ---------------------------------------------------------------------------------- tracing

@pytest.mark.parametrize("name", sorted(MODELS))
def test_symbolic_trace(name):
    model = build(name, seed=1).eval()
    traced = torch.fx.symbolic_trace(model)
    x = example(name)
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x))


# ------------------------------------------------------------------------- names and errors

def test_layer_names():
    vgg = dict(build("vgg16").named_modules())
    assert isinstance(vgg["features.0"], nn.Conv2d)
    assert isinstance(vgg["features.1"], nn.BatchNorm2d)
    assert isinstance(vgg["classifier"], nn.Linear) and vgg["classifier"].in_features == 512
    assert isinstance(vgg["avgpool"], nn.AvgPool2d)

    r20 = dict(build("resnet20").named_modules())
    for key in ["conv", "bn", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer1.0.bn2",
                "layer3.2.conv2", "fc"]:
        assert key in r20
    for stage in (2, 3):
        assert isinstance(r20[f"layer{stage}.0.shortcut.0"], nn.Conv2d)
        assert r20[f"layer{stage}.0.shortcut.0"].stride == (2, 2)
        assert r20[f"layer{stage}.0.conv1"].stride == (2, 2)
        assert isinstance(r20[f"layer{stage}.0.shortcut.1"], nn.BatchNorm2d)
    assert len(r20["layer1.0.shortcut"]) == 0 and len(r20["layer2.1.shortcut"]) == 0
    assert "avgpool" not in r20  # open_lth pools with a function call (npb paths divide, docs/definitions.md#npb-profile)

    r50 = dict(build("resnet50").named_modules())
    for key in ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv3", "layer1.0.downsample.0",
                "layer4.2.bn3", "avgpool", "fc"]:
        assert key in r50
    assert r50["layer2.0.conv2"].stride == (2, 2)  # torchvision v1.5: stride on the 3x3
    r18 = dict(build("resnet18").named_modules())
    assert "layer2.0.downsample.1" in r18 and r18["layer1.0"].downsample is None

    lenet = dict(build("lenet300_100").named_modules())
    assert [k for k, m in lenet.items() if isinstance(m, nn.Linear)] == \
        ["features.0", "features.2", "classifier"]


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError) as info:
        build("vgg17")
    message = str(info.value)
    assert message == "unknown model 'vgg17'; known models: " + ", ".join(sorted(MODELS))
    assert isinstance(info.value, GraphpaiError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownModelError, match="known models: gpt, lenet300_100, lenet5, mlp, mobilenetv2"):
        input_shape("resnet110")


def test_bad_option_and_depth():
    with pytest.raises(TypeError):
        build("vgg16", cifar_stem=True)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.CifarResNet(21)
