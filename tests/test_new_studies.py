"""The studies and chains issue 11 adds: SCORE's rows of CLAT Table 1, CLAT Table 9 (CLAT on
clean-pretrained models) and Table 1's WRN70-16 rows (RobustBench zoo models as is, and + CLAT)
— dry-run job counts, the shared pre-training jobs, the paper cells each row is compared against
and the config errors of zoo backbones."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustft import plan
from robustft.plan import settings
from robustft.tables.paper import PaperRef
from robustft.tables.records import RunRecord
from tests.test_clat_pipeline import CLAT_STUDIES
from tests.test_workflow import job_counts, snakemake, workflow_copy

ROOT = Path(__file__).resolve().parents[1]

# Their job counts are in tests/test_clat_pipeline.CLAT_STUDIES (sizes and dry runs).
ZOO = "clat_table1_wrn70_16"


@pytest.fixture(scope="module")
def cfg():
    return plan.load_config(ROOT / "config.yaml")


def test_wrn70_16_studies_share_their_runs_and_ask_for_a_large_gpu(tmp_path, cfg):
    studies = [s for s in CLAT_STUDIES if s.endswith("wrn70_16")]
    wf = workflow_copy(tmp_path)
    out = snakemake(wf, "-n", "--config", f"targets=[{','.join(studies)}]").stdout
    counts = job_counts(out)
    # Table 3 ⊃ Table 6's runs; Table 8 and Figure 3 re-use Table 3's pre50 and CLAT runs:
    # pre50 (2 datasets) + CLAT (2) + PGD-AT (2) + k1, k2, k3, k5 (CIFAR-10) + clean pre50 + CLAT;
    # the zoo models: 3 fetched, 9 as-is copies, 9 CLAT trainings
    assert counts["train"] == 3 * (2 + 2 + 2 + 4 + 2) + 9
    assert counts["fetch_robustbench"] == 3 and counts["as_is"] == 9
    blocks = [b.replace("\n   ", " ") for b in out.split("\n\n")]
    zoo_run = "results/runs/clat_paper_large/cifar10_32/rb_peng_c10/peng/seed0"
    (copy,) = [b for b in blocks if "rule as_is:" in b and f"output: {zoo_run}/" in b]
    assert "input: results/backbones/rb_peng_c10.pt" in copy
    (clat,) = [b for b in blocks if "rule train:" in b and "rb_peng_c10/peng+clat/seed0/" in b]
    assert f"{zoo_run}/model_best.pt" in clat  # "Peng et al. + CLAT" starts from the zoo copy
    train = settings.resources(cfg, "clat_paper_large", "train_resources")
    assert train["gpu"] == 1 and train["mem_mb"] >= 64000 and train["runtime"] >= 48 * 60
    assert (
        plan.train_settings(
            cfg, plan.Run("clat_paper_large", "cifar10_32", "cifar_wrn70_16", "pgd_at", 0)
        ).arch
        == "cifar_wrn70_16"
    )


def test_score_rows_of_table1_chain_like_the_other_baselines(cfg):
    runs = set(plan.all_training_runs(cfg, ["clat_table1"]))
    mine = {r for r in runs if r.variant.startswith("score")}
    # RN18 only: score, score+rift, score+clat (evaluated) + score-pre50 (CLAT's start),
    # × 2 datasets × 3 seeds; score+rift fine-tunes the converged 100-epoch score run
    assert len(mine) == 4 * 2 * 3
    assert {r.backbone for r in mine} == {"cifar_rn18"}
    clat = plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "score+clat", 0)
    rift = plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "score+rift", 0)
    assert plan.upstream_run(cfg, clat).variant == "score-pre50"
    assert plan.upstream_run(cfg, rift).variant == "score"
    base = plan.train_settings(cfg, plan.Run("clat_paper", "cifar10_32", "cifar_rn18", "score", 0))
    pre = plan.train_settings(cfg, plan.upstream_run(cfg, clat))
    assert base.epochs == 100 and pre.epochs == 50  # equal budget (spec A13), 50 + 50
    assert base.method == "score"
    assert base.method_params["clip_loss"] == 0.3 and base.method_params["clip_on"] == "total"
    methods = {v: s["method"] for v, s in plan.aggregate_spec(cfg, "clat_table1").variants.items()}
    assert methods["score"] == "SCORE"
    assert methods["score+clat"] == "SCORE+CLAT" and methods["score+rift"] == "SCORE+RiFT"


@pytest.mark.parametrize(
    ("study", "backbone", "dataset", "variant", "metric", "printed"),
    [
        ("clat_table1", "cifar_rn18", "cifar10_32", "score", "SA", 84.20),
        ("clat_table1", "cifar_rn18", "cifar100_32", "score+clat", "PGD10", 30.23),
        ("clat_table1", "cifar_rn18", "cifar10_32", "score+rift", "PGD10", 54.62),
        ("clat_table9", "cifar_rn50", "cifar10_32", "standard+clat", "SA", 78.23),
        ("clat_table9", "cifar_rn50", "cifar10_32", "standard+clat", "PGD10", 35.67),
        ("clat_table9", "cifar_rn18", "cifar10_32", "standard+clat", "SA", 76.51),
        ("clat_table9", "cifar_rn18", "cifar10_32", "standard+clat", "PGD10", 34.45),
        (ZOO, "rb_peng_c10", "cifar10_32", "peng", "SA", 93.27),
        (ZOO, "rb_peng_c10", "cifar10_32", "peng+clat", "PGD10", 72.25),
        (ZOO, "rb_bai_c10", "cifar10_32", "bai", "PGD10", 64.55),
        (ZOO, "rb_bai_c100", "cifar100_32", "bai", "SA", 69.17),
        (ZOO, "rb_bai_c100", "cifar100_32", "bai+clat", "PGD10", 41.64),
    ],
)
def test_new_rows_find_their_printed_cell(cfg, study, backbone, dataset, variant, metric, printed):
    spec = plan.aggregate_spec(cfg, study)
    ref = PaperRef.coerce(spec.paper)
    row = spec.variants[variant]
    record = RunRecord(dataset, backbone, row["method"], variant, 0, labels=row["labels"])
    cell = ref.printed_cell(record, metric)
    assert cell is not None and cell.value == printed


@pytest.mark.parametrize(
    ("backbone", "metric", "explained"),
    [
        ("cifar_wrn34_10", "PARAMS", "not reproducible"),
        ("cifar_vgg19", "PARAMS_PCT", "0.60%"),
        ("cifar_dn121", "PARAMS", "not reproducible"),
        ("cifar_rn50", "PARAMS", "{34, 41, 3}"),
        ("cifar_rn18", "PARAMS", ""),  # 590K = one 256→256 conv: reproduced, nothing to say
    ],
)
def test_table6_cells_carry_the_papers_inconsistency(cfg, backbone, metric, explained):
    spec = plan.aggregate_spec(cfg, "clat_table6")
    ref = PaperRef.coerce(spec.paper)
    row = spec.variants["pgd_at+clat"]
    record = RunRecord("cifar10_32", backbone, row["method"], "pgd_at+clat", 0, labels={})
    cell = ref.printed_cell(record, metric)
    assert cell is not None
    assert (explained in cell.note) if explained else cell.note == ""
    assert cell.transcription.startswith("printed")


def test_autolora_table3_ratios_carry_the_constant_offset():
    from robustft.tables.paper import load_paper_values

    df = load_paper_values("AutoLoRa")
    ratios = df[df["metric"] == "param_ratio"]
    assert len(ratios) == 4 and ratios["note"].str.contains("0.11 points").all()
    assert (df[df["metric"] != "param_ratio"]["note"] == "").all()


# --- CLAT Table 1's WRN70-16 rows: RobustBench zoo models ----------------------------------------
def test_zoo_rows_evaluate_the_zoo_model_and_fine_tune_it_with_clat(cfg):
    zoo = plan.Run("clat_paper_large", "cifar100_32", "rb_bai_c100", "bai", 1)
    chained = plan.Run("clat_paper_large", "cifar100_32", "rb_bai_c100", "bai+clat", 1)
    assert plan.backbone_input(cfg, zoo) == "results/backbones/rb_bai_c100.pt"
    assert plan.upstream_run(cfg, chained) == zoo
    assert plan.backbone_input(cfg, chained) == zoo.file("model")
    assert plan.train_settings(cfg, zoo).epochs == 0  # nothing trained
    clat = plan.train_settings(cfg, chained)
    assert clat.arch == "robustbench.cifar100.Linf.Gowal2020Uncovering_extra"
    assert clat.init_from == "model" and clat.method_params["k"] == 4  # CLAT Sec. 4.1
    assert clat.epochs == 50  # the usual CLAT phase of the shared cosine
    # the printed rows, and Peng et al. has no CIFAR-100 run (no RobustBench checkpoint)
    methods = {v: s["method"] for v, s in plan.aggregate_spec(cfg, ZOO).variants.items()}
    assert methods == {
        "peng": "Peng et al.",
        "peng+clat": "Peng et al.+CLAT",
        "bai": "Bai et al.",
        "bai+clat": "Bai et al.+CLAT",
    }
    assert {(r.dataset, r.backbone) for r in plan.study_runs(cfg, ZOO)} == {
        ("cifar10_32", "rb_peng_c10"),
        ("cifar10_32", "rb_bai_c10"),
        ("cifar100_32", "rb_bai_c100"),
    }


def test_a_zoo_backbone_trained_directly_keeps_its_head(cfg):
    direct = plan.validate(
        {
            **cfg,
            "studies": {
                **cfg["studies"],
                "direct": {
                    "fidelity": "clat_paper_large",
                    "datasets": ["cifar10_32"],
                    "backbones": ["rb_peng_c10"],
                    "variants": ["pgd_at"],
                    "seeds": [0],
                },
            },
        }
    )
    run = plan.Run("clat_paper_large", "cifar10_32", "rb_peng_c10", "pgd_at", 0)
    assert plan.train_settings(direct, run).init_from == "model"


def test_robustft_plan_prices_the_zoo_study_without_crashing(cfg, capsys):
    from robustft.plan.cli import main

    p = plan.Plan({**cfg, "targets": [ZOO]})
    with pytest.raises(plan.ConfigError, match="robustbench.cifar10.Linf"):
        p.study_jobs(ZOO)  # no throughput entry for the zoo architectures ...
    # ... so the summary says so, and each GPU job asks for the fidelity's explicit runtime
    assert main(["--config", str(ROOT / "config.yaml"), "--targets", ZOO]) == 0
    assert "no estimate" in capsys.readouterr().out
    clat = plan.Run("clat_paper_large", "cifar10_32", "rb_peng_c10", "peng+clat", 0)
    assert p.resources("clat_paper_large", "train_resources", clat)["runtime"] == 5200
    # the as-is copies are no training job of the estimate
    zoo = plan.Run("clat_paper_large", "cifar10_32", "rb_peng_c10", "peng", 0)
    assert zoo not in plan.all_training_runs(cfg, [ZOO])


def _with(cfg, edit):
    changed = {**cfg, "backbones": dict(cfg["backbones"]), "variants": dict(cfg["variants"])}
    changed["studies"] = {k: dict(v) for k, v in cfg["studies"].items()}
    edit(changed)
    return changed


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (  # not robustbench.<dataset>.<threat>.<name>
            lambda c: c["backbones"].update(
                rb_peng_c10={"source": "robustbench", "arch": "Peng2023Robust"}
            ),
            r"backbones\.rb_peng_c10\.arch'.*robustbench\.<dataset>\.<threat model>\.<name>",
        ),
        (
            lambda c: c["backbones"].update(
                rb_peng_c10={"source": "robustbench", "arch": "robustbench.cifar10.Peng2023Robust"}
            ),
            r"backbones\.rb_peng_c10\.arch'",
        ),
        (  # a zoo model keeps its head: only its own dataset
            lambda c: c["studies"][ZOO].update(
                grids=[{"datasets": ["cifar100_32"], "backbones": ["rb_peng_c10"]}],
                variants=["peng"],
            ),
            r"studies\.clat_table1_wrn70_16\.grids\[0\]\.datasets\[0\]'.*cifar10 model",
        ),
        (  # an as-is run needs a file that describes its model
            lambda c: c["studies"][ZOO].update(
                grids=[{"datasets": ["cifar10_32"], "backbones": ["cifar_wrn70_16"]}],
                variants=["peng+clat"],
            ),
            r"grids\[0\]\.variants\[0\]'.*'peng' evaluates the backbone file.*robustbench",
        ),
        (  # as is = no training settings
            lambda c: c["variants"].update(peng={"method": "as_is", "params": {"k": 4}}),
            r"variants\.peng\.params'.*as_is",
        ),
        (
            lambda c: c["backbones"].update(
                rb_peng_c10={**c["backbones"]["rb_peng_c10"], "eps_pt": 4}
            ),
            r"backbones\.rb_peng_c10\.eps_pt'",
        ),
    ],
)
def test_zoo_config_errors_name_the_key(cfg, edit, message):
    with pytest.raises(plan.ConfigError, match=message):
        plan.validate(_with(cfg, edit))
