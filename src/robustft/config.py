"""config.yaml → validated settings → studies expanded into runs with resolved parameters.

Used by ``rules/common.smk`` and by the tests, so the whole DAG logic is testable in plain
pytest. A *run* is (fidelity, dataset, backbone, variant, seed); its fully resolved training
settings are the ``train`` rule's ``params``, so changing one ablation value re-runs exactly the
runs whose resolved settings changed.

Resolution order of a run's training settings (later wins):
  TrainConfig defaults → preset → ``methods.<m>`` → ``datasets.<d>.training``
  → ``datasets.<d>.methods.<m>`` (Table 7) → ``fidelities.<f>.training``
  → ``fidelities.<f>.methods.<m>`` → ``variants.<v>``.

Chained runs ("X + CLAT", CLAT spec §1.5): a variant with ``init: <other variant>`` starts from
the ``model_best.pt`` of the run (same fidelity, dataset, backbone, seed) of that other variant,
with ``init_from: model``. The upstream run is an ordinary run (its own job, its own path), so
every study that chains onto the same X and seed shares it. Backbones with ``source: scratch``
have no file: runs start from random initialisation (CLAT's CIFAR adversarial training).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from robustft.methods import METHODS

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
        "training": {"train_attack": {"eps": 8 / 255, "step": 2 / 255},
                     "eval_attack": {"eps": 8 / 255, "step": 2 / 255},
                     "epoch_end_order": "paper"},
        "lr_schedule_variant": "paper",
        "methods": {"twins": {"loss": "paper", "dual_bn": "paper"},
                    "autolora": {"lora_coverage": "paper", "lambda_measured": "epoch_start"},
                    "vanilla_rft": {},
                    # Neither CLAT nor the baselines' papers ask for the other choices of these
                    # attack details, so both presets keep the reference code's.
                    **BASELINE_REFERENCE_OPTIONS},
        "kl_normaliser": "batch",
    },
    "official": {
        # The official scripts pass ε = 0.0314 and step 0.00784 (spec §4, §11.14).
        # The official AutoLoRa loop measures λ's SA before, and tests after, the reload (§5).
        "training": {"train_attack": {"eps": 0.0314, "step": 0.00784},
                     "eval_attack": {"eps": 0.0314, "step": 0.00784},
                     "epoch_end_order": "official"},
        "lr_schedule_variant": "official",
        "methods": {"twins": {"loss": "official", "dual_bn": "official"},
                    "autolora": {"lora_coverage": "official", "lambda_measured": "epoch_end"},
                    "vanilla_rft": {},
                    **BASELINE_REFERENCE_OPTIONS},
        "kl_normaliser": "fixed_batch",
    },
}

#: Settings every method starts from (AutoLoRa Sec. 5 / Algorithm 1, Appendix A.1).
METHOD_TRAINING: dict[str, dict[str, Any]] = {
    "autolora": {"lr": 0.01, "lr_schedule": {"type": "auto", "every": 4, "min_lr": 1e-5}},
}

TRAIN_KEYS_FROM_FIDELITY = ("eval_batch_size",)

#: CLAT Sec. 4.1 evaluation: PGD ε 0.03, step 0.007, 10 steps, random start, ≥ 10 runs, min
CLAT_EVALUATION: dict[str, Any] = {
    "protocol": "clat", "attack": {"eps": 0.03, "step": 0.007, "steps": 10, "random_start": True},
    "restarts": 10, "examples": None, "apgd_ce": True, "apgd_ce_iterations": 100,
    "epsilons": [], "sweep_restarts": 1, "transfer_examples": None,
    "criticality_batch_sizes": [10, 30, 50, 100], "criticality_repeats": 1,
}


class ConfigError(ValueError):
    """A problem in config.yaml, raised before any job starts; the message names the key."""


def _schema() -> dict[str, Any]:
    text = resources.files("robustft").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _key_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        # A tagged mapping that switches its "type" (multistep → auto LR schedule) is replaced,
        # not merged: the old type's keys (e.g. factor 0.1) must not leak into the new one.
        switches = (isinstance(value, dict) and isinstance(out.get(key), dict)
                    and "type" in value and value["type"] != out[key].get("type"))
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not switches:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check the schema and every cross-reference; return the config with defaults filled."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{_key_path(e.absolute_path)}': {e.message}" for e in errors[:10]]
        raise ConfigError("invalid config.yaml:\n  " + "\n  ".join(lines))
    config = {"device": "auto", "methods": {}, **config}
    _check_references(config)
    return config


def _check_references(config: dict[str, Any]) -> None:
    from robustft.data import DATASETS
    from robustft.models import ARCHS, CIFAR_ARCHS

    def need(value: str, pool, key: str, what: str) -> None:
        if value not in pool:
            raise ConfigError(f"config key '{key}': unknown {what} {value!r}; "
                              f"known: {', '.join(sorted(pool))}")

    for name, ds in config["datasets"].items():
        need(ds["kind"], DATASETS, f"datasets.{name}.kind", "dataset kind")
        for method in ds.get("methods", {}):
            need(method, METHODS, f"datasets.{name}.methods.{method}", "method")
    for name, bb in config["backbones"].items():
        need(bb["arch"], {**ARCHS, **CIFAR_ARCHS}, f"backbones.{name}.arch", "architecture")
        if bb["source"] == "scratch":
            for key in ("eps_pt", "dataset", "method", "training"):
                if key in bb:
                    raise ConfigError(f"config key 'backbones.{name}.{key}': a scratch backbone "
                                      "has no pre-training (runs start from random init)")
        elif bb["source"] == "pretrain":
            for key in ("dataset", "method"):
                if key not in bb:
                    raise ConfigError(f"config key 'backbones.{name}.{key}': required when "
                                      "source is 'pretrain'")
            need(bb["dataset"], config["datasets"], f"backbones.{name}.dataset", "dataset")
            need(bb["method"], METHODS, f"backbones.{name}.method", "method")
        elif "eps_pt" not in bb:
            raise ConfigError(f"config key 'backbones.{name}.eps_pt': required for salman")
    for fname, fid in config["fidelities"].items():
        for method in fid.get("methods", {}):
            need(method, METHODS, f"fidelities.{fname}.methods.{method}", "method")
    for method, settings in config["methods"].items():
        need(method, METHODS, f"methods.{method}", "method")
        _check_params(method, settings.get("params", {}), f"methods.{method}.params")
    for name, var in config["variants"].items():
        need(var["method"], METHODS, f"variants.{name}.method", "method")
        _check_params(var["method"], var.get("params", {}), f"variants.{name}.params")
    _check_chains(config)
    for name, study in config["studies"].items():
        need(study["fidelity"], config["fidelities"], f"studies.{name}.fidelity", "fidelity")
        for g, grid in enumerate(study_grids(config, name)):
            where = f"studies.{name}" + (f".grids[{g}]" if "grids" in study else "")
            for key, pool, what in (("datasets", config["datasets"], "dataset"),
                                    ("backbones", config["backbones"], "backbone"),
                                    ("variants", _variant_pool(config), "variant")):
                if key not in grid:
                    raise ConfigError(f"config key '{where}.{key}': required (in the study or "
                                      "in every one of its grids)")
                for i, value in enumerate(grid[key]):
                    need(value, pool, f"{where}.{key}[{i}]", what)
            _check_resolution(config, grid, where)
        variants = study_variants(config, name)
        if "reference" in study and study["reference"] not in variants:
            raise ConfigError(f"config key 'studies.{name}.reference': "
                              f"{study['reference']!r} is not one of the study's variants")
        for i, comp in enumerate(study.get("comparisons", [])):
            for side in ("ours", "baseline"):
                if comp[side] not in variants:
                    raise ConfigError(f"config key 'studies.{name}.comparisons[{i}].{side}': "
                                      f"{comp[side]!r} is not one of the study's variants")
        known = known_metrics(config, study["fidelity"])
        for i, metric in enumerate(study.get("metrics", [])):
            if metric not in known:
                raise ConfigError(f"config key 'studies.{name}.metrics[{i}]': unknown metric "
                                  f"{metric!r} at fidelity {study['fidelity']!r}; known: "
                                  f"{', '.join(known)}")
        if study.get("transfer") and len(study_backbones(config, name)) < 2:
            raise ConfigError(f"config key 'studies.{name}.transfer': needs at least two "
                              "backbones to transfer between")
        for key in ("criticality", "derived"):
            if study.get(key) and not any(_is_clat(config, v) for v in variants):
                raise ConfigError(f"config key 'studies.{name}.{key}': read from CLAT runs, but "
                                  "none of the study's variants is a CLAT method")
    for i, target in enumerate(config["targets"]):
        need(target, config["studies"], f"targets[{i}]", "study")


def _check_chains(config: dict[str, Any]) -> None:
    """``variants.<v>.init`` names a known variant, and following ``init`` never loops."""
    pool = _variant_pool(config)
    for name, var in config["variants"].items():
        if "init" not in var:
            continue
        key = f"variants.{name}.init"
        if var["init"] not in pool:
            raise ConfigError(f"config key '{key}': unknown variant {var['init']!r}; known: "
                              f"{', '.join(sorted(pool))}")
        if var.get("training", {}).get("init_from") == "backbone":
            raise ConfigError(f"config key 'variants.{name}.training.init_from': a chained "
                              "variant starts from its upstream run's model ('model')")
        seen = [name]
        current = var["init"]
        while current in config["variants"]:
            if current in seen:
                loop = " → ".join([*seen[seen.index(current):], current])
                raise ConfigError(f"config key '{key}': the init chain loops ({loop})")
            seen.append(current)
            current = config["variants"][current].get("init")
            if current is None:
                break


def _check_resolution(config: dict[str, Any], grid: dict[str, Any], where: str) -> None:
    """CLAT's 32-px CIFAR architectures never run on upsampled inputs (``input_size``)."""
    from robustft.models import CIFAR_ARCHS

    for b in grid["backbones"]:
        if config["backbones"][b]["arch"] not in CIFAR_ARCHS:
            continue
        for i, d in enumerate(grid["datasets"]):
            size = config["datasets"][d].get("input_size")
            if size is not None:
                raise ConfigError(
                    f"config key '{where}.datasets[{i}]': dataset {d!r} is upsampled to "
                    f"{size} px (input_size) but backbone {b!r} is the 32-px CIFAR architecture "
                    f"{config['backbones'][b]['arch']!r}; use a dataset entry with input_size "
                    "null (e.g. cifar10_32)")


