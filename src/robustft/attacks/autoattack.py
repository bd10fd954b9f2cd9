"""Standard L∞ AutoAttack (Croce & Hein, 2020) through the pinned reference package.

Spec: ``shared/specs/autoattack.md`` §1 (what the reference runs) and §5 (pipeline rules).
The attack code is ``pyautoattack==0.2.0`` (fra31/auto-attack HEAD a392200 repackaged); this
module only wraps it:

* builds ``AutoAttack(norm='Linf', version='standard', seed=0, device=...)`` and checks that the
  settings read back from the attack objects are the published ones (§1 table), so a silent
  change of defaults fails loudly instead of producing a weaker number;
* runs it with the model in eval mode (the library never calls ``model.eval()``) and restores
  every module's training flag, the parameters' ``requires_grad`` (FAB calls ``backward()``,
  which would otherwise write ``.grad`` into the caller's parameters), the global torch RNG
  (the library reseeds it on every ``perturb``) and any ``sys.settrace`` tracer (its
  dynamic-defence check resets it);
* records the ``auto-attack`` logger (all levels; WARNING and above are the library's checks)
  and Python warnings raised during the run; any of them marks the result as ``flagged``;
* recomputes clean and robust correctness from the returned ``x_adv`` (robust = clean-correct
  and still correct on ``x_adv``, as RobustBench does), checks the ε-ball and [0, 1], and
  cross-checks the per-example flags the library keeps in its state file and the robust
  accuracy it logs against ours (a mismatch is a flag too).

Numbers produced here are the ones reported as "AA"; ``torchattacks_check`` is a cross-check only.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustft.threat_models import AUTOLORA_PAPER

LIBRARY = "pyautoattack"
PINNED_VERSION = "0.2.0"
#: The upstream commit whose attack code pyautoattack 0.2.0 carries (spec §3).
REFERENCE = "fra31/auto-attack@a39220048b3c9f2cca9a4d3a54604793c68eca7e"
LOGGER_NAME = "auto-attack"
#: float32 rounding lets x + eps overshoot eps by ~3e-8 (spec §2); anything above this is a bug.
EPS_TOLERANCE = 1e-6

#: Settings of the reference ``version='standard'``, ``norm='Linf'`` (spec §1 and §5 "Tests 1").
STANDARD_LINF: dict[str, Any] = {
    "attacks_to_run": ["apgd-ce", "apgd-t", "fab-t", "square"],
    "norm": "Linf",
    "version": "standard",
    "apgd": {"n_iter": 100, "n_restarts": 1, "eot_iter": 1, "rho": 0.75},
    "apgd_targeted": {
        "n_iter": 100,
        "n_restarts": 1,
        "n_target_classes": 9,
        "eot_iter": 1,
        "rho": 0.75,
        "loss": "dlr-targeted",
    },
    "fab": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "square": {
        "n_queries": 5000,
        "p_init": 0.8,
        "n_restarts": 1,
        "rescale_schedule": False,
        "loss": "margin",
    },
}

_FINAL_ACC = re.compile(r"^robust accuracy: ([0-9.]+)%$")
_STAGE_ACC = re.compile(r"^robust accuracy after ([A-Z-]+): ([0-9.]+)%")
_CLEAN_ACC = re.compile(r"^initial accuracy: ([0-9.]+)%$")


class AutoAttackError(RuntimeError):
    """The attack produced something impossible (outside the ε-ball or [0, 1], NaN)."""


@dataclass
class AutoAttackResult:
    """Outcome of one standard AutoAttack evaluation.

    ``per_example[i]`` is 1 iff input i is clean-correct and still correct on its adversarial
    example. ``warnings`` holds every library check ("auto-attack" logger, WARNING and above),
    every Python warning raised during the run and any disagreement between our recount and
    the library's; ``flagged`` is ``bool(warnings)``.
    """

    accuracy: float
    n: int
    per_example: list[int]
    clean_accuracy: float
    clean_per_example: list[int]
    warnings: list[str]
    flagged: bool
    config: dict[str, Any]
    library: dict[str, str]
    seconds: float
    #: Cumulative robust accuracy after each stage as the library logged it (2-decimal %).
    stage_accuracy: dict[str, float] = field(default_factory=dict)
    #: The library's own final robust accuracy (from its log), ``None`` if it logged none.
    library_accuracy: float | None = None
    #: Every record of the "auto-attack" logger, as "LEVEL: message".
    log: list[str] = field(default_factory=list)
    #: Adversarial inputs (on the device of ``x``) if ``return_adv=True``; not serialised.
    x_adv: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable view (everything but ``x_adv``)."""
        d = asdict(replace(self, x_adv=None))
        del d["x_adv"]
        return d


