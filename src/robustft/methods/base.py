"""The interface every fine-tuning / adversarial-training method implements, and its helpers.

Owns :class:`Method` (the interface), :class:`TrainContext` (what a method may use from the loop),
:class:`BatchOutput` and the pieces several methods share (the training PGD on a branch, the
TRADES-style KL of AutoLoRa Eq. 1/5, freezing parameters for a forward pass, batch accuracy).

The shared loop (:mod:`robustft.train`) owns data, optimiser, schedules, evaluation and
checkpoints; a method only says how to build its model, which parameters train, and how one
batch turns into a loss. Each method's difference from the others lives in its own module; a
method's published training recipe (epochs, LR schedule, ...) is documented in that module's
docstring and set by the config, never by the method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import PGDConfig, pgd
from robustft.plan import catalog


@dataclass
class BatchOutput:
    """A batch's loss plus what the log records about it.

    ``objectives`` optionally holds the (natural, adversarial) objective tensors of the same
    graph; the loop uses them for the gradient similarity of AutoLoRa Eq. 3/4.

    ``stats`` values are detached 0-d tensors (or floats): the loop averages them on the device
    and reads them once per epoch, so a step never waits for the GPU (no ``.item()`` here).
    """

    loss: torch.Tensor
    stats: dict[str, torch.Tensor | float] = field(default_factory=dict)
    objectives: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class TrainContext:
    """What a method may use from the loop: attack budget, RNG, and a train-accuracy probe."""

    train_attack: PGDConfig
    generator: torch.Generator
    batch_size: int
    epoch: int = 0
    # measure_train_accuracy(forward) -> accuracy of `forward` on the (augmented) training set
    measure_train_accuracy: Callable[[Callable[[torch.Tensor], torch.Tensor]], float] | None = None
    # train_examples(n) -> (x, y): n training examples drawn at random with `generator`,
    # without augmentation, on the model's device (CLAT's criticality batch, RiFT's MRC set)
    train_examples: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None


class HyperParameterError(ValueError, TypeError):
    """A method hyper-parameter its schema rejects: a wrong value (ValueError) or a wrong type
    (TypeError), whichever a caller checks for."""


class Method:
    """Base class. Subclasses set ``name`` and override what differs."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    #: hyper-parameters with their defaults, taken from the method's schema in
    #: :mod:`robustft.plan.catalog` (which config validation checks ``params`` against)
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **hparams: Any) -> None:
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown hyper-parameter(s) {sorted(unknown)}")
        # The one check of every value (type, choice, range): the schema config validation
        # uses, so a method built by hand (a test, the self-check) is held to the same rules.
        if self.name in catalog.METHODS:
            for key, problem in catalog.check_params(self.name, hparams):
                raise HyperParameterError(f"{self.name}.{key}: {problem}")
        self.hp = {**self.defaults, **hparams}

    # --- model -----------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for :func:`robustft.models.build_model` (LoRA, dual BN)."""
        return {}

    def prepare_model(self, model: nn.Module) -> None:
        """Hook after the model is built and its initial weights are loaded, before the
        optimiser exists (e.g. LoRA fine-tuning re-parametrises the convs here)."""

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters the optimiser updates.

        The loop asks again after every :meth:`start_epoch` (and after a resume); when the set
        changed (CLAT's re-selection, RiFT's module choice) it rebuilds the SGD optimiser over
        the new set (fresh momentum) and keeps the LR schedule.
        """
        return [p for p in model.parameters() if p.requires_grad]

    # --- training ----------------------------------------------------------------------------
    def start_epoch(self, model: nn.Module, ctx: TrainContext) -> dict[str, float]:
        """Hook before each epoch (and again after a resume); returns values to log."""
        return {}

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: TrainContext
    ) -> BatchOutput:
        raise NotImplementedError

    def end_epoch(self, model: nn.Module, ctx: TrainContext) -> dict[str, float]:
        """Hook right after an epoch's last batch, before evaluation and before an LR schedule
        may reload an earlier checkpoint; returns values to log."""
        return {}

    def finish(
        self, model: nn.Module, evaluate: Callable[[], dict[str, float]]
    ) -> dict[str, Any] | None:
        """Hook after the last epoch, called with ``model`` holding the selected (best)
        checkpoint. A method that post-processes the weights (RiFT's interpolation, merging a
        LoRA re-parametrisation) changes ``model`` in place and returns what to record; the loop
        then writes the changed model as the run's model. ``evaluate()`` returns the loop's
        per-epoch metrics (``val_nat_acc``, ``val_pgd_acc``, ``test_nat_acc``,
        ``test_pgd_acc``) of the current weights. ``None`` (the default): nothing to do.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # --- shared helpers ----------------------------------------------------------------------
    def attack(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        ctx: TrainContext,
    ) -> torch.Tensor:
        """Training PGD on ``forward`` (a branch of ``model``) with BN in eval mode (spec §4)."""
        cfg = ctx.train_attack
        was_training = model.training
        model.eval()
        try:
            return pgd(
                forward,
                x,
                y,
                eps=cfg.eps,
                step=cfg.step,
                steps=cfg.steps,
                random_start=cfg.random_start,
                generator=ctx.generator,
            )
        finally:
            model.train(was_training)


def kl_clean_adv(
    clean_logits: torch.Tensor, adv_logits: torch.Tensor, normaliser: int | None = None
) -> torch.Tensor:
    """Σ_i KL(p_clean_i ‖ p_adv_i) / normaliser (TRADES-style; AutoLoRa Eq. 1, 5).

    The official code sums over the batch and divides by the *fixed* batch size 128
    (``KLDivLoss(size_average=False)/batch_size``); ``normaliser=None`` divides by the actual
    batch length, which differs only on a short last batch.
    """
    n = normaliser if normaliser is not None else clean_logits.shape[0]
    return (
        F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="sum")
        / n
    )


def kl_normaliser(method: Method, ctx: TrainContext) -> int | None:
    """Batch-size normaliser of the KL term per the method's ``kl_normaliser`` option."""
    return ctx.batch_size if method.hp.get("kl_normaliser") == "fixed_batch" else None


@contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Temporarily stop gradients to ``params`` for the forward passes run inside.

    Autograd records ``requires_grad`` at forward time, so a graph built inside this block
    never routes gradient to these parameters (AutoLoRa Eq. 5: θ̄1 in the natural term).
    """
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batch accuracy as a 0-d tensor on the logits' device (no host synchronisation)."""
    return (logits.argmax(1) == y).float().mean()
