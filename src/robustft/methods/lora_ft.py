"""LoRA fine-tuning baseline of CLAT Table 1 ("PGD-AT + LoRA", ConvLoRA of Aleem et al. 2024).

CLAT gives no details beyond the name, so this is the plain reading: every conv weight is
re-parametrised as W = W₀ + s·reshape(B·A) with W₀ frozen, and the low-rank factors (plus,
by default, the classifier) are trained with the PGD-AT loss against the adapted model.

* The low-rank form is the loralib ``ConvLoRA`` one that the rest of the project uses
  (:mod:`robustft.models.lora`): for a k×k conv C_in → C_out, A is (r·k × C_in·k),
  B is (C_out·k × r·k), B starts at zero, s = alpha / r.
* It is added with ``torch.nn.utils.parametrize`` (in :meth:`LoRAFT.prepare_model`), so it works
  for any architecture and the *plain* forward — what attacks and evaluation call — already
  sees the adapted weights.
* At the end (:meth:`LoRAFT.finish`) the update is merged into the conv weights, so the run's
  ``model_best.pt`` is an ordinary state dict of the architecture.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from robustft.methods.pgd_at import PGDAT


class LowRankDelta(nn.Module):
    """Parametrisation W ↦ W + s·(B A).view(W.shape) of a conv weight."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, init: str) -> None:
        super().__init__()
        c_out, c_in, kh, kw = weight.shape
        if kh != kw:
            raise ValueError(f"LoRA needs square kernels, got {kh}×{kw}")
        k = kh
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(weight.new_empty(rank * k, c_in * k))
        self.lora_B = nn.Parameter(weight.new_zeros(c_out * k, rank * k))
        if init == "kaiming":  # loralib's default for A
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        elif init == "normal":  # the AutoLoRa code's N(0, 1)
            nn.init.normal_(self.lora_A)
        else:
            raise ValueError(f"lora_ft.init must be 'kaiming' or 'normal', got {init!r}")

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.lora_B @ self.lora_A).view(weight.shape) * self.scaling


def _lora_convs(model: nn.Module, include_shortcuts: bool) -> list[tuple[str, nn.Conv2d]]:
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            if not include_shortcuts and ("shortcut" in name.lower() or "downsample" in name):
                continue
            out.append((name, m))
    return out


class LoRAFT(PGDAT):
    """PGD-AT's loss (inherited) on a LoRA re-parametrisation of the convs."""

    name = "lora_ft"
    display_name = "LoRA"
    defaults: ClassVar[dict] = {"rank": 8, "alpha": 1.0, "init": "kaiming", "train_head": True,
                "train_bn": False, "include_shortcuts": True}

    def prepare_model(self, model: nn.Module) -> None:
        for _, conv in _lora_convs(model, self.hp["include_shortcuts"]):
            if parametrize.is_parametrized(conv, "weight"):
                continue
            delta = LowRankDelta(conv.weight.detach(), int(self.hp["rank"]), self.hp["alpha"],
                                 self.hp["init"])
            parametrize.register_parametrization(conv, "weight", delta)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.trainable_parameters(model):
            p.requires_grad_(True)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        params = [p for m in model.modules() if isinstance(m, LowRankDelta)
                  for p in (m.lora_A, m.lora_B)]
        if self.hp["train_head"]:
            params += list(model.head.parameters())
        if self.hp["train_bn"]:
            params += [p for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                       for p in m.parameters()]
        return params

    def finish(self, model, evaluate):
        """Merge W₀ + s·BA into plain conv weights (the saved model needs no LoRA code)."""
        merged = 0
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
                merged += 1
        for p in model.parameters():
            p.requires_grad_(True)
        return {"lora_merged_convs": merged}