def known_metrics(config: dict[str, Any], fidelity: str) -> list[str]:
    """Metric names a study at this fidelity can show."""
    protocol = evaluation_protocol(config, fidelity)
    if protocol["protocol"] == "standard":
        return ["SA", "PGD10", "AA"]
    from robustft.evaluate import sweep_metric

    return (["SA", "PGD10", "PGD10_worst", "APGD_CE", "AA"]
            + [sweep_metric(e) for e in protocol["epsilons"]]
            + ["BB", "CRIT", "TIME_S", "EPOCH_S", "PARAMS", "PARAMS_TOTAL", "PARAMS_PCT"])


def _is_clat(config: dict[str, Any], variant: str) -> bool:
    from robustft.methods.clat import CLAT

    return issubclass(METHODS[variant_spec(config, variant)["method"]], CLAT)


def _check_params(method: str, params: dict[str, Any], key: str) -> None:
    defaults = METHODS[method].defaults
    for name, value in params.items():
        if name not in defaults:
            raise ConfigError(f"config key '{key}.{name}': unknown parameter of {method}; "
                              f"known: {', '.join(sorted(defaults))}")
        expected = type(defaults[name])
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int)
                                             and not isinstance(value, bool))
        if not ok:
            raise ConfigError(f"config key '{key}.{name}': expected {expected.__name__}, "
                              f"got {type(value).__name__} ({value!r})")


