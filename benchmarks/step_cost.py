"""Cost of one training step per method, relative to one plain forward+backward.

    python benchmarks/step_cost.py [--arch resnet_mini --width 16 --size 32 --batch 128]

Prints, per method, the measured step time divided by the time of one plain
forward+backward on the same batch, next to the number of forward/backward passes the
method needs (PGD-10 = 10 forward+backward passes, plus the training forwards). The overhead
beyond that count is (measured ratio / pass count − 1). The training attack is AutoLoRa's
(:data:`robustft.threat_models.AUTOLORA_PAPER`). Not part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from robustft.attacks import PGDConfig
from robustft.methods import TrainContext, build_method
from robustft.models import build_model
from robustft.threat_models import AUTOLORA_PAPER

# forward+backward passes per step: PGD-10 attack (10 fwd+bwd) + the training passes
# (vanilla: adv + clean forwards, one backward through both; TWINS: 4 half/full forwards;
# AutoLoRa: LoRA-branch forward + FE forward). Counted in fwd+bwd units of the whole batch.
PASSES = {"vanilla_rft": 12, "twins": 12, "autolora": 12, "pgd_at": 11}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet_mini")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)

    base_model = build_model(args.arch, args.classes, width=args.width).train()

    def plain():
        base_model.zero_grad(set_to_none=True)
        F.cross_entropy(base_model(x), y).backward()

    base = timed(plain, args.repeats)
    print(
        f"{args.arch} width {args.width}, {args.size}px, batch {args.batch}, "
        f"{args.threads} threads: plain fwd+bwd {base * 1000:.1f} ms"
    )
    print(f"{'method':12s} {'step ms':>9s} {'ratio':>7s} {'passes':>7s} {'overhead':>9s}")
    for name, passes in PASSES.items():
        method = build_method(name, **({"lambda_source": "running"} if name == "autolora" else {}))
        model = build_model(
            args.arch, args.classes, width=args.width, **method.model_kwargs()
        ).train()
        ctx = TrainContext(
            train_attack=PGDConfig(**AUTOLORA_PAPER.train_attack()),
            generator=torch.Generator().manual_seed(0),
            batch_size=args.batch,
        )

        def step(model=model, method=method, ctx=ctx):  # this iteration's objects
            model.zero_grad(set_to_none=True)
            method.batch_loss(model, x, y, ctx).loss.backward()

        t = timed(step, args.repeats)
        ratio = t / base
        print(f"{name:12s} {t * 1000:9.1f} {ratio:7.2f} {passes:7d} {ratio / passes - 1:+9.1%}")


if __name__ == "__main__":
    main()
