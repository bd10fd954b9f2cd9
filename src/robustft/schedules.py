"""Learning-rate schedules behind one protocol, and AutoLoRa's loss-weight schedule.

Owns :class:`Schedule` -- what the training loop (:mod:`robustft.train`) asks of every LR
schedule, the same way for all of them: the LR of an epoch (:meth:`Schedule.lr_for_epoch`) and of
an optimiser step (:meth:`Schedule.lr_for_step`), and a decision after each epoch's validation
(:meth:`Schedule.end_epoch` -> :class:`LRDecision`: keep, halve and reload the best-validation
weights, or stop) -- the schedules themselves, :func:`build_schedule` (the ``lr_schedule``
setting) and :func:`lambda_weights`.

* ``MultiStepLR`` — the baselines' schedule (AutoLoRa Appendix A.1 / TWINS code): ×0.1 at
  epochs 30 and 50 of 60.
* ``AutoLR`` — AutoLoRa's automatic LR scheduler (Sec. 4.2, Algorithm 1) in two named variants
  whose conditions differ (spec §5 and §11.1-2):

  ``paper``    Condition 1: #{e in [c_{j-1}, c_j): RA(e+1) < RA(e)} <= 0.75·(c_j − c_{j-1})
               Condition 2: η(c_{j-1}) = η(c_j) and RA_max(c_{j-1}) = RA_max(c_j)
  ``official`` Condition 1: #{strict increases RA(e+1) > RA(e)} < 0.75·(c_j − c_{j-1})
               Condition 2: never at the first check; afterwards "no new best RA since the
               previous check" (the code's η-equality clause is always true from then on).

  Read literally, the paper's Condition 1 fires whenever at most 3 of 4 epochs *decrease*
  robust accuracy, i.e. almost always; the code counts increases like APGD does. Both are kept.
* ``CosineLR`` (CLAT) and ``CyclicLR`` (Fast-AT), stepped per iteration where asked.
* ``lambda_weights`` — AutoLoRa Eq. 6/7.

Only ``AutoLR`` reacts to validation accuracy; the others keep the default decision (carry on)
and log nothing, so their ``train_log.csv`` has no ``lr_event`` column.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any, Protocol, runtime_checkable


def lambda_weights(train_sa: float, alpha: float = 1.0, scale: float = 6.0) -> tuple[float, float]:
    """AutoLoRa Eq. 6/7: λ1 = 1 − SA^α, λ2 = 6·SA^α, SA ∈ [0, 1] the LoRA branch's accuracy."""
    if not 0.0 <= train_sa <= 1.0:
        raise ValueError(f"standard accuracy must lie in [0, 1], got {train_sa}")
    sharpened = train_sa**alpha
    return 1.0 - sharpened, scale * sharpened


@dataclass
class LRDecision:
    """What a schedule decided at the end of an epoch.

    ``logged``: the schedule reports its decisions in ``train_log.csv`` (``lr_event``: the
    reason of a halving or a stop, empty otherwise); schedules that never decide anything do
    not add the column.
    """

    lr: float
    halved: bool = False
    reload_best: bool = False
    stop: bool = False
    reason: str = ""
    logged: bool = False

    def log(self) -> dict[str, str]:
        """The ``train_log.csv`` entries of this decision."""
        if not self.logged:
            return {}
        return {"lr_event": self.reason if self.halved or self.stop else ""}


