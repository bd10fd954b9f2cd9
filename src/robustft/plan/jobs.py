""":class:`Plan`: the validated config and what every job of the requested studies receives.

This is the object ``rules/common.smk`` builds once per parse. It answers the input functions
(files, settings, resources) with the pure functions of :mod:`robustft.plan.grid` and
:mod:`robustft.plan.settings`, memoised: a dry run of every study asks about ~1,200 jobs, and
the same run's training settings are wanted by its train and evaluate jobs.
"""

from __future__ import annotations

import functools
from typing import Any

from robustft.contracts import (
    AggregateSpec,
    CriticalitySettings,
    EvaluateSettings,
    FetchBackbone,
    PrepareData,
    RunIdentity,
    TrainConfig,
    TransferSettings,
)
from robustft.plan import grid, paths, settings, studies
from robustft.plan.grid import Run, TransferPair
from robustft.plan.validate import validate


class Plan:
    """``Plan(config)`` validates ``config`` (a :class:`ConfigError` names a bad key) and
    plans its ``targets``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = validate(config)
        self.targets: list[str] = list(self.config["targets"])

    # --- what the workflow builds --------------------------------------------------------------
    def final_targets(self) -> list[str]:
        return [paths.table_json(s) for s in self.targets] + [paths.REPORT]

    def backbones(self, source: str | None = None) -> list[str]:
        """Backbone names, of one ``source`` (salman, pretrain, scratch) if given."""
        return [
            b
            for b, s in self.config["backbones"].items()
            if source is None or s["source"] == source
        ]

    @functools.cache  # noqa: B019 - one Plan per parse, alive as long as the workflow
    def study_runs(self, study: str) -> list[Run]:
        return grid.study_runs(self.config, study)

    @functools.cached_property
    def _autoattack_runs(self) -> frozenset[Run]:
        return frozenset(grid.autoattack_runs(self.config, self.targets))

    # --- data and backbones --------------------------------------------------------------------
    def prepare(self, dataset: str) -> PrepareData:
        return settings.prepare_settings(self.config, dataset)

    def pretrain_dataset(self, backbone: str) -> str:
        return self.config["backbones"][backbone]["dataset"]

    def pretrain_settings(self, backbone: str) -> TrainConfig:
        return settings.backbone_settings(self.config, backbone)

    def fetch_settings(self, backbone: str) -> FetchBackbone:
        return settings.fetch_settings(self.config, backbone)

    # --- one run -------------------------------------------------------------------------------
    @functools.cache  # noqa: B019
    def train_settings(self, run: Run) -> TrainConfig:
        return settings.train_settings(self.config, run)

    def run_identity(self, run: Run) -> RunIdentity:
        return settings.run_identity(self.config, run)

    def backbone_input(self, run: Run) -> str | None:
        return grid.backbone_input(self.config, run)

    def eval_settings(self, run: Run) -> EvaluateSettings:
        return settings.eval_settings(
            self.config, run, run in self._autoattack_runs, train=self.train_settings(run)
        )

    def resources(self, fidelity: str, kind: str) -> dict[str, int]:
        return settings.resources(self.config, fidelity, kind)

    # --- one study -----------------------------------------------------------------------------
    def study_files(self, study: str, kind: str) -> list[str]:
        """One file (``model``, ``train_log``, ``eval``, ...) of every run of the study."""
        return [run.file(kind) for run in self.study_runs(study)]

    def study_run_dirs(self, study: str) -> list[str]:
        return [run.directory for run in self.study_runs(study)]

    def study_models(self, study: str) -> list[str]:
        """Trained models the aggregation reads itself (CLAT Table 6: total parameter counts)."""
        if "trainable_params" not in self.config["studies"][study].get("derived", []):
            return []
        return self.study_files(study, "model")

    def aggregate_spec(self, study: str) -> AggregateSpec:
        return studies.aggregate_spec(self.config, study)

    def report_provenance(self, root: str) -> dict[str, Any]:
        return studies.report_provenance(self.config, root)

    # --- CLAT Table 2 and Table 7 jobs ---------------------------------------------------------
    def study_transfers(self, study: str) -> list[str]:
        return [pair.path for pair in grid.transfer_pairs(self.config, study)]

    def transfer_models(self, pair: TransferPair) -> dict[str, str]:
        return {
            "first": pair.run(pair.first).file("model"),
            "second": pair.run(pair.second).file("model"),
        }

    def transfer_settings(self, pair: TransferPair) -> TransferSettings:
        return settings.transfer_settings(self.config, pair)

    def study_criticality(self, study: str) -> list[str]:
        return [grid.criticality_path(run) for run in grid.criticality_runs(self.config, study)]

    def criticality_inputs(self, run: Run) -> dict[str, str]:
        return grid.criticality_inputs(self.config, run)

    def criticality_settings(self, run: Run) -> CriticalitySettings:
        return settings.criticality_settings(self.config, run)
