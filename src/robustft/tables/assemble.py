"""Table assembly: a study's run records → :class:`~robustft.tables.schema.StudyTables`.

Owns how the rows are built: runs grouped by (dataset, backbone, variant), each metric summarised
as mean ± std over seeds with the paper's printed value beside it (``cells``), each requested
comparison "ours vs. baseline" as a difference with a t-test and the paper's printed Diff. and
p-value (``comparisons``), the per-class view and its warnings, and the study's notes (seeds
missing, AutoAttack check warnings, comparisons without runs). The statistics themselves are in
:mod:`robustft.tables.significance`, the printed values in :mod:`robustft.tables.paper`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from robustft.tables import paper
from robustft.tables.paper import CellKey, PaperRef
from robustft.tables.per_class import WARNING_THRESHOLD, class_warnings, per_class_table
from robustft.tables.protocol import attack_text
from robustft.tables.records import GroupKey, RunRecord, group_runs
from robustft.tables.schema import (
    CELL_COLUMNS,
    COMPARISON_COLUMNS,
    METRIC_ORDER,
    StudyTables,
    join_values,
)
from robustft.tables.significance import (
    check_test,
    consistency_interval,
    mean_and_std,
    minimum_detectable_difference,
    t_test,
)

__all__ = ["Comparison", "aggregate_study"]

#: (dataset, backbone, variant, metric) -> {seed: value}: what the comparisons test
SeedValues = dict[tuple[str, str, str, str], dict[int, float]]
Groups = Mapping[GroupKey, Mapping[int, RunRecord]]


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
    """Aggregate the runs of one study over seeds (the tables: :mod:`robustft.tables.schema`).

    ``metrics`` defaults to every metric present in the runs (SA, PGD10, AA first). A metric
    missing for some seeds is averaged over the seeds that have it (noted in ``note``).
    Two runs with the same (dataset, backbone, variant, seed) are an error.
    ``class_warning_threshold``: a class a run never predicts is reported when another method
    gets at least this share of it right (:func:`robustft.tables.per_class.class_warnings`).
    """
    check_test(test)
    ref = PaperRef.coerce(paper_ref)
    comps = [Comparison.coerce(c) for c in comparisons]
    metrics = list(metrics) if metrics is not None else metrics_present(runs)
    groups = group_runs(runs)
    cells, values = summarise_cells(study_name, groups, metrics, ref)
    comps_rows, skipped = compare_methods(
        study_name, groups, values, comps, metrics, ref, test=test, alpha=alpha
    )
    return StudyTables(
        study=study_name,
        cells=pd.DataFrame(cells, columns=CELL_COLUMNS),
        comparisons=pd.DataFrame(comps_rows, columns=COMPARISON_COLUMNS),
        test=test,
        metrics=metrics,
        title=title,
        description=description,
        paper_ref=asdict(ref) if ref else None,
        alpha=alpha,
        notes=method_name_conflicts(groups) + skipped + autoattack_notes(runs),
        runs=list(runs),
        figures=None if figures is None else list(figures),
        per_class=per_class_table(study_name, runs, metrics),
        class_warnings=class_warnings(runs, threshold=class_warning_threshold),
    )


def metrics_present(runs: Sequence[RunRecord]) -> list[str]:
    """Every metric some run recorded: SA, PGD10, AA first, the rest alphabetically."""
    present = {m for r in runs for m in r.metrics}
    return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


def _first(by_seed: Mapping[int, RunRecord]) -> RunRecord:
    """The run that speaks for its group (method name, labels, paper row)."""
    return next(iter(by_seed.values()))


def method_name_conflicts(groups: Groups) -> list[str]:
    """A note per group whose seeds disagree on the method's display name."""
    notes = []
    for (dataset, backbone, variant), by_seed in groups.items():
        methods = {r.method for r in by_seed.values()}
        if len(methods) > 1:
            notes.append(
                f"{dataset}/{backbone}/{variant}: runs disagree on the method name "
                f"{sorted(methods)}; using {_first(by_seed).method!r}"
            )
    return notes


def autoattack_notes(runs: Sequence[RunRecord]) -> list[str]:
    """One note listing the runs whose AutoAttack evaluation emitted check warnings."""
    flagged = sorted(
        {f"{r.dataset}/{r.backbone}/{r.variant}/seed{r.seed}" for r in runs if r.aa_warnings}
    )
    if not flagged:
        return []
    note = (
        f"AutoAttack check warnings in {len(flagged)} run(s) ({', '.join(flagged)}); "
        "their AA numbers may not be reliable"
    )
    return [note]


# ----------------------------------------------------------------------------- cells


