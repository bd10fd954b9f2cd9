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
``trades_awp`` = TRADES-AWP (TRADES KL attack and loss with β = 6, γ = 5e-3, AWP from the 10th
epoch). CLAT's "AWP" row does not say which; spec §3.4 suggests AT-AWP with γ = 5e-3 for a
50-epoch pre-train (``awp`` with ``gamma: 0.005``).

Options where this project once differed from ``csdongxian/AWP`` (defaults = preset ``official``
= the reference scripts; the AWP paper is silent on them, so preset ``paper`` keeps them too):

* ``attack_bn`` — BN mode while crafting x'. ``AT_AWP/train_cifar10.py`` calls ``attack_pgd``
  with the model still in train mode (batch statistics; every attack forward moves the running
  statistics): ``awp`` defaults to ``"train"``. ``trades_AWP/train_trades_cifar.py``'s
  ``perturb_input`` switches to eval mode: ``trades_awp`` defaults to ``"eval"``. The other value
  is the named alternative (``"eval"`` for AT-AWP was this project's earlier behaviour).
  Not replicated from ``train_cifar10.py``: its first batch of every epoch after the first is
  crafted in eval mode (left over from the previous epoch's test loop), and its restart-selection
  and train-accuracy forward passes also run in train mode and move the running statistics.
* ``epoch_origin`` — how the reference script numbers its first epoch; AWP is on once
  ``epoch_origin + e ≥ warmup`` for the 0-based epoch ``e``. ``train_cifar10.py`` counts from 0
  (``epoch >= args.awp_warmup``, default warm-up 0), so ``awp`` uses 0;
  ``train_trades_cifar.py`` counts from 1 (``range(args.start_epoch=1, ...)``, same test with
  ``--awp-warmup 10``), so AWP starts with its 10th epoch (0-based 9): ``trades_awp`` uses 1.
  ``epoch_origin: 0`` with ``warmup: 10`` is this project's earlier, one-epoch-later start.
* ``project_start`` (TRADES base only) — as :mod:`robustft.methods.trades`; ``perturb_input``
  takes the first gradient at the raw start x + 0.001·N(0, I) (``false``).

The reference training runs (not applied here; a run's schedule comes from its config): 200
epochs, SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, ε 8/255, step 2/255, 10 steps,
LR ×0.1 at epoch 100 and ×0.01 at 150. AT-AWP's piecewise LR counts epochs from 0 (spec §3.4),
so 0-based milestones ``[100, 150]``; TRADES-AWP's ``adjust_learning_rate`` tests
``epoch >= 100`` on epochs counted from 1 (as its warm-up, above), i.e. 0-based ``[99, 149]``
(this module's former recipe constant said ``[100, 150]`` for both, one epoch late for
TRADES-AWP).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from robustft.attacks import pgd
from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy, kl_clean_adv
from robustft.methods.trades import trades_attack
from robustft.plan import catalog

AWP_EPS = 1e-20


@contextmanager
def bn_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Run the block with ``model`` in train (``"train"``) or eval (``"eval"``) mode, then
    restore its previous mode."""
    was_training = model.training
    model.train(mode == "train")
    try:
        yield
    finally:
        model.train(was_training)


class AWP(Method):
    name = "awp"
    display_name = catalog.display_name("awp")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("awp")

    # the base method's loss, for any forward function (proxy or perturbed model)
    def base_loss(self, forward, x, x_adv, y):
        if self.hp["base"] == "at":
            adv = forward(x_adv)
            loss = F.cross_entropy(adv, y)
            return loss, {"loss_ce_adv": loss.detach(), "train_adv_acc": accuracy(adv, y)}
        clean, adv = forward(x), forward(x_adv)
        natural = F.cross_entropy(clean, y)
        robust = kl_clean_adv(clean, adv)
        return natural + self.hp["beta"] * robust, {
            "loss_ce_nat": natural.detach(),
            "loss_kl": robust.detach(),
            "train_nat_acc": accuracy(clean, y),
            "train_adv_acc": accuracy(adv, y),
        }

    def craft(self, model, x, y, ctx: TrainContext) -> torch.Tensor:
        """x' of the base method with BN in ``attack_bn`` mode: PGD-CE from a uniform start
        (AT) or TRADES' KL attack from the Gaussian start (TRADES)."""
        cfg = ctx.train_attack
        with bn_mode(model, self.hp["attack_bn"]):
            if self.hp["base"] == "at":
                # a lambda, not the module: pgd() would switch a module to eval mode itself
                return pgd(
                    lambda z: model(z),
                    x,
                    y,
                    eps=cfg.eps,
                    step=cfg.step,
                    steps=cfg.steps,
                    random_start=cfg.random_start,
                    generator=ctx.generator,
                )
            return trades_attack(self, model, x, ctx, bn="current")

    def active(self, ctx: TrainContext) -> bool:
        """Whether AWP perturbs the weights in this epoch (``epoch_origin`` in the docstring)."""
        return ctx.epoch + self.hp["epoch_origin"] >= self.hp["warmup"] and self.hp["gamma"] > 0

    def perturbation(self, model, x, x_adv, y) -> dict[str, torch.Tensor]:
        """γ·v_l for every trainable weight with dim > 1 (steps 1-2 of the module docstring)."""
        targets = {n: p for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1}
        # the proxy's BN statistics are thrown away: run on copies of the buffers
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        with torch.enable_grad():
            loss, _ = self.base_loss(lambda z: functional_call(model, buffers, (z,)), x, x_adv, y)
            grads = torch.autograd.grad(loss, list(targets.values()))
        out = {}
        for (name, w), g in zip(targets.items(), grads):
            d = self.hp["proxy_lr"] * g
            out[name] = self.hp["gamma"] * d * w.detach().norm() / (d.norm() + AWP_EPS)
        return out

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = self.craft(model, x, y, ctx)
        if self.active(ctx):
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
    display_name = catalog.display_name("trades_awp")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("trades_awp")
