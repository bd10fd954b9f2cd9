"""Writing and reading a study's tables: the tidy CSV of ``results/tables/<study>.csv`` and the
strict JSON the report step reads back.

Owns the file formats: the CSV holds ``kind=cell`` and ``kind=comparison`` rows (per-class rows
and warnings are in the JSON only, they would swamp the table); the JSON holds everything
(:class:`~robustft.tables.schema.StudyTables` with its run records) with NaN/inf written as
``null`` so it is RFC 8259 JSON. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustft.io import write_text_atomic
from robustft.tables.records import RunRecord
from robustft.tables.schema import (
    CELL_COLUMNS,
    COMPARISON_COLUMNS,
    METRIC_ORDER,
    PER_CLASS_COLUMNS,
    StudyTables,
)

__all__ = [
    "read_study_json",
    "study_from_json",
    "study_to_json",
    "tables_csv_text",
    "write_study_tables",
]


def tables_csv_text(tables: StudyTables) -> str:
    """One tidy CSV: ``kind=cell`` rows (mean ± std, paper value) and ``kind=comparison``
    rows (diff, t-test); columns absent from a kind are empty."""
    # object dtype keeps True/False readable where the other kind leaves the column empty
    cells = tables.cells.assign(kind="cell", aa_flagged=tables.cells["aa_flagged"].astype(object))
    comps = tables.comparisons.assign(
        kind="comparison", significant=tables.comparisons["significant"].astype(object)
    )
    cols = ["kind"] + CELL_COLUMNS + [c for c in COMPARISON_COLUMNS if c not in CELL_COLUMNS]
    frames = [f.reindex(columns=cols) for f in (cells, comps) if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def study_to_json(tables: StudyTables) -> dict[str, Any]:
    """Everything of a study as strict-JSON-ready Python objects."""
    return _jsonable(
        {
            "study": tables.study,
            "title": tables.title,
            "description": tables.description,
            "test": tables.test,
            "test_description": tables.test_description,
            "alpha": tables.alpha,
            "metrics": tables.metrics,
            "paper_ref": tables.paper_ref,
            "notes": tables.notes,
            "figures": tables.figures,
            "cells": tables.cells.to_dict(orient="records"),
            "comparisons": tables.comparisons.to_dict(orient="records"),
            "runs": [asdict(r) for r in tables.runs],
            "per_class": tables.per_class.to_dict(orient="records"),
            "class_warnings": tables.class_warnings,
        }
    )


def study_from_json(d: Mapping[str, Any]) -> StudyTables:
    """The inverse of :func:`study_to_json`."""
    return StudyTables(
        study=d["study"],
        cells=pd.DataFrame(d.get("cells") or [], columns=CELL_COLUMNS),
        comparisons=pd.DataFrame(d.get("comparisons") or [], columns=COMPARISON_COLUMNS),
        test=d.get("test", "welch"),
        metrics=list(d.get("metrics") or METRIC_ORDER),
        title=d.get("title"),
        description=d.get("description"),
        paper_ref=d.get("paper_ref"),
        alpha=float(d.get("alpha", 0.05)),
        notes=list(d.get("notes") or []),
        runs=[RunRecord(**r) for r in d.get("runs") or []],
        figures=d.get("figures"),
        per_class=pd.DataFrame(d.get("per_class") or [], columns=PER_CLASS_COLUMNS),
        class_warnings=list(d.get("class_warnings") or []),
    )


def _jsonable(obj: Any) -> Any:
    """NaN/inf → None and numpy scalars → Python, so the JSON is strict (RFC 8259)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_study_tables(
    tables: StudyTables, out_csv: str | Path | None = None, out_json: str | Path | None = None
) -> None:
    """Write the CSV and/or JSON of a study atomically (temporary name, then rename)."""
    if out_csv is not None:
        write_text_atomic(out_csv, tables_csv_text(tables))
    if out_json is not None:
        text = json.dumps(study_to_json(tables), indent=1, sort_keys=True, allow_nan=False)
        write_text_atomic(out_json, text + "\n")


def read_study_json(path: str | Path) -> StudyTables:
    """Load a study written by :func:`write_study_tables` (input of the report step).

    A file that is not such a JSON gets an error naming it and what to do.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON ({e}); re-run the aggregate step that "
            "writes it (python -m robustft.steps.aggregate)"
        ) from e
    if not isinstance(data, Mapping) or "study" not in data:
        raise ValueError(
            f"{path}: not a study table (no 'study' key); pass the --out-json "
            "of python -m robustft.steps.aggregate"
        )
    return study_from_json(data)
