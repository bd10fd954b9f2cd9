"""Presets and the resolution of what each job receives (its :mod:`robustft.contracts`).

Resolution order of a run's training settings (later wins):
  :class:`~robustft.contracts.TrainConfig` defaults → preset → ``methods.<m>``
  → ``datasets.<d>.training`` → ``datasets.<d>.methods.<m>`` (AutoLoRa Table 7)
  → ``fidelities.<f>.training`` → ``fidelities.<f>.methods.<m>`` → ``variants.<v>``.

A run's fully resolved settings are its ``train`` job's ``params``, so changing one ablation
value re-runs exactly the runs whose resolved settings changed. ``method_params`` holds only what
the preset and the config set; the method fills the rest from its schema's defaults
(:mod:`robustft.plan.catalog`).
"""

from __future__ import annotations

import functools
from typing import Any

from robustft.contracts import (
    ClatProtocol,
    CriticalityIdentity,
    CriticalitySettings,
    EvaluateSettings,
    FetchBackbone,
    PrepareData,
    RunIdentity,
    TrainConfig,
    TransferIdentity,
    TransferSettings,
)
from robustft.plan import catalog, paths
from robustft.plan.errors import ConfigError
from robustft.plan.grid import (
    AS_IS,
    Run,
    TransferPair,
    measured_run,
    method_label,
    variant_spec,
)
from robustft.threat_models import AUTOLORA_OFFICIAL, AUTOLORA_PAPER

#: CLAT baselines as their reference scripts run them (see each method's docstring for the
#: alternative): the TRADES/MART attacks take their first gradient at the unprojected Gaussian
#: start (yaodongyu/TRADES trades.py, YisenWang/MART mart.py); AT-AWP crafts in train-mode BN
#: and counts epochs from 0, TRADES-AWP crafts in eval mode and counts from 1 (csdongxian/AWP).
BASELINE_REFERENCE_OPTIONS: dict[str, dict[str, Any]] = {
    "trades": {"project_start": False},
    "mart": {"project_start": False},
    "awp": {"attack_bn": "train", "epoch_origin": 0},
    "trades_awp": {"project_start": False, "attack_bn": "eval", "epoch_origin": 1},
}

#: Where the paper and the official code differ (specs §11), each preset picks one side.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        # AutoLoRa Sec. 5: ε 8/255, step 2/255 (robustft.threat_models)
        "training": {
            "train_attack": AUTOLORA_PAPER.budget(),
            "eval_attack": AUTOLORA_PAPER.budget(),
            "epoch_end_order": "paper",
        },
        "lr_schedule_variant": "paper",
        "methods": {
            "twins": {"loss": "paper", "dual_bn": "paper"},
            "autolora": {"lora_coverage": "paper", "lambda_measured": "epoch_start"},
            "vanilla_rft": {},
            # Neither CLAT nor the baselines' papers ask for the other choices of these
            # attack details, so both presets keep the reference code's.
            **BASELINE_REFERENCE_OPTIONS,
        },
        "kl_normaliser": "batch",
    },
    "official": {
        # The official scripts pass ε = 0.0314 and step 0.00784 (spec §4, §11.14).
        # The official AutoLoRa loop measures λ's SA before, and tests after, the reload (§5).
        "training": {
            "train_attack": AUTOLORA_OFFICIAL.budget(),
            "eval_attack": AUTOLORA_OFFICIAL.budget(),
            "epoch_end_order": "official",
        },
        "lr_schedule_variant": "official",
        "methods": {
            "twins": {"loss": "official", "dual_bn": "official"},
            "autolora": {"lora_coverage": "official", "lambda_measured": "epoch_end"},
            "vanilla_rft": {},
            **BASELINE_REFERENCE_OPTIONS,
        },
        "kl_normaliser": "fixed_batch",
    },
}

#: Settings every run of a method starts from (AutoLoRa Sec. 5 / Algorithm 1, Appendix A.1).
METHOD_TRAINING: dict[str, dict[str, Any]] = {
    "autolora": {"lr": 0.01, "lr_schedule": {"type": "auto", "every": 4, "min_lr": 1e-5}},
}

#: fidelity keys that are also training settings (the training layers win)
TRAIN_KEYS_FROM_FIDELITY = ("eval_batch_size",)

#: portable job resources where ``fidelities.<f>.{train,eval}_resources`` says nothing
RESOURCE_DEFAULTS: dict[str, int] = {"gpu": 0, "mem_mb": 4000, "runtime": 60}


