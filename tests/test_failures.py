"""Failures a user can act on (issue 12): every failing step ends its log with ONE line,
``robustft: ERROR: <what, naming the file or key> — <what to do>``, and an exit code per kind;
a failure that a retry would repeat is recorded and not redone by Snakemake's retry.

The step modules run as real subprocesses with bad input, as Snakemake runs them; the full
disk is simulated by fault injection in the step's own process (no root, no tiny file system).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_resilience import SETTINGS, train_cmd

from robustft import io
from robustft.steps import _common

PREFIX = "robustft: ERROR: "


def step(module: str, *args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", f"robustft.steps.{module}", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1]


def test_unknown_setting_names_the_key(tmp_path):
    result = step(
        "train",
        *("--settings", json.dumps({**SETTINGS, "learning_rate": 0.1})),
        *("--data", str(tmp_path), "--checkpoints", str(tmp_path / "ck")),
        *("--out", str(tmp_path / "out")),
    )
    assert result.returncode == _common.FAILURES["settings"].code
    line = last_line(result)
    assert line.startswith(PREFIX) and "learning_rate" in line and " — " in line
    assert "Traceback" in result.stderr  # the traceback stays, above the line, for developers


def test_offline_backbone_names_url_and_path_and_is_not_retried(tmp_path):
    out = tmp_path / "backbones" / "salman_r18.pt"
    marker = tmp_path / "fetch.log.failed"
    args = ("--arch", "resnet18", "--eps-pt", "4", "--out", str(out))
    offline = {"ROBUSTFT_OFFLINE": "1"}
    first = step("fetch_backbone", *args, "--failure-marker", str(marker), env=offline)
    assert first.returncode == _common.FAILURES["download"].code
    line = last_line(first)
    assert line.startswith(PREFIX)
    assert "https://huggingface.co/madrylab/robust-imagenet-models/" in line
    assert str(out.resolve()) in line
    assert marker.exists()
    # Snakemake's retry (attempt 2) repeats the line at once instead of redoing the work
    retry = step(
        "fetch_backbone", *args, "--failure-marker", str(marker), "--attempt", "2", env=offline
    )
    assert retry.returncode == first.returncode
    assert last_line(retry) == line and "not retried" in retry.stderr
    assert "Traceback" not in retry.stderr
    # a new invocation (attempt 1, e.g. after the user placed the file) runs again: the
    # file is there now, so it passes the download and fails later, on its content
    out.write_bytes(b"not a checkpoint")
    fixed = step("fetch_backbone", *args, "--failure-marker", str(marker), env=offline)
    assert "not retried" not in fixed.stderr
    assert fixed.returncode == _common.FAILURES["checkpoint"].code
    assert str(out) in last_line(fixed)


def test_corrupt_backbone_names_the_file(tmp_path, tiny_data, tiny_backbone):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_backbone.read_bytes()[:500])  # a copy cut short
    result = step(*train_args(tiny_data, cut, tmp_path))
    assert result.returncode == _common.FAILURES["checkpoint"].code
    line = last_line(result)
    assert line.startswith(PREFIX) and str(cut) in line
    assert not (tmp_path / "out").exists()


def test_nan_loss_says_the_run_diverged(tmp_path, tiny_data, tiny_backbone):
    result = step(*train_args(tiny_data, tiny_backbone, tmp_path, lr=1e30))
    assert result.returncode == _common.FAILURES["nonfinite"].code
    line = last_line(result)
    assert line.startswith(PREFIX) and "loss is nan" in line
    assert "lower the learning rate" in line
    assert not (tmp_path / "out" / "model_best.pt").exists()


def train_args(data: Path, backbone: Path, tmp: Path, **settings) -> list[str]:
    cmd = train_cmd(data, backbone, tmp / "ck", tmp / "out", {**SETTINGS, **settings})
    return ["train", *cmd[3:]]  # without "python -m robustft.steps.train"


# --- disk full ----------------------------------------------------------------------------------


def test_enospc_in_atomic_path_names_the_file(tmp_path):
    target = tmp_path / "model_best.pt"
    target.write_bytes(b"previous")
    with pytest.raises(io.DiskFullError) as info, io.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value).startswith(f"no space left writing {target}")
    assert target.read_bytes() == b"previous"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model_best.pt"]  # no temporary left


def test_torch_write_error_on_a_full_disk_becomes_disk_full(tmp_path, monkeypatch):
    # torch.save's zip writer loses the errno: "unexpected pos 70784 vs 70680"
    target = tmp_path / "last.pt"
    monkeypatch.setattr(io, "_free_bytes", lambda directory: 0)
    with pytest.raises(io.DiskFullError, match="no space left writing"), io.atomic_path(target):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . unexpected pos 70784 vs 70680"
        )
    # the same error with space left is not blamed on the disk
    monkeypatch.setattr(io, "_free_bytes", lambda directory: 1 << 40)
    with pytest.raises(RuntimeError, match="unexpected pos"), io.atomic_path(target):
        raise RuntimeError("unexpected pos 70784 vs 70680")


def test_train_step_on_a_full_disk_ends_with_one_line(tmp_path, tiny_data, tiny_backbone):
    """The real train step; its process's torch.save fails as it does on ENOSPC."""
    inject = textwrap.dedent(
        """
        import sys, torch, robustft.io
        robustft.io._free_bytes = lambda directory: 4096  # what statvfs says on a full disk

        def save(obj, f, *args, **kwargs):
            open(f, "wb").write(b"PK")  # a few bytes land, then the writer gives up
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: "
                               "file write failed; unexpected pos 70784 vs 70680")

        torch.save = save
        from robustft.steps._common import run
        from robustft.steps.train import main
        sys.argv[0] = "train"
        run(main)
        """
    )
    args = train_args(tiny_data, tiny_backbone, tmp_path, epochs=1)[1:]
    result = subprocess.run(
        [sys.executable, "-c", inject, *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == _common.FAILURES["disk_full"].code, result.stderr[-2000:]
    line = last_line(result)
    # the first checkpoint file of the epoch (best.pt, then last.pt) is where it failed
    assert line.startswith(f"{PREFIX}no space left writing {tmp_path / 'ck'}/")
    assert "free space" in line and "unexpected pos" not in line
    assert "unexpected pos" in result.stderr  # the original error stays in the traceback
    assert not list((tmp_path / "ck").glob(".last.pt.*"))  # no temporary left behind


# --- the wrapper itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (
            lambda: _data_errors().ChecksumError(Path("/r/cifar.tar.gz"), "md5", "ab", "cd"),
            "data",
            "/r/cifar.tar.gz",
        ),
        (lambda: _manifest_error(), "data", "train_x.npy"),
        (
            lambda: OSError(errno.ENOSPC, "No space left on device", "/r/x.csv"),
            "disk_full",
            "no space left writing /r/x.csv",
        ),
    ],
)
def test_each_kind_gets_its_code_and_one_line(capsys, error, kind, words):
    def main():
        raise error()

    with pytest.raises(SystemExit) as info:
        _common.run(main)
    assert info.value.code == _common.FAILURES[kind].code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(PREFIX) and words in err[-1] and " — " in err[-1]


