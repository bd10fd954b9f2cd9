"""Runs that survive kills and refuse bad input (issue: preemption and resume, bad input).

Real processes: the train step is started as a subprocess, killed with SIGKILL in the middle
of an epoch, started again, and must end with exactly the metrics and weights of an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from robustft.models import build_model

ATTACK = {"eps": 8 / 255, "step": 4 / 255, "steps": 2, "random_start": True}
SETTINGS = {
    "run_name": "tiny/autolora",
    "method": "autolora",
    "arch": "resnet_mini",
    "width": 4,
    "seed": 0,
    "epochs": 4,
    "batch_size": 12,
    "lr": 0.05,
    "train_attack": ATTACK,
    "eval_attack": {**ATTACK, "random_start": False},
    "grad_sim_batches": 1,
    "method_params": {"lambda_source": "train_set"},
    "lr_schedule": {"type": "multistep", "milestones": [2], "factor": 0.1},
}


def train_cmd(data, backbone, ck, out, settings=SETTINGS):
    return [
        sys.executable,
        "-m",
        "robustft.steps.train",
        "--settings",
        json.dumps(settings),
        "--data",
        str(data),
        "--backbone",
        str(backbone),
        "--checkpoints",
        str(ck),
        "--out",
        str(out),
    ]


def wait_for_stderr_line(proc: subprocess.Popen, needle: str, timeout: float = 300) -> None:
    """Read ``proc``'s stderr (on a thread, which keeps draining it) until a line contains
    ``needle``; fail if the process ends first or nothing matches within ``timeout``."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {needle!r} within {timeout} s:\n{''.join(seen[-20:])}")
        if line is None:
            raise AssertionError(f"training ended before {needle!r}:\n{''.join(seen[-20:])}")
        seen.append(line)
        if needle in line:
            return


def metrics(out: Path):
    rows = [line.split(",") for line in (out / "train_log.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    return [[row[i] for i in keep] for row in rows]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(
    tmp_path, tiny_data, tiny_backbone
):
    subprocess.run(
        train_cmd(tiny_data, tiny_backbone, tmp_path / "ck_ref", tmp_path / "ref"),
        check=True,
        capture_output=True,
    )
    ck, out = tmp_path / "ck", tmp_path / "out"
    proc = subprocess.Popen(
        train_cmd(tiny_data, tiny_backbone, ck, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The trainer logs "<run> epoch E: batch B/N" before batches of an epoch (E from 0): kill
    # when the second epoch starts its second batch, i.e. after epoch 0 was checkpointed and
    # with one batch of epoch 1 applied in memory only. Waiting for the line, not for a fixed
    # time, keeps the kill inside the run however fast the machine is.
    wait_for_stderr_line(proc, f"{SETTINGS['run_name']} epoch 1: batch 2/")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model_best.pt").exists()  # nothing half-written
    assert torch.load(ck / "last.pt", weights_only=True)["epoch"] < SETTINGS["epochs"] - 1
    resumed = subprocess.run(
        train_cmd(tiny_data, tiny_backbone, ck, out), capture_output=True, text=True, check=True
    )
    assert "resumed after epoch" in resumed.stderr
    assert metrics(out) == metrics(tmp_path / "ref")
    a = torch.load(out / "model_best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ref" / "model_best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['ROBUSTFT_PWNED'])}",))


def test_malicious_backbone_never_executes_and_leaves_no_output(tmp_path, tiny_data, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ROBUSTFT_PWNED", str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save({"model": {"module.model.conv1.weight": torch.zeros(1)}, "x": Payload()}, evil)
    result = subprocess.run(
        train_cmd(tiny_data, evil, tmp_path / "ck", tmp_path / "out"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert str(evil) in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_backbone_with_missing_tensor_names_file_and_tensor(tmp_path, tiny_data):
    state = build_model("resnet_mini", 5, width=4).state_dict()
    bad = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if k != "layer2.0.conv1.weight"}, bad)
    result = subprocess.run(
        train_cmd(tiny_data, bad, tmp_path / "ck", tmp_path / "out"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert str(bad) in result.stderr and "layer2.0.conv1.weight" in result.stderr
    assert not (tmp_path / "out").exists()


# --- a killed Snakemake run, resumed: the job's log keeps both attempts -------------------------


@pytest.mark.slow
def test_killed_and_resumed_workflow_job_log_keeps_both_attempts(tmp_path):
    """Snakemake deletes a job's log before each attempt; rules/common.smk's ``step`` keeps the
    earlier attempts in ``<log>.attempts`` and puts them at the top of the next log."""
    from test_workflow import ROOT, snakemake, workflow_copy

    wd = workflow_copy(tmp_path, ROOT / "tests" / "workflow_micro.yaml")
    run = "micro/tex/tiny/vanilla_rft/seed0"
    target = f"results/runs/{run}/model_best.pt"
    log = wd / "logs" / "train" / f"{run}.log"
    history = log.with_name(log.name + ".attempts")
    first = subprocess.Popen(
        [*SNAKEMAKE_CMD, "--cores", "1", target],
        cwd=wd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: killed below as a whole
    )
    pid = wait_for_file_line(history, "train attempt 1: pid ", first)
    os.kill(pid, signal.SIGSTOP)  # the trainer is mid-job, however fast this machine is
    os.killpg(first.pid, signal.SIGKILL)  # snakemake, its shell and tee die at once
    os.kill(pid, signal.SIGKILL)  # the trainer too (it may sit in another process group)
    first.wait()
    assert not (wd / target).exists()
    snakemake(wd, "--unlock")
    snakemake(wd, "--rerun-incomplete", target)
    text = log.read_text()
    pids = [
        int(line.split(" pid ")[1].split()[0])
        for line in text.splitlines()
        if "train attempt 1: pid " in line
    ]
    assert pids[0] == pid and len(pids) == 2 and pids[1] != pid, text
    assert not history.exists()  # the job succeeded: its history lives on in the log only


SNAKEMAKE_CMD = [sys.executable, "-m", "snakemake"]


def wait_for_file_line(path: Path, needle: str, proc: subprocess.Popen, timeout=600) -> int:
    """Poll ``path`` until a line contains ``needle`` followed by a PID; return that PID. Fails
    if ``proc`` ends first (polling a file Snakemake's job writes: there is no pipe to read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if needle in line:
                    return int(line.split(needle)[1].split()[0])
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended (rc {proc.returncode}) before {needle!r}")
        time.sleep(0.05)
    raise AssertionError(f"no {needle!r} in {path} within {timeout} s")
