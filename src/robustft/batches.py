"""The one reader of prepared data: splits as tensors, and the minibatches of an epoch.

Owns :class:`Split` (one split's arrays; rows as float NCHW tensors in [0, 1]),
:func:`load_split` (a split of a prepared directory, read through the format's verified
:meth:`robustft.data.format.PreparedDataset.arrays`), :func:`train_batches` (shuffled,
augmented) and :func:`eval_batches` (in order). Training, evaluation, transfer and criticality
all read data through here (see ARCHITECTURE.md, Data).

The arrays are memory-mapped, so a batch reads only its own rows; no DataLoader workers are
needed for the small images this project trains on, and every random choice (order, crop,
flip) comes from one ``torch.Generator`` whose state is checkpointed, which makes resumed runs
bit-identical to uninterrupted ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustft import rng
from robustft.data.format import load_prepared
from robustft.data.transforms import augmentation


@dataclass
class Split:
    """One split of a prepared dataset: images N×H×W×3 uint8 and int64 labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def tensors(self, index: np.ndarray | slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float NCHW in [0, 1] and labels, for the rows in ``index``, in that order.

        The rows are read from the memory map in ascending order (sequential reads), then put
        back in the order of ``index``. The order matters: prepared splits are stored sorted by
        class, and methods that split a batch by position (TWINS' frozen/adaptive halves) must
        see a random mix of classes in every part.
        """
        if index is None or isinstance(index, slice):
            index = slice(None) if index is None else index
            x, y = np.array(self.x[index]), np.array(self.y[index])  # copy: memmaps are read-only
        else:
            index = np.asarray(index)
            ascending = np.argsort(index, kind="stable")
            back = np.empty_like(ascending)
            back[ascending] = np.arange(len(index))  # position of each requested row in the read
            x, y = (
                np.array(self.x[index[ascending]])[back],
                np.array(self.y[index[ascending]])[back],
            )
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().float().div_(255)
        return x, torch.from_numpy(y)  # NCHW-contiguous: attacks .view() the batch

    def subset(self, n: int | None, seed: int = 0) -> Split:
        """A fixed random subset of ``n`` examples (splits may be stored sorted by class).

        The same ``seed`` gives the same subset in every run, so per-epoch validation and the
        final evaluation of different methods see identical examples.
        """
        if n is None or n >= len(self):
            return self
        index = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return Split(self.x[index], self.y[index])


def load_split(data_dir: str | Path, name: str) -> Split:
    """One split of a prepared dataset, memory-mapped (the data module owns the format)."""
    x, y = load_prepared(data_dir).arrays(name)
    if len(x) != len(y):
        raise ValueError(f"{data_dir}: {name}_x.npy has {len(x)} rows but {name}_y.npy {len(y)}")
    return Split(x, y)


def num_classes(data_dir: str | Path) -> int:
    """Size of the classifier head of a prepared dataset (its manifest's ``num_classes``)."""
    return load_prepared(data_dir).num_classes


def train_batches(
    split: Split, batch_size: int, generator: torch.Generator, *, augment: str = "crop_flip"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented minibatches for one epoch (the last one may be short), each in
    the random order of the epoch's permutation (see :meth:`Split.tensors`).

    ``augment`` names a transform of :data:`robustft.data.transforms.AUGMENTATIONS` (the CIFAR
    crop+flip, or the official high-resolution RandomResizedCrop+flip) or ``"none"``.
    """
    transform = augmentation(augment)
    order = rng.randperm(len(split), generator).numpy()
    for start in range(0, len(order), batch_size):
        x, y = split.tensors(order[start : start + batch_size])
        yield (transform(x, generator) if transform else x), y


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in its stored order, ``batch_size`` rows at a time, without augmentation."""
    for start in range(0, len(split), batch_size):
        yield split.tensors(slice(start, start + batch_size))
