"""Aggregation of a study's runs into the papers' tables: mean ± std over seeds, t-tests.

Input is one :class:`RunRecord` per finished run (``load_run_record`` reads ``run.yaml`` and
``eval.json`` of a run directory). Output is a :class:`StudyTables` with two tidy tables:

``cells``
    one row per (dataset, backbone, variant, metric): mean and sample std (ddof=1) over seeds
    in percent, the per-seed values, the paper's printed value beside it and the difference
    reproduced − paper.
``comparisons``
    one row per (dataset, backbone, comparison, metric): the difference ours − baseline (the
    papers' "Diff." columns), the paper's printed Diff., a t-test over seeds and the paper's
    p-value (AutoLoRa Table 8).
``per_class``
    one row per (dataset, backbone, variant, metric, class): per-class accuracy, mean over
    seeds in percent (:func:`robustft.per_class.per_class_table`), with ``class_warnings``:
    classes a method never predicts while another method gets them right
    (:func:`robustft.per_class.class_warnings`). Both live in the JSON, not in the CSV.

Which t-test? AutoLoRa A.3 says only "t-tests between the three results" of each method (seeds
0, 6, 66); it names neither the variant nor the sidedness. We default to **Welch's
two-sample, two-sided t-test** (``scipy.stats.ttest_ind(equal_var=False)``), which does not
assume the two methods have equal seed-to-seed variance; ``"student"`` (pooled variance,
``equal_var=True``) and ``"paired"`` (``ttest_rel`` over the seeds both methods share, i.e.
treating the seed as a block) are options. The test used is recorded in every row.

All accuracies are reported in percent (accuracy × 100), like the papers.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from robustft import paper_values
from robustft.per_class import (
    PER_CLASS_COLUMNS,
    WARNING_THRESHOLD,
    class_warnings,
    per_class_table,
    validate_eval_json,
)

__all__ = [
    "METRIC_ORDER",
    "TESTS",
    "Comparison",
    "PaperRef",
    "RunRecord",
    "StudyTables",
    "aggregate_study",
    "load_run_record",
    "read_study_json",
    "t_test",
    "write_study_tables",
]

#: name -> human description of the test (recorded in the tables and the report)
TESTS: dict[str, str] = {
    "welch": "Welch's two-sample t-test (unequal variances; scipy.stats.ttest_ind, "
    "equal_var=False), two-sided, over seeds",
    "student": "Student's two-sample t-test (pooled variance; scipy.stats.ttest_ind, "
    "equal_var=True), two-sided, over seeds",
    "paired": "paired t-test over the seeds both methods share (scipy.stats.ttest_rel), "
    "two-sided",
}

#: display order of the evaluation metrics of eval.json
METRIC_ORDER: tuple[str, ...] = ("SA", "PGD10", "AA")

# Which printed metric corresponds to our eval.json metric, per (paper, table).
# AutoLoRa Tables 3-6 print PGD-10 accuracy as "RA" (Table 3 caption); CLAT prints "clean"
# and "adv" (white-box PGD-10, eps=0.03), APGD-CE in Table 8, black-box transfer in Table 2,
# layer indices (Tables 3, 7), timing (Table 7) and parameter counts (Table 6).
_DEFAULT_METRIC_MAP: dict[str, dict[int | None, dict[str, str]]] = {
    "AutoLoRa": {3: {"PGD10": "RA"}, 4: {"PGD10": "RA"}, 5: {"PGD10": "RA"},
                 6: {"PGD10": "RA"}},
    "CLAT": {None: {"SA": "clean", "PGD10": "adv", "APGD_CE": "adv_apgd_ce",
                    "BB": "adv_blackbox", "CRIT": "critical_layer_index", "TIME_S": "time_s",
                    "EPOCH_S": "epoch_time_s", "PARAMS": "trainable_params",
                    "PARAMS_TOTAL": "trainable_params_total",
                    "PARAMS_PCT": "pct_params_trainable"}},
}


def _method_display(name: str) -> str:
    """The paper's spelling of a registered method (``autolora`` → ``AutoLoRa``)."""
    from robustft.methods import METHODS  # the registry is the one source of display names

    return getattr(METHODS.get(name), "display_name", name)


