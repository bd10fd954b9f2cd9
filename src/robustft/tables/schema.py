"""What a study's tables are: :class:`StudyTables` and the columns of its three tidy tables.

Owns the shape every other module agrees on — :mod:`robustft.tables.assemble` fills it,
:mod:`robustft.tables.serialise` writes and reads it, :mod:`robustft.report` draws it:

``cells``
    one row per (dataset, backbone, variant, metric): mean and sample std (ddof=1) over seeds
    in percent, the per-seed values, the number of test examples and the attack behind them,
    the paper's printed value (and its note) beside it, the difference reproduced − paper and
    whether the paper's value lies in our interval (``interval`` half-width,
    ``paper_consistent``; the rule: :data:`robustft.tables.significance.CONSISTENCY_RULE`).
``comparisons``
    one row per (dataset, backbone, comparison, metric): the difference ours − baseline (the
    papers' "Diff." columns), the paper's printed Diff., a t-test over seeds (n per group, t,
    df, p), the minimum detectable difference ``mdd`` at α with 80 % power given the observed
    seed spread, and the paper's p-value (AutoLoRa Table 8).
``per_class``
    one row per (dataset, backbone, variant, metric, class): per-class accuracy, mean over
    seeds in percent, with ``class_warnings`` beside it (:mod:`robustft.tables.per_class`).

All accuracies are in percent (accuracy × 100), like the papers. Lists inside a cell (seeds,
per-seed values) are spelled ``a;b;c`` (:func:`join_values`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from robustft.tables.records import RunRecord
from robustft.tables.significance import CONSISTENCY_RULE, TESTS

__all__ = [
    "CELL_COLUMNS",
    "COMPARISON_COLUMNS",
    "METRIC_ORDER",
    "PER_CLASS_COLUMNS",
    "StudyTables",
    "join_values",
]

#: display order of the evaluation metrics of eval.json
METRIC_ORDER: tuple[str, ...] = ("SA", "PGD10", "AA")

CELL_COLUMNS = [
    "study",
    "dataset",
    "backbone",
    "method",
    "variant",
    "labels",
    "metric",
    "n_seeds",
    "seeds",
    "values",
    "mean",
    "std",
    "n_examples",
    "attack",
    "paper_value",
    "paper_text",
    "paper_source",
    "paper_note",
    "diff_vs_paper",
    "interval",
    "paper_consistent",
    "presets",
    "fidelity",
    "aa_flagged",
    "note",
]
COMPARISON_COLUMNS = [
    "study",
    "dataset",
    "backbone",
    "comparison",
    "label",
    "method",
    "variant",
    "baseline_method",
    "baseline_variant",
    "metric",
    "mean",
    "baseline_mean",
    "diff",
    "paper_diff",
    "test",
    "n_ours",
    "n_baseline",
    "statistic",
    "df",
    "p_value",
    "mdd",
    "paper_p_value",
    "significant",
    "note",
]
PER_CLASS_COLUMNS = [
    "study",
    "dataset",
    "backbone",
    "method",
    "variant",
    "metric",
    "class",
    "class_name",
    "count",
    "n_seeds",
    "seeds",
    "values",
    "mean",
    "never_predicted_seeds",
]


def join_values(values: Iterable[float]) -> str:
    """Per-seed values as the tables spell them: ``80;82.5;84`` (4 decimals, no trailing 0)."""
    return ";".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in values)


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
    per_class: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PER_CLASS_COLUMNS))
    class_warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def test_description(self) -> str:
        return TESTS[self.test]

    @property
    def consistency_rule(self) -> str:
        return CONSISTENCY_RULE
