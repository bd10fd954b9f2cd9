"""CLAT baselines follow their reference code where it makes a choice (issue 8, items 4 and 6).

* TRADES (``yaodongyu/TRADES`` trades.py) and MART (``YisenWang/MART`` mart.py) take the first
  gradient at the raw start x + 0.001·N(0, I), not at its projection onto [0, 1];
* AT-AWP (``csdongxian/AWP`` AT_AWP/train_cifar10.py) crafts with BN in train mode, TRADES-AWP
  (trades_AWP/train_trades_cifar.py) in eval mode, and TRADES-AWP's warm-up counts epochs from 1;
* PreAct ResNet-18: robust_overfitting's projection shortcut sees relu(bn1(x)), Fast-AT's
  (``locuslab/fast_adversarial`` CIFAR10/preact_resnet.py) sees the raw block input x.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft import plan
from robustft.attacks import PGDConfig
from robustft.clat.layers import candidate_layers
from robustft.methods import METHODS, TrainContext, build_method
from robustft.models import build_model
from robustft.models.cifar import _PreActBlock

ROOT = Path(__file__).resolve().parents[1]
EPS, STEP = 8 / 255, 2 / 255


def ctx(steps=1, epoch=0, seed=0):
    return TrainContext(
        train_attack=PGDConfig(EPS, STEP, steps, True),
        generator=torch.Generator().manual_seed(seed),
        batch_size=4,
        epoch=epoch,
    )


class Spy(nn.Module):
    """Records every input the attack feeds the network and the train/eval mode it saw."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.inputs: list[torch.Tensor] = []
        self.modes: list[bool] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        self.modes.append(self.training)
        return self.net(x)


def tiny_spy() -> Spy:
    torch.manual_seed(0)
    return Spy(build_model("resnet_mini", 5, width=4)).train()


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 8, 8, generator=g)
    x[:, :, 0, :] = 0.0  # a row of black pixels: the Gaussian start pushes half of them below 0
    return x, torch.randint(0, 5, (4,), generator=g)


def gaussian_start(x, seed=0):
    """The reference start x + 0.001·N(0, I) with the stream ``ctx(seed=...)`` hands out."""
    return x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


# --- TRADES / MART: where the first gradient is taken ----------------------------------------
# TRADES' attack first predicts the clean batch (no gradient), then starts the ascent.
FIRST_ATTACK_INPUT = {"trades": 1, "mart": 0}


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_first_gradient_at_unclipped_start_by_default(method):
    spy, (x, y) = tiny_spy(), batch()
    build_method(method).batch_loss(spy, x, y, ctx())
    start = spy.inputs[FIRST_ATTACK_INPUT[method]]
    raw = gaussian_start(x)
    assert raw.min() < 0  # the case that distinguishes the two behaviours exists
    assert torch.equal(start, raw)
    assert start.min() < 0


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_first_gradient_at_clipped_start_with_project_start(method):
    spy, (x, y) = tiny_spy(), batch()
    build_method(method, project_start=True).batch_loss(spy, x, y, ctx())
    start = spy.inputs[FIRST_ATTACK_INPUT[method]]
    assert torch.equal(start, gaussian_start(x).clamp(0, 1))
    assert start.min() >= 0


@pytest.mark.parametrize("method", ["trades", "mart", "trades_awp"])
def test_attack_result_is_a_valid_image_either_way(method):
    spy, (x, y) = tiny_spy(), batch()
    m = build_method(method)
    x_adv = (
        m.craft(spy, x, y, ctx()) if method == "trades_awp" else _trades_or_mart_adv(m, spy, x, y)
    )
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= EPS + 1e-6


def _trades_or_mart_adv(m, spy, x, y):
    m.batch_loss(spy, x, y, ctx())
    # the update's forward passes come last: clean, then adversarial
    return spy.inputs[-1]


def test_project_start_must_be_boolean():
    with pytest.raises(TypeError, match=r"trades\.project_start"):
        build_method("trades", project_start="no")


