"""The model zoo: graphpai's own VGG, ResNet, LeNet and MLP implementations (SPEC §1).

No torchvision: every architecture is written here, with forward code that
`torch.fx.symbolic_trace` can trace (no data-dependent Python control flow), so that
`graphpai.torch.extract` sees every layer.

- ``vgg11/13/16/19``: the CIFAR "lottery" VGG of [SF]/[MiCA] (SPEC §1): 3x3 convs without bias,
  BN + ReLU after each, 2x2 max-pool at 'M', a 2x2 average pool over the final map, one
  fc 512 -> classes. VGG-16 at 10 classes has 14,715,584 prunable weights.
- ``resnet20/32/56``: the open_lth CIFAR ResNet (width 16, three stages of (depth - 2)/6 basic
  blocks, 1x1 conv + BN shortcut where the shape changes). ResNet-20 at 10 classes has 270,896
  prunable weights.
- ``resnet18/34/50``: the ImageNet layout with torchvision's layer names (``conv1``, ``layer1.0
  .downsample.0``, ``fc``, ...); ``cifar_stem=True`` swaps the 7x7 stride-2 stem and its
  max-pool for a 3x3 stride-1 conv (``maxpool`` becomes `nn.Identity`).
- ``lenet300_100``, ``lenet5`` and ``mlp`` for 1x28x28 (MNIST-sized) inputs.

Every model is initialised as in SPEC §8: Kaiming-normal (fan-in, ReLU) conv and linear
weights, zero biases, BatchNorm weight 1 and bias 0. ReLUs are not in-place, so backward hooks
and masks by `torch.nn.utils.prune` work on every model.

References
----------
.. [SF] H. Tanaka, D. Kunin, D. Yamins, S. Ganguli, "Pruning neural networks without any data by
   iteratively conserving synaptic flow", NeurIPS 2020.
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024.
.. [RN] K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
   CVPR 2016.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from graphpai.errors import UnknownModelError

__all__ = [
    "MODELS",
    "ModelSpec",
    "build",
    "input_shape",
    "init_weights",
    "VGG",
    "CifarResNet",
    "CifarBasicBlock",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "LeNet5",
    "MLP",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet18",
    "resnet34",
    "resnet50",
    "lenet300_100",
    "lenet5",
    "mlp",
]

CIFAR_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)
MNIST_SHAPE = (1, 28, 28)


def init_weights(model: nn.Module) -> nn.Module:
    """Initialise a model in place as SPEC §8 prescribes, and return it.

    Conv and linear weights: Kaiming normal with fan-in and the ReLU gain, so the standard
    deviation is sqrt(2 / fan_in); their biases 0. BatchNorm: weight 1, bias 0. Other modules
    are left alone.

    Parameters
    ----------
    model : nn.Module
        Any module; it is changed in place.

    Returns
    -------
    nn.Module
        `model` itself.
    """
    for module in model.modules():
        if any(p.is_meta for p in module.parameters(recurse=False)):
            continue  # shapes only (``graphpai models``): meta init would import torch._dynamo
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            if module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return model


# --------------------------------------------------------------------------------------- VGG

_VGG_PLANS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """CIFAR "lottery" VGG with batch norm ([SF], [MiCA]; SPEC §1).

    ``features`` holds, for each int in the plan, Conv2d(3x3, padding 1, no bias), BatchNorm2d
    and ReLU, and MaxPool2d(2) for each 'M'; then ``avgpool`` (AvgPool2d(2) over the final
    2x2 map of a 32x32 input), flatten, and ``classifier``, a Linear(last width, num_classes).

    Parameters
    ----------
    plan : sequence of int or "M"
        Output channels of each conv, in order; "M" places a 2x2 max-pool.
    num_classes : int
        Number of logits.
    in_channels : int
        Channels of the input image.
    """

    def __init__(self, plan: Sequence[int | str], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1, bias=False),
                           nn.BatchNorm2d(item), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg(depth: int, num_classes: int) -> VGG:
    return VGG(_VGG_PLANS[depth], num_classes)


def vgg11(num_classes: int = 10) -> VGG:
    """CIFAR VGG-11-bn (plan 64,M,128,M,256x2,M,512x2,M,512x2)."""
    return _vgg(11, num_classes)


def vgg13(num_classes: int = 10) -> VGG:
    """CIFAR VGG-13-bn (plan 64x2,M,128x2,M,256x2,M,512x2,M,512x2)."""
    return _vgg(13, num_classes)


def vgg16(num_classes: int = 10) -> VGG:
    """CIFAR VGG-16-bn of SPEC §1 (14,715,584 prunable weights at 10 classes).

    Examples
    --------
    >>> model = vgg16()
    >>> sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    14715584
    """
    return _vgg(16, num_classes)


def vgg19(num_classes: int = 10) -> VGG:
    """CIFAR VGG-19-bn (plan 64x2,M,128x2,M,256x4,M,512x4,M,512x4)."""
    return _vgg(19, num_classes)


# ------------------------------------------------------------------------- CIFAR ResNets

class CifarBasicBlock(nn.Module):
    """open_lth basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    ``conv1`` carries the stride. ``shortcut`` is Sequential(Conv2d 1x1 with the stride,
    BatchNorm2d) where the stride is not 1 or the width changes, and an empty Sequential (the
    identity) otherwise.

    Parameters
    ----------
    in_channels, out_channels : int
        Widths of the block's input and output.
    stride : int
        Stride of ``conv1`` and of the shortcut conv.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """open_lth CIFAR ResNet of depth 6n + 2 ([RN] §4.2; SPEC §1).

    Stem ``conv`` (3x3, 3 -> width) and ``bn``; stages ``layer1``, ``layer2``, ``layer3`` of n
    `CifarBasicBlock` with widths width, 2 width, 4 width, the first block of stages 2 and 3
    with stride 2; a global average pool called as a function, as open_lth does (so
    ``profile="npb"`` path counts divide by its window, SPEC §4), flatten, ``fc`` (4 width ->
    classes).

    Parameters
    ----------
    depth : int
        Number of conv and linear layers on the longest path, 6n + 2 (20, 32, 56, 110, ...).
    num_classes : int
        Number of logits.
    width : int
        Channels of the first stage.

    Raises
    ------
    ValueError
        If depth - 2 is not a positive multiple of 6.
    """

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 56, ...),"
                             f" got {depth}")
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        channels = width
        for stage in range(3):
            out_channels = width * 2 ** stage
            layer = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layer.append(CifarBasicBlock(channels, out_channels, stride))
                channels = out_channels
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet20(num_classes: int = 10, *, width: int = 16) -> CifarResNet:
    """CIFAR ResNet-20 of SPEC §1 (270,896 prunable weights at 10 classes and width 16).

    Examples
    --------
    >>> model = resnet20()
    >>> sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    270896
    """
    return CifarResNet(20, num_classes, width)


