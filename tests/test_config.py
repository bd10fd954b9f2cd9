"""config.yaml validation and the expansion of studies into runs (robustft.plan, no Snakemake
needed)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from robustft import plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg():
    return plan.load_config(ROOT / "config.yaml")


def broken(cfg, mutate):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    return bad


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["studies"]["demo"].update(sedes=[0]), "studies.demo"),
        (lambda c: c["studies"]["demo"].update(seeds=["zero"]), "studies.demo.seeds[0]"),
        (
            lambda c: c["fidelities"]["demo"]["training"].update(epochs="six"),
            "fidelities.demo.training.epochs",
        ),
        (
            lambda c: c["studies"]["demo"].update(variants=["autolora", "adamw"]),
            "studies.demo.variants[1]",
        ),
        (lambda c: c["studies"]["demo"].update(datasets=["imagenet"]), "studies.demo.datasets[0]"),
        (
            lambda c: c["variants"]["autolora-rank4"]["params"].update(rnak=4),
            "variants.autolora-rank4.params.rnak",
        ),
        (
            lambda c: c["variants"]["autolora-rank4"]["params"].update(rank="four"),
            "variants.autolora-rank4.params.rank",
        ),
        (lambda c: c["datasets"]["textures"].update(kind="mnist"), "datasets.textures.kind"),
        (lambda c: c.update(targets=["tabel1"]), "targets[0]"),
        (lambda c: c.update(preset="both"), "preset"),
    ],
)
def test_bad_config_names_the_key(cfg, mutate, key):
    with pytest.raises(plan.ConfigError) as err:
        plan.validate(broken(cfg, mutate))
    assert f"'{key}" in str(err.value)


def test_default_target_is_the_offline_demo(cfg):
    assert cfg["targets"] == ["demo"]
    runs = plan.study_runs(cfg, "demo")
    assert {r.variant for r in runs} == {"vanilla_rft", "twins", "autolora"}
    assert len({r.seed for r in runs}) >= 2
    assert cfg["backbones"][runs[0].backbone]["source"] == "pretrain"


@pytest.mark.parametrize(
    "study, trains",
    [
        ("autolora_table1", 54),
        ("autolora_table2", 54),
        ("autolora_table3", 48),
        ("autolora_table4", 90),
        ("autolora_table5", 24),
        ("autolora_table6", 42),
        ("autolora_figures", 27),
    ],
)
def test_paper_study_sizes(cfg, study, trains):
    assert len(plan.study_runs(cfg, study)) == trains


def test_shared_runs_are_one_run(cfg):
    both = plan.all_runs(cfg, ["autolora_table1", "autolora_table3"])
    # Table 3's rank-8 runs on CIFAR-10/100, DTD and CUB are Table 1's AutoLoRa runs
    assert len(both) == 54 + 48 - 12


def test_resolved_settings_follow_table7_and_presets(cfg):
    run = plan.Run("paper", "cifar100", "resnet18_eps4", "vanilla_rft", 0)
    s = plan.train_settings(cfg, run)
    assert s.lr == 1e-3 and s.weight_decay == 1e-4 and s.epochs == 60
    assert s.lr_schedule == {"type": "multistep", "milestones": [30, 50], "factor": 0.1}
    assert s.train_attack["eps"] == 0.0314 and s.input_size == 224
    auto = plan.train_settings(cfg, plan.Run("paper", "dtd", "resnet18_eps4", "autolora", 0))
    assert auto.lr == 0.01 and auto.lr_schedule["type"] == "auto"
    assert auto.lr_schedule == {
        "type": "auto",
        "every": 4,
        "min_lr": 1e-5,
        "variant": "official",
    }  # no multistep keys leak in
    assert auto.augment == "resized_crop_flip"
    twins = plan.train_settings(cfg, plan.Run("paper", "cub200", "resnet18_eps4", "twins", 0))
    assert twins.method_params["gamma"] == 3.0 and twins.method_params["loss"] == "official"
    paper = plan.validate({**cfg, "preset": "paper"})
    t = plan.train_settings(paper, plan.Run("paper", "cub200", "resnet18_eps4", "twins", 0))
    assert t.method_params["loss"] == "paper" and t.train_attack["eps"] == 8 / 255


def test_changing_one_rank_changes_only_those_runs(cfg):
    changed = broken(cfg, lambda c: c["variants"]["autolora-rank4"]["params"].update(rank=5))
    runs = plan.all_runs(cfg, list(cfg["studies"]))
    differ = [r for r in runs if plan.train_settings(cfg, r) != plan.train_settings(changed, r)]
    assert differ and all(r.variant == "autolora-rank4" for r in differ)
    assert len(differ) == 12  # 4 datasets × 3 seeds of Table 3


def test_table5_reference_and_paper_mapping(cfg):
    spec = plan.aggregate_spec(cfg, "autolora_table5")
    assert spec.comparisons == [
        {
            "ours": "twins-autolr",
            "baseline": "twins",
            "paper_diff": {"metric": "diff_autolr_on_vs_off_{metric}", "variant": ""},
        }
    ]
    assert spec.variants["twins"]["labels"] == {"autolr": "off"}
    assert spec.paper["metrics"] == {"PGD10": "RA"}


def test_table4_matches_backbone_variants_table1_does_not(cfg):
    t4 = plan.aggregate_spec(cfg, "autolora_table4").paper["backbones"]
    assert t4["resnet18_eps1"] == {"name": "ResNet-18", "variant": "eps_pt=1/255"}
    assert plan.aggregate_spec(cfg, "autolora_table1").paper["backbones"] == {
        "resnet18_eps4": "ResNet-18"
    }