def test_unexpected_errors_say_so_and_exit_1(capsys):
    def main():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(SystemExit) as info:
        _common.run(main)
    assert info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"{PREFIX}unexpected ZeroDivisionError: division by zero")


def test_multiline_messages_become_one_line():
    from robustft.plan import ConfigError

    code, retry_helps, line = _common.failure_line(
        ConfigError("invalid config.yaml:\n  config key 'a': bad\n  config key 'b': worse")
    )
    assert "\n" not in line and "config key 'a': bad | config key 'b': worse" in line
    assert code == _common.FAILURES["settings"].code and not retry_helps


def _data_errors():
    from robustft.data import download

    return download


def _manifest_error():
    from robustft.data.format import ManifestError

    return ManifestError("results/data/x/train_x.npy: the file changed since it was prepared")


def test_a_checkpoint_error_is_not_a_bug(tmp_path):
    from robustft.models.checkpoint import CheckpointError

    code, retry_helps, line = _common.failure_line(CheckpointError(f"{tmp_path}/last.pt: bad"))
    assert code == _common.FAILURES["checkpoint"].code and not retry_helps
    assert "delete the named file" in line


def test_a_bad_config_key_stops_snakemake_with_one_line(tmp_path):
    """Config validation runs in Snakemake's own process (rules/common.smk)."""
    import yaml
    from test_workflow import ROOT, snakemake, workflow_copy

    cfg = yaml.safe_load((ROOT / "tests" / "micro_config.yaml").read_text())
    cfg["keep_checkpoint"] = True  # typo of keep_checkpoints
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake(workflow_copy(tmp_path, bad), "-n", check=False)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(PREFIX) and "'keep_checkpoint' was unexpected" in lines[0]
    assert "fix it in the config file" in lines[0]


@pytest.mark.slow
def test_snakemake_shows_the_line_and_does_not_redo_a_deterministic_failure(tmp_path):
    """The whole path: a job that cannot succeed offline, run by Snakemake with a retry."""
    import yaml
    from test_workflow import ROOT, SNAKEMAKE, workflow_copy

    cfg = yaml.safe_load((ROOT / "tests" / "workflow_micro.yaml").read_text())
    cfg["datasets"]["c10"] = {"kind": "cifar10", "resolution": 32}
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    wd = workflow_copy(tmp_path, path)
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "1", "--retries", "1", "--show-failed-logs", "results/data/c10"],
        cwd=wd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ROBUSTFT_OFFLINE": "1"},
    )
    assert result.returncode != 0
    log = (wd / "logs" / "prepare_data" / "c10.log").read_text().strip().splitlines()
    assert log[-1].startswith(PREFIX) and "cifar-10-python.tar.gz" in log[-1]
    assert str((wd / "resources" / "raw" / "cifar10").resolve()) in log[-1]
    # attempt 2 repeated attempt 1's line at once; both attempts are in the log
    assert any("not retried" in line for line in log)
    assert sum("prepare_data attempt" in line for line in log) == 2
    assert log[-1] in result.stdout + result.stderr  # show-failed-logs printed it


def test_a_steps_own_systemexit_message_gets_the_same_last_line(capsys):
    def main():
        raise SystemExit("--models expects NAME=FILE, got 'x'")

    with pytest.raises(SystemExit) as info:
        _common.run(main)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"{PREFIX}--models expects NAME=FILE, got 'x'"


def test_the_default_advice_is_added_only_when_the_message_has_none():
    from robustft.train import NonFiniteLossError

    line = _common.failure_line(NonFiniteLossError("loss is nan because lr is huge"))[2]
    assert line.endswith(_common.FAILURES["nonfinite"].hint)  # "because" is not advice
    line = _common.failure_line(io.DiskFullError(Path("/r/x.pt"), 0))[2]
    assert line.count(" — ") == 1  # DiskFullError says what to do itself
