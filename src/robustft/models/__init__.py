"""Models: torchvision-compatible ResNets with an explicit LoRA branch and dual BN.

See ``ARCHITECTURE.md`` (section "Models") for the contract; the public entry point is
:func:`build_model`.
"""

from .checkpoint import BackboneError, backbone_state_dict, load_backbone, save_backbone
from .cifar import CIFAR_ARCHS, CifarNet, build_cifar_model, candidate_layers, layer_index
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
    "candidate_layers",
    "layer_index",
    "load_backbone",
    "lora_parameter_report",
    "save_backbone",
]
