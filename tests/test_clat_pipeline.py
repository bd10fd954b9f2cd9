"""CLAT as pipeline studies: DAG sizes of every CLAT study (dry runs), chained "X + CLAT" runs
shared across studies, config errors of chains, the CLAT evaluation protocol, the transfer and
criticality steps on tiny models, the derived table rows, and (slow) a micro workflow run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from robustft import plan
from robustft.contracts import ClatProtocol
from tests.conftest import write_tiny_dataset
from tests.test_workflow import job_counts, snakemake, workflow_copy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg():
    return plan.load_config(ROOT / "config.yaml")


@pytest.fixture(scope="module")
def paper_wf(tmp_path_factory):
    return workflow_copy(tmp_path_factory.mktemp("clat"))


# --- DAG sizes -------------------------------------------------------------------------------
# train = the study's runs + the X-pre50 (or X) runs its chained variants start from
CLAT_STUDIES = {
    "clat_demo": {"prepare_data": 1, "train": 6, "evaluate": 4},
    "clat_table1_wrn70_16": {
        "prepare_data": 2,
        "fetch_robustbench": 3,
        "as_is": 9,
        "train": 9,
        "evaluate": 18,
    },
    # RN50/DN121/VGG19: 2 variants (3 jobs); RN18: 16 variants + 5 pre-trainings;
    # WRN34-10: 7 + 2; PreAct RN18: 3 (Fast-AT + CLAT starts from the Fast-AT run) — × 2 × 3
    "clat_table1": {"prepare_data": 2, "train": 252, "evaluate": 192},
    # 4 backbones → 6 pairs × 2 variants × 2 datasets × 3 seeds
    "clat_table2": {"prepare_data": 2, "train": 72, "evaluate": 48, "transfer": 72},
    "clat_table3": {"prepare_data": 2, "train": 60, "evaluate": 30},
    "clat_table4": {"prepare_data": 1, "train": 24, "evaluate": 18},
    "clat_table5": {"prepare_data": 1, "train": 27, "evaluate": 18},
    "clat_table10": {"prepare_data": 1, "train": 27, "evaluate": 18},
    "clat_table6": {"prepare_data": 1, "train": 30, "evaluate": 15},
    "clat_table7": {"prepare_data": 2, "train": 12, "evaluate": 6, "criticality": 6},
    "clat_table8": {"prepare_data": 2, "train": 90, "evaluate": 60},
    # 5 backbones × (standard-pre50 + standard+clat) × 3 seeds
    "clat_table9": {"prepare_data": 1, "train": 30, "evaluate": 15},
    # WRN70-16 on the large-GPU fidelity (issue 11): Table 3 — pre50 + CLAT × 2 datasets × 3;
    # Table 6 — the same on CIFAR-10; Table 8 — PGD-AT, pre50, CLAT × 2 × 3; Figure 3 — pre50 +
    # five k × 3; Table 9 — standard-pre50 + CLAT × 3
    "clat_table3_wrn70_16": {"prepare_data": 2, "train": 12, "evaluate": 6},
    "clat_table6_wrn70_16": {"prepare_data": 1, "train": 6, "evaluate": 3},
    "clat_table8_wrn70_16": {"prepare_data": 2, "train": 18, "evaluate": 12},
    "clat_figure3_wrn70_16": {"prepare_data": 1, "train": 18, "evaluate": 15},
    "clat_table9_wrn70_16": {"prepare_data": 1, "train": 6, "evaluate": 3},
    "clat_figure2": {"prepare_data": 2, "train": 66, "evaluate": 36},
    "clat_figure3": {"prepare_data": 1, "train": 36, "evaluate": 30},
    "clat_figure4": {"prepare_data": 1, "train": 45, "evaluate": 30},
}


def test_every_clat_study_is_tested(cfg):
    assert {s for s in cfg["studies"] if s.startswith("clat")} == set(CLAT_STUDIES)


@pytest.mark.parametrize("study", sorted(CLAT_STUDIES))
def test_clat_study_sizes_without_snakemake(cfg, study):
    expected = CLAT_STUDIES[study]
    assert len(plan.all_training_runs(cfg, [study])) == expected["train"]
    assert len(plan.study_runs(cfg, study)) == expected["evaluate"]
    assert len(plan.transfer_pairs(cfg, study)) == expected.get("transfer", 0)
    assert len(plan.criticality_runs(cfg, study)) == expected.get("criticality", 0)


@pytest.mark.parametrize("study", sorted(CLAT_STUDIES))
def test_clat_study_dag(paper_wf, study):
    out = snakemake(paper_wf, "-n", "--quiet", "rules", "--config", f"targets=[{study}]").stdout
    assert job_counts(out) == {**CLAT_STUDIES[study], "aggregate": 1, "render_report": 1, "all": 1}


def test_chained_runs_share_the_pretraining_job_across_studies(paper_wf, cfg):
    studies = ["clat_table1", "clat_table4", "clat_table5", "clat_table8"]
    out = snakemake(paper_wf, "-n", "--config", f"targets=[{','.join(studies)}]").stdout
    counts = job_counts(out)
    # Table 1 (252) + Table 4's CLAT(ND) (RN50, DN121 × 3 seeds) + Table 5's random-layer CLAT
    # (DN121, RN50, RN18 × 3); Table 8 only re-uses Table 1's runs and their pre-trainings
    assert counts["train"] == 252 + 6 + 9 == len(plan.all_training_runs(cfg, studies))
    pre = "results/runs/clat_paper/cifar10_32/cifar_rn50/pgd_at-pre50/seed0/model_best.pt"
    producing = [
        block
        for block in out.split("\n\n")
        if "rule train:" in block and f"output: {pre}" in block.replace("\n   ", " ")
    ]
    assert len(producing) == 1
    # ...and it is the `backbone` input of each chained variant that starts from it
    for variant in ("pgd_at+clat", "pgd_at+clat_nd", "pgd_at+clat_random"):
        run = plan.Run("clat_paper", "cifar10_32", "cifar_rn50", variant, 0)
        assert plan.backbone_input(cfg, run) == pre
        assert plan.train_settings(cfg, run).init_from == "model"


def test_demo_and_clat_demo_together(paper_wf):
    out = snakemake(
        paper_wf, "-n", "--quiet", "rules", "--config", "targets=[demo,clat_demo]"
    ).stdout
    counts = job_counts(out)
    assert counts["train"] == 6 + 6 and counts["evaluate"] == 6 + 4
    assert counts["aggregate"] == 2 and counts["pretrain_backbone"] == 1


def test_clat_demo_is_not_a_default_target(cfg):
    assert "clat_demo" not in cfg["targets"]


# --- resolution ------------------------------------------------------------------------------
def test_chain_settings_follow_the_clat_protocol(cfg):
    run = plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "pgd_at+clat", 1)
    up = plan.upstream_run(cfg, run)
    assert up == plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "pgd_at-pre50", 1)
    pre, clat = plan.train_settings(cfg, up), plan.train_settings(cfg, run)
    # one cosine over 100 epochs: epochs 0-49 in the first job, 50-99 in the second (spec A8)
    assert pre.epochs == 50 and pre.selection == "last"
    assert pre.lr_schedule == {"type": "cosine", "total_epochs": 100}
    assert clat.epochs == 50 and clat.lr_schedule == {
        "type": "cosine",
        "total_epochs": 100,
        "offset": 50,
    }
    for s in (pre, clat):
        assert s.lr == 0.1 and s.weight_decay == 5e-4 and s.batch_size == 128
        assert s.train_attack == {"eps": 0.03, "step": 0.007, "steps": 10, "random_start": True}
        assert s.input_size is None and s.arch == "cifar_resnet18"
    assert pre.init_from == "backbone" and plan.backbone_input(cfg, up) is None  # scratch
    assert plan.run_chain(cfg, run) == [up, run]
    baseline = plan.train_settings(
        cfg, plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "pgd_at", 1)
    )
    assert baseline.epochs == 100  # the equal-budget PGD-AT row (spec A13)
    rift = plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "pgd_at+rift", 0)
    assert plan.upstream_run(cfg, rift).variant == "pgd_at"
    assert plan.train_settings(cfg, rift).selection == "val_nat"


def test_printed_method_names_follow_the_chain(cfg):
    spec = plan.aggregate_spec(cfg, "clat_table1")
    methods = {v: s["method"] for v, s in spec.variants.items()}
    assert methods["pgd_at+clat"] == "PGD-AT+CLAT"
    assert methods["at-awp+clat"] == "AWP+CLAT" and methods["at-awp+rift"] == "AWP+RiFT"
    assert methods["fast_at+clat_fast"] == "Fast-AT+CLAT(Fast)"
    assert methods["pgd_at+lora"] == "PGD-AT+LoRA"
    assert spec.paper["backbones"]["cifar_preact_rn18"] == "PreactRN18"
    assert spec.paper["datasets"] == {"cifar10_32": "CIFAR-10", "cifar100_32": "CIFAR-100"}
    assert {"ours": "mart+clat", "baseline": "mart"} in spec.comparisons
    t5 = plan.aggregate_spec(cfg, "clat_table5").variants
    assert t5["pgd_at+clat_random"] == {"method": "PGD-AT+CLAT", "labels": {"layers": "random"}}
    assert t5["pgd_at+clat"]["labels"] == {"layers": "critical"}
    assert (
        plan.aggregate_spec(cfg, "clat_table4").variants["pgd_at+clat_nd"]["method"]
        == "PGD-AT+CLAT(ND)"
    )
    t6 = plan.aggregate_spec(cfg, "clat_table6")
    assert t6.paper["datasets"] == {"cifar10_32": ""}
    assert t6.variants["pgd_at+clat"]["method"] == "CLAT"


def test_eval_settings_carry_the_clat_protocol(cfg):
    run = plan.Run("clat_paper", "cifar100_32", "cifar_vgg19", "pgd_at", 2)
    s = plan.eval_settings(cfg, run, autoattack=True)
    assert s.protocol.protocol == "clat" and s.protocol.restarts >= 10
    assert s.protocol.attack == {"eps": 0.03, "step": 0.007, "steps": 10, "random_start": True}
    assert s.protocol.apgd_ce and s.autoattack_eps == 0.03
    autolora = plan.eval_settings(
        cfg, plan.Run("paper", "dtd", "resnet18_eps4", "autolora", 0), autoattack=True
    )
    assert autolora.protocol is None  # AutoLoRa studies evaluate as before
    assert "protocol" not in autolora.to_dict()


def _synthetic_rows(cfg, study):
    """What the aggregate step would see for a study, with made-up numbers."""
    from robustft.clat import tables as clat_tables
    from robustft.tables.records import RunRecord

    spec = plan.aggregate_spec(cfg, study)
    log = {**{f"clat_top{k}": [float(k)] for k in range(1, 6)}, "clat_trainable_params": [9.0]}
    rows = []
    for run in plan.study_runs(cfg, study):
        v = spec.variants[run.variant]
        metrics = {m: {"accuracy": 0.5, "n": 10} for m in ("SA", "PGD10", "APGD_CE", "AA")}
        if "trainable_params" in spec.derived:
            metrics.update(
                PARAMS={"value": 9, "unit": "count"},
                PARAMS_TOTAL={"value": 90, "unit": "count"},
                PARAMS_PCT={"value": 10, "unit": "percent"},
            )
        rows.append(
            RunRecord(
                dataset=run.dataset,
                backbone=run.backbone,
                method=v["method"],
                variant=run.variant,
                seed=run.seed,
                labels=v["labels"],
                metrics=metrics,
                train_log=log,
            )
        )
    if "top5_criticality" in spec.derived:
        rows += clat_tables.top5_records(rows)
    for p in plan.transfer_pairs(cfg, study):
        for src, tgt in ((p.first, p.second), (p.second, p.first)):
            rows.append(
                RunRecord(
                    dataset=p.dataset,
                    backbone=tgt,
                    method=spec.variants[p.variant]["method"],
                    variant=f"{p.variant}<{src}",
                    seed=p.seed,
                    labels={"attacker": clat_tables._printed(spec.to_dict(), src)},
                    metrics={"BB": {"accuracy": 0.5, "n": 1}},
                )
            )
    for run in plan.criticality_runs(cfg, study):
        for bs in (10, 30, 50, 100):
            rows.append(
                RunRecord(
                    dataset=run.dataset,
                    backbone=run.backbone,
                    method="CLAT",
                    variant=f"v@{bs}",
                    seed=run.seed,
                    labels={"batch_size": bs},
                    metrics={"TIME_S": {"value": 1.0, "unit": "seconds"}},
                )
            )
            rows += [
                RunRecord(
                    dataset=run.dataset,
                    backbone=run.backbone,
                    method="CLAT",
                    variant=f"v@{bs};{k}",
                    seed=run.seed,
                    labels={"batch_size": bs, "position": k},
                    metrics={"CRIT": {"value": 1.0, "unit": "layer_index"}},
                )
                for k in range(1, 6)
            ]
    if spec.metrics:
        rows = [r for r in rows if set(spec.metrics) & set(r.metrics)]
    return spec, rows


@pytest.mark.parametrize(
    "study, printed",
    [
        # Table 1: clean + adv of every reproduced row (SCORE, WRN70-16 are not reproduced)
        ("clat_table1", {"SA", "PGD10"}),
        ("clat_table2", {"BB"}),
        ("clat_table3", {"CRIT"}),
        ("clat_table4", {"PGD10"}),
        ("clat_table5", {"SA", "PGD10"}),
        ("clat_table10", {"SA", "PGD10"}),
        ("clat_table6", {"PARAMS", "PARAMS_TOTAL", "PARAMS_PCT"}),
        ("clat_table7", {"CRIT", "TIME_S"}),
        ("clat_table8", {"APGD_CE"}),
    ],
)
def test_every_reproduced_cell_finds_its_paper_value(cfg, study, printed):
    from robustft.tables.assemble import aggregate_study

    spec, rows = _synthetic_rows(cfg, study)
    cells = aggregate_study(study, rows, spec.comparisons, spec.paper, metrics=spec.metrics).cells
    wanted = cells[cells.metric.isin(printed)]
    assert len(wanted) and wanted.paper_value.notna().all(), wanted[wanted.paper_value.isna()][
        ["backbone", "dataset", "method", "labels", "metric"]
    ]
    assert cells[~cells.metric.isin(printed)].paper_value.isna().all()


# --- config errors -----------------------------------------------------------------------------
def broken(cfg, mutate):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    return bad


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c["variants"]["pgd_at+clat"].update(init="pgd_at-pre60"),
            "config key 'variants.pgd_at+clat.init': unknown variant 'pgd_at-pre60'",
        ),
        (
            lambda c: c["variants"]["pgd_at-pre50"].update(init="pgd_at+clat"),
            (
                "config key 'variants.pgd_at-pre50.init': the init chain loops "
                "(pgd_at-pre50 → pgd_at+clat → pgd_at-pre50)"
            ),
        ),
        (
            lambda c: c["variants"].update(selfish={"method": "clat", "init": "selfish"}),
            "config key 'variants.selfish.init': the init chain loops (selfish → selfish)",
        ),
        (
            lambda c: c["variants"]["pgd_at+clat"].update(training={"init_from": "backbone"}),
            "config key 'variants.pgd_at+clat.training.init_from'",
        ),
        (
            lambda c: c["variants"]["pgd_at+clat"].update(init=3),
            "config key 'variants.pgd_at+clat.init'",
        ),
        (
            lambda c: c["studies"]["clat_table4"].update(datasets=["cifar10"]),
            "config key 'studies.clat_table4.datasets[0]': dataset 'cifar10' is upsampled to 224",
        ),
        (
            lambda c: c["studies"]["clat_table2"].update(backbones=["cifar_rn18"]),
            "config key 'studies.clat_table2.transfer'",
        ),
        (
            lambda c: c["studies"]["clat_table8"].update(metrics=["APGD"]),
            "config key 'studies.clat_table8.metrics[0]': unknown metric 'APGD'",
        ),
        (
            lambda c: c["studies"]["clat_table1"]["grids"][1].update(variants=["pgd_at", "sam"]),
            "config key 'studies.clat_table1.grids[1].variants[1]': unknown variant 'sam'",
        ),
        (
            lambda c: c["studies"]["clat_table7"].update(variants=["pgd_at"]),
            "config key 'studies.clat_table7.criticality'",
        ),
        (
            lambda c: c["backbones"]["cifar_rn18"].update(eps_pt=4),
            "config key 'backbones.cifar_rn18.eps_pt'",
        ),
    ],
)
def test_bad_clat_config_names_the_key(cfg, mutate, message):
    with pytest.raises(plan.ConfigError) as err:
        plan.validate(broken(cfg, mutate))
    assert message in str(err.value)


def test_init_from_model_without_upstream_is_an_error(cfg):
    bad = broken(
        cfg,
        lambda c: c["variants"].update(
            lonely={"method": "clat", "training": {"init_from": "model"}}
        ),
    )
    with pytest.raises(plan.ConfigError, match="variants.lonely.init"):
        plan.train_settings(
            plan.validate(bad), plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "lonely", 0)
        )


def test_bad_init_stops_the_workflow_before_any_job(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["variants"]["pgd_at-pre50"]["init"] = "pgd_at+clat"
    config["targets"] = ["clat_table4"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    wd = workflow_copy(tmp_path, path)
    result = snakemake(wd, "-n", check=False)
    assert result.returncode != 0
    assert "the init chain loops" in result.stdout + result.stderr
    assert not (wd / "results").exists()


# --- steps on tiny models ------------------------------------------------------------------
def _tiny_model(tmp: Path, arch: str, seed: int, data: Path) -> tuple[Path, dict]:
    from robustft.batches import num_classes
    from robustft.models import build_model

    torch.manual_seed(seed)
    settings = {
        "arch": arch,
        "width": 2,
        "input_size": None,
        "method": "pgd_at",
        "method_params": {},
    }
    model = build_model(arch, num_classes(data), width=2)
    path = tmp / f"{arch}-{seed}.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path, settings


@pytest.fixture
def tiny32(tmp_path):
    return write_tiny_dataset(tmp_path / "data", res=32)


def test_transfer_step_on_two_tiny_models(tmp_path, tiny32):
    from robustft.attacks import PGDConfig
    from robustft.batches import load_split
    from robustft.clat.protocol import transfer_accuracy
    from robustft.evaluate import load_trained
    from robustft.steps import transfer
    from robustft.steps.aggregate import main as aggregate

    a, sa = _tiny_model(tmp_path, "cifar_resnet18", 0, tiny32)
    b, sb = _tiny_model(tmp_path, "cifar_vgg19", 1, tiny32)
    attack = {"eps": 0.03, "step": 0.007, "steps": 3, "random_start": True}
    settings = {
        "models": {"cifar_rn18": sa, "cifar_vgg19": sb},
        "attack": attack,
        "examples": None,
        "batch_size": 8,
        "seed": 0,
        "device": "cpu",
        "identity": {
            "fidelity": "f",
            "dataset": "tiny",
            "variant": "pgd_at",
            "seed": 0,
            "backbones": ["cifar_rn18", "cifar_vgg19"],
        },
    }
    out = tmp_path / "transfer" / "pair.json"
    transfer.main(
        [
            "--settings",
            json.dumps(settings),
            "--data",
            str(tiny32),
            "--models",
            f"cifar_rn18={a}",
            f"cifar_vgg19={b}",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    matrix = result["matrix"]
    assert set(matrix) == {"cifar_rn18", "cifar_vgg19"}
    assert all(0.0 <= v <= 1.0 for row in matrix.values() for v in row.values())
    assert result["n"] == 12 and result["identity"]["variant"] == "pgd_at"
    # one direction recomputed independently
    x, y = load_split(tiny32, "test").tensors()
    ma, mb = (load_trained(s, p, tiny32, torch.device("cpu")) for s, p in ((sa, a), (sb, b)))
    assert matrix["cifar_rn18"]["cifar_vgg19"] == pytest.approx(
        transfer_accuracy(ma, mb, x, y, attack=PGDConfig(**attack), seed=0, batch_size=8)
    )

    # the aggregation turns the pair into one row per (victim, attacker) with the paper value
    run_dir = tmp_path / "runs" / "tiny" / "cifar_rn18" / "pgd_at" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "eval.json").write_text(json.dumps({"metrics": {"SA": {"accuracy": 0.5, "n": 12}}}))
    spec = {
        "variants": {"pgd_at": {"method": "PGD-AT", "labels": {}}},
        "metrics": ["BB"],
        "paper": {
            "paper": "CLAT",
            "table": 2,
            "datasets": {"tiny": "CIFAR-10"},
            "backbones": {"cifar_rn18": "RN18", "cifar_vgg19": "VGG19"},
        },
    }
    csv_path, json_path = tmp_path / "t2.csv", tmp_path / "t2.json"
    aggregate(
        [
            "--study",
            "t2",
            "--runs",
            str(run_dir),
            "--spec",
            json.dumps(spec),
            "--transfers",
            str(out),
            "--out-csv",
            str(csv_path),
            "--out-json",
            str(json_path),
        ]
    )
    cells = {(c["backbone"], c["labels"]): c for c in json.loads(json_path.read_text())["cells"]}
    assert len(cells) == 2  # the run's own row (no BB) is left out
    victim_rn18 = cells[("cifar_rn18", json.dumps({"attacker": "VGG19"}))]
    assert victim_rn18["mean"] == pytest.approx(100 * matrix["cifar_vgg19"]["cifar_rn18"])
    assert victim_rn18["paper_value"] == 62.26  # CLAT Table 2: RN18 victim of VGG19, PGD-AT


def test_criticality_step_and_derived_rows(tmp_path, tiny32):
    from robustft.clat import tables as clat_tables
    from robustft.steps import criticality
    from robustft.tables.assemble import aggregate_study
    from robustft.tables.records import load_run_record

    model, ms = _tiny_model(tmp_path, "cifar_resnet18", 0, tiny32)
    log = tmp_path / "train_log.csv"
    log.write_text("epoch,seconds\n0,2.0\n1,4.0\n")
    settings = {
        "model": ms,
        "measured_run": "f/tiny/cifar_rn18/pgd_at-pre50/seed0",
        "measured_variant": "pgd_at-pre50",
        "measured_method": "PGD-AT",
        "identity": {
            "fidelity": "f",
            "dataset": "tiny",
            "backbone": "cifar_rn18",
            "variant": "pgd_at+clat",
            "seed": 0,
        },
        "clat_method": "clat",
        "clat_params": {},
        "train_attack": {"eps": 0.03, "step": 0.007, "steps": 2, "random_start": True},
        "batch_sizes": [10, 30],
        "repeats": 2,
        "seed": 0,
        "device": "cpu",
    }
    out = tmp_path / "crit.json"
    criticality.main(
        [
            "--settings",
            json.dumps(settings),
            "--data",
            str(tiny32),
            "--model",
            str(model),
            "--train-log",
            str(log),
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert [r["batch_size"] for r in result["results"]] == [10, 30]
    for r in result["results"]:
        assert len(r["top5"]) == 5 and len(r["draws"]) == 2 and r["seconds"] > 0
        assert len(r["names"]) == 17  # RN18 without the final linear (A14)
        assert all(1 <= i <= 17 for i in r["top5"])
    assert result["reference_epoch_seconds"] == pytest.approx(3.0)
    spec = {"variants": {"pgd_at+clat": {"method": "CLAT"}}, "paper": {"paper": "CLAT", "table": 7}}
    rows = clat_tables.criticality_records([out], spec)
    assert len(rows) == 2 * (1 + 5) + 1
    tables = aggregate_study(
        "t7",
        rows,
        paper_ref={
            "paper": "CLAT",
            "table": 7,
            "datasets": {"tiny": "CIFAR-10"},
            "backbones": {"cifar_rn18": "DN121"},
        },
    )
    cells = tables.cells.set_index(["variant", "metric"])
    first = cells.loc[("pgd_at+clat@batch_size=10;position=1", "CRIT")]
    assert first["mean"] == result["results"][0]["top5"][0]  # a layer index, not × 100
    assert first["paper_value"] == 39  # Table 7, DN121 CIFAR-10, batch 10, position 1
    assert cells.loc[("pgd_at+clat@batch_size=30", "TIME_S")]["paper_value"] == 2.72
    assert cells.loc[("pgd_at-pre50@epoch", "EPOCH_S")]["mean"] == pytest.approx(3.0)

    # Tables 3 and 6 from a CLAT run's log and model
    run_dir = tmp_path / "runs" / "tiny" / "cifar_rn18" / "pgd_at+clat" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "eval.json").write_text(json.dumps({"metrics": {"SA": {"accuracy": 0.5, "n": 12}}}))
    (run_dir / "model_best.pt").write_bytes(model.read_bytes())
    (run_dir / "train_log.csv").write_text(
        "epoch,clat_top1,clat_top2,clat_top3,clat_top4,clat_top5,clat_trainable_params\n"
        "0,11,10,4,2,12,2308\n1,,,,,,2308\n10,12,11,4,2,10,2308\n"
    )
    run = load_run_record(run_dir)
    run.method = "CLAT"
    top = clat_tables.top5_records([run])
    assert [r.metrics["CRIT"]["value"] for r in top] == [11, 10, 4, 2, 12]  # first selection
    assert top[0].labels == {"position": 1}
    clat_tables.add_parameter_counts([run])
    total = clat_tables.parameter_count(run_dir / "model_best.pt")
    from robustft.models import build_model

    net = build_model("cifar_resnet18", 3, width=2)
    assert total == sum(p.numel() for p in net.parameters())
    assert run.metrics["PARAMS"]["value"] == 2308
    assert run.metrics["PARAMS_PCT"]["value"] == pytest.approx(100 * 2308 / total)


def test_evaluate_run_with_the_clat_protocol(tmp_path, tiny32):
    from robustft.evaluate import evaluate_run

    model, ms = _tiny_model(tmp_path, "cifar_resnet18", 0, tiny32)
    protocol = {
        **ClatProtocol().to_dict(),
        "restarts": 3,
        "apgd_ce_iterations": 5,
        "epsilons": [0.0, 0.03],
    }
    settings = {
        **ms,
        "eval_attack": protocol["attack"],
        "autoattack": False,
        "batch_size": 8,
        "seed": 0,
        "device": "cpu",
        "protocol": protocol,
    }
    result = evaluate_run(settings, model, tiny32)
    m = result["metrics"]
    assert set(m) == {"SA", "PGD10", "PGD10_worst", "APGD_CE", "PGD_eps0", "PGD_eps0.03"}
    assert m["PGD10"]["accuracy"] == min(m["PGD10"]["accuracies"])
    assert m["PGD10_worst"]["accuracy"] <= m["PGD10"]["accuracy"] <= m["SA"]["accuracy"]
    assert m["PGD_eps0"]["accuracy"] == m["SA"]["accuracy"]
    assert len(result["per_example"]["PGD10"]) == m["SA"]["n"] == 12


# --- a whole CLAT workflow at micro scale -----------------------------------------------------
@pytest.mark.slow
def test_micro_clat_workflow(tmp_path):
    """Scratch networks, a chained PGD-AT + CLAT, the transfer and criticality jobs and the
    derived rows, end to end through Snakemake (about two minutes on two cores)."""
    wd = workflow_copy(tmp_path, ROOT / "tests" / "workflow_clat_micro.yaml")
    snakemake(wd)
    t1 = json.loads((wd / "results" / "tables" / "micro_clat.json").read_text())
    methods = {c["method"] for c in t1["cells"]}
    assert {"PGD-AT", "PGD-AT+CLAT"} <= methods
    assert {c["metric"] for c in t1["cells"]} >= {"SA", "PGD10", "BB"}
    assert any(c["paper_source"] == "CLAT Table 1" for c in t1["cells"])
    tables = json.loads((wd / "results" / "tables" / "micro_tables.json").read_text())
    assert {c["metric"] for c in tables["cells"]} == {
        "CRIT",
        "TIME_S",
        "EPOCH_S",
        "PARAMS",
        "PARAMS_TOTAL",
        "PARAMS_PCT",
    }
    report = (wd / "results" / "report" / "index.html").read_text()
    assert "PGD-AT+CLAT" in report
    # the CLAT run started from the pre-training run's model, head included
    run = wd / "results" / "runs" / "micro" / "tex" / "a" / "pgd_at+clat" / "seed0"
    meta = yaml.safe_load((run / "run.yaml").read_text())
    assert meta["backbone_file"].endswith("pgd_at-pre1/seed0/model_best.pt")
    assert meta["settings"]["init_from"] == "model"
    assert "Nothing to be done" in snakemake(wd, "-n").stdout
