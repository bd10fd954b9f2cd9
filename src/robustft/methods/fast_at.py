"""Fast adversarial training (Wong et al., 2020; CLAT spec §3.5): FGSM with a random start.

    δ ~ U(−ε, ε) (x + δ clipped to [0, 1]);  δ ← clip_ε(δ + α·sign ∇_δ CE(f(x + δ), y));
    L = CE(f(x + δ), y),  α = 1.25 ε

Official recipe (``locuslab/fast_adversarial``, PreAct ResNet-18; not applied here, a run's
schedule comes from its config): 15 epochs, cyclic LR 0 → 0.2 → 0 updated every iteration
(``lr_schedule: {type: cyclic}`` in the shared loop), SGD momentum 0.9, wd 5e-4, batch 128,
ε 8/255 with α = 10/255. The official code keeps the model in train mode while
crafting δ (``attack_bn: train``; BN statistics see the attack's forward pass too); ``eval``
crafts with running statistics like the other methods here. Not implemented: the optional
early stop on a PGD-5 probe and mixed precision.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F

from robustft.attacks import ascend, eval_mode
from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy
from robustft.plan import catalog


def fgsm_rs(model, x, y, *, eps: float, alpha: float, generator=None):
    """One signed step of size ``alpha`` from a uniform start in the ε-ball (FGSM-RS)."""
    return ascend(
        lambda z: F.cross_entropy(model(z), y),
        x,
        eps=eps,
        step=alpha,
        steps=1,
        init="uniform",
        generator=generator,
    )


class FastAT(Method):
    name = "fast_at"
    display_name = catalog.display_name("fast_at")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("fast_at")

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        eps = ctx.train_attack.eps
        alpha = self.hp["alpha_factor"] * eps
        if self.hp["attack_bn"] == "train":
            x_adv = fgsm_rs(model, x, y, eps=eps, alpha=alpha, generator=ctx.generator)
        else:  # eval
            with eval_mode(model):
                x_adv = fgsm_rs(model, x, y, eps=eps, alpha=alpha, generator=ctx.generator)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return BatchOutput(
            loss=loss, stats={"loss_ce_adv": loss.detach(), "train_adv_acc": accuracy(logits, y)}
        )
