"""Fetch and verify a Salman et al. robust ImageNet backbone:
``python -m robustft.steps.fetch_backbone --arch resnet18 --eps-pt 4 --out FILE [--sha256 HEX]``.

Checks that every conv/BN tensor is present before the file is handed to training jobs."""

from __future__ import annotations

from pathlib import Path

from robustft.backbones import fetch_salman
from robustft.contracts import FetchBackbone
from robustft.models import build_model, load_backbone
from robustft.steps._common import parser, run, start


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--arch", required=True)
    p.add_argument("--eps-pt", required=True, type=float)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--sha256", default=None)
    args = p.parse_args(argv)
    start(args)
    spec = FetchBackbone(arch=args.arch, eps_pt=args.eps_pt, sha256=args.sha256)
    fetch_salman(spec.arch, spec.eps_pt, args.out, spec.sha256)
    load_backbone(build_model(spec.arch, 10), args.out)  # raises BackboneError naming the file


if __name__ == "__main__":
    run(main)