def _plain_copy(value: Any) -> Any:
    """A copy of JSON-like data (much cheaper than copy.deepcopy for the DAG's ~10⁴ merges)."""
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """``override`` merged into a copy of ``base`` (nested mappings merged key by key)."""
    out = _plain_copy(base)
    for key, value in (override or {}).items():
        # A tagged mapping that switches its "type" (multistep → auto LR schedule) is replaced,
        # not merged: the old type's keys (e.g. factor 0.1) must not leak into the new one.
        switches = (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and "type" in value
            and value["type"] != out[key].get("type")
        )
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not switches:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = _plain_copy(value)
    return out


@functools.cache
def _train_defaults() -> dict[str, Any]:
    """:class:`TrainConfig`'s defaults (the first layer of every run's resolution)."""
    return TrainConfig(run_name="", method="", arch="", seed=0).to_dict()


def method_defaults(config: dict[str, Any], method: str) -> dict[str, Any]:
    """The preset's choices for a method's parameters (the first layer of ``method_params``)."""
    preset = PRESETS[config["preset"]]
    params = dict(preset["methods"].get(method, {}))
    if "kl_normaliser" in catalog.params_defaults(method):
        params["kl_normaliser"] = preset["kl_normaliser"]
    return params


def train_settings(config: dict[str, Any], run: Run) -> TrainConfig:
    """Fully resolved training settings of one run (the ``train`` job's ``params``).

    An as-is run (:data:`~robustft.plan.grid.AS_IS`) trains nothing: 0 epochs, no method
    parameters; its settings still say what its evaluation and cost estimate need (arch,
    evaluation attack, device)."""
    preset = PRESETS[config["preset"]]
    var = variant_spec(config, run.variant)
    method = var["method"]
    dataset = config["datasets"][run.dataset]
    backbone = config["backbones"][run.backbone]
    fidelity = config["fidelities"][run.fidelity]
    params = {} if method == AS_IS else method_defaults(config, method)
    training = deep_merge(preset["training"], METHOD_TRAINING.get(method, {}))
    for layer in (
        config["methods"].get(method, {}),
        {"training": dataset.get("training", {})},
        dataset.get("methods", {}).get(method, {}),
        {"training": fidelity.get("training", {})},
        fidelity.get("methods", {}).get(method, {}),
        var,
    ):
        params = deep_merge(params, layer.get("params", {}))
        training = deep_merge(training, layer.get("training", {}))
    if training.get("lr_schedule", {}).get("type") == "auto":
        training["lr_schedule"].setdefault("variant", preset["lr_schedule_variant"])
    for key in TRAIN_KEYS_FROM_FIDELITY:
        if key in fidelity:
            training.setdefault(key, fidelity[key])
    base = {
        **_train_defaults(),
        "run_name": run.name,
        "method": method,
        "arch": backbone["arch"],
        "seed": run.seed,
    }
    resolved = deep_merge(base, training)
    resolved.update(
        method_params=params,
        width=backbone.get("width"),
        input_size=dataset.get("input_size"),
        device=config["device"],
    )
    if method == AS_IS:
        resolved["epochs"] = 0
    # a zoo model's file is a whole model (head included): load_backbone would keep conv/BN only
    if "init" in var or backbone["source"] == "robustbench":
        resolved["init_from"] = "model"
    elif resolved["init_from"] == "model":
        raise ConfigError(
            f"config key 'variants.{run.variant}.init': run {run.name} resolves "
            "training.init_from 'model' but names no upstream variant to start "
            "from"
        )
    return TrainConfig(**resolved)


def run_identity(config: dict[str, Any], run: Run) -> RunIdentity:
    """What run.yaml records about a run's place in the grid (read by the aggregation)."""
    return RunIdentity(
        fidelity=run.fidelity,
        dataset=run.dataset,
        backbone=run.backbone,
        variant=run.variant,
        seed=run.seed,
        method=variant_spec(config, run.variant)["method"],
        preset=config["preset"],
    )


def clat_protocol(config: dict[str, Any], fidelity: str) -> ClatProtocol:
    """The fidelity's CLAT protocol settings (the defaults where it sets none)."""
    spec = {
        k: v
        for k, v in config["fidelities"][fidelity].get("evaluation", {}).items()
        if k not in ("protocol", "precision")  # precision: EvaluateSettings, not the protocol
    }
    return ClatProtocol.from_dict(deep_merge(ClatProtocol().to_dict(), spec))


def evaluation_protocol(config: dict[str, Any], fidelity: str) -> ClatProtocol | None:
    """``fidelities.<f>.evaluation``: None for the standard protocol, else the CLAT one."""
    spec = config["fidelities"][fidelity].get("evaluation", {})
    return (
        None if spec.get("protocol", "standard") == "standard" else clat_protocol(config, fidelity)
    )


