"""What a model gets right: the one loop that turns batches into per-example correctness.

Owns :func:`eval_mode` (BatchNorm on running statistics for the duration of a block, the mode
every attack and every accuracy runs in), :func:`predict` (predicted labels of a stream of
batches) and :func:`correct` (per-example 0/1). Clean accuracy during training (the per-epoch
val/test numbers, AutoLoRa's training-set probe of Eq. 6/7), clean and robust accuracy in the
evaluation (standard and CLAT protocols) and :func:`robustft.attacks.pgd_accuracy` all count
through these, so "correct" means the same thing everywhere: ``argmax(logits) == label`` with the
model in eval mode and no gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily switch to eval mode (BN running statistics), restoring the previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def predict(
    model: nn.Module, batches: Batches, *, forward: Forward | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels and true labels (both int64 on the CPU) of every example of ``batches``.

    ``forward`` (default: ``model`` itself) maps images to logits, e.g. a lambda selecting a
    branch; ``model`` is put in eval mode for the whole pass and restored afterwards. Inputs
    are moved to the model's device; ``batches`` may be any iterable of ``(x, y)``, so a
    generator that draws (augmentations) is consumed exactly once, in order.
    """
    forward = forward or model
    device = _device(model)
    preds, labels = [], []
    with torch.no_grad(), eval_mode(model):
        for x, y in batches:
            preds.append(forward(x.to(device)).argmax(1).cpu())
            labels.append(y.cpu())
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(labels)


def correct(model: nn.Module, batches: Batches, *, forward: Forward | None = None) -> torch.Tensor:
    """Per-example 0/1 correctness (int64, CPU) of ``forward`` (default ``model``), eval mode."""
    preds, labels = predict(model, batches, forward=forward)
    return (preds == labels).long()
