"""Local GPU slot picking (robustft.devices) with fake GPUs: no GPU or driver needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from robustft import devices
from robustft.devices import claim_gpus, detect_gpus

HOLD = "import os, sys; print(os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); sys.stdin.read()"


@pytest.fixture
def locks(tmp_path):
    return tmp_path / "locks"


def holder(locks, gpus="0,1", timeout=None, jobs_per_gpu=None):
    """A process that claims one GPU through the CLI wrapper and holds it until stdin closes."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_VISIBLE_DEVICES", *devices.SCHEDULER_VARIABLES)
    }
    env.update(ROBUSTFT_GPUS=gpus, ROBUSTFT_GPU_LOCK_DIR=str(locks))
    cmd = [sys.executable, "-m", "robustft.devices", "--gpus", "1"]
    if timeout is not None:
        cmd += ["--timeout", str(timeout)]
    if jobs_per_gpu is not None:
        cmd += ["--jobs-per-gpu", str(jobs_per_gpu)]
    return subprocess.Popen(
        [*cmd, "--", sys.executable, "-c", HOLD],
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_two_claims_get_different_gpus_and_set_the_environment(locks):
    env_a, env_b = {}, {}
    a = claim_gpus(1, gpus=["0", "1"], lock_dir=locks, environ=env_a)
    b = claim_gpus(1, gpus=["0", "1"], lock_dir=locks, environ=env_b)
    try:
        assert {env_a["CUDA_VISIBLE_DEVICES"], env_b["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
        assert env_a["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # the numbering nvidia-smi shows
        assert a.ids != b.ids
    finally:
        a.release()
        b.release()


def test_waits_while_all_gpus_are_busy_and_gets_one_when_freed(locks):
    held = claim_gpus(2, gpus=["0", "1"], lock_dir=locks, environ={})
    assert held.cuda_visible_devices == "0,1"
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="no 1 free GPU"):
        claim_gpus(1, gpus=["0", "1"], lock_dir=locks, environ={}, timeout=0.3, poll=0.05)
    assert time.monotonic() - start >= 0.3
    held.release()
    env = {}
    with claim_gpus(1, gpus=["0", "1"], lock_dir=locks, environ=env, timeout=1) as claim:
        assert env["CUDA_VISIBLE_DEVICES"] == "0" and claim.ids == ["0"]


@pytest.mark.parametrize(
    "environ",
    [
        {"CUDA_VISIBLE_DEVICES": "3"},  # the user or the scheduler already chose
        {"CUDA_VISIBLE_DEVICES": ""},  # explicitly no GPU
        {"SLURM_JOB_ID": "17"},  # SLURM job without a GPU allocation
    ],
)
def test_respects_an_existing_binding_or_a_scheduler(locks, environ):
    before = dict(environ)
    assert claim_gpus(1, gpus=["0", "1"], lock_dir=locks, environ=environ) is None
    assert environ == before
    assert not locks.exists()


def test_no_op_without_gpus_or_without_gpu_need(locks):
    env = {}
    assert claim_gpus(1, gpus=[], lock_dir=locks, environ=env) is None  # CPU-only machine
    assert claim_gpus(0, gpus=["0"], lock_dir=locks, environ=env) is None  # gpu=0 job
    assert env == {}


def test_more_gpus_than_the_machine_has_is_an_error(locks):
    with pytest.raises(RuntimeError, match="needs 3 GPUs but this machine has 2"):
        claim_gpus(3, gpus=["0", "1"], lock_dir=locks, environ={})


def test_detect_gpus_from_the_pool_variable():
    assert detect_gpus({"ROBUSTFT_GPUS": "0, 2,5"}) == ["0", "2", "5"]
    assert detect_gpus({"ROBUSTFT_GPUS": ""}) == []
    with pytest.raises(ValueError, match="ROBUSTFT_GPUS"):
        detect_gpus({"ROBUSTFT_GPUS": "cuda:0"})


def test_detect_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        + textwrap.dedent("""\
        cat <<'EOF'
        GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)
          MIG 1g.5gb      Device  0: (UUID: MIG-bbbb)
        GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)
        EOF
        """)
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert detect_gpus({}) == ["0", "1"]


def test_cpu_only_machine_detects_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    monkeypatch.setattr(devices, "PROC_GPUS", tmp_path / "no-driver")
    assert detect_gpus({}) == []
    env = {}
    assert claim_gpus(1, lock_dir=tmp_path / "locks", environ=env) is None and env == {}


def test_concurrent_processes_get_different_gpus_and_a_third_waits(locks):
    a, b = holder(locks), holder(locks)
    try:
        seen = {a.stdout.readline().strip(), b.stdout.readline().strip()}
        assert seen == {"0", "1"}
        c = holder(locks, timeout=0.5)  # both GPUs busy: gives up, does not share one
        _, err = c.communicate(timeout=60)
        assert c.returncode != 0 and "TimeoutError" in err and "no 1 free GPU" in err
    finally:
        for p in (a, b):
            p.communicate(timeout=60)
    d = holder(locks, timeout=5)  # released on exit: free again
    out, _ = d.communicate("", timeout=60)
    assert d.returncode == 0 and out.strip() in {"0", "1"}


def test_a_killed_job_frees_its_gpu(locks):
    a = holder(locks, gpus="0")
    assert a.stdout.readline().strip() == "0"
    a.send_signal(signal.SIGKILL)  # preemption: no clean-up code runs
    a.wait(timeout=60)
    env = {}
    with claim_gpus(1, gpus=["0"], lock_dir=locks, environ=env, timeout=5):
        assert env["CUDA_VISIBLE_DEVICES"] == "0"


# --- small jobs sharing a GPU (jobs_per_gpu) ------------------------------------------------
def _claims(n, locks, **kw):
    return [claim_gpus(1, gpus=["0", "1"], lock_dir=locks, environ={}, **kw) for _ in range(n)]


def test_sharing_fills_every_gpu_once_before_doubling_up_and_stops_at_n(locks):
    held = _claims(4, locks, jobs_per_gpu=2)
    try:
        assert [c.ids for c in held] == [["0"], ["1"], ["0"], ["1"]]  # spread, then share
        with pytest.raises(TimeoutError, match="no 1 free GPU"):
            claim_gpus(1, gpus=["0", "1"], lock_dir=locks, environ={}, jobs_per_gpu=2, timeout=0)
        held.pop(0).release()  # one slot of GPU 0 frees up
        (again,) = _claims(1, locks, jobs_per_gpu=2)
        assert again.ids == ["0"]
        held.append(again)
    finally:
        for c in held:
            c.release()


def test_an_exclusive_job_and_sharing_jobs_never_meet_on_a_gpu(locks):
    exclusive = claim_gpus(1, gpus=["0"], lock_dir=locks, environ={})
    with pytest.raises(TimeoutError):  # sharers wait for the exclusive job's GPU
        claim_gpus(1, gpus=["0"], lock_dir=locks, environ={}, jobs_per_gpu=4, timeout=0)
    exclusive.release()
    sharer = claim_gpus(1, gpus=["0"], lock_dir=locks, environ={}, jobs_per_gpu=4)
    with pytest.raises(TimeoutError):  # and an exclusive job waits for every sharer to leave
        claim_gpus(1, gpus=["0"], lock_dir=locks, environ={}, timeout=0)
    sharer.release()
    with claim_gpus(1, gpus=["0"], lock_dir=locks, environ={}, timeout=0) as claim:
        assert claim.ids == ["0"]


def test_jobs_per_gpu_comes_from_the_environment(locks):
    env_a, env_b = {"ROBUSTFT_JOBS_PER_GPU": "2"}, {"ROBUSTFT_JOBS_PER_GPU": "2"}
    a = claim_gpus(1, gpus=["0"], lock_dir=locks, environ=env_a)
    b = claim_gpus(1, gpus=["0"], lock_dir=locks, environ=env_b)
    try:
        assert env_a["CUDA_VISIBLE_DEVICES"] == env_b["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        a.release()
        b.release()
    with pytest.raises(ValueError, match="ROBUSTFT_JOBS_PER_GPU='0'"):
        claim_gpus(1, gpus=["0"], lock_dir=locks, environ={"ROBUSTFT_JOBS_PER_GPU": "0"})


def test_processes_share_a_gpu_up_to_jobs_per_gpu_and_a_killed_one_frees_its_slot(locks):
    a, b = holder(locks, gpus="0", jobs_per_gpu=2), holder(locks, gpus="0", jobs_per_gpu=2)
    try:
        assert a.stdout.readline().strip() == b.stdout.readline().strip() == "0"
        c = holder(locks, gpus="0", jobs_per_gpu=2, timeout=0.3)  # both slots taken
        _, err = c.communicate(timeout=60)
        assert c.returncode != 0 and "no 1 free GPU" in err
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=60)
        d = holder(locks, gpus="0", jobs_per_gpu=2, timeout=5)  # the killed job's slot
        out, _ = d.communicate("", timeout=60)
        assert d.returncode == 0 and out.strip() == "0"
    finally:
        b.communicate(timeout=60)
