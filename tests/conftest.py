"""Shared fixtures: a tiny prepared dataset in the on-disk format of ARCHITECTURE.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def write_tiny_dataset(root: Path, *, classes: int = 3, per_split=(36, 12, 12), res: int = 16,
                       seed: int = 0) -> Path:
    """Class-dependent colour blobs: learnable in a few steps, so accuracies move."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n in zip(("train", "val", "test"), per_split):
        y = np.arange(n) % classes
        rng.shuffle(y)
        x = rng.integers(0, 80, size=(n, res, res, 3))
        for i, label in enumerate(y):
            x[i, :, :, label % 3] += 120 + 40 * (label // 3)
        np.save(root / f"{split}_x.npy", x.clip(0, 255).astype(np.uint8))
        np.save(root / f"{split}_y.npy", y.astype(np.int64))
        counts[split] = n
    (root / "manifest.json").write_text(json.dumps(
        {"name": "tiny", "num_classes": classes, "classes": [str(c) for c in range(classes)],
         "resolution": res, "counts": counts, "split_seed": seed}))
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data")
