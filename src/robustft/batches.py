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

Keeping data off a GPU's critical path (issue 9): :func:`on_device` copies a split that fits
to the device once, as uint8 (:class:`DeviceSplit`; CIFAR-10 is 150 MB), and
:func:`train_batches` then gathers, converts and augments every batch there (the augmentations
are batched ops; only their random parameters come from the host generator, in the same order,
so the batches are bit-identical to the host path's). A split that does not fit can be
prefetched instead (``prefetch_to``): a background thread builds the next batches into pinned
memory while the device works, and they are copied without blocking. The thread draws from its
own generator, seeded from the run's at the start of the epoch, so the stream stays a function
of the run's checkpointed state and resume stays exact.
"""

from __future__ import annotations

import queue
import threading
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


@dataclass
class DeviceSplit:
    """A split held on a device: images N×3×H×W uint8 and int64 labels (see :func:`on_device`)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def tensors(self, index: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` (in that order) as float NCHW in [0, 1] on the device, like
        :meth:`Split.tensors` (same values: the same uint8 → float conversion)."""
        index = torch.as_tensor(index, dtype=torch.long).to(self.device, non_blocking=True)
        return self.x[index].float().div_(255), self.y[index]


def split_bytes(split: Split) -> int:
    """Bytes of a split's images and labels as stored (uint8 images)."""
    return int(split.x.nbytes + split.y.nbytes)


def on_device(split: Split, device: torch.device, mode: str = "auto") -> DeviceSplit | None:
    """The split held on ``device`` per the ``data_on_device`` setting, or ``None`` (host path).

    ``always``: on the device (on the CPU too: the batched path, bit-identical batches).
    ``never``: the host path. ``auto``: on a CUDA device when the split takes at most a quarter
    of its memory (the model, its activations under PGD and the evaluation need the rest); the
    CPU keeps today's memory-mapped host path.
    """
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"data_on_device must be auto, always or never, got {mode!r}")
    if mode == "never" or (mode == "auto" and device.type != "cuda"):
        return None
    if (
        mode == "auto"
        and split_bytes(split) > torch.cuda.get_device_properties(device).total_memory // 4
    ):
        return None
    x = torch.from_numpy(np.array(split.x)).permute(0, 3, 1, 2).contiguous()  # a writable copy
    return DeviceSplit(x.to(device), torch.from_numpy(np.asarray(split.y)).to(device))


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
    split: Split | DeviceSplit,
    batch_size: int,
    generator: torch.Generator,
    *,
    augment: str = "crop_flip",
    prefetch_to: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented minibatches for one epoch (the last one may be short), each in
    the random order of the epoch's permutation (see :meth:`Split.tensors`).

    ``augment`` names a transform of :data:`robustft.data.transforms.AUGMENTATIONS` (the CIFAR
    crop+flip, or the official high-resolution RandomResizedCrop+flip) or ``"none"``. A
    :class:`DeviceSplit` gives batches on its device, augmented there. ``prefetch_to`` (a host
    split only) builds batches in a background thread into pinned memory and copies them to
    that device without blocking; its draws come from a generator seeded from ``generator``.
    """
    transform = augmentation(augment)  # an unknown name fails here, before any draw
    if prefetch_to is not None and isinstance(split, Split):
        seed = int(rng.randint(0, 2**62, (1,), generator))
        own = rng.new_generator(seed)
        yield from _prefetched(train_batches(split, batch_size, own, augment=augment), prefetch_to)
        return
    order = rng.randperm(len(split), generator).numpy()
    for start in range(0, len(order), batch_size):
        x, y = split.tensors(order[start : start + batch_size])
        yield (transform(x, generator) if transform else x), y


def _prefetched(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device, depth: int = 2
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` built ``depth`` ahead by a background thread, pinned, copied non-blocking."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()
    pin = device.type == "cuda"

    def put(item: object) -> bool:
        """Hand ``item`` over unless the consumer left (then: False)."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x, y in batches:
                if not put((x.pin_memory(), y.pin_memory()) if pin else (x, y)):
                    return
            put(done)
        except Exception as e:  # noqa: BLE001 (handed to the consumer, raised in its thread)
            put(e)

    thread = threading.Thread(target=work, name="robustft-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, Exception):
                raise item
            x, y = item
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    finally:
        stop.set()
        thread.join()


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in its stored order, ``batch_size`` rows at a time, without augmentation."""
    for start in range(0, len(split), batch_size):
        yield split.tensors(slice(start, start + batch_size))
