"""TRADES (Zhang et al., 2019; CLAT spec §3.2): a clean CE plus a KL robustness regulariser.

    L = CE(f(x), y) + β · (1/B) Σ_b KL( softmax f(x_b) ‖ softmax f(x'_b) ),
    x' = argmax_{x' ∈ B_ε[x]} Σ_b KL( softmax f(x_b) ‖ softmax f(x'_b) )

Official recipe (``yaodongyu/TRADES``): β = 6; the attack starts at x + 0.001·N(0, I) and takes
sign steps of 0.007 within ε = 0.031, with the model in eval mode; clean and adversarial forward
passes of the update run in train mode, clean first. Unlike ``vanilla_rft`` (which attacks CE,
as TWINS/AutoLoRa do), the attack maximises the KL term itself. ε, step and the number of steps
come from the run's ``train_attack`` (CLAT protocol: 0.03 / 0.007 / 10).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from robustft.attacks import eval_mode
from robustft.attacks.feature_pgd import ascend
from robustft.methods.base import (
    BatchOutput,
    Method,
    TrainContext,
    accuracy,
    kl_clean_adv,
    kl_normaliser,
)

#: TrainConfig settings of the official CIFAR-10 WRN-34-10 run (76 epochs, ×0.1 at 75)
TRADES_RECIPE = {"epochs": 76, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                 "weight_decay": 2e-4,
                 "lr_schedule": {"type": "multistep", "milestones": [75, 90, 100], "factor": 0.1},
                 "train_attack": {"eps": 0.031, "step": 0.007, "steps": 10,
                                  "random_start": True}}


def trades_attack(method: Method, model, x: torch.Tensor, ctx: TrainContext) -> torch.Tensor:
    """x' maximising Σ_b KL(p_clean ‖ p_adv) (summed, as the official ``size_average=False``),
    eval-mode BN, TRADES' Gaussian start (``init``/``init_std`` hyper-parameters)."""
    cfg = ctx.train_attack
    with eval_mode(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        return ascend(
            lambda z: F.kl_div(F.log_softmax(model(z), dim=1), p_clean, reduction="sum"),
            x, eps=cfg.eps, step=cfg.step, steps=cfg.steps, init=method.hp["init"],
            init_std=method.hp["init_std"], generator=ctx.generator)


def trades_loss(clean_logits, adv_logits, y, beta: float, normaliser: int | None = None):
    """(total, natural CE, KL term) of the TRADES objective."""
    natural = F.cross_entropy(clean_logits, y)
    robust = kl_clean_adv(clean_logits, adv_logits, normaliser)
    return natural + beta * robust, natural, robust


class TRADES(Method):
    name = "trades"
    display_name = "TRADES"
    defaults: ClassVar[dict] = {"beta": 6.0, "init": "normal", "init_std": 0.001, "kl_normaliser": "batch"}
    recipe: ClassVar[dict] = TRADES_RECIPE

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = trades_attack(self, model, x, ctx)
        clean_logits = model(x)
        adv_logits = model(x_adv)
        loss, natural, robust = trades_loss(clean_logits, adv_logits, y, self.hp["beta"],
                                            kl_normaliser(self, ctx))
        return BatchOutput(
            loss=loss,
            stats={"loss_ce_nat": natural.item(), "loss_kl": robust.item(),
                   "train_nat_acc": accuracy(clean_logits, y),
                   "train_adv_acc": accuracy(adv_logits, y)},
            objectives=(natural, robust))
