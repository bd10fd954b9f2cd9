"""Models: torchvision-compatible ResNets with an explicit LoRA branch and dual BN.

See ``ARCHITECTURE.md`` (section "Models") for the contract; the public entry point is
:func:`build_model`.
"""

from .checkpoint import BackboneError, backbone_state_dict, load_backbone, save_backbone
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
    build_model,
)

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArchSpec",
    "BackboneError",
    "BasicBlock",
    "Bottleneck",
    "DualBatchNorm2d",
    "LoraConfig",
    "LoraConv2d",
    "RobustNet",
    "backbone_state_dict",
    "build_model",
    "load_backbone",
    "lora_parameter_report",
    "save_backbone",
]
