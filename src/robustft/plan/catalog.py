"""What the planning layer knows about the library's registries, without importing them.

Owns: every method's hyper-parameters (one dataclass per registered method: typed fields,
``Literal`` choices, range constraints, and THE defaults — the method classes in
:mod:`robustft.methods` take their ``defaults`` from here), each method's printed name and
whether it is a CLAT method; the names of the architectures and dataset kinds a config may use.

Why a catalog and not the registries themselves: ``robustft.methods``, ``robustft.models`` and
``robustft.data`` import torch, and the Snakefile must parse without it. The contract tests
(``tests/test_plan.py``) check that this catalog and the registries agree name by name, and that
every method's defaults are the schema's.

:func:`check_params` is how ``config.yaml``'s ``params`` are checked before any job starts: an
unknown key, a wrong type, a value outside a ``Literal`` or a range is a message naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal


# --- constraints -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """A numeric range ``low ≤ x`` (``low < x`` with ``open_low``); ``what`` is how a message
    names it ("a positive int")."""

    low: float
    open_low: bool = False
    what: str = ""

    def holds(self, value: float) -> bool:
        return value > self.low if self.open_low else value >= self.low


PositiveInt = Annotated[int, Range(1, what="a positive int")]
NonNegativeInt = Annotated[int, Range(0, what="an int ≥ 0")]
PositiveFloat = Annotated[float, Range(0, open_low=True, what="a positive number")]
NonNegativeFloat = Annotated[float, Range(0, what="a number ≥ 0")]

KLNormaliser = Literal["batch", "fixed_batch"]  # AutoLoRa/TWINS spec §11: KL / batch length
AttackInit = Literal["zero", "uniform", "normal"]  # robustft.attacks.feature_pgd.ascend
BNMode = Literal["train", "eval"]
Side = Literal["paper", "official"]


# --- one dataclass per method ------------------------------------------------------------------
@dataclass(frozen=True)
class VanillaRFTParams:
    """Vanilla RFT (TRADES-style loss of AutoLoRa Eq. 1)."""

    beta: NonNegativeFloat = 6.0
    kl_normaliser: KLNormaliser = "batch"


@dataclass(frozen=True)
class TwinsParams:
    """TWINS (Liu et al. 2023): γ of the frozen-BN branch, the paper's or official loss and
    dual-BN affine (spec §6, §11)."""

    beta: NonNegativeFloat = 6.0
    gamma: NonNegativeFloat = 1.0
    loss: Side = "official"
    dual_bn: Side = "official"
    kl_normaliser: KLNormaliser = "batch"


@dataclass(frozen=True)
class AutoLoRaParams:
    """AutoLoRa (Eq. 5-7, Algorithm 1): LoRA branch rank/coverage/scaling, α of λ1/λ2, how SA
    is measured and when."""

    rank: PositiveInt = 8
    lora_coverage: Side = "official"
    lora_alpha: PositiveFloat = 1.0
    alpha: PositiveFloat = 1.0
    lambda_source: Literal["train_set", "running"] = "train_set"
    lambda_measured: Literal["epoch_start", "epoch_end"] = "epoch_start"
    detach_soft_labels: bool = False
    kl_normaliser: KLNormaliser = "batch"


@dataclass(frozen=True)
class PGDATParams:
    """PGD-AT (Madry et al.): no hyper-parameters beyond the run's training attack."""


@dataclass(frozen=True)
class StandardParams:
    """Standard clean training (CE on clean inputs; CLAT Table 9's clean pre-training)."""


@dataclass(frozen=True)
class TradesParams:
    """TRADES (CLAT spec §3.2): β, the attack's Gaussian start, where its first gradient is
    taken (``project_start``)."""

    beta: NonNegativeFloat = 6.0
    init: AttackInit = "normal"
    init_std: NonNegativeFloat = 0.001
    project_start: bool = False
    kl_normaliser: KLNormaliser = "batch"


@dataclass(frozen=True)
class ScoreParams:
    """SCORE (Pang et al. 2022; ``robustft.methods.score``): β, the per-example clipping of
    ``P2333/SCORE`` (bound from c = ``clip_loss``, on the total or the robust term), label
    smoothing and the attack's start and BN mode. Defaults: the no-extra-data recipe
    (``without_DDPM/train_cifar.py``: λ 6, c 0.3 on the total, 0.001·N start, eval-mode BN)."""

    beta: NonNegativeFloat = 6.0
    clip_loss: NonNegativeFloat = 0.3
    clip_on: Literal["total", "robust"] = "total"
    label_smoothing: NonNegativeFloat = 0.0
    init: AttackInit = "normal"
    init_std: NonNegativeFloat = 0.001
    project_start: bool = True
    attack_bn: Literal["eval", "train_frozen"] = "eval"


@dataclass(frozen=True)
class MartParams:
    """MART (CLAT spec §3.3)."""

    beta: NonNegativeFloat = 5.0
    init: AttackInit = "normal"
    init_std: NonNegativeFloat = 0.001
    project_start: bool = False


