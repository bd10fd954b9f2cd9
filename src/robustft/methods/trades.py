"""TRADES (Zhang et al., 2019; CLAT spec §3.2): a clean CE plus a KL robustness regulariser.

    L = CE(f(x), y) + β · (1/B) Σ_b KL( softmax f(x_b) ‖ softmax f(x'_b) ),
    x' = argmax_{x' ∈ B_ε[x]} Σ_b KL( softmax f(x_b) ‖ softmax f(x'_b) )

Official recipe (``yaodongyu/TRADES``): β = 6; the attack starts at x + 0.001·N(0, I) and takes
sign steps of 0.007 within ε = 0.031, with the model in eval mode; clean and adversarial forward
passes of the update run in train mode, clean first. Unlike ``vanilla_rft`` (which attacks CE,
as TWINS/AutoLoRa do), the attack maximises the KL term itself. ε, step and the number of steps
come from the run's ``train_attack`` (CLAT protocol: 0.03 / 0.007 / 10).

Option ``project_start`` (where the first gradient is taken):

* ``false`` (default, preset ``official``; also ``paper``, as neither CLAT nor the TRADES paper
  asks for a projected start): ``trades.py`` takes the first gradient at the raw Gaussian start
  x + 0.001·N(0, I), which may lie slightly outside [0, 1]; only the iterates after each step
  are projected onto B_ε[x] ∩ [0, 1].
* ``true``: the start is first projected onto B_ε[x] ∩ [0, 1] like every iterate (this
  project's earlier behaviour; the first gradient is taken at a valid image).

The reference's own training run (not applied here; a run's schedule comes from its config):
CIFAR-10 WRN-34-10, SGD lr 0.1, momentum 0.9, weight decay 2e-4, batch 128, 76 epochs, LR ×0.1
at epoch 75, ×0.01 at 90, ×0.001 at 100 counted from 1 (``train_trades_cifar10.py``:
``if epoch >= 75`` in ``for epoch in range(1, epochs + 1)``), i.e. 0-based milestones
``[74, 89, 99]`` for ``lr_schedule: multistep`` (this module's former recipe constant said
``[75, 90, 100]``, one epoch late).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from robustft.attacks import ascend, eval_mode
from robustft.methods.base import (
    BatchOutput,
    Method,
    TrainContext,
    accuracy,
    kl_clean_adv,
    kl_normaliser,
)
from robustft.plan import catalog


def divergence_attack(
    method: Method,
    model,
    x: torch.Tensor,
    ctx: TrainContext,
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    bn: str = "eval",
) -> torch.Tensor:
    """x' maximising ``divergence(p_clean, adv_logits)`` (a scalar summed over the batch) with
    p_clean = softmax f(x) held fixed: the inner maximisation TRADES (KL) and SCORE (squared
    ℓ2 between probability vectors) share. The start is the method's ``init``/``init_std``/
    ``project_start`` hyper-parameters. ``bn="eval"`` crafts with running BN statistics
    (``trades.py``); ``"current"`` leaves the model's mode to the caller (TRADES-AWP's
    ``attack_bn`` option, SCORE's frozen-statistics train mode)."""
    cfg = ctx.train_attack
    if bn not in ("eval", "current"):
        raise ValueError(f"divergence_attack: bn must be 'eval' or 'current', got {bn!r}")
    with eval_mode(model) if bn == "eval" else nullcontext():
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        return ascend(
            lambda z: divergence(p_clean, model(z)),
            x,
            eps=cfg.eps,
            step=cfg.step,
            steps=cfg.steps,
            init=method.hp["init"],
            init_std=method.hp["init_std"],
            project_start=method.hp["project_start"],
            generator=ctx.generator,
        )


def _kl_sum(p_clean: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(adv_logits, dim=1), p_clean, reduction="sum")


def trades_attack(
    method: Method, model, x: torch.Tensor, ctx: TrainContext, *, bn: str = "eval"
) -> torch.Tensor:
    """x' maximising Σ_b KL(p_clean ‖ p_adv) (summed, as the official ``size_average=False``),
    TRADES' Gaussian start; ``bn`` as in :func:`divergence_attack`."""
    return divergence_attack(method, model, x, ctx, _kl_sum, bn=bn)


def trades_loss(clean_logits, adv_logits, y, beta: float, normaliser: int | None = None):
    """(total, natural CE, KL term) of the TRADES objective."""
    natural = F.cross_entropy(clean_logits, y)
    robust = kl_clean_adv(clean_logits, adv_logits, normaliser)
    return natural + beta * robust, natural, robust


class TRADES(Method):
    name = "trades"
    display_name = catalog.display_name("trades")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("trades")

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = trades_attack(self, model, x, ctx)
        clean_logits = model(x)
        adv_logits = model(x_adv)
        loss, natural, robust = trades_loss(
            clean_logits, adv_logits, y, self.hp["beta"], kl_normaliser(self, ctx)
        )
        return BatchOutput(
            loss=loss,
            stats={
                "loss_ce_nat": natural.detach(),
                "loss_kl": robust.detach(),
                "train_nat_acc": accuracy(clean_logits, y),
                "train_adv_acc": accuracy(adv_logits, y),
            },
            objectives=(natural, robust),
        )
