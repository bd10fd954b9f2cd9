"""Step of rule ``aggregate``: one study's runs into its table (CSV) and the report's input
(JSON), through :mod:`robustft.tables`.

By hand (e.g. to debug a study)::

    python -m robustft.steps.aggregate --study autolora_table1 \\
        --runs results/runs/cifar10/resnet18/autolora/seed0 ... \\
        --spec '{"comparisons": [{"ours": "autolora", "baseline": "vanilla-rft"}],
                 "paper": {"paper": "AutoLoRa", "table": 1}}' \\
        --out-csv results/tables/autolora_table1.csv --out-json results/tables/autolora_table1.json

``--spec`` (:class:`robustft.contracts.AggregateSpec`; an unknown key stops the step) is a JSON
object or the path of a JSON/YAML file with the keys (all optional)
``title``, ``description``, ``metrics``, ``test`` (welch|student|paired), ``alpha``,
``variants`` (``{variant: {"method": display name, "labels": {...}}}``), ``comparisons``
(list of :class:`robustft.tables.assemble.Comparison` fields) or ``reference`` (the variant
compared with every other one), ``paper`` (the fields of :class:`robustft.tables.paper.PaperRef`,
or null when the study mirrors no paper table), ``figures`` (panel groups: accuracy, lr,
lambda, grad_sim) and ``derived`` (CLAT rows read from the runs' logs and models: ``top5_criticality``,
``trainable_params``). ``--transfers`` / ``--criticality`` add CLAT Table 2 / Table 7 rows from
the transfer and criticality jobs (:mod:`robustft.clat.tables`). With ``metrics`` given, rows
without any of them (a run's own row in a table of derived rows) are left out.

The JSON also carries the per-class accuracies and the warnings about classes a method never
predicts while others get them right (:mod:`robustft.tables.per_class`); the warnings are
logged too.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from robustft.contracts import AggregateSpec, ContractError
from robustft.steps._common import run
from robustft.tables.assemble import aggregate_study
from robustft.tables.records import load_run_record
from robustft.tables.serialise import write_study_tables
from robustft.tables.significance import TESTS

log = logging.getLogger("robustft.steps.aggregate")


def parse_spec(text: str) -> AggregateSpec:
    """A JSON object given inline, or a JSON/YAML file path (its keys: the fields of
    :class:`robustft.contracts.AggregateSpec`)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        spec = json.loads(stripped)
    else:
        spec = yaml.safe_load(Path(text).read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict):
        raise SystemExit(f"--spec must be a JSON object, got {type(spec).__name__}")
    try:
        return AggregateSpec.from_dict(spec)
    except ContractError as e:
        raise SystemExit(f"--spec: {e}") from e


def add_clat_rows(
    runs: list, spec: AggregateSpec, transfers: list[str], criticality: list[str]
) -> list:
    """The runs plus CLAT's derived/transfer/criticality rows; with ``spec.metrics``, only
    rows that have at least one of those metrics."""
    from robustft.clat import tables as clat_tables

    if "trainable_params" in spec.derived:
        clat_tables.add_parameter_counts(runs)
    extra = clat_tables.top5_records(runs) if "top5_criticality" in spec.derived else []
    extra += clat_tables.transfer_records(transfers, spec.to_dict())
    extra += clat_tables.criticality_records(criticality, spec.to_dict())
    out = runs + extra
    if spec.metrics:
        wanted = set(spec.metrics)
        out = [r for r in out if wanted & set(r.metrics)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="run directories")
    ap.add_argument("--spec", default="{}", help="JSON object or JSON/YAML file")
    ap.add_argument(
        "--transfers",
        nargs="*",
        default=[],
        help="CLAT Table 2: JSON files of robustft.steps.transfer",
    )
    ap.add_argument(
        "--criticality",
        nargs="*",
        default=[],
        help="CLAT Table 7: JSON files of robustft.steps.criticality",
    )
    ap.add_argument("--test", choices=sorted(TESTS), help="overrides spec['test']")
    ap.add_argument("--out-csv", required=True)
    ap.add_argument("--out-json", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    spec = parse_spec(args.spec)
    runs = []
    for d in args.runs:
        run = load_run_record(d)
        v = spec.variants.get(run.variant) or {}  # the study's display name and group labels win
        run.method = v.get("method", run.method)
        run.labels = dict(v.get("labels", run.labels))
        runs.append(run)
    runs = add_clat_rows(runs, spec, args.transfers, args.criticality)
    comparisons = spec.comparisons
    if comparisons is None and spec.reference:
        # the study's reference ("ours") against every other variant, in order of appearance
        ours = spec.reference
        comparisons = [
            {"ours": ours, "baseline": v}
            for v in dict.fromkeys(r.variant for r in runs)
            if v != ours
        ]
    tables = aggregate_study(
        args.study,
        runs,
        comparisons or [],
        spec.paper,
        test=args.test or spec.test,
        metrics=spec.metrics,
        alpha=float(spec.alpha),
        title=spec.title,
        description=spec.description,
        figures=spec.figures,
    )
    write_study_tables(tables, args.out_csv, args.out_json)
    log.info(
        "%s: %d runs -> %d cells, %d comparisons (%s t-test)",
        args.study,
        len(runs),
        len(tables.cells),
        len(tables.comparisons),
        tables.test,
    )
    for note in tables.notes:
        log.warning("%s: %s", args.study, note)
    # a class a method never predicts (other methods do) is a bug symptom, not a detail
    for w in tables.class_warnings:
        log.warning("%s: %s", args.study, w["text"])
    return 0


if __name__ == "__main__":
    run(main)