# --------------------------------------------------------------------------------------------
# construction and configuration


def _library():
    import pyautoattack  # deferred: importing the package costs ~1 s and is not always needed

    return pyautoattack


def library_info() -> dict[str, str]:
    """Name and version of the AutoAttack implementation actually imported."""
    lib = _library()
    try:
        dist_version = metadata.version(LIBRARY)
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored copy
        dist_version = "unknown"
    return {
        "name": LIBRARY,
        "version": lib.__version__,
        "distribution_version": dist_version,
        "reference": REFERENCE,
    }


def read_config(adversary: Any) -> dict[str, Any]:
    """The settings the attack objects actually hold (not what we asked for)."""
    apgd, apgd_t, fab, square = (
        adversary.apgd,
        adversary.apgd_targeted,
        adversary.fab,
        adversary.square,
    )
    return {
        "attacks_to_run": list(adversary.attacks_to_run),
        "norm": adversary.norm,
        "version": adversary.version,
        "eps": float(adversary.epsilon),
        "seed": adversary.seed,
        "apgd": {
            "n_iter": apgd.n_iter,
            "n_restarts": apgd.n_restarts,
            "eot_iter": apgd.eot_iter,
            "rho": apgd.thr_decr,
            "eps": float(apgd.eps),
            "norm": apgd.norm,
            "seed": apgd.seed,
        },
        "apgd_targeted": {
            "n_iter": apgd_t.n_iter,
            "n_restarts": apgd_t.n_restarts,
            "n_target_classes": apgd_t.n_target_classes,
            "eot_iter": apgd_t.eot_iter,
            "rho": apgd_t.thr_decr,
            "loss": apgd_t.loss,
            "eps": float(apgd_t.eps),
            "norm": apgd_t.norm,
            "seed": apgd_t.seed,
        },
        "fab": {
            "n_iter": fab.n_iter,
            "n_restarts": fab.n_restarts,
            "n_target_classes": fab.n_target_classes,
            "eps": float(fab.eps),
            "norm": fab.norm,
            "seed": fab.seed,
        },
        "square": {
            "n_queries": square.n_queries,
            "p_init": square.p_init,
            "n_restarts": square.n_restarts,
            "rescale_schedule": square.rescale_schedule,
            "loss": square.loss,
            "eps": float(square.eps),
            "norm": square.norm,
            "seed": square.seed,
        },
    }


def config_mismatches(config: dict[str, Any]) -> list[str]:
    """Differences between ``config`` (from :func:`read_config`) and the standard L∞ settings."""
    problems = []
    for key, want in STANDARD_LINF.items():
        if isinstance(want, dict):
            for sub, value in want.items():
                got = config[key][sub]
                if got != value or type(got) is not type(value):
                    problems.append(f"{key}.{sub} = {got!r}, standard is {value!r}")
        elif config[key] != want:
            problems.append(f"{key} = {config[key]!r}, standard is {want!r}")
    for key in ("apgd", "apgd_targeted", "fab", "square"):
        if config[key]["eps"] != config["eps"] or config[key]["norm"] != config["norm"]:
            problems.append(
                f"{key} attacks eps={config[key]['eps']} {config[key]['norm']}, "
                f"not eps={config['eps']} {config['norm']}"
            )
        if config[key]["seed"] != config["seed"]:
            problems.append(f"{key}.seed = {config[key]['seed']!r}, not {config['seed']!r}")
    return problems


