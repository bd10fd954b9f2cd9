"""One trainer per run directory (issue 12): a second trainer on the same checkpoints — e.g.
a rerun while the orphan of a killed ``snakemake`` still trains — fails at once with one line
naming the PID and host that hold the lock; once that process is gone, the run resumes.

Two real train-step processes; the test waits for observed events (log lines, exits), never for
a fixed time.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess

from test_resilience import SETTINGS, train_cmd, wait_for_stderr_line

from robustft.rundir import RunLock, RunLockedError
from robustft.steps._common import FAILURES

ONE_EPOCH = {**SETTINGS, "epochs": 1}


def test_second_trainer_fails_fast_naming_the_holder(tmp_path, tiny_data, tiny_backbone):
    ck, out = tmp_path / "ck", tmp_path / "out"
    first = subprocess.Popen(
        train_cmd(tiny_data, tiny_backbone, ck, out, ONE_EPOCH),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # training has started, so the lock (taken before any work) is held
        wait_for_stderr_line(first, f"{SETTINGS['run_name']} epoch 0: batch 1/")
        # frozen, it stays "still running" however long the second trainer takes to start
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.run(
            train_cmd(tiny_data, tiny_backbone, ck, tmp_path / "out2", ONE_EPOCH),
            capture_output=True,
            text=True,
            check=False,
        )
        assert second.returncode == FAILURES["locked"].code
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("robustft: ERROR: run directory")
        assert f"PID {first.pid} on host {platform.node()}" in line
        assert first.poll() is None  # the first trainer was not disturbed
        assert not (tmp_path / "out2").exists()
    finally:
        # the orphan dies (SIGKILL: no clean-up code runs); the kernel drops its lock
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    resumed = subprocess.run(
        train_cmd(tiny_data, tiny_backbone, ck, out, ONE_EPOCH),
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "model_best.pt").exists()


def test_lock_is_exclusive_and_released(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    try:
        # another open file description of the same lock file conflicts, as in another process
        try:
            RunLock(tmp_path / "run").acquire()
        except RunLockedError as e:
            assert f"PID {os.getpid()}" in str(e)
        else:
            raise AssertionError("a second lock on a locked run directory succeeded")
    finally:
        lock.release()
    RunLock(tmp_path / "run").acquire().release()  # free again
