"""config.yaml → validated settings → studies expanded into runs with resolved parameters.

Used by ``rules/common.smk`` and by the tests, so the whole DAG logic is testable in plain
pytest. A *run* is (fidelity, dataset, backbone, variant, seed); its fully resolved training
settings are the ``train`` rule's ``params``, so changing one ablation value re-runs exactly the
runs whose resolved settings changed.

Resolution order of a run's training settings (later wins):
  TrainConfig defaults → preset → ``methods.<m>`` → ``datasets.<d>.training``
  → ``datasets.<d>.methods.<m>`` (Table 7) → ``fidelities.<f>.training``
  → ``fidelities.<f>.methods.<m>`` → ``variants.<v>``.
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

#: Where the paper and the official code differ (specs §11), each preset picks one side.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "training": {"train_attack": {"eps": 8 / 255, "step": 2 / 255},
                     "eval_attack": {"eps": 8 / 255, "step": 2 / 255}},
        "lr_schedule_variant": "paper",
        "methods": {"twins": {"loss": "paper", "dual_bn": "paper"},
                    "autolora": {"lora_coverage": "paper"},
                    "vanilla_rft": {}},
        "kl_normaliser": "batch",
    },
    "official": {
        # The official scripts pass ε = 0.0314 and step 0.00784 (spec §4, §11.14).
        "training": {"train_attack": {"eps": 0.0314, "step": 0.00784},
                     "eval_attack": {"eps": 0.0314, "step": 0.00784}},
        "lr_schedule_variant": "official",
        "methods": {"twins": {"loss": "official", "dual_bn": "official"},
                    "autolora": {"lora_coverage": "official"},
                    "vanilla_rft": {}},
        "kl_normaliser": "fixed_batch",
    },
}

#: Settings every method starts from (AutoLoRa Sec. 5 / Algorithm 1, Appendix A.1).
METHOD_TRAINING: dict[str, dict[str, Any]] = {
    "autolora": {"lr": 0.01, "lr_schedule": {"type": "auto", "every": 4, "min_lr": 1e-5}},
}

TRAIN_KEYS_FROM_FIDELITY = ("eval_batch_size",)


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
    from robustft.models import ARCHS

    def need(value: str, pool, key: str, what: str) -> None:
        if value not in pool:
            raise ConfigError(f"config key '{key}': unknown {what} {value!r}; "
                              f"known: {', '.join(sorted(pool))}")

    for name, ds in config["datasets"].items():
        need(ds["kind"], DATASETS, f"datasets.{name}.kind", "dataset kind")
        for method in ds.get("methods", {}):
            need(method, METHODS, f"datasets.{name}.methods.{method}", "method")
    for name, bb in config["backbones"].items():
        need(bb["arch"], ARCHS, f"backbones.{name}.arch", "architecture")
        if bb["source"] == "pretrain":
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
    for name, study in config["studies"].items():
        need(study["fidelity"], config["fidelities"], f"studies.{name}.fidelity", "fidelity")
        for key, pool, what in (("datasets", config["datasets"], "dataset"),
                                ("backbones", config["backbones"], "backbone"),
                                ("variants", _variant_pool(config), "variant")):
            for i, value in enumerate(study[key]):
                need(value, pool, f"studies.{name}.{key}[{i}]", what)
        if "reference" in study and study["reference"] not in study["variants"]:
            raise ConfigError(f"config key 'studies.{name}.reference': "
                              f"{study['reference']!r} is not one of the study's variants")
    for i, target in enumerate(config["targets"]):
        need(target, config["studies"], f"targets[{i}]", "study")


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


def study_runs(config: dict[str, Any], study: str) -> list[Run]:
    spec = config["studies"][study]
    return [Run(spec["fidelity"], d, b, v, s)
            for d in spec["datasets"] for b in spec["backbones"]
            for v in spec["variants"] for s in spec["seeds"]]


def all_runs(config: dict[str, Any], studies: list[str]) -> list[Run]:
    """Runs of several studies; identical runs requested twice are one run."""
    return sorted({run for study in studies for run in study_runs(config, study)})


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
    return resolved


def run_identity(config: dict[str, Any], run: Run) -> dict[str, Any]:
    """What run.yaml records about a run's place in the grid (read by the aggregation)."""
    method = variant_spec(config, run.variant)["method"]
    return {"fidelity": run.fidelity, "dataset": run.dataset, "backbone": run.backbone,
            "variant": run.variant, "seed": run.seed, "method": method,
            "preset": config["preset"]}


