"""Batches built and augmented on the device (issue 9) are the host path's batches.

* The batched crop+flip (one gather for the whole batch) has the distribution RandomCrop +
  RandomHorizontalFlip prescribe: offsets uniform over the (2p+1)² positions and flips fair,
  independently (chi-square goodness of fit), and each output is exactly the crop it claims.
* It is reproducible from the generator and equals a per-image reference crop bit for bit.
* A split held on the device (``data_on_device: always``; on the CPU here) gives the same
  batches, in the same order, as the memory-mapped host path, for every augmentation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from robustft import rng
from robustft.batches import DeviceSplit, Split, load_split, on_device, train_batches
from robustft.data.transforms import random_crop_flip


def _positional_images(n: int, size: int) -> torch.Tensor:
    """Every pixel holds 1 + its own index, so a crop's offset and flip can be read back."""
    index = torch.arange(1, size * size + 1, dtype=torch.float32).reshape(1, 1, size, size)
    return index.expand(n, 3, size, size).contiguous()


def _decode(out: torch.Tensor, size: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset index in [0, (2p+1)²), flip) of each crop, from its pixel values."""
    n, crop = len(out), out.shape[-1]
    offsets, flips = [], []
    grid = F.pad(_positional_images(1, size), (padding,) * 4)[0, 0]
    windows = grid.unfold(0, crop, 1).unfold(1, crop, 1)  # (2p+1)² × crop × crop
    candidates = windows.reshape(-1, crop, crop)
    for i in range(n):
        image = out[i, 0]
        plain = (candidates == image).flatten(1).all(1).nonzero()
        flipped = (candidates == image.flip(-1)).flatten(1).all(1).nonzero()
        assert len(plain) + len(flipped) >= 1, "output is not a crop of the padded image"
        if len(plain):
            offsets.append(int(plain[0])), flips.append(False)
        else:
            offsets.append(int(flipped[0])), flips.append(True)
    return torch.tensor(offsets), torch.tensor(flips)


def test_batched_crop_flip_is_uniform_and_fair():
    size, padding, n = 8, 2, 5000
    out = random_crop_flip(_positional_images(n, size), rng.new_generator(1), padding=padding)
    offsets, flips = _decode(out, size, padding)
    positions = (2 * padding + 1) ** 2
    # the joint (offset, flip) cells: uniform under the prescribed distribution
    observed = np.bincount((offsets * 2 + flips.long()).numpy(), minlength=2 * positions)
    assert stats.chisquare(observed).pvalue > 1e-3, observed
    # and a biased sampler fails the same test (the test can fail)
    biased = np.bincount((offsets.clamp(max=positions - 2) * 2).numpy(), minlength=2 * positions)
    assert stats.chisquare(biased).pvalue < 1e-6


def test_batched_crop_flip_is_the_per_image_crop_and_reproducible():
    x = torch.rand(9, 3, 12, 12)
    a = random_crop_flip(x, rng.new_generator(5))
    b = random_crop_flip(x, rng.new_generator(5))
    assert torch.equal(a, b) and a.is_contiguous()
    # reference: the draws in their documented order, then one crop per image
    g = rng.new_generator(5)
    offs, flips = rng.randint(0, 9, (9, 2), g), rng.coin(9, g)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(9):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        crop = padded[i, :, dy : dy + 12, dx : dx + 12]
        assert torch.equal(a[i], crop.flip(-1) if flips[i] else crop), i


@pytest.mark.parametrize("augment", ["crop_flip", "resized_crop_flip", "none"])
def test_device_split_gives_the_host_batches(tiny_data, augment):
    split = load_split(tiny_data, "train")
    held = on_device(split, torch.device("cpu"), "always")
    assert isinstance(held, DeviceSplit) and held.x.dtype == torch.uint8
    host = list(train_batches(split, 10, rng.new_generator(3), augment=augment))
    device = list(train_batches(held, 10, rng.new_generator(3), augment=augment))
    assert len(host) == len(device) == 4
    for (hx, hy), (dx, dy) in zip(host, device):
        assert torch.equal(hx, dx) and torch.equal(hy, dy)


def test_on_device_modes(tiny_data):
    split = load_split(tiny_data, "train")
    cpu = torch.device("cpu")
    assert on_device(split, cpu, "auto") is None  # the CPU keeps the host path
    assert on_device(split, cpu, "never") is None
    with pytest.raises(ValueError, match="data_on_device must be auto, always or never"):
        on_device(split, cpu, "sometimes")


def test_prefetched_batches_are_reproducible_and_complete():
    x = np.random.default_rng(0).integers(0, 255, (23, 8, 8, 3), dtype=np.uint8)
    split = Split(x, np.arange(23))
    cpu = torch.device("cpu")

    def epoch():
        return list(train_batches(split, 5, rng.new_generator(2), prefetch_to=cpu))

    first, second = epoch(), epoch()
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(23))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
