"""CLAT's 32-px CIFAR architectures (the networks of CLAT and its baselines).

The CLAT paper (arXiv 2408.10204 v1, Sec. 4.1) uses "the widely used" CIFAR definitions:
ResNet-18/50, PreAct ResNet-18, WideResNet-34-10 (and 70-16), VGG-19, DenseNet-121. Its
parameter counts (Table 6) fit the kuangliu/pytorch-cifar layouts (spec §1.2), so the models
here follow those layouts (3×3 stem, no max-pool, no input normalisation: inputs are images in
[0, 1]) and keep their module names (``layer3.0.conv2``, ``block1.layer.3.conv2``,
``dense2.0.conv1``, ``trans1.conv``, ...) so that CLAT's "critical layer 11" and RiFT's README
module names mean the same module as in the papers. The written-from-scratch definitions differ
from the reference files only where noted:

* the classifier is always called ``head`` (the project-wide ``RobustNet`` contract);
* global average pooling is adaptive (identical at 32 px; lets tests feed 8-16 px images);
* WideResNet omits TRADES' unused ``sub_block1`` (it is never called in the forward pass);
* PreAct ResNet-18 ends with BN+ReLU before pooling (``final_bn=True``), as the
  Fast-AT / robust-overfitting definition that AT papers use; kuangliu's omits it.
* PreAct ResNet-18 comes in the two definitions AT code uses, which differ only in what a
  block's 1×1 projection shortcut sees (same modules, parameter names and counts):
  ``cifar_preact_resnet18`` applies it to the pre-activated input relu(bn1(x))
  (``locuslab/robust_overfitting`` and ``csdongxian/AWP`` ``preactresnet.py``, kuangliu's);
  ``cifar_preact_resnet18_fast`` applies it to the raw block input x
  (``locuslab/fast_adversarial`` ``CIFAR10/preact_resnet.py``, the network of Fast-AT's rows).

Every constructor takes ``width``, the channel count of the first stage (defaults in
:data:`CIFAR_ARCHS`), so tests can build tiny models; all other widths scale with it.

Owns the architectures and their registry :data:`CIFAR_ARCHS` (builder, default width, the
paper's name). CLAT's layer numbering over these modules (spec §1.2: which conv is "layer 11")
and its per-architecture k live with CLAT, in :mod:`robustft.clat.layers` and
:mod:`robustft.clat.criticality`; this module imports nothing of CLAT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------
# shared interface


class CifarNet(nn.Module):
    """Base of the CIFAR models: the ``RobustNet`` interface without LoRA / dual-BN branches.

    ``forward(x, *, lora=False, bn="adaptive")`` accepts the flags of the project-wide contract so
    generic code can call it, but these models have neither branch (CLAT and its baselines never
    use them; the LoRA fine-tuning baseline adds LoRA by re-parametrisation, see
    :mod:`robustft.methods.lora_ft`), so asking for one raises instead of silently ignoring it.
    """

    arch: str = "custom"
    head: nn.Linear
    lora_config = None
    dual_bn = None
    input_size = None

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *, lora: bool = False, bn: str = "adaptive") -> torch.Tensor:
        if lora:
            raise ValueError(f"{self.arch}: CIFAR models have no LoRA branch (lora=True)")
        if bn != "adaptive":
            raise ValueError(f"{self.arch}: CIFAR models have no frozen-BN branch (bn={bn!r})")
        return self.head(self.features(x))

    # parameter groups, as RobustNet
    def lora_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.head.parameters()

    def feature_extractor_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the classifier (conv weights/biases, BN γ/β)."""
        head = {id(p) for p in self.head.parameters()}
        for p in self.parameters():
            if id(p) not in head:
                yield p

    def count_parameters(self) -> dict[str, int]:
        fe = sum(p.numel() for p in self.feature_extractor_parameters())
        hd = sum(p.numel() for p in self.head_parameters())
        return {"feature_extractor": fe, "lora": 0, "head": hd, "total": fe + hd}

    def sync_frozen_bn(self) -> None:
        """No frozen BN branch: nothing to synchronise (called by ``load_backbone``)."""

    def _init_weights(self) -> None:
        # Kaiming-normal convs and unit BN (the common CIFAR init); only matters from scratch.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _pool(h: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)


def _scaled(channels: int, width: int, default: int) -> int:
    """A reference channel count scaled by ``width / default`` (at least 1)."""
    return max(1, round(channels * width / default))


