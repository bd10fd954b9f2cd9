""":class:`Plan`: the validated config and what every job of the requested studies receives.

This is the object ``rules/common.smk`` builds once per parse. It answers the input functions
(files, settings, resources) with the pure functions of :mod:`robustft.plan.grid` and
:mod:`robustft.plan.settings`, memoised: a dry run of every study asks about ~1,200 jobs, and
the same run's training settings are wanted by its train and evaluate jobs.

It also prices them (:mod:`robustft.plan.cost`): the GPU-seconds of each job from the throughput
table, a study's jobs for ``robustft plan``, and each GPU job's ``runtime`` request.
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
from robustft.plan import cost, grid, paths, settings, studies
from robustft.plan.cost import JobCost
from robustft.plan.errors import ConfigError
from robustft.plan.grid import Run, TransferPair
from robustft.plan.validate import validate

#: ``cost:`` in config.yaml: the throughput table (null: the shipped default of public figures)
#: and how a job's runtime request follows from its estimate
COST_DEFAULTS: dict[str, Any] = {
    "throughput_table": None,
    "margin": 1.5,
    "floor_minutes": 30,
    "unknown_runtime": 2880,
}


class Plan:
    """``Plan(config)`` validates ``config`` (a :class:`ConfigError` names a bad key) and
    plans its ``targets``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = validate(config)
        self.targets: list[str] = list(self.config["targets"])
        if self.cost_options["throughput_table"]:  # a bad table fails here, not mid-DAG
            self.throughput  # noqa: B018

    # --- what the workflow builds --------------------------------------------------------------
    def final_targets(self) -> list[str]:
        pages = [paths.report_page(s) for s in self.targets]
        return [paths.table_json(s) for s in self.targets] + pages + [paths.REPORT]

    def backbones(self, source: str | None = None) -> list[str]:
        """Backbone names, of one ``source`` (salman, pretrain, scratch, robustbench) if given."""
        return [
            b
            for b, s in self.config["backbones"].items()
            if source is None or s["source"] == source
        ]

    def as_is_variants(self) -> list[str]:
        """Variants whose "training" copies the backbone file (the ``as_is`` rule's)."""
        return grid.as_is_variants(self.config)

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

    def resources(
        self, fidelity: str, kind: str, job: Run | TransferPair | None = None
    ) -> dict[str, int]:
        """``gpu``, ``mem_mb``, ``runtime`` of a job (``kind``: train_resources/eval_resources).

        ``runtime`` precedence: the fidelity's explicit ``<kind>.runtime``; else, for a GPU job
        of a known ``job`` (a run, or a transfer pair), the cost estimate × ``cost.margin`` +
        ``cost.floor_minutes`` (× ``jobs_per_gpu`` when jobs share a GPU); else the flat
        ``cost.unknown_runtime`` (an architecture the table lacks) or, for CPU jobs, 60 min.
        """
        res = settings.resources(self.config, fidelity, kind)
        explicit = "runtime" in self.config["fidelities"][fidelity].get(kind, {})
        if explicit or res["gpu"] == 0 or job is None:
            return res
        opts = self.cost_options
        try:
            if isinstance(job, TransferPair):
                seconds = self.transfer_cost(job).seconds
            elif kind == "train_resources":
                seconds = self.train_cost(job).seconds
            else:  # evaluate; criticality (same wildcards) gets this over-estimate, it is small
                seconds = self.eval_cost(job).seconds
        except ConfigError:  # e.g. an arch the throughput table lacks
            return {**res, "runtime": opts["unknown_runtime"]}
        shared = self.jobs_per_gpu(fidelity)
        minutes = cost.runtime_minutes(seconds, opts["margin"], opts["floor_minutes"], shared)
        return {**res, "runtime": minutes}

    def jobs_per_gpu(self, fidelity: str) -> int:
        """How many of the fidelity's jobs share one GPU (``fidelities.<f>.jobs_per_gpu``)."""
        return self.config["fidelities"][fidelity].get("jobs_per_gpu", 1)

    def gpu_sharing(self) -> int:
        """Jobs per GPU for this parse: the smallest ``jobs_per_gpu`` of the targets'
        fidelities (a run mixing fidelities never packs one beyond what it allows)."""
        fids = {self.config["studies"][s]["fidelity"] for s in self.targets}
        return min((self.jobs_per_gpu(f) for f in fids), default=1)

    # --- the cost of jobs (robustft.plan.cost) -------------------------------------------------
    @functools.cached_property
    def cost_options(self) -> dict[str, Any]:
        return {**COST_DEFAULTS, **self.config.get("cost", {})}

    @functools.cached_property
    def throughput(self) -> cost.ThroughputTable:
        return cost.load_table(self.cost_options["throughput_table"])

    def _sizes(self, dataset: str) -> tuple[int, int, int]:
        return cost.split_sizes(self.config["datasets"][dataset], self.config["preset"])

    def _input_size(self, run: Run) -> int:
        return (
            self.train_settings(run).input_size
            or self.config["datasets"][run.dataset]["resolution"]
        )

    def _level(self, run: Run) -> int:
        """2 × the run's position in its chain: its training after its upstream's evaluation."""
        return 2 * (len(grid.run_chain(self.config, run)) - 1)

    def _job(self, kind, name, run, passes, precision, method=None, step_passes=1.0) -> JobCost:
        rate = self.throughput.lookup(
            self.train_settings(run).arch, self._input_size(run), precision, method, step_passes
        )
        level = self._level(run) + (kind != "train")
        source = rate.entry.source or rate.table.source
        return JobCost(kind, name, passes, passes / rate.passes_per_s, level, source)

    @functools.cache  # noqa: B019
    def train_cost(self, run: Run, precision: str | None = None) -> JobCost:
        train = self.train_settings(run)
        passes = cost.train_passes(train, self._sizes(run.dataset))
        per_step = cost.step_passes(
            train.method, train.train_attack.get("steps", 10), train.method_params
        )
        precision = precision or getattr(train, "precision", "fp32")
        return self._job("train", run.name, run, passes, precision, train.method, per_step)

    @functools.cache  # noqa: B019
    def eval_cost(self, run: Run, precision: str | None = None) -> JobCost:
        """``precision``: the evaluation's own (fp32 unless the fidelity asks otherwise)."""
        evaluation = self.eval_settings(run)
        passes = cost.eval_passes(evaluation, self._sizes(run.dataset)[2])
        precision = precision or getattr(evaluation, "precision", "fp32")
        return self._job("evaluate", run.name, run, passes, precision)

    def transfer_cost(self, pair: TransferPair, precision: str | None = None) -> JobCost:
        spec = self.transfer_settings(pair)
        first = pair.run(pair.first)
        n = spec.examples or self._sizes(pair.dataset)[2]
        passes = cost.transfer_passes(n, spec.attack.get("steps", 10))
        return self._job("transfer", pair.path, first, passes, precision or "fp32")

    def criticality_cost(self, run: Run, precision: str | None = None) -> JobCost:
        spec = self.criticality_settings(run)
        steps = spec.train_attack.get("steps", 10)
        passes = cost.criticality_passes(spec.batch_sizes, spec.repeats, steps)
        return self._job("criticality", run.name, run, passes, precision or "fp32")

    def study_jobs(self, study: str, precision: str | None = None) -> list[JobCost]:
        """Every GPU job a study needs: training (upstream runs of chains included), its
        evaluations, CLAT's transfer and criticality jobs. ``precision`` overrides the
        training precision; evaluations keep their own (fp32 unless asked)."""
        runs = self.study_runs(study)
        chains = dict.fromkeys(r for run in runs for r in grid.run_chain(self.config, run))
        # an as-is run's "training" is a file copy (a CPU job): nothing to price
        trained = [r for r in chains if not grid.is_as_is(self.config, r.variant)]
        jobs = [self.train_cost(run, precision) for run in trained]
        jobs += [self.eval_cost(run) for run in runs]
        jobs += [self.transfer_cost(p) for p in grid.transfer_pairs(self.config, study)]
        jobs += [self.criticality_cost(r) for r in grid.criticality_runs(self.config, study)]
        return jobs

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
