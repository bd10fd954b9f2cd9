"""Training-time augmentations: torch ops on image tensors, driven by an explicit generator.

Owns :func:`random_crop_flip` (the CIFAR recipe), :func:`random_resized_crop_flip` (the
official high-resolution AutoLoRa/TWINS training transform, applied to the stored images) and
the registry :data:`AUGMENTATIONS` that the ``augment`` setting names (:func:`augmentation`).
Every random choice is drawn through :mod:`robustft.rng` from the caller's generator, so a
seeded, checkpointed generator reproduces the same augmentation stream after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustft import rng

__all__ = ["AUGMENTATIONS", "augmentation", "random_crop_flip", "random_resized_crop_flip"]

Transform = Callable[..., torch.Tensor]


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"expected CHW or NCHW, got shape {tuple(x.shape)}")


def random_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """``RandomCrop(size, padding, fill=0)`` + ``RandomHorizontalFlip`` for CHW or NCHW.

    Each image of a batch gets its own offset and flip. All randomness comes from
    ``generator`` (CPU), so a seeded generator reproduces the same augmentation stream.
    """
    xb, single = _as_batch(x)
    n, _, h, w = xb.shape
    padded = F.pad(xb, (padding, padding, padding, padding), value=0.0)
    offs = rng.randint(0, 2 * padding + 1, (n, 2), generator)
    flips = rng.coin(n, generator) if flip else torch.zeros(n, dtype=torch.bool)
    out = torch.empty_like(xb)
    for i in range(n):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        crop = padded[i, :, dy : dy + h, dx : dx + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out[0] if single else out


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop`` (same parameter sampling, 10 tries then centre
    fallback) back to the stored size, then a horizontal flip; the official high-resolution
    training transform applied to the stored images."""
    xb, single = _as_batch(x)
    n, _, h, w = xb.shape
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    out = torch.empty_like(xb)
    for i in range(n):
        box = None
        for _ in range(10):
            target = area * rng.uniform_scalar(scale[0], scale[1], generator)
            ar = math.exp(rng.uniform_scalar(*log_ratio, generator))
            cw = round(math.sqrt(target * ar))
            ch = round(math.sqrt(target / ar))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(rng.randint(0, h - ch + 1, (1,), generator))
                left = int(rng.randint(0, w - cw + 1, (1,), generator))
                box = (top, left, ch, cw)
                break
        if box is None:  # fallback: central crop with the ratio clamped
            in_ratio = w / h
            if in_ratio < ratio[0]:
                cw, ch = w, round(w / ratio[0])
            elif in_ratio > ratio[1]:
                ch, cw = h, round(h * ratio[1])
            else:
                cw, ch = w, h
            box = ((h - ch) // 2, (w - cw) // 2, ch, cw)
        top, left, ch, cw = box
        crop = xb[i : i + 1, :, top : top + ch, left : left + cw]
        crop = F.interpolate(
            crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
        if bool(rng.coin(1, generator)):
            crop = crop.flip(-1)
        out[i] = crop[0]
    return out[0] if single else out


AUGMENTATIONS: dict[str, Transform] = {
    "crop_flip": random_crop_flip,
    "resized_crop_flip": random_resized_crop_flip,
}


def augmentation(name: str) -> Transform | None:
    """The transform an ``augment`` setting names (``"none"``: ``None``)."""
    if name == "none":
        return None
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"unknown augmentation {name!r}; choose from {sorted(AUGMENTATIONS)} or 'none'"
        )
    return AUGMENTATIONS[name]