@dataclass(frozen=True)
class AWPParams:
    """AT-AWP (CLAT spec §3.4, csdongxian/AWP ``train_cifar10.py``)."""

    base: Literal["at", "trades"] = "at"
    gamma: NonNegativeFloat = 0.01
    warmup: NonNegativeInt = 0
    proxy_lr: PositiveFloat = 0.01
    beta: NonNegativeFloat = 6.0
    init: AttackInit = "normal"
    init_std: NonNegativeFloat = 0.001
    project_start: bool = False
    attack_bn: BNMode = "train"
    epoch_origin: Literal[0, 1] = 0


@dataclass(frozen=True)
class TradesAWPParams(AWPParams):
    """TRADES-AWP (csdongxian/AWP ``trades_AWP/train_trades_cifar.py``)."""

    base: Literal["at", "trades"] = "trades"
    gamma: NonNegativeFloat = 5e-3
    warmup: NonNegativeInt = 10
    attack_bn: BNMode = "eval"
    epoch_origin: Literal[0, 1] = 1


@dataclass(frozen=True)
class FastATParams:
    """Fast-AT (Wong et al. 2020): FGSM with random start, step α = alpha_factor·ε."""

    alpha_factor: PositiveFloat = 1.25
    attack_bn: BNMode = "train"


@dataclass(frozen=True)
class RiFTParams:
    """RiFT (Zhu et al. 2023, microsoft/robustlearn): module robust criticality, fine-tuning of
    one module, interpolation. ``module`` "" = the least robust-critical one."""

    module: str = ""
    mrc_examples: PositiveInt = 10000
    mrc_batch_size: PositiveInt = 512
    mrc_epochs: PositiveInt = 10
    mrc_lr: PositiveFloat = 1.0
    mrc_radius: PositiveFloat = 0.1
    mrc_max: Side = "official"
    alphas: PositiveInt = 11
    tolerance: NonNegativeFloat = 0.001
    select_split: Literal["val", "test"] = "val"


@dataclass(frozen=True)
class LoRAFTParams:
    """LoRA fine-tuning baseline of CLAT Table 1 (``lora_ft``)."""

    rank: PositiveInt = 8
    alpha: PositiveFloat = 1.0
    init: Literal["kaiming", "normal"] = "kaiming"
    train_head: bool = True
    train_bn: bool = False
    include_shortcuts: bool = True


@dataclass(frozen=True)
class CLATParams:
    """CLAT (arXiv 2408.10204 v1, Alg. 1); the A-numbers are the spec's open points (§1.8)."""

    k: NonNegativeInt = 0  # critical layers; 0 = the paper's per-architecture k
    reselect_every: NonNegativeInt = 10  # Alg. 1 line 3; 0 = select once (CLAT(ND))
    selection: Literal["critical", "random"] = "critical"  # "random": Tables 5/10 ablation
    inner: Literal["pgd", "fgsm"] = "pgd"  # "fgsm": CLAT(Fast)
    fgsm_step_factor: PositiveFloat = 1.25  # CLAT(Fast) step = factor·ε (Fast-AT's α; §1.4)
    lam: NonNegativeFloat = 0.0  # λ of Eq. 9; 0 = calibrate (A5)
    lambda_scale: PositiveFloat = 1.0  # λ multiplier (A5 sweep ×{0.3, 1, 3})
    calibration_batches: PositiveInt = 10  # A5: λ·L_feat = CE averaged over this many batches
    ce_on: Literal["clean", "adv"] = "clean"  # A4: CE on x (Eq. 9 as written) or on x+δ
    layer_params: Literal["conv_bn", "conv"] = "conv_bn"  # A6: weight (+bias) and its BN γ/β
    bn_mode: BNMode = "train"  # A7: BN mode of the update (attacks: always eval)
    tap: Literal["module", "bn"] = "module"  # A2: raw conv output, or after its BN
    first_layer: Literal["input", "literal"] = "input"  # A3: C_1 = W_1/W_0, or literal W_1
    ratio: Literal["previous", "own_input"] = "previous"  # A15: W_{i-1} of the previous layer
    include_head: bool = False  # A14: may the final linear be selected? (clat/method.py)
    criticality_examples: PositiveInt = 128  # A10: unaugmented training images per selection
    criticality_batches: PositiveInt = 1  # average C over this many such batches
    detach_clean: bool = False  # spec §1.4 default: gradient through both branches


@dataclass(frozen=True)
class CLATFastParams(CLATParams):
    inner: Literal["pgd", "fgsm"] = "fgsm"


@dataclass(frozen=True)
class CLATNDParams(CLATParams):
    reselect_every: NonNegativeInt = 0


@dataclass(frozen=True)
class CLATRandomParams(CLATParams):
    selection: Literal["critical", "random"] = "random"


