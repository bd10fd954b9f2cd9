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
    ``generator`` (CPU, through :mod:`robustft.rng`), so a seeded generator reproduces the
    same augmentation stream on every device. The crop is one batched gather on ``x``'s device
    (no per-image loop, no host round trip): it picks exactly the pixels the per-image crop of
    the padded image picks, so the result is bit-identical to it.
    """
    xb, single = _as_batch(x)
    n, c, h, w = xb.shape
    padded = F.pad(xb, (padding, padding, padding, padding), value=0.0)
    offs = rng.randint(0, 2 * padding + 1, (n, 2), generator).to(xb.device)
    flips = rng.coin(n, generator) if flip else torch.zeros(n, dtype=torch.bool)
    flips = flips.to(xb.device)
    rows = offs[:, 0:1] + torch.arange(h, device=xb.device)  # n × h source rows
    cols = offs[:, 1:2] + torch.arange(w, device=xb.device)  # n × w source columns
    cols = torch.where(flips[:, None], cols.flip(-1), cols)  # a flip reads columns backwards
    out = padded[
        torch.arange(n, device=xb.device)[:, None, None, None],
        torch.arange(c, device=xb.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return out[0] if single else out


def resized_crop_params(
    n: int,
    h: int,
    w: int,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> list[tuple[int, int, int, int, bool]]:
    """The ``(top, left, height, width, flip)`` of ``n`` RandomResizedCrop+flip draws, drawn in
    the order of torchvision's per-image sampling (10 tries, then the centre fallback; the
    flip after each image's box). Scalars on the host; the pixels never leave their device."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = []
    for _ in range(n):
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
        boxes.append((*box, bool(rng.coin(1, generator))))
    return boxes


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop`` (same parameter sampling, 10 tries then centre
    fallback) back to the stored size, then a horizontal flip; the official high-resolution
    training transform applied to the stored images.

    The boxes differ in size, so each image is resized by its own (antialiased, bilinear)
    interpolation, on ``x``'s device; only the box parameters are drawn on the host."""
    xb, single = _as_batch(x)
    n, _, h, w = xb.shape
    out = torch.empty_like(xb)
    for i, (top, left, ch, cw, flip) in enumerate(
        resized_crop_params(n, h, w, generator, scale=scale, ratio=ratio)
    ):
        crop = xb[i : i + 1, :, top : top + ch, left : left + cw]
        crop = F.interpolate(
            crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
        out[i] = crop[0].flip(-1) if flip else crop[0]
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
