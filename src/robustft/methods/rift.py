"""RiFT (Zhu et al., ICCV 2023; CLAT spec §2): robust critical fine-tuning.

1. **Module robust criticality** (MRC) of every conv / linear module M of the adversarially
   trained model θ_AT. RiFT paper, MRC definition (Def. 3.1, Eq. 3):

       MRC(M) = max_{ΔW ∈ C}  L_adv(θ + ΔW) − L_adv(θ),
       C = {ΔW : ‖ΔW‖₂ ≤ ε·‖W_M‖₂, ΔW = 0 outside M},   ε = ``mrc_radius`` = 0.1,

   ‖·‖₂ the 2-norm of the flattened tensor (the code's ``torch.linalg.norm``), L_adv the mean
   cross-entropy on a fixed adversarial set (PGD with the run's ``train_attack`` against θ_AT,
   eval mode, generated once, as the code's ``generate_adv_dataset``). The max is approximated
   as the official ``layer_sharpness`` (``microsoft/robustlearn`` ``RiFT/main.py``) does, in
   eval mode throughout (BN running statistics frozen):

   * L_adv(θ) is one evaluation pass over the set.
   * ``mrc_epochs`` = 10 epochs of gradient **ascent** on W_M alone: plain SGD (lr
     ``mrc_lr`` = 1, no momentum, no weight decay) on −CE over the set, shuffled every epoch,
     in minibatches of ``mrc_batch_size`` = 512. Inside an epoch W_M is not projected.
   * After every epoch ΔW = W_M − W_M⁰ is rescaled back onto the ball when it left it:
     ΔW ← ΔW·ε/t with t = ‖ΔW‖₂/‖W_M⁰‖₂, if t > ε.
   * Then a separate no-grad evaluation pass measures L_adv at the projected weights.
   * ``mrc_max: official``: MRC = max over those ``mrc_epochs`` evaluations, the running max
     starting from 0 (the code's ``max_loss = 0.0``), minus L_adv(θ). This can be negative when
     every projected point has a lower loss than θ.
     ``mrc_max: paper``: ΔW = 0 belongs to C in Eq. 3, so the unperturbed loss is a candidate
     as well and MRC = max(0, official value) ≥ 0.
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
typo for 2/255). Like the code, L_adv uses examples fixed at θ_AT rather than re-attacking every
perturbed θ + ΔW (the inner max of the paper's robust loss).

The official fine-tuning run (spec §2; not applied here, a run's schedule comes from its
config): 10 epochs, SGD lr 1e-3, momentum 0.9, weight decay 5e-4, batch 128, LR ×0.1 at epoch
5, keeping the checkpoint with the best clean test accuracy (``selection: test_nat``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustft import rng
from robustft.attacks import eval_mode, pgd
from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy
from robustft.plan import catalog


def rift_candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Conv2d`` / ``nn.Linear`` (shortcuts included, as the official code)."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and "sub_block" not in n
    ]


def _mean_ce(model, xs, ys, batch_size) -> float:
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(ys), batch_size):
            total += F.cross_entropy(
                model(xs[i : i + batch_size]), ys[i : i + batch_size], reduction="sum"
            ).item()
    return total / len(ys)


def module_robust_criticality(
    model: nn.Module,
    module: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float = 1.0,
    epochs: int = 10,
    radius: float = 0.1,
    batch_size: int = 512,
    max_from: str = "official",
    shuffle: bool = True,
    generator: torch.Generator | None = None,
) -> float:
    """MRC of ``module`` (step 1 of the module docstring); its weight is restored after.

    ``max_from`` is the ``mrc_max`` option. ``shuffle`` reorders the set before every ascent
    epoch with ``generator`` (the code's ``DataLoader(shuffle=True)``); evaluation passes keep
    the given order (a mean does not depend on it).
    """
    if max_from not in ("official", "paper"):
        raise ValueError(f"rift.mrc_max must be 'official' or 'paper', got {max_from!r}")
    if epochs < 1:
        raise ValueError(
            f"rift.mrc_epochs must be at least 1, got {epochs}: the MRC is the "
            "worst loss measured after an ascent epoch"
        )
    weight = module.weight
    w0 = weight.detach().clone()
    w0_norm = torch.linalg.vector_norm(w0)
    flag = weight.requires_grad
    weight.requires_grad_(True)
    n = len(y)
    try:
        with eval_mode(model):
            clean = _mean_ce(model, x_adv, y, batch_size)  # L_adv(θ)
            # official: the code's running max starts at 0; paper: ΔW = 0 is in C (Eq. 3)
            worst = 0.0 if max_from == "official" else clean
            for _ in range(epochs):
                order = (
                    rng.randperm(n, generator).to(y.device)
                    if shuffle
                    else torch.arange(n, device=y.device)
                )
                for i in range(0, n, batch_size):
                    index = order[i : i + batch_size]
                    with torch.enable_grad():
                        loss = F.cross_entropy(model(x_adv[index]), y[index])
                        (g,) = torch.autograd.grad(loss, weight)
                    with torch.no_grad():
                        weight.add_(g, alpha=lr)  # SGD step on −CE = ascent on CE
                with torch.no_grad():
                    delta = weight - w0
                    times = torch.linalg.vector_norm(delta) / w0_norm
                    if times > radius:  # back onto the ball ‖ΔW‖ = ε·‖W⁰‖
                        weight.copy_(w0 + delta / times * radius)
                # the code's separate evaluation pass at the projected weights
                worst = max(worst, _mean_ce(model, x_adv, y, batch_size))
    finally:
        with torch.no_grad():
            weight.copy_(w0)
        weight.requires_grad_(flag)
    return worst - clean


def interpolate(
    theta_ft: dict[str, torch.Tensor], theta_at: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """α·θ_FT + (1 − α)·θ_AT for floating tensors; integer buffers (BN counters) from θ_FT."""
    out = {}
    for k, ft in theta_ft.items():
        at = theta_at[k].to(ft.device)
        out[k] = alpha * ft + (1 - alpha) * at if ft.is_floating_point() else ft.clone()
    return out


class RiFT(Method):
    name = "rift"
    display_name = catalog.display_name("rift")
    #: the schema's defaults (robustft.plan.catalog, where each option is typed)
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("rift")

    def __init__(self, **hparams):
        super().__init__(**hparams)
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
                raise ValueError(
                    f"rift.module {self.hp['module']!r} is not a conv/linear module;"
                    f" candidates: {names}"
                )
            self.module_name = self.hp["module"]
            return {"rift_module_index": float(names.index(self.module_name))}
        if ctx.train_examples is None:
            raise ValueError("rift: computing MRC needs training examples from the loop")
        x, y = ctx.train_examples(int(self.hp["mrc_examples"]))
        cfg, bs = ctx.train_attack, int(self.hp["mrc_batch_size"])
        x_adv = torch.cat(
            [
                pgd(
                    model,
                    x[i : i + bs],
                    y[i : i + bs],
                    eps=cfg.eps,
                    step=cfg.step,
                    steps=cfg.steps,
                    random_start=cfg.random_start,
                    generator=ctx.generator,
                )
                for i in range(0, len(y), bs)
            ]
        )
        for name, module in rift_candidates(model):
            self.mrc[name] = module_robust_criticality(
                model,
                module,
                x_adv,
                y,
                lr=self.hp["mrc_lr"],
                epochs=int(self.hp["mrc_epochs"]),
                radius=self.hp["mrc_radius"],
                batch_size=bs,
                max_from=self.hp["mrc_max"],
                generator=ctx.generator,
            )
        self.module_name = min(self.mrc, key=self.mrc.get)
        return {
            "rift_module_index": float(names.index(self.module_name)),
            "rift_mrc": self.mrc[self.module_name],
        }

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
        return BatchOutput(
            loss=loss, stats={"loss_ce_nat": loss.detach(), "train_nat_acc": accuracy(logits, y)}
        )

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
            grid.append(
                {"alpha": alpha, "nat": m[f"{split}_nat_acc"], "pgd": m[f"{split}_pgd_acc"]}
            )
        floor = grid[0]["pgd"] - self.hp["tolerance"]  # θ_AT's robustness, minus tolerance
        ok = [g for g in grid if g["pgd"] >= floor] or grid[:1]
        best = max(ok, key=lambda g: (g["nat"], g["pgd"]))
        model.load_state_dict(interpolate(theta_ft, self.theta_at, best["alpha"]))
        return {
            "rift_alpha": best["alpha"],
            "rift_module": self.module_name,
            "rift_grid": grid,
            "rift_mrc": dict(self.mrc),
        }

    def state_dict(self):
        return {"theta_at": self.theta_at, "module": self.module_name, "mrc": dict(self.mrc)}

    def load_state_dict(self, state):
        self.theta_at = state["theta_at"]
        self.module_name = state["module"]
        self.mrc = dict(state["mrc"])