def _variant_pool(config: dict[str, Any]) -> set[str]:
    """Variants a study may name: the configured ones and every bare method name."""
    return set(config["variants"]) | set(METHODS)


def load_config(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        return validate(yaml.safe_load(handle))


# --- runs ------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Run:
    fidelity: str
    dataset: str
    backbone: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.fidelity}/{self.dataset}/{self.backbone}/{self.variant}/seed{self.seed}"

    @property
    def directory(self) -> str:
        return f"results/runs/{self.name}"

    @property
    def checkpoint_directory(self) -> str:
        return f"results/checkpoints/{self.name}"


def variant_spec(config: dict[str, Any], variant: str) -> dict[str, Any]:
    if variant in config["variants"]:
        return config["variants"][variant]
    if variant in METHODS:
        return {"method": variant}
    raise ConfigError(f"unknown variant {variant!r}")


def study_grids(config: dict[str, Any], study: str) -> list[dict[str, list[str]]]:
    """The study's grids: ``grids`` (missing keys from the study) or the study itself."""
    spec = config["studies"][study]
    base = {k: spec[k] for k in ("datasets", "backbones", "variants") if k in spec}
    return [{**base, **grid} for grid in spec.get("grids", [{}])]


def _union(config: dict[str, Any], study: str, key: str) -> list[str]:
    return list(dict.fromkeys(x for g in study_grids(config, study) for x in g.get(key, [])))