# ----------------------------------------------------------------------------- records


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


def _read_train_log(path: Path) -> dict[str, list[float | None]] | None:
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


def load_run_record(run_dir: str | Path) -> RunRecord:
    """Read ``run.yaml`` + ``eval.json`` (+ ``train_log.csv`` when present) of one run.

    Identity keys (``dataset``, ``backbone``, ``method``, ``variant``, ``seed``, ``preset``,
    ``fidelity``, ``labels``) are taken from ``run.yaml`` — at the top level or one/two levels
    down — and otherwise from the layout ``<dataset>/<backbone>/<variant>/seed<seed>/``.
    A canonical ``method`` (``autolora``) becomes its display name (``AutoLoRa``).
    """
    run_dir = Path(run_dir)
    eval_path = run_dir / "eval.json"
    if not eval_path.is_file():
        raise FileNotFoundError(f"{eval_path} does not exist (run not evaluated?)")
    with open(eval_path, encoding="utf-8") as fh:
        ev = json.load(fh)
    validate_eval_json(ev, eval_path)
    cfg: dict[str, Any] = {}
    if (run_dir / "run.yaml").is_file():
        with open(run_dir / "run.yaml", encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}

    parts = run_dir.resolve().parts
    from_path: dict[str, Any] = {}
    if len(parts) >= 4 and re.fullmatch(r"seed-?\d+", parts[-1]):
        from_path = {"dataset": parts[-4], "backbone": parts[-3], "variant": parts[-2],
                     "seed": int(re.sub(r"\D", "", parts[-1]))}

    def get(key: str) -> Any:
        value = _find_key(cfg, key)
        return from_path.get(key) if value is None else value

    missing = [k for k in ("dataset", "backbone", "variant", "seed") if get(k) is None]
    if missing:
        raise ValueError(f"{run_dir}: cannot determine {missing} from run.yaml or the path")
    variant = str(get("variant"))
    meth = _method_display(str(get("method") or variant))
    run_labels = dict(get("labels") or get("group_labels") or {})
    metrics = {str(k): dict(v) for k, v in (ev.get("metrics") or {}).items()
               if isinstance(v, Mapping)}
    preset, fidelity = get("preset"), get("fidelity")
    return RunRecord(
        dataset=str(get("dataset")), backbone=str(get("backbone")), method=meth,
        variant=variant, seed=int(get("seed")), labels=run_labels, metrics=metrics,
        run_dir=str(run_dir),
        preset=None if preset is None else str(preset),
        fidelity=None if fidelity is None else str(fidelity),
        aa_warnings=_aa_warnings(ev),
        train_log=_read_train_log(run_dir / "train_log.csv"),
        provenance=dict(ev.get("provenance") or {}),
        classes=dict(ev["classes"]) if ev.get("classes") else None,
        never_predicted=(None if ev.get("never_predicted") is None
                         else [int(c) for c in ev["never_predicted"]]),
    )


# ----------------------------------------------------------------------------- spec


@dataclass
class Comparison:
    """Ours vs. a baseline, like the papers' "Diff. (ours vs. …)" columns and Table 8.

    ``ours``/``baseline`` name a variant; if no run of that variant exists for a
    (dataset, backbone), a unique method display name is accepted instead (so that a
    baseline whose variant name changes per dataset can still be named once).
    ``paper_key`` (default: first word of the baseline's method, lower-case: ``vanilla``,
    ``twins``) selects the printed columns ``diff_vs_<key>_<metric>`` and
    ``p_value_vs_<key>_<metric>``; ``paper_diff``/``paper_p`` override them with
    ``{"metric": "diff_autolr_on_vs_off_{metric}", "method": ..., "variant": ...}``.
    """

    ours: str
    baseline: str
    name: str | None = None
    label: str | None = None
    paper_key: str | None = None
    paper_diff: dict[str, Any] | None = None
    paper_p: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.name or f"{self.ours}_vs_{self.baseline}"

    @classmethod
    def coerce(cls, obj: Comparison | Mapping[str, Any] | Sequence[str]) -> Comparison:
        if isinstance(obj, Comparison):
            return obj
        if isinstance(obj, Mapping):
            return cls(**obj)
        ours, baseline = obj
        return cls(ours=ours, baseline=baseline)


