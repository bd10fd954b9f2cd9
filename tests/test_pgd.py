"""PGD as the official AutoLoRa/TWINS code runs it (spec §4); the one ascent loop behind it;
the one correctness loop (clean and robust accuracy)."""

import pytest
import torch
import torch.nn.functional as F

from robustft.attacks import PGDConfig, ascend, correct, pgd, pgd_accuracy, predict
from robustft.models import build_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("resnet_mini", 4, width=4).train()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16, generator=g)
    x[0] = 0.0  # corners of the box: projection onto [0,1] must bite
    x[1] = 1.0
    return x, torch.randint(0, 4, (6,), generator=g)


@pytest.mark.parametrize("random_start", [False, True])
def test_stays_in_eps_ball_and_box(model, batch, random_start):
    x, y = batch
    eps = 8 / 255
    x_adv = pgd(
        model,
        x,
        y,
        eps=eps,
        step=2 / 255,
        steps=10,
        random_start=random_start,
        generator=torch.Generator().manual_seed(1),
    )
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)


def test_increases_the_loss_and_restores_train_mode(model, batch):
    x, y = batch
    running = model.bn1.running_mean.clone()
    x_adv = pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=5, random_start=False)
    assert model.training  # restored
    assert torch.equal(model.bn1.running_mean, running)  # attacked with BN in eval mode
    model.eval()
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy
        assert ce(model(x_adv), y) > ce(model(x), y)


def test_no_random_start_is_deterministic_and_zero_steps_is_identity(model, batch):
    x, y = batch
    a = pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=3, random_start=False)
    b = pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=3, random_start=False)
    assert torch.equal(a, b)
    assert torch.equal(pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=0, random_start=False), x)


def test_robust_accuracy_is_at_most_clean_and_zero_eps_equals_clean(model, batch):
    x, y = batch
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).long()
    robust = pgd_accuracy(model, x, y, PGDConfig(eps=0.0, step=2 / 255, steps=3))
    assert torch.equal(robust, clean)
    big = pgd_accuracy(model, x, y, PGDConfig(eps=0.5, step=0.1, steps=20))
    assert big.sum() <= clean.sum()
    assert PGDConfig() == PGDConfig(eps=8 / 255, step=2 / 255, steps=10, random_start=False)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_is_the_ascent_loop_on_the_cross_entropy_in_eval_mode(model, batch, random_start):
    """One loop: PGD = ``ascend`` on the mean CE from x or a projected uniform start."""
    x, y = batch
    a = pgd(
        model,
        x,
        y,
        eps=8 / 255,
        step=2 / 255,
        steps=4,
        random_start=random_start,
        generator=torch.Generator().manual_seed(3),
    )
    model.eval()
    b = ascend(
        lambda z: F.cross_entropy(model(z), y),
        x,
        eps=8 / 255,
        step=2 / 255,
        steps=4,
        init="uniform" if random_start else "zero",
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(a, b)


def test_correct_is_argmax_in_eval_mode_over_any_batches(model, batch):
    x, y = batch
    running = model.bn1.running_mean.clone()
    flags = correct(model, zip(x.split(4), y.split(4)))
    assert model.training and torch.equal(model.bn1.running_mean, running)
    model.eval()
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).long()
    model.train()
    assert flags.dtype == torch.long and torch.equal(flags, expected)
    # a branch through ``forward``; the batches are consumed once, in order
    seen = []

    def branch(z):
        seen.append(len(z))
        return -model(z)

    preds, labels = predict(model, iter([(x[:5], y[:5]), (x[5:], y[5:])]), forward=branch)
    assert seen == [5, 1] and torch.equal(labels, y)
    model.eval()
    with torch.no_grad():
        assert torch.equal(preds, (-model(x)).argmax(1))
    assert correct(model, []).numel() == 0
