"""Tests for robustft.models: torchvision compatibility, checkpoint safety, LoRA, dual BN."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from robustft.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneError,
    DualBatchNorm2d,
    LoraConfig,
    LoraConv2d,
    build_model,
    load_backbone,
    lora_parameter_report,
    save_backbone,
)


def _fe_keys(sd: dict) -> set[str]:
    return {k for k in sd if not k.startswith("fc.")}


def _randomised_tv_resnet18() -> torchvision.models.ResNet:
    """torchvision resnet18 with non-trivial BN statistics/affines (so a skipped BN shows)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return tv.eval()


def _robustness_payload(sd: dict[str, torch.Tensor]) -> dict:
    """The Salman et al. / robustness-library layout; attacker copy deliberately differs."""
    model = {"module.model." + k: v.clone() for k, v in sd.items()}
    model |= {"module.attacker.model." + k: torch.zeros_like(v) for k, v in sd.items()}
    model["module.normalizer.new_mean"] = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    model["module.normalizer.new_std"] = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return {"model": model, "epoch": 1}


@pytest.fixture(scope="module")
def tv18() -> torchvision.models.ResNet:
    return _randomised_tv_resnet18()


@pytest.fixture(scope="module")
def robustness_ckpt(tmp_path_factory, tv18) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_linf_eps4.0.ckpt"
    torch.save(_robustness_payload(tv18.state_dict()), path)
    return path


# --------------------------------------------------------------------------- names / registry
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_parameter_names_match_torchvision(arch):
    tv_keys = _fe_keys(getattr(torchvision.models, arch)(weights=None).state_dict())
    ours = build_model(arch, 10).state_dict().keys()
    assert {k for k in ours if not k.startswith("head.")} == tv_keys
    assert {k for k in ours if k.startswith("head.")} == {"head.weight", "head.bias"}


def test_unknown_arch_and_bad_options():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg16", 10)
    with pytest.raises(ValueError):
        build_model("resnet_mini", 10, dual_bn="twins")
    with pytest.raises(ValueError):
        LoraConfig(coverage="everywhere")
    with pytest.raises(ValueError):
        LoraConfig(rank=0)


def test_resnet_mini_shapes_and_width():
    m = build_model("resnet_mini", 7, width=8)
    assert m.feat_dim == 64
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert m.features(torch.rand(2, 3, 32, 32)).shape == (2, 64)
    assert m.conv1.kernel_size == (3, 3) and isinstance(m.maxpool, torch.nn.Identity)


# --------------------------------------------------------------------------- checkpoints
def test_robustness_checkpoint_matches_torchvision(tv18, robustness_ckpt):
    model = build_model("resnet18", 10, lora=LoraConfig(rank=4), dual_bn="official")
    report = model.load_backbone(robustness_ckpt)
    assert "fc.weight" in report["ignored"]
    assert "layer1.0.conv1.weight" in report["loaded"]
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    tv = copy.deepcopy(tv18)
    tv.fc = torch.nn.Identity()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tv((x - mean) / std)
        torch.testing.assert_close(model.features(x), expected, rtol=1e-4, atol=1e-5)
        # B = 0 and freshly synced frozen BN (eval) reproduce the same features.
        torch.testing.assert_close(
            model.features(x, lora=True, bn="frozen"), expected, rtol=1e-4, atol=1e-5
        )
    # The frozen branch was initialised from the loaded statistics and affines.
    bn = model.layer2[0].downsample[1]
    ref = tv18.layer2[0].downsample[1]
    assert isinstance(bn, DualBatchNorm2d)
    torch.testing.assert_close(bn.frozen_mean, ref.running_mean)
    torch.testing.assert_close(bn.frozen_weight.detach(), ref.weight.detach())


def test_plain_torchvision_state_dict_loads(tmp_path, tv18):
    path = tmp_path / "tv.pth"
    torch.save(tv18.state_dict(), path)
    model = build_model("resnet18", 5).eval()
    load_backbone(model, path)
    torch.testing.assert_close(model.layer4[1].bn2.running_var, tv18.layer4[1].bn2.running_var)


def test_missing_tensor_is_named(tmp_path, tv18):
    sd = tv18.state_dict()
    del sd["layer3.1.bn2.running_var"]
    path = tmp_path / "broken.ckpt"
    torch.save(_robustness_payload(sd), path)
    model = build_model("resnet18", 10)
    before = model.conv1.weight.detach().clone()
    with pytest.raises(BackboneError, match=r"layer3\.1\.bn2\.running_var") as info:
        model.load_backbone(path)
    assert "broken.ckpt" in str(info.value)
    assert torch.equal(model.conv1.weight, before)  # nothing partially loaded


def test_shape_mismatch_is_named(tmp_path):
    path = tmp_path / "mini16.pt"
    save_backbone(build_model("resnet_mini", 10, width=16), path)
    with pytest.raises(BackboneError, match="shape mismatch.*conv1.weight"):
        load_backbone(build_model("resnet_mini", 10, width=8), path)


