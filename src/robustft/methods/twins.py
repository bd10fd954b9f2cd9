"""TWINS (Liu et al., 2023; AutoLoRa Eq. 2): vanilla RFT through a dual BatchNorm.

    paper:    L = L_vanilla(θ̄) + γ · L_vanilla(θ)          every sample through both branches
    official: L = γ·[CE_F + β·ΣKL_F/n] + [CE_A + β·ΣKL_A/n]  first half of the batch through the
              frozen BN (F), second half through the adaptive BN (A); γ on the *frozen* branch

θ̄ normalises with the frozen pretrained statistics (``bn="frozen"``); θ is the adaptive BN.
Adversarial examples are generated against θ (eval mode). The dual-BN affine sharing ("paper":
θ̄ copies γ/β of θ; "official": separate trainable γ/β) is the model option ``dual_bn``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
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


class TWINS(Method):
    name = "twins"
    display_name = catalog.display_name("twins")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("twins")

    def model_kwargs(self):
        return {"dual_bn": self.hp["dual_bn"]}

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = self.attack(model, model, x, y, ctx)
        beta, gamma = self.hp["beta"], self.hp["gamma"]
        if self.hp["loss"] == "paper":
            return self._paper(model, x, x_adv, y, beta, gamma)
        return self._official(model, x, x_adv, y, beta, gamma, kl_normaliser(self, ctx))

    @staticmethod
    def _paper(model, x, x_adv, y, beta, gamma) -> BatchOutput:
        terms = {}
        for bn in ("frozen", "adaptive"):
            adv = model(x_adv, bn=bn)
            clean = model(x, bn=bn)
            terms[bn] = (F.cross_entropy(clean, y), kl_clean_adv(clean, adv), clean, adv)
        (ce_f, kl_f, _, _), (ce_a, kl_a, clean_a, adv_a) = terms["frozen"], terms["adaptive"]
        loss = (ce_f + beta * kl_f) + gamma * (ce_a + beta * kl_a)
        return BatchOutput(
            loss=loss,
            stats={
                "loss_ce_frozen": ce_f.detach(),
                "loss_kl_frozen": kl_f.detach(),
                "loss_ce_adaptive": ce_a.detach(),
                "loss_kl_adaptive": kl_a.detach(),
                "train_nat_acc": accuracy(clean_a, y),
                "train_adv_acc": accuracy(adv_a, y),
            },
            objectives=(ce_f + gamma * ce_a, kl_f + gamma * kl_a),  # AutoLoRa Eq. 4
        )

    @staticmethod
    def _official(model, x, x_adv, y, beta, gamma, normaliser) -> BatchOutput:
        if x.shape[0] < 2:
            raise ValueError("TWINS (official split) needs at least 2 samples per batch")
        n = normaliser if normaliser is not None else x.shape[0]
        half = x.shape[0] // 2
        parts = {"frozen": slice(0, half), "adaptive": slice(half, None)}
        out = {}
        for bn, idx in parts.items():
            adv = model(x_adv[idx], bn=bn)
            clean = model(x[idx], bn=bn)
            out[bn] = (F.cross_entropy(clean, y[idx]), kl_clean_adv(clean, adv, n), clean, adv)
        (ce_f, kl_f, clean_f, adv_f), (ce_a, kl_a, clean_a, adv_a) = out["frozen"], out["adaptive"]
        loss = gamma * (ce_f + beta * kl_f) + (ce_a + beta * kl_a)
        clean = torch.cat([clean_f, clean_a])
        adv = torch.cat([adv_f, adv_a])
        return BatchOutput(
            loss=loss,
            stats={
                "loss_ce_frozen": ce_f.detach(),
                "loss_kl_frozen": kl_f.detach(),
                "loss_ce_adaptive": ce_a.detach(),
                "loss_kl_adaptive": kl_a.detach(),
                "train_nat_acc": accuracy(clean, y),
                "train_adv_acc": accuracy(adv, y),
            },
            objectives=(gamma * ce_f + ce_a, gamma * kl_f + kl_a),
        )
