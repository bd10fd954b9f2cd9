"""``robustft plan``: the cost of the requested studies before anything runs.

Prints, per study, its training and evaluation jobs, the estimated GPU-hours and the wall time
on N GPUs (:func:`robustft.plan.cost.wall_seconds`), and where the throughput figures come from.
Torch-free and quick: it only parses the config and does arithmetic.

    robustft plan --targets autolora_table1,clat_table1 --gpus 8 --precision bf16
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from robustft.plan import cost
from robustft.plan.errors import ConfigError
from robustft.plan.jobs import Plan
from robustft.plan.validate import load_config

WALL_RULE = (
    "wall: level by level (training, then its evaluation; upstream runs first), longest job "
    "first on the least-loaded GPU: an upper bound."
)
HEADER = f"{'study':<22} {'train':>6} {'eval':>5} {'other':>5} {'GPU-h':>9} {'wall':>10}"


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def study_line(plan: Plan, study: str, gpus: int, precision: str | None = None) -> str:
    """One study: job counts, GPU-hours, wall time on ``gpus`` GPUs (or why there is none)."""
    fidelity = plan.config["studies"][study]["fidelity"]
    if plan.resources(fidelity, "train_resources")["gpu"] == 0:
        return f"{study:<22} CPU fidelity {fidelity} (train_resources.gpu 0): no GPU estimate"
    try:
        jobs = plan.study_jobs(study, precision)
    except ConfigError as err:  # e.g. a CPU demo's architecture the GPU table lacks
        return f"{study:<22} no estimate: {' '.join(str(err).split())}"
    count = {kind: sum(j.kind == kind for j in jobs) for kind in ("train", "evaluate")}
    other = len(jobs) - sum(count.values())
    gpu_hours = sum(j.seconds for j in jobs) / 3600
    wall = _hours(cost.wall_seconds(jobs, gpus))
    return (
        f"{study:<22} {count['train']:>6} {count['evaluate']:>5} {other:>5} "
        f"{gpu_hours:>9.1f} {wall:>10}"
    )


def _jobs_or_none(plan: Plan, study: str, precision: str | None) -> list[cost.JobCost]:
    if plan.resources(plan.config["studies"][study]["fidelity"], "train_resources")["gpu"] == 0:
        return []
    try:
        return plan.study_jobs(study, precision)
    except ConfigError:
        return []


def summary(
    plan: Plan, studies: Sequence[str], gpus: int, precision: str | None = None
) -> list[str]:
    """The table ``robustft plan`` prints (also the dry run's summary in rules/common.smk)."""
    table = plan.throughput
    shown = precision or "as configured (training; evaluation fp32 unless set)"
    lines = [
        f"Estimated cost on {gpus} GPU(s), precision {shown}:",
        HEADER,
        *(study_line(plan, s, gpus, precision) for s in studies),
    ]
    every = [j for s in studies for j in _jobs_or_none(plan, s, precision)]
    unique = {(j.kind, j.name): j for j in every}.values()  # a job shared by studies runs once
    if len(studies) > 1:
        kinds = [sum(j.kind == k for j in unique) for k in ("train", "evaluate")]
        lines.append(
            f"{'all (shared jobs once)':<22} {kinds[0]:>6} {kinds[1]:>5} "
            f"{len(unique) - sum(kinds):>5} {sum(j.seconds for j in unique) / 3600:>9.1f} "
            f"{_hours(cost.wall_seconds(unique, gpus)):>10}"
        )
    lines += [
        WALL_RULE,
        f"throughput: {table.path} — {table.device}; {table.source}",
    ]
    sources = sorted({j.source for j in every})
    lines += [f"  entry: {s}" for s in sources]
    sharing = {plan.config["studies"][s]["fidelity"] for s in studies}
    shared = {f: plan.jobs_per_gpu(f) for f in sharing if plan.jobs_per_gpu(f) > 1}
    for fidelity, n in shared.items():
        lines.append(
            f"fidelity {fidelity}: {n} jobs per GPU (the hours above count one job per GPU; "
            f"sharing gains what a GPU leaves idle). Locally: --resources gpu=<GPUs x {n}>; "
            "SLURM: GPU shards (profiles/slurm)"
        )
    return lines


def is_dry_run(argv: Sequence[str]) -> bool:
    """Whether a Snakemake command line asks for a dry run (``-n``, ``-np``, ``--dry-run``)."""
    for arg in argv[1:]:
        if arg in ("--dry-run", "--dryrun"):
            return True
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].isalpha() and "n" in arg:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="robustft plan",
        description="Estimate the jobs, GPU-hours and wall time of studies before running them.",
    )
    p.add_argument("--config", default="config.yaml", help="workflow config (config.yaml)")
    p.add_argument("--targets", help="comma-separated studies (default: the config's targets)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs for the wall-time estimate")
    p.add_argument("--throughput", help="throughput table (default: config cost.throughput_table)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        help="training precision (default: each run's own); evaluations keep theirs",
    )
    args = p.parse_args(argv)
    if args.gpus < 1:
        p.error("--gpus must be at least 1")
    try:
        config = load_config(args.config)
        if args.targets:
            config["targets"] = [t.strip() for t in args.targets.split(",") if t.strip()]
        if args.throughput:
            config["cost"] = {**config.get("cost", {}), "throughput_table": args.throughput}
        plan = Plan(config)
        unknown = [t for t in plan.targets if t not in plan.config["studies"]]
        if unknown:
            raise ConfigError(
                f"unknown studies {unknown}; the config has {list(config['studies'])}"
            )
        print("\n".join(summary(plan, plan.targets, args.gpus, args.precision)))
    except (ConfigError, OSError) as err:
        print(f"robustft plan: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