def test_save_backbone_roundtrip_into_other_variant(tmp_path):
    src = build_model("resnet_mini", 10, lora=LoraConfig(rank=2), dual_bn="paper")
    src.train()
    src(torch.rand(8, 3, 32, 32))  # move running stats away from init
    path = tmp_path / "backbone.pt"
    save_backbone(src, path)
    assert path.exists() and not (tmp_path / "backbone.pt.tmp").exists()
    saved = torch.load(path, weights_only=True)
    assert saved["arch"] == "resnet_mini"
    assert set(saved["state_dict"]) == set(build_model("resnet_mini", 3).state_dict()) - {
        "head.weight",
        "head.bias",
    }
    dst = build_model("resnet_mini", 3, lora=LoraConfig(coverage="official"), dual_bn="official")
    dst.load_backbone(path)
    x = torch.rand(2, 3, 32, 32)
    src.eval()
    dst.eval()
    with torch.no_grad():
        torch.testing.assert_close(dst.features(x), src.features(x))
        torch.testing.assert_close(dst.features(x, bn="frozen"), src.features(x))
    with pytest.raises(BackboneError, match="arch"):
        load_backbone(build_model("resnet18", 10), path)


def _write_marker(path: str) -> str:
    Path(path).write_text("pwned")
    return path


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (str(self.marker),))


def test_malicious_pickle_is_refused_without_executing(tmp_path):
    marker = tmp_path / "executed.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(BackboneError, match="evil.ckpt"):
        load_backbone(build_model("resnet_mini", 10), path)
    assert not marker.exists()


def test_non_weights_payload_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "comment": "no tensors here"}, path)
    with pytest.raises(BackboneError, match="notes.pt"):
        load_backbone(build_model("resnet_mini", 10), path)


# --------------------------------------------------------------------------- LoRA
def test_lora_zero_b_is_identity_then_differs():
    torch.manual_seed(1)
    m = build_model("resnet_mini", 10, lora=LoraConfig(rank=4)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x, lora=True), m(x, lora=False), rtol=0, atol=0)
        for mod in m.modules():
            if isinstance(mod, LoraConv2d):
                mod.lora_B.normal_(0, 0.1)
        assert (m(x, lora=True) - m(x, lora=False)).abs().max() > 1e-3
    # LoRA never leaks into the default (attack/eval) path.
    conv = m.layer1[0].conv1
    assert isinstance(conv, LoraConv2d)
    out = F.conv2d(torch.ones(1, 16, 4, 4), conv.conv.weight, padding=1)
    torch.testing.assert_close(conv(torch.ones(1, 16, 4, 4)), out)


def test_lora_shapes_and_scaling():
    conv = torch.nn.Conv2d(6, 10, 3, padding=1, bias=False)
    lc = LoraConv2d(conv, LoraConfig(rank=2, alpha=1.0))
    assert lc.lora_A.shape == (6, 18) and lc.lora_B.shape == (30, 6)
    assert lc.scaling == 0.5
    torch.nn.init.normal_(lc.lora_B)
    delta = (lc.lora_B @ lc.lora_A).view(10, 6, 3, 3) * 0.5
    x = torch.rand(1, 6, 5, 5)
    torch.testing.assert_close(lc(x, lora=True), F.conv2d(x, conv.weight + delta, padding=1))


def test_one_lora_conv_serves_the_branch_and_the_reparametrisation():
    """AutoLoRa's branch (update only for lora=True) and LoRA fine-tuning's always-on update
    are the same module; ``init`` picks the draw of A; ``merge_lora`` gives plain convs."""
    from robustft.models.lora import add_lora, merge_lora

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1))
    )
    plain = copy.deepcopy(net)
    torch.manual_seed(7)
    added = add_lora(
        net, ["0", "1.0"], LoraConfig(rank=2, alpha=4.0), init="kaiming", always_on=True
    )
    assert (
        [type(m) for m in (net[0], net[1][0])]
        == [LoraConv2d, LoraConv2d]
        == [type(m) for m in added]
    )
    torch.manual_seed(7)  # the draws of A: Kaiming-uniform, conv by conv in the given order
    a0 = torch.empty(6, 9)
    torch.nn.init.kaiming_uniform_(a0, a=5**0.5)
    assert torch.equal(net[0].lora_A, a0)
    x = torch.rand(2, 3, 5, 5)
    with torch.no_grad():
        for m in added:
            m.lora_B.normal_(0, 0.1)
        expected = net(x)  # always on: the plain forward, and lora=False too, see W0 + BA
        assert torch.equal(net[0](x, lora=False), net[0](x, lora=True))
        assert not torch.allclose(expected, plain(x), atol=1e-4)
    assert merge_lora(net) == 2
    assert [type(m) for m in (net[0], net[1][0])] == [torch.nn.Conv2d, torch.nn.Conv2d]
    assert set(net.state_dict()) == set(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected)
    # a branch conv (AutoLoRa) is never merged, and N(0, 1) is its draw of A
    conv = torch.nn.Conv2d(3, 4, 3)
    torch.manual_seed(3)
    branch = LoraConv2d(conv, LoraConfig(rank=1))
    torch.manual_seed(3)
    assert torch.equal(branch.lora_A, torch.randn(3, 9)) and not branch.always_on
    holder = torch.nn.Sequential(branch)
    assert merge_lora(holder) == 0 and holder[0] is branch
    with pytest.raises(ValueError, match="init"):
        LoraConv2d(torch.nn.Conv2d(3, 4, 3), LoraConfig(rank=1), init="uniform")


