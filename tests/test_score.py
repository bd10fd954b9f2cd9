"""SCORE (Pang et al. 2022): the SE loss against hand-computed values, its clipping options and
its attack (robustft.methods.score)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustft.attacks import PGDConfig
from robustft.methods import build_method
from robustft.methods.base import HyperParameterError, TrainContext
from robustft.methods.score import clip_bound, score_loss, smoothed_onehot, squared_error

LN3 = math.log(3.0)
# example 1: p = (1/4, 3/4), y = 1, p' = (1/2, 1/2): natural SE 1/8, robust SE 1/8
# example 2: p = (3/4, 1/4), y = 1, p' = p:          natural SE 9/8, robust SE 0
CLEAN = torch.tensor([[0.0, LN3], [LN3, 0.0]])
ADV = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
Y = torch.tensor([1, 1])


def test_clip_bound_is_the_official_value():
    assert clip_bound(0.3, 10) == pytest.approx(0.1)  # CIFAR-10 at c = 0.3
    assert clip_bound(0.3, 100) == pytest.approx(0.0909, abs=1e-4)
    assert clip_bound(0.3, 2) == pytest.approx(0.18)
    assert clip_bound(0.0, 10) == 0.0


def test_score_loss_hand_computed():
    # b = 0.3² + 0.3²/1 = 0.18 for K = 2; β = 2
    total, natural, robust = score_loss(CLEAN, ADV, Y, beta=2.0, clip_loss=0.3, clip_on="total")
    assert natural.item() == pytest.approx((0.125 + 1.125) / 2)
    assert robust.item() == pytest.approx(0.125 / 2)
    # per example: relu(1/8 + 2/8 − 0.18) = 0.195, relu(9/8 − 0.18) = 0.945
    assert total.item() == pytest.approx((0.195 + 0.945) / 2)
    total, _, _ = score_loss(CLEAN, ADV, Y, beta=2.0, clip_loss=0.3, clip_on="robust")
    # per example: 1/8 + 2·relu(1/8 − 0.18) = 0.125, 9/8 + 2·relu(0 − 0.18) = 1.125
    assert total.item() == pytest.approx((0.125 + 1.125) / 2)
    total, _, _ = score_loss(CLEAN, ADV, Y, beta=2.0, clip_loss=0.0, clip_on="total")
    assert total.item() == pytest.approx((0.375 + 1.125) / 2)  # unclipped SE-TRADES


def test_label_smoothing_and_bad_clip_option():
    target = smoothed_onehot(torch.tensor([1]), 3, 0.3)
    assert target.tolist()[0] == pytest.approx([0.15, 0.7, 0.15])
    assert squared_error(target, target).item() == 0.0
    with pytest.raises(ValueError, match="clip_on"):
        score_loss(CLEAN, ADV, Y, beta=1.0, clip_loss=0.3, clip_on="both")
    with pytest.raises(HyperParameterError, match="clip_on"):
        build_method("score", clip_on="both")


def _net() -> nn.Module:
    torch.manual_seed(0)  # model init only; the attack draws from the context's generator
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 3))


def _ctx(steps: int = 5) -> TrainContext:
    return TrainContext(
        train_attack=PGDConfig(eps=0.1, step=0.03, steps=steps, random_start=True),
        generator=torch.Generator().manual_seed(1),
        batch_size=8,
    )


@pytest.mark.parametrize("attack_bn", ["eval", "train_frozen"])
def test_attack_raises_the_se_and_keeps_bn_statistics(attack_bn):
    model = _net().train()
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    method = build_method("score", attack_bn=attack_bn)
    # warm the running statistics so that eval and batch statistics differ
    with torch.no_grad():
        model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_adv = method.craft(model, x, _ctx())
    after = model.state_dict()
    for k in ("1.running_mean", "1.running_var"):
        assert torch.equal(before[k], after[k]), k
    assert model.training
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad(), torch.autograd.set_grad_enabled(False):
        model.eval()
        p = torch.softmax(model(x), 1)
        se_adv = squared_error(torch.softmax(model(x_adv), 1), p).sum()
        x_rand = (x + 0.1 * (2 * torch.rand(x.shape, generator=torch.Generator()) - 1)).clamp(0, 1)
        se_rand = squared_error(torch.softmax(model(x_rand), 1), p).sum()
    assert se_adv > se_rand


def test_batch_loss_backpropagates_to_the_model():
    model = _net().train()
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.arange(8) % 3
    out = build_method("score", clip_loss=0.0).batch_loss(model, x, y, _ctx(2))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model[3].weight.grad is not None and model[3].weight.grad.abs().sum() > 0
    assert set(out.stats) >= {"loss_se_nat", "loss_se_adv", "train_nat_acc", "train_adv_acc"}