def study_variants(config: dict[str, Any], study: str) -> list[str]:
    return _union(config, study, "variants")


def study_backbones(config: dict[str, Any], study: str) -> list[str]:
    return _union(config, study, "backbones")


def study_datasets(config: dict[str, Any], study: str) -> list[str]:
    return _union(config, study, "datasets")


def study_runs(config: dict[str, Any], study: str) -> list[Run]:
    """The runs a study evaluates and aggregates (not the upstream runs they chain onto)."""
    spec = config["studies"][study]
    runs = [Run(spec["fidelity"], d, b, v, s) for g in study_grids(config, study)
            for d in g["datasets"] for b in g["backbones"] for v in g["variants"]
            for s in spec["seeds"]]
    return list(dict.fromkeys(runs))


def upstream_run(config: dict[str, Any], run: Run) -> Run | None:
    """The run a chained run starts from (``variants.<v>.init``), else None."""
    init = variant_spec(config, run.variant).get("init")
    return None if init is None else Run(run.fidelity, run.dataset, run.backbone, init, run.seed)


def run_chain(config: dict[str, Any], run: Run) -> list[Run]:
    """The run and every run it (transitively) starts from, upstream first."""
    chain = [run]
    while (up := upstream_run(config, chain[0])) is not None:
        chain.insert(0, up)
    return chain


def all_runs(config: dict[str, Any], studies: list[str]) -> list[Run]:
    """Runs of several studies; identical runs requested twice are one run."""
    return sorted({run for study in studies for run in study_runs(config, study)})


def all_training_runs(config: dict[str, Any], studies: list[str]) -> list[Run]:
    """Every training job of the studies: their runs plus the upstream runs of chained ones."""
    return sorted({r for run in all_runs(config, studies) for r in run_chain(config, run)})


def backbone_input(config: dict[str, Any], run: Run) -> str | None:
    """The file a run's initial weights come from: the upstream run's model (chained runs),
    the backbone file, or None (scratch backbones)."""
    up = upstream_run(config, run)
    if up is not None:
        return f"{up.directory}/model_best.pt"
    if config["backbones"][run.backbone]["source"] == "scratch":
        return None
    return f"results/backbones/{run.backbone}.pt"


def _method_defaults(config: dict[str, Any], method: str) -> dict[str, Any]:
    preset = PRESETS[config["preset"]]
    params = dict(preset["methods"].get(method, {}))
    if "kl_normaliser" in METHODS[method].defaults:
        params["kl_normaliser"] = preset["kl_normaliser"]
    return params


