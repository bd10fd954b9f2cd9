"""Reading finished runs: one :class:`RunRecord` per run directory.

Owns everything the tables know about a run's files: ``run.yaml`` (identity, preset, fidelity,
group labels), ``eval.json`` (metrics, AutoAttack check warnings, provenance, and the per-class
keys ``metrics.<m>.per_class``, ``classes``, ``never_predicted`` that
:func:`robustft.evaluate.evaluate_run` writes) and ``train_log.csv`` (numeric columns, for the
report's training curves); the protocol facts (selection, precision, devices, wall time) are
read by :mod:`robustft.tables.protocol`. It also owns the grouping of records into (dataset, backbone,
variant) → seeds that every later table uses. Nothing here computes a statistic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from robustft.tables.protocol import run_protocol

__all__ = [
    "GroupKey",
    "RunRecord",
    "group_runs",
    "load_run_record",
    "validate_eval_json",
]

#: (dataset, backbone, variant): the runs of one table row, one per seed
GroupKey = tuple[str, str, str]

#: what to do about an eval.json the tables cannot read
_REEVALUATE = "re-run the evaluate step for this run (python -m robustft.steps.evaluate)"


@dataclass
class RunRecord:
    """One finished run: identity, group labels and the parsed ``eval.json`` metrics.

    ``metrics`` maps ``"SA"``/``"PGD10"``/``"AA"`` to ``{"accuracy": float in [0, 1], "n": int}``;
    a metric may be missing (AutoAttack skipped). ``aa_warnings`` are the AutoAttack check
    warnings recorded by the evaluation; ``train_log`` the numeric columns of ``train_log.csv``.
    """

    dataset: str
    backbone: str
    method: str
    variant: str
    seed: int
    labels: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_dir: str | None = None
    preset: str | None = None
    fidelity: str | None = None
    aa_warnings: list[str] = field(default_factory=list)
    train_log: dict[str, list[float | None]] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    # eval.json's "classes" ({"names", "counts"}) and "never_predicted"; None when not recorded
    classes: dict[str, Any] | None = None
    never_predicted: list[int] | None = None
    # how the numbers were obtained (selection, precision, devices, wall time):
    # robustft.tables.protocol.run_protocol; {} for records built by hand
    protocol: dict[str, Any] = field(default_factory=dict)

    def accuracy(self, metric: str) -> float | None:
        """Accuracy in [0, 1], or None when the metric is missing or null."""
        m = self.metrics.get(metric)
        if not isinstance(m, Mapping) or m.get("accuracy") is None:
            return None
        acc = float(m["accuracy"])
        return None if math.isnan(acc) else acc

    def value(self, metric: str) -> float | None:
        """What the tables average: accuracy in percent, or — for a metric recorded as
        ``{"value": x, "unit": ...}`` (CLAT's layer indices, parameter counts, seconds) — x."""
        m = self.metrics.get(metric)
        if isinstance(m, Mapping) and "value" in m:
            v = m["value"]
            return None if v is None or math.isnan(float(v)) else float(v)
        acc = self.accuracy(metric)
        return None if acc is None else 100.0 * acc

    def class_accuracy(self, metric: str) -> dict[int, float]:
        """``{class: accuracy in [0, 1]}`` of one metric; classes without examples left out,
        and ``{}`` when the evaluation did not record per-class accuracy (older eval.json)."""
        m = self.metrics.get(metric)
        pc = m.get("per_class") if isinstance(m, Mapping) else None
        if not isinstance(pc, Mapping):
            return {}
        return {
            int(k): float(a) for k, a in pc.items() if a is not None and math.isfinite(float(a))
        }

    def only_values(self) -> bool:
        """True when every metric is a ``{"value", "unit"}`` (a row of CLAT Table 7), so the
        tables give it cells for its own metrics, not "not evaluated" cells for the others."""
        return all("value" in m for m in self.metrics.values() if isinstance(m, Mapping))


def group_runs(runs: Sequence[RunRecord]) -> dict[GroupKey, dict[int, RunRecord]]:
    """(dataset, backbone, variant) → {seed: run}, in first-seen order.

    Two runs with the same key and seed are an error naming both directories: averaging a
    seed twice would silently shrink the standard deviation.
    """
    groups: dict[GroupKey, dict[int, RunRecord]] = {}
    for r in runs:
        g = groups.setdefault((r.dataset, r.backbone, r.variant), {})
        if r.seed in g:
            raise ValueError(
                f"duplicate run {r.dataset}/{r.backbone}/{r.variant} seed {r.seed}: "
                f"{g[r.seed].run_dir} and {r.run_dir}"
            )
        g[r.seed] = r
    return groups


# ----------------------------------------------------------------------------- eval.json


def validate_eval_json(ev: Mapping[str, Any], path: Any) -> None:
    """Clear errors for malformed per-class keys of an eval.json (they are optional)."""
    for m, v in (ev.get("metrics") or {}).items():
        pc = v.get("per_class") if isinstance(v, Mapping) else None
        if pc is None:
            continue
        ok = isinstance(pc, Mapping) and all(
            str(k).isdigit() and (a is None or isinstance(a, int | float)) for k, a in pc.items()
        )
        if not ok:
            raise ValueError(
                f'{path}: metrics.{m}.per_class must map class indices ("0", '
                f'"1", ...) to accuracies in [0, 1] or null; {_REEVALUATE}'
            )
    classes = ev.get("classes")
    if classes is not None and not (
        isinstance(classes, Mapping)
        and isinstance(classes.get("names", []), list)
        and isinstance(classes.get("counts", []), list)
    ):
        raise ValueError(
            f'{path}: \'classes\' must be {{"names": [...], "counts": [...]}}; {_REEVALUATE}'
        )
    never = ev.get("never_predicted")
    if never is not None and not (
        isinstance(never, list) and all(isinstance(c, int) for c in never)
    ):
        raise ValueError(
            f"{path}: 'never_predicted' must be a list of class indices; {_REEVALUATE}"
        )


def _read_eval_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "eval.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run not evaluated?)")
    with open(path, encoding="utf-8") as fh:
        ev = json.load(fh)
    validate_eval_json(ev, path)
    return ev