def resnet32(num_classes: int = 10, *, width: int = 16) -> CifarResNet:
    """CIFAR ResNet-32: three stages of 5 basic blocks."""
    return CifarResNet(32, num_classes, width)


def resnet56(num_classes: int = 10, *, width: int = 16) -> CifarResNet:
    """CIFAR ResNet-56: three stages of 9 basic blocks."""
    return CifarResNet(56, num_classes, width)


# ----------------------------------------------------------------------- ImageNet ResNets

def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual add (torchvision names; ``conv1`` carries the stride).

    ``downsample`` is Sequential(1x1 conv, BatchNorm2d) where the shape changes, else None.

    Parameters
    ----------
    in_channels, planes : int
        Input width and the width of both convs (the output width, expansion 1).
    stride : int
        Stride of ``conv1`` and of the downsample conv.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, 3x3, 1x1 convs with a residual add, expansion 4 (torchvision "v1.5": ``conv2``
    carries the stride).

    Parameters
    ----------
    in_channels, planes : int
        Input width and the width of the inner convs; the output width is 4 planes.
    stride : int
        Stride of ``conv2`` and of the downsample conv.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet in the ImageNet layout ([RN]) with torchvision's layer names.

    ``conv1`` (7x7 stride 2, 3 -> 64), ``bn1``, ``relu``, ``maxpool`` (3x3 stride 2), stages
    ``layer1`` ... ``layer4`` of widths 64, 128, 256, 512 (times the block's expansion; stages
    2-4 start with stride 2), ``avgpool`` (global average pool), flatten, ``fc``. With
    ``cifar_stem=True``, ``conv1`` is 3x3 stride 1 and ``maxpool`` is `nn.Identity`.

    Parameters
    ----------
    block : type
        `BasicBlock` or `Bottleneck`.
    layers : sequence of 4 int
        Number of blocks per stage.
    num_classes : int
        Number of logits.
    cifar_stem : bool
        Use the 3x3 stride-1 stem without max-pool, for 32x32 inputs.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: Sequence[int],
                 num_classes: int = 10, *, cifar_stem: bool = False):
        super().__init__()
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, 64, 3, 1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(3, 2, padding=1)
        channels = 64
        for stage, blocks in enumerate(layers):
            planes = 64 * 2 ** stage
            layer = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layer.append(block(channels, planes, stride))
                channels = planes * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, *, cifar_stem: bool = False) -> ResNet:
    """ResNet-18: BasicBlock stages of 2, 2, 2, 2 blocks."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, cifar_stem=cifar_stem)


def resnet34(num_classes: int = 10, *, cifar_stem: bool = False) -> ResNet:
    """ResNet-34: BasicBlock stages of 3, 4, 6, 3 blocks."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, cifar_stem=cifar_stem)


