"""Cost of one training step per method against an ideal built from measured components.

    python benchmarks/step_cost.py [--arch resnet_mini --width 16 --size 32 --batch 128]

A PGD iteration is not a plain forward+backward: it needs only the input gradient (no weight
gradients) and runs BatchNorm in eval mode, measured at 0.70–0.84 of a plain pass. Counting
it as a full pass (the earlier version of this script) made the ideal too slow, so "no
overhead beyond the pass count" could not fail. Here every component is measured on the same
model and batch:

* ``plain``      — train-mode forward + backward to the weights (a training pass);
* ``input_grad`` — eval-mode forward + backward to the input only (one PGD iteration);
* ``eval_fwd``   — eval-mode forward without gradients (a clean evaluation pass);

and a method's ideal step is ``attack_steps × input_grad + training_passes × plain``
(:data:`TRAINING_PASSES`: the training forwards, backpropagated once). The overhead is
measured step / ideal − 1: what the method's code costs beyond the arithmetic it must do.
Components and methods are interleaved (each repeat runs every variant once, in turn) and the
medians of wall and CPU time are both reported. The attack is AutoLoRa's PGD-10
(:data:`robustft.threat_models.AUTOLORA_PAPER`). Not part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from robustft import rng
from robustft.attacks import PGDConfig
from robustft.methods import TrainContext, build_method
from robustft.models import build_model
from robustft.threat_models import AUTOLORA_PAPER

#: whole-batch training passes after the attack (forwards sharing one backward): vanilla RFT
#: adversarial + clean; TWINS two halves × (adversarial + clean) = 2 batches; AutoLoRa LoRA
#: branch + FE branch; PGD-AT adversarial only
TRAINING_PASSES = {"vanilla_rft": 2, "twins": 2, "autolora": 2, "pgd_at": 1}


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of every callable, each run once per repeat in turn."""
    for fn in fns.values():
        fn()  # warm-up
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - w0)
            cpu[key].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


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
    g = rng.new_generator(0)
    x = rng.uniform(torch.empty(args.batch, 3, args.size, args.size), g)
    y = rng.randint(0, args.classes, (args.batch,), g)
    attack = PGDConfig(**AUTOLORA_PAPER.train_attack())

    torch.manual_seed(0)
    base = build_model(args.arch, args.classes, width=args.width)

    def plain():
        base.train().zero_grad(set_to_none=True)
        F.cross_entropy(base(x), y).backward()

    def input_grad():
        z = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(base.eval()(z), y), z)

    def eval_fwd():
        with torch.no_grad():
            base.eval()(x)

    fns = {"plain": plain, "input_grad": input_grad, "eval_fwd": eval_fwd}
    for name in TRAINING_PASSES:
        method = build_method(name)
        torch.manual_seed(0)
        model = build_model(args.arch, args.classes, width=args.width, **method.model_kwargs())
        ctx = TrainContext(train_attack=attack, generator=rng.new_generator(1), batch_size=len(y))

        def step(model=model, method=method, ctx=ctx):  # this iteration's objects
            model.train().zero_grad(set_to_none=True)
            method.batch_loss(model, x, y, ctx).loss.backward()

        fns[name] = step
    t = interleaved(fns, args.repeats)
    p_wall, p_cpu = t["plain"]
    print(
        f"{args.arch} width {args.width}, {args.size}px, batch {args.batch}, {args.threads} "
        f"threads; medians of {args.repeats} interleaved runs"
    )
    print(f"{'component':12s} {'wall ms':>9s} {'cpu ms':>9s} {'× plain (wall)':>15s}")
    for key in ("plain", "input_grad", "eval_fwd"):
        w, c = t[key]
        print(f"{key:12s} {w * 1e3:9.1f} {c * 1e3:9.1f} {w / p_wall:15.3f}")
    print(
        f"{'method':12s} {'wall ms':>9s} {'ideal ms':>9s} {'overhead':>9s} "
        f"{'cpu ms':>9s} {'ideal cpu':>10s} {'overhead':>9s}"
    )
    for name, passes in TRAINING_PASSES.items():
        (w, c), (ig_w, ig_c) = t[name], t["input_grad"]
        ideal_w = attack.steps * ig_w + passes * p_wall
        ideal_c = attack.steps * ig_c + passes * p_cpu
        print(
            f"{name:12s} {w * 1e3:9.1f} {ideal_w * 1e3:9.1f} {w / ideal_w - 1:+9.1%} "
            f"{c * 1e3:9.1f} {ideal_c * 1e3:10.1f} {c / ideal_c - 1:+9.1%}"
        )


if __name__ == "__main__":
    main()
