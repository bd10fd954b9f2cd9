"""Snakemake's own report (``snakemake --report``) of the micro workflow: the study table, the
study's report page, the index and the figures are in it with their captions.

The runs are hand-made (run.yaml, eval.json, train_log.csv in the results layout, written
oldest first), so Snakemake has only the aggregate and render_report jobs to run: the test
exercises the report wiring of the rules, not training. Two Snakemake start-ups (the build and
``--report``) take 30-60 s on the shared 2-core machine, hence ``slow``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_stats import write_run

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("vanilla_rft", "autolora", "autolora-rank4")  # tests/workflow_micro.yaml


def _snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", *args],
        cwd=wd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"snakemake {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _touch_in_order(paths: list[Path]) -> None:
    """Modification times in DAG order, so Snakemake sees every input older than its output."""
    for i, p in enumerate(paths):
        os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("snakereport")
    for name in ("Snakefile", "rules", "envs", "report"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    (wd / "config.yaml").write_text((ROOT / "tests" / "workflow_micro.yaml").read_text())
    results = wd / "results"
    ordered: list[Path] = []
    for ds in ("src", "tex"):
        (results / "data" / ds).mkdir(parents=True)
        ordered.append(results / "data" / ds)
    (results / "backbones").mkdir()
    ordered.append(results / "backbones" / "tiny.pt")
    ordered[-1].write_bytes(b"not read by the report")
    for i, v in enumerate(VARIANTS):
        e = np.arange(3)
        log = pd.DataFrame(
            {"epoch": e, "lr": 0.01, "test_nat_acc": 0.3 + 0.1 * e + 0.01 * i, "seconds": 2.0}
        )
        made = write_run(
            wd / "made",
            "tex",
            "tiny",
            v,
            0,
            {"SA": 0.4 + 0.05 * i, "PGD10": 0.2 + 0.02 * i},
            method={"vanilla_rft": "Vanilla RFT"}.get(v, "AutoLoRa"),
            train_log=log,
        )
        # the results layout has the fidelity above the dataset: runs/micro/tex/tiny/<v>/seed0
        run = results / "runs" / "micro" / made.relative_to(wd / "made" / "runs")
        run.parent.mkdir(parents=True, exist_ok=True)
        made.rename(run)
        (run / "model_best.pt").write_bytes(b"not read by the report")
        ordered += [run / "model_best.pt", run / "train_log.csv", run / "run.yaml"]
        ordered.append(run / "eval.json")
    _touch_in_order(ordered)
    _snakemake(wd)
    _snakemake(wd, "--report", "report.zip")
    return wd


def test_only_the_report_jobs_ran_and_each_study_has_its_page(built):
    report = built / "results" / "report"
    assert sorted(p.name for p in report.glob("*.html")) == ["index.html", "micro.html"]
    assert 'href="micro.html"' in (report / "index.html").read_text()
    assert [p.name for p in (report / "figures" / "micro").glob("*.png")] == ["training_1.png"]
    assert not (built / "logs" / "train").exists()  # the hand-made runs were not retrained


def test_snakemake_report_holds_the_results_table_pages_and_figures(built):
    with zipfile.ZipFile(built / "report.zip") as z:
        names = z.namelist()
        by_name = {Path(n).name: n for n in names}
        for expected in ("micro.csv", "micro.html", "index.html", "training_1.png"):
            assert expected in by_name, names
        table = z.read(by_name["micro.csv"]).decode()
        page = z.read(by_name["report.html"]).decode()
    # the results table: one cell row per (variant, metric) with its paper/consistency columns
    assert table.count("kind") == 1 and "paper_consistent" in table and "mdd" in table
    assert sum(line.startswith("cell,") for line in table.splitlines()) == 2 * len(VARIANTS)
    # the captions of report/captions/ and the categories of the rules
    for text in ("Tables", "Figures", "Study table", "minimum detectable difference"):
        assert text in page, text
