"""robustft.tables: aggregation over seeds, t-tests and paper-value lookup, on hand-made run
directories; the aggregate step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from robustft.steps import aggregate as aggregate_step
from robustft.tables import paper
from robustft.tables.assemble import Comparison, aggregate_study
from robustft.tables.paper import PaperRef
from robustft.tables.records import RunRecord, load_run_record
from robustft.tables.schema import StudyTables
from robustft.tables.serialise import read_study_json
from robustft.tables.significance import (
    ACCURACY_TOLERANCE,
    consistency_interval,
    minimum_detectable_difference,
    t_test,
)


def write_run(
    root: Path,
    dataset: str,
    backbone: str,
    variant: str,
    seed: int,
    metrics: dict[str, float | None],
    *,
    method: str | None = None,
    labels: dict | None = None,
    train_log: pd.DataFrame | None = None,
    aa_warnings: list[str] | None = None,
    preset: str = "paper",
) -> Path:
    """A run directory in the layout of ARCHITECTURE.md with run.yaml and eval.json.

    ``metrics`` are accuracies in [0, 1]; None leaves the metric out (e.g. AA skipped).
    """
    d = root / "runs" / dataset / backbone / variant / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {
        "dataset": dataset,
        "backbone": backbone,
        "variant": variant,
        "seed": seed,
        "method": method or variant,
        "preset": preset,
        "fidelity": "demo",
    }
    if labels:
        cfg["labels"] = labels
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    # the layout robustft.evaluate writes: AutoAttack check messages at the top level
    ev = {
        "metrics": {m: {"accuracy": a, "n": 1000} for m, a in metrics.items() if a is not None},
        "per_example": {},
        "warnings": list(aa_warnings or []),
        "provenance": {"device": "cpu"},
    }
    if "AA" in ev["metrics"]:
        ev["metrics"]["AA"]["flagged"] = bool(aa_warnings)
    (d / "eval.json").write_text(json.dumps(ev))
    if train_log is not None:
        train_log.to_csv(d / "train_log.csv", index=False)
    return d


def rec(variant, seed, sa, method=None, dataset="cifar10", backbone="resnet18", **metrics):
    m = {"SA": {"accuracy": sa, "n": 100}}
    m.update({k: {"accuracy": v, "n": 100} for k, v in metrics.items()})
    return RunRecord(
        dataset=dataset,
        backbone=backbone,
        method=method or variant,
        variant=variant,
        seed=seed,
        metrics=m,
    )


# --------------------------------------------------------------------------- mean / std


def test_mean_std_by_hand_and_per_seed_values(tmp_path):
    dirs = [
        write_run(tmp_path, "cifar10", "resnet18", "autolora", s, {"SA": a, "PGD10": p})
        for s, a, p in [(0, 0.80, 0.50), (6, 0.82, 0.52), (66, 0.84, 0.57)]
    ]
    runs = [load_run_record(d) for d in dirs]
    assert runs[0].method == "AutoLoRa"  # canonical name -> paper display name
    t = aggregate_study("s", runs)
    sa = t.cells.set_index("metric").loc["SA"]
    # by hand: (80 + 82 + 84) / 3 = 82; sample var = (4 + 0 + 4) / 2 = 4 -> std 2
    assert sa["mean"] == pytest.approx(82.0)
    assert sa["std"] == pytest.approx(2.0)
    assert sa["n_seeds"] == 3 and sa["seeds"] == "0;6;66" and sa["values"] == "80;82;84"
    pgd = t.cells.set_index("metric").loc["PGD10"]
    # (50 + 52 + 57) / 3 = 53; var = (9 + 1 + 16) / 2 = 13
    assert pgd["mean"] == pytest.approx(53.0)
    assert pgd["std"] == pytest.approx(math.sqrt(13.0))
    assert list(t.metrics) == ["SA", "PGD10"]
    assert set(t.cells["presets"]) == {"paper"}


def test_one_seed_has_no_std_and_says_so():
    t = aggregate_study("s", [rec("autolora", 0, 0.9)])
    row = t.cells.iloc[0]
    assert row["mean"] == pytest.approx(90.0)
    assert math.isnan(row["std"])
    assert "one seed" in row["note"]


def test_missing_metric_for_some_seeds():
    runs = [
        rec("autolora", 0, 0.8, AA=0.4),
        rec("autolora", 1, 0.8, AA=0.5),
        rec("autolora", 2, 0.8),
    ]
    t = aggregate_study("s", runs)
    aa = t.cells.set_index("metric").loc["AA"]
    assert aa["n_seeds"] == 2 and aa["mean"] == pytest.approx(45.0)
    assert "AA missing for seed(s) [2]" in aa["note"]


def test_duplicate_seed_is_an_error():
    with pytest.raises(ValueError, match="duplicate run"):
        aggregate_study("s", [rec("a", 0, 0.5), rec("a", 0, 0.6)])


# --------------------------------------------------------------------------- t-tests


def test_hand_checkable_t_test():
    # ours 4,5,6 % vs baseline 1,2,3 %: means 5 and 2, both sample variances 1, so
    # t = 3 / sqrt(1/3 + 1/3) = 3.6742 with df = 4 (Welch and Student agree here).
    runs = [rec("ours", s, v / 100) for s, v in enumerate([4, 5, 6])]
    runs += [rec("base", s, v / 100) for s, v in enumerate([1, 2, 3])]
    t = aggregate_study("s", runs, [Comparison(ours="ours", baseline="base")])
    row = t.comparisons.iloc[0]
    t_hand = 3 / math.sqrt(2 / 3)
    assert row["statistic"] == pytest.approx(t_hand)
    assert row["df"] == pytest.approx(4.0)
    # Student t CDF with 4 degrees of freedom in closed form, with x = t / sqrt(4 + t^2):
    # F(t) = 1/2 + x (3/4 - x^2/4)
    x = t_hand / math.sqrt(4 + t_hand**2)
    p_hand = 2 * (1 - (0.5 + x * (0.75 - x**2 / 4)))
    assert row["p_value"] == pytest.approx(p_hand, rel=1e-9)
    assert row["p_value"] == pytest.approx(0.0213116, abs=1e-6)
    assert row["diff"] == pytest.approx(3.0)
    assert bool(row["significant"]) is True
    assert row["test"] == "welch"


def test_p_value_matches_direct_scipy_call():
    ours = [0.853, 0.861, 0.878]
    base = [0.801, 0.834, 0.812]
    runs = [rec("autolora", s, a, "AutoLoRa") for s, a in zip((0, 6, 66), ours, strict=True)]
    runs += [rec("vanilla-rft", s, a, "Vanilla RFT") for s, a in zip((0, 6, 66), base, strict=True)]
    for test, expected in [
        ("welch", sps.ttest_ind(np.array(ours) * 100, np.array(base) * 100, equal_var=False)),
        ("student", sps.ttest_ind(np.array(ours) * 100, np.array(base) * 100, equal_var=True)),
        ("paired", sps.ttest_rel(np.array(ours) * 100, np.array(base) * 100)),
    ]:
        t = aggregate_study("s", runs, [("autolora", "vanilla-rft")], test=test)
        row = t.comparisons.iloc[0]
        assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
        assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
        assert row["test"] == test
        assert row["label"] == "AutoLoRa vs. Vanilla RFT"


def test_welch_and_student_differ_when_variances_differ():
    ours = {0: 60.0, 1: 70.0, 2: 80.0, 3: 90.0}  # large spread
    base = {0: 61.0, 1: 61.5}  # tiny spread, fewer seeds
    w, s = t_test(ours, base, "welch"), t_test(ours, base, "student")
    assert w["p_value"] != pytest.approx(s["p_value"], rel=1e-3)
    assert w["df"] != pytest.approx(s["df"])
    assert s["df"] == pytest.approx(4.0)  # n1 + n2 - 2
    # Welch–Satterthwaite df by hand
    v1, v2 = np.var(list(ours.values()), ddof=1) / 4, np.var(list(base.values()), ddof=1) / 2
    df_hand = (v1 + v2) ** 2 / (v1**2 / 3 + v2**2 / 1)
    assert w["df"] == pytest.approx(df_hand)


def test_fewer_than_two_seeds_gives_nan_p_with_note():
    runs = [rec("ours", 0, 0.9), rec("base", 0, 0.8), rec("base", 1, 0.81)]
    t = aggregate_study("s", runs, [("ours", "base")])
    row = t.comparisons.iloc[0]
    assert math.isnan(row["p_value"])
    assert "fewer than 2 seeds" in row["note"]
    assert row["diff"] == pytest.approx(90 - 80.5)
    assert bool(row["significant"]) is False


def test_paired_uses_common_seeds_and_constant_groups_are_undefined():
    res = t_test({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.0, 1: 0.5, 5: 9.0}, "paired")
    assert res["n_ours"] == 2 and "common seeds" in res["note"]
    assert math.isfinite(res["p_value"])
    res = t_test({0: 1.0, 1: 1.0}, {0: 2.0, 1: 2.0}, "welch")
    assert math.isnan(res["p_value"]) and "zero variance" in res["note"]
    with pytest.raises(ValueError):
        t_test({0: 1.0}, {0: 1.0}, "mann-whitney")


# --------------------------------------------------------------------------- paper values


def test_paper_value_lookup():
    assert paper.lookup(
        "AutoLoRa", 1, "ResNet-18", "CIFAR-10", "AutoLoRa", "", "SA"
    ) == pytest.approx(84.20)
    # pipeline spellings resolve to the printed ones
    assert paper.lookup(
        "AutoLoRa", 1, "resnet18", "cifar10", "AutoLoRa", None, "SA"
    ) == pytest.approx(84.20)
    e = paper.lookup_entry(
        "AutoLoRa", 8, "ResNet-18", "CIFAR-100", "AutoLoRa", "", "p_value_vs_vanilla_PGD10"
    )
    assert e is not None and e.text == "8e-05" and e.value == pytest.approx(8e-5)
    assert paper.lookup(
        "AutoLoRa", 3, "resnet18", "cifar10", "AutoLoRa", "rank=2", "RA"
    ) == pytest.approx(52.71)
    assert (
        paper.lookup("CLAT", 1, "resnet18", "cifar10", "PGD-AT", "", "clean") is not None
    )  # RN18 alias
    # absent -> None
    assert paper.lookup("AutoLoRa", 1, "ResNet-18", "CIFAR-10", "AutoLoRa", "", "FGSM") is None
    assert paper.lookup("AutoLoRa", 1, "ResNet-18", "MNIST", "AutoLoRa", "", "SA") is None
    assert paper.lookup("AutoLoRa", 2, "ResNet-18", "CIFAR-10", "AutoLoRa", "", "SA") is None
    # table=None: unique across tables
    assert paper.lookup(
        "AutoLoRa", None, "ResNet-50", "CIFAR-10", "AutoLoRa", "", "SA"
    ) == paper.lookup("AutoLoRa", 2, "ResNet-50", "CIFAR-10", "AutoLoRa", "", "SA")
    assert len(paper.load_paper_values("AutoLoRa")) == 400
    assert len(paper.hparams()) == 12


def test_study_mirroring_autolora_table1_shows_paper_values_diffs_and_p():
    runs = []
    for s in (0, 6, 66):
        runs.append(rec("autolora", s, 0.84 + s / 10000, "AutoLoRa", PGD10=0.54, AA=0.49))
        runs.append(rec("vanilla-rft", s, 0.81 + s / 5000, "Vanilla RFT", PGD10=0.53, AA=0.47))
    ref = PaperRef(paper="AutoLoRa", table={"resnet18": 1, "resnet50": 2}, pvalue_table=8)
    t = aggregate_study("t1", runs, [Comparison("autolora", "vanilla-rft", name="vs_vanilla")], ref)
    cell = t.cells.set_index(["variant", "metric"]).loc[("autolora", "SA")]
    assert cell["paper_value"] == pytest.approx(84.20)
    assert cell["paper_text"] == "84.20"
    assert cell["paper_source"] == "AutoLoRa Table 1"
    assert cell["diff_vs_paper"] == pytest.approx(cell["mean"] - 84.20)
    comp = t.comparisons.set_index("metric")
    assert comp.loc["SA", "paper_diff"] == pytest.approx(2.69)
    assert comp.loc["SA", "paper_p_value"] == pytest.approx(0.0001)
    assert comp.loc["AA", "paper_p_value"] == pytest.approx(0.0020)
    assert comp.loc["SA", "comparison"] == "vs_vanilla"


def test_ablation_labels_map_to_paper_variants():
    runs = [rec("autolora-rank4", s, 0.85, "AutoLoRa", PGD10=0.53) for s in (0, 1)]
    for r in runs:
        r.labels = {"rank": 4}
    t = aggregate_study("t3", runs, paper_ref={"paper": "AutoLoRa", "table": 3})
    by = t.cells.set_index("metric")
    # AutoLoRa Table 3, r_nat = 4, CIFAR-10: SA 83.69, RA (= PGD-10) 52.75
    assert by.loc["SA", "paper_value"] == pytest.approx(83.69)
    assert by.loc["PGD10", "paper_value"] == pytest.approx(52.75)
    # explicit mapping to nothing: no paper value
    t = aggregate_study(
        "t3",
        runs,
        paper_ref={"paper": "AutoLoRa", "table": 3, "variants": {"autolora-rank4": None}},
    )
    assert t.cells["paper_value"].isna().all()


def test_backbone_carries_the_paper_variant_autolora_table4():
    runs = [
        rec("vanilla_rft", s, 0.55, "Vanilla RFT", dataset="cifar100", backbone="resnet18_eps1")
        for s in (0, 1)
    ]
    ref = {
        "name": "AutoLoRa",
        "table": 4,  # config.yaml's spelling of the paper key
        "backbones": {"resnet18_eps1": {"name": "ResNet-18", "variant": "eps_pt=1/255"}},
    }
    t = aggregate_study("t4", runs, paper_ref=ref)
    assert t.cells.iloc[0]["paper_value"] == pytest.approx(55.37)
    assert t.cells.iloc[0]["paper_source"] == "AutoLoRa Table 4"


def test_comparison_with_paper_diff_elsewhere_autolora_table5():
    runs = [rec("twins", s, 0.85, "TWINS", PGD10=0.53) for s in (0, 1, 2)]
    runs += [rec("twins-autolr", s, 0.856 + s / 1000, "TWINS", PGD10=0.53) for s in (0, 1, 2)]
    ref = {
        "paper": "AutoLoRa",
        "table": 5,
        "variants": {"twins": {"variant": "autolr=off"}, "twins-autolr": {"variant": "autolr=on"}},
    }
    comp = {
        "ours": "twins-autolr",
        "baseline": "twins",
        "paper_diff": {"metric": "diff_autolr_on_vs_off_{metric}", "variant": ""},
    }
    t = aggregate_study("t5", runs, [comp], ref)
    cells = t.cells.set_index(["variant", "metric"])
    assert cells.loc[("twins", "SA"), "paper_value"] == pytest.approx(85.27)
    assert cells.loc[("twins-autolr", "SA"), "paper_value"] == pytest.approx(85.43)
    assert cells.loc[("twins-autolr", "PGD10"), "paper_value"] == pytest.approx(52.98)  # RA
    c = t.comparisons.set_index("metric")
    assert c.loc["SA", "paper_diff"] == pytest.approx(0.16)
    assert c.loc["PGD10", "paper_diff"] == pytest.approx(-0.06)
    assert math.isnan(c.loc["SA", "paper_p_value"])  # Table 8 has no TWINS-vs-TWINS p


# --------------------------------------------------------------------------- files / step


def test_aggregate_step_writes_csv_and_json(tmp_path):
    dirs = []
    for s, (a, b) in enumerate([(0.84, 0.81), (0.85, 0.815), (0.86, 0.80)]):
        dirs.append(
            write_run(
                tmp_path, "cifar10", "resnet18", "autolora", s, {"SA": a, "PGD10": 0.5, "AA": None}
            )
        )
        dirs.append(
            write_run(
                tmp_path,
                "cifar10",
                "resnet18",
                "vanilla-rft",
                s,
                {"SA": b, "PGD10": 0.49, "AA": None},
            )
        )
    spec = {
        "title": "T1",
        "comparisons": [{"ours": "autolora", "baseline": "vanilla-rft"}],
        "paper": {"paper": "AutoLoRa", "table": 1, "pvalue_table": 8},
        "variants": {"vanilla-rft": {"method": "Vanilla RFT"}},
    }
    out_csv, out_json = tmp_path / "tables" / "t1.csv", tmp_path / "tables" / "t1.json"
    rc = aggregate_step.main(
        [
            "--study",
            "t1",
            "--runs",
            *map(str, dirs),
            "--spec",
            json.dumps(spec),
            "--out-csv",
            str(out_csv),
            "--out-json",
            str(out_json),
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in out_csv.parent.iterdir()) == ["t1.csv", "t1.json"]  # no temps
    df = pd.read_csv(out_csv)
    assert set(df["kind"]) == {"cell", "comparison"}
    assert set(df.loc[df.kind == "comparison", "significant"]) <= {True, False}
    cells = df[df.kind == "cell"].set_index(["variant", "metric"])
    assert cells.loc[("autolora", "SA"), "mean"] == pytest.approx(85.0)
    assert cells.loc[("vanilla-rft", "SA"), "method"] == "Vanilla RFT"
    assert cells.loc[("vanilla-rft", "SA"), "paper_value"] == pytest.approx(81.51)
    comp = df[df.kind == "comparison"].set_index("metric")
    expected = sps.ttest_ind([84, 85, 86], [81, 81.5, 80], equal_var=False).pvalue
    assert comp.loc["SA", "p_value"] == pytest.approx(expected, rel=1e-5)
    # strict JSON (no NaN) that loads back into the same tables
    text = out_json.read_text()
    assert "NaN" not in text
    back = read_study_json(out_json)
    assert isinstance(back, StudyTables) and back.title == "T1"
    assert back.cells.shape == (4, len(back.cells.columns))
    assert back.runs[0].fidelity == "demo"


def test_aggregate_step_reference_compares_with_every_other_variant(tmp_path):
    dirs = [
        write_run(
            tmp_path,
            "textures",
            "mini_at",
            v,
            s,
            {"SA": 0.5 + s / 100},
            aa_warnings=["Warning: zero gradients"] if v == "twins" else None,
        )
        for v in ("vanilla_rft", "twins", "autolora")
        for s in (0, 1)
    ]
    out = tmp_path / "demo.json"
    spec = {"reference": "autolora", "figures": ["accuracy", "lr"], "paper": None}
    aggregate_step.main(
        [
            "--study",
            "demo",
            "--runs",
            *map(str, dirs),
            "--spec",
            json.dumps(spec),
            "--out-csv",
            str(tmp_path / "demo.csv"),
            "--out-json",
            str(out),
            "--test",
            "student",
        ]
    )
    t = read_study_json(out)
    assert list(dict.fromkeys(t.comparisons["baseline_variant"])) == ["vanilla_rft", "twins"]
    assert set(t.comparisons["variant"]) == {"autolora"}
    assert set(t.comparisons["test"]) == {"student"}
    assert t.figures == ["accuracy", "lr"]
    flagged = {r.variant: r.aa_warnings for r in t.runs}
    assert flagged["twins"] == ["Warning: zero gradients"] and flagged["autolora"] == []


def test_run_identity_from_path_when_run_yaml_is_silent(tmp_path):
    d = write_run(tmp_path, "cifar100", "resnet50", "twins", 6, {"SA": 0.6})
    (d / "run.yaml").write_text(yaml.safe_dump({"method": "twins", "lr": 0.01}))
    r = load_run_record(d)
    assert (r.dataset, r.backbone, r.variant, r.seed, r.method) == (
        "cifar100",
        "resnet50",
        "twins",
        6,
        "TWINS",
    )


def test_read_study_json_names_a_file_that_is_not_a_study(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.json: not valid JSON.*robustft.steps.aggregate"):
        read_study_json(broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match=r"other.json: not a study table"):
        read_study_json(other)


def test_packaged_paper_values_are_package_data():
    """Every package-data pattern of pyproject.toml matches files, the paper values among
    them, so an installed (non-editable) robustft still finds what the report compares with."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["robustft"]
    package = root / "src" / "robustft"
    for pattern in patterns:
        assert list(package.glob(pattern)), f"package-data {pattern!r} matches no file"
    csvs = {p.name for pattern in patterns for p in package.glob(pattern)}
    assert {"autolora.csv", "clat.csv", "autolora_hparams.csv"} <= csvs
    assert paper.PAPERS == {"AutoLoRa": "autolora.csv", "CLAT": "clat.csv"}


