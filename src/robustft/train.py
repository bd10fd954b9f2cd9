"""The one training loop every method runs through.

It owns what all methods share — seeding, minibatches, SGD, driving the LR schedule (every
schedule the same way, through :class:`robustft.schedules.Schedule`: per-epoch and per-step LR,
the end-of-epoch decision to halve/reload/stop), the order of the epoch end (AutoLoRa paper vs
official), per-epoch natural/PGD-10 evaluation, best-checkpoint selection,
gradient similarity, NaN detection and checkpoint/resume — and asks the method (see
:mod:`robustft.methods`) only for the per-batch loss and its epoch hook.

Resume: after every epoch the complete state (model, optimiser, schedule, method state, RNG
states, best-so-far, log) is written atomically to ``<checkpoint_dir>/last.pt``. The directory
is not a Snakemake output, so it survives the clean-up of a killed job; starting the same run
again continues from the last completed epoch and ends with the same numbers as an
uninterrupted run on CPU.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustft import rng
from robustft.attacks import PGDConfig, correct, pgd_accuracy
from robustft.batches import Split, eval_batches, load_split, num_classes, train_batches
from robustft.contracts import TrainConfig
from robustft.io import atomic_path, move_aside
from robustft.methods import Method, TrainContext, build_method
from robustft.models.checkpoint import (
    CheckpointError,
    ModelSpec,
    load_model_state,
    load_torch_file,
)
from robustft.schedules import build_schedule

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; no model is written."""


def resolve_device(name: str, *, gpus: int = 0) -> torch.device:
    """The device of ``device: auto | cpu | cuda[:i]`` for a job that asked for ``gpus`` GPUs.

    A job that asked for a GPU (the rule's ``resources.gpu``, passed as ``--gpus``) but finds no
    CUDA must not quietly train on the CPU for days: that is an error unless the config says
    ``device: cpu`` explicitly.
    """
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name != "auto":
            raise RuntimeError(
                f"device: {name} but torch sees no CUDA device here; set "
                "`device: cpu` (or `auto`) in config.yaml to run on the CPU"
            )
        if gpus > 0:
            raise RuntimeError(
                f"this job asked for {gpus} GPU(s) (--gpus {gpus}, the rule's resources.gpu) but "
                "torch sees no CUDA device (check CUDA_VISIBLE_DEVICES and the driver); to run "
                "it on the CPU anyway set `device: cpu` in config.yaml"
            )
        return torch.device("cpu")
    return torch.device("cuda" if name == "auto" else name)


def load_full_model(model: nn.Module, path: Path) -> None:
    """Initialise every tensor (head included) from a previous run's ``model_best.pt``."""
    state = load_model_state(path)  # a corrupt file: error naming it and what to do
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: cannot initialise the model from this file: {e}") from e


def pgd_accuracy_on(
    model: nn.Module,
    split: Split,
    attack: PGDConfig,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> float:
    correct = 0
    for x, y in eval_batches(split, batch_size):
        correct += int(
            pgd_accuracy(model, x.to(device), y.to(device), attack, generator=generator).sum()
        )
    return correct / max(len(split), 1)


def cosine_of_gradients(
    objectives: tuple[torch.Tensor, torch.Tensor], params: list[nn.Parameter]
) -> float:
    """AutoLoRa Eq. 3/4: cos(∇θ1 natural, ∇θ1 adversarial) over the FE parameters θ1."""
    flat = []
    for objective in objectives:
        grads = torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True)
        flat.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, params)
                ]
            )
        )
    norms = flat[0].norm() * flat[1].norm()
    return float(flat[0] @ flat[1] / norms) if norms > 0 else 0.0


