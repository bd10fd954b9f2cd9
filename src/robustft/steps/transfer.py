"""Black-box transfer between two trained runs (CLAT Table 2): ``python -m
robustft.steps.transfer --settings JSON --data DIR --models A=FILE B=FILE --out FILE``.

PGD (the CLAT protocol's attack, one random start) is crafted on each model and evaluated on
the other (:func:`robustft.clat.protocol.transfer_matrix`); the diagonal is the white-box
accuracy of the same single run. A point counts as robust only if the victim also classifies it
correctly clean. The JSON keeps the matrix as ``matrix[source][target]`` (accuracy in [0, 1]).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from robustft.attacks import PGDConfig
from robustft.batches import load_split
from robustft.clat.protocol import transfer_matrix
from robustft.contracts import TransferSettings
from robustft.evaluate import load_trained, provenance
from robustft.io import sha256_file, write_json_atomic
from robustft.steps._common import parser, read_settings, run, start
from robustft.train import resolve_device


def run_transfer(
    values: TransferSettings | dict, data: Path, models: dict[str, Path], *, gpus: int = 0
) -> dict:
    values = TransferSettings.from_dict(values)
    device = resolve_device(values.device, gpus=gpus)
    legacy = values.models or {}  # only files that do not describe their model read these
    loaded = {
        name: load_trained(legacy.get(name), path, data, device) for name, path in models.items()
    }
    x, y = load_split(data, "test").subset(values.examples).tensors()
    started = time.perf_counter()
    matrix = transfer_matrix(
        loaded,
        x,
        y,
        attack=PGDConfig(**values.attack),
        seed=values.seed,
        batch_size=values.batch_size,
    )
    identity = values.identity.to_dict() if values.identity is not None else {}
    return {
        "identity": identity,
        "matrix": matrix,
        "n": len(y),
        "attack": values.attack,
        "seconds": time.perf_counter() - started,
        "provenance": provenance(
            device,
            {
                "checkpoint_sha256": {name: sha256_file(path) for name, path in models.items()},
                "seed": values.seed,
            },
        ),
    }


def _pair(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if not path:
        raise SystemExit(f"--models expects NAME=FILE, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--settings",
        required=True,
        help="JSON of robustft.contracts.TransferSettings: attack, examples, seed",
    )
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--models", required=True, nargs="+", type=_pair, help="NAME=model_best.pt")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    start(args)
    torch.manual_seed(0)
    write_json_atomic(
        args.out,
        run_transfer(
            read_settings(TransferSettings, args.settings),
            args.data,
            dict(args.models),
            gpus=args.gpus,
        ),
    )


if __name__ == "__main__":
    run(main)
