"""The planning layer (robustft.plan) and the step contracts (robustft.contracts): torch-free,
one home per path, per-method parameter schemas checked before any job, the catalog agreeing
with the library's registries, settings that round-trip through their JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from robustft import contracts, plan
from robustft.plan import catalog

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg():
    return plan.load_config(ROOT / "config.yaml")


def broken(cfg, mutate):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    return bad


# --- torch-free --------------------------------------------------------------------------------
def test_planning_imports_no_torch():
    code = (
        "import sys, robustft.plan, robustft.contracts; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', "
        "'robustft.methods', 'robustft.models', 'robustft.data', 'robustft.train', "
        "'robustft.evaluate'))); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_spell_no_path_and_import_only_the_plan():
    for smk in sorted((ROOT / "rules").glob("*.smk")) + [ROOT / "Snakefile"]:
        text = smk.read_text()
        assert "results/" not in text and "logs/" not in text, smk.name
        imports = [line for line in text.splitlines() if line.startswith(("import", "from"))]
        assert all(
            "robustft" not in line or "robustft import plan" in line or "robustft.plan" in line
            for line in imports
        ), (smk.name, imports)


# --- the catalog is the registries' -----------------------------------------------------------
def test_every_registered_method_has_its_schema_and_the_same_defaults():
    from robustft.clat.method import CLAT
    from robustft.methods import METHODS

    assert set(catalog.METHODS) == set(METHODS)
    for name, cls in METHODS.items():
        entry = catalog.METHODS[name]
        assert cls.defaults == catalog.params_defaults(name), name
        assert cls.display_name == entry.display_name, name
        assert entry.clat == issubclass(cls, CLAT), name
        assert catalog.check_params(name, cls.defaults) == [], name
        cls(**cls.defaults)  # the schema's defaults build the method


def test_architectures_and_dataset_kinds_match_the_registries():
    from robustft.data import DATASETS
    from robustft.models import ARCHS, CIFAR_ARCHS

    assert catalog.ARCHS == {**{a: False for a in ARCHS}, **{a: True for a in CIFAR_ARCHS}}
    assert catalog.DATASET_KINDS == {k: bool(s.presets) for k, s in DATASETS.items()}


def test_preset_method_options_fit_the_schemas():
    for preset in plan.PRESETS.values():
        for method, options in preset["methods"].items():
            assert catalog.check_params(method, options) == [], method
        assert catalog.check_params("trades", {"kl_normaliser": preset["kl_normaliser"]}) == []


# --- method parameters are checked before any job ----------------------------------------------
@pytest.mark.parametrize(
    "mutate, message",
    [
        # the cases of issue 10, each once failing only inside the job
        (
            lambda c: c["variants"]["autolora-rank4"]["params"].update(rank=-4),
            "config key 'variants.autolora-rank4.params.rank': -4 is not a positive int",
        ),
        (
            lambda c: c["methods"]["autolora"].update(params={"lambda_source": "trainset"}),
            (
                "config key 'methods.autolora.params.lambda_source': 'trainset' is not one of "
                "'train_set', 'running'"
            ),
        ),
        (
            lambda c: c["variants"]["pgd_at+clat"].update(params={"tap": "relu"}),
            "config key 'variants.pgd_at+clat.params.tap': 'relu' is not one of 'module', 'bn'",
        ),
        (
            lambda c: c["variants"]["pgd_at+lora"].update(params={"init": "xavier"}),
            "config key 'variants.pgd_at+lora.params.init': 'xavier' is not one of 'kaiming', 'normal'",
        ),
        # params at every level where they may appear
        (
            lambda c: c["fidelities"]["clat_demo"]["methods"]["clat"]["params"].update(
                criticality_examples="64"
            ),
            (
                "config key 'fidelities.clat_demo.methods.clat.params.criticality_examples': '64' is "
                "not a positive int"
            ),
        ),
        (
            lambda c: c["datasets"]["cub200"]["methods"]["twins"]["params"].update(gamma=-1.0),
            "config key 'datasets.cub200.methods.twins.params.gamma': -1.0 is not a number ≥ 0",
        ),
        (
            lambda c: c["variants"]["at-awp"].update(params={"epoch_origin": True}),
            "config key 'variants.at-awp.params.epoch_origin': True is not one of 0, 1",
        ),
        (
            lambda c: c["variants"]["at-awp"].update(params={"project_start": "no"}),
            "config key 'variants.at-awp.params.project_start': 'no' is not true or false",
        ),
        (
            lambda c: c["variants"]["pgd_at-pre50"].update(params={"beta": 6.0}),
            (
                "config key 'variants.pgd_at-pre50.params.beta': unknown parameter of pgd_at; known: "
                "(none)"
            ),
        ),
    ],
)
def test_bad_method_parameters_name_the_key(cfg, mutate, message):
    with pytest.raises(plan.ConfigError) as err:
        plan.validate(broken(cfg, mutate))
    assert message in str(err.value)


def test_a_float_parameter_takes_an_int_and_a_choice_only_its_own_type():
    assert catalog.check_params("autolora", {"alpha": 2, "rank": 4}) == []
    assert catalog.check_params("awp", {"epoch_origin": 1.0}) == [
        ("epoch_origin", "1.0 is not one of 0, 1")
    ]
    assert catalog.check_params("clat", {"k": 1.5})[0][1] == "1.5 is not an int ≥ 0"


def test_unread_variant_label_is_no_longer_accepted(cfg):
    with pytest.raises(plan.ConfigError, match="variants.twins-autolr"):
        plan.validate(broken(cfg, lambda c: c["variants"]["twins-autolr"].update(label="x")))


# --- contracts ---------------------------------------------------------------------------------
def test_settings_round_trip_through_json(cfg):
    studies = list(cfg["studies"])
    p = plan.Plan({**cfg, "targets": studies})
    for run in plan.all_training_runs(cfg, studies):
        s = p.train_settings(run)
        assert contracts.TrainConfig.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    for run in plan.all_runs(cfg, studies):
        s = p.eval_settings(run)
        back = contracts.EvaluateSettings.from_dict(json.loads(json.dumps(s.to_dict())))
        assert back == s and s.arch is None  # the model file describes the model
    for study in studies:
        for pair in plan.transfer_pairs(cfg, study):
            s = p.transfer_settings(pair)
            assert contracts.TransferSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
        for run in plan.criticality_runs(cfg, study):
            s = p.criticality_settings(run)
            assert contracts.CriticalitySettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
        s = p.aggregate_spec(study)
        assert contracts.AggregateSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_a_step_names_an_unknown_or_missing_setting():
    from robustft.steps._common import read_settings

    with pytest.raises(
        contracts.ContractError,
        match=r"--settings: unknown evaluation setting\(s\) \['eval_atack'\]",
    ):
        read_settings(contracts.EvaluateSettings, json.dumps({"eval_atack": {}}))
    with pytest.raises(contracts.ContractError, match=r"missing setting\(s\) \['eval_attack'\]"):
        read_settings(contracts.EvaluateSettings, "{}")
    with pytest.raises(
        contracts.ContractError, match=r"unknown CLAT evaluation protocol setting\(s\)"
    ):
        read_settings(
            contracts.EvaluateSettings, json.dumps({"eval_attack": {}, "protocol": {"restart": 3}})
        )


def test_train_config_has_one_home():
    from robustft import train

    assert train.TrainConfig is contracts.TrainConfig
    defaults = {f.name for f in dataclasses.fields(contracts.TrainConfig)}
    from robustft.plan.validate import schema

    assert (
        set(schema()["$defs"]["training"]["properties"]) <= defaults
    )  # every configurable training key is a TrainConfig field


def test_plan_answers_as_the_functions_do(cfg):
    p = plan.Plan({**cfg, "targets": ["autolora_table1", "autolora_table3"]})
    for run in plan.all_runs(p.config, p.targets):
        assert p.eval_settings(run).autoattack == plan.needs_autoattack(p.config, run, p.targets)
    assert p.final_targets()[-1] == plan.paths.REPORT
    run = plan.Run("paper", "dtd", "resnet18_eps4", "autolora", 0)
    assert run.file("eval") == "results/runs/paper/dtd/resnet18_eps4/autolora/seed0/eval.json"


def test_a_model_file_without_a_description_is_rebuilt_from_its_run_record(tmp_path, tiny_data):
    """Evaluation settings no longer say which model to build; a model_best.pt written before
    models described themselves is rebuilt from the run.yaml its training job wrote."""
    import torch
    import yaml

    from robustft.evaluate import evaluate_run
    from robustft.models import build_model
    from robustft.models.checkpoint import CheckpointError

    path = tmp_path / "run" / "model_best.pt"
    path.parent.mkdir()
    torch.save({"state_dict": build_model("resnet_mini", 3, width=4).state_dict()}, path)
    settings = {
        "eval_attack": {"eps": 2 / 255, "step": 1 / 255, "steps": 1, "random_start": False},
        "batch_size": 12,
    }
    with pytest.raises(CheckpointError, match="does not describe its model"):
        evaluate_run(settings, path, tiny_data)
    (path.parent / "run.yaml").write_text(
        yaml.safe_dump(
            {
                "settings": {
                    "arch": "resnet_mini",
                    "width": 4,
                    "input_size": None,
                    "method": "pgd_at",
                    "method_params": {},
                }
            }
        )
    )
    assert evaluate_run(settings, path, tiny_data)["metrics"]["SA"]["n"] == 12
