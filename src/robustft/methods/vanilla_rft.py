"""Vanilla RFT (AutoLoRa Eq. 1; TRADES-style, Zhang et al. 2019).

    L = CE(h(x), y) + β · KL(h(x) ‖ h(x̃)),   x̃ = argmax_{x̃ ∈ B_ε[x]} CE(h(x̃), y)

The adversarial example maximises CE with true labels (following TWINS, AutoLoRa Sec. 3.1),
not KL as in the original TRADES. Both forward passes run in train mode, adversarial first, as
in the official baseline (spec §4).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F

from robustft.methods.base import (
    BatchOutput,
    Method,
    TrainContext,
    accuracy,
    kl_clean_adv,
    kl_normaliser,
)
from robustft.plan import catalog


class VanillaRFT(Method):
    name = "vanilla_rft"
    display_name = catalog.display_name("vanilla_rft")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("vanilla_rft")

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = self.attack(model, model, x, y, ctx)
        adv_logits = model(x_adv)
        clean_logits = model(x)
        natural = F.cross_entropy(clean_logits, y)
        adversarial = kl_clean_adv(clean_logits, adv_logits, kl_normaliser(self, ctx))
        loss = natural + self.hp["beta"] * adversarial
        return BatchOutput(
            loss=loss,
            stats={
                "loss_ce_nat": natural.detach(),
                "loss_kl": adversarial.detach(),
                "train_nat_acc": accuracy(clean_logits, y),
                "train_adv_acc": accuracy(adv_logits, y),
            },
            objectives=(natural, adversarial),  # AutoLoRa Eq. 3
        )
