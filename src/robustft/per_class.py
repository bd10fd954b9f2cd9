"""Per-class accuracy: recorded by the evaluation, averaged over seeds, and checked for classes
a method never gets right while other methods do.

Why: an overall accuracy hides a model that never predicts some classes. A TWINS bug once made
the 10-class demo model predict none of classes 0-3 (per-class accuracy 0.00) while its overall
SA still looked plausible; only a per-class view shows that. Nothing here comes from a paper
(none of them reports per-class numbers); it is a sanity check of our own runs.

Evaluation side (pure Python, used by both protocols of :mod:`robustft.evaluate`):
:func:`per_class_accuracy`, :func:`class_counts`, :func:`never_predicted`.

Aggregation side (used by :func:`robustft.stats.aggregate_study`):

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

__all__ = [
    "PER_CLASS_COLUMNS",
    "WARNING_THRESHOLD",
    "class_counts",
    "class_warnings",
    "never_predicted",
    "per_class_accuracy",
    "per_class_table",
    "validate_eval_json",
]

#: an other method must get at least this share of a class right before a 0 is suspicious:
#: a class every method finds hard is a property of the data, not a bug
WARNING_THRESHOLD = 0.2

PER_CLASS_COLUMNS = [
    "study", "dataset", "backbone", "method", "variant", "metric", "class", "class_name",
    "count", "n_seeds", "seeds", "values", "mean", "never_predicted_seeds",
]


# ----------------------------------------------------------------------------- evaluation


def per_class_accuracy(flags: Sequence[int], labels: Sequence[int], num_classes: int
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


def validate_eval_json(ev: Mapping[str, Any], path: Any) -> None:
    """Clear errors for malformed per-class keys of an eval.json (they are optional)."""
    hint = "re-run the evaluate step for this run (python -m robustft.steps.evaluate)"
    for m, v in (ev.get("metrics") or {}).items():
        pc = v.get("per_class") if isinstance(v, Mapping) else None
        if pc is None:
            continue
        ok = isinstance(pc, Mapping) and all(
            str(k).isdigit() and (a is None or isinstance(a, int | float)) for k, a in pc.items())
        if not ok:
            raise ValueError(f"{path}: metrics.{m}.per_class must map class indices (\"0\", "
                             f"\"1\", ...) to accuracies in [0, 1] or null; {hint}")
    classes = ev.get("classes")
    if classes is not None and not (isinstance(classes, Mapping)
                                    and isinstance(classes.get("names", []), list)
                                    and isinstance(classes.get("counts", []), list)):
        raise ValueError(f"{path}: 'classes' must be {{\"names\": [...], \"counts\": [...]}}; "
                         f"{hint}")
    never = ev.get("never_predicted")
    if never is not None and not (isinstance(never, list)
                                  and all(isinstance(c, int) for c in never)):
        raise ValueError(f"{path}: 'never_predicted' must be a list of class indices; {hint}")


# ----------------------------------------------------------------------------- aggregation


def _per_class(run: Any, metric: str) -> dict[int, float]:
    """``{class: accuracy in [0, 1]}`` of one run's metric; classes without examples dropped."""
    m = (run.metrics or {}).get(metric)
    pc = m.get("per_class") if isinstance(m, Mapping) else None
    if not isinstance(pc, Mapping):
        return {}
    out = {}
    for k, a in pc.items():
        if a is not None and math.isfinite(float(a)):
            out[int(k)] = float(a)
    return out


def _class_info(runs: Iterable[Any]) -> tuple[dict[int, str], dict[int, int]]:
    """Class names and test counts of a dataset, from the first run that recorded them."""
    names: dict[int, str] = {}
    counts: dict[int, int] = {}
    for r in runs:
        classes = getattr(r, "classes", None) or {}
        if not names and classes.get("names"):
            names = {i: str(n) for i, n in enumerate(classes["names"])}
        if not counts and classes.get("counts"):
            counts = {i: int(n) for i, n in enumerate(classes["counts"])}
    return names, counts


def class_label(index: int, name: str | None) -> str:
    """``class 3 (bird)``, or ``class 3`` when the name is just the index."""
    return f"class {index}" if name in (None, "", str(index)) else f"class {index} ({name})"


def _groups(runs: Sequence[Any]) -> dict[tuple[str, str, str], dict[int, Any]]:
    """(dataset, backbone, variant) → {seed: run}, first-seen order."""
    out: dict[tuple[str, str, str], dict[int, Any]] = {}
    for r in runs:
        out.setdefault((r.dataset, r.backbone, r.variant), {})[r.seed] = r
    return out


