"""What each step receives: one dataclass per step's settings, its defaults in one place.

Owns the interface between the planning layer (:mod:`robustft.plan`, which fills these from
``config.yaml``) and the step scripts (:mod:`robustft.steps`, which parse their ``--settings``
JSON back into them). A setting a step does not know is an error naming it
(:meth:`Contract.from_dict`), so a typo in a hand-written ``--settings`` or a planner/step drift
fails at once instead of silently falling back to a default restated on the reading side.
Attack budgets are not spelled here: their defaults are the named threat models of
:mod:`robustft.threat_models` (AutoLoRa's for training runs, CLAT's for its protocol).

Torch-free on purpose: the Snakefile imports it through :mod:`robustft.plan`.

A trained ``model_best.pt`` describes its own model (:class:`robustft.models.checkpoint.ModelSpec`),
so evaluation, transfer and criticality settings carry no architecture or method parameters.
The ``arch``/``width``/``input_size``/``method``/``method_params`` fields that remain are for
model files written before models described themselves (by hand only; the planner never fills
them, and :func:`robustft.evaluate.load_trained` also finds them in the ``run.yaml`` beside such
a file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from robustft.threat_models import AUTOLORA_PAPER, CLAT_PAPER


class ContractError(ValueError):
    """Settings that do not fit the step's contract (unknown or missing keys)."""


