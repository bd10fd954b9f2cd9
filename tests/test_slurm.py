"""Cluster execution: the micro study through profiles/slurm-ci on a real SLURM cluster.

The `slurm` test needs a real single-node cluster (Debian's slurm-wlm + munge, with fake GPUs);
it starts one with .ci/slurm/start.sh when `sinfo` shows no idle node, and *fails* — never
skips — when that is impossible. It is deselected by default (pyproject addopts); run it with

    .ci/slurm/start.sh && python -m pytest -m slurm tests/test_slurm.py -v

The other tests here only plan the workflow (no SLURM needed) and run in the default suite.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "micro_config.yaml"
START = REPO / ".ci" / "slurm" / "start.sh"

GPU_RULES = {"pretrain_backbone", "train", "evaluate"}
#: Downloads/data preparation and aggregation stay on the submit host (`localrules`).
LOCAL_RULES = {"prepare_data", "fetch_backbone", "aggregate", "render_report"}
RUN_TIMEOUT = 1500  # s; the micro study takes 1-4 min depending on the machine's load


def snakemake(workdir: Path, *args: str) -> list[str]:
    """The micro study in `workdir`, replacing (not merging into) config.yaml."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(MICRO),
        "--replace-workflow-config",
        *args,
    ]


def clean_env() -> dict[str, str]:
    """The caller's environment without a GPU binding or an enclosing SLURM job."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_VISIBLE_DEVICES", "ROBUSTFT_GPUS")
        and not (k.startswith("SLURM_") and k != "SLURM_CONF")
    }


# --- no cluster needed --------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["slurm", "slurm-ci", "local"])
def test_profile_plans_the_micro_study(profile, tmp_path):
    out = subprocess.run(
        snakemake(
            tmp_path, "--dry-run", "--cores", "16", "--profile", str(REPO / "profiles" / profile)
        ),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout, flags=re.MULTILINE))
    assert stats["train"] == "4" and stats["evaluate"] == "4", out.stdout[-2000:]
    if profile.startswith("slurm"):
        # GPU jobs ask for GPUs through the `gpu` resource (-> sbatch --gpus), on the gpu
        # partition; nothing smuggles --gres through slurm_extra.
        for block in re.split(r"\n\n", out.stdout):
            rule = re.search(r"^rule (\w+):", block, flags=re.MULTILINE)
            if rule and rule.group(1) in GPU_RULES:
                assert "slurm_partition=gpu" in block and re.search(r"\bgpu=1\b", block), block
        text = (REPO / "profiles" / profile / "config.yaml").read_text()
        assert "slurm_extra" not in text.split("#")[0]
        settings = yaml.safe_load(text)
        assert settings["executor"] == "slurm" and settings["slurm-requeue"] is True
        assert settings["retries"] >= 1
        for rule in GPU_RULES:
            assert settings["set-resources"][rule]["gpu"] == 1


def test_downloads_and_aggregation_stay_on_the_submit_host(tmp_path):
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            wf = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(configfiles=[REPO / "config.yaml"]),
                snakefile=REPO / "Snakefile",
                workdir=tmp_path,
            )
            localrules = set(wf._workflow._localrules)  # no public accessor in 9.27
            rules = {rule.name for rule in wf._workflow.rules}
    finally:
        os.chdir(cwd)
    assert LOCAL_RULES <= localrules
    assert GPU_RULES <= rules and not GPU_RULES & localrules


# --- the real cluster ---------------------------------------------------------------------------
def cluster_state() -> str | None:
    """None when a usable node is in both partitions; else what is wrong."""
    if shutil.which("sinfo") is None:
        return "sinfo not found (apt-get install -y slurm-wlm munge)"
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%P %T %G"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    usable = {
        line.split()[0].rstrip("*")
        for line in out.stdout.splitlines()
        if line.split()[1] in ("idle", "mixed", "allocated", "completing") and "gpu:" in line
    }
    if not {"debug", "gpu"} <= usable:
        return f"no usable node with GPUs in partitions debug and gpu:\n{out.stdout}"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    problem = cluster_state()
    if problem is not None:
        started = subprocess.run(
            ["bash", str(START)], check=False, capture_output=True, text=True, timeout=300
        )
        if started.returncode != 0:
            pytest.fail(
                f"SLURM cluster is not available ({problem}) and {START} could not "
                f"start one:\n{started.stdout}{started.stderr}",
                pytrace=False,
            )
        problem = cluster_state()
        if problem is not None:
            pytest.fail(
                f"{START} succeeded but the cluster is unusable: {problem}\n"
                f"{started.stdout}{started.stderr}",
                pytrace=False,
            )
    gpus = subprocess.run(
        ["sinfo", "-h", "-p", "gpu", "-o", "%G"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    count = max((int(n) for n in re.findall(r"gpu:(?:\w+:)?(\d+)", gpus)), default=0)
    if count < 2:
        pytest.fail(
            f"the gpu partition needs a node with 2 GPUs, sinfo says {gpus!r}", pytrace=False
        )


def start_run(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, stdout=handle, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True
        )


def finish_run(proc: subprocess.Popen, log: Path, what: str, deadline: float) -> str:
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # lets the SLURM executor scancel its jobs
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pytest.fail(
            f"{what} did not finish in {RUN_TIMEOUT} s:\n{log.read_text()[-5000:]}", pytrace=False
        )
    text = log.read_text()
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{text[-8000:]}", pytrace=False)
    return text


_STAMPS = (
    (re.compile(r"Date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"), "%Y-%m-%d %H:%M:%S"),
    (
        re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]", re.MULTILINE),
        "%a %b %d %H:%M:%S %Y",
    ),
)


def job_interval(slurm_log: Path) -> tuple[datetime, datetime]:
    """First and last time stamp Snakemake wrote into a SLURM job's log."""
    text = slurm_log.read_text()
    stamps = [
        datetime.strptime(" ".join(m.group(1).split()), fmt)
        for pattern, fmt in _STAMPS
        for m in pattern.finditer(text)
    ]
    assert stamps, f"no time stamps in {slurm_log}"
    return min(stamps), max(stamps)