@dataclass
class PaperRef:
    """Where a study mirrors a paper table, and how our names map onto the printed ones.

    ``paper`` (alias ``name``) is ``AutoLoRa`` or ``CLAT``. ``table`` may be an int, a
    ``{backbone: table}`` mapping (AutoLoRa Tables 1/2), or None (search every table; a value
    is used only when unambiguous). ``datasets`` and ``backbones`` map pipeline names to printed
    ones where the automatic matching of :func:`robustft.paper_values.resolve_name` is not
    enough; a backbone may also carry a printed variant, ``{"name": "ResNet-18", "variant":
    "eps_pt=1/255"}`` (AutoLoRa Table 4 varies the backbone). ``metrics`` maps ``SA``/``PGD10``/
    ``AA`` to printed metric names (defaults: AutoLoRa Tables 3-6 ``PGD10→RA``; CLAT
    ``SA→clean``, ``PGD10→adv``). ``variants`` maps one of our variants to the printed
    ``{"method": ..., "variant": ...}`` (``null`` = no paper value); by default the printed
    method is the run's display name and the printed variant its group labels joined as
    ``k=v;k=v`` (``{"rank": 4}`` → ``rank=4``, the spelling of AutoLoRa Tables 3-6), or ""
    (the paper's default setting) when it has none.
    """

    paper: str
    table: int | dict[str, int] | None = None
    pvalue_table: int | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    backbones: dict[str, str | dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, str] | None = None
    variants: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    @classmethod
    def coerce(cls, obj: PaperRef | Mapping[str, Any] | None) -> PaperRef | None:
        if obj is None or isinstance(obj, PaperRef):
            return obj
        obj = dict(obj)
        if "name" in obj:  # config.yaml spells it paper: {name: AutoLoRa, table: 1}
            obj["paper"] = obj.pop("name")
        return cls(**obj)

    def _backbone(self, backbone: str) -> tuple[str, str]:
        bb = self.backbones.get(backbone, backbone)
        if isinstance(bb, Mapping):
            return str(bb.get("name", backbone)), str(bb.get("variant") or "")
        return str(bb), ""

    def table_for(self, backbone: str) -> int | None:
        if isinstance(self.table, Mapping):
            t = self.table.get(backbone)
            if t is None:
                printed = paper_values.resolve_name(self.paper, "backbone",
                                                    self._backbone(backbone)[0])
                t = self.table.get(printed) if printed else None
            return None if t is None else int(t)
        return None if self.table is None else int(self.table)

    def metric_for(self, metric: str, table: int | None) -> str:
        if self.metrics is not None and metric in self.metrics:
            return self.metrics[metric]
        defaults = _DEFAULT_METRIC_MAP.get(self.paper, {})
        return {**defaults.get(None, {}), **defaults.get(table, {})}.get(metric, metric)

    def cell_key(self, run: RunRecord) -> tuple[str, str, str, str] | None:
        """Printed (backbone, dataset, method, variant) of a run's row; None = not printed."""
        if run.variant in self.variants and self.variants[run.variant] is None:
            return None
        v = self.variants.get(run.variant) or {}
        backbone, backbone_variant = self._backbone(run.backbone)
        if "variant" in v:
            variant = str(v["variant"] or "")
        else:
            variant = ";".join(f"{k}={x}" for k, x in run.labels.items())
        variant = ";".join(p for p in (backbone_variant, variant) if p)
        return (backbone, self.datasets.get(run.dataset, run.dataset),
                str(v.get("method", run.method)), variant)

    def source(self, table: int | None) -> str:
        return f"{self.paper} Table {table}" if table is not None else self.paper