class Contract:
    """``from_dict`` / ``to_dict`` for the dataclasses below."""

    #: what messages call these settings ("evaluation settings")
    _what: ClassVar[str] = "settings"
    #: fields holding another contract, built from their dict in ``from_dict``
    _nested: ClassVar[dict[str, type[Contract]]] = {}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        if isinstance(values, cls):
            return values
        if not isinstance(values, Mapping):
            raise ContractError(f"{cls._what}: expected a JSON object, got {values!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ContractError(
                f"unknown {cls._what} setting(s) {unknown}; known: {', '.join(fields)}"
            )
        missing = [
            n
            for n, f in fields.items()
            if n not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ContractError(f"{cls._what}: missing setting(s) {missing}")
        kwargs = dict(values)
        for name, kind in cls._nested.items():
            if kwargs.get(name) is not None:
                kwargs[name] = kind.from_dict(kwargs[name])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data; optional sections that are unset (:data:`LEGACY`
        fields, the standard protocol) are left out."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            if f.metadata.get("omit_default") and value == f.default:
                continue  # a setting added later: runs that leave it alone keep their params
            out[f.name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    """JSON-ready copy (dataclasses.asdict's result, at a fraction of its cost: a dry run of
    every study converts ~3,000 settings)."""
    if isinstance(value, Contract):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


#: field metadata: left out of the JSON when None (an optional section that is unset)
OMIT_NONE = {"omit_none": True}
#: field metadata: only for model files written before models described themselves
LEGACY = {"omit_none": True, "legacy": True}
#: field metadata: left out of the JSON at its default, so adding the setting does not change
#: the params (and Snakemake's rerun trigger) of every existing job
OMIT_DEFAULT = {"omit_default": True}


# --- train (and backbone pre-training) ---------------------------------------------------------
@dataclass
class TrainConfig(Contract):
    """Resolved hyper-parameters of one run (the ``train`` rule's ``params``); the defaults are
    the first layer of the resolution order of :mod:`robustft.plan.settings`."""

    _what: ClassVar[str] = "training"

    run_name: str
    method: str
    arch: str
    seed: int
    method_params: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    input_size: int | None = None
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9
    lr_schedule: dict[str, Any] = field(
        default_factory=lambda: {"type": "multistep", "milestones": [30, 50], "factor": 0.1}
    )
    # AutoLoRa Sec. 5 (robustft.threat_models): PGD-10 at 8/255, step 2/255; the presets of
    # robustft.plan.settings override ε/step
    train_attack: dict[str, Any] = field(default_factory=AUTOLORA_PAPER.train_attack)
    eval_attack: dict[str, Any] = field(default_factory=AUTOLORA_PAPER.eval_attack)
    selection: str = "test_pgd"
    # what the ``backbone`` file is: "backbone" = conv/BN tensors (load_backbone), "model" = a
    # previous run's complete model_best.pt, head included (CLAT's "X + CLAT" second phase)
    init_from: str = "backbone"
    val_examples: int | None = None
    test_examples: int | None = None
    eval_batch_size: int = 256
    augment: str = "crop_flip"
    grad_sim_batches: int = 0
    # What happens after an epoch under a reloading LR schedule (AutoLoRa's AutoLR): "paper"
    # (Algorithm 1: evaluate val and test, select, then halve and reload the best-val weights)
    # or "official" (the AutoLoRa code: evaluate val, halve and reload, then evaluate the test
    # set and select, so a reload epoch reports the reloaded weights). See Trainer.end_epoch.
    epoch_end_order: str = "paper"
    device: str = "cpu"
    # Speed settings (robustft.precision owns them; docs/ and run.yaml record them). Autocast
    # precision of the training step, attacks included: fp32 | bf16 | fp16 (fp16: CUDA only,
    # with a GradScaler). The paper fidelities stay fp32; `paper_bf16` switches it.
    precision: str = field(default="fp32", metadata=OMIT_DEFAULT)
    # channels_last memory format inside the model, after its preprocessing (attacks see NCHW)
    channels_last: bool = field(default=False, metadata=OMIT_DEFAULT)
    # opt-in torch.compile of the model (nn.Module.compile: state_dict keys unchanged)
    compile: bool = field(default=False, metadata=OMIT_DEFAULT)
    # auto | always | never: keep the uint8 training split on the device and augment it there
    # (auto: on CUDA when it fits; the CPU keeps the host path)
    data_on_device: str = field(default="auto", metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class RunIdentity(Contract):
    """A run's place in the grid, recorded in its ``run.yaml`` (read by the aggregation)."""

    _what: ClassVar[str] = "run identity"

    fidelity: str
    dataset: str
    backbone: str
    variant: str
    seed: int
    method: str
    preset: str


@dataclass(frozen=True)
class FetchBackbone(Contract):
    """A Salman et al. robust ImageNet ResNet to download and verify."""

    _what: ClassVar[str] = "backbone download"

    arch: str
    eps_pt: float
    sha256: str | None = None


@dataclass(frozen=True)
class PrepareData(Contract):
    """One ``datasets.<name>`` entry to prepare (``robustft.steps.prepare_data``'s arguments)."""

    _what: ClassVar[str] = "data preparation"

    kind: str
    resolution: int | None = None  # None: the kind's default
    split_seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    raw_dir: str | None = None  # where archives are looked for / downloaded


# --- evaluate ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClatProtocol(Contract):
    """``fidelities.<f>.evaluation`` with ``protocol: clat`` (CLAT Sec. 4.1): white-box PGD
    repeated ``restarts`` times (the minimum is PGD10), APGD-CE (Table 8), a PGD sweep over
    ``epsilons`` (Figure 4); the transfer (Table 2) and criticality (Table 7) jobs' sizes."""

    _what: ClassVar[str] = "CLAT evaluation protocol"

    protocol: Literal["clat"] = "clat"
    attack: dict[str, Any] = field(default_factory=CLAT_PAPER.eval_attack)  # CLAT Sec. 4.1
    restarts: int = 10
    examples: int | None = None  # test subset (None = all)
    apgd_ce: bool = True
    apgd_ce_iterations: int = 100
    epsilons: list[float] = field(default_factory=list)
    sweep_restarts: int = 1
    transfer_examples: int | None = None
    criticality_batch_sizes: list[int] = field(default_factory=lambda: [10, 30, 50, 100])
    criticality_repeats: int = 1


@dataclass(frozen=True)
class EvaluateSettings(Contract):
    """The ``evaluate`` rule's ``params``: PGD-10 (or the CLAT protocol) and AutoAttack."""

    _what: ClassVar[str] = "evaluation"
    _nested: ClassVar[dict[str, type[Contract]]] = {"protocol": ClatProtocol}

    eval_attack: dict[str, Any]
    autoattack: bool = False
    autoattack_eps: float | None = None  # None: eval_attack's ε
    autoattack_examples: int | None = None  # None: the whole test set
    autoattack_batch_size: int = 250
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    # Autocast precision of the evaluation (clean pass and attacks). fp32 unless asked: a
    # gradient attack in reduced precision can find weaker adversarial examples and so
    # over-state robustness (robustft.precision).
    precision: str = field(default="fp32", metadata=OMIT_DEFAULT)
    # None: the standard protocol (PGD-10 once with eval_attack, AutoLoRa)
    protocol: ClatProtocol | None = field(default=None, metadata=OMIT_NONE)
    # only for model files written before models described themselves (see the module doc)
    arch: str | None = field(default=None, metadata=LEGACY)
    width: int | None = field(default=None, metadata=LEGACY)
    input_size: int | None = field(default=None, metadata=LEGACY)
    method: str | None = field(default=None, metadata=LEGACY)
    method_params: dict[str, Any] | None = field(default=None, metadata=LEGACY)


# --- CLAT's jobs beyond one run ----------------------------------------------------------------
@dataclass(frozen=True)
class TransferIdentity(Contract):
    _what: ClassVar[str] = "transfer identity"

    fidelity: str
    dataset: str
    variant: str
    seed: int
    backbones: list[str]


@dataclass(frozen=True)
class TransferSettings(Contract):
    """CLAT Table 2: PGD crafted on each of two models, evaluated on the other."""

    _what: ClassVar[str] = "transfer"
    _nested: ClassVar[dict[str, type[Contract]]] = {"identity": TransferIdentity}

    attack: dict[str, Any] = field(default_factory=CLAT_PAPER.eval_attack)  # CLAT Sec. 4.1
    examples: int | None = None
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    identity: TransferIdentity | None = None
    # only for model files written before models described themselves: {name: arch, ...}
    models: dict[str, dict[str, Any]] | None = field(default=None, metadata=LEGACY)


@dataclass(frozen=True)
class CriticalityIdentity(Contract):
    _what: ClassVar[str] = "criticality identity"

    fidelity: str
    dataset: str
    backbone: str
    variant: str
    seed: int


@dataclass(frozen=True)
class CriticalitySettings(Contract):
    """CLAT Table 7: criticality of the model a CLAT run starts from, per batch size."""

    _what: ClassVar[str] = "criticality"
    _nested: ClassVar[dict[str, type[Contract]]] = {"identity": CriticalityIdentity}

    train_attack: dict[str, Any]
    clat_method: str = "clat"
    clat_params: dict[str, Any] = field(default_factory=dict)
    batch_sizes: list[int] = field(
        default_factory=lambda: list(ClatProtocol().criticality_batch_sizes)
    )
    repeats: int = 1
    seed: int = 0
    device: str = "cpu"
    identity: CriticalityIdentity | None = None
    measured_run: str | None = None
    measured_variant: str | None = None
    measured_method: str | None = None
    # only for a model file written before models described themselves: arch, width, ...
    model: dict[str, Any] | None = field(default=None, metadata=LEGACY)


# --- aggregate ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AggregateSpec(Contract):
    """What the ``aggregate`` step is told about a study (:mod:`robustft.plan.studies`)."""

    _what: ClassVar[str] = "aggregation spec"

    title: str | None = None
    description: str | None = None
    metrics: list[str] | None = None  # None: every metric of the runs
    test: Literal["welch", "student", "paired"] = "welch"
    alpha: float = 0.05
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparisons: list[dict[str, Any]] | None = None
    reference: str | None = None  # compared with every other variant (without comparisons)
    paper: dict[str, Any] | None = None
    figures: list[str] | None = None
    derived: list[str] = field(default_factory=list)


def sweep_metric(eps: float) -> str:
    """Metric name of one point of the ε sweep (CLAT Figure 4): ``PGD_eps0.03``."""
    return f"PGD_eps{eps:g}"
