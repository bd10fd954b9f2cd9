"""The Snakemake workflow itself: DAG sizes of every paper study, a micro run end to end,
incremental re-runs after one ablation change, config errors before any job, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def workflow_copy(tmp: Path, config: Path | None = None) -> Path:
    wd = tmp / "wf"
    wd.mkdir()
    for name in ("Snakefile", "rules", "envs", "report"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    shutil.copy(config or ROOT / "config.yaml", wd / "config.yaml")
    return wd


def snakemake(wd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", *args], cwd=wd, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {
        m[1]: int(m[2])
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
        if m[1] != "total"
    }


@pytest.fixture(scope="module")
def paper_wf(tmp_path_factory):
    return workflow_copy(tmp_path_factory.mktemp("paper"))


@pytest.mark.parametrize(
    "study, expected",
    [
        ("autolora_table1", {"prepare_data": 6, "fetch_backbone": 1, "train": 54, "evaluate": 54}),
        ("autolora_table2", {"prepare_data": 6, "fetch_backbone": 1, "train": 54, "evaluate": 54}),
        ("autolora_table3", {"prepare_data": 4, "fetch_backbone": 1, "train": 48, "evaluate": 48}),
        ("autolora_table4", {"prepare_data": 2, "fetch_backbone": 5, "train": 90, "evaluate": 90}),
        ("autolora_table5", {"prepare_data": 4, "fetch_backbone": 1, "train": 24, "evaluate": 24}),
        ("autolora_table6", {"prepare_data": 2, "fetch_backbone": 1, "train": 42, "evaluate": 42}),
        ("autolora_figures", {"prepare_data": 3, "fetch_backbone": 1, "train": 27, "evaluate": 27}),
    ],
)
def test_paper_study_dag(paper_wf, study, expected):
    out = snakemake(paper_wf, "-n", "--quiet", "rules", "--config", f"targets=[{study}]").stdout
    assert job_counts(out) == {**expected, "aggregate": 1, "render_report": 1, "all": 1}


def test_all_autolora_studies_share_identical_runs(paper_wf):
    studies = ",".join(f"autolora_table{i}" for i in range(1, 7)) + ",autolora_figures"
    out = snakemake(paper_wf, "-n", "--quiet", "rules", "--config", f"targets=[{studies}]").stdout
    counts = job_counts(out)
    # Table 1 (54) + Table 2 (54) + Table 3 new ranks (36) + Table 4 other ε_pt (72)
    # + Table 5 auto-LR TWINS (12) + Table 6 other α (36); Figures reuse Table 1's runs
    assert counts["train"] == 54 + 54 + 36 + 72 + 12 + 36
    assert counts["aggregate"] == 7


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["studies"]["demo"].update(seed=[0]), "config key 'studies.demo'"),
        (
            lambda c: c["studies"]["demo"].update(variants=["autolora", "sam"]),
            "config key 'studies.demo.variants[1]': unknown variant 'sam'",
        ),
        (
            lambda c: c["fidelities"]["demo"]["training"].update(epochs="5"),
            "config key 'fidelities.demo.training.epochs'",
        ),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, edit, message):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    wd = workflow_copy(tmp_path, path)
    result = snakemake(wd, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (wd / "results").exists() and not (wd / "logs").exists()


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    wd = workflow_copy(tmp_path_factory.mktemp("micro"), ROOT / "tests" / "workflow_micro.yaml")
    snakemake(wd)
    return wd


def test_micro_workflow_produces_tables_and_report(micro_run):
    report = (micro_run / "results" / "report" / "index.html").read_text()
    for name in ("micro", "AutoLoRa", "Vanilla RFT"):
        assert name in report
    table = (micro_run / "results" / "tables" / "micro.csv").read_text()
    assert "PGD10" in table and "welch" in table.lower()
    assert "Nothing to be done" in snakemake(micro_run, "-n").stdout


def test_changing_one_rank_reruns_exactly_the_affected_jobs(micro_run):
    path = micro_run / "config.yaml"
    original = path.read_text()
    cfg = yaml.safe_load(original)
    cfg["variants"]["autolora-rank4"]["params"]["rank"] = 5
    path.write_text(yaml.safe_dump(cfg))
    try:
        out = snakemake(micro_run, "-n").stdout
    finally:
        path.write_text(original)
    assert job_counts(out) == {
        "train": 1,
        "evaluate": 1,
        "aggregate": 1,
        "render_report": 1,
        "all": 1,
    }
    assert "micro/tex/tiny/autolora-rank4/seed0" in out
    assert "autolora/seed0/model_best.pt" not in out.replace("autolora-rank4", "")
