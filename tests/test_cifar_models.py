"""CLAT's CIFAR architectures: shapes, parameter counts and the layer numbering of spec §1.2."""

from __future__ import annotations

import pytest
import torch

from robustft.clat.layers import (
    candidate_layers,
    following_batchnorm,
    layer_index,
    layer_parameters,
)
from robustft.models import CIFAR_ARCHS, build_model

TINY = {
    "cifar_resnet18": 4,
    "cifar_resnet50": 2,
    "cifar_preact_resnet18": 4,
    "cifar_preact_resnet18_fast": 4,
    "cifar_wrn34_10": 4,
    "cifar_wrn70_16": 2,
    "cifar_vgg19": 4,
    "cifar_densenet121": 2,
}


@pytest.mark.parametrize("arch", sorted(CIFAR_ARCHS))
def test_tiny_models_forward_and_interface(arch):
    torch.manual_seed(0)
    model = build_model(arch, 7, width=TINY[arch])
    assert model.arch == arch
    x = torch.rand(2, 3, 8, 8)
    assert model(x).shape == (2, 7)
    layers = candidate_layers(model)
    assert layers[-1][1] is model.head  # A14: the final linear is the last candidate
    assert all("shortcut" not in n.lower() for n, _ in layers)
    fe = {id(p) for p in model.feature_extractor_parameters()}
    assert fe.isdisjoint(id(p) for p in model.head.parameters())
    assert len(fe) + 2 == len(list(model.parameters()))
    assert list(model.lora_parameters()) == []
    with pytest.raises(ValueError, match="LoRA"):
        model(x, lora=True)
    with pytest.raises(ValueError, match="frozen-BN"):
        model(x, bn="frozen")


def test_unsupported_build_options_raise():
    with pytest.raises(ValueError, match="input_size"):
        build_model("cifar_resnet18", 10, input_size=224)
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("cifar_resnet19", 10)


def test_full_size_counts_match_clat_table6():
    """Spec §1.2: RN18 layer 11 = layer3.0.conv2 with 589,824 weights (Table 6's 590K);
    RN50 {34, 41, 3} = 823,296 (Table 6's 823K); totals 11.2M / 23.7M (100 classes)."""
    rn18 = build_model("cifar_resnet18", 10)
    layers = candidate_layers(rn18)
    assert len(layers) == 18
    name, conv = layers[11 - 1]
    assert name == "layer3.0.conv2" and conv.weight.numel() == 589_824
    assert layer_index(rn18)["layer3.1.conv1"] == 12
    # A6: conv weight + its BN's γ/β
    assert sum(p.numel() for p in layer_parameters(rn18, [name])) == 590_336
    assert sum(p.numel() for p in layer_parameters(rn18, [name], include_bn=False)) == 589_824
    assert round(sum(p.numel() for p in rn18.parameters()) / 1e5) == 112

    rn50 = build_model("cifar_resnet50", 100)
    layers = candidate_layers(rn50)
    assert len(layers) == 50
    assert sum(layers[i - 1][1].weight.numel() for i in (34, 41, 3)) == 823_296
    assert [layers[i - 1][0] for i in (34, 41, 3)] == [
        "layer3.3.conv3",
        "layer4.0.conv1",
        "layer1.0.conv2",
    ]
    assert round(sum(p.numel() for p in rn50.parameters()) / 1e5) == 237


def test_densenet_and_wrn_numbering_at_tiny_width():
    """Numbering does not depend on width: DN121's Table-3 indices map to transitions."""
    dn = build_model("cifar_densenet121", 10, width=2)
    layers = candidate_layers(dn)
    assert len(layers) == 121
    assert [layers[i - 1][0] for i in (39, 14, 1, 3, 88)] == [
        "trans2.conv",
        "trans1.conv",
        "conv1",
        "dense1.0.conv2",
        "trans3.conv",
    ]
    wrn = build_model("cifar_wrn34_10", 10, width=4)
    names = [n for n, _ in candidate_layers(wrn)]
    assert len(names) == 32 and "block1.layer.3.conv2" in names  # RiFT README's module
    vgg = build_model("cifar_vgg19", 10, width=4)
    assert len(candidate_layers(vgg)) == 17


def test_following_batchnorm_is_the_bn_applied_to_the_raw_output():
    rn = build_model("cifar_resnet18", 3, width=4)
    bns = following_batchnorm(rn, torch.zeros(2, 3, 8, 8))
    assert bns["layer3.0.conv2"] is rn.layer3[0].bn2
    assert "head" not in bns
    # pre-activation: conv1 feeds bn2 directly, conv2 feeds the residual addition
    pre = build_model("cifar_preact_resnet18", 3, width=4)
    bns = following_batchnorm(pre, torch.zeros(2, 3, 8, 8))
    assert bns["layer2.0.conv1"] is pre.layer2[0].bn2
    assert not any(name.endswith("conv2") for name in bns)
