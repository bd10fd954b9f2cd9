"""The cost of a reproduction before it runs: GPU-seconds per job from a throughput table.

Owns the throughput table (:class:`ThroughputTable`, YAML: ``source``, ``device``, ``entries``
of ``{arch, input_size, precision, passes, images_per_s[, method, source]}``), the work of each
job in *image passes* (one forward+backward of one image) and the wall time of a set of jobs on
N GPUs. Torch-free like the rest of :mod:`robustft.plan`.

Work model (the pass counts follow each method module's docstring; a forward-only pass counts
``FORWARD`` = 1/3 of a pass, since a backward costs about two forwards):

* a training step costs :func:`step_passes` per image: every attack iteration is one pass
  (as ``benchmarks/throughput.py`` counts them), plus the update's forward+backward passes;
* an epoch adds the per-epoch evaluation (clean forward + PGD-k + adversarial forward on the
  validation and test subsets), AutoLoRa's λ probe and the gradient-similarity batches;
* an evaluation job: PGD (or the CLAT protocol's restarts, APGD-CE and ε sweep) on the test
  set, plus AutoAttack where the study asks for it (:data:`AUTOATTACK_PASSES`).

Throughput lookup (:meth:`ThroughputTable.lookup`): entries of the same architecture and
precision; among them the same ``method`` if any entry names it, then the nearest input size,
then the nearest pass count. The entry's images/s is scaled to the job by pixels and passes:
``passes/s = images_per_s · passes · (entry_size / size)²``. Known errors of that rule, both
to be removed by measuring entries at the job's own size and method:

* pixel scaling is exact for convolution FLOPs, but GPUs run small images less efficiently, so
  scaling *down* in size over-states throughput (too few GPU-hours);
* an attack iteration computes only the input gradient: 0.70-0.84 of a pass measured on CPU
  (shared specs, gpu_performance.md §1), so counting it as a full pass over-states the work of
  PGD-10 training by up to ~25 % (too many GPU-hours).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from robustft.plan.errors import ConfigError

__all__ = [
    "DEFAULT_TABLE",
    "Entry",
    "JobCost",
    "ThroughputTable",
    "eval_passes",
    "load_table",
    "runtime_minutes",
    "step_passes",
    "train_passes",
    "wall_seconds",
]

DEFAULT_TABLE = "throughput_default.yaml"
#: a forward pass without backward, in passes (backward ≈ 2 forwards)
FORWARD = 1 / 3
#: robust fraction assumed after AutoAttack's first stage: APGD-T, FAB-T and Square only attack
#: the points APGD-CE did not break (AutoLoRa/CLAT models keep ~30-55 % under attack)
AA_ROBUST_FRACTION = 0.5
#: AutoAttack ``standard`` (attacks/autoattack.py): APGD-CE 100 iterations on every point, then
#: on the robust fraction APGD-T 9 targets x 100, FAB-T 9 x 100 and Square 5,000 forward queries
AUTOATTACK_PASSES = 100 + AA_ROBUST_FRACTION * (9 * 100 + 9 * 100 + 5000 * FORWARD)
#: modules RiFT's MRC scan perturbs one at a time (conv + linear layers of the architecture);
#: other architectures use the ResNet-18 count
RIFT_MODULES = {"cifar_resnet18": 21, "cifar_wrn34_10": 37}

#: (train, val, test) images per dataset kind and preset (robustft.data.registry's table;
#: ``None``: the same for both presets). Generated textures are computed from their options.
SPLIT_SIZES: dict[str, dict[str | None, tuple[int, int, int]]] = {
    "cifar10": {None: (47_500, 2_500, 10_000)},
    "cifar100": {None: (47_500, 2_500, 10_000)},
    "dtd": {"official": (3_760, 1_880, 1_880), "paper": (3_572, 188, 1_880)},
    "dog120": {None: (11_400, 600, 8_580)},
    "cub200": {None: (5_694, 300, 5_794)},
    "caltech256": {"official": (38_550, 3_549, 3_549), "paper": (25_705, 1_353, 3_549)},
}


# --- the throughput table ---------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    arch: str
    input_size: int
    precision: str
    passes: float
    images_per_s: float
    method: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Throughput:
    """What a lookup found: image passes per second at the asked size, and from which entry."""

    passes_per_s: float
    entry: Entry
    table: ThroughputTable


@dataclass(frozen=True)
class ThroughputTable:
    source: str
    device: str
    entries: tuple[Entry, ...]
    path: str = ""
    #: consulted for an (arch, precision) this table lacks (the user's table over the default)
    fallback: ThroughputTable | None = field(default=None, repr=False)

    def lookup(
        self,
        arch: str,
        input_size: int,
        precision: str,
        method: str | None = None,
        passes: float = 1.0,
    ) -> Throughput:
        """Image passes per second of ``arch`` at ``input_size`` px for a step of ``passes``
        passes of ``method`` (the rule: module docstring)."""
        same = [e for e in self.entries if e.arch == arch and e.precision == precision]
        if not same:
            if self.fallback is not None:
                return self.fallback.lookup(arch, input_size, precision, method, passes)
            have = ", ".join(sorted({e.arch for e in self.entries if e.precision == precision}))
            raise ConfigError(
                f"throughput table {self.path or '(given)'} has no entry for arch {arch!r} at "
                f"precision {precision!r} (it has: {have or 'none'}). Measure it with "
                "benchmarks/throughput.py and add the entry."
            )
        named = [e for e in same if e.method == method] if method else []
        pool = named or [e for e in same if e.method is None] or same
        best = min(
            pool,
            key=lambda e: (abs(math.log(e.input_size / input_size)), abs(e.passes - passes)),
        )
        rate = best.images_per_s * best.passes * (best.input_size / input_size) ** 2
        return Throughput(rate, best, self)


def _entry(raw: Any, where: str) -> Entry:
    required = ("arch", "input_size", "precision", "passes", "images_per_s")
    if not isinstance(raw, dict) or any(k not in raw for k in required):
        raise ConfigError(f"{where}: an entry needs the keys {', '.join(required)}; got {raw!r}")
    unknown = set(raw) - {*required, "method", "source"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} in entry {raw!r}")
    entry = Entry(**raw)
    if entry.images_per_s <= 0 or entry.passes <= 0 or entry.input_size <= 0:
        raise ConfigError(f"{where}: images_per_s, passes and input_size must be > 0: {raw!r}")
    return entry


def parse_table(data: Any, path: str = "") -> ThroughputTable:
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ConfigError(f"throughput table {path}: expected a mapping with a list `entries`")
    entries = tuple(_entry(e, f"throughput table {path}") for e in data["entries"])
    return ThroughputTable(str(data.get("source", "")), str(data.get("device", "")), entries, path)


def load_table(path: str | Path | None = None) -> ThroughputTable:
    """The table at ``path`` (the shipped default behind it), or the default table alone."""
    default_text = resources.files("robustft.plan").joinpath(DEFAULT_TABLE).read_text()
    default = parse_table(yaml.safe_load(default_text), f"(default) {DEFAULT_TABLE}")
    if path is None:
        return default
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        raise ConfigError(f"cannot read throughput table {path}: {err}") from err
    table = parse_table(data, str(path))
    return ThroughputTable(table.source, table.device, table.entries, table.path, default)


# --- work of a job, in image passes ------------------------------------------------------------
def step_passes(method: str, steps: int, params: dict[str, Any] | None = None) -> float:
    """Passes per training image of one step: attack iterations + the update's passes."""
    params = params or {}
    k = steps
    if method in ("pgd_at", "lora_ft"):  # CE on x̃ only (pgd_at.py, lora_ft.py)
        return k + 1
    if method == "fast_at":  # one FGSM step + the update (fast_at.py), whatever `steps` says
        return 1 + 1
    if method in ("vanilla_rft", "mart", "autolora"):  # clean + adversarial update passes
        return k + 2  # (autolora: LoRA-branch natural pass + FE adversarial pass, Eq. 5)
    if method in ("trades", "score"):  # + the clean forward the attack aims from (trades.py,
        return k + 2 + FORWARD  # score.py: TRADES with squared errors)
    if method == "awp":  # + the weight-space ascent pass (awp.py step 1)
        return k + 2
    if method == "trades_awp":
        return k + 3 + FORWARD
    if method == "twins":  # paper: every sample through both BN branches (twins.py)
        return k + (4 if params.get("loss", "official") == "paper" else 2)
    if method in ("clat", "clat_nd", "clat_random"):  # Eq. 8 PGD + Eq. 9's two branches
        return k + 2 + FORWARD
    if method == "clat_fast":  # one FGSM step instead of PGD
        return 1 + 2 + FORWARD
    if method == "standard":  # clean CE, no attack (standard.py)
        return 1
    if method == "rift":  # clean fine-tuning of one module; the MRC scan is in train_passes
        return 1
    raise ConfigError(f"cost planner: no pass count for method {method!r}")