def summarise_cells(
    study: str, groups: Groups, metrics: Sequence[str], ref: PaperRef | None
) -> tuple[list[dict[str, Any]], SeedValues]:
    """One cell row per (group, metric), and the per-seed values the comparisons test."""
    rows: list[dict[str, Any]] = []
    values: SeedValues = {}
    for key, by_seed in groups.items():
        for metric in metrics_of_group(by_seed, metrics):
            vals = seed_values(by_seed, metric)
            values[(*key, metric)] = vals
            rows.append(cell_row(study, key, by_seed, metric, vals, ref))
    return rows, values


def metrics_of_group(by_seed: Mapping[int, RunRecord], metrics: Sequence[str]) -> list[str]:
    """The metrics a group gets cells for: all of them, except that rows carrying only
    non-accuracy values (CLAT Table 7's per-batch-size rows) get only their own metrics."""
    if not all(r.only_values() for r in by_seed.values()):
        return list(metrics)
    return [m for m in metrics if any(m in r.metrics for r in by_seed.values())]


def seed_values(by_seed: Mapping[int, RunRecord], metric: str) -> dict[int, float]:
    """``{seed: value}`` (percent for accuracies) of the seeds that recorded ``metric``."""
    out = {}
    for s in sorted(by_seed):
        v = by_seed[s].value(metric)
        if v is not None:
            out[s] = v
    return out


def cell_row(
    study: str,
    key: GroupKey,
    by_seed: Mapping[int, RunRecord],
    metric: str,
    values: Mapping[int, float],
    ref: PaperRef | None,
) -> dict[str, Any]:
    """Mean ± std over seeds of one metric of one group, with the paper's value beside it."""
    dataset, backbone, variant = key
    first = _first(by_seed)
    seeds = list(values)
    mean, std = mean_and_std(list(values.values()))
    printed = ref.printed_cell(first, metric) if ref is not None else None
    flagged = metric == "AA" and any(by_seed[s].aa_warnings for s in seeds)
    runs = by_seed.values()
    n_examples = sorted({int(by_seed[s].metrics[metric].get("n") or 0) for s in seeds})
    is_accuracy = not any("value" in by_seed[s].metrics[metric] for s in seeds)
    # the paper's value against our interval (CONSISTENCY_RULE); the smallest test set is the
    # least precise one, so its binomial error is the one that counts
    interval = consistency_interval(
        list(values.values()),
        (min(n_examples) or None) if n_examples else None,
        accuracy=is_accuracy,
    )
    diff = mean - printed.value if printed else math.nan
    consistent = bool(abs(diff) <= interval) if math.isfinite(diff * interval) else None
    attacks = sorted({attack_text(by_seed[s].metrics[metric]) for s in seeds} - {""})
    return {
        "study": study,
        "dataset": dataset,
        "backbone": backbone,
        "method": first.method,
        "variant": variant,
        "labels": json.dumps(first.labels, sort_keys=True, default=str),
        "metric": metric,
        "n_seeds": len(values),
        "seeds": ";".join(map(str, seeds)),
        "values": join_values(values.values()),
        "mean": mean,
        "std": std,
        "n_examples": ";".join(map(str, n_examples)),
        "attack": "; ".join(attacks),
        "paper_value": printed.value if printed else math.nan,
        "paper_text": printed.text if printed else "",
        "paper_source": ref.source(printed.table) if (printed and ref) else "",
        "paper_note": (getattr(printed, "note", "") or "") if printed else "",
        "diff_vs_paper": diff,
        "interval": interval,
        "paper_consistent": consistent,
        "presets": ";".join(sorted({r.preset for r in runs if r.preset})),
        "fidelity": ";".join(sorted({r.fidelity for r in runs if r.fidelity})),
        "aa_flagged": bool(flagged),
        "note": "; ".join(_cell_notes(by_seed, metric, seeds, flagged)),
    }


def _cell_notes(
    by_seed: Mapping[int, RunRecord], metric: str, seeds: Sequence[int], flagged: bool
) -> list[str]:
    """Why a cell is less than it seems: missing seeds, a single seed, AutoAttack warnings."""
    notes = []
    lacking = sorted(set(by_seed) - set(seeds))
    if lacking and not seeds:
        notes.append(f"{metric} not evaluated (absent from eval.json)")
    elif lacking:
        notes.append(f"{metric} missing for seed(s) {lacking}")
    if len(seeds) == 1:
        notes.append("one seed: no std")
    if flagged:
        notes.append("flagged by AutoAttack check warnings")
    return notes


# ----------------------------------------------------------------------------- comparisons


