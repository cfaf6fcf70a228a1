"""The model zoo: graphpai's own VGG, ResNet, LeNet and MLP implementations (docs/definitions.md#masks).

No torchvision: every architecture is written here, with forward code that
`torch.fx.symbolic_trace` can trace (no data-dependent Python control flow), so that
`graphpai.torch.extract` sees every layer.

- ``vgg11/13/16/19``: the CIFAR "lottery" VGG of [SF]/[MiCA] (docs/definitions.md#masks): 3x3 convs without bias,
  BN + ReLU after each, 2x2 max-pool at 'M', a 2x2 average pool over the final map, one
  fc 512 -> classes. VGG-16 at 10 classes has 14,715,584 prunable weights.
- ``resnet20/32/56``: the open_lth CIFAR ResNet (width 16, three stages of (depth - 2)/6 basic
  blocks, 1x1 conv + BN shortcut where the shape changes). ResNet-20 at 10 classes has 270,896
  prunable weights.
- ``resnet18/34/50``: the ImageNet layout with torchvision's layer names (``conv1``, ``layer1.0
  .downsample.0``, ``fc``, ...); ``cifar_stem=True`` swaps the 7x7 stride-2 stem and its
  max-pool for a 3x3 stride-1 conv (``maxpool`` becomes `nn.Identity`).
- ``lenet300_100``, ``lenet5`` and ``mlp`` for 1x28x28 (MNIST-sized) inputs.
- ``gpt`` (a small Llama-style decoder on 16 token ids: RMSNorm, hand-written causal attention,
  SwiGLU), ``vit`` (a small ViT on 3x32x32 with scaled_dot_product_attention) and
  ``mobilenetv2`` ([MV2], CIFAR stem): random initialisation, no download (docs/graph.md).

Every model is initialised as in docs/definitions.md#training: Kaiming-normal (fan-in, ReLU) conv and linear
weights, zero biases, BatchNorm weight 1 and bias 0. ReLUs are not in-place, so backward hooks
and masks by `torch.nn.utils.prune` work on every model.

References
----------
.. [SF] H. Tanaka, D. Kunin, D. Yamins, S. Ganguli, "Pruning neural networks without any data by
   iteratively conserving synaptic flow", NeurIPS 2020.
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024.
.. [MV2] M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen, "MobileNetV2: Inverted
   Residuals and Linear Bottlenecks", CVPR 2018.
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
    "GPT",
    "ViT",
    "MobileNetV2",
    "gpt",
    "vit",
    "mobilenetv2",
]

CIFAR_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)
MNIST_SHAPE = (1, 28, 28)


def init_weights(model: nn.Module) -> nn.Module:
    """Initialise a model in place as docs/definitions.md#training prescribes, and return it.

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
    """CIFAR "lottery" VGG with batch norm ([SF], [MiCA]; docs/definitions.md#masks).

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
    """CIFAR VGG-16-bn of docs/definitions.md#masks (14,715,584 prunable weights at 10 classes).

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
    """open_lth CIFAR ResNet of depth 6n + 2 ([RN] §4.2; docs/definitions.md#masks).

    Stem ``conv`` (3x3, 3 -> width) and ``bn``; stages ``layer1``, ``layer2``, ``layer3`` of n
    `CifarBasicBlock` with widths width, 2 width, 4 width, the first block of stages 2 and 3
    with stride 2; a global average pool called as a function, as open_lth does (so
    ``profile="npb"`` path counts divide by its window, docs/definitions.md#paths), flatten, ``fc`` (4 width ->
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
    """CIFAR ResNet-20 of docs/definitions.md#masks (270,896 prunable weights at 10 classes and width 16).

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


# ------------------------------------------------------------------ transformers, MobileNetV2

def _init_transformer(model: nn.Module, std: float = 0.02) -> nn.Module:
    """GPT-2's initialisation: linear and embedding weights normal(0, std), biases 0, norm
    weights 1 (the zoo's transformers; the CNNs use :func:`init_weights`)."""
    for module in model.modules():
        if any(p.is_meta for p in module.parameters(recurse=False)):
            continue
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
            nn.init.normal_(module.weight, 0.0, std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    return model


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis, written out as Llama does
    (``x * rsqrt(mean(x**2) + eps) * weight``), so the extractor sees its ops."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention written by hand: ``q_proj``, ``k_proj``, ``v_proj``,
    ``softmax(q @ k^T / sqrt(d))`` under a lower-triangular mask, the value product, ``o_proj``."""

    def __init__(self, dim: int, heads: int, context: int = 0):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        h = self.heads
        q = self.q_proj(x).view(b, t, h, c // h).transpose(1, 2)
        k = self.k_proj(x).view(b, t, h, c // h).transpose(1, 2)
        v = self.v_proj(x).view(b, t, h, c // h).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // h))
        causal = x.new_ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(causal.logical_not(), float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(b, t, c))


class SwiGLU(nn.Module):
    """The gated MLP of Llama: ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int, context: int):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, context)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """A small Llama-style decoder-only language model on token ids.

    ``embed`` (vocabulary -> dim), learned positions ``pos`` (a parameter), ``blocks.i`` of
    `DecoderBlock` (RMSNorm, hand-written causal attention, SwiGLU MLP), a final ``norm`` and
    ``lm_head`` (dim -> vocabulary; with ``tie_weights`` it is the embedding's weight). The input
    is ``(tokens,)`` long ids (``input_dtype``), the output the logits of every token.

    Parameters
    ----------
    vocab_size, dim, depth, heads, hidden, context : int
        Vocabulary, width, number of blocks, attention heads, MLP width, longest input.
    tie_weights : bool
        Share the embedding and LM-head weight.
    """

    input_dtype = torch.long

    def __init__(self, vocab_size: int = 64, dim: int = 32, depth: int = 2, heads: int = 4,
                 hidden: int = 64, context: int = 16, tie_weights: bool = False):
        super().__init__()
        self.vocab_size = vocab_size
        # the weight is given (and initialised below): Embedding.reset_parameters on the meta
        # device (`graphpai models` counts weights there) would import torch._dynamo
        self.embed = nn.Embedding(vocab_size, dim, _weight=torch.empty(vocab_size, dim))
        self.pos = nn.Parameter(torch.zeros(1, context, dim))
        self.blocks = nn.Sequential(*[DecoderBlock(dim, heads, hidden, context)
                                      for _ in range(depth)])
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        _init_transformer(self)
        if tie_weights:
            self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        x = self.embed(ids) + self.pos[:, :ids.shape[1]]
        return self.lm_head(self.norm(self.blocks(x)))