def split_sizes(dataset: dict[str, Any], preset: str) -> tuple[int, int, int]:
    """(train, val, test) images of a config ``datasets`` entry."""
    kind = dataset["kind"]
    if kind in SPLIT_SIZES:
        sizes = SPLIT_SIZES[kind]
        return sizes.get(preset, sizes.get(None)) or next(iter(sizes.values()))
    # generated textures (data/registry.py): a per-class train pool, val held out of it
    opts = dataset.get("options", {})
    classes, per_class = opts.get("num_classes", 10), opts.get("per_class", 100)
    pool = classes * per_class
    val = round(pool * opts.get("val_fraction", 0.05))
    test = classes * (opts.get("test_per_class") or per_class // 2)
    return pool - val, val, test


def _eval_epoch_passes(n: int, steps: int) -> float:
    """Clean forward + PGD-k + adversarial forward on n images (the per-epoch curves)."""
    return n * (steps + 2 * FORWARD)


def train_passes(train: Any, sizes: tuple[int, int, int]) -> float:
    """Image passes of one training job (``train``: its TrainConfig)."""
    n_train, n_val, n_test = sizes
    steps = train.train_attack.get("steps", 10)
    per_epoch = n_train * step_passes(train.method, steps, train.method_params)
    n_eval = (train.val_examples or n_val) + (train.test_examples or n_test)
    per_epoch += _eval_epoch_passes(n_eval, train.eval_attack.get("steps", 10))
    per_epoch += train.grad_sim_batches * train.batch_size * 2  # two objectives' gradients
    if train.method == "autolora" and train.method_params.get("lambda_source") != "running":
        per_epoch += n_train * FORWARD  # λ's SA measured on the training set (Eq. 6/7)
    once = 0.0
    if train.method == "rift":  # adversarial set, MRC ascent per module, α grid (rift.py)
        p = train.method_params
        n_adv, epochs = p.get("mrc_examples", 10_000), p.get("mrc_epochs", 10)
        modules = RIFT_MODULES.get(train.arch, RIFT_MODULES["cifar_resnet18"])
        once = n_adv * steps + modules * epochs * n_adv * (1 + FORWARD)
        once += p.get("alphas", 11) * _eval_epoch_passes(n_val, steps)
    return train.epochs * per_epoch + once


def eval_passes(evaluation: Any, n_test: int) -> float:
    """Image passes of one evaluation job (``evaluation``: its EvaluateSettings)."""
    protocol = evaluation.protocol
    if protocol is None:  # SA + PGD-k once (AutoLoRa)
        n = n_test
        work = n * (evaluation.eval_attack.get("steps", 10) + 2 * FORWARD)
    else:  # CLAT Sec. 4.1: restarts, APGD-CE, ε sweep
        n = protocol.examples or n_test
        k = protocol.attack.get("steps", 10)
        work = n * (FORWARD + protocol.restarts * (k + FORWARD))
        work += n * protocol.apgd_ce_iterations if protocol.apgd_ce else 0
        work += n * len(protocol.epsilons) * protocol.sweep_restarts * (k + FORWARD)
    if evaluation.autoattack:
        work += (evaluation.autoattack_examples or n_test) * AUTOATTACK_PASSES
    return work


def transfer_passes(n: int, steps: int) -> float:
    """CLAT Table 2, one pair: PGD crafted on each model, tested on the other (both ways)."""
    return 2 * n * (steps + 2 * FORWARD)


def criticality_passes(batch_sizes: Sequence[int], repeats: int, steps: int) -> float:
    """CLAT Table 7: criticality of every layer from one batch per size (rough: ~120 layers,
    DenseNet-121's count, each with a PGD-k on its features)."""
    return sum(batch_sizes) * repeats * 120 * (steps + 1)


# --- jobs, wall time, runtime requests ---------------------------------------------------------
@dataclass(frozen=True)
class JobCost:
    kind: str  # train | evaluate | transfer | criticality
    name: str
    passes: float
    seconds: float  # on one GPU
    level: int  # position in the DAG: a job starts after every job of a lower level it needs
    source: str  # the throughput entry's source


def wall_seconds(jobs: Iterable[JobCost], gpus: int) -> float:
    """Wall time of ``jobs`` on ``gpus`` GPUs, one job per GPU at a time.

    Level by level (training before its evaluation, an upstream run before the chained one),
    each level packed longest-job-first onto the least-loaded GPU (LPT list scheduling). The
    barrier between levels makes this an upper bound on a scheduler that starts a job as soon
    as its own inputs exist, and LPT is within 4/3 of the best packing of one level.
    """
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    levels: dict[int, list[float]] = {}
    for job in jobs:
        levels.setdefault(job.level, []).append(job.seconds)
    total = 0.0
    for level in sorted(levels):
        loads = [0.0] * gpus
        for seconds in sorted(levels[level], reverse=True):
            loads[loads.index(min(loads))] += seconds
        total += max(loads)
    return total


def runtime_minutes(seconds: float, margin: float, floor: int, jobs_per_gpu: int = 1) -> int:
    """The ``runtime`` request of a job estimated at ``seconds`` alone on a GPU: × ``margin``,
    + ``floor`` minutes (start-up, data loading, checkpoints); × ``jobs_per_gpu`` when jobs
    share a GPU (the worst case: the GPU was already busy with one)."""
    return math.ceil(seconds * jobs_per_gpu * margin / 60) + floor