# ----------------------------------------------------------------------------- tests


def t_test(ours: Mapping[int, float], baseline: Mapping[int, float], test: str = "welch"
           ) -> dict[str, Any]:
    """t-test of two seed→value mappings. Returns statistic, df, p_value, n, note.

    Fewer than two values on either side (or two common seeds for ``paired``), or zero
    variance on both sides (t undefined), give NaN with an explanatory note rather than an
    error: a study with one seed still renders.
    """
    if test not in TESTS:
        raise ValueError(f"unknown t-test {test!r}; choose one of {sorted(TESTS)}")
    out: dict[str, Any] = {"statistic": math.nan, "df": math.nan, "p_value": math.nan,
                           "n_ours": len(ours), "n_baseline": len(baseline), "note": ""}
    if test == "paired":
        common = sorted(set(ours) & set(baseline))
        out["n_ours"] = out["n_baseline"] = len(common)
        if set(ours) != set(baseline):
            out["note"] = f"paired on the {len(common)} common seeds; "
        if len(common) < 2:
            out["note"] += "fewer than 2 paired seeds: no t-test"
            return out
        a = np.array([ours[s] for s in common])
        b = np.array([baseline[s] for s in common])
        if np.ptp(a - b) == 0:
            out["note"] += "identical differences across seeds: t undefined"
            return out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = sps.ttest_rel(a, b)
    else:
        a = np.array(list(ours.values()), dtype=float)
        b = np.array(list(baseline.values()), dtype=float)
        if len(a) < 2 or len(b) < 2:
            out["note"] = (f"fewer than 2 seeds (ours {len(a)}, baseline {len(b)}): no t-test")
            return out
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            out["note"] = "zero variance in both groups: t undefined"
            return out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = sps.ttest_ind(a, b, equal_var=(test == "student"))
    out.update(statistic=float(res.statistic), df=float(res.df), p_value=float(res.pvalue))
    out["note"] = out["note"].rstrip("; ")
    return out


# ----------------------------------------------------------------------------- tables


CELL_COLUMNS = [
    "study", "dataset", "backbone", "method", "variant", "labels", "metric", "n_seeds",
    "seeds", "values", "mean", "std", "n_examples", "paper_value", "paper_text",
    "paper_source", "diff_vs_paper", "presets", "fidelity", "aa_flagged", "note",
]
COMPARISON_COLUMNS = [
    "study", "dataset", "backbone", "comparison", "label", "method", "variant",
    "baseline_method", "baseline_variant", "metric", "mean", "baseline_mean", "diff",
    "paper_diff", "test", "n_ours", "n_baseline", "statistic", "df", "p_value",
    "paper_p_value", "significant", "note",
]


