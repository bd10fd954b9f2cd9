"""Dual batch normalisation for TWINS (Liu et al. 2023; AutoLoRa paper Eq. 2, spec section 6).

TWINS trains through two BN branches that share every conv weight:

* the **adaptive** branch theta -- an ordinary BN whose running statistics follow the
  downstream data;
* the **frozen** branch theta-bar -- always normalises with the *pretrained* running statistics,
  which are never updated (it behaves like an eval-mode BN even in train mode).

Two variants of the frozen branch's affine parameters exist:

* ``"paper"`` (Eq. 2: "other parameters except for BN statistics of theta-bar are copied from
  theta"): the frozen branch uses the adaptive branch's gamma/beta, so both loss terms train the
  same gamma/beta.
* ``"official"`` (spec section 6, section 11.12): the frozen branch has its own trainable
  gamma/beta, initialised from the pretrained values and trained only by the frozen-branch terms.

The branch is chosen per call (``bn="adaptive"`` or ``bn="frozen"``), never by module state, so
the same model can be used from several call sites without mode bookkeeping.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

BNBranch = Literal["adaptive", "frozen"]
DualBNMode = Literal["paper", "official"]
BN_BRANCHES: tuple[str, ...] = ("adaptive", "frozen")
DUAL_BN_MODES: tuple[str, ...] = ("paper", "official")


class DualBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (the adaptive branch) plus a frozen-statistics branch.

    The inherited ``weight``/``bias``/``running_mean``/``running_var`` keep torchvision's names
    so pretrained checkpoints load unchanged. The frozen statistics are the buffers
    ``frozen_mean``/``frozen_var``; in ``"official"`` mode the frozen affine parameters are
    ``frozen_weight``/``frozen_bias``. Call :meth:`sync_frozen` after loading pretrained weights.
    """

    def __init__(
        self,
        num_features: int,
        mode: DualBNMode = "paper",
        eps: float = 1e-5,
        momentum: float | None = 0.1,
    ) -> None:
        if mode not in DUAL_BN_MODES:
            raise ValueError(f"dual_bn must be one of {DUAL_BN_MODES}, got {mode!r}")
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.mode: DualBNMode = mode
        self.register_buffer("frozen_mean", torch.zeros(num_features))
        self.register_buffer("frozen_var", torch.ones(num_features))
        if mode == "official":
            self.frozen_weight = nn.Parameter(torch.ones(num_features))
            self.frozen_bias = nn.Parameter(torch.zeros(num_features))
        self.sync_frozen()

    @torch.no_grad()
    def sync_frozen(self) -> None:
        """Copy the current (pretrained) statistics -- and gamma/beta in official mode --
        into the frozen branch."""
        self.frozen_mean.copy_(self.running_mean)
        self.frozen_var.copy_(self.running_var)
        if self.mode == "official":
            self.frozen_weight.copy_(self.weight)
            self.frozen_bias.copy_(self.bias)

    def forward(self, x: torch.Tensor, *, bn: BNBranch = "adaptive") -> torch.Tensor:
        if bn == "adaptive":
            return super().forward(x)
        if bn != "frozen":
            raise ValueError(f"bn must be one of {BN_BRANCHES}, got {bn!r}")
        if self.mode == "official":
            weight, bias = self.frozen_weight, self.frozen_bias
        else:
            weight, bias = self.weight, self.bias
        # training=False: normalise with the stored statistics and never update them.
        return F.batch_norm(
            x, self.frozen_mean, self.frozen_var, weight, bias, False, 0.0, self.eps
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}"


def run_bn(module: nn.Module, x: torch.Tensor, bn: BNBranch) -> torch.Tensor:
    """Call a BN layer on the requested branch; a plain BN only has the adaptive branch."""
    if isinstance(module, DualBatchNorm2d):
        return module(x, bn=bn)
    if bn != "adaptive":
        raise ValueError(f"bn={bn!r} needs a model built with dual_bn='paper' or 'official'")
    return module(x)