def train_settings(config: dict[str, Any], run: Run) -> dict[str, Any]:
    """Fully resolved :class:`robustft.train.TrainConfig` values of one run."""
    preset = PRESETS[config["preset"]]
    var = variant_spec(config, run.variant)
    method = var["method"]
    dataset = config["datasets"][run.dataset]
    backbone = config["backbones"][run.backbone]
    fidelity = config["fidelities"][run.fidelity]
    params = _method_defaults(config, method)
    training = deep_merge(preset["training"], METHOD_TRAINING.get(method, {}))
    for layer in (config["methods"].get(method, {}), {"training": dataset.get("training", {})},
                  dataset.get("methods", {}).get(method, {}),
                  {"training": fidelity.get("training", {})},
                  fidelity.get("methods", {}).get(method, {}), var):
        params = deep_merge(params, layer.get("params", {}))
        training = deep_merge(training, layer.get("training", {}))
    if training.get("lr_schedule", {}).get("type") == "auto":
        training["lr_schedule"].setdefault("variant", preset["lr_schedule_variant"])
    for key in TRAIN_KEYS_FROM_FIDELITY:
        if key in fidelity:
            training.setdefault(key, fidelity[key])
    from robustft.train import TrainConfig

    base = TrainConfig(run_name=run.name, method=method, arch=backbone["arch"], seed=run.seed)
    resolved = deep_merge(base.__dict__, training)
    resolved.update(method_params=params, width=backbone.get("width"),
                    input_size=dataset.get("input_size"), device=config["device"])
    if "init" in var:
        resolved["init_from"] = "model"
    elif resolved["init_from"] == "model":
        raise ConfigError(f"config key 'variants.{run.variant}.init': run {run.name} resolves "
                          "training.init_from 'model' but names no upstream variant to start "
                          "from")
    return resolved


def run_identity(config: dict[str, Any], run: Run) -> dict[str, Any]:
    """What run.yaml records about a run's place in the grid (read by the aggregation)."""
    method = variant_spec(config, run.variant)["method"]
    return {"fidelity": run.fidelity, "dataset": run.dataset, "backbone": run.backbone,
            "variant": run.variant, "seed": run.seed, "method": method,
            "preset": config["preset"]}


def evaluation_protocol(config: dict[str, Any], fidelity: str) -> dict[str, Any]:
    """``fidelities.<f>.evaluation`` with defaults: ``{"protocol": "standard"}`` or the CLAT
    protocol (:data:`CLAT_EVALUATION` overridden by the configured keys)."""
    spec = config["fidelities"][fidelity].get("evaluation", {})
    if spec.get("protocol", "standard") == "standard":
        return {"protocol": "standard"}
    return deep_merge(CLAT_EVALUATION, spec)


def eval_settings(config: dict[str, Any], run: Run, autoattack: bool) -> dict[str, Any]:
    settings = train_settings(config, run)
    fidelity = config["fidelities"][run.fidelity]
    protocol = evaluation_protocol(config, run.fidelity)
    out = {
        "arch": settings["arch"], "width": settings["width"],
        "input_size": settings["input_size"], "method": settings["method"],
        "method_params": settings["method_params"], "eval_attack": settings["eval_attack"],
        "autoattack": autoattack, "autoattack_eps": settings["eval_attack"]["eps"],
        "autoattack_examples": fidelity.get("autoattack_examples"),
        "autoattack_batch_size": fidelity.get("autoattack_batch_size", 250),
        "batch_size": fidelity.get("eval_batch_size", 256), "seed": 0,
        "device": config["device"],
    }
    if protocol["protocol"] == "clat":
        out.update(protocol=protocol, eval_attack=protocol["attack"],
                   autoattack_eps=protocol["attack"]["eps"])
    return out


def model_settings(config: dict[str, Any], run: Run) -> dict[str, Any]:
    """What rebuilding a run's trained model needs (``robustft.evaluate.load_trained``)."""
    s = train_settings(config, run)
    return {k: s[k] for k in ("arch", "width", "input_size", "method", "method_params")}


# --- CLAT Table 2 (transfer) and Table 7 (criticality) jobs ------------------------------------
@dataclass(frozen=True, order=True)
class TransferPair:
    """Black-box transfer between the runs of two backbones (both directions, one job)."""

    fidelity: str
    dataset: str
    variant: str
    seed: int
    first: str
    second: str

    def run(self, backbone: str) -> Run:
        return Run(self.fidelity, self.dataset, backbone, self.variant, self.seed)

    @property
    def path(self) -> str:
        return (f"results/transfer/{self.fidelity}/{self.dataset}/{self.variant}/seed{self.seed}/"
                f"{self.first}/{self.second}.json")


