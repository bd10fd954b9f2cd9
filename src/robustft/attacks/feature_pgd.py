"""CLAT's feature-space PGD (CLAT Eq. 8): the objective, run by the one PGD loop.

Owns :func:`feature_distance` (the inner term of CLAT Eq. 8) and :func:`feature_pgd` (one
perturbation shared by all critical layers, maximising their summed distance). The loop itself
is :func:`robustft.attacks.pgd.ascend`; it never touches the model's train/eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robustft.attacks.pgd import ascend


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
    return ascend(
        lambda z: feature_distance(features(z), clean),
        x,
        eps=eps,
        step=step,
        steps=steps,
        init="uniform" if random_start else "zero",
        generator=generator,
    )
