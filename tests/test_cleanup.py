"""Checkpoint clean-up (issue 12): a finished run's checkpoint directory is deleted unless the
user keeps it, moved-aside files do not pile up, and nothing a downstream job reads goes away.
"""

from __future__ import annotations

import os
import subprocess

import torch
from test_resilience import SETTINGS, train_cmd

from robustft.contracts import TrainConfig
from robustft.models.checkpoint import load_model
from robustft.rundir import finish, prune_aside
from robustft.train import Trainer

ONE_EPOCH = {**SETTINGS, "epochs": 1}


def test_finished_run_deletes_its_checkpoints_and_downstream_jobs_still_start(
    tmp_path, tiny_data, tiny_backbone
):
    ck, out = tmp_path / "ck", tmp_path / "out"
    subprocess.run(
        train_cmd(tiny_data, tiny_backbone, ck, out, ONE_EPOCH), check=True, capture_output=True
    )
    assert not ck.exists()
    assert {p.name for p in out.iterdir()} >= {"model_best.pt", "train_log.csv", "run.yaml"}
    # evaluation, transfer and criticality rebuild the model from the output file ...
    model, info = load_model(out / "model_best.pt")
    assert info["best_epoch"] == 0
    # ... and "X + CLAT" starts from it (init_from: model), not from the checkpoints
    chained = TrainConfig.from_dict({**ONE_EPOCH, "run_name": "tiny/chained", "init_from": "model"})
    trainer = Trainer(chained, tiny_data, out / "model_best.pt", tmp_path / "ck2")
    upstream = model.state_dict()
    assert all(torch.equal(v, upstream[k]) for k, v in trainer.model.state_dict().items())


def test_kept_checkpoints_keep_one_moved_aside_file_per_kind(tmp_path, tiny_data, tiny_backbone):
    ck, out = tmp_path / "ck", tmp_path / "out"
    ck.mkdir()
    # three earlier settings changes and two corrupt copies left over from resumed attempts
    for i, name in enumerate(
        [
            "last.stale-20260101-000000.pt",
            "last.stale-20260102-000000.pt",
            "last.stale-20260103-000000.pt",
            "last.corrupt-20260101-000000.pt",
            "last.corrupt-20260102-000000.pt",
        ]
    ):
        (ck / name).write_bytes(b"x")
        stamp = 1_700_000_000 + i
        os.utime(ck / name, (stamp, stamp))
    cmd = [*train_cmd(tiny_data, tiny_backbone, ck, out, ONE_EPOCH), "--keep-checkpoints"]
    subprocess.run(cmd, check=True, capture_output=True)
    names = sorted(p.name for p in ck.iterdir() if p.name != ".lock")
    assert names == [
        "best.pt",
        "last.corrupt-20260102-000000.pt",
        "last.pt",
        "last.stale-20260103-000000.pt",
    ]
    assert torch.load(ck / "last.pt", weights_only=True)["epoch"] == 0  # still resumable


def test_prune_and_finish_without_a_directory_do_nothing(tmp_path):
    assert prune_aside(tmp_path / "missing") == []
    assert finish(tmp_path / "missing", keep=False) == 0


def test_finish_reports_the_bytes_freed(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x" * 1000)
    (tmp_path / "run" / "best.pt").write_bytes(b"x" * 500)
    assert finish(tmp_path / "run", keep=False) == 1500
    assert not (tmp_path / "run").exists()


def test_config_key_reaches_the_train_step(tmp_path):
    """keep_checkpoints (config.yaml) -> the train rule's resource -> --keep-checkpoints 0|1."""
    import yaml
    from test_workflow import ROOT, snakemake, workflow_copy

    cfg = yaml.safe_load((ROOT / "tests" / "workflow_micro.yaml").read_text())
    cfg["keep_checkpoints"] = True
    path = tmp_path / "keep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(workflow_copy(tmp_path, path), "-n", "-p").stdout
    commands = [line for line in out.splitlines() if "robustft.steps.train " in line]
    assert commands and all("--keep-checkpoints 1 " in c for c in commands)