@runtime_checkable
class Schedule(Protocol):
    """The LR schedule the training loop drives, identically for every schedule.

    Per epoch the loop sets ``lr_for_epoch(epoch)`` (the LR logged for the epoch), then before
    every optimiser step ``lr_for_step(epoch, step, steps_per_epoch)``, and after the epoch's
    validation calls ``end_epoch(epoch, val_robust_acc)`` and applies the decision (reload the
    best-validation weights, stop). ``epoch`` is 0-based. ``state_dict`` / ``load_state_dict``
    go into the resumable checkpoint. Subclasses inherit the defaults below: an LR constant
    within an epoch, no reaction to validation accuracy, no state.
    """

    def lr_for_epoch(self, epoch: int) -> float: ...

    def lr_for_step(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """LR of optimiser step ``step`` of ``epoch`` (default: the epoch's LR)."""
        return self.lr_for_epoch(epoch)

    def end_epoch(self, epoch: int, val_robust_acc: float) -> LRDecision:
        """Decision after ``epoch`` given its robust validation accuracy (default: carry on)."""
        return LRDecision(lr=self.lr_for_epoch(epoch + 1))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


@dataclass
class MultiStepLR(Schedule):
    """η(e) = η0 · factor^(number of milestones ≤ e); ``e`` is the 0-based epoch about to run."""

    lr0: float
    milestones: tuple[int, ...] = (30, 50)
    factor: float = 0.1

    def lr_for_epoch(self, epoch: int) -> float:
        return self.lr0 * self.factor ** sum(epoch >= m for m in self.milestones)


@dataclass
class AutoLR(Schedule):
    """AutoLoRa's automatic LR scheduler (Algorithm 1 lines 12-19).

    Feed it the robust validation accuracy after every epoch with :meth:`end_epoch`; it returns
    the LR for the next epoch and whether to reload the best-validation checkpoint (done on every
    halving) or stop (η < ``min_lr``). Checks happen at the end of epoch index ``c_j`` for the
    checkpoints c = 0, every, 2·every, ... (the official code uses every 4 epochs: checks after
    epochs 5, 9, ..., 57 in 1-based counting).
    """

    lr0: float = 0.01
    variant: str = "official"
    every: int = 4
    min_lr: float = 1e-5
    factor: float = 0.5
    ratio: float = 0.75
    lr: float = field(init=False)
    history: list[float] = field(default_factory=list)
    best_at_check: list[float] = field(default_factory=list)
    halved_at_check: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.variant not in ("paper", "official"):
            raise ValueError(f"auto_lr variant must be 'paper' or 'official', got {self.variant!r}")
        if self.every < 1:
            raise ValueError("auto_lr check interval must be >= 1 epoch")
        self.lr = self.lr0

    def lr_for_epoch(self, epoch: int) -> float:
        return self.lr

    def end_epoch(self, epoch: int, val_robust_acc: float) -> LRDecision:
        """Record RA after 0-based ``epoch`` and decide the LR of the next one."""
        if epoch != len(self.history):
            raise ValueError(f"expected results of epoch {len(self.history)}, got epoch {epoch}")
        self.history.append(val_robust_acc)
        if epoch == 0:
            self.best_at_check.append(val_robust_acc)  # RA_max at c_0 = 0
            self.halved_at_check.append(False)
        decision = LRDecision(lr=self.lr)
        if epoch > 0 and epoch % self.every == 0:
            decision = self._check(epoch)
        if self.lr < self.min_lr:
            decision.stop = True
            decision.reason += f"; lr {self.lr:.3g} < {self.min_lr:g}: stop"
        decision.logged = True  # every decision of the automatic scheduler is logged
        return decision

    def _check(self, epoch: int) -> LRDecision:
        start = epoch - self.every
        window = self.history[start : epoch + 1]
        pairs = list(pairwise(window))
        best_now = max(self.history)
        best_before = self.best_at_check[-1]
        first_check = len(self.best_at_check) == 1
        if self.variant == "paper":
            decreases = sum(b < a for a, b in pairs)
            cond1 = decreases <= self.ratio * self.every
            cond2 = (not self.halved_at_check[-1]) and best_now == best_before
            why1 = f"{decreases} decreases <= {self.ratio * self.every:g}"
        else:
            increases = sum(b > a for a, b in pairs)
            cond1 = increases < self.ratio * self.every
            cond2 = (not first_check) and best_now == best_before
            why1 = f"{increases} increases < {self.ratio * self.every:g}"
        halve = cond1 or cond2
        self.best_at_check.append(best_now)
        self.halved_at_check.append(halve)
        if not halve:
            return LRDecision(lr=self.lr, reason="no condition met")
        self.lr *= self.factor
        reason = f"condition 1 ({why1})" if cond1 else "condition 2 (no new best since last check)"
        return LRDecision(lr=self.lr, halved=True, reload_best=True, reason=reason)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class CosineLR(Schedule):
    """η = η0 · ½(1 + cos(π·t / total)), t = offset + epoch (+ step fraction if ``per_step``).

    CLAT (Sec. 4.1: lr 0.1, cosine decay). ``offset``/``total`` let the two chained jobs of
    "X + CLAT" share one cosine over 50 + 50 epochs (spec A8).
    """

    lr0: float
    total: float
    offset: float = 0.0
    per_step: bool = False

    def lr_for_epoch(self, epoch: int) -> float:
        return self._at(self.offset + epoch)

    def lr_for_step(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        if not self.per_step:
            return self.lr_for_epoch(epoch)
        return self._at(self.offset + epoch + step / steps_per_epoch)

    def _at(self, t: float) -> float:
        return self.lr0 * 0.5 * (1.0 + math.cos(math.pi * min(t, self.total) / self.total))


@dataclass
class CyclicLR(Schedule):
    """Triangular 0 → η_max → 0 over all iterations, updated every step (Fast-AT's recipe,
    ``torch.optim.lr_scheduler.CyclicLR`` with step_size_up = step_size_down = T/2)."""

    lr0: float
    total: float
    peak: float = 0.5  # fraction of the run at which η_max is reached

    def lr_for_epoch(self, epoch: int) -> float:
        return self.lr_for_step(epoch, 0, 1)

    def lr_for_step(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        t = (epoch + step / steps_per_epoch) / self.total
        if t <= self.peak:
            return self.lr0 * t / self.peak
        return self.lr0 * max(0.0, (1.0 - t) / (1.0 - self.peak))


def build_schedule(cfg: Any) -> Schedule:
    """The schedule of a run's ``lr_schedule`` setting (``type`` plus its options)."""
    spec = dict(cfg.lr_schedule)
    kind = spec.pop("type")
    if kind == "multistep":
        return MultiStepLR(cfg.lr, tuple(spec.get("milestones", (30, 50))), spec.get("factor", 0.1))
    if kind == "auto":
        return AutoLR(lr0=cfg.lr, **spec)
    if kind == "cosine":
        return CosineLR(
            cfg.lr,
            total=spec.get("total_epochs") or cfg.epochs,
            offset=spec.get("offset", 0),
            per_step=spec.get("per_step", False),
        )
    if kind == "cyclic":
        return CyclicLR(
            cfg.lr, total=spec.get("total_epochs") or cfg.epochs, peak=spec.get("peak", 0.5)
        )
    raise ValueError(
        f"lr_schedule.type must be 'multistep', 'auto', 'cosine' or 'cyclic', got {kind!r}"
    )
