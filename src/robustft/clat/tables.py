"""CLAT table rows that are not one run's ``eval.json``: extra
:class:`~robustft.tables.records.RunRecord` rows for the generic aggregation
(:func:`robustft.tables.assemble.aggregate_study`).

* **Table 2** (black-box transfer, :func:`transfer_records`): each ``results/transfer/...json``
  (one pair of backbones, both directions) becomes one row per (victim, attacker): backbone =
  the victim, variant ``<variant><<attacker>``, label ``attacker=<printed attacker>``, metric
  ``BB`` (accuracy), which the CLAT paper mapping reads as ``adv_blackbox``.
* **Table 3** (``derived: [top5_criticality]``, :func:`top5_records`): the first selection of each
  CLAT run (its ``train_log.csv`` columns ``clat_top1..5``) as rows ``position=1..5``, metric
  ``CRIT`` (a layer index, not averaged into a percentage).
* **Table 6** (``derived: [trainable_params]``, :func:`add_parameter_counts`): ``PARAMS`` (the
  critical set at the first selection, ``clat_trainable_params``), ``PARAMS_TOTAL`` (every
  parameter of the run's ``model_best.pt``; BN running statistics are buffers, not counted) and
  ``PARAMS_PCT``, added to the run's own row.
* **Table 7** (``criticality: true``, :func:`criticality_records`): per batch size the top-5
  (rows ``batch_size=N;position=k``, metric ``CRIT``) and the seconds (``batch_size=N``,
  ``TIME_S``), plus the measured run's mean epoch time (``EPOCH_S``, the caption's reference).

Non-accuracy metrics are stored as ``{"value": x, "unit": ...}`` so the aggregation keeps them
as they are (see :meth:`robustft.tables.records.RunRecord.value`).

Imports no torch at module level (the aggregate step reads it; only :func:`parameter_count`
loads a model file, importing the checkpoint reader when called).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from robustft.tables.records import RunRecord

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _value(x: float, unit: str) -> dict[str, Any]:
    return {"value": float(x), "unit": unit, "n": 1}


def _printed(spec: Mapping[str, Any], backbone: str) -> str:
    printed = ((spec.get("paper") or {}).get("backbones") or {}).get(backbone, backbone)
    return printed["name"] if isinstance(printed, Mapping) else str(printed)


def _method(spec: Mapping[str, Any], variant: str, default: str) -> str:
    return ((spec.get("variants") or {}).get(variant) or {}).get("method", default)


def _read(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def transfer_records(paths: Iterable[str | Path], spec: Mapping[str, Any]) -> list[RunRecord]:
    out = []
    for path in paths:
        data = _read(path)
        ident = data["identity"]
        for source, row in data["matrix"].items():
            for target, acc in row.items():
                if source == target:  # white-box: the run's own PGD10 is the stronger number
                    continue
                variant = ident["variant"]
                out.append(
                    RunRecord(
                        dataset=ident["dataset"],
                        backbone=target,
                        method=_method(spec, variant, variant),
                        variant=f"{variant}<{source}",
                        seed=int(ident["seed"]),
                        labels={"attacker": _printed(spec, source)},
                        metrics={"BB": {"accuracy": float(acc), "n": int(data["n"])}},
                        run_dir=str(path),
                        fidelity=ident.get("fidelity"),
                    )
                )
    return out


def _first(log: Mapping[str, list[float | None]] | None, column: str) -> float | None:
    for v in (log or {}).get(column, []):
        if v is not None and not math.isnan(v):
            return v
    return None


def top5_records(runs: Iterable[RunRecord]) -> list[RunRecord]:
    out = []
    for run in runs:
        if _first(run.train_log, "clat_top1") is None:
            continue  # not a CLAT run
        first_row = next(
            i
            for i, v in enumerate(run.train_log["clat_top1"])
            if v is not None and not math.isnan(v)
        )
        for k in range(1, 6):
            column = run.train_log.get(f"clat_top{k}") or []
            if first_row >= len(column) or column[first_row] is None:
                continue
            out.append(
                RunRecord(
                    dataset=run.dataset,
                    backbone=run.backbone,
                    method=run.method,
                    variant=f"{run.variant}@position={k}",
                    seed=run.seed,
                    labels={**run.labels, "position": k},
                    metrics={"CRIT": _value(column[first_row], "layer_index")},
                    run_dir=run.run_dir,
                    preset=run.preset,
                    fidelity=run.fidelity,
                )
            )
    return out


def parameter_count(model_path: str | Path) -> int:
    """Parameters of a saved run model (BN running statistics excluded)."""
    from robustft.models.checkpoint import load_model_state

    state = load_model_state(model_path)  # a corrupt file: error naming it and what to do
    return int(sum(t.numel() for k, t in state.items() if k.rsplit(".", 1)[-1] not in BN_BUFFERS))


def add_parameter_counts(runs: Iterable[RunRecord]) -> None:
    for run in runs:
        trainable = _first(run.train_log, "clat_trainable_params")
        if trainable is None or run.run_dir is None:
            continue
        total = parameter_count(Path(run.run_dir) / "model_best.pt")
        run.metrics.update(
            PARAMS=_value(trainable, "count"),
            PARAMS_TOTAL=_value(total, "count"),
            PARAMS_PCT=_value(100.0 * trainable / total, "percent"),
        )


def criticality_records(paths: Iterable[str | Path], spec: Mapping[str, Any]) -> list[RunRecord]:
    out = []
    for path in paths:
        data = _read(path)
        ident = data["identity"]
        variant, method = ident["variant"], _method(spec, ident["variant"], ident["variant"])
        common = {
            "dataset": ident["dataset"],
            "backbone": ident["backbone"],
            "seed": int(ident["seed"]),
            "run_dir": str(path),
            "fidelity": ident.get("fidelity"),
        }
        for res in data["results"]:
            bs = int(res["batch_size"])
            out.append(
                RunRecord(
                    method=method,
                    variant=f"{variant}@batch_size={bs}",
                    labels={"batch_size": bs},
                    metrics={"TIME_S": _value(res["seconds"], "seconds")},
                    **common,
                )
            )
            for k, index in enumerate(res["top5"], start=1):
                out.append(
                    RunRecord(
                        method=method,
                        variant=f"{variant}@batch_size={bs};position={k}",
                        labels={"batch_size": bs, "position": k},
                        metrics={"CRIT": _value(index, "layer_index")},
                        **common,
                    )
                )
        if data.get("reference_epoch_seconds") is not None:
            out.append(
                RunRecord(
                    method=data.get("measured_method") or "PGD-AT",
                    variant=f"{data.get('measured_variant') or variant}@epoch",
                    labels={},
                    metrics={"EPOCH_S": _value(data["reference_epoch_seconds"], "seconds")},
                    **common,
                )
            )
    return out