def transfer_pairs(config: dict[str, Any], study: str) -> list[TransferPair]:
    """Every unordered pair of the study's backbones that share (dataset, variant, seed), in the
    order of ``backbones`` (so a pair is one job whichever study asks for it)."""
    spec = config["studies"][study]
    if not spec.get("transfer"):
        return []
    order = list(config["backbones"])
    runs = study_runs(config, study)
    by_group: dict[tuple, list[str]] = {}
    for r in runs:
        by_group.setdefault((r.fidelity, r.dataset, r.variant, r.seed), []).append(r.backbone)
    pairs = []
    for (fid, ds, var, seed), backbones in by_group.items():
        backbones = sorted(set(backbones), key=order.index)
        pairs += [TransferPair(fid, ds, var, seed, a, b)
                  for i, a in enumerate(backbones) for b in backbones[i + 1:]]
    return pairs


def transfer_settings(config: dict[str, Any], pair: TransferPair) -> dict[str, Any]:
    protocol = deep_merge(CLAT_EVALUATION, config["fidelities"][pair.fidelity]
                          .get("evaluation", {}))
    fidelity = config["fidelities"][pair.fidelity]
    return {"models": {b: model_settings(config, pair.run(b)) for b in (pair.first, pair.second)},
            "attack": protocol["attack"], "examples": protocol["transfer_examples"],
            "batch_size": fidelity.get("eval_batch_size", 256), "seed": 0,
            "device": config["device"],
            "identity": {"fidelity": pair.fidelity, "dataset": pair.dataset,
                         "variant": pair.variant, "seed": pair.seed,
                         "backbones": [pair.first, pair.second]}}


def criticality_runs(config: dict[str, Any], study: str) -> list[Run]:
    """CLAT Table 7: the study's CLAT runs whose starting model is measured."""
    if not config["studies"][study].get("criticality"):
        return []
    return [r for r in study_runs(config, study) if _is_clat(config, r.variant)]


def criticality_path(run: Run) -> str:
    return f"results/criticality/{run.name}.json"


def criticality_settings(config: dict[str, Any], run: Run) -> dict[str, Any]:
    """Measure the model the CLAT run starts from (its upstream run's, else its own)."""
    protocol = deep_merge(CLAT_EVALUATION, config["fidelities"][run.fidelity]
                          .get("evaluation", {}))
    settings = train_settings(config, run)
    measured = upstream_run(config, run) or run
    return {"model": model_settings(config, measured), "measured_run": measured.name,
            "measured_variant": measured.variant,
            "measured_method": method_label(config, measured.variant),
            "identity": {"fidelity": run.fidelity, "dataset": run.dataset,
                         "backbone": run.backbone, "variant": run.variant, "seed": run.seed},
            "clat_method": settings["method"], "clat_params": settings["method_params"],
            "train_attack": settings["train_attack"],
            "batch_sizes": protocol["criticality_batch_sizes"],
            "repeats": protocol["criticality_repeats"], "seed": run.seed,
            "device": config["device"]}


def criticality_inputs(config: dict[str, Any], run: Run) -> dict[str, str]:
    measured = upstream_run(config, run) or run
    return {"model": f"{measured.directory}/model_best.pt",
            "log": f"{measured.directory}/train_log.csv"}


def needs_autoattack(config: dict[str, Any], run: Run, studies: list[str]) -> bool:
    """AutoAttack runs for a run if any requested study containing it asks for it."""
    return any(config["studies"][s].get("autoattack", True) and run in study_runs(config, s)
               for s in studies)


def backbone_settings(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Pre-training settings of a self-trained backbone (the demo's robust source model)."""
    bb = config["backbones"][name]
    from robustft.train import TrainConfig

    base = TrainConfig(run_name=f"backbone/{name}", method=bb["method"], arch=bb["arch"], seed=0)
    resolved = deep_merge(base.__dict__, deep_merge(PRESETS[config["preset"]]["training"],
                                                    bb.get("training", {})))
    resolved.update(width=bb.get("width"), device=config["device"],
                    method_params=_method_defaults(config, bb["method"]),
                    selection="last")
    return resolved


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def method_label(config: dict[str, Any], variant: str) -> str:
    """The printed method of a variant: ``paper_method``, else the display names along its
    chain joined by "+" (``pgd_at-pre50`` → ``pgd_at+clat``: "PGD-AT+CLAT", CLAT's spelling)."""
    spec = variant_spec(config, variant)
    if spec.get("paper_method"):
        return spec["paper_method"]
    own = METHODS[spec["method"]].display_name
    return f"{method_label(config, spec['init'])}+{own}" if "init" in spec else own
