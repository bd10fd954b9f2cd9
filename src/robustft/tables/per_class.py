"""Per-class accuracy: recorded by the evaluation, averaged over seeds, and checked for classes
a method never gets right while other methods do.

Why: an overall accuracy hides a model that never predicts some classes. A TWINS bug once made
the 10-class demo model predict none of classes 0-3 (per-class accuracy 0.00) while its overall
SA still looked plausible; only a per-class view shows that. Nothing here comes from a paper
(none of them reports per-class numbers); it is a sanity check of our own runs.

Evaluation side (pure Python, used by both protocols of :mod:`robustft.evaluate`):
:func:`per_class_accuracy`, :func:`class_counts`, :func:`never_predicted`.

Aggregation side (used by :func:`robustft.tables.assemble.aggregate_study`):

* :func:`per_class_table` — one row per (dataset, backbone, variant, metric, class): mean over
  seeds in percent, per-seed values, test examples of the class, and the seeds in which the
  model never predicted the class.
* :func:`class_warnings` — for each run, every class of its test set that it never predicts
  (or gets 0 % of right, clean) while another method of the same study on the same dataset
  gets at least ``threshold`` of it right on average over seeds. Seeds with the same finding
  are merged into one warning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from robustft.tables.records import GroupKey, RunRecord, group_runs
from robustft.tables.schema import PER_CLASS_COLUMNS, join_values

__all__ = [
    "PER_CLASS_COLUMNS",
    "WARNING_THRESHOLD",
    "class_counts",
    "class_warnings",
    "never_predicted",
    "per_class_accuracy",
    "per_class_table",
]

#: an other method must get at least this share of a class right before a 0 is suspicious:
#: a class every method finds hard is a property of the data, not a bug
WARNING_THRESHOLD = 0.2


# ----------------------------------------------------------------------------- evaluation


def per_class_accuracy(
    flags: Sequence[int], labels: Sequence[int], num_classes: int
) -> dict[str, float | None]:
    """Accuracy of each class: mean of the 0/1 ``flags`` over the examples labelled ``c``.

    Keys are class indices as strings (JSON object keys); a class without examples maps to
    None rather than 0, so "never tested" is not mistaken for "always wrong".
    """
    if len(flags) != len(labels):
        raise ValueError(f"per_class_accuracy: {len(flags)} flags but {len(labels)} labels")
    hits, seen = [0] * num_classes, [0] * num_classes
    for f, c in zip(flags, labels, strict=True):
        c = int(c)
        if not 0 <= c < num_classes:
            raise ValueError(f"per_class_accuracy: label {c} outside [0, {num_classes})")
        hits[c] += int(f)
        seen[c] += 1
    return {str(c): (hits[c] / seen[c] if seen[c] else None) for c in range(num_classes)}


def class_counts(labels: Iterable[int], num_classes: int) -> list[int]:
    """Number of examples of each class index."""
    counts = [0] * num_classes
    for c in labels:
        counts[int(c)] += 1
    return counts


def never_predicted(predictions: Iterable[int], counts: Sequence[int]) -> list[int]:
    """Classes present in the evaluated set (count > 0) that no example is predicted as.

    Head outputs without test examples (a head wider than the dataset's class list) are left
    out: never predicting a class that is not there is no symptom.
    """
    predicted = {int(p) for p in predictions}
    return [c for c, n in enumerate(counts) if n > 0 and c not in predicted]


# ----------------------------------------------------------------------------- aggregation


def _class_info(runs: Iterable[RunRecord]) -> tuple[dict[int, str], dict[int, int]]:
    """Class names and test counts of a dataset, from the first run that recorded them."""
    names: dict[int, str] = {}
    counts: dict[int, int] = {}
    for r in runs:
        classes = r.classes or {}
        if not names and classes.get("names"):
            names = {i: str(n) for i, n in enumerate(classes["names"])}
        if not counts and classes.get("counts"):
            counts = {i: int(n) for i, n in enumerate(classes["counts"])}
    return names, counts


def class_label(index: int, name: str | None) -> str:
    """``class 3 (bird)``, or ``class 3`` when the name is just the index."""
    return f"class {index}" if name in (None, "", str(index)) else f"class {index} ({name})"


def _method_of(by_seed: Mapping[int, RunRecord]) -> str:
    return next(iter(by_seed.values())).method


def per_class_table(study: str, runs: Sequence[RunRecord], metrics: Sequence[str]) -> pd.DataFrame:
    """Per-class accuracy in percent, mean over seeds, for every metric that recorded it."""
    groups = group_runs(runs)
    info = {d: _class_info(r for r in runs if r.dataset == d) for d in {k[0] for k in groups}}
    rows: list[dict[str, Any]] = []
    for key, by_seed in groups.items():
        names, counts = info[key[0]]
        for metric in metrics:
            rows += _class_rows(study, key, by_seed, metric, names, counts)
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def _class_rows(
    study: str,
    key: GroupKey,
    by_seed: Mapping[int, RunRecord],
    metric: str,
    names: Mapping[int, str],
    counts: Mapping[int, int],
) -> list[dict[str, Any]]:
    """The per-class rows of one (dataset, backbone, variant) and metric."""
    dataset, backbone, variant = key
    per_seed = {s: r.class_accuracy(metric) for s, r in sorted(by_seed.items())}
    rows = []
    for c in sorted({c for pc in per_seed.values() for c in pc}):
        seeds = [s for s, pc in per_seed.items() if c in pc]
        vals = [100.0 * per_seed[s][c] for s in seeds]
        never = [s for s in seeds if c in (by_seed[s].never_predicted or [])]
        rows.append(
            {
                "study": study,
                "dataset": dataset,
                "backbone": backbone,
                "method": _method_of(by_seed),
                "variant": variant,
                "metric": metric,
                "class": c,
                "class_name": names.get(c, str(c)),
                "count": counts.get(c, math.nan),
                "n_seeds": len(vals),
                "seeds": ";".join(map(str, seeds)),
                "values": join_values(vals),
                "mean": sum(vals) / len(vals),
                # never_predicted is a property of the clean predictions
                "never_predicted_seeds": ";".join(map(str, never)) if metric == "SA" else "",
            }
        )
    return rows


def class_warnings(
    runs: Sequence[RunRecord], metric: str = "SA", threshold: float = WARNING_THRESHOLD
) -> list[dict[str, Any]]:
    """Classes a run never predicts (or gets 0 % of right) that other methods get right.

    A run is compared with every *other* (backbone, variant) of the same dataset; the class is
    suspicious when at least one of them gets ≥ ``threshold`` of it right (mean over its
    seeds). Runs without per-class data (eval.json written before it was recorded) take no
    part. Each warning is a dict with ``text`` (what the report prints), ``dataset``,
    ``backbone``, ``variant``, ``method``, ``class``, ``class_name``, ``kind``
    (``never_predicted`` or ``zero_accuracy``), ``seeds`` and ``others`` (label → accuracy in
    percent of the methods that get it right).
    """
    groups = {
        k: g
        for k, g in group_runs(runs).items()
        if any(r.class_accuracy(metric) for r in g.values())
    }
    warnings: list[dict[str, Any]] = []
    for dataset in dict.fromkeys(k[0] for k in groups):
        of_dataset = {k: g for k, g in groups.items() if k[0] == dataset}
        warnings += _dataset_warnings(dataset, of_dataset, metric, threshold)
    return warnings


def _dataset_warnings(
    dataset: str, groups: Mapping[GroupKey, Mapping[int, RunRecord]], metric: str, threshold: float
) -> list[dict[str, Any]]:
    """:func:`class_warnings` of the groups of one dataset."""
    names, _ = _class_info(r for g in groups.values() for r in g.values())
    labels = _group_labels(groups)
    means = {k: _mean_class_accuracy(g, metric) for k, g in groups.items()}
    out = []
    for key, by_seed in groups.items():
        for (c, kind), seeds in sorted(_missed_classes(by_seed, metric).items()):
            others = sorted(
                (
                    (labels[o], means[o][c])
                    for o in groups
                    if o != key and means[o].get(c, 0.0) >= threshold
                ),
                key=lambda t: -t[1],
            )
            if not others:  # every method misses it: the data, not a bug
                continue
            name = names.get(c, str(c))
            out.append(
                {
                    "text": _warning_text(
                        labels[key], kind, class_label(c, name), metric, dataset, seeds, others
                    ),
                    "dataset": dataset,
                    "backbone": key[1],
                    "variant": key[2],
                    "method": _method_of(by_seed),
                    "class": c,
                    "class_name": name,
                    "kind": kind,
                    "metric": metric,
                    "seeds": seeds,
                    "others": {lab: 100 * a for lab, a in others},
                }
            )
    return out


def _group_labels(groups: Mapping[GroupKey, Mapping[int, RunRecord]]) -> dict[GroupKey, str]:
    """How a warning names a group: the method, plus the variant when the method occurs more
    than once, plus the backbone when the dataset is trained on several."""
    methods = {k: _method_of(g) for k, g in groups.items()}
    many_backbones = len({k[1] for k in groups}) > 1
    labels = {}
    for k, method in methods.items():
        same_method = sum(m == method for m in methods.values()) > 1
        label = f"{method} ({k[2]})" if same_method else method
        labels[k] = f"{label} on {k[1]}" if many_backbones else label
    return labels


def _mean_class_accuracy(by_seed: Mapping[int, RunRecord], metric: str) -> dict[int, float]:
    """Per-class accuracy in [0, 1], mean over the seeds that recorded the class."""
    per_seed = [r.class_accuracy(metric) for r in by_seed.values()]
    classes = {c for pc in per_seed for c in pc}
    return {
        c: sum(pc[c] for pc in per_seed if c in pc) / sum(c in pc for pc in per_seed)
        for c in classes
    }


def _missed_classes(
    by_seed: Mapping[int, RunRecord], metric: str
) -> dict[tuple[int, str], list[int]]:
    """(class, ``never_predicted`` | ``zero_accuracy``) → seeds in which the run misses it."""
    found: dict[tuple[int, str], list[int]] = {}
    for seed, r in sorted(by_seed.items()):
        pc = r.class_accuracy(metric)
        never = set(r.never_predicted or []) if metric == "SA" else set()
        for c in sorted(set(pc) | never):
            if c in never:
                found.setdefault((c, "never_predicted"), []).append(seed)
            elif pc.get(c) == 0.0:
                found.setdefault((c, "zero_accuracy"), []).append(seed)
    return found


def _warning_text(
    label: str,
    kind: str,
    cls: str,
    metric: str,
    dataset: str,
    seeds: Sequence[int],
    others: Sequence[tuple[str, float]],
) -> str:
    """``TWINS never predicts class 2 (bird) on cifar10, seeds 0, 6; Vanilla RFT gets ...``"""
    what = (
        f"never predicts {cls}"
        if kind == "never_predicted"
        else f"gets 0 % of {cls} right ({metric})"
    )
    seed_text = ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))
    if len(others) == 1:
        rest = f"{others[0][0]} gets {100 * others[0][1]:.0f} % of it right"
    else:
        listed = ", ".join(f"{lab} {100 * a:.0f} %" for lab, a in others[:4])
        more = f", +{len(others) - 4} more" if len(others) > 4 else ""
        rest = f"other methods get up to {100 * others[0][1]:.0f} % of it right ({listed}{more})"
    return f"{label} {what} on {dataset}, {seed_text}; {rest}"
