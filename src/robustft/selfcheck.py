"""Self-check for a new machine: every registered method's training step and the evaluation
attacks on the target device, each compared with the same computation on the CPU.

Usage (the first thing to run on a new GPU node)::

    python -m robustft.selfcheck                 # --device auto: CUDA if torch sees one
    python -m robustft.selfcheck --device cuda   # exit code 2 if there is no CUDA device
    python -m robustft.selfcheck --methods clat,rift --skip-attacks

What runs, all on a seeded tiny model (``resnet_mini``, width 8, 10 classes, 16 px) and a seeded
synthetic batch, so the whole check takes seconds to a minute:

* **one training step of every method in** :data:`robustft.methods.METHODS`, driven as
  :class:`robustft.train.Trainer` drives it — ``prepare_model`` on the CPU, then the move to
  the device, SGD over ``trainable_parameters`` (rebuilt if ``start_epoch`` changed the set),
  ``start_epoch``, ``batch_loss`` (+ the gradient similarity of AutoLoRa Eq. 3/4 when the method
  returns its two objectives), backward, ``step``, ``end_epoch`` — with the ``TrainConfig``
  defaults (lr, momentum, weight decay, training PGD). The run generator is a CPU
  ``torch.Generator`` (:func:`robustft.rng.new_generator`), as in training: this check is what
  shows that the device path draws the same random starts as the CPU. Both runs start from the
  same initial weights (the CPU run's, loaded into the device model after ``prepare_model``)
  and the same generator seed.
* **PGD-10** (:func:`robustft.attacks.pgd_accuracy`, ε 8/255, step 2/255, random start) and
  **standard AutoAttack** (:func:`robustft.attacks.autoattack.run_autoattack`, the library's
  standard settings unchanged) on 8 points, labelled with the tiny model's own clean
  predictions so that every point is clean-correct and the attack has work to do.

* **the same step in bf16 autocast with channels_last** (the ``paper_bf16`` settings, what
  :mod:`robustft.precision` does in training) next to an fp32 step on the same device from the
  same weights: the loss within ``BF16_LOSS_RTOL`` (5e-2; bf16 keeps 8 significant bits).
  On the CPU channels_last is declined while oneDNN is enabled (see :mod:`robustft.precision`);
  the report says so. On by default on a GPU; ``--bf16 on|off`` forces it.

Pass criteria (``Tolerance``):

* target CPU (the check against itself): everything bit-identical (relative tolerance 0) —
  any difference means something is not seeded or not deterministic;
* target CUDA: loss and weights within a relative tolerance of 1e-3 and the robust counts
  equal or ±1 point. TF32 is switched off for the check (cuDNN enables it for convolutions by
  default; its 10-bit mantissa alone is ~1e-3 relative per operation), so what remains is
  fp32 summation order, amplified a little by PGD's sign steps flipping on near-zero gradient
  components. Timings are therefore fp32 timings.

What is compared, per method: the loss, the updated weights and buffers (max |Δ| between the
two runs divided by the largest change the CPU step made to any tensor, so the check sees the
gradient, not the size of the weights — a wrong gradient times lr 0.01 would hide inside a
weight-scale tolerance), the trainable set (names), integer buffers exactly, and the gradient
similarity when present. A step that changes no weight, a non-finite loss or weight, a tensor
that left the device, or an exception fails the method.

Limitations, by design of a check that must run in seconds on a CPU: a random tiny model is not
robust, so PGD and APGD-CE (AutoAttack's first stage) break all 8 points on both devices and
AutoAttack's later stages (APGD-T, FAB-T, Square) run only on points left robust, here none. A
single robust point costs ~80 s of CPU time in those stages (measured on a shared 2-core
machine), which is why the check does not train one. The PGD comparison therefore also checks
the mean adversarial cross-entropy (relative tolerance 1e-2 on CUDA), which a weaker or broken
attack on the device would change even when every point is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robustft import rng
from robustft.attacks import PGDConfig, eval_mode, pgd, pgd_accuracy
from robustft.methods import METHODS, Method, TrainContext, build_method
from robustft.threat_models import AUTOLORA_PAPER

__all__ = ["StepResult", "Tolerance", "check_attacks", "check_method", "main", "tolerance_for"]

SEED = 0
ARCH, WIDTH, CLASSES, RESOLUTION = "resnet_mini", 8, 10, 16
#: examples ``train_examples``/``measure_train_accuracy`` draw from; the step uses the first BATCH
POOL, BATCH = 16, 8
ATTACK_POINTS = 8
#: the evaluation PGD-10 of AutoLoRa (ε 8/255, step 2/255), with a random start so that the
#: generator path is exercised
EVAL_PGD = PGDConfig(**{**AUTOLORA_PAPER.eval_attack(), "random_start": True})
AA_EPS = AUTOLORA_PAPER.eps


@dataclass(frozen=True)
class Tolerance:
    """How far the target device may be from the CPU reference."""

    rtol: float  # loss, weights (relative to the step's update), grad similarity
    attack_rtol: float  # mean adversarial CE of PGD
    count: int  # robust points (PGD, AutoAttack)

    def describe(self) -> str:
        if self.rtol == 0 and self.count == 0:
            return "bit-identical (0) to a second CPU run"
        return (
            f"loss/weights rtol {self.rtol:g}, PGD adversarial loss rtol "
            f"{self.attack_rtol:g}, robust counts ±{self.count} point"
        )


def tolerance_for(device: torch.device) -> Tolerance:
    if device.type == "cpu":
        return Tolerance(rtol=0.0, attack_rtol=0.0, count=0)
    return Tolerance(rtol=1e-3, attack_rtol=1e-2, count=1)


# --------------------------------------------------------------------------------------------
# helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _fp32_only() -> Iterator[None]:
    """TF32 off (see the module docstring: it alone exceeds the tolerance); restored after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _relative(a: float, b: float) -> float:
    """|a − b| relative to the larger magnitude (0 when both are 0)."""
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale > 0 else 0.0


