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

Speed (issue 9; :mod:`robustft.precision` owns the rules): the method's ``batch_loss`` (its
training attack included) runs under the configured autocast precision, the model may run in
``channels_last`` after its preprocessing and be compiled, and a split that fits lives on the
device (:func:`robustft.batches.on_device`). A step never waits for the device: the epoch's
statistics and a non-finite-loss flag accumulate as device tensors, read at the few progress
lines of an epoch and at its end; the NaN guard checks the flag there, before anything is
evaluated or written, so no model is ever written after a non-finite loss.
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

from robustft import precision, rng
from robustft.attacks import PGDConfig, correct, pgd_accuracy
from robustft.batches import (
    Split,
    eval_batches,
    load_split,
    num_classes,
    on_device,
    train_batches,
)
from robustft.contracts import ContractError, TrainConfig
from robustft.io import atomic_path, move_aside, sha256_file
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
) -> torch.Tensor:
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
    # 0-d tensor, read with the epoch's statistics; a zero gradient gives 0, not NaN
    dot, norms = (flat[0] @ flat[1]).float(), (flat[0].norm() * flat[1].norm()).float()
    return torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)


class Trainer:
    """Runs one (dataset, backbone, method variant, seed) to completion, resumably."""

    def __init__(
        self, cfg: TrainConfig, data_dir: Path, backbone: Path | None, checkpoint_dir: Path
    ) -> None:
        from robustft.models import load_backbone

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        precision.check_precision(cfg.precision, self.device)  # fp16 off CUDA: error, at once
        precision.configure_backends(self.device)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.backbone = backbone
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
        # what the run really uses: channels_last may be declined on the CPU (precision.py)
        self.channels_last = cfg.channels_last and precision.use_channels_last(
            self.model, self.device
        )
        precision.maybe_compile(self.model, cfg.compile)
        self.scaler = precision.grad_scaler(cfg.precision, self.device)
        # the training split on the device when it fits (data_on_device); else the host path,
        # prefetched by a background thread when the model is on a GPU
        self.train_source = on_device(self.train, self.device, cfg.data_on_device)
        self.prefetch_to = (
            self.device if self.train_source is None and self.device.type == "cuda" else None
        )
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
        if self.scaler is not None:  # fp16: the loss scale continues where it was
            state["scaler"] = self.scaler.state_dict()
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
        if not self._same_settings(state["config"]):
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
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        log.info("%s: resumed after epoch %d", self.cfg.run_name, state["epoch"])
        return True

    def _same_settings(self, saved: dict[str, Any]) -> bool:
        """Whether a checkpoint's settings are this run's, compared as the contract writes them
        (a setting added later, left at its default, does not make a checkpoint stale)."""
        try:
            return TrainConfig.from_dict(saved).to_dict() == self.cfg.to_dict()
        except (ContractError, TypeError):  # a setting that no longer exists
            return False

    # --- one epoch ---------------------------------------------------------------------------
    def _train_batches(self, batch_size: int):
        """The epoch's shuffled, augmented batches from the device copy or the host split."""
        return train_batches(
            self.train_source if self.train_source is not None else self.train,
            batch_size,
            self.generator,
            augment=self.cfg.augment,
            prefetch_to=self.prefetch_to,
        )

    def _context(self, epoch: int) -> TrainContext:
        def measure(forward) -> float:
            flags = correct(
                self.model, self._train_batches(self.cfg.eval_batch_size), forward=forward
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
        stats = _DeviceStats(self.device)
        fe_params = [p for p in self.model.feature_extractor_parameters() if p.requires_grad]
        for step, (x, y) in enumerate(self._train_batches(cfg.batch_size)):
            if step % max(1, steps_per_epoch // 4) == 0:  # ~5 progress lines per epoch
                self._check_finite(stats, epoch, lr)  # the line reads the device anyway
                log.info(
                    "%s epoch %d: batch %d/%d (%.0f s)",
                    cfg.run_name,
                    epoch,
                    step + 1,
                    steps_per_epoch,
                    time.perf_counter() - started,
                )
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            step_lr = self.schedule.lr_for_step(epoch, step, steps_per_epoch)  # Fast-AT: cyclic
            for group in self.optimizer.param_groups:
                group["lr"] = step_lr
            with precision.autocast(cfg.precision, self.device):
                out = self.method.batch_loss(self.model, x, y, ctx)
            stats.flag_nonfinite(out.loss, step)
            if step < cfg.grad_sim_batches and out.objectives is not None:
                stats.add_grad_sim(cosine_of_gradients(out.objectives, fe_params))
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                out.loss.backward()
                self.optimizer.step()
            else:  # fp16 on CUDA: scaled backward, the step skipped on inf gradients
                self.scaler.scale(out.loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            stats.add({"loss": out.loss, **out.stats}, len(y))
        self._check_finite(stats, epoch, lr)  # before evaluation, selection or any write
        row.update(stats.means())
        row.update(self.method.end_epoch(self.model, ctx))
        self.end_epoch(epoch, row)
        row["seconds"] = time.perf_counter() - started
        return row

    def _check_finite(self, stats: _DeviceStats, epoch: int, lr: float) -> None:
        """The NaN guard: stop the run, writing nothing, if any loss so far was not finite."""
        bad = stats.first_nonfinite()
        if bad is not None:
            step, value = bad
            raise NonFiniteLossError(
                f"run {self.cfg.run_name}: loss is {value} at epoch {epoch} step {step} "
                f"(lr {lr:g}); stopping without writing a model"
            )

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
        log.info("%s", self.startup_line())
        started, total = time.perf_counter(), self.cfg.epochs
        for epoch in range(self.start_epoch, total):
            if self.stopped:
                break
            row = self.run_epoch(epoch)
            self.rows.append(row)
            elapsed = time.perf_counter() - started
            done = epoch + 1 - self.start_epoch
            log.info(
                "%s epoch %d done (%d/%d): %s; elapsed %s, ETA %s",
                self.cfg.run_name,
                epoch,
                epoch + 1,
                total,
                ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)),
                _duration(elapsed),
                _duration(elapsed / done * (total - epoch - 1)),
            )
            self.save_checkpoint(epoch)
        self._finish()
        return self.rows

    def startup_line(self) -> str:
        """What this run runs on and with: device, threads, precision, layout, data, backbone."""
        cfg = self.cfg
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        backbone = "none (from scratch)"
        if self.backbone is not None:
            backbone = f"{self.backbone} (sha256 {sha256_file(self.backbone)})"
        data = "on the device" if self.train_source is not None else "host"
        if self.prefetch_to is not None:
            data += ", prefetched"
        return (
            f"{cfg.run_name}: start on {device}, {torch.get_num_threads()} CPU threads, "
            f"precision {cfg.precision}, channels_last {self.channels_last}, "
            f"compile {cfg.compile}; data: train {len(self.train)} ({data}), "
            f"val {len(self.val)}, test {len(self.test)}; epochs {self.start_epoch}..."
            f"{cfg.epochs - 1}; backbone {backbone}"
        )

    def speed_record(self) -> dict[str, Any]:
        """What run.yaml records about how the run computed (the report displays it)."""
        return {
            "precision": self.cfg.precision,
            "channels_last": self.channels_last,  # as applied (see precision.py)
            "compile": self.cfg.compile,
            "data_on_device": self.train_source is not None,
            "device": str(self.device),
            "device_name": (
                torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
            ),
            "threads": torch.get_num_threads(),
        }

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


class _DeviceStats:
    """An epoch's running statistics as device tensors: adding never waits for the device.

    Sums are float64 (float32 on MPS, which has no float64), weighted by the batch size, as
    the per-batch floats were before; a step's non-finite loss is remembered with its step.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums: dict[str, torch.Tensor] = {}
        self.seen = 0
        self.grad_sims: list[torch.Tensor] = []
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), dtype=self.dtype, device=device)

    def add(self, values: dict[str, torch.Tensor | float], n: int) -> None:
        self.seen += n
        for key, value in values.items():
            value = torch.as_tensor(value).detach().to(self.device, self.dtype, non_blocking=True)
            self.sums[key] = self.sums.get(key, 0.0) + value * n

    def add_grad_sim(self, value: torch.Tensor) -> None:
        self.grad_sims.append(value.detach())

    def flag_nonfinite(self, loss: torch.Tensor, step: int) -> None:
        """Remember the first step whose loss was not finite (on the device, no sync)."""
        first = (self.bad_step < 0) & ~torch.isfinite(loss.detach())
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_value = torch.where(first, loss.detach().to(self.dtype), self.bad_value)

    def first_nonfinite(self) -> tuple[int, float] | None:
        """``(step, loss)`` of the first non-finite loss so far, or None (reads the device)."""
        step = int(self.bad_step)
        return None if step < 0 else (step, float(self.bad_value))

    def means(self) -> dict[str, float]:
        """The epoch's means (one read of the device for all of them)."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist() if keys else []
        out = {k: v / max(self.seen, 1) for k, v in zip(keys, values)}
        sims = torch.stack(self.grad_sims).tolist() if self.grad_sims else []
        out["grad_sim"] = sum(sims) / len(sims) if sims else float("nan")
        return out


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


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


def train_run_recorded(
    cfg: TrainConfig, data_dir: Path, backbone: Path | None, checkpoint_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """:func:`train_run`, returning :meth:`Trainer.speed_record` (precision, layout, device
    actually used) for the run's ``run.yaml``."""
    trainer = Trainer(
        cfg, Path(data_dir), Path(backbone) if backbone else None, Path(checkpoint_dir)
    )
    trainer.fit()
    trainer.write_outputs(Path(out_dir))
    return trainer.speed_record()
