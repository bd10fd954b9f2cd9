"""CLAT Table 7: layer criticality measured on one batch of several sizes, with timing.

``python -m robustft.steps.criticality --settings JSON --data DIR --model FILE
--train-log FILE --out FILE``

The model is the one a CLAT run starts from (its upstream run's ``model_best.pt``), measured
exactly as CLAT's first selection does (:meth:`robustft.clat.method.CLAT.measure`: the CLAT
variant's tap/ratio/head options, PGD with the run's training attack, unaugmented training
examples drawn with a seeded generator), once per batch size and repeat. Recorded per size: the
top-5 layer indices of each repeat, the full C vector, and the seconds the measurement took
(CLAT Eq. 5-6 only; the paper's TITAN RTX numbers are for the same computation). The mean
epoch time of the measured run (``train_log.csv`` ``seconds``, which includes that run's
per-epoch evaluation) is the caption's "1 PGD-AT epoch" reference.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import torch

from robustft import rng
from robustft.attacks import PGDConfig
from robustft.batches import load_split
from robustft.contracts import CriticalitySettings
from robustft.evaluate import load_trained, provenance
from robustft.io import sha256_file, write_json_atomic
from robustft.methods import TrainContext, build_method
from robustft.steps._common import parser, read_settings, run, start
from robustft.train import resolve_device


def mean_epoch_seconds(train_log: Path | None) -> float | None:
    if train_log is None or not Path(train_log).is_file():
        return None
    with open(train_log, newline="") as fh:
        values = [float(r["seconds"]) for r in csv.DictReader(fh) if r.get("seconds")]
    return sum(values) / len(values) if values else None


def measure_batch_sizes(
    values: CriticalitySettings | dict[str, Any],
    data: Path,
    model_path: Path,
    train_log: Path | None = None,
    *,
    gpus: int = 0,
) -> dict[str, Any]:
    values = CriticalitySettings.from_dict(values)
    device = resolve_device(values.device, gpus=gpus)
    model = load_trained(values.model, model_path, data, device)
    train = load_split(data, "train")
    generator = rng.new_generator(values.seed)

    def examples(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = rng.randperm(len(train), generator)[:n]
        x, y = train.tensors(index.sort().values.numpy())
        return x.to(device), y.to(device)

    ctx = TrainContext(
        train_attack=PGDConfig(**values.train_attack),
        generator=generator,
        batch_size=max(values.batch_sizes),
        train_examples=examples,
    )
    results = []
    for size in values.batch_sizes:
        method = build_method(
            values.clat_method,
            **{**values.clat_params, "criticality_examples": int(size), "criticality_batches": 1},
        )
        draws = []
        for _ in range(values.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            crit = method.measure(model, ctx)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            draws.append(
                {
                    "top5": crit.ranking()[:5],
                    "seconds": time.perf_counter() - started,
                    "measure_seconds": crit.seconds,
                    "criticality": crit.criticality,
                }
            )
        top1 = [d["top5"][0] for d in draws]
        results.append(
            {
                "batch_size": int(size),
                "draws": draws,
                "top5": draws[0]["top5"],
                "seconds": sum(d["seconds"] for d in draws) / len(draws),
                "top1_agreement": top1.count(top1[0]) / len(top1),
                "names": crit.names,
            }
        )
    epoch = mean_epoch_seconds(train_log)
    identity = values.identity.to_dict() if values.identity is not None else {}
    return {
        "identity": identity,
        "measured_run": values.measured_run,
        "measured_variant": values.measured_variant,
        "measured_method": values.measured_method,
        "results": results,
        "reference_epoch_seconds": None if epoch is None or math.isnan(epoch) else epoch,
        "provenance": provenance(
            device, {"checkpoint_sha256": sha256_file(model_path), "seed": values.seed}
        ),
    }


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--settings", required=True, help="JSON of robustft.contracts.CriticalitySettings"
    )
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--train-log", type=Path, default=None)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    start(args)
    write_json_atomic(
        args.out,
        measure_batch_sizes(
            read_settings(CriticalitySettings, args.settings),
            args.data,
            args.model,
            args.train_log,
            gpus=args.gpus,
        ),
    )


if __name__ == "__main__":
    run(main)