# --- AWP: BN mode while crafting, warm-up epoch ----------------------------------------------
def test_at_awp_crafts_in_train_mode_and_moves_bn_statistics():
    spy, (x, y) = tiny_spy(), batch()
    spy.eval()  # craft() chooses the mode itself and restores the caller's
    before = {k: v.clone() for k, v in spy.state_dict().items() if "running_mean" in k}
    build_method("awp").craft(spy, x, y, ctx(steps=2))
    assert spy.modes == [True, True]
    assert not spy.training
    after = spy.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())


def test_at_awp_eval_option_keeps_bn_statistics():
    spy, (x, y) = tiny_spy(), batch()
    before = {k: v.clone() for k, v in spy.state_dict().items()}
    build_method("awp", attack_bn="eval").craft(spy, x, y, ctx(steps=2))
    assert spy.modes == [False, False]
    assert spy.training
    assert all(torch.equal(spy.state_dict()[k], v) for k, v in before.items())


def test_trades_awp_crafts_in_eval_mode_from_the_raw_start():
    spy, (x, y) = tiny_spy(), batch()
    build_method("trades_awp").craft(spy, x, y, ctx(steps=2))
    assert spy.modes == [False, False, False]  # clean prediction + 2 steps
    assert torch.equal(spy.inputs[1], gaussian_start(x))