def eval_settings(config: dict[str, Any], run: Run, autoattack: bool) -> dict[str, Any]:
    settings = train_settings(config, run)
    fidelity = config["fidelities"][run.fidelity]
    return {
        "arch": settings["arch"], "width": settings["width"],
        "input_size": settings["input_size"], "method": settings["method"],
        "method_params": settings["method_params"], "eval_attack": settings["eval_attack"],
        "autoattack": autoattack, "autoattack_eps": settings["eval_attack"]["eps"],
        "autoattack_examples": fidelity.get("autoattack_examples"),
        "autoattack_batch_size": fidelity.get("autoattack_batch_size", 250),
        "batch_size": fidelity.get("eval_batch_size", 256), "seed": 0,
        "device": config["device"],
    }


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


# --- aggregation and report --------------------------------------------------------------------
def _labels(paper_variant: str | None) -> dict[str, str]:
    """'rank=4' → {'rank': '4'}: the group labels the paper's variant column is matched on."""
    if not paper_variant:
        return {}
    return dict(part.split("=", 1) for part in paper_variant.split(";"))


def display_name(config: dict[str, Any], variant: str) -> str:
    spec = variant_spec(config, variant)
    return spec.get("label") or METHODS[spec["method"]].display_name


def aggregate_spec(config: dict[str, Any], study: str) -> dict[str, Any]:
    """The ``--spec`` of ``robustft.steps.aggregate`` for one study."""
    s = config["studies"][study]
    paper = s.get("paper")
    printed = (paper or {}).get("variants", {})
    variants = {}
    for v in s["variants"]:
        spec = variant_spec(config, v)
        variants[v] = {"method": METHODS[spec["method"]].display_name,
                       "labels": _labels(printed.get(v, spec.get("paper_variant")))}
    comparisons = [{"ours": s["reference"], "baseline": v}
                   for v in s["variants"] if "reference" in s and v != s["reference"]]
    out: dict[str, Any] = {"title": study, "description": s.get("description", ""),
                           "test": s.get("ttest", "welch"), "variants": variants,
                           "comparisons": comparisons, "paper": None}
    if paper:
        out["paper"] = {
            "paper": paper["name"], "table": paper["table"],
            "pvalue_table": 8 if paper["name"] == "AutoLoRa" and paper["table"] in (1, 2) else None,
            "datasets": {d: config["datasets"][d]["paper_name"] for d in s["datasets"]
                         if "paper_name" in config["datasets"][d]},
            "backbones": {b: _printed_backbone(config["backbones"][b],
                                               paper.get("backbone_variants", False))
                          for b in s["backbones"] if "paper_name" in config["backbones"][b]},
        }
        if paper.get("diff_metric"):  # e.g. Table 5's printed "diff." column
            for comparison in comparisons:
                comparison["paper_diff"] = {"metric": paper["diff_metric"], "variant": ""}
        if "metrics" in paper:
            out["paper"]["metrics"] = paper["metrics"]
    return out


def _printed_backbone(backbone: dict[str, Any], with_variant: bool) -> Any:
    """A backbone's printed name, plus its printed variant (``eps_pt=1/255``) in studies that
    sweep backbones (AutoLoRa Table 4)."""
    if with_variant and backbone.get("paper_variant"):
        return {"name": backbone["paper_name"], "variant": backbone["paper_variant"]}
    return backbone["paper_name"]


def report_provenance(config: dict[str, Any], root: str | Path = ".") -> dict[str, Any]:
    """What the report states about where its numbers come from."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=root, capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown (not a git checkout)", False
    packages = {}
    for name in ("robustft", "torch", "torchvision", "snakemake", "pyautoattack", "numpy",
                 "scipy", "pandas"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    fidelities = sorted({config["studies"][s]["fidelity"] for s in config["targets"]})
    return {"git_commit": commit + (" (uncommitted changes)" if dirty else ""),
            "config_hash": config_hash(config), "preset": config["preset"],
            "device": config["device"], "fidelity": ", ".join(fidelities),
            "python": platform.python_version(), "packages": packages}
