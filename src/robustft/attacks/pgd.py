"""L∞ projected gradient descent (Madry et al., 2018) as the AutoLoRa/TWINS code runs it.

Spec (autolora_twins_official_code.md §4): maximise the mean cross-entropy with the *true*
labels, signed-gradient steps, projection onto the ε-ball and [0, 1] after each step, the last
iterate is returned. BatchNorm uses running statistics during the attack (the model is put in
eval mode and restored afterwards), so attacking never changes the model's statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustft import rng

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PGDConfig:
    """Budget of one PGD attack. Defaults: AutoLoRa Sec. 5, PGD-10 at 8/255, step 2/255."""

    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    random_start: bool = False


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily switch to eval mode (BN running statistics), restoring the previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def pgd(
    model: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    random_start: bool,
    loss_fn: Loss | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return an adversarial batch inside ``B_eps[x] ∩ [0, 1]^d``.

    ``loss_fn(logits, y)`` defaults to mean cross-entropy with the true labels; TRADES-style
    attacks pass a KL loss against the clean prediction instead. ``model`` may be any callable
    mapping images to logits (e.g. a lambda selecting a branch); if it is an ``nn.Module`` it is
    run in eval mode.
    """
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target))
    x = x.detach()
    if random_start:
        noise = rng.uniform(x, generator)
        x_adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    else:
        x_adv = x.clone()
    module = model if isinstance(model, nn.Module) else None
    with torch.enable_grad(), (eval_mode(module) if module is not None else _null()):
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = loss_fn(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + step * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


@contextmanager
def _null() -> Iterator[None]:
    yield None


def pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: PGDConfig,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-example 0/1 robust correctness under PGD (evaluation: the model's default branch)."""
    x_adv = pgd(
        model, x, y, eps=config.eps, step=config.step, steps=config.steps,
        random_start=config.random_start, generator=generator,
    )
    with torch.no_grad(), eval_mode(model):
        return (model(x_adv).argmax(1) == y).long()
