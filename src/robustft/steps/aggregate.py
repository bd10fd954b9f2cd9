"""Aggregate one study's runs into its table (CSV) and the report's input (JSON).

By hand (e.g. to debug a study)::

    python -m robustft.steps.aggregate --study autolora_table1 \\
        --runs results/runs/cifar10/resnet18/autolora/seed0 ... \\
        --spec '{"comparisons": [{"ours": "autolora", "baseline": "vanilla-rft"}],
                 "paper": {"paper": "AutoLoRa", "table": 1}}' \\
        --out-csv results/tables/autolora_table1.csv --out-json results/tables/autolora_table1.json

``--spec`` is a JSON object or the path of a JSON/YAML file with the keys (all optional)
``title``, ``description``, ``metrics``, ``test`` (welch|student|paired), ``alpha``,
``variants`` (``{variant: {"method": display name, "labels": {...}}}``), ``comparisons``
(list of :class:`robustft.stats.Comparison` fields) or ``reference`` (the variant compared
with every other one), ``paper`` (the fields of :class:`robustft.stats.PaperRef`, or null when
the study mirrors no paper table) and ``figures`` (panel groups: accuracy, lr, lambda,
grad_sim).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from robustft.stats import TESTS, aggregate_study, load_run_record, write_study_tables

log = logging.getLogger("robustft.steps.aggregate")

SPEC_KEYS = {"title", "description", "metrics", "test", "alpha", "variants", "comparisons",
             "reference", "paper", "figures"}


def parse_spec(text: str) -> dict[str, Any]:
    """A JSON object given inline, or a JSON/YAML file path."""
    stripped = text.strip()
    if stripped.startswith("{"):
        spec = json.loads(stripped)
    else:
        spec = yaml.safe_load(Path(text).read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict):
        raise SystemExit(f"--spec must be a JSON object, got {type(spec).__name__}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise SystemExit(f"--spec: unknown key(s) {sorted(unknown)}; allowed {sorted(SPEC_KEYS)}")
    return spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="run directories")
    ap.add_argument("--spec", default="{}", help="JSON object or JSON/YAML file")
    ap.add_argument("--test", choices=sorted(TESTS), help="overrides spec['test']")
    ap.add_argument("--out-csv", required=True)
    ap.add_argument("--out-json", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    spec = parse_spec(args.spec)
    variants = spec.get("variants") or {}
    runs = []
    for d in args.runs:
        run = load_run_record(d)
        v = variants.get(run.variant) or {}  # the study's display name and group labels win
        run.method = v.get("method", run.method)
        run.labels = dict(v.get("labels", run.labels))
        runs.append(run)
    comparisons = spec.get("comparisons")
    if comparisons is None and spec.get("reference"):
        # the study's reference ("ours") against every other variant, in order of appearance
        ours = spec["reference"]
        comparisons = [{"ours": ours, "baseline": v}
                       for v in dict.fromkeys(r.variant for r in runs) if v != ours]
    tables = aggregate_study(
        args.study, runs, comparisons or [], spec.get("paper"),
        test=args.test or spec.get("test", "welch"), metrics=spec.get("metrics"),
        alpha=float(spec.get("alpha", 0.05)), title=spec.get("title"),
        description=spec.get("description"), figures=spec.get("figures"),
    )
    write_study_tables(tables, args.out_csv, args.out_json)
    log.info("%s: %d runs -> %d cells, %d comparisons (%s t-test)", args.study, len(runs),
             len(tables.cells), len(tables.comparisons), tables.test)
    for note in tables.notes:
        log.warning("%s: %s", args.study, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
