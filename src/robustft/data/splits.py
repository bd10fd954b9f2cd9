"""Split rules shared by the dataset preparers."""

from __future__ import annotations

import numpy as np

__all__ = ["caltech_official_windows", "official_holdout", "stratified_holdout"]


def official_holdout(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/val split exactly as the official AutoLoRa HR loaders draw it.

    The official code calls ``np.random.seed(seed)`` in ``main`` and later
    ``np.random.choice(N, int(0.95 * N), replace=False)`` (spec §2); ``RandomState(seed)``
    reproduces that draw (assuming no other legacy-RNG draw happened in between). Both index
    arrays are returned sorted so the stored arrays keep the source order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_train = int((1.0 - val_fraction) * n)
    rs = np.random.RandomState(seed)
    train = rs.choice(n, n_train, replace=False)
    mask = np.ones(n, dtype=bool)
    mask[train] = False
    return np.sort(train), np.flatnonzero(mask)


def stratified_holdout(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random holdout: ``round(n_c * val_fraction)`` of every class go to val.

    Used for the generated datasets so that every split stays exactly class-balanced.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = round(len(idx) * val_fraction)
        val.append(rng.choice(idx, k, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def caltech_official_windows(
    class_sizes: list[int], per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """The official Caltech-256 rule (``transfer_datasets.py:make_loaders_caltech256``).

    Images are concatenated class by class (sorted folder order). For each class start index
    ``s_c`` the training entries are ``s_c ... s_c + per_class - 1``: a class with fewer
    images lets its window run into the next class, so those images appear twice in train
    (each keeps its true label). Test = every index in ``1 ... N-1`` that is not in train
    (index 0 is always in train anyway). Windows that would run past the end of the data are
    clipped (the official code would fail there; the real data ends with 827 clutter images).
    """
    offsets = np.concatenate([[0], np.cumsum(class_sizes)[:-1]]).astype(np.int64)
    # the official code finds starts by label changes, so an empty class has no window
    starts = [int(s) for s, k in zip(offsets, class_sizes, strict=True) if k > 0]
    n = int(sum(class_sizes))
    train = (
        np.concatenate([np.arange(s, min(s + per_class, n)) for s in starts])
        if len(starts)
        else np.zeros(0, dtype=np.int64)
    )
    in_train = np.zeros(n, dtype=bool)
    in_train[train] = True
    test = np.flatnonzero(~in_train)
    test = test[test >= 1]
    return train.astype(np.int64), test.astype(np.int64)