def build_standard_autoattack(
    model: nn.Module, *, eps: float, seed: int = 0, device: torch.device | str
):
    """``pyautoattack.AutoAttack`` with ``norm='Linf'``, ``version='standard'`` and a fixed seed.

    Raises ``ValueError`` if the constructed object does not hold the standard settings
    (e.g. another pyautoattack version changed a default).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        # seed=None makes the library reseed from time.time() before every attack (spec §1).
        raise TypeError(f"seed must be an int (None is not reproducible), got {seed!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    lib = _library()
    adversary = lib.AutoAttack(
        model, norm="Linf", eps=float(eps), version="standard", seed=seed, device=device
    )
    problems = config_mismatches(read_config(adversary))
    if problems:
        raise ValueError(
            f"{LIBRARY} {lib.__version__} does not build the standard AutoAttack: "
            + "; ".join(problems)
        )
    return adversary


# --------------------------------------------------------------------------------------------
# side-effect guards


@contextmanager
def _eval_mode_frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the run; every flag restored afterwards."""
    training = [(m, m.training) for m in model.modules()]
    requires = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in requires:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in requires:
            p.requires_grad_(flag)
        for m, flag in training:
            m.training = flag


@contextmanager
def _preserve_rng() -> Iterator[None]:
    """Restore the global torch RNG (CPU and, if present, CUDA) that the library reseeds."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class _Recorder(logging.Handler):
    """Stores every record; passes on those the logger's own configuration would have emitted."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(level=logging.NOTSET)
        self.records: list[logging.LogRecord] = []
        self._logger = logger
        self._threshold = logger.getEffectiveLevel() if not logger.disabled else math.inf
        self._handlers = list(logger.handlers)
        self._propagate = logger.propagate

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.levelno < self._threshold:
            return
        # the same walk as Logger.callHandlers, for the configuration before we took over
        found = 0
        for h in self._handlers:
            found += 1
            if record.levelno >= h.level:
                h.handle(record)
        node = self._logger.parent if self._propagate else None
        while node is not None:
            for h in node.handlers:
                found += 1
                if record.levelno >= h.level:
                    h.handle(record)
            node = node.parent if node.propagate else None
        if (
            found == 0
            and logging.lastResort is not None
            and record.levelno >= logging.lastResort.level
        ):
            logging.lastResort.handle(record)


@contextmanager
def _record_library_log() -> Iterator[_Recorder]:
    """Capture the "auto-attack" logger at every level, without changing what the caller's
    logging setup shows (DEBUG progress lines stay hidden unless the caller enabled them)."""
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.level, logger.propagate, list(logger.handlers), logger.disabled)
    recorder = _Recorder(logger)
    for h in saved[2]:
        logger.removeHandler(h)
    logger.addHandler(recorder)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.disabled = False
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        for h in saved[2]:
            logger.addHandler(h)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.disabled = saved[3]


@contextmanager
def _keep_tracer() -> Iterator[None]:
    """The library's dynamic-defence check ends with ``sys.settrace(None)``; put back a
    debugger's or coverage tool's tracer afterwards. Also zero its module-level call counters,
    which it never resets (one dynamic model would otherwise flag every later run)."""
    checks = sys.modules.get(f"{LIBRARY}.checks")
    if checks is not None and isinstance(getattr(checks, "funcs", None), dict):
        for k in checks.funcs:
            checks.funcs[k] = 0
    tracer = sys.gettrace()
    try:
        yield
    finally:
        if sys.gettrace() is not tracer:
            sys.settrace(tracer)


# --------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def _correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str
) -> torch.Tensor:
    out = []
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i : i + batch_size].to(device))
        out.append((logits.argmax(1) == y[i : i + batch_size].to(device)).cpu())
    return torch.cat(out)