def synthetic_data(seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded pool of POOL random images in [0, 1] and labels, on the CPU."""
    gen = rng.new_generator(seed + 1)
    x = rng.uniform(torch.empty(POOL, 3, RESOLUTION, RESOLUTION), gen)
    y = rng.randint(0, CLASSES, (POOL,), gen)
    return x, y


def _build(method: Method, device: torch.device, seed: int) -> nn.Module:
    """The Trainer's order: seed, build on the CPU, ``prepare_model``, then move."""
    from robustft.models import build_model

    torch.manual_seed(seed)
    model = build_model(ARCH, CLASSES, width=WIDTH, **method.model_kwargs())
    method.prepare_model(model)
    return model.to(device)


def _warm_up(device: torch.device) -> None:
    """One forward/backward before anything is timed: on CUDA the first convolution creates the
    cuDNN handle and workspaces, which would otherwise be charged to the first method's step."""
    if device.type != "cuda":
        return
    from robustft.models import build_model

    model = build_model(ARCH, CLASSES, width=WIDTH).to(device)
    model(torch.zeros(2, 3, RESOLUTION, RESOLUTION, device=device)).sum().backward()
    _sync(device)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _context(
    model: nn.Module,
    pool: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    generator: torch.Generator,
):
    """A TrainContext whose train-set probes use the synthetic pool (autolora, clat, rift)."""
    from robustft.train import TrainConfig

    cfg = TrainConfig(run_name="selfcheck", method="", arch=ARCH, seed=SEED)
    x_pool, y_pool = pool[0].to(device), pool[1].to(device)

    def measure(forward: Callable[[torch.Tensor], torch.Tensor]) -> float:
        with torch.no_grad(), eval_mode(model):
            return float((forward(x_pool).argmax(1) == y_pool).float().mean())

    def examples(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = rng.randperm(len(y_pool), generator)[:n]
        return x_pool[index.to(device)], y_pool[index.to(device)]

    ctx = TrainContext(
        train_attack=PGDConfig(**cfg.train_attack),
        generator=generator,
        batch_size=BATCH,
        epoch=0,
        measure_train_accuracy=measure,
        train_examples=examples,
    )
    return ctx, cfg


# --------------------------------------------------------------------------------------------
# one training step


class StepFailure(RuntimeError):
    """The step itself went wrong (non-finite loss/weights, a tensor off the device)."""


@dataclass
class StepResult:
    loss: float
    state: dict[str, torch.Tensor]  # after the step, on the CPU
    init: dict[str, torch.Tensor]  # before start_epoch, on the CPU
    trainable: list[str]
    grad_sim: float | None
    start_seconds: float  # start_epoch (+ optimiser rebuild)
    step_seconds: float  # batch_loss + backward + optimiser step
    notes: list[str] = field(default_factory=list)


def run_step(
    name: str,
    device: torch.device,
    pool: tuple[torch.Tensor, torch.Tensor],
    *,
    seed: int = SEED,
    init: dict[str, torch.Tensor] | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> StepResult:
    """One epoch start and one training step of method ``name`` on ``device``.

    ``init``: initial weights to load after ``prepare_model`` (the CPU run's), so both runs
    start from identical weights even if ``prepare_model`` draws from the device's own RNG.
    """
    from robustft import precision as prec
    from robustft.train import cosine_of_gradients

    method = build_method(name)
    model = _build(method, device, seed)
    notes = []
    if channels_last and not prec.use_channels_last(model, device):
        notes.append("channels_last declined on this device (robustft.precision)")
    if init is not None:
        own = _cpu_state(model)
        if own.keys() != init.keys():
            raise StepFailure(
                f"state dict keys differ from the CPU run's: {sorted(own.keys() ^ init.keys())[:5]}"
            )
        gap = max(
            (
                float((own[k].double() - init[k].double()).abs().max())
                for k in own
                if own[k].is_floating_point() and own[k].numel()
            ),
            default=0.0,
        )
        if gap > 0:  # informational: the run's initial weights depend on the device
            notes.append(
                f"prepare_model initialised differently from the CPU (max |Δ| "
                f"{gap:.2g}); both runs use the CPU's weights"
            )
        model.load_state_dict(init)
    start_state = _cpu_state(model)
    generator = rng.new_generator(seed)
    ctx, cfg = _context(model, pool, device, generator)

    def optimiser(params):
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )

    params = method.trainable_parameters(model)
    opt = optimiser(params)
    _sync(device)
    started = time.perf_counter()
    method.start_epoch(model, ctx)
    new = method.trainable_parameters(model)
    if [id(p) for p in new] != [id(p) for p in params]:  # Trainer._refresh_optimizer
        params, opt = new, optimiser(new)
    _sync(device)
    start_seconds = time.perf_counter() - started

    x, y = pool[0][:BATCH].to(device), pool[1][:BATCH].to(device)
    model.train()
    started = time.perf_counter()
    with prec.autocast(precision, device):  # as the Trainer runs it
        out = method.batch_loss(model, x, y, ctx)
    _sync(device)
    loss_seconds = time.perf_counter() - started
    loss = float(out.loss.detach())
    if not math.isfinite(loss):
        raise StepFailure(f"loss is {loss}")
    grad_sim = None
    if out.objectives is not None:  # the Trainer's grad_sim (AutoLoRa Eq. 3/4); not timed
        fe = [p for p in model.feature_extractor_parameters() if p.requires_grad]
        grad_sim = float(cosine_of_gradients(out.objectives, fe))
    started = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    _sync(device)
    step_seconds = loss_seconds + time.perf_counter() - started
    method.end_epoch(model, ctx)

    names = {id(p): n for n, p in model.named_parameters()}
    off = [k for k, v in model.state_dict().items() if v.device.type != device.type]
    if off:
        raise StepFailure(f"tensor(s) not on {device} after the step: {off[:3]}")
    state = _cpu_state(model)
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise StepFailure(f"non-finite weights after the step: {bad[:3]}")
    return StepResult(
        loss=loss,
        state=state,
        init=start_state,
        trainable=[names.get(id(p), "?") for p in params],
        grad_sim=grad_sim,
        start_seconds=start_seconds,
        step_seconds=step_seconds,
        notes=notes,
    )


@dataclass
class Check:
    """One line of the report."""

    name: str
    passed: bool
    detail: str


def compare_steps(dev: StepResult, ref: StepResult, tol: Tolerance) -> tuple[list[str], str]:
    """(problems, measured differences) between the device run and the CPU reference."""
    problems = []
    if dev.trainable != ref.trainable:
        problems.append("trainable set differs from the CPU's")
    update = max(
        (
            float((ref.state[k].double() - ref.init[k].double()).abs().max())
            for k in ref.state
            if ref.state[k].is_floating_point() and ref.state[k].numel()
        ),
        default=0.0,
    )
    if update == 0:
        problems.append("the step changed no weight")
    diff = 0.0
    for k, v in ref.state.items():
        if v.is_floating_point():
            if v.numel():
                diff = max(diff, float((dev.state[k].double() - v.double()).abs().max()))
        elif not torch.equal(dev.state[k], v):
            problems.append(f"buffer {k} differs")
    d_weights = diff / update if update > 0 else diff
    d_loss = _relative(dev.loss, ref.loss)
    if d_loss > tol.rtol:
        problems.append(f"loss differs by {d_loss:.2g} (> {tol.rtol:g})")
    if d_weights > tol.rtol:
        problems.append(f"weights differ by {d_weights:.2g} of the update (> {tol.rtol:g})")
    measured = f"Δloss {d_loss:.1g}  Δweights {d_weights:.1g}"
    if ref.grad_sim is not None:
        d_sim = abs((dev.grad_sim or 0.0) - ref.grad_sim)
        measured += f"  Δgrad_sim {d_sim:.1g}"
        if dev.grad_sim is None or d_sim > tol.rtol:
            problems.append(f"gradient similarity differs by {d_sim:.2g}")
    return problems, measured


def check_method(
    name: str, device: torch.device, pool, tol: Tolerance, *, seed: int = SEED
) -> Check:
    """CPU reference step, then the same step on ``device``; never raises."""
    try:
        ref = run_step(name, torch.device("cpu"), pool, seed=seed)
    except Exception as e:  # noqa: BLE001 - every failure is reported, the check goes on
        return _crashed(name, "the CPU reference", e)
    try:
        dev = run_step(name, device, pool, seed=seed, init=ref.init)
    except Exception as e:  # noqa: BLE001
        return _crashed(name, str(device), e)
    problems, measured = compare_steps(dev, ref, tol)
    timing = f"step {dev.step_seconds * 1e3:7.1f} ms"
    if device.type != "cpu":
        timing += f" (cpu {ref.step_seconds * 1e3:.1f} ms)"
    timing += f"  start_epoch {dev.start_seconds * 1e3:7.1f} ms"
    detail = f"{timing}  loss {dev.loss:.5g}  {measured}"
    detail += "".join(f"  [{p}]" for p in problems + dev.notes)
    return Check(name, not problems, detail)


#: one step in bf16 autocast + channels_last against fp32 on the same device and weights:
#: bf16 keeps 8 significant bits, so one step's loss moves by ~1e-2 relative, not more
BF16_LOSS_RTOL = 5e-2


def check_reduced_precision(name: str, device: torch.device, pool, *, seed: int = SEED) -> Check:
    """The ``paper_bf16`` settings on ``device``: one bf16 + channels_last step of ``name``
    next to an fp32 step from the same weights; never raises."""
    label = f"{name} bf16"
    try:
        ref = run_step(name, device, pool, seed=seed)
        low = run_step(
            name, device, pool, seed=seed, init=ref.init, precision="bf16", channels_last=True
        )
    except Exception as e:  # noqa: BLE001 - every failure is reported, the check goes on
        return _crashed(label, str(device), e)
    d_loss = _relative(low.loss, ref.loss)
    problems = [f"loss differs by {d_loss:.2g} (> {BF16_LOSS_RTOL:g})"] * (d_loss > BF16_LOSS_RTOL)
    detail = (
        f"step {low.step_seconds * 1e3:7.1f} ms (fp32 {ref.step_seconds * 1e3:.1f} ms)  "
        f"loss {low.loss:.5g}  Δloss vs fp32 {d_loss:.1g}"
    )
    detail += "".join(f"  [{p}]" for p in problems + low.notes)
    return Check(label, not problems, detail)


def _crashed(name: str, where: str, error: Exception) -> Check:
    print(f"--- {name} on {where}:", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return Check(name, False, f"[error on {where}: {type(error).__name__}: {first}]")


# --------------------------------------------------------------------------------------------
# attacks


def attack_model(seed: int = SEED) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The tiny model in eval mode and ATTACK_POINTS points labelled with its predictions."""
    from robustft.models import build_model

    torch.manual_seed(seed)
    model = build_model(ARCH, CLASSES, width=WIDTH).eval()
    x = synthetic_data(seed + 7)[0][:ATTACK_POINTS]
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _pgd_run(model, x, y, device, seed):
    model, x, y = copy.deepcopy(model).to(device), x.to(device), y.to(device)
    _sync(device)
    started = time.perf_counter()
    robust = pgd_accuracy(model, x, y, EVAL_PGD, generator=rng.new_generator(seed))
    _sync(device)
    seconds = time.perf_counter() - started
    # The same attack again (same generator seed) for the mean adversarial cross-entropy.
    x_adv = pgd(
        model,
        x,
        y,
        eps=EVAL_PGD.eps,
        step=EVAL_PGD.step,
        steps=EVAL_PGD.steps,
        random_start=EVAL_PGD.random_start,
        generator=rng.new_generator(seed),
    )
    with torch.no_grad():
        loss = float(F.cross_entropy(model(x_adv), y))
    return int(robust.sum()), loss, seconds


def _aa_run(model, x, y, device, seed):
    from robustft.attacks.autoattack import run_autoattack

    model = copy.deepcopy(model).to(device)
    _sync(device)
    started = time.perf_counter()
    result = run_autoattack(model, x.to(device), y.to(device), eps=AA_EPS, seed=seed, device=device)
    _sync(device)
    return result, time.perf_counter() - started


def check_attacks(device: torch.device, tol: Tolerance, *, seed: int = SEED) -> list[Check]:
    model, x, y = attack_model(seed)
    n = len(y)
    checks = []
    try:
        ref = _pgd_run(model, x, y, torch.device("cpu"), seed)
        dev = _pgd_run(model, x, y, device, seed)
        problems = []
        if abs(dev[0] - ref[0]) > tol.count:
            problems.append(f"robust counts differ by more than {tol.count}")
        d_loss = _relative(dev[1], ref[1])
        if d_loss > tol.attack_rtol:
            problems.append(f"adversarial loss differs by {d_loss:.2g} (> {tol.attack_rtol:g})")
        detail = (
            f"{dev[2]:6.2f} s  robust {dev[0]}/{n} (cpu {ref[0]}/{n})  adversarial CE "
            f"{dev[1]:.5g} (Δ {d_loss:.1g})" + "".join(f"  [{p}]" for p in problems)
        )
        checks.append(Check("pgd10", not problems, detail))
    except Exception as e:  # noqa: BLE001
        checks.append(_crashed("pgd10", str(device), e))
    try:
        ref_aa, _ = _aa_run(model, x, y, torch.device("cpu"), seed)
        dev_aa, seconds = _aa_run(model, x, y, device, seed)
        ref_n, dev_n = sum(ref_aa.per_example), sum(dev_aa.per_example)
        problems = []
        if abs(dev_n - ref_n) > tol.count:
            problems.append(f"robust counts differ by more than {tol.count}")
        if dev_aa.flagged and not ref_aa.flagged:
            problems.append("flagged on the device only: " + "; ".join(dev_aa.warnings)[:300])
        stages = " ".join(f"{k} {v:.2f}" for k, v in dev_aa.stage_accuracy.items())
        detail = (
            f"{seconds:6.2f} s  robust {dev_n}/{n} (cpu {ref_n}/{n})  stages: {stages}"
            + "".join(f"  [{p}]" for p in problems)
        )
        checks.append(Check("autoattack", not problems, detail))
    except Exception as e:  # noqa: BLE001
        checks.append(_crashed("autoattack", str(device), e))
    return checks


# --------------------------------------------------------------------------------------------
# command line


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> list[str]:
    lines = [
        (
            f"torch {torch.__version__}, threads {torch.get_num_threads()} "
            f"(interop {torch.get_num_interop_threads()}), python {platform.python_version()}"
        ),
        f"cpu: {_cpu_name()} ({os.cpu_count()} logical cores)",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.insert(
            0,
            f"device: {device} = {props.name}, {props.total_memory / 2**30:.1f} GiB, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
        )
    else:
        lines.insert(0, "device: cpu")
    return lines


def resolve(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda[:i]``; SystemExit(2) with a message if CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        _exit2(f"--device must be auto, cpu or cuda[:index], got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            _exit2(
                f"--device {name}: torch {torch.__version__} sees no CUDA device "
                f"(built for CUDA {torch.version.cuda}; CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}). Check the driver "
                "(nvidia-smi) and CUDA_VISIBLE_DEVICES, or run with --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            _exit2(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def _exit2(message: str) -> None:
    print(f"robustft.selfcheck: {message}", file=sys.stderr)
    raise SystemExit(2)


def _report(check: Check) -> None:
    print(f"[{'PASS' if check.passed else 'FAIL'}] {check.name:<12} {check.detail}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m robustft.selfcheck",
        description="One training step of every registered method, PGD-10 and AutoAttack on a "
        "tiny model, on the target device and compared with the CPU.",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if available), cpu, or cuda[:index] (default: auto)",
    )
    parser.add_argument(
        "--methods",
        default="",
        help="comma-separated method names (default: every registered method)",
    )
    parser.add_argument(
        "--skip-attacks", action="store_true", help="skip the PGD-10 and AutoAttack checks"
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="also a bf16 + channels_last step of every method (the paper_bf16 settings); "
        "auto: on a GPU (on the CPU, tests/test_precision.py covers it)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.methods.split(",") if n.strip()] or list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        _exit2(f"--methods: unknown method(s) {unknown}; registered: {sorted(METHODS)}")
    device = resolve(args.device)
    tol = tolerance_for(device)
    print("robustft self-check", flush=True)
    for line in describe_machine(device):
        print(line)
    print(
        f"reference: cpu; tolerance: {tol.describe()}"
        + ("; TF32 off during the check" if device.type == "cuda" else ""),
        flush=True,
    )

    started = time.perf_counter()
    checks: list[Check] = []
    pool = synthetic_data(args.seed)
    with _fp32_only():
        _warm_up(device)
        for name in names:
            checks.append(check_method(name, device, pool, tol, seed=args.seed))
            _report(checks[-1])
            if args.bf16 == "on" or (args.bf16 == "auto" and device.type != "cpu"):
                checks.append(check_reduced_precision(name, device, pool, seed=args.seed))
                _report(checks[-1])
        if not args.skip_attacks:
            for check in check_attacks(device, tol, seed=args.seed):
                checks.append(check)
                _report(check)
    failed = [c.name for c in checks if not c.passed]
    seconds = time.perf_counter() - started
    if failed:
        print(
            f"selfcheck FAILED on {device}: {len(failed)} of {len(checks)} checks failed "
            f"({', '.join(failed)}) in {seconds:.1f} s"
        )
        return 1
    print(
        f"selfcheck passed on {device}: all {len(checks)} checks ({len(names)} methods"
        f"{'' if args.skip_attacks else ', PGD-10, AutoAttack'}) in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
