"""Fetch a RobustBench model-zoo checkpoint and write it as a self-describing model file:
``python -m robustft.steps.fetch_robustbench --arch robustbench.cifar10.Linf.Peng2023Robust
--out FILE [--model-dir resources/robustbench]``.

The zoo file lives in RobustBench's own layout under ``--model-dir``
(``<dataset>/<threat model>/<name>.pt``): a file placed there by hand is used as is; a missing
one is downloaded unless ``ROBUSTFT_OFFLINE=1``, and then the error names the file(s) to place.
"""

from __future__ import annotations

from pathlib import Path

from robustft.backbones import fetch_robustbench
from robustft.models.robustbench import DEFAULT_MODEL_DIR
from robustft.steps._common import parser, run, start


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--arch", required=True, help="robustbench.<dataset>.<threat model>.<name>")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model-dir", type=Path, default=Path(DEFAULT_MODEL_DIR))
    args = p.parse_args(argv)
    start(args)
    digest = fetch_robustbench(args.arch, args.model_dir, args.out)
    print(f"{args.out}: {args.arch} (sha256 {digest})")


if __name__ == "__main__":
    run(main)
