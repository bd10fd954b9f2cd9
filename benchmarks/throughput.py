"""Training throughput (images/s) per method × architecture × precision, on any device.

    python benchmarks/throughput.py --device cuda --arch resnet18:32:64:224 \
        --methods vanilla_rft,twins,autolora,pgd_at --out throughput.yaml

Each variant is one real training step of the method, as :mod:`robustft.train` runs it: the
method's ``batch_loss`` (its PGD-10 training attack included, AutoLoRa's threat model) under
the precision's autocast (:mod:`robustft.precision`), backward, SGD step; ``channels_last``
inside the model when asked. Next to it, the plain fp32 loop of the same model (one forward +
backward + SGD step on the clean batch, NCHW) — the side-by-side the images/s are read against.
Variants are interleaved (every repeat runs each variant once, in turn), so a slow phase of the
machine hits all of them alike; the median is reported, with wall and CPU time.

``--out`` writes the throughput table the cost planner (``robustft plan``) reads::

    source: "measured by benchmarks/throughput.py on <device name>, <date>"
    device: "<device name>"
    entries:
      - {arch: resnet18, input_size: 224, precision: bf16, passes: 12, images_per_s: 123.4,
         method: vanilla_rft}

``images_per_s`` is training images per second of a step with ``passes`` forward+backward
passes (PGD-10 training: 11 or 12 with the update; the plain step: 1, written as method
``plain``). The table holds the settings the fidelities use: fp32 in NCHW (``paper``) and
bf16 with channels_last (``paper_bf16``); the printed table shows every combination.

An ``--arch`` spec is ``name[:data_px[:batch[:input_size[:width]]]]``: the images are
``data_px`` square, ``input_size`` is what the model upsamples them to (AutoLoRa: 32 → 224).
Not part of the test run.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import yaml

from robustft import precision, rng
from robustft.attacks import PGDConfig
from robustft.methods import TrainContext, build_method
from robustft.models import build_model
from robustft.threat_models import AUTOLORA_PAPER

#: forward+backward passes of one step with PGD-10 training, in whole-batch units: 10 attack
#: iterations + the training forwards with one backward (vanilla: adversarial + clean; TWINS:
#: two halves through two branches, adversarial + clean; AutoLoRa: LoRA branch + FE branch;
#: PGD-AT: adversarial only). The planner scales by these counts.
PASSES = {"plain": 1, "vanilla_rft": 12, "twins": 12, "autolora": 12, "pgd_at": 11}


@dataclass
class Variant:
    method: str
    precision: str
    channels_last: bool
    arch: str
    data_px: int
    batch: int
    input_size: int | None
    width: int | None
    compiled: bool = False  # torch.compile (opt-in `compile: true`); measured, not in the table

    @property
    def label(self) -> str:
        layout = "channels_last" if self.channels_last else "nchw"
        return f"{self.arch}@{self.net_px} {self.method} {self.precision} {layout}" + (
            " compiled" if self.compiled else ""
        )

    @property
    def net_px(self) -> int:
        return self.input_size or self.data_px


def parse_arch(spec: str) -> tuple[str, int, int, int | None, int | None]:
    parts = spec.split(":")
    if not 1 <= len(parts) <= 5:
        raise SystemExit(f"--arch {spec!r}: expected name[:data_px[:batch[:input_size[:width]]]]")
    ints = [int(p) if p else None for p in parts[1:]] + [None] * (5 - len(parts))
    data_px, batch, input_size, width = ints
    return parts[0], data_px or 32, batch or 32, input_size, width


def build_step(v: Variant, device: torch.device, classes: int):
    """A closure running one training step of ``v`` on a fixed batch."""
    g = rng.new_generator(0)
    x = rng.uniform(torch.empty(v.batch, 3, v.data_px, v.data_px), g).to(device)
    y = rng.randint(0, classes, (v.batch,), g).to(device)
    method = build_method("pgd_at" if v.method == "plain" else v.method)
    torch.manual_seed(0)
    model = build_model(
        v.arch, classes, width=v.width, input_size=v.input_size, **method.model_kwargs()
    )
    method.prepare_model(model)
    model.to(device).train()
    if v.channels_last and not precision.use_channels_last(model, device):
        return None  # declined on this device (robustft.precision.channels_last_supported)
    precision.maybe_compile(model, v.compiled)
    params = method.trainable_parameters(model)
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    scaler = precision.grad_scaler(v.precision, device)
    ctx = TrainContext(
        train_attack=PGDConfig(**AUTOLORA_PAPER.train_attack()),
        generator=rng.new_generator(1),
        batch_size=v.batch,
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(v.precision, device):
            if v.method == "plain":
                loss = F.cross_entropy(model(x), y)
            else:
                loss = method.batch_loss(model, x, y, ctx).loss
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(steps: dict[str, callable], device: torch.device, repeats: int, warmup: int):
    """Median wall and CPU seconds per step of every variant, interleaved."""
    for step in steps.values():
        for _ in range(warmup):  # cudnn.benchmark tuning, allocator, lazy init
            step()
    sync(device)
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            sync(device)
            wall[key].append(time.perf_counter() - w0)
            cpu[key].append(time.process_time() - c0)
    return (
        {k: statistics.median(v) for k, v in wall.items()},
        {k: statistics.median(v) for k, v in cpu.items()},
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", action="append", help="name[:data_px[:batch[:input_size[:width]]]]")
    ap.add_argument("--methods", default="vanilla_rft,twins,autolora,pgd_at")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--layouts", default="nchw,channels_last")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--out", default=None, help="write the planner's throughput table here")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also measure each method in fp32 NCHW under torch.compile (raise --warmup: "
        "compilation happens in the first steps, for the train- and eval-mode graphs)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision.configure_backends(device)
    methods = ["plain", *[m for m in args.methods.split(",") if m]]
    variants: list[Variant] = []
    for spec in args.arch or ["resnet_mini:32:64::16"]:
        arch, data_px, batch, input_size, width = parse_arch(spec)
        for method in methods:
            for prec in args.precisions.split(","):
                for layout in args.layouts.split(","):
                    variants.append(
                        Variant(
                            method,
                            prec,
                            layout == "channels_last",
                            arch,
                            data_px,
                            batch,
                            input_size,
                            width,
                        )
                    )
    if args.compile:
        variants += [
            Variant(**{**v.__dict__, "compiled": True})
            for v in variants
            if v.precision == "fp32" and not v.channels_last
        ]
    built = {v.label: build_step(v, device, args.classes) for v in variants}
    variants = [v for v in variants if built[v.label] is not None]
    steps = {v.label: built[v.label] for v in variants}
    wall, cpu = measure(steps, device, args.repeats, args.warmup)
    name = device_name(device)
    print(f"{name}; median of {args.repeats} interleaved steps; AutoLoRa PGD-10 training")
    header = f"{'variant':58s} {'passes':>6s} {'img/s':>9s} {'wall ms':>9s} {'cpu ms':>9s}"
    print(header + f" {'vs plain fp32':>14s} {'vs own fp32':>12s}")
    entries = []
    for v in variants:
        key = v.label
        ips = v.batch / wall[key]
        plain = Variant("plain", "fp32", False, *[getattr(v, f) for f in _SHAPE]).label
        own = Variant(v.method, "fp32", False, *[getattr(v, f) for f in _SHAPE]).label
        # step time in units of the plain fp32 step; and speed-up over the same method in fp32
        relative = wall[key] / wall[plain] if plain in wall else float("nan")
        speedup = wall[own] / wall[key] if own in wall else float("nan")
        print(
            f"{key:58s} {PASSES[v.method]:6d} {ips:9.1f} {wall[key] * 1e3:9.1f} "
            f"{cpu[key] * 1e3:9.1f} {relative:13.2f}× {speedup:11.2f}×"
        )
        # fp32 in NCHW (paper) and reduced precision with channels_last (paper_bf16) where the
        # device takes it, else NCHW (the CPU: see robustft.precision)
        wants_cl = v.precision != "fp32" and any(
            w.channels_last for w in variants if w.method == v.method and w.precision == v.precision
        )
        fidelity_setting = v.channels_last == wants_cl and not v.compiled
        if fidelity_setting:
            entries.append(
                {
                    "arch": v.arch,
                    "input_size": v.net_px,
                    "precision": v.precision,
                    "passes": PASSES[v.method],
                    "images_per_s": round(ips, 2),
                    "method": v.method,
                }
            )
    if args.out:
        table = {
            "source": f"measured by benchmarks/throughput.py on {name}, "
            f"{datetime.date.today().isoformat()}",
            "device": name,
            "entries": entries,
        }
        with open(args.out, "w", encoding="utf-8") as handle:
            yaml.safe_dump(table, handle, sort_keys=False, default_flow_style=None)
        print(f"wrote {args.out} ({len(entries)} entries)")


_SHAPE = ("arch", "data_px", "batch", "input_size", "width")


if __name__ == "__main__":
    main()
