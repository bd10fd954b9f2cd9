"""LoRA fine-tuning baseline of CLAT Table 1 ("PGD-AT + LoRA", ConvLoRA of Aleem et al. 2024).

Owns the method ``lora_ft``: which convs get a low-rank update, what trains, and the merge at
the end; the LoRA conv itself is :class:`robustft.models.lora.LoraConv2d` (the one the AutoLoRa
branch uses too).

CLAT gives no details beyond the name, so this is the plain reading: every conv weight is
re-parametrised as W = W₀ + s·reshape(B·A) with W₀ frozen, and the low-rank factors (plus,
by default, the classifier) are trained with the PGD-AT loss against the adapted model.

* The low-rank form is the loralib ``ConvLoRA`` one (:mod:`robustft.models.lora`): for a k×k
  conv C_in → C_out, A is (r·k × C_in·k), B is (C_out·k × r·k), B starts at zero,
  s = alpha / r; A starts Kaiming-uniform (``init: kaiming``, loralib's default) or N(0, 1)
  (``init: normal``, the AutoLoRa code's).
* :meth:`LoRAFT.prepare_model` wraps the convs of any architecture in always-on LoRA convs
  (:func:`robustft.models.lora.add_lora`), so the *plain* forward — what attacks and
  evaluation call — already sees the adapted weights.
* At the end (:meth:`LoRAFT.finish`) the update is merged into the conv weights
  (:func:`robustft.models.lora.merge_lora`), so the run's ``model_best.pt`` is an ordinary
  state dict of the architecture.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from robustft.methods.pgd_at import PGDAT
from robustft.models.lora import LoraConfig, add_lora, lora_modules, merge_lora
from robustft.plan import catalog


def _lora_convs(model: nn.Module, include_shortcuts: bool) -> list[str]:
    """Names of the convs to adapt: every ungrouped ``nn.Conv2d`` not yet wrapped."""
    wrapped = {name for name, _ in lora_modules(model)}
    out = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d) or m.groups != 1:
            continue
        if name.rpartition(".")[0] in wrapped:  # the W₀ inside an adapted conv
            continue
        if not include_shortcuts and ("shortcut" in name.lower() or "downsample" in name):
            continue
        out.append(name)
    return out


class LoRAFT(PGDAT):
    """PGD-AT's loss (inherited) on a LoRA re-parametrisation of the convs."""

    name = "lora_ft"
    display_name = catalog.display_name("lora_ft")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("lora_ft")

    def prepare_model(self, model: nn.Module) -> None:
        config = LoraConfig(rank=int(self.hp["rank"]), alpha=self.hp["alpha"])
        add_lora(
            model,
            _lora_convs(model, self.hp["include_shortcuts"]),
            config,
            init=self.hp["init"],
            always_on=True,
        )
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.trainable_parameters(model):
            p.requires_grad_(True)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        params = [p for _, m in lora_modules(model) if m.always_on for p in (m.lora_A, m.lora_B)]
        if self.hp["train_head"]:
            params += list(model.head.parameters())
        if self.hp["train_bn"]:
            params += [
                p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()
            ]
        return params

    def finish(self, model, evaluate):
        """Merge W₀ + s·BA into plain conv weights (the saved model needs no LoRA code)."""
        merged = merge_lora(model)
        for p in model.parameters():
            p.requires_grad_(True)
        return {"lora_merged_convs": merged}