@pytest.mark.parametrize(("rank", "paper"), [(2, 1.30), (4, 2.49), (8, 4.87), (16, 9.62)])
def test_lora_param_ratio_table3(rank, paper):
    rep = lora_parameter_report(build_model("resnet18", 10, lora=LoraConfig(rank=rank)))
    assert rep["fe_params"] == 11_176_512
    assert abs(rep["ratio_percent"] - paper) < 0.2
    if rank == 8:
        assert rep["lora_params"] == 531_456  # spec section 3 "declared" count


@pytest.mark.parametrize(
    ("arch", "n_official", "n_paper", "used"),
    [("resnet18", 8, 19, 276_480), ("resnet50", 12, 52, 215_040)],
)
def test_lora_coverage(arch, n_official, n_paper, used):
    off = build_model(arch, 10, lora=LoraConfig(coverage="official"))
    rep = lora_parameter_report(off)
    assert rep["wrapped_convs"] == n_official and rep["lora_params"] == used
    last = off.layer2[-1]
    assert isinstance(last.conv1, LoraConv2d) and not isinstance(off.layer2[0].conv1, LoraConv2d)
    assert not isinstance(off.layer2[0].downsample[0], LoraConv2d)
    assert not isinstance(off.conv1, LoraConv2d)
    paper = build_model(arch, 10, lora=LoraConfig(coverage="paper"))
    assert lora_parameter_report(paper)["wrapped_convs"] == n_paper
    assert isinstance(paper.layer2[0].downsample[0], LoraConv2d)


def test_parameter_groups_partition():
    m = build_model("resnet_mini", 10, lora=LoraConfig(), dual_bn="official")
    groups = [
        list(m.feature_extractor_parameters()),
        list(m.lora_parameters()),
        list(m.head.parameters()),
    ]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    counts = m.count_parameters()
    assert counts["total"] == sum(p.numel() for p in m.parameters())
    assert counts["head"] == 128 * 10 + 10


def test_branch_flags_validated():
    plain = build_model("resnet_mini", 10)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="dual_bn"):
        plain(x, bn="frozen")
    with pytest.raises(ValueError, match="LoraConfig"):
        plain(x, lora=True)
    with pytest.raises(ValueError):
        build_model("resnet_mini", 10, dual_bn="paper")(x, bn="target")


# --------------------------------------------------------------------------- dual BN
def test_frozen_branch_unaffected_by_adaptive_training():
    torch.manual_seed(2)
    m = build_model("resnet_mini", 10, dual_bn="paper")
    x = torch.rand(4, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        before = m(x, bn="frozen")
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(8, 3, 32, 32) * 0.5, bn="adaptive")  # updates running stats
        m(torch.rand(8, 3, 32, 32), bn="frozen")  # frozen branch never updates anything
        after_train_mode = m(x, bn="frozen")  # train mode: still the frozen statistics
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x, bn="frozen"), before)
        torch.testing.assert_close(after_train_mode, before)
        assert (m(x, bn="adaptive") - before).abs().max() > 1e-4  # adaptive stats did move
    m.sync_frozen_bn()
    with torch.no_grad():
        torch.testing.assert_close(m(x, bn="frozen"), m(x, bn="adaptive"))


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_dual_bn_gradient_flow(mode):
    m = build_model("resnet_mini", 10, dual_bn=mode).train()
    bn = m.layer1[0].bn1
    m(torch.rand(4, 3, 32, 32), bn="frozen").square().mean().backward()
    if mode == "paper":  # Eq. 2: theta-bar shares gamma/beta with theta
        assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
        assert not hasattr(bn, "frozen_weight")
    else:  # spec section 6: separate trainable gamma/beta for the frozen branch
        assert bn.weight.grad is None and bn.bias.grad is None
        assert bn.frozen_weight.grad.abs().sum() > 0 and bn.frozen_bias.grad is not None
        m.zero_grad(set_to_none=True)
        m(torch.rand(4, 3, 32, 32), bn="adaptive").square().mean().backward()
        assert bn.frozen_weight.grad is None and bn.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- input pipeline
def test_resize_and_normalisation_inside_model():
    torch.manual_seed(3)
    small = build_model("resnet_mini", 10, input_size=64).eval()
    ref = build_model("resnet_mini", 10).eval()
    ref.load_state_dict(small.state_dict())
    x = torch.rand(2, 3, 32, 32)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2
    with torch.no_grad():
        torch.testing.assert_close(small(x), ref(up))
        torch.testing.assert_close(small(up), ref(up))  # already at size: no-op
        # clamping to [0, 1] happens before normalisation
        torch.testing.assert_close(ref(x * 3 - 1), ref((x * 3 - 1).clamp(0, 1)))
    assert small(x).shape == (2, 10)