class Trainer:
    """Runs one (dataset, backbone, method variant, seed) to completion, resumably."""

    def __init__(
        self, cfg: TrainConfig, data_dir: Path, backbone: Path | None, checkpoint_dir: Path
    ) -> None:
        from robustft.models import load_backbone

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.checkpoint_dir = Path(checkpoint_dir)
        torch.manual_seed(cfg.seed)
        self.generator = rng.new_generator(cfg.seed)
        self.train = load_split(data_dir, "train")
        self.val = load_split(data_dir, "val").subset(cfg.val_examples)
        self.test = load_split(data_dir, "test").subset(cfg.test_examples)
        self.method: Method = build_method(cfg.method, **cfg.method_params)
        self.model_spec = ModelSpec.of(
            cfg.arch,
            num_classes(data_dir),
            cfg.method,
            input_size=cfg.input_size,
            width=cfg.width,
            **self.method.model_kwargs(),
        )
        self.model = self.model_spec.build()
        if backbone is not None:
            if cfg.init_from == "model":
                load_full_model(self.model, backbone)
            elif cfg.init_from == "backbone":
                load_backbone(self.model, backbone)
            else:
                raise ValueError(f"init_from must be 'backbone' or 'model', got {cfg.init_from!r}")
        # prepare before moving: tensors a method creates (LoRA-FT's factors) are drawn on the
        # CPU from the seeded global RNG, so every device starts from the same weights
        self.method.prepare_model(self.model)
        self.model.to(self.device)
        self.params: list[nn.Parameter] = []
        self._refresh_optimizer()
        self.finish_info: dict[str, Any] | None = None
        self.schedule = build_schedule(cfg)
        self.train_attack = PGDConfig(**cfg.train_attack)
        self.eval_attack = PGDConfig(**cfg.eval_attack)
        self.rows: list[dict[str, Any]] = []
        self.best = {"score": -math.inf, "epoch": -1}
        self.best_val: dict[str, Any] = {"score": -math.inf, "state": None}
        self.start_epoch = 0
        self.stopped = False

    def _refresh_optimizer(self) -> bool:
        """(Re)build SGD over the method's current trainable set if it changed (base.py:
        ``trainable_parameters`` is re-queried after every ``start_epoch``)."""
        params = self.method.trainable_parameters(self.model)
        if [id(p) for p in params] == [id(p) for p in self.params]:
            return False
        lr = self.optimizer.param_groups[0]["lr"] if self.params else self.cfg.lr
        self.params = params
        self.optimizer = torch.optim.SGD(
            self.params, lr=lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay
        )
        return True

    # --- checkpointing -----------------------------------------------------------------------
    @property
    def final_path(self) -> Path:
        return self.checkpoint_dir / "final.pt"

    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def _restart_hint(self) -> str:
        return (
            f"Delete the run's checkpoint directory {self.checkpoint_dir} and run the "
            "training job again (it starts over)."
        )

    def save_checkpoint(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "method": self.method.state_dict(),
            "rows": self.rows,
            "best": self.best,
            "best_val": self.best_val,
            "stopped": self.stopped,
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "config": self.cfg.__dict__,
        }
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.last_path) as tmp:
            torch.save(state, tmp)

    def try_resume(self) -> bool:

        if not self.last_path.exists():
            return False
        # Our own file, written by save_checkpoint: plain tensors and builtins only.
        try:
            state = load_torch_file(self.last_path, map_location=self.device, hint="")
            if not isinstance(state, dict) or not {"config", "epoch", "model"} <= state.keys():
                raise CheckpointError(f"{self.last_path}: not a checkpoint of this trainer")
        except CheckpointError as e:
            # Unreadable (a disk error, a copy cut short): retrying would fail forever, and a
            # checkpoint only saves time, so keep the file for inspection and start over.
            aside = move_aside(self.last_path, "corrupt")
            log.warning(
                "%s: cannot resume from %s (%s); moved it to %s and starting over",
                self.cfg.run_name,
                self.last_path,
                e,
                aside,
            )
            return False
        if state["config"] != self.cfg.__dict__:
            # The run's settings changed (an edited ablation): that checkpoint is stale. Keep
            # it for inspection under another name and start from scratch.
            stale = move_aside(self.last_path, "stale")
            log.warning(
                "%s: %s has other settings; moved it to %s and starting over",
                self.cfg.run_name,
                self.last_path,
                stale.name,
            )
            return False
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self._refresh_optimizer()  # the method's trainable set may have changed since epoch 0
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.rows, self.best, self.best_val = state["rows"], state["best"], state["best_val"]
        self.stopped = state["stopped"]
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        self.start_epoch = state["epoch"] + 1
        log.info("%s: resumed after epoch %d", self.cfg.run_name, state["epoch"])
        return True

    # --- one epoch ---------------------------------------------------------------------------
    def _context(self, epoch: int) -> TrainContext:
        def measure(forward) -> float:
            flags = correct(
                self.model,
                train_batches(
                    self.train, self.cfg.eval_batch_size, self.generator, augment=self.cfg.augment
                ),
                forward=forward,
            )
            return int(flags.sum()) / max(len(flags), 1)

        def examples(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            index = rng.randperm(len(self.train), self.generator)[:n]
            x, y = self.train.tensors(index.numpy())
            return x.to(self.device), y.to(self.device)

        return TrainContext(
            train_attack=self.train_attack,
            generator=self.generator,
            batch_size=self.cfg.batch_size,
            epoch=epoch,
            measure_train_accuracy=measure,
            train_examples=examples,
        )

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, started = self.cfg, time.perf_counter()
        lr = self.schedule.lr_for_epoch(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ctx = self._context(epoch)
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row.update(self.method.start_epoch(self.model, ctx))
        if self._refresh_optimizer():
            row["optimizer_rebuilt"] = 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        steps_per_epoch = math.ceil(len(self.train) / cfg.batch_size)
        self.model.train()
        sums: dict[str, float] = {}
        seen, grad_sims = 0, []
        fe_params = [p for p in self.model.feature_extractor_parameters() if p.requires_grad]
        for step, (x, y) in enumerate(
            train_batches(self.train, cfg.batch_size, self.generator, augment=cfg.augment)
        ):
            if step % max(1, steps_per_epoch // 4) == 0:  # ~5 progress lines per epoch
                log.info("%s epoch %d: batch %d/%d", cfg.run_name, epoch, step + 1, steps_per_epoch)
            x, y = x.to(self.device), y.to(self.device)
            step_lr = self.schedule.lr_for_step(epoch, step, steps_per_epoch)  # Fast-AT: cyclic
            for group in self.optimizer.param_groups:
                group["lr"] = step_lr
            out = self.method.batch_loss(self.model, x, y, ctx)
            if not torch.isfinite(out.loss):
                raise NonFiniteLossError(
                    f"run {cfg.run_name}: loss is {out.loss.item()} at epoch {epoch} step {step} "
                    f"(lr {lr:g}); stopping without writing a model"
                )
            if step < cfg.grad_sim_batches and out.objectives is not None:
                grad_sims.append(cosine_of_gradients(out.objectives, fe_params))
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            n = len(y)
            seen += n
            for key, value in {"loss": out.loss.item(), **out.stats}.items():
                sums[key] = sums.get(key, 0.0) + value * n
        row.update({k: v / max(seen, 1) for k, v in sums.items()})
        row["grad_sim"] = sum(grad_sims) / len(grad_sims) if grad_sims else float("nan")
        row.update(self.method.end_epoch(self.model, ctx))
        self.end_epoch(epoch, row)
        row["seconds"] = time.perf_counter() - started
        return row

    def evaluate_split(self, name: str) -> dict[str, float]:
        """Natural and PGD accuracy on ``val`` or ``test`` (the per-epoch subsets)."""
        split, bs, dev = getattr(self, name), self.cfg.eval_batch_size, self.device
        clean = correct(self.model, eval_batches(split, bs))
        return {
            f"{name}_nat_acc": int(clean.sum()) / max(len(split), 1),
            f"{name}_pgd_acc": pgd_accuracy_on(self.model, split, self.eval_attack, bs, dev),
        }

    def evaluate_epoch(self) -> dict[str, float]:
        return {**self.evaluate_split("val"), **self.evaluate_split("test")}

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Evaluate, select and apply the LR schedule's decision, in the configured order.

        ``paper`` (AutoLoRa Algorithm 1): val and test are evaluated on the epoch's weights, the
        best checkpoint is selected, then the schedule may halve the LR and reload the best-val
        weights. ``official`` (AutoLoRa code, ``train`` loop of the HR script): val is evaluated,
        the schedule decides and reloads, and only then is the test set evaluated and the best
        checkpoint selected — on a reload epoch, on the reloaded weights. Without a reloading
        schedule both orders give the same row.
        """
        row.update(self.evaluate_split("val"))
        official = self.cfg.epoch_end_order == "official"
        if not official:
            row.update(self.evaluate_split("test"))
            self._select(epoch, row)
        self._track_best_val(row)
        decision = self.schedule.end_epoch(epoch, row["val_pgd_acc"])  # AutoLR: halve, reload
        row.update(decision.log())
        if decision.reload_best and self.best_val["state"] is not None:
            self.model.load_state_dict(self.best_val["state"])
        self.stopped = decision.stop
        if official:
            row.update(self.evaluate_split("test"))
            self._select(epoch, row)

    def _select(self, epoch: int, row: dict[str, Any]) -> None:
        """Best checkpoint by the configured criterion (paper: best test PGD-10, Sec. 5).

        The running best starts at −∞ with a strict ``>``, so the first epoch is always a
        candidate and every run ends with a model. The official scripts start at 0.0 (no
        ``checkpoint_best.pth`` at all while robust accuracy stays 0); the two pick the same
        epoch whenever the official run writes a best checkpoint.
        """
        score = {
            "test_pgd": row["test_pgd_acc"],
            "val_pgd": row["val_pgd_acc"],
            "test_nat": row["test_nat_acc"],
            "val_nat": row["val_nat_acc"],
            "last": float(epoch),
        }[self.cfg.selection]
        if score > self.best["score"]:
            self.best = {"score": score, "epoch": epoch}
            with atomic_path(self.best_path) as tmp:
                torch.save(self.model.state_dict(), tmp)

    def _track_best_val(self, row: dict[str, Any]) -> None:
        """AutoLoRa's second "best on validation" copy, reloaded by the LR scheduler (spec §5,
        §7); like the official running best (−1), any first accuracy replaces −∞."""
        if row["val_pgd_acc"] > self.best_val["score"]:
            self.best_val = {
                "score": row["val_pgd_acc"],
                "state": copy.deepcopy(self.model.state_dict()),
            }

    def fit(self) -> list[dict[str, Any]]:
        if self.cfg.selection not in ("test_pgd", "val_pgd", "test_nat", "val_nat", "last"):
            raise ValueError(
                f"selection must be test_pgd, val_pgd, test_nat, val_nat or last, "
                f"got {self.cfg.selection!r}"
            )
        if self.cfg.epoch_end_order not in ("paper", "official"):
            raise ValueError(
                f"epoch_end_order must be 'paper' or 'official', got {self.cfg.epoch_end_order!r}"
            )
        self.try_resume()
        for epoch in range(self.start_epoch, self.cfg.epochs):
            if self.stopped:
                break
            row = self.run_epoch(epoch)
            self.rows.append(row)
            log.info(
                "%s epoch %d: %s",
                self.cfg.run_name,
                epoch,
                ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)),
            )
            self.save_checkpoint(epoch)
        self._finish()
        return self.rows

    def _finish(self) -> None:
        """``Method.finish`` on the selected checkpoint (RiFT interpolation, LoRA merge); the
        result goes to ``final.pt``. Recomputed from ``best.pt`` on every call, so a job killed
        here gives the same result when started again."""
        if type(self.method).finish is Method.finish or not self.best_path.exists():
            return
        self.model.load_state_dict(
            load_model_state(self.best_path, map_location=self.device, hint=self._restart_hint)
        )
        info = self.method.finish(self.model, self.evaluate_epoch)
        if info is None:
            return
        with atomic_path(self.final_path) as tmp:
            torch.save(self.model.state_dict(), tmp)
        self.finish_info = info

    def write_outputs(self, out_dir: Path) -> None:
        """Copy the selected model and write the log; each file appears complete or not at all."""
        out_dir.mkdir(parents=True, exist_ok=True)
        source = self.final_path if self.finish_info is not None else self.best_path
        with atomic_path(out_dir / "model_best.pt") as tmp:
            state = load_model_state(source, hint=self._restart_hint)
            # self-describing: later steps rebuild the model from "model", not from settings
            payload = {
                "state_dict": state,
                "model": self.model_spec.as_dict(),
                "best_epoch": self.best["epoch"],
                "selection": self.cfg.selection,
                "config": self.cfg.__dict__,
            }
            if self.finish_info is not None:
                payload["finish"] = self.finish_info
            torch.save(payload, tmp)
        write_log(self.rows, out_dir / "train_log.csv")


def write_log(rows: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def train_run(
    cfg: TrainConfig, data_dir: Path, backbone: Path | None, checkpoint_dir: Path, out_dir: Path
) -> list[dict[str, Any]]:
    trainer = Trainer(
        cfg, Path(data_dir), Path(backbone) if backbone else None, Path(checkpoint_dir)
    )
    rows = trainer.fit()
    trainer.write_outputs(Path(out_dir))
    return rows
