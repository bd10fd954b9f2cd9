"""Adversarially pre-train the offline demo's backbone on a generated source dataset:
``python -m robustft.steps.pretrain_backbone --settings JSON --data DIR --checkpoints DIR --out FILE``.

This makes the demo a real robust-pretrain → robust-fine-tune chain without downloads."""

from __future__ import annotations

from pathlib import Path

from robustft.contracts import TrainConfig
from robustft.models import save_backbone
from robustft.rundir import finish, hold
from robustft.steps._common import add_keep_checkpoints, parser, read_settings, run, start
from robustft.train import Trainer, resolve_device, write_log


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--settings",
        required=True,
        help="JSON of robustft.contracts.TrainConfig (the pre-training settings)",
    )
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--checkpoints", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    add_keep_checkpoints(p)
    args = p.parse_args(argv)
    start(args)
    cfg = read_settings(TrainConfig, args.settings)
    resolve_device(cfg.device, gpus=args.gpus)  # fail before any work if a GPU was promised
    hold(args.checkpoints)  # one trainer per checkpoint directory (robustft.rundir)
    trainer = Trainer(cfg, args.data, None, args.checkpoints)
    rows = trainer.fit()
    write_log(rows, args.out.with_suffix(".log.csv"))
    save_backbone(trainer.model, args.out)
    finish(args.checkpoints, keep=args.keep_checkpoints)


if __name__ == "__main__":
    run(main)