def resnet50(num_classes: int = 10, *, cifar_stem: bool = False) -> ResNet:
    """ResNet-50: Bottleneck stages of 3, 4, 6, 3 blocks."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, cifar_stem=cifar_stem)


# ---------------------------------------------------------------------------- LeNets, MLP

class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    ``features`` holds Linear + ReLU per hidden width (``features.0``, ``features.2``, ...);
    ``classifier`` is the last Linear.

    Parameters
    ----------
    in_features : int
        Size of the flattened input.
    widths : sequence of int
        Hidden widths, input side first; empty for a linear classifier.
    num_classes : int
        Number of logits.
    """

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(torch.flatten(x, 1)))


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs.

    ``features``: Conv2d(1, 6, 5, padding 2), ReLU, MaxPool2d(2), Conv2d(6, 16, 5), ReLU,
    MaxPool2d(2), giving 16x5x5; flatten; ``classifier``: Linear 400 -> 120, ReLU, 120 -> 84,
    ReLU, 84 -> classes. The padding of 2 makes a 28x28 image behave like LeCun's 32x32 one;
    the convs keep their biases, as in the original.

    Parameters
    ----------
    num_classes : int
        Number of logits.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes))
        init_weights(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def lenet300_100(num_classes: int = 10) -> MLP:
    """LeNet-300-100: MLP 784 -> 300 -> 100 -> classes on 1x28x28 inputs."""
    return MLP(math.prod(MNIST_SHAPE), (300, 100), num_classes)


def lenet5(num_classes: int = 10) -> LeNet5:
    """LeNet-5 on 1x28x28 inputs (see `LeNet5`)."""
    return LeNet5(num_classes)


def mlp(num_classes: int = 10, *, widths: Sequence[int] = (100, 100),
        input_shape: Sequence[int] = MNIST_SHAPE) -> MLP:
    """Small MLP with the given hidden widths on inputs of `input_shape` (flattened)."""
    return MLP(math.prod(input_shape), tuple(widths), num_classes)


# ------------------------------------------------------------------------------ registry

@dataclass(frozen=True)
class ModelSpec:
    """One entry of `MODELS`.

    Attributes
    ----------
    factory : callable
        ``factory(num_classes=10, **options) -> nn.Module``.
    input_shape : tuple of int
        Default input shape (C, H, W), without the batch dimension.
    description : str
        One line for ``graphpai models``.
    """

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    description: str


MODELS: dict[str, ModelSpec] = {
    "vgg11": ModelSpec(vgg11, CIFAR_SHAPE, "CIFAR VGG-11 with BN (lottery variant)"),
    "vgg13": ModelSpec(vgg13, CIFAR_SHAPE, "CIFAR VGG-13 with BN (lottery variant)"),
    "vgg16": ModelSpec(vgg16, CIFAR_SHAPE, "CIFAR VGG-16 with BN (lottery variant, SPEC §1)"),
    "vgg19": ModelSpec(vgg19, CIFAR_SHAPE, "CIFAR VGG-19 with BN (lottery variant)"),
    "resnet20": ModelSpec(resnet20, CIFAR_SHAPE, "CIFAR ResNet-20, width 16 (open_lth, SPEC §1)"),
    "resnet32": ModelSpec(resnet32, CIFAR_SHAPE, "CIFAR ResNet-32, width 16 (open_lth)"),
    "resnet56": ModelSpec(resnet56, CIFAR_SHAPE, "CIFAR ResNet-56, width 16 (open_lth)"),
    "resnet18": ModelSpec(resnet18, IMAGENET_SHAPE,
                          "ResNet-18, ImageNet layout; cifar_stem=True for 32x32 inputs"),
    "resnet34": ModelSpec(resnet34, IMAGENET_SHAPE,
                          "ResNet-34, ImageNet layout; cifar_stem=True for 32x32 inputs"),
    "resnet50": ModelSpec(resnet50, IMAGENET_SHAPE,
                          "ResNet-50 (bottleneck), ImageNet layout; cifar_stem=True for 32x32"),
    "lenet300_100": ModelSpec(lenet300_100, MNIST_SHAPE, "LeNet-300-100 MLP for 1x28x28"),
    "lenet5": ModelSpec(lenet5, MNIST_SHAPE, "LeNet-5 (6@5x5, 16@5x5, 120, 84) for 1x28x28"),
    "mlp": ModelSpec(mlp, MNIST_SHAPE, "MLP with configurable hidden widths"),
}


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise UnknownModelError(f"unknown model {name!r}; known models: "
                                f"{', '.join(sorted(MODELS))}") from None


def build(name: str, num_classes: int = 10, *, seed: int | None = None, **options) -> nn.Module:
    """Build a model of the zoo, initialised as in SPEC §8.

    Parameters
    ----------
    name : str
        A key of `MODELS`.
    num_classes : int
        Number of logits.
    seed : int, optional
        Seed for the initialisation; the same seed gives the same weights, and the global
        torch random state is left untouched. None draws from the global state.
    **options
        Passed to the factory: ``cifar_stem`` (resnet18/34/50), ``width`` (resnet20/32/56),
        ``widths`` and ``input_shape`` (mlp).

    Returns
    -------
    nn.Module
        The model, in training mode, with its default ``input_shape`` attribute (C, H, W).

    Raises
    ------
    UnknownModelError
        If `name` is not a key of `MODELS`; the message lists the known names.
    TypeError
        If an option does not belong to the model.

    Examples
    --------
    >>> model = build("resnet20", num_classes=100, seed=0)
    >>> model.fc
    Linear(in_features=64, out_features=100, bias=True)
    """
    factory = _spec(name).factory
    if seed is None:
        model = factory(num_classes, **options)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(num_classes, **options)
    model.input_shape = input_shape(name, **options)  # lets to_graph(model) work without one
    return model


def input_shape(name: str, **options) -> tuple[int, ...]:
    """Default input shape (C, H, W) of a zoo model built with `options`, without the batch.

    Parameters
    ----------
    name : str
        A key of `MODELS`.
    **options
        The options that would be passed to `build` (``num_classes`` and ``seed`` included);
        ``cifar_stem=True`` gives 3x32x32 for resnet18/34/50, and mlp's ``input_shape`` is
        returned as given.

    Returns
    -------
    tuple of int

    Raises
    ------
    UnknownModelError
        If `name` is not a key of `MODELS`.
    TypeError
        If an option does not belong to the model.

    Examples
    --------
    >>> input_shape("resnet18"), input_shape("resnet18", cifar_stem=True)
    ((3, 224, 224), (3, 32, 32))
    """
    spec = _spec(name)
    options.pop("seed", None)
    bound = inspect.signature(spec.factory).bind_partial(**options)
    bound.apply_defaults()
    given = bound.arguments
    if "input_shape" in given:
        return tuple(int(n) for n in given["input_shape"])
    if given.get("cifar_stem"):
        return CIFAR_SHAPE
    return spec.input_shape