@dataclass(frozen=True)
class MethodEntry:
    """A registered method as the planning layer sees it."""

    params: type
    display_name: str  # the printed method name (tables, report)
    clat: bool = False  # a CLAT method: criticality / derived rows can be read from its runs


#: every method :data:`robustft.methods.METHODS` registers, by name
METHODS: dict[str, MethodEntry] = {
    "vanilla_rft": MethodEntry(VanillaRFTParams, "Vanilla RFT"),
    "twins": MethodEntry(TwinsParams, "TWINS"),
    "autolora": MethodEntry(AutoLoRaParams, "AutoLoRa"),
    "pgd_at": MethodEntry(PGDATParams, "PGD-AT"),
    "standard": MethodEntry(StandardParams, "Standard"),
    # CLAT's adversarial-training baselines (CLAT spec §2-3)
    "trades": MethodEntry(TradesParams, "TRADES"),
    "mart": MethodEntry(MartParams, "MART"),
    "score": MethodEntry(ScoreParams, "SCORE"),
    "awp": MethodEntry(AWPParams, "AT-AWP"),
    "trades_awp": MethodEntry(TradesAWPParams, "TRADES-AWP"),
    "fast_at": MethodEntry(FastATParams, "Fast-AT"),
    "rift": MethodEntry(RiFTParams, "RiFT"),
    "lora_ft": MethodEntry(LoRAFTParams, "LoRA"),
    # CLAT and its named variants (CLAT spec §1)
    "clat": MethodEntry(CLATParams, "CLAT", clat=True),
    "clat_fast": MethodEntry(CLATFastParams, "CLAT(Fast)", clat=True),
    "clat_nd": MethodEntry(CLATNDParams, "CLAT(ND)", clat=True),
    "clat_random": MethodEntry(CLATRandomParams, "CLAT (random layers)", clat=True),
}

#: architectures of robustft.models (ARCHS and CIFAR_ARCHS); True = a 32-px CIFAR network that
#: never runs on upsampled inputs
ARCHS: dict[str, bool] = {
    "resnet18": False,
    "resnet50": False,
    "resnet_mini": False,
    "cifar_resnet18": True,
    "cifar_resnet50": True,
    "cifar_preact_resnet18": True,
    "cifar_preact_resnet18_fast": True,
    "cifar_wrn34_10": True,
    "cifar_wrn70_16": True,
    "cifar_vgg19": True,
    "cifar_densenet121": True,
}

#: dataset kinds of robustft.data.DATASETS; True = it has paper/official presets, so the
#: workflow's preset is passed to its preparation
DATASET_KINDS: dict[str, bool] = {
    "cifar10": True,
    "cifar100": True,
    "dtd": True,
    "dog120": True,
    "cub200": True,
    "caltech256": True,
    "textures": True,
    "textures_source": True,
}


def method(name: str) -> MethodEntry:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def params_defaults(name: str) -> dict[str, Any]:
    """The defaults of a method's hyper-parameters (what ``Method.defaults`` holds)."""
    return dataclasses.asdict(method(name).params())


def display_name(name: str) -> str:
    return method(name).display_name


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (None: it fits)."""
    range_ = None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        range_ = next((e for e in extras if isinstance(e, Range)), None)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        # type as well as value: YAML's `true` must not pass for 1
        if not any(type(value) is type(c) and value == c for c in choices):
            return f"{value!r} is not one of {', '.join(repr(c) for c in choices)}"
        return None
    if hint is bool:
        ok, what = isinstance(value, bool), "true or false"
    elif hint is int:
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an int"
    elif hint is float:
        ok, what = (isinstance(value, int | float) and not isinstance(value, bool)), "a number"
    elif hint is str:
        ok, what = isinstance(value, str), "a string"
    elif isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        ok = any(_problem(value, h) is None for h in typing.get_args(hint))
        what = " or ".join(str(h) for h in typing.get_args(hint))
    else:  # pragma: no cover - a schema field of a type this checker does not know
        raise TypeError(f"cannot check a parameter annotated {hint!r}")
    if not ok:
        return f"{value!r} is not {range_.what if range_ else what}"
    if range_ is not None and not range_.holds(value):
        return f"{value!r} is not {range_.what}"
    return None


def check_params(name: str, params: Any) -> list[tuple[str, str]]:
    """``(parameter, problem)`` for every parameter of ``params`` that the method ``name``'s
    schema rejects: an unknown key, a wrong type, a value outside its choices or range."""
    if not isinstance(params, dict):
        return [("", f"expected a mapping of {name}'s parameters, got {params!r}")]
    schema = method(name).params
    hints = _hints(schema)
    known = [f.name for f in dataclasses.fields(schema)]
    out = []
    for key, value in params.items():
        if key not in hints:
            known_text = ", ".join(known) if known else "(none)"
            out.append((key, f"unknown parameter of {name}; known: {known_text}"))
        elif (problem := _problem(value, hints[key])) is not None:
            out.append((key, problem))
    return out
