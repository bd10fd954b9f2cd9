"""The cost planner (robustft.plan.cost, robustft plan): its arithmetic on a hand-made throughput
table, the runtime requests it sets (and the explicit override), the command's output, and the
summary a dry run prints next to unchanged job counts. Torch-free."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustft.contracts import TrainConfig
from robustft.plan import Plan, cost, load_config
from robustft.plan.cli import is_dry_run
from robustft.plan.cli import main as plan_main
from robustft.plan.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "micro_config.yaml"

#: hand-made: 1,000 img/s for a plain step at 32 px; a PGD-AT entry of 11 passes at 100 img/s
TABLE = {
    "source": "hand-made for tests",
    "device": "imaginary GPU",
    "entries": [
        {"arch": "net", "input_size": 32, "precision": "fp32", "passes": 1, "images_per_s": 1000},
        {"arch": "net", "input_size": 32, "precision": "fp32", "passes": 11,
         "images_per_s": 200, "method": "pgd_at", "source": "measured pgd_at"},
        {"arch": "net", "input_size": 224, "precision": "bf16", "passes": 1, "images_per_s": 49},
    ],
}  # fmt: skip


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(TABLE))
    return cost.load_table(path)


def test_lookup_scales_by_pixels_and_passes_and_prefers_the_method(table):
    plain = table.lookup("net", 64, "fp32")  # 1000 img/s x 1 pass x (32/64)^2
    assert plain.passes_per_s == pytest.approx(250)
    assert plain.entry.method is None
    pgd = table.lookup("net", 32, "fp32", method="pgd_at", passes=11)
    assert pgd.passes_per_s == pytest.approx(2200) and pgd.entry.source == "measured pgd_at"
    assert table.lookup("net", 32, "bf16").passes_per_s == pytest.approx(49 * 49)  # (224/32)^2


def test_an_arch_the_table_lacks_falls_back_to_the_default_table_or_is_named(table):
    r18 = table.lookup("resnet18", 224, "fp32")  # from the shipped public-figure table
    assert r18.table.path.startswith("(default)") and r18.entry.source.startswith("estimate")
    with pytest.raises(ConfigError, match="no entry for arch 'nonet'"):
        table.lookup("nonet", 32, "fp32")


def test_a_bad_table_names_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"entries": [{"arch": "net", "input_size": 32}]}))
    with pytest.raises(ConfigError, match="needs the keys"):
        cost.load_table(bad)


def test_the_default_table_cites_a_source_for_every_entry():
    table = cost.load_table()
    assert table.entries and all(
        e.source.startswith(("public:", "estimate:")) for e in table.entries
    )


def test_step_passes_follow_the_methods():
    assert cost.step_passes("pgd_at", 10) == 11  # PGD-10 + the update
    assert cost.step_passes("vanilla_rft", 10) == 12  # + clean and adversarial update passes
    assert cost.step_passes("fast_at", 10) == 2  # one FGSM step whatever `steps` says
    assert cost.step_passes("twins", 10, {"loss": "paper"}) == 14  # both BN branches
    assert cost.step_passes("twins", 10, {"loss": "official"}) == 12  # half batch each
    with pytest.raises(ConfigError, match="no pass count for method 'nope'"):
        cost.step_passes("nope", 10)


def test_train_passes_by_hand():
    train = TrainConfig(
        run_name="r", method="pgd_at", arch="net", seed=0, epochs=2,
        train_attack={"steps": 3}, eval_attack={"steps": 5}, test_examples=20,
    )  # fmt: skip
    # per epoch: 100 images x (3 + 1) + (10 val + 20 test) x (5 + 2/3) evaluation passes
    assert cost.train_passes(train, (100, 10, 1000)) == pytest.approx(2 * (400 + 30 * 17 / 3))


def test_wall_time_packs_each_level_longest_first():
    jobs = [cost.JobCost("train", f"t{i}", 0, s, 0, "") for i, s in enumerate([3, 3, 2, 2, 2])]
    jobs.append(cost.JobCost("evaluate", "e", 0, 1, 1, ""))
    # level 0 on 2 GPUs: 3|3, 2 -> 5|3, 2 -> 5|5, 2 -> 7|5 = 7; level 1: 1
    assert cost.wall_seconds(jobs, 2) == 8
    assert cost.wall_seconds(jobs, 5) == 4
    assert cost.wall_seconds(jobs, 1) == 13


def test_runtime_request_is_margin_times_estimate_plus_floor():
    assert cost.runtime_minutes(3600, 1.5, 30) == 90 + 30
    assert cost.runtime_minutes(3600, 1.5, 30, jobs_per_gpu=2) == 180 + 30
    assert cost.runtime_minutes(1, 1.5, 30) == 1 + 30


# --- the plan of a micro config -----------------------------------------------------------------
def micro_plan(tmp_path, explicit_runtime: bool, **fidelity) -> Plan:
    """The micro study with a table that prices resnet_mini at 16 px at 1 pass per second."""
    path = tmp_path / "mini.yaml"
    entry = {"arch": "resnet_mini", "input_size": 16, "precision": "fp32", "passes": 1}
    path.write_text(yaml.safe_dump({"entries": [{**entry, "images_per_s": 1.0}]}))
    config = copy.deepcopy(load_config(MICRO))
    config["cost"] = {"throughput_table": str(path), "margin": 2.0, "floor_minutes": 5}
    fid = config["fidelities"]["micro"]
    fid.update(fidelity)
    if not explicit_runtime:
        del fid["train_resources"]["runtime"], fid["eval_resources"]["runtime"]
    return Plan(config)


def test_runtime_comes_from_the_estimate_unless_the_fidelity_sets_it(tmp_path):
    plan = micro_plan(tmp_path, explicit_runtime=False)
    run = plan.study_runs("micro")[0]
    train = plan.train_cost(run)
    assert train.seconds == pytest.approx(train.passes)  # 1 pass/s
    expected = -(-train.passes * 2.0 // 60) + 5  # ceil(s × margin / 60) + floor
    assert plan.resources("micro", "train_resources", run)["runtime"] == expected
    evaluation = plan.eval_cost(run).seconds
    assert (
        plan.resources("micro", "eval_resources", run)["runtime"] == -(-evaluation * 2.0 // 60) + 5
    )
    shared = micro_plan(tmp_path, explicit_runtime=False, jobs_per_gpu=3)
    assert (
        shared.resources("micro", "train_resources", run)["runtime"]
        == -(-train.passes * 3 * 2.0 // 60) + 5
    )
    # the explicit runtime of config.yaml wins
    assert micro_plan(tmp_path, True).resources("micro", "train_resources", run)["runtime"] == 10


def test_a_study_lists_its_jobs_with_levels(tmp_path):
    plan = micro_plan(tmp_path, explicit_runtime=True)
    jobs = plan.study_jobs("micro")
    assert sorted(j.kind for j in jobs) == ["evaluate"] * 4 + ["train"] * 4
    assert {j.level for j in jobs if j.kind == "train"} == {0}
    assert {j.level for j in jobs if j.kind == "evaluate"} == {1}


def test_the_command_prints_counts_hours_and_the_source(tmp_path, capsys):
    plan = micro_plan(tmp_path, explicit_runtime=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(plan.config))
    assert plan_main(["--config", str(config), "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    hours = sum(j.seconds for j in plan.study_jobs("micro")) / 3600
    assert re.search(rf"^micro\s+4\s+4\s+0\s+{hours:.1f}\s", out, re.MULTILINE), out
    assert "on 2 GPU(s)" in out and str(tmp_path / "mini.yaml") in out
    assert plan_main(["--config", str(config), "--targets", "nope"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err


def test_dry_run_flags_are_recognised():
    assert is_dry_run(["snakemake", "-n"]) and is_dry_run(["snakemake", "-np", "--cores", "1"])
    assert is_dry_run(["snakemake", "--dry-run"])
    assert not is_dry_run(["snakemake", "--cores", "2", "-j4", "--config", "targets=[-n]"])


def test_the_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'robustft = "robustft.cli:main"' in text
    out = subprocess.run(
        [sys.executable, "-m", "robustft.cli", "plan", "--help"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "--throughput" in out.stdout


def test_a_missing_throughput_table_stops_the_plan_at_once(tmp_path):
    config = copy.deepcopy(load_config(MICRO))
    config["cost"] = {"throughput_table": str(tmp_path / "absent.yaml")}
    with pytest.raises(ConfigError, match="cannot read throughput table .*absent.yaml"):
        Plan(config)


def test_a_dry_run_prints_the_cost_next_to_unchanged_job_counts(tmp_path):
    """`snakemake -n` on the micro study: the summary's counts are the DAG's; runtime requests
    come from the estimate once the fidelity drops its explicit runtime."""
    plan = micro_plan(tmp_path, explicit_runtime=False, jobs_per_gpu=2)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(plan.config))
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile",
         str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(config),
         "--replace-workflow-config"],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout, flags=re.MULTILINE))
    assert stats["train"] == "4" and stats["evaluate"] == "4"
    assert re.search(r"^micro\s+4\s+4\s+0\s", out.stderr, re.MULTILINE), out.stderr
    assert "fidelity micro: 2 jobs per GPU" in out.stderr
    run = plan.study_runs("micro")[0]
    want = plan.resources("micro", "train_resources", run)["runtime"]
    label = "wildcards: " + ", ".join(f"{k}={v}" for k, v in run.wildcards.items())
    (block,) = [
        b
        for b in re.split(r"^\[.*\]$", out.stdout, flags=re.MULTILINE)  # one job per block
        if b.lstrip().startswith("rule train:") and label in b
    ]
    assert re.search(rf"\bruntime={want}\b", block), block
