"""An as-is run: a RobustBench zoo model evaluated without training (CLAT Table 1's "Peng et
al." and "Bai et al." rows): ``python -m robustft.steps.as_is --backbone FILE --out DIR
[--identity JSON]``.

Writes the run's outputs as the train step would, so evaluation, "X + CLAT" chains and the
tables treat the run like any other: ``model_best.pt`` (the backbone file, which already
describes its model, head included), a ``train_log.csv`` without epochs and ``run.yaml``
(identity, 0 epochs, which file the model is).
"""

from __future__ import annotations

import platform
from pathlib import Path

import yaml

from robustft.backbones import model_as_is
from robustft.contracts import RunIdentity
from robustft.io import atomic_path
from robustft.plan.paths import RUN_FILES
from robustft.steps._common import parser, read_settings, run, start


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--backbone", required=True, type=Path, help="self-describing model file")
    p.add_argument("--out", required=True, type=Path, help="the run directory")
    p.add_argument(
        "--identity", default=None, help="JSON of robustft.contracts.RunIdentity (run.yaml)"
    )
    args = p.parse_args(argv)
    start(args)
    identity = {} if args.identity is None else read_settings(RunIdentity, args.identity).to_dict()
    args.out.mkdir(parents=True, exist_ok=True)
    spec = model_as_is(args.backbone, args.out / RUN_FILES["model"])
    with atomic_path(args.out / RUN_FILES["train_log"]) as tmp:
        tmp.write_text("epoch,seconds\n")  # no epoch was trained
    record = {
        **identity,
        # what the tables' protocol column reads: no training, nothing selected
        "settings": {"arch": spec["arch"], "epochs": 0, "method": "as_is", "selection": "as_is"},
        "backbone_file": str(args.backbone),
        "provenance": {"host": platform.node()},
    }
    with atomic_path(args.out / RUN_FILES["record"]) as tmp:
        tmp.write_text(yaml.safe_dump(record, sort_keys=True))
    print(f"{args.out}: {spec['arch']} as is (from {args.backbone})")


if __name__ == "__main__":
    run(main)