def _present(source: dict[str, Any], **names: str) -> dict[str, Any]:
    """``{setting: source[key]}`` for the keys the config sets (the rest: contract defaults)."""
    return {setting: source[key] for setting, key in names.items() if key in source}


def eval_settings(
    config: dict[str, Any], run: Run, autoattack: bool, train: TrainConfig | None = None
) -> EvaluateSettings:
    """The ``evaluate`` job's settings (``train``: the run's resolved training settings, if
    already at hand)."""
    fidelity = config["fidelities"][run.fidelity]
    protocol = evaluation_protocol(config, run.fidelity)
    if protocol is not None:
        attack = protocol.attack
    else:
        attack = (train or train_settings(config, run)).eval_attack
    return EvaluateSettings(
        eval_attack=attack,
        autoattack=autoattack,
        autoattack_eps=attack["eps"],
        protocol=protocol,
        device=config["device"],
        **_present(fidelity.get("evaluation", {}), precision="precision"),
        **_present(
            fidelity,
            autoattack_examples="autoattack_examples",
            autoattack_batch_size="autoattack_batch_size",
            batch_size="eval_batch_size",
        ),
    )


def transfer_settings(config: dict[str, Any], pair: TransferPair) -> TransferSettings:
    protocol = clat_protocol(config, pair.fidelity)
    return TransferSettings(
        attack=protocol.attack,
        examples=protocol.transfer_examples,
        device=config["device"],
        identity=TransferIdentity(
            fidelity=pair.fidelity,
            dataset=pair.dataset,
            variant=pair.variant,
            seed=pair.seed,
            backbones=[pair.first, pair.second],
        ),
        **_present(config["fidelities"][pair.fidelity], batch_size="eval_batch_size"),
    )


def criticality_settings(config: dict[str, Any], run: Run) -> CriticalitySettings:
    """Measure the model the CLAT run starts from (its upstream run's, else its own) as the
    CLAT run's first selection does."""
    protocol = clat_protocol(config, run.fidelity)
    settings = train_settings(config, run)
    measured = measured_run(config, run)
    return CriticalitySettings(
        train_attack=settings.train_attack,
        clat_method=settings.method,
        clat_params=settings.method_params,
        batch_sizes=protocol.criticality_batch_sizes,
        repeats=protocol.criticality_repeats,
        seed=run.seed,
        device=config["device"],
        identity=CriticalityIdentity(
            fidelity=run.fidelity,
            dataset=run.dataset,
            backbone=run.backbone,
            variant=run.variant,
            seed=run.seed,
        ),
        measured_run=measured.name,
        measured_variant=measured.variant,
        measured_method=method_label(config, measured.variant),
    )


def backbone_settings(config: dict[str, Any], name: str) -> TrainConfig:
    """Pre-training settings of a self-trained backbone (the demo's robust source model)."""
    bb = config["backbones"][name]
    base = {
        **_train_defaults(),
        "run_name": f"backbone/{name}",
        "method": bb["method"],
        "arch": bb["arch"],
        "seed": 0,
    }
    resolved = deep_merge(
        base, deep_merge(PRESETS[config["preset"]]["training"], bb.get("training", {}))
    )
    resolved.update(
        width=bb.get("width"),
        device=config["device"],
        method_params=method_defaults(config, bb["method"]),
        selection="last",
    )
    return TrainConfig(**resolved)


def fetch_settings(config: dict[str, Any], name: str) -> FetchBackbone:
    bb = config["backbones"][name]
    return FetchBackbone(arch=bb["arch"], eps_pt=bb["eps_pt"])


def prepare_settings(config: dict[str, Any], name: str) -> PrepareData:
    """How a dataset entry is prepared; datasets with paper/official variants follow the
    workflow's preset unless their options say otherwise."""
    ds = config["datasets"][name]
    options = dict(ds.get("options", {}))
    if catalog.DATASET_KINDS[ds["kind"]]:
        options.setdefault("preset", config["preset"])
    return PrepareData(
        kind=ds["kind"],
        resolution=ds["resolution"],
        options=options,
        raw_dir=paths.raw_dir(ds["kind"]),
        **_present(ds, split_seed="split_seed"),
    )


def resources(config: dict[str, Any], fidelity: str, kind: str) -> dict[str, int]:
    """``gpu``, ``mem_mb``, ``runtime`` of a job (``kind``: train_resources/eval_resources)."""
    return {**RESOURCE_DEFAULTS, **config["fidelities"][fidelity].get(kind, {})}