# --------------------------------------------------------------------------- evidence columns


def test_minimum_detectable_difference_against_published_power_values():
    # n = 3 per group, σ = 1, α = 0.05 two-sided, power 0.8: the effect size of the two-sample
    # t-test is d = 3.07 (G*Power; statsmodels TTestIndPower().solve_power(nobs1=3) = 3.07),
    # and with equal spreads Welch's df is Student's (4), so the MDD is 3.07 σ
    assert minimum_detectable_difference(1.0, 3, 1.0, 3) == pytest.approx(3.07, abs=0.01)
    assert minimum_detectable_difference(2.0, 3, 2.0, 3) == pytest.approx(6.14, abs=0.02)
    # large n: the normal approximation (z_0.975 + z_0.8) · se
    se = math.sqrt(2 / 2000)
    expected = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * se
    assert minimum_detectable_difference(1.0, 2000, 1.0, 2000) == pytest.approx(expected, rel=2e-3)
    # two seeds detect far less than three
    assert minimum_detectable_difference(1.0, 2, 1.0, 2) > 1.8 * minimum_detectable_difference(
        1.0, 3, 1.0, 3
    )
    for args in [(1.0, 1, 1.0, 3), (0.0, 3, 0.0, 3)]:  # no spread estimate / no spread
        assert math.isnan(minimum_detectable_difference(*args))


