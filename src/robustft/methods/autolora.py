"""AutoLoRa (Xu et al.; AutoLoRa Eq. 5-7, Algorithm 1): RFT disentangled by a LoRA branch.

    L = λ1·CE(h_{θ̄1+BA, θ2}(x), y) + (1 − λ1)·CE(h_θ(x̃), y) + λ2·KL(h_{θ̄1+BA,θ2}(x) ‖ h_θ(x̃))

* natural term: through FE + B·A with the FE frozen (θ̄1) — gradient reaches B·A and the head;
* adversarial CE: through the FE only — the LoRA branch is not on this path;
* KL: soft labels from the LoRA branch; the official code does not detach them, so the KL
  also trains B·A and the head (``detach_soft_labels: false``); ``true`` makes the LoRA branch
  a pure teacher.
* λ1 = 1 − SA^α, λ2 = 6·SA^α (Eq. 6/7), SA the LoRA branch's natural training accuracy,
  measured on the training set (``lambda_source: train_set``, as the official code: eval mode,
  augmented training data) or as the running accuracy of the previous epoch's natural forward
  passes (``running``, free).
* When SA is measured (``lambda_measured``): ``epoch_start`` — before each epoch, i.e. after
  the LR scheduler's reload of the best-val checkpoint (Algorithm 1, lines 5-7 then 12-19);
  ``epoch_end`` — right after each epoch's training, before that reload (the official loop;
  spec §4 "computed once before epoch 1 and after every epoch"). They differ only on epochs
  where the LR is halved and the best-val weights are reloaded.
* x̃ maximises CE against the FE (no LoRA) with BN in eval mode.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F

from robustft.methods.base import (
    BatchOutput,
    Method,
    TrainContext,
    accuracy,
    frozen,
    kl_clean_adv,
    kl_normaliser,
)
from robustft.plan import catalog
from robustft.schedules import lambda_weights


class AutoLoRa(Method):
    name = "autolora"
    display_name = catalog.display_name("autolora")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("autolora")

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.lambda1, self.lambda2, self.sa = 1.0, 0.0, 0.0
        self._running = [0, 0]  # correct, seen: natural accuracy of the LoRA branch this epoch

    def model_kwargs(self):
        from robustft.models import LoraConfig

        return {
            "lora": LoraConfig(
                rank=self.hp["rank"], coverage=self.hp["lora_coverage"], alpha=self.hp["lora_alpha"]
            )
        }

    def start_epoch(self, model, ctx: TrainContext) -> dict[str, float]:
        if self.hp["lambda_measured"] == "epoch_start" or ctx.epoch == 0:
            self._update_lambdas(model, ctx)
        # epoch_end: measured at the end of the previous epoch (restored on resume)
        return {"lora_train_sa": self.sa, "lambda1": self.lambda1, "lambda2": self.lambda2}

    def end_epoch(self, model, ctx: TrainContext) -> dict[str, float]:
        if self.hp["lambda_measured"] == "epoch_end":
            self._update_lambdas(model, ctx)  # for the next epoch; logged in its row
        return {}

    def _update_lambdas(self, model, ctx: TrainContext) -> None:
        source = self.hp["lambda_source"]
        if source == "train_set":
            if ctx.measure_train_accuracy is None:
                raise ValueError("autolora: lambda_source=train_set needs a training-set probe")
            sa = ctx.measure_train_accuracy(lambda x: model(x, lora=True))
        else:  # running
            correct, seen = self._running
            sa = int(correct) / seen if seen else 0.0
        self._running = [0, 0]
        self.sa = sa
        self.lambda1, self.lambda2 = lambda_weights(sa, self.hp["alpha"])  # Eq. 6/7

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = self.attack(model, model, x, y, ctx)  # FE branch, no LoRA
        with frozen(model.feature_extractor_parameters()):
            nat_logits = model(x, lora=True)  # θ̄1 + BA, θ2
        adv_logits = model(x_adv)  # θ1, θ2
        soft = nat_logits.detach() if self.hp["detach_soft_labels"] else nat_logits
        ce_nat = F.cross_entropy(nat_logits, y)
        ce_adv = F.cross_entropy(adv_logits, y)
        kl = kl_clean_adv(soft, adv_logits, kl_normaliser(self, ctx))
        loss = self.lambda1 * ce_nat + (1 - self.lambda1) * ce_adv + self.lambda2 * kl
        # a device tensor: counted without waiting for the device (read at the epoch end)
        self._running[0] = self._running[0] + (nat_logits.argmax(1) == y).sum()
        self._running[1] += len(y)
        return BatchOutput(
            loss=loss,
            stats={
                "loss_ce_nat": ce_nat.detach(),
                "loss_ce_adv": ce_adv.detach(),
                "loss_kl": kl.detach(),
                "train_nat_acc": accuracy(nat_logits, y),
                "train_adv_acc": accuracy(adv_logits, y),
            },
            # The natural objective never reaches the FE (that is the point of Eq. 5), so its
            # FE gradient is zero and the logged similarity is 0 by construction.
            objectives=(self.lambda1 * ce_nat, (1 - self.lambda1) * ce_adv + self.lambda2 * kl),
        )

    def state_dict(self):
        return {
            "lambda1": self.lambda1,
            "lambda2": self.lambda2,
            "sa": self.sa,
            "running": [int(self._running[0]), self._running[1]],
        }

    def load_state_dict(self, state):
        self.lambda1, self.lambda2, self.sa = state["lambda1"], state["lambda2"], state["sa"]
        self._running = list(state["running"])