@dataclass
class StudyTables:
    """The aggregated tables of one study plus what the report needs to draw it."""

    study: str
    cells: pd.DataFrame
    comparisons: pd.DataFrame
    test: str = "welch"
    metrics: list[str] = field(default_factory=lambda: list(METRIC_ORDER))
    title: str | None = None
    description: str | None = None
    paper_ref: dict[str, Any] | None = None
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    figures: list[str] | None = None  # panel groups to draw (report.figures.PANELS); None = all
    per_class: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=PER_CLASS_COLUMNS))
    class_warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def test_description(self) -> str:
        return TESTS[self.test]

    def to_csv_text(self) -> str:
        """One tidy CSV: ``kind=cell`` rows (mean ± std, paper value) and ``kind=comparison``
        rows (diff, t-test); columns absent from a kind are empty."""
        # object dtype keeps True/False readable where the other kind leaves the column empty
        cells = self.cells.assign(kind="cell", aa_flagged=self.cells["aa_flagged"].astype(object))
        comps = self.comparisons.assign(
            kind="comparison", significant=self.comparisons["significant"].astype(object))
        cols = ["kind"] + CELL_COLUMNS + [c for c in COMPARISON_COLUMNS if c not in CELL_COLUMNS]
        frames = [f.reindex(columns=cols) for f in (cells, comps) if not f.empty]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
        return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")

    def to_json_dict(self) -> dict[str, Any]:
        return _jsonable({
            "study": self.study, "title": self.title, "description": self.description,
            "test": self.test, "test_description": self.test_description, "alpha": self.alpha,
            "metrics": self.metrics, "paper_ref": self.paper_ref, "notes": self.notes,
            "figures": self.figures,
            "cells": self.cells.to_dict(orient="records"),
            "comparisons": self.comparisons.to_dict(orient="records"),
            "runs": [asdict(r) for r in self.runs],
            "per_class": self.per_class.to_dict(orient="records"),
            "class_warnings": self.class_warnings,
        })

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> StudyTables:
        return cls(
            study=d["study"],
            cells=pd.DataFrame(d.get("cells") or [], columns=CELL_COLUMNS),
            comparisons=pd.DataFrame(d.get("comparisons") or [], columns=COMPARISON_COLUMNS),
            test=d.get("test", "welch"), metrics=list(d.get("metrics") or METRIC_ORDER),
            title=d.get("title"), description=d.get("description"),
            paper_ref=d.get("paper_ref"), alpha=float(d.get("alpha", 0.05)),
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


def _fmt_values(values: Iterable[float]) -> str:
    return ";".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in values)


