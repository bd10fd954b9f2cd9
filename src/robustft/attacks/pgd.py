"""L∞ projected gradient ascent: the one PGD loop of the project (Madry et al., 2018).

Owns :class:`PGDConfig` (an attack's budget), :func:`ascend` (the loop: signed-gradient ascent
on any scalar objective of the input, from a chosen start, projected onto ``B_eps[x] ∩ [0, 1]^d``)
and :func:`pgd` (the classification attack every method and evaluation uses, expressed through
:func:`ascend`), plus :func:`pgd_accuracy` (per-example robust correctness).

Every attack of the project is :func:`ascend` with an objective and a start:

* PGD as the AutoLoRa/TWINS code runs it (spec autolora_twins_official_code.md §4): maximise
  the mean cross-entropy with the *true* labels from ``x`` or a uniform start, projection onto
  the ε-ball and [0, 1] after each step, the last iterate is returned, BatchNorm on running
  statistics (:func:`pgd` puts a module in eval mode and restores it);
* TRADES' and MART's official attacks start at ``x + 0.001·N(0, I)`` and take the first
  gradient there, before any projection (``project_start=False``; TRADES maximises the KL to
  the clean prediction, MART the cross-entropy);
* Fast-AT takes one step of 1.25ε from a uniform start (FGSM-RS);
* CLAT's inner maximisation (CLAT Eq. 8) maximises the summed feature distance of the critical
  layers (:mod:`robustft.attacks.feature_pgd`).

Random starts are drawn through :mod:`robustft.rng` from the caller's generator.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustft import rng
from robustft.attacks.accuracy import correct, eval_mode
from robustft.threat_models import AUTOLORA_PAPER

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Objective = Callable[[torch.Tensor], torch.Tensor]
INITS = ("zero", "uniform", "normal")

__all__ = ["INITS", "PGDConfig", "ascend", "eval_mode", "pgd", "pgd_accuracy"]


@dataclass(frozen=True)
class PGDConfig:
    """Budget of one PGD attack. Defaults: AutoLoRa's evaluation attack (Sec. 5, PGD-10 at
    8/255, step 2/255, no random start; :data:`robustft.threat_models.AUTOLORA_PAPER`)."""

    eps: float = AUTOLORA_PAPER.eps
    step: float = AUTOLORA_PAPER.step
    steps: int = AUTOLORA_PAPER.steps
    random_start: bool = AUTOLORA_PAPER.eval_random_start


def ascend(
    objective: Objective,
    x: torch.Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    init: str = "uniform",
    init_std: float = 0.001,
    project_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``x_adv ∈ B_eps[x] ∩ [0, 1]^d`` after ``steps`` signed-gradient ascent steps.

    ``objective(x_adv)`` returns a scalar to maximise. ``init``: ``"zero"`` (start at x),
    ``"uniform"`` (x + U(−ε, ε), Madry / Fast-AT) or ``"normal"`` (x + init_std·N(0, I),
    TRADES / MART).

    ``project_start``: with ``True`` the start is projected onto the ball and [0, 1] like every
    iterate, so the first gradient is taken at a valid image. ``False`` takes the first gradient
    at the raw start, as ``yaodongyu/TRADES`` ``trades.py`` and ``YisenWang/MART`` ``mart.py``
    do (a pixel at 0 with a negative noise draw is evaluated slightly below 0); every later
    iterate, and the result, is projected either way.

    The loop never touches the model's train/eval mode: the caller chooses the BN mode, which
    differs between recipes (:func:`pgd` uses eval mode).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    x = x.detach()
    if init == "uniform":
        noise = rng.uniform(x, generator)
        x_adv = x + (2 * noise - 1) * eps
    elif init == "normal":
        x_adv = x + init_std * rng.normal(x, generator)
    else:
        x_adv = x.clone()
    if project_start:
        x_adv = _project(x_adv, x, eps)
    with torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(x_adv), x_adv)
            x_adv = _project(x_adv.detach() + step * grad.sign(), x, eps)
    # with steps = 0 an unprojected start must still come back as a valid image
    return _project(x_adv.detach(), x, eps)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto ``B_eps[x] ∩ [0, 1]^d`` (ball first, then the image box)."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def _mean_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


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
    """Return an adversarial batch inside ``B_eps[x] ∩ [0, 1]^d`` (PGD on the logits).

    ``loss_fn(logits, y)`` defaults to mean cross-entropy with the true labels; TRADES-style
    attacks pass a KL loss against the clean prediction instead. ``model`` may be any callable
    mapping images to logits (e.g. a lambda selecting a branch); if it is an ``nn.Module`` it is
    run in eval mode. The start is ``x`` or, with ``random_start``, ``x + U(−ε, ε)`` projected
    onto the ball and [0, 1] (:func:`ascend` with ``init="uniform"``).
    """
    loss = loss_fn or _mean_ce
    mode = eval_mode(model) if isinstance(model, nn.Module) else nullcontext()
    with mode:
        return ascend(
            lambda z: loss(model(z), y),
            x,
            eps=eps,
            step=step,
            steps=steps,
            init="uniform" if random_start else "zero",
            generator=generator,
        )


def pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: PGDConfig,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-example 0/1 robust correctness (int64, CPU) under PGD on the model's default branch."""
    x_adv = pgd(
        model,
        x,
        y,
        eps=config.eps,
        step=config.step,
        steps=config.steps,
        random_start=config.random_start,
        generator=generator,
    )
    return correct(model, [(x_adv, y)])