class Attention(nn.Module):
    """Multi-head self-attention with ``F.scaled_dot_product_attention`` on one ``qkv``
    projection (split into q, k, v) and an output projection ``proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: LayerNorm, attention, residual; LayerNorm, GELU MLP, residual."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small vision transformer: ``patch`` (a conv with kernel = stride = patch size),
    ``flatten(2).transpose(1, 2)`` to tokens, a class token and learned positions
    (parameters), ``blocks.i`` of `EncoderBlock`, a final ``norm`` and ``head`` on the class
    token.

    Parameters
    ----------
    num_classes : int
    image, patch, dim, depth, heads, hidden, channels : int
        Image side, patch side, width, blocks, heads, MLP width, input channels.
    """

    def __init__(self, num_classes: int = 10, *, image: int = 32, patch: int = 8,
                 dim: int = 32, depth: int = 2, heads: int = 4, hidden: int = 64,
                 channels: int = 3):
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        _init_transformer(self)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class InvertedResidual(nn.Module):
    """MobileNetV2 block ([MV2]): 1x1 expansion (skipped at ratio 1), 3x3 depthwise conv with
    `stride`, 1x1 linear projection, each with BN (ReLU6 after the first two); a residual sum
    when the stride is 1 and the widths agree. Layers are ``conv.0`` (expand), ``conv.3``
    (depthwise), ``conv.6`` (project), or ``conv.0``/``conv.3`` without expansion."""

    def __init__(self, inp: int, out: int, stride: int, ratio: int):
        super().__init__()
        hidden = inp * ratio
        layers: list[nn.Module] = []
        if ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


_MV2_PLAN = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """MobileNetV2 ([MV2]) for 32x32 inputs: a 3x3 stride-1 stem (CIFAR), the seven stages of
    inverted residuals (expansion t, width c, n blocks, stride s of the first) scaled by
    ``width``, a 1x1 conv to 1280 (scaled when width > 1), global average pool, ``classifier``.

    Parameters
    ----------
    num_classes : int
    width : float
        Width multiplier (channels rounded to multiples of 8, as in [MV2]).
    """

    def __init__(self, num_classes: int = 10, *, width: float = 1.0):
        super().__init__()

        def round8(c):
            return max(8, int(c * width + 4) // 8 * 8)

        channels = round8(32)
        last = max(1280, round8(1280))
        features: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(3, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU6())]
        for t, c, n, s in _MV2_PLAN:
            out = round8(c)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        features.append(nn.Sequential(nn.Conv2d(channels, last, 1, bias=False),
                                      nn.BatchNorm2d(last), nn.ReLU6()))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def gpt(num_classes: int | None = None, *, vocab_size: int = 64, dim: int = 32, depth: int = 2,
        heads: int = 4, hidden: int = 64, context: int = 16,
        tie_weights: bool = False) -> GPT:
    """A small Llama-style decoder (see `GPT`); `num_classes` is ignored (the vocabulary is the
    output)."""
    return GPT(vocab_size, dim, depth, heads, hidden, context, tie_weights)


def vit(num_classes: int = 10, **options) -> ViT:
    """A small ViT for 3x32x32 (see `ViT`)."""
    return ViT(num_classes, **options)


def mobilenetv2(num_classes: int = 10, *, width: float = 1.0) -> MobileNetV2:
    """MobileNetV2 for 3x32x32 (see `MobileNetV2`)."""
    return MobileNetV2(num_classes, width=width)


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
    "vgg16": ModelSpec(vgg16, CIFAR_SHAPE, "CIFAR VGG-16 with BN (lottery variant)"),
    "vgg19": ModelSpec(vgg19, CIFAR_SHAPE, "CIFAR VGG-19 with BN (lottery variant)"),
    "resnet20": ModelSpec(resnet20, CIFAR_SHAPE, "CIFAR ResNet-20, width 16 (open_lth)"),
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
    "gpt": ModelSpec(gpt, (16,), "Llama-style decoder: 2 blocks, width 32, 4 heads, SwiGLU, "
                     "16 token ids of a 64-word vocabulary"),
    "vit": ModelSpec(vit, CIFAR_SHAPE, "ViT: 8x8 patches, 2 blocks, width 32, 4 heads"),
    "mobilenetv2": ModelSpec(mobilenetv2, CIFAR_SHAPE, "MobileNetV2 for 32x32 (3x3 stride-1 "
                             "stem); width= multiplier"),
}


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise UnknownModelError(f"unknown model {name!r}; known models: "
                                f"{', '.join(sorted(MODELS))}") from None


def build(name: str, num_classes: int = 10, *, seed: int | None = None, **options) -> nn.Module:
    """Build a model of the zoo, initialised as in docs/definitions.md#training.

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
    if name == "gpt":
        model.input_shape = (int(options.get("context", 16)),)
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