def aggregate_study(
    study_name: str,
    runs: Sequence[RunRecord],
    comparisons: Sequence[Comparison | Mapping[str, Any] | Sequence[str]] = (),
    paper_ref: PaperRef | Mapping[str, Any] | None = None,
    *,
    test: str = "welch",
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
    title: str | None = None,
    description: str | None = None,
    figures: Sequence[str] | None = None,
    class_warning_threshold: float = WARNING_THRESHOLD,
) -> StudyTables:
    """Aggregate the runs of one study over seeds; see the module docstring for the tables.

    ``class_warning_threshold``: a class a run never predicts is reported when another method
    gets at least this share of it right (:func:`robustft.per_class.class_warnings`).

    ``metrics`` defaults to every metric present in the runs (SA, PGD10, AA first). A metric
    missing for some seeds is averaged over the seeds that have it (noted in ``note``).
    Two runs with the same (dataset, backbone, variant, seed) are an error.
    """
    if test not in TESTS:
        raise ValueError(f"unknown t-test {test!r}; choose one of {sorted(TESTS)}")
    ref = PaperRef.coerce(paper_ref)
    comps = [Comparison.coerce(c) for c in comparisons]
    if metrics is None:
        present = {m for r in runs for m in r.metrics}
        metrics = [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))
    metrics = list(metrics)
    notes: list[str] = []

    # group runs: (dataset, backbone, variant) -> {seed: run}; keep first-seen order
    groups: dict[tuple[str, str, str], dict[int, RunRecord]] = {}
    for r in runs:
        g = groups.setdefault((r.dataset, r.backbone, r.variant), {})
        if r.seed in g:
            raise ValueError(f"duplicate run {r.dataset}/{r.backbone}/{r.variant} seed {r.seed}: "
                             f"{g[r.seed].run_dir} and {r.run_dir}")
        g[r.seed] = r

    cell_rows: list[dict[str, Any]] = []
    # (dataset, backbone, variant, metric) -> {seed: value in percent}
    values: dict[tuple[str, str, str, str], dict[int, float]] = {}
    for (dataset, backbone, variant), by_seed in groups.items():
        first = next(iter(by_seed.values()))
        methods = {r.method for r in by_seed.values()}
        if len(methods) > 1:
            notes.append(f"{dataset}/{backbone}/{variant}: runs disagree on the method name "
                         f"{sorted(methods)}; using {first.method!r}")
        table = ref.table_for(backbone) if ref else None
        key = ref.cell_key(first) if ref is not None else None
        # rows that only carry non-accuracy values (CLAT Table 7's per-batch-size rows) get
        # cells for the metrics they have, not "not evaluated" cells for the others
        values_only = all("value" in m for r in by_seed.values() for m in r.metrics.values()
                          if isinstance(m, Mapping))
        for metric in metrics:
            if values_only and not any(metric in r.metrics for r in by_seed.values()):
                continue
            seeds = sorted(s for s, r in by_seed.items() if r.value(metric) is not None)
            vals = [by_seed[s].value(metric) for s in seeds]  # type: ignore[misc]
            values[(dataset, backbone, variant, metric)] = dict(zip(seeds, vals, strict=True))
            note: list[str] = []
            lacking = sorted(set(by_seed) - set(seeds))
            if lacking and not seeds:
                note.append(f"{metric} not evaluated (absent from eval.json)")
            elif lacking:
                note.append(f"{metric} missing for seed(s) {lacking}")
            mean = float(np.mean(vals)) if vals else math.nan
            std = float(np.std(vals, ddof=1)) if len(vals) >= 2 else math.nan
            if len(vals) == 1:
                note.append("one seed: no std")
            ns = sorted({int(by_seed[s].metrics[metric].get("n") or 0) for s in seeds})
            pv = None
            if key is not None:
                pv = paper_values.lookup_entry(ref.paper, table, *key,
                                               ref.metric_for(metric, table))
            flagged = metric == "AA" and any(by_seed[s].aa_warnings for s in seeds)
            if flagged:
                note.append("flagged by AutoAttack check warnings")
            cell_rows.append({
                "study": study_name, "dataset": dataset, "backbone": backbone,
                "method": first.method, "variant": variant,
                "labels": json.dumps(first.labels, sort_keys=True, default=str),
                "metric": metric,
                "n_seeds": len(vals), "seeds": ";".join(map(str, seeds)),
                "values": _fmt_values(vals), "mean": mean, "std": std,
                "n_examples": ";".join(map(str, ns)),
                "paper_value": pv.value if pv else math.nan,
                "paper_text": pv.text if pv else "",
                "paper_source": ref.source(pv.table) if (pv and ref) else "",
                "diff_vs_paper": mean - pv.value if pv else math.nan,
                "presets": ";".join(sorted({r.preset for r in by_seed.values() if r.preset})),
                "fidelity": ";".join(sorted({r.fidelity for r in by_seed.values()
                                             if r.fidelity})),
                "aa_flagged": bool(flagged), "note": "; ".join(note),
            })

    comp_rows: list[dict[str, Any]] = []
    for dataset, backbone in dict.fromkeys((r.dataset, r.backbone) for r in runs):
        variants = {v: next(iter(g.values())) for (d, b, v), g in groups.items()
                    if (d, b) == (dataset, backbone)}
        table = ref.table_for(backbone) if ref else None

        def resolve(name: str, _variants=variants) -> str | None:
            if name in _variants:
                return name
            hits = [v for v, r in _variants.items() if r.method == name]
            return hits[0] if len(hits) == 1 else None

        for comp in comps:
            ours_v, base_v = resolve(comp.ours), resolve(comp.baseline)
            if ours_v is None and base_v is None:
                continue
            if ours_v is None or base_v is None:
                missing = comp.ours if ours_v is None else comp.baseline
                notes.append(f"{dataset}/{backbone}: comparison {comp.key} skipped, no runs of "
                             f"{missing!r}")
                continue
            ours_r, base_r = variants[ours_v], variants[base_v]
            paper_key = comp.paper_key or base_r.method.split()[0].lower()
            key = ref.cell_key(ours_r) if ref is not None else None
            for metric in metrics:
                a = values.get((dataset, backbone, ours_v, metric), {})
                b = values.get((dataset, backbone, base_v, metric), {})
                res = t_test(a, b, test)
                mean_a = float(np.mean(list(a.values()))) if a else math.nan
                mean_b = float(np.mean(list(b.values()))) if b else math.nan
                diff = mean_a - mean_b
                paper_diff = paper_p = math.nan
                if key is not None:
                    # the printed Diff. and p-value sit on the row of "ours" (AutoLoRa
                    # Tables 1-2, 8); a comparison may point elsewhere (Table 5: the TWINS row)
                    pmetric = ref.metric_for(metric, table)
                    found = []
                    for spec, default_tpl, tbl in (
                        (comp.paper_diff or {}, f"diff_vs_{paper_key}_{{metric}}", table),
                        (comp.paper_p or {}, f"p_value_vs_{paper_key}_{{metric}}",
                         ref.pvalue_table),
                    ):
                        val = paper_values.lookup(
                            ref.paper, spec.get("table", tbl), key[0], key[1],
                            spec.get("method", key[2]), spec.get("variant", key[3]),
                            spec.get("metric", default_tpl).format(metric=pmetric))
                        found.append(math.nan if val is None else val)
                    paper_diff, paper_p = found
                p = res["p_value"]
                comp_rows.append({
                    "study": study_name, "dataset": dataset, "backbone": backbone,
                    "comparison": comp.key,
                    "label": comp.label or f"{ours_r.method} vs. {base_r.method}",
                    "method": ours_r.method, "variant": ours_v,
                    "baseline_method": base_r.method, "baseline_variant": base_v,
                    "metric": metric, "mean": mean_a, "baseline_mean": mean_b, "diff": diff,
                    "paper_diff": paper_diff, "test": test, "n_ours": res["n_ours"],
                    "n_baseline": res["n_baseline"], "statistic": res["statistic"],
                    "df": res["df"], "p_value": p, "paper_p_value": paper_p,
                    # AutoLoRa A.3: bold when p < 0.05 and ours is better (higher accuracy)
                    "significant": bool(math.isfinite(p) and p < alpha and diff > 0),
                    "note": res["note"],
                })

    if any(r.aa_warnings for r in runs):
        flagged = sorted({f"{r.dataset}/{r.backbone}/{r.variant}/seed{r.seed}"
                          for r in runs if r.aa_warnings})
        notes.append(f"AutoAttack check warnings in {len(flagged)} run(s) ({', '.join(flagged)}); "
                     "their AA numbers may not be reliable")
    return StudyTables(
        study=study_name,
        cells=pd.DataFrame(cell_rows, columns=CELL_COLUMNS),
        comparisons=pd.DataFrame(comp_rows, columns=COMPARISON_COLUMNS),
        test=test, metrics=metrics, title=title, description=description,
        paper_ref=asdict(ref) if ref else None, alpha=alpha, notes=notes, runs=list(runs),
        figures=None if figures is None else list(figures),
        per_class=per_class_table(study_name, runs, metrics),
        class_warnings=class_warnings(runs, threshold=class_warning_threshold),
    )


def write_study_tables(tables: StudyTables, out_csv: str | Path | None = None,
                       out_json: str | Path | None = None) -> None:
    """Write the CSV and/or JSON of a study atomically (temporary name, then rename)."""
    from robustft.io import write_text_atomic

    if out_csv is not None:
        write_text_atomic(out_csv, tables.to_csv_text())
    if out_json is not None:
        text = json.dumps(tables.to_json_dict(), indent=1, sort_keys=True, allow_nan=False)
        write_text_atomic(out_json, text + "\n")


def read_study_json(path: str | Path) -> StudyTables:
    """Load a study written by :func:`write_study_tables` (input of the report step)."""
    with open(path, encoding="utf-8") as fh:
        return StudyTables.from_json_dict(json.load(fh))
