"""L∞ sign-gradient ascent on an arbitrary objective, and CLAT's feature-space PGD.

:func:`robustft.attacks.pgd` maximises the loss of the model's *logits* from a uniform start.
Several methods need other objectives or starts:

* TRADES' and MART's official attacks start at ``x + 0.001·N(0, I)`` and take the first
  gradient there, before any projection (``project_start=False``; TRADES maximises the KL to
  the clean prediction, MART the cross-entropy);
* Fast-AT takes one step of 1.25ε from a uniform start (FGSM-RS);
* CLAT's inner maximisation (CLAT Eq. 8) maximises the summed feature distance of the critical
  layers, with one perturbation shared by all of them.

:func:`ascend` is the one loop behind all of them: it never touches the model's train/eval mode
(the caller chooses the BN mode, which differs between recipes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robustft import rng

Objective = Callable[[torch.Tensor], torch.Tensor]
INITS = ("zero", "uniform", "normal")


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


def feature_distance(adv: list[torch.Tensor], clean: list[torch.Tensor]) -> torch.Tensor:
    """CLAT Eq. 8 inner term: mean over the batch of Σ_{i∈S} ‖F_i(x+δ) − F_i(x)‖₂.

    Each feature is flattened per example; the L2 norm is not divided by N_i (spec A5).
    """
    total = adv[0].new_zeros(())
    for a, c in zip(adv, clean, strict=True):
        total = total + (a - c).flatten(1).norm(dim=1).mean()
    return total


def feature_pgd(
    features: Callable[[torch.Tensor], list[torch.Tensor]],
    x: torch.Tensor,
    clean: list[torch.Tensor],
    *,
    eps: float,
    step: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CLAT Eq. 8 inner maximisation: one δ that maximises the critical layers' summed distance.

    ``features(x)`` returns the critical layers' outputs for a batch; ``clean`` are the outputs
    for ``x`` (treated as constants). CLAT(Fast) is ``steps=1`` with ``step = 1.25·eps``.
    """
    clean = [c.detach() for c in clean]
    return ascend(lambda z: feature_distance(features(z), clean), x, eps=eps, step=step,
                  steps=steps, init="uniform" if random_start else "zero", generator=generator)
