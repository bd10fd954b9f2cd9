"""The protocol and evidence behind a run's numbers, as the report states them beside a table.

Owns the reading of *how* a number was obtained from a run's files: which checkpoint was kept
and on which split it was selected, the attack of each metric (ε, step, steps, restarts), the
number of test examples, the precision, the device the steps actually ran on and the wall time
of training and evaluation. Everything is optional: a file written before a fact was recorded
gives ``None`` for it and the report prints "not recorded" instead of guessing.

Where the facts live (written by ``robustft.steps.train`` / ``robustft.evaluate``):

* ``run.yaml``: ``settings`` (the resolved :class:`robustft.contracts.TrainConfig`:
  ``selection``, ``epochs``, ``train_attack``, ``precision`` — omitted when fp32 — and the
  requested ``device``) and ``provenance`` (the device actually used and the wall time, when
  the training step records them);
* ``eval.json``: ``metrics.<m>.n`` and ``.attack`` / ``.restarts`` / ``.config``,
  ``timing`` (seconds per attack), ``provenance.device`` (the evaluation's device) and
  ``provenance.precision`` when recorded;
* ``train_log.csv``: ``seconds`` per epoch (their sum is the training time when the run does
  not record its wall time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

__all__ = [
    "SELECTION",
    "attack_text",
    "eps_text",
    "run_protocol",
    "selection_text",
]

#: selection setting -> (split, what is maximised); "test" selection is the official protocol
#: of both papers' code (the best epoch by test-set robust accuracy), which makes the reported
#: test numbers an optimistic estimate — the report says so beside the table
SELECTION: dict[str, tuple[str, str]] = {
    "test_pgd": ("test", "best PGD accuracy on the test set"),
    "val_pgd": ("validation", "best PGD accuracy on the validation split"),
    "test_nat": ("test", "best natural accuracy on the test set"),
    "val_nat": ("validation", "best natural accuracy on the validation split"),
    "last": ("none", "the last epoch"),
    "as_is": ("none", "no training: the published model as downloaded"),
}


def selection_text(selection: str | None) -> str:
    """A sentence fragment for a selection setting, warning when it selects on the test set."""
    if not selection:
        return "not recorded"
    split, what = SELECTION.get(selection, ("?", selection))
    text = f"{what} ({selection})"
    if split == "test":
        text += (
            " — the official protocol: the checkpoint is chosen on the same test set the "
            "table reports, so these test numbers are optimistic"
        )
    return text


def eps_text(eps: Any) -> str:
    """ε as the papers print it: ``8/255`` when it is a small multiple of 1/255."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        return str(eps)
    frac = Fraction(value).limit_denominator(255)
    if frac.denominator == 255 and abs(float(frac) - value) < 1e-9:
        return f"{frac.numerator}/255"
    if abs(value * 255 - round(value * 255)) < 1e-6:
        return f"{round(value * 255)}/255"
    return f"{value:g}"


def attack_text(metric: Mapping[str, Any] | None) -> str:
    """The attack behind one ``eval.json`` metric: ``ε 8/255 · step 2/255 · 10 steps · 1
    restart`` for PGD, the version/attacks for AutoAttack, "" for a clean metric."""
    if not isinstance(metric, Mapping):
        return ""
    attack = metric.get("attack")
    if isinstance(attack, Mapping) and "eps" in attack:
        parts = [f"ε {eps_text(attack['eps'])}"]
        if attack.get("step") is not None:
            parts.append(f"step {eps_text(attack['step'])}")
        if attack.get("steps") is not None:
            steps = int(attack["steps"])
        parts.append(f"{steps} step{'s' if steps != 1 else ''}")
        restarts = int(metric.get("restarts") or 1)
        parts.append(f"{restarts} restart{'s' if restarts != 1 else ''}")
        if attack.get("random_start") is not None:
            parts.append("random start" if attack["random_start"] else "no random start")
        return " · ".join(parts)
    config = metric.get("config")
    if isinstance(config, Mapping):
        parts = []
        if config.get("eps") is not None:
            parts.append(f"ε {eps_text(config['eps'])}")
        if config.get("version"):
            parts.append(f"AutoAttack {config['version']}")
        if config.get("attacks_to_run"):
            parts.append("+".join(map(str, config["attacks_to_run"])))
        return " · ".join(parts) or "AutoAttack"
    if metric.get("eps") is not None:
        return f"ε {eps_text(metric['eps'])}"
    return ""


def _mapping(obj: Any) -> Mapping[str, Any]:
    return obj if isinstance(obj, Mapping) else {}


def _device(prov: Mapping[str, Any]) -> str | None:
    """``cuda:0 (NVIDIA A100)``: the device used and, when recorded, its name."""
    device = _first(prov.get("device_used"), prov.get("device"))
    name = prov.get("device_name")
    if device and name and str(name) != str(device):
        return f"{device} ({name})"
    return None if device is None else str(device)


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _seconds(values: Sequence[Any] | None) -> float | None:
    """Sum of the finite per-epoch seconds of a training log (None without any)."""
    finite = [float(v) for v in values or () if v is not None and math.isfinite(float(v))]
    return sum(finite) if finite else None


def run_protocol(
    run_yaml: Mapping[str, Any],
    eval_json: Mapping[str, Any],
    train_log: Mapping[str, Sequence[Any]] | None,
) -> dict[str, Any]:
    """The facts of one run the report prints (``None`` where a file does not record one)."""
    settings = _mapping(run_yaml.get("settings"))
    # "compute": what the step actually used (device, its name, precision, channels_last,
    # threads, wall time), recorded by the training step in run.yaml and by the evaluation in
    # eval.json; "provenance" is read too for files that kept these facts there
    train_prov = {**_mapping(run_yaml.get("provenance")), **_mapping(run_yaml.get("compute"))}
    eval_prov = {**_mapping(eval_json.get("provenance")), **_mapping(eval_json.get("compute"))}
    timing = eval_json.get("timing") or {}
    # a recorded wall time wins over the sum of the per-attack times
    eval_seconds = (
        [float(timing["wall_seconds"])]
        if timing.get("wall_seconds") is not None
        else [float(v) for k, v in timing.items() if k.endswith("seconds") and v is not None]
    )
    train_attack = settings.get("train_attack")
    # precision is omitted from run.yaml's settings when it is the default (fp32)
    train_precision = _first(
        train_prov.get("precision"), settings.get("precision"), "fp32" if settings else None
    )
    schedule = _mapping(settings.get("lr_schedule"))
    return {
        # what the paper figures plot against: CLAT's k (Figure 3) and the epochs a chained
        # run's schedule starts after (Figure 2's split of the 100-epoch budget)
        "arch": settings.get("arch"),
        "method_params": dict(settings.get("method_params") or {}),
        "epoch_offset": schedule.get("offset"),
        "selection": settings.get("selection"),
        "epochs": settings.get("epochs"),
        "train_attack": attack_text({"attack": train_attack}) if train_attack else None,
        "train_precision": train_precision,
        "eval_precision": _first(
            eval_prov.get("precision"), (eval_json.get("settings") or {}).get("precision")
        ),
        "channels_last": _first(train_prov.get("channels_last"), settings.get("channels_last")),
        "device_requested": settings.get("device"),
        "train_device": _device(train_prov),
        "eval_device": _device(eval_prov),
        "train_seconds": _first(
            train_prov.get("wall_seconds"),
            train_prov.get("seconds"),
            _seconds((train_log or {}).get("seconds")),
        ),
        "eval_seconds": _first(
            eval_prov.get("wall_seconds"), sum(eval_seconds) if eval_seconds else None
        ),
    }