def test_at_awp_train_mode_attack_is_pgd_from_the_uniform_start():
    """The reference's attack_pgd: δ ~ U(−ε, ε), x + δ clipped to [0, 1], sign steps of CE."""
    torch.manual_seed(0)
    net = build_model("resnet_mini", 5, width=4).train()
    x, y = batch()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    got = build_method("awp").craft(net, x, y, ctx(steps=2))
    net.load_state_dict(state)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    xa = (x + (2 * u - 1) * EPS).clamp(0, 1)
    for _ in range(2):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(net(xa), y), xa)
        xa = torch.min(torch.max(xa.detach() + STEP * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    assert torch.allclose(got, xa, atol=1e-6)


def test_trades_awp_warmup_starts_with_the_reference_epoch():
    """train_trades_cifar.py: epochs 1, 2, ... and AWP when ``epoch >= 10`` → 0-based epoch 9."""
    m = build_method("trades_awp")
    assert not m.active(ctx(epoch=8)) and m.active(ctx(epoch=9))
    spy, (x, y) = tiny_spy(), batch()
    assert m.batch_loss(spy, x, y, ctx(epoch=8)).stats["awp_rel_norm"] == 0.0
    assert m.batch_loss(spy, x, y, ctx(epoch=9)).stats["awp_rel_norm"] == 5e-3
    late = build_method("trades_awp", epoch_origin=0)  # the earlier, one-epoch-late start
    assert not late.active(ctx(epoch=9)) and late.active(ctx(epoch=10))


def test_at_awp_counts_epochs_from_zero():
    """AT_AWP/train_cifar10.py: ``for epoch in range(0, ...)`` with ``epoch >= awp_warmup``."""
    assert build_method("awp").active(ctx(epoch=0))
    m = build_method("awp", warmup=3)
    assert not m.active(ctx(epoch=2)) and m.active(ctx(epoch=3))


@pytest.mark.parametrize(
    "params, key",
    [
        ({"attack_bn": "training"}, "awp.attack_bn"),
        ({"epoch_origin": 2}, "awp.epoch_origin"),
        ({"epoch_origin": True}, "awp.epoch_origin"),
    ],
)
def test_awp_options_are_checked(params, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_method("awp", **params)


# --- presets: official = the reference code, and the method defaults agree --------------------
def test_official_preset_and_defaults_are_the_reference_choices():
    official = plan.PRESETS["official"]["methods"]
    expected = {
        "trades": {"project_start": False},
        "mart": {"project_start": False},
        "awp": {"attack_bn": "train", "epoch_origin": 0},
        "trades_awp": {"project_start": False, "attack_bn": "eval", "epoch_origin": 1},
    }
    for method, options in expected.items():
        assert official[method] == options
        assert {k: METHODS[method].defaults[k] for k in options} == options


def test_clat_baseline_runs_resolve_the_reference_choices():
    cfg = plan.load_config(ROOT / "config.yaml")
    assert cfg["preset"] == "official"
    for variant, options in [
        ("trades", {"project_start": False}),
        ("mart", {"project_start": False}),
        ("at-awp", {"attack_bn": "train", "epoch_origin": 0}),
    ]:
        run = plan.Run("clat_paper", "cifar10_32", "cifar_rn18", variant, 0)
        params = plan.train_settings(cfg, run).method_params
        assert {k: params[k] for k in options} == options, variant


# --- PreAct ResNet-18: which input the projection shortcut sees --------------------------------
def _hand_block(block: _PreActBlock, x: torch.Tensor, shortcut_input: str) -> torch.Tensor:
    """relu(bn) in eval mode written out; the residual branch plus the 1×1 projection."""

    def bn_relu(bn, h):
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        return torch.relu(h * scale[:, None, None] + shift[:, None, None])

    act = bn_relu(block.bn1, x)
    mid = bn_relu(block.bn2, F.conv2d(act, block.conv1.weight, padding=1))
    residual = F.conv2d(mid, block.conv2.weight, padding=1)
    source = act if shortcut_input == "preact_input" else x
    return residual + F.conv2d(source, block.shortcut[0].weight)


@pytest.mark.parametrize("shortcut", ["preact_input", "raw_input"])
def test_preact_block_projection_input_by_hand(shortcut):
    torch.manual_seed(0)
    block = _PreActBlock(2, 3, 1, shortcut).eval()
    with torch.no_grad():  # BN statistics that make relu(bn1(x)) clearly differ from x
        block.bn1.running_mean.copy_(torch.tensor([0.5, -0.3]))
        block.bn1.running_var.copy_(torch.tensor([2.0, 0.5]))
        block.bn1.weight.copy_(torch.tensor([1.5, -0.7]))
        block.bn1.bias.copy_(torch.tensor([0.2, 0.1]))
    x = torch.randn(2, 2, 5, 5)
    with torch.no_grad():
        got = block(x)
        assert torch.allclose(got, _hand_block(block, x, shortcut), atol=1e-5)
        other = "raw_input" if shortcut == "preact_input" else "preact_input"
        assert not torch.allclose(got, _hand_block(block, x, other), atol=1e-3)


def test_preact_variants_share_parameters_and_layer_numbering():
    torch.manual_seed(0)
    default = build_model("cifar_preact_resnet18", 10, width=4)
    fast = build_model("cifar_preact_resnet18_fast", 10, width=4)
    shapes = {k: v.shape for k, v in default.state_dict().items()}
    assert shapes == {k: v.shape for k, v in fast.state_dict().items()}
    assert "layer2.0.shortcut.0.weight" in shapes  # the reference files' parameter name
    assert [n for n, _ in candidate_layers(default)] == [n for n, _ in candidate_layers(fast)]
    assert len(candidate_layers(default)) == 18  # 17 convs (no shortcuts) + the head
    assert default.layer2[0].shortcut_input == "preact_input"
    assert fast.layer2[0].shortcut_input == "raw_input"
    # same weights, different function: the projection blocks see different inputs
    fast.load_state_dict(default.state_dict())
    default.eval(), fast.eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(default(x), fast(x), atol=1e-4)
    # full size, counted from the reference layout: 3×3 stem, 4 stages of 2 blocks (bn1, conv1,
    # bn2, conv2, a 1×1 projection when the shape changes), final BN, 10-way linear
    total, c_in = 3 * 64 * 9, 64
    for planes in (64, 128, 256, 512):
        total += 2 * c_in + 9 * c_in * planes + 2 * planes + 9 * planes**2
        total += c_in * planes if c_in != planes else 0
        total += 2 * planes + 9 * planes**2 + 2 * planes + 9 * planes**2
        c_in = planes
    total += 2 * 512 + 512 * 10 + 10
    for arch in ("cifar_preact_resnet18", "cifar_preact_resnet18_fast"):
        assert sum(p.numel() for p in build_model(arch, 10).parameters()) == total


def test_fast_at_definition_is_selectable_from_the_config():
    cfg = plan.load_config(ROOT / "config.yaml")
    assert cfg["backbones"]["cifar_preact_rn18_fast"]["arch"] == "cifar_preact_resnet18_fast"
    # the CLAT table keeps robust_overfitting's definition unless a study names the other
    table = cfg["studies"]["clat_table1"]["grids"]
    assert any(
        g["backbones"] == ["cifar_preact_rn18"] and "fast_at" in g["variants"] for g in table
    )