def run_dirs(root: Path) -> dict[str, Path]:
    """{'micro/micro_textures/micro_at/autolora/seed0': run directory} of finished runs."""
    runs = root / "results" / "runs"
    return {
        str(p.parent.relative_to(runs)): p.parent
        for p in sorted(runs.glob("*/*/*/*/seed*/eval.json"))
    }


def same(a, b) -> bool:
    """Exact equality of nested dicts/lists of tensors and plain values."""
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def train_rows(path: Path) -> list[dict[str, str]]:
    """train_log.csv without its wall-time column, the one column allowed to differ."""
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.mark.slurm
def test_micro_study_on_slurm_matches_a_local_run(slurm_cluster, tmp_path, capsys):
    t0 = time.monotonic()
    deadline = t0 + RUN_TIMEOUT
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    # The local reference run shares the machine with the SLURM run: it only costs CPU time,
    # and CPU results do not depend on timing. They do depend on the thread count (float
    # reductions), so the reference uses profiles/slurm-ci's, not the local profile's.
    local = start_run(
        snakemake(
            local_dir,
            "--profile",
            str(REPO / "profiles" / "local"),
            "--set-threads",
            "pretrain_backbone=1",
            "train=1",
            "evaluate=1",
        ),
        tmp_path / "local.log",
    )
    slurm = start_run(
        snakemake(slurm_dir, "--profile", str(REPO / "profiles" / "slurm-ci")),
        tmp_path / "slurm.log",
    )
    slurm_log = finish_run(slurm, tmp_path / "slurm.log", "the SLURM run", deadline)
    slurm_seconds = time.monotonic() - t0
    finish_run(local, tmp_path / "local.log", "the local run", deadline)

    # 1. Every GPU job went through sbatch; data preparation and aggregation stayed local.
    submitted = re.findall(
        r"Job \d+ has been submitted with SLURM jobid (\d+) "
        r"\(log: (\S+)\)\.",
        slurm_log,
    )
    per_rule: dict[str, dict[str, str]] = {}  # rule -> {wildcards: SLURM job id}
    for job_id, path in submitted:
        m = re.search(r"/rule_(\w+?)/([^/]+)/(\d+)\.log$", path)
        assert m and m.group(3) == job_id, path
        per_rule.setdefault(m.group(1), {})[m.group(2)] = job_id
        assert Path(path).is_file(), f"SLURM log {path} missing"
    assert {r: len(j) for r, j in per_rule.items()} == {
        "pretrain_backbone": 1,
        "train": 4,
        "evaluate": 4,
    }, submitted
    for rule in ("prepare_data", "aggregate", "render_report"):
        assert re.search(rf"^localrule {rule}:", slurm_log, flags=re.MULTILINE), rule
        assert rule not in per_rule

    # 2. Each training job ran inside its SLURM job, which bound a (fake) GPU.
    slurm_runs = run_dirs(slurm_dir)
    assert len(slurm_runs) == 4
    seen = {}
    for name, directory in slurm_runs.items():
        prov = yaml.safe_load((directory / "run.yaml").read_text())["provenance"]
        wildcards = name.replace("/seed", "/").replace("/", "_")  # the plugin's log folder
        job_id = per_rule["train"].get(wildcards)
        assert job_id is not None, (wildcards, per_rule["train"])
        assert prov["slurm_job_id"] == job_id, (name, prov)
        assert re.fullmatch(r"\d+", prov["cuda_visible_devices"] or ""), (name, prov)  # 1 GPU
        seen[job_id] = prov["cuda_visible_devices"]

    # 3. Training jobs that ran at the same time got different GPUs.
    logs = {
        job_id: next(slurm_dir.glob(f"logs/slurm/rule_train/*/{job_id}.log")) for job_id in seen
    }
    intervals = {job_id: job_interval(log) for job_id, log in logs.items()}
    overlapping = [
        (a, b)
        for a, b in itertools.combinations(sorted(seen), 2)
        if max(intervals[a][0], intervals[b][0]) < min(intervals[a][1], intervals[b][1])
    ]
    assert overlapping, f"no two training jobs ran concurrently: {intervals}"
    for a, b in overlapping:
        assert seen[a] != seen[b], f"jobs {a} and {b} ran together on GPU {seen[a]}"

    # 4. Same numbers as the local run: metrics, per-example outcomes, models, training logs.
    import torch

    local_runs = run_dirs(local_dir)
    assert sorted(local_runs) == sorted(slurm_runs)
    for name in slurm_runs:
        ours, ref = slurm_runs[name], local_runs[name]
        a = json.loads((ours / "eval.json").read_text())
        b = json.loads((ref / "eval.json").read_text())
        assert a["metrics"] == b["metrics"], name
        assert a.get("per_example") == b.get("per_example"), name
        assert same(
            torch.load(ours / "model_best.pt", weights_only=True),
            torch.load(ref / "model_best.pt", weights_only=True),
        ), f"{name}: models differ"
        assert train_rows(ours / "train_log.csv") == train_rows(ref / "train_log.csv"), name
    assert (slurm_dir / "results" / "report" / "index.html").is_file()
    assert (slurm_dir / "results" / "tables" / "micro.csv").read_text() == (
        local_dir / "results" / "tables" / "micro.csv"
    ).read_text()

    wall = time.monotonic() - t0
    summary = {
        "slurm_test_wall_seconds": round(wall, 1),
        "slurm_run_seconds": round(slurm_seconds, 1),
        "slurm_jobs": {r: sorted(j.values(), key=int) for r, j in per_rule.items()},
        "cuda_visible_devices": seen,
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=2))
    with capsys.disabled():
        print(
            f"\n[slurm test] wall time {wall:.0f} s (SLURM run {slurm_seconds:.0f} s); "
            f"train jobs -> CUDA_VISIBLE_DEVICES {seen}"
        )
