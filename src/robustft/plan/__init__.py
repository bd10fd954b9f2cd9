"""The planning layer: config.yaml → validated config → studies → runs → jobs, every path, and
what each job receives. It imports no torch (``tests/test_plan.py`` checks), so parsing the
Snakefile costs about what Snakemake's own start-up costs.

Modules, each the one home of its job:

* :mod:`~robustft.plan.validate` — the JSON schema (``config.schema.yaml``), cross-references
  and method parameters; :class:`ConfigError` names the key, before any job starts;
* :mod:`~robustft.plan.catalog` — per-method parameter schemas (the defaults the methods use),
  display names, architecture and dataset-kind names;
* :mod:`~robustft.plan.grid` — :class:`Run`, studies → runs, chains, transfer pairs,
  criticality jobs;
* :mod:`~robustft.plan.settings` — presets and the resolution of each job's settings
  (:mod:`robustft.contracts`);
* :mod:`~robustft.plan.studies` — what the aggregation and the report are told about a study;
* :mod:`~robustft.plan.paths` — every results/log path, as templates;
* :mod:`~robustft.plan.jobs` — :class:`Plan`, the memoised facade ``rules/common.smk`` calls.
"""

from __future__ import annotations

from robustft.plan import catalog, paths
from robustft.plan.errors import ConfigError
from robustft.plan.grid import (
    Run,
    TransferPair,
    all_runs,
    all_training_runs,
    backbone_input,
    criticality_inputs,
    criticality_path,
    criticality_runs,
    method_label,
    needs_autoattack,
    run_chain,
    study_backbones,
    study_datasets,
    study_grids,
    study_runs,
    study_variants,
    transfer_pairs,
    upstream_run,
    variant_spec,
)
from robustft.plan.jobs import Plan
from robustft.plan.settings import (
    PRESETS,
    backbone_settings,
    criticality_settings,
    deep_merge,
    eval_settings,
    evaluation_protocol,
    run_identity,
    train_settings,
    transfer_settings,
)
from robustft.plan.studies import aggregate_spec, config_hash, known_metrics, report_provenance
from robustft.plan.validate import load_config, validate

__all__ = [
    "PRESETS",
    "ConfigError",
    "Plan",
    "Run",
    "TransferPair",
    "aggregate_spec",
    "all_runs",
    "all_training_runs",
    "backbone_input",
    "backbone_settings",
    "catalog",
    "config_hash",
    "criticality_inputs",
    "criticality_path",
    "criticality_runs",
    "criticality_settings",
    "deep_merge",
    "eval_settings",
    "evaluation_protocol",
    "known_metrics",
    "load_config",
    "method_label",
    "needs_autoattack",
    "paths",
    "report_provenance",
    "run_chain",
    "run_identity",
    "study_backbones",
    "study_datasets",
    "study_grids",
    "study_runs",
    "study_variants",
    "train_settings",
    "transfer_pairs",
    "transfer_settings",
    "upstream_run",
    "validate",
    "variant_spec",
]