def per_class_table(study: str, runs: Sequence[Any], metrics: Sequence[str]) -> pd.DataFrame:
    """Per-class accuracy in percent, mean over seeds, for every metric that recorded it."""
    rows: list[dict[str, Any]] = []
    groups = _groups(runs)
    info = {d: _class_info(r for r in runs if r.dataset == d) for d in {k[0] for k in groups}}
    for (dataset, backbone, variant), by_seed in groups.items():
        names, counts = info[dataset]
        method = next(iter(by_seed.values())).method
        for metric in metrics:
            per_seed = {s: _per_class(r, metric) for s, r in sorted(by_seed.items())}
            classes = sorted({c for pc in per_seed.values() for c in pc})
            for c in classes:
                seeds = [s for s, pc in per_seed.items() if c in pc]
                vals = [100.0 * per_seed[s][c] for s in seeds]
                never = [s for s in seeds
                         if c in (getattr(by_seed[s], "never_predicted", None) or [])]
                rows.append({
                    "study": study, "dataset": dataset, "backbone": backbone, "method": method,
                    "variant": variant, "metric": metric, "class": c,
                    "class_name": names.get(c, str(c)), "count": counts.get(c, math.nan),
                    "n_seeds": len(vals), "seeds": ";".join(map(str, seeds)),
                    "values": ";".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in vals),
                    "mean": sum(vals) / len(vals),
                    "never_predicted_seeds": ";".join(map(str, never)) if metric == "SA" else "",
                })
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def _group_label(method: str, variant: str, backbone: str, same_method: bool,
                 many_backbones: bool) -> str:
    label = f"{method} ({variant})" if same_method else method
    return f"{label} on {backbone}" if many_backbones else label


def _join_seeds(seeds: Sequence[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def class_warnings(runs: Sequence[Any], metric: str = "SA",
                   threshold: float = WARNING_THRESHOLD) -> list[dict[str, Any]]:
    """Classes a run never predicts (or gets 0 % of right) that other methods get right.

    A run is compared with every *other* (backbone, variant) of the same dataset; the class is
    suspicious when at least one of them gets ≥ ``threshold`` of it right (mean over its
    seeds). Runs without per-class data (eval.json written before it was recorded) take no
    part. Each warning is a dict with ``text`` (what the report prints), ``dataset``,
    ``backbone``, ``variant``, ``method``, ``class``, ``class_name``, ``kind``
    (``never_predicted`` or ``zero_accuracy``), ``seeds`` and ``others`` (label → accuracy in
    percent of the methods that get it right).
    """
    groups = {k: g for k, g in _groups(runs).items()
              if any(_per_class(r, metric) for r in g.values())}
    warnings: list[dict[str, Any]] = []
    for dataset in dict.fromkeys(k[0] for k in groups):
        keys = [k for k in groups if k[0] == dataset]
        names, _ = _class_info(r for k in keys for r in groups[k].values())
        methods = {k: next(iter(groups[k].values())).method for k in keys}
        many_backbones = len({k[1] for k in keys}) > 1
        labels = {k: _group_label(methods[k], k[2], k[1],
                                  sum(m == methods[k] for m in methods.values()) > 1,
                                  many_backbones) for k in keys}
        # mean over seeds of each group's per-class accuracy
        means: dict[tuple, dict[int, float]] = {}
        for k in keys:
            per_seed = [_per_class(r, metric) for r in groups[k].values()]
            classes = {c for pc in per_seed for c in pc}
            means[k] = {c: sum(pc[c] for pc in per_seed if c in pc)
                        / sum(c in pc for pc in per_seed) for c in classes}
        for k in keys:
            found: dict[tuple[int, str], list[int]] = {}
            for seed, r in sorted(groups[k].items()):
                pc = _per_class(r, metric)
                never = set(getattr(r, "never_predicted", None) or []) if metric == "SA" else set()
                for c in sorted(set(pc) | never):
                    if c in never:
                        found.setdefault((c, "never_predicted"), []).append(seed)
                    elif pc.get(c) == 0.0:
                        found.setdefault((c, "zero_accuracy"), []).append(seed)
            for (c, kind), seeds in sorted(found.items()):
                others = sorted(((labels[o], means[o][c]) for o in keys
                                 if o != k and means[o].get(c, 0.0) >= threshold),
                                key=lambda t: -t[1])
                if not others:
                    continue
                what = (f"never predicts {class_label(c, names.get(c))}" if kind ==
                        "never_predicted" else
                        f"gets 0 % of {class_label(c, names.get(c))} right ({metric})")
                if len(others) == 1:
                    rest = f"{others[0][0]} gets {100 * others[0][1]:.0f} % of it right"
                else:
                    listed = ", ".join(f"{lab} {100 * a:.0f} %" for lab, a in others[:4])
                    more = f", +{len(others) - 4} more" if len(others) > 4 else ""
                    rest = (f"other methods get up to {100 * others[0][1]:.0f} % of it right "
                            f"({listed}{more})")
                warnings.append({
                    "text": f"{labels[k]} {what} on {dataset}, {_join_seeds(seeds)}; {rest}",
                    "dataset": dataset, "backbone": k[1], "variant": k[2],
                    "method": methods[k], "class": c, "class_name": names.get(c, str(c)),
                    "kind": kind, "metric": metric, "seeds": seeds,
                    "others": {lab: 100 * a for lab, a in others},
                })
    return warnings
