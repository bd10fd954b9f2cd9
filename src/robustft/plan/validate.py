"""config.yaml → the validated config, or a :class:`ConfigError` naming the key, before any job.

Three layers of checks, in order: the JSON schema (``config.schema.yaml`` beside this module:
every mapping rejects unknown keys, every value has a type); the cross-references (a study's
datasets, backbones and variants exist, ``init`` chains end, metrics exist at the fidelity,
32-px networks never see upsampled data); and every method parameter against its method's
schema (:mod:`robustft.plan.catalog`), wherever ``params`` appear: ``methods.<m>``,
``datasets.<d>.methods.<m>``, ``fidelities.<f>.methods.<m>`` and ``variants.<v>``.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from robustft.plan import catalog
from robustft.plan.errors import ConfigError
from robustft.plan.grid import (
    AS_IS,
    is_as_is,
    is_clat,
    study_backbones,
    study_grids,
    study_variants,
    variant_pool,
    variant_spec,
)
from robustft.plan.studies import known_metrics

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def schema() -> dict[str, Any]:
    text = resources.files("robustft.plan").joinpath("config.schema.yaml").read_text()
    return yaml.load(text, Loader=_Loader)  # a safe loader (C or Python)


def _key_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def load_config(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        return validate(yaml.load(handle, Loader=_Loader))


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check the schema, every cross-reference and every method parameter; return the config
    with defaults filled."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{_key_path(e.absolute_path)}': {e.message}" for e in errors[:10]]
        raise ConfigError("invalid config.yaml:\n  " + "\n  ".join(lines))
    config = {"device": "auto", "methods": {}, **config}
    _check_references(config)
    return config


def _need(value: str, pool, key: str, what: str) -> None:
    if value not in pool:
        raise ConfigError(
            f"config key '{key}': unknown {what} {value!r}; known: {', '.join(sorted(pool))}"
        )


def _check_params(method: str, params: dict[str, Any], key: str) -> None:
    problems = catalog.check_params(method, params)
    if problems:
        lines = [
            f"config key '{key}{'.' + name if name else ''}': {problem}"
            for name, problem in problems
        ]
        raise ConfigError("\n".join(lines))


def _check_method_settings(owner: str, methods: dict[str, Any]) -> None:
    """``<owner>.methods.<m>``: a known method, and its ``params`` fit its schema."""
    for method, settings in methods.items():
        _need(method, catalog.METHODS, f"{owner}.{method}", "method")
        _check_params(method, settings.get("params", {}), f"{owner}.{method}.params")


def _check_references(config: dict[str, Any]) -> None:
    for name, ds in config["datasets"].items():
        _need(ds["kind"], catalog.DATASET_KINDS, f"datasets.{name}.kind", "dataset kind")
        _check_method_settings(f"datasets.{name}.methods", ds.get("methods", {}))
    for name, bb in config["backbones"].items():
        _check_backbone(config, name, bb)
    for fname, fid in config["fidelities"].items():
        _check_method_settings(f"fidelities.{fname}.methods", fid.get("methods", {}))
    _check_method_settings("methods", config["methods"])
    for name, var in config["variants"].items():
        if var["method"] == AS_IS:
            _check_as_is(name, var)
            continue
        _need(var["method"], catalog.METHODS, f"variants.{name}.method", "method")
        _check_params(var["method"], var.get("params", {}), f"variants.{name}.params")
    _check_chains(config)
    for name in config["studies"]:
        _check_study(config, name)
    for i, target in enumerate(config["targets"]):
        _need(target, config["studies"], f"targets[{i}]", "study")


def _check_as_is(name: str, var: dict[str, Any]) -> None:
    """An as-is variant trains nothing: no parameters, settings or upstream run to set."""
    for key in ("params", "training", "init"):
        if key in var:
            raise ConfigError(
                f"config key 'variants.{name}.{key}': method {AS_IS!r} evaluates the backbone "
                "file as it is (no training), so it takes no params, training or init"
            )


#: ``robustbench.<dataset>.<threat model>.<name>`` (robustft.models.robustbench.ZooModel)
ROBUSTBENCH_PREFIX = "robustbench."


def robustbench_dataset(arch: str) -> str | None:
    """The dataset a RobustBench zoo architecture was trained on, None for other archs."""
    if not arch.startswith(ROBUSTBENCH_PREFIX):
        return None
    return arch.split(".")[1]


def _check_robustbench(name: str, bb: dict[str, Any]) -> None:
    parts = bb["arch"].split(".")
    if not bb["arch"].startswith(ROBUSTBENCH_PREFIX) or len(parts) != 4 or not all(parts):
        raise ConfigError(
            f"config key 'backbones.{name}.arch': a robustbench backbone's arch is "
            f"'robustbench.<dataset>.<threat model>.<name>' (e.g. "
            f"robustbench.cifar10.Linf.Peng2023Robust), got {bb['arch']!r}"
        )
    for key in ("eps_pt", "dataset", "method", "training", "width"):
        if key in bb:
            raise ConfigError(
                f"config key 'backbones.{name}.{key}': a robustbench backbone is the zoo model "
                "as RobustBench publishes it (its arch names everything)"
            )


def _check_backbone(config: dict[str, Any], name: str, bb: dict[str, Any]) -> None:
    if bb["source"] == "robustbench":
        _check_robustbench(name, bb)
        return
    _need(bb["arch"], catalog.ARCHS, f"backbones.{name}.arch", "architecture")
    if bb["source"] == "scratch":
        for key in ("eps_pt", "dataset", "method", "training"):
            if key in bb:
                raise ConfigError(
                    f"config key 'backbones.{name}.{key}': a scratch backbone "
                    "has no pre-training (runs start from random init)"
                )
    elif bb["source"] == "pretrain":
        for key in ("dataset", "method"):
            if key not in bb:
                raise ConfigError(
                    f"config key 'backbones.{name}.{key}': required when source is 'pretrain'"
                )
        _need(bb["dataset"], config["datasets"], f"backbones.{name}.dataset", "dataset")
        _need(bb["method"], catalog.METHODS, f"backbones.{name}.method", "method")
    elif "eps_pt" not in bb:
        raise ConfigError(f"config key 'backbones.{name}.eps_pt': required for salman")


def _check_study(config: dict[str, Any], name: str) -> None:
    study = config["studies"][name]
    _need(study["fidelity"], config["fidelities"], f"studies.{name}.fidelity", "fidelity")
    for g, grid in enumerate(study_grids(config, name)):
        where = f"studies.{name}" + (f".grids[{g}]" if "grids" in study else "")
        for key, pool, what in (
            ("datasets", config["datasets"], "dataset"),
            ("backbones", config["backbones"], "backbone"),
            ("variants", variant_pool(config), "variant"),
        ):
            if key not in grid:
                raise ConfigError(
                    f"config key '{where}.{key}': required (in the study or "
                    "in every one of its grids)"
                )
            for i, value in enumerate(grid[key]):
                _need(value, pool, f"{where}.{key}[{i}]", what)
        _check_resolution(config, grid, where)
        _check_zoo_runs(config, grid, where)
    variants = study_variants(config, name)
    if "reference" in study and study["reference"] not in variants:
        raise ConfigError(
            f"config key 'studies.{name}.reference': "
            f"{study['reference']!r} is not one of the study's variants"
        )
    for i, comp in enumerate(study.get("comparisons", [])):
        for side in ("ours", "baseline"):
            if comp[side] not in variants:
                raise ConfigError(
                    f"config key 'studies.{name}.comparisons[{i}].{side}': "
                    f"{comp[side]!r} is not one of the study's variants"
                )
    known = known_metrics(config, study["fidelity"])
    for i, metric in enumerate(study.get("metrics", [])):
        if metric not in known:
            raise ConfigError(
                f"config key 'studies.{name}.metrics[{i}]': unknown metric "
                f"{metric!r} at fidelity {study['fidelity']!r}; known: "
                f"{', '.join(known)}"
            )
    if study.get("transfer") and len(study_backbones(config, name)) < 2:
        raise ConfigError(
            f"config key 'studies.{name}.transfer': needs at least two "
            "backbones to transfer between"
        )
    for key in ("criticality", "derived"):
        if study.get(key) and not any(is_clat(config, v) for v in variants):
            raise ConfigError(
                f"config key 'studies.{name}.{key}': read from CLAT runs, but "
                "none of the study's variants is a CLAT method"
            )


def _check_chains(config: dict[str, Any]) -> None:
    """``variants.<v>.init`` names a known variant, and following ``init`` never loops."""
    pool = variant_pool(config)
    for name, var in config["variants"].items():
        if "init" not in var:
            continue
        key = f"variants.{name}.init"
        if var["init"] not in pool:
            raise ConfigError(
                f"config key '{key}': unknown variant {var['init']!r}; known: "
                f"{', '.join(sorted(pool))}"
            )
        if var.get("training", {}).get("init_from") == "backbone":
            raise ConfigError(
                f"config key 'variants.{name}.training.init_from': a chained "
                "variant starts from its upstream run's model ('model')"
            )
        seen = [name]
        current = var["init"]
        while current in config["variants"]:
            if current in seen:
                loop = " → ".join([*seen[seen.index(current) :], current])
                raise ConfigError(f"config key '{key}': the init chain loops ({loop})")
            seen.append(current)
            current = variant_spec(config, current).get("init")
            if current is None:
                break


def _check_zoo_runs(config: dict[str, Any], grid: dict[str, Any], where: str) -> None:
    """A zoo model keeps its head, so it runs only on its own dataset; an as-is variant needs a
    backbone file that describes its model (a robustbench backbone)."""
    for b in grid["backbones"]:
        bb = config["backbones"][b]
        zoo = robustbench_dataset(bb["arch"]) if bb["source"] == "robustbench" else None
        for i, d in enumerate(grid["datasets"]):
            kind = config["datasets"][d]["kind"]
            if zoo is not None and kind != zoo:
                raise ConfigError(
                    f"config key '{where}.datasets[{i}]': backbone {b!r} is the RobustBench "
                    f"{zoo} model {bb['arch']!r} (its {zoo} head is kept), but dataset {d!r} is "
                    f"{kind}; pair it with a {zoo} dataset"
                )
        for i, v in enumerate(grid["variants"]):
            as_is = next((u for u in _init_chain(config, v) if is_as_is(config, u)), None)
            if as_is is not None and zoo is None:
                raise ConfigError(
                    f"config key '{where}.variants[{i}]': {as_is!r} evaluates the backbone file "
                    f"as it is, but backbone {b!r} (source {bb['source']}) has no file with its "
                    "classifier; as-is runs need a robustbench backbone"
                )


def _init_chain(config: dict[str, Any], variant: str) -> list[str]:
    """The variant and every variant it (transitively) starts from (chains end: checked)."""
    chain = [variant]
    while (up := variant_spec(config, chain[-1]).get("init")) is not None:
        chain.append(up)
    return chain


def _is_32px(arch: str) -> bool:
    """CLAT's CIFAR networks and RobustBench's CIFAR zoo models take 32-px inputs."""
    zoo = robustbench_dataset(arch)
    return zoo in ("cifar10", "cifar100") if zoo is not None else catalog.ARCHS[arch]


def _check_resolution(config: dict[str, Any], grid: dict[str, Any], where: str) -> None:
    """CLAT's 32-px CIFAR architectures never run on upsampled inputs (``input_size``)."""
    for b in grid["backbones"]:
        if not _is_32px(config["backbones"][b]["arch"]):
            continue
        for i, d in enumerate(grid["datasets"]):
            size = config["datasets"][d].get("input_size")
            if size is not None:
                raise ConfigError(
                    f"config key '{where}.datasets[{i}]': dataset {d!r} is upsampled to "
                    f"{size} px (input_size) but backbone {b!r} is the 32-px CIFAR architecture "
                    f"{config['backbones'][b]['arch']!r}; use a dataset entry with input_size "
                    "null (e.g. cifar10_32)"
                )
