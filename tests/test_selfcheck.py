"""``python -m robustft.selfcheck``: every registered method's step, PGD-10 and AutoAttack,
device vs CPU (here: CPU vs CPU, which must be bit-identical)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from robustft import selfcheck
from robustft.methods import METHODS
from robustft.methods.pgd_at import PGDAT

LINE = re.compile(r"^\[(PASS|FAIL)\] (\S+)", re.MULTILINE)


def test_cli_on_cpu_checks_every_registered_method_and_both_attacks():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors: no extra threads
    done = subprocess.run(
        [sys.executable, "-m", "robustft.selfcheck", "--device", "cpu"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    status = {name: s for s, name in LINE.findall(done.stdout)}
    assert set(status) == set(METHODS) | {"pgd10", "autoattack"}, done.stdout
    assert set(status.values()) == {"PASS"}, done.stdout
    # header first: device, torch version and threads; a summary line last
    lines = done.stdout.strip().splitlines()
    assert lines[1] == "device: cpu"
    assert f"torch {torch.__version__}, threads 1" in lines[2]
    assert lines[-1].startswith("selfcheck passed on cpu")
    for name in METHODS:  # CPU against CPU: exact, with a step time
        line = next(x for x in lines if x.startswith(f"[PASS] {name} "))
        assert re.search(r"step +[0-9.]+ ms", line) and "Δloss 0  Δweights 0" in line, line


class NaNStep(PGDAT):
    name = "broken_nan"

    def batch_loss(self, model, x, y, ctx):
        out = super().batch_loss(model, x, y, ctx)
        out.loss = out.loss * float("nan")
        return out


_calls = [0]


class Unseeded(PGDAT):
    """A loss that depends on state outside the seeded run (differs between two runs)."""

    name = "broken_unseeded"

    def batch_loss(self, model, x, y, ctx):
        _calls[0] += 1
        out = super().batch_loss(model, x, y, ctx)
        out.loss = out.loss * (1 + 1e-3 * _calls[0])
        return out


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        (NaNStep, "StepFailure: loss is nan"),
        (Unseeded, "loss differs"),
    ],
)
def test_a_broken_method_fails_the_check_naming_it(monkeypatch, capsys, method, reason):
    monkeypatch.setitem(METHODS, method.name, method)
    code = selfcheck.main(
        ["--device", "cpu", "--methods", f"pgd_at,{method.name}", "--skip-attacks"]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert re.search(rf"^\[FAIL\] {method.name} .*{reason}", out, re.MULTILINE), out
    assert re.search(r"^\[PASS\] pgd_at ", out, re.MULTILINE), out  # the others still run
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith(f"selfcheck FAILED on cpu: 1 of 2 checks failed ({method.name})")
    )


def test_cuda_requested_without_cuda_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        selfcheck.main(["--device", "cuda"])
    assert stop.value.code == 2
    assert "sees no CUDA device" in capsys.readouterr().err
    assert selfcheck.resolve("auto") == torch.device("cpu")


def test_unknown_method_or_device_exits_2(capsys):
    for argv in (["--methods", "nope"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as stop:
            selfcheck.main(argv)
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method(s) ['nope']" in err and "--device must be" in err


def test_tolerances_are_stated():
    assert selfcheck.tolerance_for(torch.device("cpu")).rtol == 0
    cuda = selfcheck.tolerance_for(torch.device("cuda"))
    assert (cuda.rtol, cuda.count) == (1e-3, 1)


def _result(loss, weight, trainable=("w",), grad_sim=None):
    return selfcheck.StepResult(
        loss=loss,
        state={"w": torch.tensor([weight]), "n": torch.tensor(3)},
        init={"w": torch.tensor([1.0]), "n": torch.tensor(3)},
        trainable=list(trainable),
        grad_sim=grad_sim,
        start_seconds=0.0,
        step_seconds=0.0,
    )


def test_comparison_is_relative_to_the_update_and_uses_the_device_tolerance():
    """What a GPU run sees (no GPU here): 1e-4 of the step's update passes on CUDA, not on
    CPU; the weights' own scale (1.0) is not what the difference is measured against."""
    ref = _result(2.0, 0.99)  # the step moved w by 0.01
    near = _result(2.0, 0.99 + 1e-6)  # 1e-4 of the update (1e-6 of the weight)
    cuda, cpu = (
        selfcheck.tolerance_for(torch.device("cuda")),
        selfcheck.tolerance_for(torch.device("cpu")),
    )
    assert selfcheck.compare_steps(near, ref, cuda)[0] == []
    assert "weights differ" in selfcheck.compare_steps(near, ref, cpu)[0][0]
    far = _result(2.0, 0.99 + 1e-4)  # 1e-2 of the update, 1e-4 of the weight: a wrong gradient
    assert any("weights differ" in p for p in selfcheck.compare_steps(far, ref, cuda)[0])
    assert any(
        "loss differs" in p for p in selfcheck.compare_steps(_result(2.01, 0.99), ref, cuda)[0]
    )
    assert (
        "trainable set differs from the CPU's"
        in selfcheck.compare_steps(_result(2.0, 0.99, trainable=("v",)), ref, cuda)[0]
    )
    assert (
        "the step changed no weight"
        in selfcheck.compare_steps(_result(2.0, 1.0), _result(2.0, 1.0), cpu)[0]
    )
