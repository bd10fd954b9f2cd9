"""MART (Wang et al., 2020; CLAT spec §3.3): misclassification-aware adversarial training.

With p = softmax f(x), p' = softmax f(x'), and ŷ the most probable *wrong* class under p':

    BCE  = CE(f(x'), y) − log(1.0001 − p'_ŷ)
    L    = BCE + β · (1/B) Σ_b KL(p_b ‖ p'_b) · (1 − p_b[y_b])

x' maximises CE from x + 0.001·N(0, I) with eval-mode BN (``YisenWang/MART``); option
``project_start`` as in :mod:`robustft.methods.trades`: ``false`` (default, presets
``official`` and ``paper``) takes the first gradient at the raw start as ``mart.py`` does,
``true`` projects the start onto B_ε[x] ∩ [0, 1] first. The small
constants keep the logs finite exactly where the official code puts them: 1e-12 inside
log p' of the KL, 1.0001 in the boosted term, and the weight 1.0000001 − p[y].
Official β: 5 for ResNet-18 (lr 0.01, wd 3.5e-3, 120 epochs), 6 for WRN-34-10; the default
here is the ResNet-18 value, since CLAT's MART rows are ResNet-18.

The reference's ResNet-18 training run (not applied here; a run's schedule comes from its
config): SGD lr 0.01, momentum 0.9, weight decay 3.5e-3, batch 128, 120 epochs, attack ε 0.031 /
step 0.007 / 10 steps, LR ×0.1 at epoch 75, ×0.01 at 90, ×0.001 at 100 counted from 1
(``epoch >= 75`` in a loop over ``1..epochs``), i.e. 0-based milestones ``[74, 89, 99]`` for
``lr_schedule: multistep`` (this module's former recipe constant said ``[75, 90, 100]``, one
epoch late).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from robustft.attacks import ascend, eval_mode
from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy
from robustft.plan import catalog


def mart_loss(
    clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, boosted CE, weighted KL) of the MART objective."""
    p_adv = F.softmax(adv_logits, dim=1)
    p_nat = F.softmax(clean_logits, dim=1)
    # the highest-probability class other than the true one
    masked = p_adv.scatter(1, y[:, None], -1.0)
    wrong = masked.argmax(dim=1)
    boost = -torch.log(1.0001 - p_adv.gather(1, wrong[:, None]).squeeze(1) + 1e-12)
    bce = F.cross_entropy(adv_logits, y) + boost.mean()
    kl = (torch.xlogy(p_nat, p_nat) - p_nat * torch.log(p_adv + 1e-12)).sum(dim=1)
    weight = 1.0000001 - p_nat.gather(1, y[:, None]).squeeze(1)
    robust = (kl * weight).sum() / len(y)
    return bce + beta * robust, bce, robust


class MART(Method):
    name = "mart"
    display_name = catalog.display_name("mart")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("mart")

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        cfg = ctx.train_attack
        with eval_mode(model):
            x_adv = ascend(
                lambda z: F.cross_entropy(model(z), y),
                x,
                eps=cfg.eps,
                step=cfg.step,
                steps=cfg.steps,
                init=self.hp["init"],
                init_std=self.hp["init_std"],
                project_start=self.hp["project_start"],
                generator=ctx.generator,
            )
        clean_logits = model(x)
        adv_logits = model(x_adv)
        loss, bce, robust = mart_loss(clean_logits, adv_logits, y, self.hp["beta"])
        return BatchOutput(
            loss=loss,
            stats={
                "loss_bce": bce.detach(),
                "loss_kl_weighted": robust.detach(),
                "train_nat_acc": accuracy(clean_logits, y),
                "train_adv_acc": accuracy(adv_logits, y),
            },
        )
