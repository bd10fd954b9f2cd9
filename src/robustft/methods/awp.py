"""Adversarial Weight Perturbation (Wu et al., 2020; CLAT spec §3.4): AT-AWP and TRADES-AWP.

Per batch, after crafting x' as the base method does:

1. ascend the base loss once in weight space: g_l = ∇_{w_l} L_base (train-mode BN, running
   statistics untouched — the official code runs this step on a throw-away proxy copy);
2. for every weight tensor with more than one dimension (conv / linear weights; BN and biases
   are skipped), the layer-wise relative direction v_l = d_l·‖w_l‖ / (‖d_l‖ + 1e-20) with
   d_l = proxy_lr·g_l — the proxy's one plain-SGD step, whose learning rate cancels;
3. the loss that trains the model is the base loss at w + γ·v.

The official code adds γ·v to the weights in place, takes the optimiser step and subtracts γ·v
again. Here the perturbed weights enter the forward pass functionally
(``torch.func.functional_call`` with ``w + γ·v``, v a constant), so the gradient is the same
∇L(w + γ·v) and nothing has to be undone; the only difference is that the loop's weight decay
acts on w instead of w + γ·v (a 5e-4·γ-relative effect).

Variants (official defaults): ``awp`` = AT-AWP (PGD-CE examples, CE loss, γ = 0.01, no warm-up);
``trades_awp`` = TRADES-AWP (TRADES KL attack and loss with β = 6, γ = 5e-3, AWP from epoch 10).
CLAT's "AWP" row does not say which; spec §3.4 suggests AT-AWP with γ = 5e-3 for a 50-epoch
pre-train (``awp`` with ``gamma: 0.005``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.func import functional_call

from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy, kl_clean_adv
from robustft.methods.trades import trades_attack

AWP_EPS = 1e-20

AT_AWP_RECIPE = {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                 "weight_decay": 5e-4,
                 "lr_schedule": {"type": "multistep", "milestones": [100, 150], "factor": 0.1},
                 "train_attack": {"eps": 8 / 255, "step": 2 / 255, "steps": 10,
                                  "random_start": True}}
TRADES_AWP_RECIPE = {**AT_AWP_RECIPE,
                     "train_attack": {"eps": 8 / 255, "step": 2 / 255, "steps": 10,
                                      "random_start": True}}


class AWP(Method):
    name = "awp"
    display_name = "AT-AWP"
    defaults: ClassVar[dict] = {"base": "at", "gamma": 0.01, "warmup": 0, "proxy_lr": 0.01, "beta": 6.0,
                "init": "normal", "init_std": 0.001}
    recipe: ClassVar[dict] = AT_AWP_RECIPE

    def __init__(self, **hparams):
        super().__init__(**hparams)
        if self.hp["base"] not in ("at", "trades"):
            raise ValueError(f"{self.name}.base must be 'at' or 'trades', got {self.hp['base']!r}")

    # the base method's loss, for any forward function (proxy or perturbed model)
    def base_loss(self, forward, x, x_adv, y):
        if self.hp["base"] == "at":
            adv = forward(x_adv)
            loss = F.cross_entropy(adv, y)
            return loss, {"loss_ce_adv": loss.item(), "train_adv_acc": accuracy(adv, y)}
        clean, adv = forward(x), forward(x_adv)
        natural = F.cross_entropy(clean, y)
        robust = kl_clean_adv(clean, adv)
        return natural + self.hp["beta"] * robust, {
            "loss_ce_nat": natural.item(), "loss_kl": robust.item(),
            "train_nat_acc": accuracy(clean, y), "train_adv_acc": accuracy(adv, y)}

    def craft(self, model, x, y, ctx: TrainContext) -> torch.Tensor:
        if self.hp["base"] == "at":
            return self.attack(model, model, x, y, ctx)  # PGD-CE, uniform start, eval-mode BN
        return trades_attack(self, model, x, ctx)

    def perturbation(self, model, x, x_adv, y) -> dict[str, torch.Tensor]:
        """γ·v_l for every trainable weight with dim > 1 (steps 1-2 of the module docstring)."""
        targets = {n: p for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1}
        # the proxy's BN statistics are thrown away: run on copies of the buffers
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        with torch.enable_grad():
            loss, _ = self.base_loss(lambda z: functional_call(model, buffers, (z,)),
                                     x, x_adv, y)
            grads = torch.autograd.grad(loss, list(targets.values()))
        out = {}
        for (name, w), g in zip(targets.items(), grads):
            d = self.hp["proxy_lr"] * g
            out[name] = self.hp["gamma"] * d * w.detach().norm() / (d.norm() + AWP_EPS)
        return out

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = self.craft(model, x, y, ctx)
        if ctx.epoch >= self.hp["warmup"] and self.hp["gamma"] > 0:
            v = self.perturbation(model, x, x_adv, y)
            params = dict(model.named_parameters())
            perturbed = {n: params[n] + dv for n, dv in v.items()}
            forward = lambda z: functional_call(model, perturbed, (z,))
            stats = {"awp_rel_norm": self.hp["gamma"]}
        else:
            forward, stats = model, {"awp_rel_norm": 0.0}
        loss, base_stats = self.base_loss(forward, x, x_adv, y)
        return BatchOutput(loss=loss, stats={**base_stats, **stats})


class TRADESAWP(AWP):
    name = "trades_awp"
    display_name = "TRADES-AWP"
    defaults: ClassVar[dict] = {**AWP.defaults, "base": "trades", "gamma": 5e-3, "warmup": 10}
    recipe: ClassVar[dict] = TRADES_AWP_RECIPE