def test_consistency_interval_rule():
    # 11/48 twice: no seed spread, the binomial error of 48 test images dominates
    width = consistency_interval([22.92, 22.92], 48)
    assert width == pytest.approx(100 * 1.96 * math.sqrt(0.2292 * 0.7708 / 48), rel=1e-3)
    # three seeds on 10 000 images: the t-interval of the mean (t_0.975,2 = 4.303)
    assert consistency_interval([80.0, 82.0, 84.0], 10_000) == pytest.approx(
        4.303 * 2 / math.sqrt(3), rel=1e-3
    )
    # one seed, unknown test size: the stated floor
    assert consistency_interval([80.0]) == ACCURACY_TOLERANCE
    # counts: relative tolerance
    assert consistency_interval([1000.0], accuracy=False) == pytest.approx(10.0)


def _evidence_run(root, variant, seed, sa, pgd, n_pgd=500):
    d = write_run(root, "cifar10", "resnet18", variant, seed, {"SA": sa, "PGD10": pgd})
    ev = json.loads((d / "eval.json").read_text())
    ev["metrics"]["PGD10"].update(
        n=n_pgd, attack={"eps": 8 / 255, "step": 2 / 255, "steps": 10, "random_start": False}
    )
    ev["compute"] = {"device": "cuda:0", "device_name": "NVIDIA A100", "precision": "fp32"}
    ev["timing"] = {"pgd_seconds": 30.0, "autoattack_seconds": 12.0}
    (d / "eval.json").write_text(json.dumps(ev))
    cfg = yaml.safe_load((d / "run.yaml").read_text())
    cfg["settings"] = {"selection": "test_pgd", "epochs": 30, "device": "auto", "arch": "resnet18"}
    cfg["compute"] = {"device": "cuda:0", "precision": "bf16", "channels_last": True}
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    pd.DataFrame({"epoch": [0, 1], "seconds": [100.0, 110.0]}).to_csv(
        d / "train_log.csv", index=False
    )
    return d


