"""SCORE (Pang, Lin, Yang, Zhu & Yan, ICML 2022, "Robustness and Accuracy Could Be Reconcilable
by (Proper) Definition"; CLAT Table 1's SCORE rows): TRADES with the squared error (SE) between
probability vectors in place of both the clean CE and the KL term.

With p(x) = softmax f(x) and ỹ the (optionally smoothed) one-hot label, the paper (arXiv
2202.10103; its minimisation section: "substituting KL divergence with variants of distance
metrics", the SE variant being the one its released models use) minimises the TRADES
decomposition under the squared ℓ2 distance of the probability simplex:

    L(x, y) = ‖p(x) − ỹ‖²₂ + β · max_{x' ∈ B_ε[x]} ‖p(x') − p(x)‖²₂

i.e. the attack maximises the SE between adversarial and clean probabilities (p(x) held fixed),
and the update minimises the same SE plus the clean SE. Both official recipes
(``P2333/SCORE``@e82f442) clip the per-example loss from below to stop fitting examples that are
already "close enough", which this module exposes as options:

* ``clip_on="total"`` (default; ``without_DDPM/train_cifar.py``, the no-extra-data recipe of an
  RN18 row): per example ReLU(‖p(x)−ỹ‖² + β‖p(x')−p(x)‖² − b), then the batch mean;
* ``clip_on="robust"`` (``--not_clip_clean`` there; also the DDPM recipe's
  ``gowal21uncovering/utils/trades.py``, whose ``clip_value`` defaults to 0): only the robust
  term is clipped, ‖p(x)−ỹ‖² + β·ReLU(‖p(x')−p(x)‖² − b).

The bound is b = c² + c²/(K−1) for ``clip_loss`` c (the SE between a one-hot vector and one with
mass c moved evenly to the other K−1 classes): 0.1 on CIFAR-10 at the recipe's c = 0.3.
``clip_loss: 0`` gives b = 0, i.e. no clipping (the SE is never negative).

Attack options (paper-vs-official differences):

* start: ``init``/``init_std``/``project_start``; no-DDPM recipe: x + 0.001·N(0, I) clipped to
  [0, 1] (``normal``, 0.001, projected: the default); DDPM recipe: x + U(−ε, ε) clipped
  (``uniform``);
* ``attack_bn``: ``eval`` (no-DDPM recipe: ``model.eval()`` while crafting, the default) or
  ``train_frozen`` (DDPM recipe: train-mode BN on batch statistics, running statistics not
  updated, ``track_bn_stats(model, False)``).

ε, step and steps come from the run's ``train_attack`` (CLAT protocol 0.03 / 0.007 / 10; SCORE's
recipes use 8/255, 2/255, 10). The attack maximises the summed SE; the no-DDPM code maximises
its batch mean, which under sign steps is the same ascent.

Reference training runs (not applied here; a run's schedule comes from its config):
no-DDPM, PreActResNet-18, 110 epochs, batch 128, SGD lr 0.05 momentum 0.9 wd 5e-4, ×0.1 at 100
and ×0.01 at 105, λ (β) = 6, c = 0.3; DDPM, WRN-28-10 with 1M generated images, β = 4 (README)
or 3 (released checkpoints), ``clip_value`` 0, lr 0.2, batch 512, 400 epochs, OneCycle, EMA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy
from robustft.methods.trades import divergence_attack
from robustft.plan import catalog


def squared_error(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-example ‖p − q‖²₂ over the class dimension."""
    return ((p - q) ** 2).sum(dim=1)


def _se_sum(p_clean: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    return squared_error(F.softmax(adv_logits, dim=1), p_clean).sum()


def smoothed_onehot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """ỹ = (1 − s)·onehot + s/(K−1) on the other classes (``trades.py``: ``ls`` spread over
    the K−1 wrong classes, the true class keeps 1 − s)."""
    onehot = F.one_hot(y, num_classes).to(torch.get_default_dtype())
    return onehot * (1 - smoothing) + (1 - onehot) * smoothing / (num_classes - 1)


def clip_bound(clip_loss: float, num_classes: int) -> float:
    """b = c² + c²/(K−1): the SE between a one-hot vector and the one with mass c spread evenly
    over the other classes (``without_DDPM/train_cifar.py``'s clip bound)."""
    if num_classes < 2:
        raise ValueError(f"SCORE needs at least 2 classes, got {num_classes}")
    return clip_loss**2 + clip_loss**2 / (num_classes - 1)


def score_loss(
    clean_logits: torch.Tensor,
    adv_logits: torch.Tensor,
    y: torch.Tensor,
    *,
    beta: float,
    clip_loss: float,
    clip_on: str,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, natural SE, robust SE) of the SCORE objective, each a batch mean; the total is
    clipped per example as ``clip_on`` says (module docstring)."""
    k = clean_logits.shape[1]
    p_clean = F.softmax(clean_logits, dim=1)
    p_adv = F.softmax(adv_logits, dim=1)
    natural = squared_error(p_clean, smoothed_onehot(y, k, label_smoothing).to(p_clean))
    robust = squared_error(p_adv, p_clean)
    b = clip_bound(clip_loss, k)
    if clip_on == "total":
        per_example = F.relu(natural + beta * robust - b)
    elif clip_on == "robust":
        per_example = natural + beta * F.relu(robust - b)
    else:
        raise ValueError(f"score_loss: clip_on must be 'total' or 'robust', got {clip_on!r}")
    return per_example.mean(), natural.mean(), robust.mean()


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """Train-mode BN that normalises with batch statistics but leaves the running statistics
    untouched (the DDPM recipe's ``track_bn_stats(model, False)``)."""
    was_training = model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    model.train()
    for m in bns:
        m.momentum = 0.0  # running = (1 − 0)·running + 0·batch: unchanged
    try:
        yield
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        model.train(was_training)


class SCORE(Method):
    name = "score"
    display_name = catalog.display_name("score")
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("score")

    def craft(self, model: nn.Module, x: torch.Tensor, ctx: TrainContext) -> torch.Tensor:
        """x' maximising Σ_b ‖p(x'_b) − p(x_b)‖² (p(x) fixed) with the ``attack_bn`` BN mode."""
        if self.hp["attack_bn"] == "eval":
            return divergence_attack(self, model, x, ctx, _se_sum, bn="eval")
        with frozen_bn_statistics(model):
            return divergence_attack(self, model, x, ctx, _se_sum, bn="current")

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        x_adv = self.craft(model, x, ctx)
        clean_logits = model(x)
        adv_logits = model(x_adv)
        loss, natural, robust = score_loss(
            clean_logits,
            adv_logits,
            y,
            beta=self.hp["beta"],
            clip_loss=self.hp["clip_loss"],
            clip_on=self.hp["clip_on"],
            label_smoothing=self.hp["label_smoothing"],
        )
        return BatchOutput(
            loss=loss,
            stats={
                "loss_se_nat": natural.detach(),
                "loss_se_adv": robust.detach(),
                "train_nat_acc": accuracy(clean_logits, y),
                "train_adv_acc": accuracy(adv_logits, y),
            },
            objectives=(natural, robust),
        )
