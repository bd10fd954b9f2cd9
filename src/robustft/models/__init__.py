"""Models: torchvision-compatible ResNets with an explicit LoRA branch and dual BN, and the
32-px CIFAR architectures of CLAT and its baselines.

Owns every architecture and its registry (:data:`ARCHS`, :data:`CIFAR_ARCHS`), the LoRA conv,
dual BN and the model files (:mod:`.checkpoint`). See ``ARCHITECTURE.md`` (section "Models")
for the contract; the public entry point is :func:`build_model`. CLAT's layer numbering is not
here but in :mod:`robustft.clat.layers` (this package never imports :mod:`robustft.clat`).
"""

from .checkpoint import BackboneError, backbone_state_dict, load_backbone, save_backbone
from .cifar import CIFAR_ARCHS, CifarNet, build_cifar_model
from .dual_bn import DualBatchNorm2d
from .lora import LoraConfig, LoraConv2d, lora_parameter_report
from .resnet import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArchSpec,
    BasicBlock,
    Bottleneck,
    RobustNet,
)
from .resnet import build_model as _build_registered


def build_model(arch: str, num_classes: int, **kwargs):
    """:func:`robustft.models.resnet.build_model` for the registered architectures, plus the
    RobustBench zoo's (``robustbench.<dataset>.<threat model>.<name>``, built by the
    ``robustbench`` package: :mod:`.robustbench`), which take no LoRA, dual BN, width or
    input size."""
    from .robustbench import ARCH_PREFIX, build_zoo_architecture

    if not arch.startswith(ARCH_PREFIX):
        return _build_registered(arch, num_classes, **kwargs)
    extra = {k: v for k, v in kwargs.items() if v is not None}
    if extra:
        raise ValueError(f"{arch}: a RobustBench model takes no {sorted(extra)}")
    return build_zoo_architecture(arch, num_classes)


__all__ = [
    "ARCHS",
    "CIFAR_ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArchSpec",
    "BackboneError",
    "BasicBlock",
    "Bottleneck",
    "CifarNet",
    "DualBatchNorm2d",
    "LoraConfig",
    "LoraConv2d",
    "RobustNet",
    "backbone_state_dict",
    "build_cifar_model",
    "build_model",
    "load_backbone",
    "lora_parameter_report",
    "save_backbone",
]