def _aa_warnings(ev: Mapping[str, Any]) -> list[str]:
    """AutoAttack check warnings of one eval.json.

    ``robustft.evaluate`` writes them to the top-level ``warnings`` and sets
    ``metrics.AA.flagged``; ``metrics.AA.warnings`` is read too.
    """
    found: list[str] = []
    aa = (ev.get("metrics") or {}).get("AA") or {}
    for c in (ev.get("warnings"), aa.get("warnings")):
        if not c:
            continue
        items = [c] if isinstance(c, str) else list(c)
        for w in items:
            if str(w) not in found:
                found.append(str(w))
    if aa.get("flagged") is True and not found:
        found.append("AutoAttack result flagged (no message recorded)")
    return found


# ----------------------------------------------------------------------------- run.yaml, log


def _read_run_yaml(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.yaml"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def _find_key(obj: Any, key: str, depth: int = 2) -> Any:
    """``obj[key]`` at the top level, else in a nested mapping (breadth-first, ≤ depth)."""
    if not isinstance(obj, Mapping):
        return None
    if key in obj:
        return obj[key]
    if depth <= 0:
        return None
    for value in obj.values():
        found = _find_key(value, key, depth - 1)
        if found is not None:
            return found
    return None


def _identity_from_path(run_dir: Path) -> dict[str, Any]:
    """``<dataset>/<backbone>/<variant>/seed<seed>`` of the results layout, or {}."""
    parts = run_dir.resolve().parts
    if len(parts) >= 4 and re.fullmatch(r"seed-?\d+", parts[-1]):
        return {
            "dataset": parts[-4],
            "backbone": parts[-3],
            "variant": parts[-2],
            "seed": int(re.sub(r"\D", "", parts[-1])),
        }
    return {}


def _read_train_log(path: Path) -> dict[str, list[float | None]] | None:
    """Numeric columns of ``train_log.csv`` (None for an absent or unreadable log)."""
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    out: dict[str, list[float | None]] = {}
    for col in df.columns:
        values = pd.to_numeric(df[col], errors="coerce")
        if values.notna().any():
            out[str(col)] = [None if pd.isna(v) else float(v) for v in values]
    return out or None


def _method_display(name: str) -> str:
    """The paper's spelling of a registered method (``autolora`` → ``AutoLoRa``)."""
    from robustft.methods import METHODS  # the registry is the one source of display names

    return getattr(METHODS.get(name), "display_name", name)


def load_run_record(run_dir: str | Path) -> RunRecord:
    """Read ``run.yaml`` + ``eval.json`` (+ ``train_log.csv`` when present) of one run.

    Identity keys (``dataset``, ``backbone``, ``method``, ``variant``, ``seed``, ``preset``,
    ``fidelity``, ``labels``) are taken from ``run.yaml`` — at the top level or one/two levels
    down — and otherwise from the layout ``<dataset>/<backbone>/<variant>/seed<seed>/``.
    A canonical ``method`` (``autolora``) becomes its display name (``AutoLoRa``).
    """
    run_dir = Path(run_dir)
    ev = _read_eval_json(run_dir)
    cfg = _read_run_yaml(run_dir)
    from_path = _identity_from_path(run_dir)

    def get(key: str) -> Any:
        value = _find_key(cfg, key)
        return from_path.get(key) if value is None else value

    missing = [k for k in ("dataset", "backbone", "variant", "seed") if get(k) is None]
    if missing:
        raise ValueError(f"{run_dir}: cannot determine {missing} from run.yaml or the path")
    variant = str(get("variant"))
    preset, fidelity = get("preset"), get("fidelity")
    train_log = _read_train_log(run_dir / "train_log.csv")
    return RunRecord(
        dataset=str(get("dataset")),
        backbone=str(get("backbone")),
        method=_method_display(str(get("method") or variant)),
        variant=variant,
        seed=int(get("seed")),
        labels=dict(get("labels") or get("group_labels") or {}),
        metrics={
            str(k): dict(v) for k, v in (ev.get("metrics") or {}).items() if isinstance(v, Mapping)
        },
        run_dir=str(run_dir),
        preset=None if preset is None else str(preset),
        fidelity=None if fidelity is None else str(fidelity),
        aa_warnings=_aa_warnings(ev),
        train_log=train_log,
        provenance=dict(ev.get("provenance") or {}),
        classes=dict(ev["classes"]) if ev.get("classes") else None,
        never_predicted=(
            None if ev.get("never_predicted") is None else [int(c) for c in ev["never_predicted"]]
        ),
        protocol=run_protocol(cfg, ev, train_log),
    )
