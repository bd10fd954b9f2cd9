"""RiFT (Zhu et al., ICCV 2023; CLAT spec §2): robust critical fine-tuning.

1. **Module robust criticality** (MRC) of every conv / linear module M of the adversarially
   trained model θ_AT, on a fixed adversarial set (PGD with the run's ``train_attack``):

       MRC(M) = max_{‖ΔW_M‖₂ ≤ r·‖W_M‖₂}  CE_adv(θ + ΔW_M) − CE_adv(θ),   r = 0.1,

   approximated as the official code does: gradient *ascent* on W_M alone (plain SGD, lr 1,
   ``mrc_epochs`` = 10 passes over the set in batches of 512), rescaling ΔW_M back onto the
   radius after each pass, keeping the largest mean loss seen. Eval-mode BN throughout.
2. The module with the **lowest** MRC ("non-robust-critical") is fine-tuned alone with the
   **clean** cross-entropy (the official fine-tuning step; all BN statistics keep updating in
   train mode). ``module`` forces a module by name instead (e.g. the README's
   ``layer2.1.conv2`` for ResNet-18).
3. **Interpolation** θ(α) = α·θ_FT + (1 − α)·θ_AT over the whole state dict for α on a grid
   of ``alphas`` points in [0, 1]; α* is the one with the best clean accuracy among those whose
   robust accuracy is at least that of θ_AT minus ``tolerance`` (RiFT paper's rule). Measured
   on the ``select_split`` split (``val`` by default; the official code uses the test set).

Differences from the official code, on purpose: the adversarial set is drawn from the training
split (the code uses the test split) and its attack step is the run's (the code's 2/225 is a
typo for 2/255).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import eval_mode, pgd
from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy

RIFT_RECIPE = {"epochs": 10, "batch_size": 128, "lr": 1e-3, "momentum": 0.9,
               "weight_decay": 5e-4,
               "lr_schedule": {"type": "multistep", "milestones": [5], "factor": 0.1},
               "selection": "test_nat"}  # the official code keeps the best clean test accuracy


def rift_candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Conv2d`` / ``nn.Linear`` (shortcuts included, as the official code)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear) and "sub_block" not in n]


def _mean_ce(model, xs, ys, batch_size) -> float:
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(ys), batch_size):
            total += F.cross_entropy(model(xs[i:i + batch_size]), ys[i:i + batch_size],
                                     reduction="sum").item()
    return total / len(ys)


def module_robust_criticality(model: nn.Module, module: nn.Module, x_adv: torch.Tensor,
                              y: torch.Tensor, *, lr: float = 1.0, epochs: int = 10,
                              radius: float = 0.1, batch_size: int = 512) -> float:
    """MRC of ``module`` (step 1 of the module docstring); the weights are restored after."""
    weight = module.weight
    w0 = weight.detach().clone()
    flag = weight.requires_grad
    weight.requires_grad_(True)
    try:
        with eval_mode(model):
            base = _mean_ce(model, x_adv, y, batch_size)
            worst = base
            limit = radius * w0.norm()
            for _ in range(epochs):
                seen_loss = 0.0
                for i in range(0, len(y), batch_size):
                    xb, yb = x_adv[i:i + batch_size], y[i:i + batch_size]
                    with torch.enable_grad():
                        loss = F.cross_entropy(model(xb), yb)
                        (g,) = torch.autograd.grad(loss, weight)
                    with torch.no_grad():
                        weight.add_(lr * g)  # ascent: SGD on −loss
                    seen_loss += loss.item() * len(yb)
                with torch.no_grad():
                    delta = weight - w0
                    if delta.norm() > limit:
                        weight.copy_(w0 + delta * (limit / delta.norm()))
                worst = max(worst, seen_loss / len(y))
    finally:
        with torch.no_grad():
            weight.copy_(w0)
        weight.requires_grad_(flag)
    return worst - base


def interpolate(theta_ft: dict[str, torch.Tensor], theta_at: dict[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """α·θ_FT + (1 − α)·θ_AT for floating tensors; integer buffers (BN counters) from θ_FT."""
    out = {}
    for k, ft in theta_ft.items():
        at = theta_at[k].to(ft.device)
        out[k] = alpha * ft + (1 - alpha) * at if ft.is_floating_point() else ft.clone()
    return out


class RiFT(Method):
    name = "rift"
    display_name = "RiFT"
    defaults: ClassVar[dict] = {"module": "", "mrc_examples": 10000, "mrc_batch_size": 512, "mrc_epochs": 10,
                "mrc_lr": 1.0, "mrc_radius": 0.1, "alphas": 11, "tolerance": 0.001,
                "select_split": "val"}
    recipe: ClassVar[dict] = RIFT_RECIPE

    def __init__(self, **hparams):
        super().__init__(**hparams)
        if self.hp["select_split"] not in ("val", "test"):
            raise ValueError("rift.select_split must be 'val' or 'test'")
        self.theta_at: dict[str, torch.Tensor] | None = None
        self.module_name = ""
        self.mrc: dict[str, float] = {}

    def start_epoch(self, model, ctx: TrainContext) -> dict[str, float]:
        if self.module_name:
            return {}
        self.theta_at = {k: v.detach().clone() for k, v in model.state_dict().items()}
        names = [n for n, _ in rift_candidates(model)]
        if self.hp["module"]:
            if self.hp["module"] not in names:
                raise ValueError(f"rift.module {self.hp['module']!r} is not a conv/linear module;"
                                 f" candidates: {names}")
            self.module_name = self.hp["module"]
            return {"rift_module_index": float(names.index(self.module_name))}
        if ctx.train_examples is None:
            raise ValueError("rift: computing MRC needs training examples from the loop")
        x, y = ctx.train_examples(int(self.hp["mrc_examples"]))
        cfg, bs = ctx.train_attack, int(self.hp["mrc_batch_size"])
        x_adv = torch.cat([
            pgd(model, x[i:i + bs], y[i:i + bs], eps=cfg.eps, step=cfg.step, steps=cfg.steps,
                random_start=cfg.random_start, generator=ctx.generator)
            for i in range(0, len(y), bs)])
        for name, module in rift_candidates(model):
            self.mrc[name] = module_robust_criticality(
                model, module, x_adv, y, lr=self.hp["mrc_lr"], epochs=int(self.hp["mrc_epochs"]),
                radius=self.hp["mrc_radius"], batch_size=bs)
        self.module_name = min(self.mrc, key=self.mrc.get)
        return {"rift_module_index": float(names.index(self.module_name)),
                "rift_mrc": self.mrc[self.module_name]}

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if not self.module_name:  # before the module is chosen (the loop's first query)
            return [p for p in model.parameters() if p.requires_grad]
        chosen = dict(model.named_modules())[self.module_name]
        keep = {id(p) for p in chosen.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        return list(chosen.parameters())

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        logits = model(x)  # clean CE: RiFT's fine-tuning step
        loss = F.cross_entropy(logits, y)
        return BatchOutput(loss=loss, stats={"loss_ce_nat": loss.item(),
                                             "train_nat_acc": accuracy(logits, y)})

    def finish(self, model, evaluate):
        if self.theta_at is None:
            raise ValueError("rift: no θ_AT recorded (finish before the first epoch)")
        theta_ft = {k: v.detach().clone() for k, v in model.state_dict().items()}
        split = self.hp["select_split"]
        n = int(self.hp["alphas"])
        grid = []
        for j in range(n):
            alpha = j / (n - 1) if n > 1 else 1.0
            model.load_state_dict(interpolate(theta_ft, self.theta_at, alpha))
            m = evaluate()
            grid.append({"alpha": alpha, "nat": m[f"{split}_nat_acc"],
                         "pgd": m[f"{split}_pgd_acc"]})
        floor = grid[0]["pgd"] - self.hp["tolerance"]  # θ_AT's robustness, minus tolerance
        ok = [g for g in grid if g["pgd"] >= floor] or grid[:1]
        best = max(ok, key=lambda g: (g["nat"], g["pgd"]))
        model.load_state_dict(interpolate(theta_ft, self.theta_at, best["alpha"]))
        return {"rift_alpha": best["alpha"], "rift_module": self.module_name,
                "rift_grid": grid, "rift_mrc": dict(self.mrc)}

    def state_dict(self):
        return {"theta_at": self.theta_at, "module": self.module_name, "mrc": dict(self.mrc)}

    def load_state_dict(self, state):
        self.theta_at = state["theta_at"]
        self.module_name = state["module"]
        self.mrc = dict(state["mrc"])