def compare_methods(
    study: str,
    groups: Groups,
    values: SeedValues,
    comparisons: Sequence[Comparison],
    metrics: Sequence[str],
    ref: PaperRef | None,
    *,
    test: str,
    alpha: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Comparison rows of every (dataset, backbone) that has runs of both sides, and a note
    for each comparison that has runs of only one side there."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for dataset, backbone in dict.fromkeys(k[:2] for k in groups):
        firsts = {k[2]: _first(g) for k, g in groups.items() if k[:2] == (dataset, backbone)}
        for comp in comparisons:
            ours_v = resolve_variant(comp.ours, firsts)
            base_v = resolve_variant(comp.baseline, firsts)
            if ours_v is None and base_v is None:
                continue
            if ours_v is None or base_v is None:
                missing = comp.ours if ours_v is None else comp.baseline
                notes.append(
                    f"{dataset}/{backbone}: comparison {comp.key} skipped, no runs of {missing!r}"
                )
                continue
            for metric in metrics:
                rows.append(
                    comparison_row(
                        study,
                        comp,
                        firsts[ours_v],
                        firsts[base_v],
                        metric,
                        values.get((dataset, backbone, ours_v, metric), {}),
                        values.get((dataset, backbone, base_v, metric), {}),
                        ref,
                        test=test,
                        alpha=alpha,
                    )
                )
    return rows, notes


def resolve_variant(name: str, firsts: Mapping[str, RunRecord]) -> str | None:
    """The variant a comparison names: the variant itself, else the one variant whose method
    display name it is, else None."""
    if name in firsts:
        return name
    hits = [v for v, r in firsts.items() if r.method == name]
    return hits[0] if len(hits) == 1 else None


def comparison_row(
    study: str,
    comp: Comparison,
    ours: RunRecord,
    baseline: RunRecord,
    metric: str,
    ours_values: Mapping[int, float],
    baseline_values: Mapping[int, float],
    ref: PaperRef | None,
    *,
    test: str,
    alpha: float,
) -> dict[str, Any]:
    """Ours − baseline for one metric, its t-test over seeds and the paper's Diff. and p."""
    res = t_test(ours_values, baseline_values, test)
    mean_ours, std_ours = mean_and_std(list(ours_values.values()))
    mean_base, std_base = mean_and_std(list(baseline_values.values()))
    # what this many seeds with this spread can detect (Welch's power; see significance)
    mdd = minimum_detectable_difference(
        std_ours, len(ours_values), std_base, len(baseline_values), alpha=alpha
    )
    diff = mean_ours - mean_base
    paper_diff, paper_p = printed_diff_and_p(ref, comp, ours, baseline, metric)
    p = res["p_value"]
    return {
        "study": study,
        "dataset": ours.dataset,
        "backbone": ours.backbone,
        "comparison": comp.key,
        "label": comp.label or f"{ours.method} vs. {baseline.method}",
        "method": ours.method,
        "variant": ours.variant,
        "baseline_method": baseline.method,
        "baseline_variant": baseline.variant,
        "metric": metric,
        "mean": mean_ours,
        "baseline_mean": mean_base,
        "diff": diff,
        "paper_diff": paper_diff,
        "test": test,
        "n_ours": res["n_ours"],
        "n_baseline": res["n_baseline"],
        "statistic": res["statistic"],
        "df": res["df"],
        "p_value": p,
        "mdd": mdd,
        "paper_p_value": paper_p,
        # AutoLoRa A.3: bold when p < 0.05 and ours is better (higher accuracy)
        "significant": bool(math.isfinite(p) and p < alpha and diff > 0),
        "note": res["note"],
    }


def printed_diff_and_p(
    ref: PaperRef | None, comp: Comparison, ours: RunRecord, baseline: RunRecord, metric: str
) -> tuple[float, float]:
    """The paper's printed Diff. and p-value of a comparison (NaN where it prints none).

    They sit on the row of "ours" (AutoLoRa Tables 1-2, 8) in the columns
    ``diff_vs_<key>_<metric>`` / ``p_value_vs_<key>_<metric>``; a comparison may point
    elsewhere (``paper_diff``/``paper_p``, e.g. AutoLoRa Table 5: the TWINS row).
    """
    key = ref.cell_key(ours) if ref is not None else None
    if ref is None or key is None:
        return math.nan, math.nan
    table = ref.table_for(ours.backbone)
    printed_metric = ref.metric_for(metric, table)
    paper_key = comp.paper_key or baseline.method.split()[0].lower()
    diff = _printed(
        ref, comp.paper_diff, f"diff_vs_{paper_key}_{{metric}}", table, key, printed_metric
    )
    p = _printed(
        ref,
        comp.paper_p,
        f"p_value_vs_{paper_key}_{{metric}}",
        ref.pvalue_table,
        key,
        printed_metric,
    )
    return diff, p


def _printed(
    ref: PaperRef,
    spec: Mapping[str, Any] | None,
    default_metric: str,
    table: int | None,
    key: CellKey,
    printed_metric: str,
) -> float:
    """One printed comparison value; ``spec`` may override table, method, variant, metric."""
    spec = spec or {}
    val = paper.lookup(
        ref.paper,
        spec.get("table", table),
        key[0],
        key[1],
        spec.get("method", key[2]),
        spec.get("variant", key[3]),
        spec.get("metric", default_metric).format(metric=printed_metric),
    )
    return math.nan if val is None else val