def _check_inputs(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float N×C×H×W tensor, got {tuple(x.shape)} {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype != torch.long:
        raise ValueError(
            f"y must be an int64 vector of length {x.shape[0]}, got {tuple(y.shape)} {y.dtype}"
        )
    if x.shape[0] == 0:
        raise ValueError("no inputs")
    if not (x.min() >= 0 and x.max() <= 1):  # also catches NaN
        raise ValueError("inputs must lie in [0, 1] (normalisation belongs inside the model)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def run_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = AUTOLORA_PAPER.eps,
    seed: int = 0,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
    return_adv: bool = False,
) -> AutoAttackResult:
    """Standard L∞ AutoAttack on ``(x, y)``; see the module docstring for what is guaranteed.

    ``x``: N×C×H×W in [0, 1] (any device; ``x_adv`` comes back on it), ``y``: int64 labels,
    ``model`` on ``device`` and returning logits. ``batch_size`` is the library's chunk size;
    it is part of the configuration because the library reseeds per chunk.
    """
    _check_inputs(x, y, batch_size)
    x = x.detach()
    y = y.detach()
    start = time.perf_counter()
    lib = library_info()
    notes: list[str] = []
    if lib["version"] != PINNED_VERSION:
        notes.append(f"robustft: {LIBRARY} {lib['version']} imported, {PINNED_VERSION} pinned")

    with (
        _eval_mode_frozen(model),
        _preserve_rng(),
        _keep_tracer(),
        _record_library_log() as recorder,
        warnings.catch_warnings(record=True) as caught,
        tempfile.TemporaryDirectory(prefix="robustft-aa-") as tmp,
    ):
        warnings.simplefilter("always")
        adversary = build_standard_autoattack(model, eps=eps, seed=seed, device=device)
        state_path = Path(tmp) / "state.json"
        x_adv, _ = adversary.run_standard_evaluation(
            x, y, batch_size=batch_size, state_path=state_path
        )
        config = read_config(adversary)
        state = json.loads(state_path.read_text())
        x_adv = x_adv.detach()
        clean = _correct(model, x, y, batch_size, device)
        still = _correct(model, x_adv, y, batch_size, device)
    # Outside catch_warnings: let the caller's filters see what was raised during the run.
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    # The attack must stay in the ε-ball and the image box, whatever the model did.
    if torch.isnan(x_adv).any():
        raise AutoAttackError("x_adv contains NaN")
    linf = (x_adv - x).abs().flatten(1).amax(1).max().item()
    if linf > eps + EPS_TOLERANCE:
        raise AutoAttackError(f"‖x_adv − x‖∞ = {linf:.8f} exceeds eps = {eps:.8f}")
    if x_adv.min().item() < 0 or x_adv.max().item() > 1:
        raise AutoAttackError(f"x_adv leaves [0, 1]: [{x_adv.min().item()}, {x_adv.max().item()}]")

    robust = clean & still
    n = x.shape[0]
    accuracy = robust.float().mean().item()
    clean_accuracy = clean.float().mean().item()

    log, stages = [], {}
    library_accuracy = None
    for rec in recorder.records:
        msg = rec.getMessage()
        log.append(f"{rec.levelname}: {msg}")
        if rec.levelno >= logging.WARNING:
            notes.append(f"{LOGGER_NAME} {rec.levelname}: {msg}")
        if m := _CLEAN_ACC.match(msg):
            stages["clean"] = float(m.group(1)) / 100
        elif m := _STAGE_ACC.match(msg):
            stages[m.group(1).lower()] = float(m.group(2)) / 100
        elif m := _FINAL_ACC.match(msg):
            library_accuracy = float(m.group(1)) / 100
    for w in caught:
        notes.append(f"python {w.category.__name__}: {w.message} ({w.filename}:{w.lineno})")

    # Cross-check our recount against the library's own bookkeeping.
    lib_flags = state.get("_robust_flags")
    if lib_flags is None or len(lib_flags) != n:
        notes.append("robustft: library state file has no per-example flags")
    elif [bool(v) for v in lib_flags] != robust.tolist():
        diff = sum(bool(a) != bool(b) for a, b in zip(lib_flags, robust.tolist()))
        notes.append(
            f"robustft: {diff} per-example flags differ between the library's "
            "bookkeeping and the recount on x_adv (non-deterministic model?)"
        )
    if library_accuracy is None:
        notes.append("robustft: the library logged no final robust accuracy")
    elif abs(library_accuracy - accuracy) > 0.5e-4 + 1e-9:  # logged with 2 decimals in %
        notes.append(
            f"robustft: library logged robust accuracy {library_accuracy:.2%}, "
            f"recount gives {accuracy:.4%}"
        )

    config["batch_size"] = batch_size
    config["device"] = str(device)
    return AutoAttackResult(
        accuracy=accuracy,
        n=n,
        per_example=[int(v) for v in robust.tolist()],
        clean_accuracy=clean_accuracy,
        clean_per_example=[int(v) for v in clean.tolist()],
        warnings=notes,
        flagged=bool(notes),
        config=config,
        library=lib,
        seconds=time.perf_counter() - start,
        stage_accuracy=stages,
        library_accuracy=library_accuracy,
        log=log,
        x_adv=x_adv if return_adv else None,
    )
