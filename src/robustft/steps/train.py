"""Train one run: ``python -m robustft.steps.train --settings JSON --data DIR --backbone FILE
--checkpoints DIR --out DIR``. Started again after a kill, it resumes from its last epoch."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import yaml

from robustft.contracts import RunIdentity, TrainConfig
from robustft.io import atomic_path
from robustft.rundir import finish, hold
from robustft.steps._common import add_keep_checkpoints, parser, read_settings, run, start
from robustft.train import resolve_device, train_run_recorded


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--settings",
        required=True,
        help="JSON of robustft.contracts.TrainConfig (the run's resolved settings)",
    )
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--backbone", type=Path, default=None)
    p.add_argument("--checkpoints", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--identity",
        default=None,
        help="JSON of robustft.contracts.RunIdentity: fidelity, dataset, backbone, "
        "variant, seed, method, preset (recorded in run.yaml)",
    )
    add_keep_checkpoints(p)
    args = p.parse_args(argv)
    start(args)
    cfg = read_settings(TrainConfig, args.settings)
    identity = {} if args.identity is None else read_settings(RunIdentity, args.identity).to_dict()
    resolve_device(cfg.device, gpus=args.gpus)  # fail before any work if a GPU was promised
    hold(args.checkpoints)  # one trainer per run directory (robustft.rundir)
    compute = train_run_recorded(cfg, args.data, args.backbone, args.checkpoints, args.out)
    with atomic_path(args.out / "run.yaml") as tmp:
        tmp.write_text(
            yaml.safe_dump(
                {
                    **identity,
                    "settings": cfg.to_dict(),
                    "data_dir": str(args.data),
                    "backbone_file": str(args.backbone),
                    "provenance": provenance(),
                    # precision, channels_last, compile, data_on_device, device (+ name)
                    "compute": compute,
                },
                sort_keys=True,
            )
        )
    finish(args.checkpoints, keep=args.keep_checkpoints)  # outputs complete: not needed now


def provenance() -> dict:
    """Where the run trained: the GPU binding it saw (set by SLURM or robustft.devices)."""
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "host": platform.node(),
    }


if __name__ == "__main__":
    run(main)
