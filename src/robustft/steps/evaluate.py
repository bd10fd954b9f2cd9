"""Evaluate one trained run: ``python -m robustft.steps.evaluate --settings JSON --model FILE
--data DIR --out eval.json`` (natural accuracy, PGD-10, AutoAttack, per-example outcomes).

The model file describes its model; the settings say only how to attack it."""

from __future__ import annotations

from pathlib import Path

from robustft.contracts import EvaluateSettings
from robustft.evaluate import evaluate_run
from robustft.io import write_json_atomic
from robustft.steps._common import parser, read_settings, run, start
from robustft.train import resolve_device


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--settings",
        required=True,
        help="JSON of robustft.contracts.EvaluateSettings (the attack, AutoAttack)",
    )
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    start(args)
    values = read_settings(EvaluateSettings, args.settings)
    resolve_device(values.device, gpus=args.gpus)  # fail before any work if a GPU was promised
    result = evaluate_run(values, args.model, args.data)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    run(main)
