"""Inputs are checked when a step reads them (issue: prepared data is verified when loaded).

A prepared array that changed since it was prepared, a truncated one, an unreadable
``model_best.pt`` each give an error naming the file and saying what to do; an unreadable
``last.pt`` is moved aside and the run starts over. Nothing is deleted on the way.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustft.batches import load_split
from robustft.data.format import ManifestError
from robustft.io import sha256_file
from robustft.models.checkpoint import CheckpointError

ATTACK = {"eps": 8 / 255, "step": 4 / 255, "steps": 1, "random_start": True}
TRAIN = {
    "run_name": "tiny/pgd_at",
    "method": "pgd_at",
    "arch": "resnet_mini",
    "width": 4,
    "seed": 0,
    "epochs": 2,
    "batch_size": 12,
    "lr": 0.05,
    "train_attack": ATTACK,
    "eval_attack": {**ATTACK, "random_start": False},
    "lr_schedule": {"type": "multistep", "milestones": [1], "factor": 0.1},
}


def seal(root: Path) -> Path:
    """Record the sha256 of every array in the manifest, as the prepare step does."""
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["sha256"] = {p.name: sha256_file(p) for p in sorted(root.glob("*.npy"))}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def flip_last_byte(path: Path) -> bytes:
    """Same-size corruption: one pixel of the last image changes. Returns the new bytes."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def truncate(path: Path) -> bytes:
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def train_config(**kw):
    from robustft.train import TrainConfig

    return TrainConfig(**{**TRAIN, **kw})


def eval_settings() -> dict:
    """Evaluation settings (robustft.contracts.EvaluateSettings) of a model file that does not
    describe itself: the legacy arch/width/method keys rebuild it."""
    return {
        "eval_attack": TRAIN["eval_attack"],
        "arch": TRAIN["arch"],
        "width": TRAIN["width"],
        "method": TRAIN["method"],
        "method_params": {},
        "input_size": None,
        "device": "cpu",
        "batch_size": 12,
        "autoattack": False,
    }


def save_model(path: Path) -> Path:
    from robustft.methods import build_method
    from robustft.models import build_model

    model = build_model("resnet_mini", 3, width=4, **build_method("pgd_at").model_kwargs())
    torch.save({"state_dict": model.state_dict(), "best_epoch": 0}, path)
    return path


def test_same_size_corruption_stops_training_naming_the_file(tmp_path, tiny_data):
    from robustft.train import train_run

    bad = seal(tiny_data) / "test_x.npy"
    content = flip_last_byte(bad)
    with pytest.raises(ManifestError) as info:
        train_run(train_config(), tiny_data, None, tmp_path / "ck", tmp_path / "out")
    message = str(info.value)
    assert str(bad) in message and "changed since it was prepared" in message
    assert f"Delete {tiny_data}/" in message
    assert not (tmp_path / "out").exists()
    assert bad.read_bytes() == content  # reported, not removed


def test_same_size_corruption_stops_evaluation_naming_the_file(tmp_path, tiny_data):
    from robustft.evaluate import evaluate_run

    model = save_model(tmp_path / "model_best.pt")
    evaluate_run(eval_settings(), model, seal(tiny_data))  # intact: evaluates
    bad = tiny_data / "test_x.npy"
    content = flip_last_byte(bad)
    with pytest.raises(ManifestError, match="changed since it was prepared") as info:
        evaluate_run(eval_settings(), model, tiny_data)
    assert str(bad) in str(info.value)
    assert bad.read_bytes() == content and model.exists()


@pytest.mark.parametrize("sealed", [True, False], ids=["with_sha256", "without_sha256"])
def test_truncated_array_names_the_file(tiny_data, sealed):
    if sealed:
        seal(tiny_data)
    bad = tiny_data / "train_x.npy"
    content = truncate(bad)
    with pytest.raises(ManifestError) as info:
        load_split(tiny_data, "train")
    message = str(info.value)
    assert message.startswith(str(bad))  # the file first, not numpy's bare mmap error
    assert f"Delete {tiny_data}/" in message
    assert bad.read_bytes() == content


def test_each_file_is_hashed_once_per_process(tiny_data, monkeypatch):
    from robustft.data import format as fmt

    seal(tiny_data)
    hashed: list[str] = []
    real = fmt.sha256_file
    monkeypatch.setattr(fmt, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    for _ in range(3):
        load_split(tiny_data, "train")
    load_split(tiny_data, "test")
    assert sorted(hashed) == ["test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]


def test_manifest_without_checksums_loads_with_a_warning(tiny_data, caplog):
    with caplog.at_level(logging.WARNING, logger="robustft.data.format"):
        split = load_split(tiny_data, "val")
        load_split(tiny_data, "test")
    assert len(split) == 12
    warnings = [r for r in caplog.records if "unverified" in r.getMessage()]
    assert len(warnings) == 1 and str(tiny_data) in warnings[0].getMessage()


def test_corrupt_model_best_names_the_path_when_loaded(tmp_path, tiny_data):
    from robustft.clat.tables import parameter_count
    from robustft.evaluate import evaluate_run
    from robustft.models import build_model
    from robustft.train import load_full_model

    model = save_model(tmp_path / "model_best.pt")
    content = truncate(model)
    loaders = {
        "evaluate": lambda: evaluate_run(eval_settings(), model, tiny_data),
        "init_from_model": lambda: load_full_model(build_model("resnet_mini", 3, width=4), model),
        "parameter_count": lambda: parameter_count(model),
    }
    for name, load in loaders.items():
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert str(model) in message, name
        assert "re-run the training job" in message, name
    assert model.read_bytes() == content


def test_corrupt_last_checkpoint_is_moved_aside_and_the_run_starts_over(
    tmp_path, tiny_data, tiny_backbone, caplog
):
    from robustft.train import train_run

    def strip_time(rows):  # NaN (grad_sim of a method without two objectives) != NaN
        return [
            {
                k: "nan" if isinstance(v, float) and math.isnan(v) else v
                for k, v in r.items()
                if k != "seconds"
            }
            for r in rows
        ]

    reference = train_run(
        train_config(), tiny_data, tiny_backbone, tmp_path / "ck_ref", tmp_path / "ref"
    )
    ck = tmp_path / "ck"
    ck.mkdir()
    # a checkpoint cut short (the disk filled up while it was copied, say)
    corrupt = (tmp_path / "ck_ref" / "last.pt").read_bytes()[:1000]
    (ck / "last.pt").write_bytes(corrupt)
    with caplog.at_level(logging.WARNING, logger="robustft.train"):
        rows = train_run(train_config(), tiny_data, tiny_backbone, ck, tmp_path / "out")
    assert strip_time(rows) == strip_time(reference)
    a = torch.load(tmp_path / "out" / "model_best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ref" / "model_best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    aside = list(ck.glob("last.corrupt-*.pt"))
    assert len(aside) == 1 and aside[0].read_bytes() == corrupt  # kept for inspection
    assert any(aside[0].name in r.getMessage() for r in caplog.records)
    # the new last.pt is a complete checkpoint of the finished run
    assert torch.load(ck / "last.pt", weights_only=True)["epoch"] == TRAIN["epochs"] - 1


def test_moving_aside_twice_in_one_second_keeps_both(tmp_path):
    from robustft.io import move_aside

    names = []
    for content in (b"first", b"second"):
        (tmp_path / "last.pt").write_bytes(content)
        names.append(move_aside(tmp_path / "last.pt", "corrupt"))
    assert not (tmp_path / "last.pt").exists()
    assert [p.read_bytes() for p in names] == [b"first", b"second"]
    assert np.unique([p.name for p in names]).size == 2
