"""PGD adversarial training (Madry et al., 2018): minimise CE on PGD examples only.

    L = CE(h(x̃), y),   x̃ = argmax_{x̃ ∈ B_ε[x]} CE(h(x̃), y)

Used to pre-train the offline demo's robust backbone, and as CLAT's PGD-AT baseline.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F

from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy
from robustft.plan import catalog


class PGDAT(Method):
    name = "pgd_at"
    display_name = catalog.display_name("pgd_at")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("pgd_at")

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = self.attack(model, model, x, y, ctx)
        adv_logits = model(x_adv)
        loss = F.cross_entropy(adv_logits, y)
        return BatchOutput(
            loss=loss,
            stats={"loss_ce_adv": loss.detach(), "train_adv_acc": accuracy(adv_logits, y)},
        )
