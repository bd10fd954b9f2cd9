"""Evaluate one trained run: ``python -m robustft.steps.evaluate --settings JSON --model FILE
--data DIR --out eval.json`` (natural accuracy, PGD-10, AutoAttack, per-example outcomes)."""

from __future__ import annotations

from pathlib import Path

from robustft.evaluate import evaluate_run
from robustft.io import write_json_atomic
from robustft.steps._common import parser, settings, start


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--settings", required=True)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    start(args)
    result = evaluate_run(settings(args.settings), args.model, args.data)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