def _conv3(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


def _conv1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


# --------------------------------------------------------------------------------------------
# ResNet-18 / ResNet-50 (post-activation, kuangliu layout)


class _ResBasic(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(c_in, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResBottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3(planes, planes, stride)  # stride on the 3×3, as kuangliu
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _projection(c_in, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _projection(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """1×1 conv + BN when the shape changes, else identity (an empty ``Sequential``)."""
    if stride != 1 or c_in != c_out:
        return nn.Sequential(_conv1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
    return nn.Sequential()


class CifarResNet(CifarNet):
    def __init__(
        self,
        block: type[_ResBasic | _ResBottleneck],
        layers: tuple[int, ...],
        num_classes: int,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3(3, width)
        self.bn1 = nn.BatchNorm2d(width)
        c_in = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, planes, 2 if (i > 0 and j == 0) else 1))
                c_in = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.feat_dim = c_in
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.n_stages):
            h = getattr(self, f"layer{i + 1}")(h)
        return _pool(h)


# --------------------------------------------------------------------------------------------
# PreAct ResNet-18 (He et al. 2016b; the robust-overfitting/AWP and the Fast-AT definitions)

#: what a pre-activation block's projection shortcut is applied to (module docstring)
PREACT_SHORTCUTS = ("preact_input", "raw_input")


class _PreActBlock(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int, shortcut: str = "preact_input") -> None:
        super().__init__()
        if shortcut not in PREACT_SHORTCUTS:
            raise ValueError(f"PreAct shortcut must be one of {PREACT_SHORTCUTS}, got {shortcut!r}")
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3(c_in, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3(planes, planes)
        # projection without BN; its input is the block's shortcut option
        self.shortcut = (
            nn.Sequential(_conv1(c_in, planes, stride)) if stride != 1 or c_in != planes else None
        )
        self.shortcut_input = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        if self.shortcut is None:
            short = x  # identity shortcut: the raw input in both definitions
        else:
            short = self.shortcut(out if self.shortcut_input == "preact_input" else x)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + short


class CifarPreActResNet(CifarNet):
    """PreAct ResNet; ``shortcut`` selects the projection's input (``"preact_input"``:
    robust_overfitting / AWP, ``"raw_input"``: Fast-AT), see the module docstring."""

    def __init__(
        self,
        layers: tuple[int, ...],
        num_classes: int,
        width: int = 64,
        final_bn: bool = True,
        shortcut: str = "preact_input",
    ) -> None:
        super().__init__()
        self.conv1 = _conv3(3, width)
        c_in = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(_PreActBlock(c_in, planes, 2 if (i > 0 and j == 0) else 1, shortcut))
                c_in = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.bn = nn.BatchNorm2d(c_in) if final_bn else None
        self.feat_dim = c_in
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        for i in range(self.n_stages):
            h = getattr(self, f"layer{i + 1}")(h)
        if self.bn is not None:
            h = F.relu(self.bn(h))
        return _pool(h)


# --------------------------------------------------------------------------------------------
# WideResNet (Zagoruyko & Komodakis; the TRADES/MART layout used by RiFT and CLAT)


class _WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, drop: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3(c_out, c_out)
        self.drop = drop
        self.equal = c_in == c_out
        self.convShortcut = None if self.equal else _conv1(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        # with equal shapes the residual is the raw input; otherwise the projection sees the
        # pre-activated input (the reference definition)
        short = x if self.equal else self.convShortcut(act)
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop > 0:
            out = F.dropout(out, p=self.drop, training=self.training)
        return short + self.conv2(out)


class _WideGroup(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int, drop: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                _WideBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, drop)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class CifarWideResNet(CifarNet):
    """WRN-depth-k: stem 16 channels, three groups of (depth−4)/6 blocks with 16k/32k/64k.

    ``width`` is the first group's channel count (16·k by default); the stem scales with it.
    """

    def __init__(
        self, depth: int, widen: int, num_classes: int, width: int | None = None, drop: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        default = 16 * widen
        width = default if width is None else width
        stem = _scaled(16, width, default)
        chans = [width, width * 2, width * 4]
        self.conv1 = _conv3(3, stem)
        self.block1 = _WideGroup(n, stem, chans[0], 1, drop)
        self.block2 = _WideGroup(n, chans[0], chans[1], 2, drop)
        self.block3 = _WideGroup(n, chans[1], chans[2], 2, drop)
        self.bn1 = nn.BatchNorm2d(chans[2])
        self.feat_dim = chans[2]
        self.head = nn.Linear(chans[2], num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(self.conv1(x))))
        return _pool(F.relu(self.bn1(h)))


# --------------------------------------------------------------------------------------------
# VGG-19 with BN (kuangliu layout: conv biases, 1×1 spatial output, one linear layer)

VGG19_PLAN: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)


class CifarVGG(CifarNet):
    def __init__(self, plan: tuple[int | str, ...], num_classes: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                c_out = _scaled(int(item), width, 64)
                layers += [_conv3(c_in, c_out, bias=True), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
        self.features_seq = nn.Sequential(*layers)
        self.feat_dim = c_in
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for m in self.features_seq:
            # a max-pool on a 1-px map (tiny test inputs) is skipped instead of failing
            if isinstance(m, nn.MaxPool2d) and min(h.shape[-2:]) < 2:
                continue
            h = m(h)
        return _pool(h)


# --------------------------------------------------------------------------------------------
# DenseNet-121 (BC, growth 32, compression 0.5; kuangliu CIFAR layout)


class _DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv1(c_in, 4 * growth)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = _conv3(4 * growth, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class _Transition(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = _conv1(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.relu(self.bn(x)))
        return F.avg_pool2d(out, 2) if min(out.shape[-2:]) >= 2 else out


class CifarDenseNet(CifarNet):
    """``width`` is the growth rate (32 for DenseNet-121); the stem has 2·growth channels."""

    def __init__(
        self, blocks: tuple[int, ...], num_classes: int, width: int = 32, reduction: float = 0.5
    ) -> None:
        super().__init__()
        growth = width
        c = 2 * growth
        self.conv1 = _conv3(3, c)
        for i, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(_DenseLayer(c, growth))
                c += growth
            setattr(self, f"dense{i + 1}", nn.Sequential(*layers))
            if i < len(blocks) - 1:
                c_out = int(c * reduction)
                setattr(self, f"trans{i + 1}", _Transition(c, c_out))
                c = c_out
        self.n_blocks = len(blocks)
        self.bn = nn.BatchNorm2d(c)
        self.feat_dim = c
        self.head = nn.Linear(c, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        for i in range(self.n_blocks):
            h = getattr(self, f"dense{i + 1}")(h)
            if i < self.n_blocks - 1:
                h = getattr(self, f"trans{i + 1}")(h)
        return _pool(F.relu(self.bn(h)))


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class CifarArch:
    """One registered CIFAR architecture: its builder, default width and the name the CLAT
    paper prints for it (``RN18``; also the key of :data:`robustft.clat.criticality.PAPER_K`)."""

    build: Callable[[int, int | None], CifarNet]
    default_width: int
    paper_name: str


def _resnet(block, layers):
    return lambda nc, w: CifarResNet(block, layers, nc, 64 if w is None else w)


CIFAR_ARCHS: dict[str, CifarArch] = {
    "cifar_resnet18": CifarArch(_resnet(_ResBasic, (2, 2, 2, 2)), 64, "RN18"),
    "cifar_resnet50": CifarArch(_resnet(_ResBottleneck, (3, 4, 6, 3)), 64, "RN50"),
    "cifar_preact_resnet18": CifarArch(
        lambda nc, w: CifarPreActResNet((2, 2, 2, 2), nc, 64 if w is None else w), 64, "PreActRN18"
    ),
    # the same network as locuslab/fast_adversarial defines it (projection on the raw input)
    "cifar_preact_resnet18_fast": CifarArch(
        lambda nc, w: CifarPreActResNet(
            (2, 2, 2, 2), nc, 64 if w is None else w, shortcut="raw_input"
        ),
        64,
        "PreActRN18",
    ),
    "cifar_wrn34_10": CifarArch(lambda nc, w: CifarWideResNet(34, 10, nc, w), 160, "WRN34-10"),
    "cifar_wrn70_16": CifarArch(lambda nc, w: CifarWideResNet(70, 16, nc, w), 256, "WRN70-16"),
    "cifar_vgg19": CifarArch(
        lambda nc, w: CifarVGG(VGG19_PLAN, nc, 64 if w is None else w), 64, "VGG19"
    ),
    "cifar_densenet121": CifarArch(
        lambda nc, w: CifarDenseNet((6, 12, 24, 16), nc, 32 if w is None else w), 32, "DN121"
    ),
}


def build_cifar_model(
    arch: str,
    num_classes: int,
    *,
    width: int | None = None,
    lora=None,
    dual_bn=None,
    input_size: int | None = None,
) -> CifarNet:
    """Build a registered CIFAR architecture with a fresh ``num_classes``-way head.

    ``lora`` / ``dual_bn`` / ``input_size`` exist for signature compatibility with
    :func:`robustft.models.build_model` and must be unset: these 32-px models have no LoRA or
    frozen-BN branch and are never upsampled (an upsampled CIFAR net would silently cost 49×).
    """
    try:
        spec = CIFAR_ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown CIFAR arch {arch!r}; known: {sorted(CIFAR_ARCHS)}") from None
    if lora is not None:
        raise ValueError(f"{arch}: no built-in LoRA branch; use the lora_ft method instead")
    if dual_bn is not None:
        raise ValueError(f"{arch}: dual BN is not supported by the CIFAR models")
    if input_size is not None:
        raise ValueError(
            f"{arch}: input_size must be unset (CIFAR models run at the stored "
            f"resolution), got {input_size}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    model = spec.build(num_classes, width)
    model.arch = arch
    return model
