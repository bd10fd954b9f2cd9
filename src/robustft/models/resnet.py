"""ResNet feature extractor + new linear head, with per-call LoRA / dual-BN routing.

Parameter names follow torchvision exactly (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ...) so that torchvision and Salman et al. (robustness library)
ImageNet checkpoints map one-to-one. The ImageNet 1000-way ``fc`` is not built: it is never used
in the forward pass of any method (spec section 1, step 3), and the checkpoint loader ignores it.
The downstream classifier is a fresh ``head = nn.Linear(feat_dim, num_classes)`` (PyTorch default
init).

Every forward takes the branch explicitly: ``lora`` (AutoLoRa Sec. 4.1: theta_1 + BA vs theta_1)
and ``bn`` (TWINS Eq. 2: adaptive theta vs frozen theta-bar). They are passed down through the
blocks as arguments; nothing is stored on the modules, so concurrent callers cannot interfere.

Inputs are images in [0, 1] at the stored resolution. Inside the model they are optionally
nearest-upsampled to ``input_size`` (official AutoLoRa quirk, spec section 1), clamped to
[0, 1] and normalised with the ImageNet mean/std, so attacks operate in pixel space.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .dual_bn import BN_BRANCHES, DUAL_BN_MODES, BNBranch, DualBatchNorm2d, DualBNMode, run_bn
from .lora import LoraConfig, LoraConv2d, lora_modules, run_conv

if TYPE_CHECKING:
    from .cifar import CifarNet

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

NormFactory = Callable[[int], nn.BatchNorm2d]


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class _Block(nn.Module):
    """Shared pieces of the two residual blocks."""

    expansion: int = 1
    conv_names: tuple[str, ...] = ()
    downsample: nn.Sequential | None

    def _make_downsample(self, c_in: int, c_out: int, stride: int, norm: NormFactory) -> None:
        # torchvision: a 1x1 projection whenever the shape changes.
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(_conv1x1(c_in, c_out, stride), norm(c_out))
        else:
            self.downsample = None

    def _shortcut(self, x: torch.Tensor, lora: bool, bn: BNBranch) -> torch.Tensor:
        if self.downsample is None:
            return x
        return run_bn(self.downsample[1], run_conv(self.downsample[0], x, lora), bn)


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34); stride on conv1, as in torchvision."""

    expansion = 1
    conv_names = ("conv1", "conv2")

    def __init__(self, c_in: int, planes: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self._make_downsample(c_in, planes, stride, norm)

    def forward(self, x: torch.Tensor, *, lora: bool, bn: BNBranch) -> torch.Tensor:
        out = F.relu(run_bn(self.bn1, run_conv(self.conv1, x, lora), bn))
        out = run_bn(self.bn2, run_conv(self.conv2, out, lora), bn)
        return F.relu(out + self._shortcut(x, lora, bn))


class Bottleneck(_Block):
    """1x1 -> 3x3 -> 1x1 (ResNet-50); stride on the 3x3 conv (torchvision "v1.5")."""

    expansion = 4
    conv_names = ("conv1", "conv2", "conv3")

    def __init__(self, c_in: int, planes: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = _conv1x1(c_in, planes)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = _conv1x1(planes, c_out)
        self.bn3 = norm(c_out)
        self._make_downsample(c_in, c_out, stride, norm)

    def forward(self, x: torch.Tensor, *, lora: bool, bn: BNBranch) -> torch.Tensor:
        out = F.relu(run_bn(self.bn1, run_conv(self.conv1, x, lora), bn))
        out = F.relu(run_bn(self.bn2, run_conv(self.conv2, out, lora), bn))
        out = run_bn(self.bn3, run_conv(self.conv3, out, lora), bn)
        return F.relu(out + self._shortcut(x, lora, bn))


@dataclass(frozen=True)
class ArchSpec:
    """Static description of one architecture in the registry."""

    block: type[BasicBlock | Bottleneck]
    layers: tuple[int, ...]
    stem: Literal["imagenet", "cifar"]
    width: int = 64  # channels of the first stage; stage i has width * 2**i planes


ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec(BasicBlock, (2, 2, 2, 2), "imagenet"),
    "resnet50": ArchSpec(Bottleneck, (3, 4, 6, 3), "imagenet"),
    # CPU demo/test model: CIFAR stem, one BasicBlock per stage, 16/32/64/128 channels.
    "resnet_mini": ArchSpec(BasicBlock, (1, 1, 1, 1), "cifar", width=16),
}


class RobustNet(nn.Module):
    """Pretrained ResNet feature extractor f_theta1 + linear classifier g_theta2 (paper Sec. 3.1).

    ``forward(x, lora=False, bn="adaptive")`` is what attacks and evaluation use; the LoRA branch
    (``lora=True``) and the frozen-BN branch (``bn="frozen"``) must be requested explicitly.
    """

    def __init__(
        self,
        spec: ArchSpec,
        num_classes: int,
        *,
        arch: str = "custom",
        lora: LoraConfig | None = None,
        dual_bn: DualBNMode | None = None,
        input_size: int | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if dual_bn is not None and dual_bn not in DUAL_BN_MODES:
            raise ValueError(f"dual_bn must be None or one of {DUAL_BN_MODES}, got {dual_bn!r}")
        if input_size is not None and input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        width = spec.width if width is None else width
        self.arch = arch
        self.lora_config = lora
        self.dual_bn = dual_bn
        self.input_size = input_size

        def norm(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c) if dual_bn is None else DualBatchNorm2d(c, mode=dual_bn)

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = norm(width)

        c_in = width
        self.stages: list[str] = []
        for i, n_blocks in enumerate(spec.layers):
            planes = width * 2**i
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(spec.block(c_in, planes, stride, norm))
                c_in = planes * spec.block.expansion
            name = f"layer{i + 1}"
            setattr(self, name, nn.Sequential(*blocks))
            self.stages.append(name)
        self.feat_dim = c_in

        self._init_pretrain_style()
        if lora is not None:
            self._wrap_lora(lora)
        self.head = nn.Linear(self.feat_dim, num_classes)  # PyTorch default init
        self.sync_frozen_bn()

    # ------------------------------------------------------------------ construction helpers
    def _init_pretrain_style(self) -> None:
        """torchvision's init (only matters when no checkpoint is loaded, e.g. in tests)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _wrap_lora(self, config: LoraConfig) -> None:
        """Replace the covered convs by ``LoraConv2d`` (names keep their slot and order)."""
        for stage_name in self.stages:
            stage = getattr(self, stage_name)
            for j, block in enumerate(stage):
                last = j == len(stage) - 1
                if config.coverage == "paper" or last:
                    for conv_name in block.conv_names:
                        setattr(block, conv_name, LoraConv2d(getattr(block, conv_name), config))
                if config.coverage == "paper" and block.downsample is not None:
                    block.downsample[0] = LoraConv2d(block.downsample[0], config)

    # ------------------------------------------------------------------ forward
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> (resized,) clamped, ImageNet-normalised network input."""
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size,) * 2:
            x = F.interpolate(x, size=self.input_size)  # mode 'nearest', as the official code
        x = x.clamp(0.0, 1.0)
        return (x - self.mean) / self.std

    def features(
        self, x: torch.Tensor, *, lora: bool = False, bn: BNBranch = "adaptive"
    ) -> torch.Tensor:
        """Penultimate (pooled) feature vector f_theta1(x), shape (N, feat_dim)."""
        if bn not in BN_BRANCHES:
            raise ValueError(f"bn must be one of {BN_BRANCHES}, got {bn!r}")
        if bn == "frozen" and self.dual_bn is None:
            raise ValueError("bn='frozen' needs a model built with dual_bn='paper' or 'official'")
        if lora and self.lora_config is None:
            raise ValueError("lora=True needs a model built with a LoraConfig")
        h = self.preprocess(x)
        h = self.maxpool(F.relu(run_bn(self.bn1, self.conv1(h), bn)))
        for stage_name in self.stages:
            for block in getattr(self, stage_name):
                h = block(h, lora=lora, bn=bn)
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)

    def forward(
        self, x: torch.Tensor, *, lora: bool = False, bn: BNBranch = "adaptive"
    ) -> torch.Tensor:
        """Logits h_theta(x) = g_theta2(f_theta1(x)) on the requested branches."""
        return self.head(self.features(x, lora=lora, bn=bn))

    # ------------------------------------------------------------------ parameter groups
    def lora_parameters(self) -> Iterator[nn.Parameter]:
        """A and B of every LoRA conv (trained by the natural objective, Eq. 5)."""
        for _, m in lora_modules(self):
            yield m.lora_A
            yield m.lora_B

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.head.parameters()

    def feature_extractor_parameters(self) -> Iterator[nn.Parameter]:
        """theta_1: every parameter that is neither LoRA nor head (conv W, BN gamma/beta,
        and the frozen-branch gamma/beta of official dual BN)."""
        excluded = {id(p) for p in self.lora_parameters()} | {id(p) for p in self.head_parameters()}
        for p in self.parameters():
            if id(p) not in excluded:
                yield p

    def count_parameters(self) -> dict[str, int]:
        """Number of scalars per parameter group (running statistics not included)."""
        fe = sum(p.numel() for p in self.feature_extractor_parameters())
        lo = sum(p.numel() for p in self.lora_parameters())
        hd = sum(p.numel() for p in self.head_parameters())
        return {"feature_extractor": fe, "lora": lo, "head": hd, "total": fe + lo + hd}

    # ------------------------------------------------------------------ dual BN / checkpoints
    def sync_frozen_bn(self) -> None:
        """Re-initialise every frozen BN branch from the current running statistics
        (and gamma/beta in official mode). ``load_backbone`` calls this."""
        for m in self.modules():
            if isinstance(m, DualBatchNorm2d):
                m.sync_frozen()

    def load_backbone(self, path: str | os.PathLike[str]) -> dict[str, list[str]]:
        """Load pretrained FE weights; see :func:`robustft.models.checkpoint.load_backbone`."""
        from .checkpoint import load_backbone

        return load_backbone(self, path)


def build_model(
    arch: str,
    num_classes: int,
    *,
    lora: LoraConfig | None = None,
    dual_bn: DualBNMode | None = None,
    input_size: int | None = None,
    width: int | None = None,
) -> RobustNet | CifarNet:
    """Build a registered architecture (``ARCHS``, or ``CIFAR_ARCHS`` of
    :mod:`robustft.models.cifar`) with a fresh ``num_classes``-way head.

    ``width`` overrides the first-stage channel count (meant for ``resnet_mini``; changing it
    for resnet18/50 makes pretrained checkpoints incompatible).
    """
    if arch not in ARCHS:
        from .cifar import CIFAR_ARCHS, build_cifar_model  # CLAT's 32-px models

        if arch in CIFAR_ARCHS:
            return build_cifar_model(
                arch, num_classes, lora=lora, dual_bn=dual_bn, input_size=input_size, width=width
            )
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS) + sorted(CIFAR_ARCHS)}")
    spec = ARCHS[arch]
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return RobustNet(
        spec, num_classes, arch=arch, lora=lora, dual_bn=dual_bn, input_size=input_size, width=width
    )
