"""A job that asked for a GPU never trains on the CPU by accident (``train.resolve_device``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from robustft.train import resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_without_a_gpu_request_runs_on_the_cpu(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")


def test_a_gpu_request_without_cuda_is_an_error_naming_the_fix(no_cuda):
    with pytest.raises(RuntimeError, match=r"asked for 1 GPU.*set `device: cpu`"):
        resolve_device("auto", gpus=1)
    with pytest.raises(RuntimeError, match="device: cuda but torch sees no CUDA"):
        resolve_device("cuda")


def test_device_cpu_is_an_explicit_choice(no_cuda):
    assert resolve_device("cpu", gpus=1) == torch.device("cpu")


def test_train_step_with_gpus_1_and_no_cuda_stops_before_training(tmp_path, tiny_data):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    settings = {
        "run_name": "tiny/vanilla_rft",
        "method": "vanilla_rft",
        "arch": "resnet_mini",
        "width": 4,
        "seed": 0,
        "epochs": 1,
        "batch_size": 12,
        "device": "auto",
    }
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # as under a scheduler: nothing to claim
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustft.steps.train",
            "--settings",
            json.dumps(settings),
            "--data",
            str(tiny_data),
            "--checkpoints",
            str(tmp_path / "ck"),
            "--out",
            str(tmp_path / "out"),
            "--gpus",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode != 0
    assert "asked for 1 GPU(s)" in done.stderr
    assert not (tmp_path / "ck").exists() and not (tmp_path / "out").exists()
