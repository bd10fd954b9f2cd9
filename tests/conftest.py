"""Shared fixtures: a tiny prepared dataset in the on-disk format of ARCHITECTURE.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch


def write_tiny_dataset(
    root: Path, *, classes: int = 3, per_split=(36, 12, 12), res: int = 16, seed: int = 0
) -> Path:
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
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "name": "tiny",
                "num_classes": classes,
                "classes": [str(c) for c in range(classes)],
                "resolution": res,
                "counts": counts,
                "split_seed": seed,
            }
        )
    )
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: extra threads only spin-wait on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_backbone(tmp_path: Path) -> Path:
    """A randomly initialised resnet_mini (width 4) saved as a backbone file."""
    from robustft.models import build_model, save_backbone

    torch.manual_seed(3)
    path = tmp_path / "backbone.pt"
    save_backbone(build_model("resnet_mini", 5, width=4), path)
    return path


@pytest.fixture(scope="session")
def _no_slurm_controller_bin(tmp_path_factory) -> Path:
    """A directory whose ``scontrol`` fails at once, as it would with no cluster configured."""
    bin_dir = tmp_path_factory.mktemp("no-slurm-bin")
    stub = bin_dir / "scontrol"
    stub.write_text("#!/bin/sh\necho 'scontrol: no SLURM controller in this test' >&2\nexit 1\n")
    stub.chmod(0o755)
    return bin_dir


@pytest.fixture(autouse=True)
def _snakemake_starts_without_asking_slurm(request, monkeypatch, _no_slurm_controller_bin):
    """Every Snakemake start imports the SLURM executor plugin, which runs ``scontrol show
    config``; with SLURM's client installed but no controller running (this machine, and CI
    before its cluster test) that call waits ~9 s. Tests that are not about the cluster get an
    ``scontrol`` that answers "no controller" at once; the ``slurm`` tests see the real one."""
    if request.node.get_closest_marker("slurm") is None:
        monkeypatch.setenv("PATH", f"{_no_slurm_controller_bin}:{os.environ['PATH']}")