def test_protocol_facts_are_read_from_the_run_files(tmp_path):
    run = load_run_record(_evidence_run(tmp_path, "autolora", 0, 0.8, 0.5))
    p = run.protocol
    assert p["selection"] == "test_pgd" and p["epochs"] == 30
    assert p["train_precision"] == "bf16" and p["eval_precision"] == "fp32"
    assert p["train_device"] == "cuda:0" and p["eval_device"] == "cuda:0 (NVIDIA A100)"
    assert p["device_requested"] == "auto" and p["channels_last"] is True
    assert p["train_seconds"] == pytest.approx(210.0)  # the epochs' seconds
    assert p["eval_seconds"] == pytest.approx(42.0)  # the attacks' seconds
    # a run written before these facts were recorded: None, not a guess
    bare = load_run_record(write_run(tmp_path / "old", "c", "b", "v", 0, {"SA": 0.5}))
    assert bare.protocol["train_device"] is None and bare.protocol["train_seconds"] is None
    assert bare.protocol["train_precision"] is None


def test_cells_and_comparisons_carry_n_attack_power_and_paper_consistency(tmp_path):
    runs = [
        load_run_record(_evidence_run(tmp_path, v, s, sa + s / 1000, pgd + s / 500))
        for v, sa, pgd in [("autolora", 0.842, 0.540), ("vanilla_rft", 0.815, 0.530)]
        for s in (0, 6, 66)
    ]
    ref = PaperRef(paper="AutoLoRa", table=1)
    t = aggregate_study("t1", runs, [("autolora", "vanilla_rft")], ref, metrics=["SA", "PGD10"])
    cells = t.cells.set_index(["variant", "metric"])
    pgd = cells.loc[("autolora", "PGD10")]
    assert pgd["n_examples"] == "500" and cells.loc[("autolora", "SA"), "n_examples"] == "1000"
    assert pgd["attack"] == "ε 8/255 · step 2/255 · 10 steps · 1 restart · no random start"
    # our SA 84.2 + {0, 0.6, 6.6} %: mean 86.67 vs printed 84.20; the t-interval of three seeds
    # is wide (s = 3.64 -> ± 9.04), so the paper's value is consistent with ours
    sa = cells.loc[("autolora", "SA")]
    assert sa["interval"] == pytest.approx(4.303 * sa["std"] / math.sqrt(3), rel=1e-3)
    assert sa["paper_consistent"] == True  # (numpy bool in the frame; None = no check)
    # a cell far from the printed value is marked inconsistent
    runs_far = [r for r in runs if r.variant == "vanilla_rft"]
    for r in runs_far:
        r.metrics["SA"]["accuracy"] = 0.60 + r.seed / 1e5
    far = aggregate_study("t1", runs_far, [], ref, metrics=["SA"]).cells.iloc[0]
    assert far["paper_consistent"] == False
    comp = t.comparisons.set_index("metric").loc["PGD10"]
    assert (comp["n_ours"], comp["n_baseline"]) == (3, 3)
    sd = np.std([54.0, 54.0 + 1.2, 54.0 + 13.2], ddof=1)  # both groups have the same spread
    assert comp["df"] == pytest.approx(4.0)
    assert comp["mdd"] == pytest.approx(minimum_detectable_difference(sd, 3, sd, 3))
    assert comp["mdd"] == pytest.approx(3.07 * sd, rel=5e-3)
