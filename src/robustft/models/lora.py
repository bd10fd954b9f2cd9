"""The one LoRA convolution of the project, and what builds, counts and merges it.

Two methods use it, in two ways:

* **AutoLoRa's branch** (AutoLoRa Sec. 4.1 / Eq. 5): the natural objective is optimised through
  ``theta_1 + BA`` while the adversarial objective goes through ``theta_1`` alone, so every
  adapted conv must run with or without its update *on the same call path*:
  ``LoraConv2d.forward(x, lora=...)`` takes the branch as an explicit argument; there is no
  mode stored on the module. Models get these convs from ``build_model(..., lora=LoraConfig)``.
* **LoRA fine-tuning's re-parametrisation** (CLAT Table 1 "PGD-AT + LoRA",
  :mod:`robustft.methods.lora_ft`): ``W = W0 + BA`` on every call (``always_on=True``, fixed
  when the conv is built), so the plain forward -- what attacks and evaluation call -- sees the
  adapted weights in any architecture. :func:`add_lora` wraps named convs of any model,
  :func:`merge_lora` writes ``W0 + BA`` back into plain convs at the end.

Form of the update (spec section 3, the loralib ``ConvLoRA`` used by the official code): for a
k x k conv ``C_in -> C_out`` with rank r,

* ``A`` has shape ``(r*k, C_in*k)``, drawn from N(0, 1) (``init="normal"``: the paper's
  N(0, sigma), sigma=1, and the AutoLoRa code) or Kaiming-uniform with a = sqrt(5)
  (``init="kaiming"``: loralib's default, LoRA fine-tuning's default);
* ``B`` has shape ``(C_out*k, r*k)`` and starts at zero, so the LoRA branch starts equal to the
  feature extractor;
* ``Delta W = (B @ A).view(C_out, C_in, k, k) * alpha / r`` (alpha = 1 in the official code).

The rank of ``Delta W`` is therefore up to ``r*k`` rather than ``r``; this is what the paper's
experiments ran, so we keep it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Coverage = Literal["paper", "official"]
_COVERAGES: tuple[str, ...] = ("paper", "official")
#: How ``A`` starts: N(0, 1) (AutoLoRa's code) or loralib's Kaiming-uniform (a = sqrt(5)).
INITS: tuple[str, ...] = ("normal", "kaiming")


@dataclass(frozen=True)
class LoraConfig:
    """Which convs get a LoRA branch and how big it is.

    ``coverage``:

    * ``"paper"`` -- every conv inside the residual blocks, including the 1x1 downsample convs;
      the stem conv and the classifier are excluded (paper: "BA has the same size as theta_1",
      restricted to the residual blocks as in the official layer definitions).
    * ``"official"`` -- only the convs the official high-resolution code *actually* adapts:
      because its ``SequentialWithArgs`` forwards the branch flag only to the last block of each
      stage and never to the downsample (spec section 3, section 11.5), the update is live only in
      conv1/conv2(/conv3) of the last block of every stage (8 convs in ResNet-18, 12 in
      ResNet-50). The official code still *declares* (dead, untrained) LoRA tensors everywhere;
      we simply do not create them, so the declared count here equals the official *used* count.
    """

    rank: int = 8
    coverage: Coverage = "paper"
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if self.coverage not in _COVERAGES:
            raise ValueError(f"LoRA coverage must be one of {_COVERAGES}, got {self.coverage!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")

    @property
    def scaling(self) -> float:
        """alpha / r, the loralib scaling the official code applies (not stated in the paper)."""
        return self.alpha / self.rank


class LoraConv2d(nn.Module):
    """A conv with an additive low-rank weight update: a branch, or always on.

    The wrapped conv is kept as the submodule ``conv`` so its weight lives at
    ``<name>.conv.weight`` (the same rename the official AutoLoRa loader performs);
    ``robustft.models.checkpoint`` maps torchvision names onto it.

    ``init`` chooses the draw of ``A`` (see the module docstring); ``always_on=True`` makes the
    update part of the weight on every call, whatever ``lora`` says (LoRA fine-tuning), while
    ``False`` adds it only for ``lora=True`` (AutoLoRa's branch).
    """

    def __init__(
        self, conv: nn.Conv2d, config: LoraConfig, *, init: str = "normal", always_on: bool = False
    ) -> None:
        super().__init__()
        kh, kw = conv.kernel_size
        if kh != kw:
            raise ValueError(f"LoRA conv needs a square kernel, got {conv.kernel_size}")
        if conv.groups != 1:
            raise ValueError("LoRA conv supports groups=1 only")
        if conv.padding_mode != "zeros":
            raise ValueError("LoRA conv supports padding_mode='zeros' only")
        if init not in INITS:
            raise ValueError(f"LoRA init must be one of {INITS}, got {init!r}")
        k, r = kh, config.rank
        self.conv = conv
        self.rank = r
        self.scaling = config.scaling
        self.init = init
        self.always_on = bool(always_on)
        self.lora_A = nn.Parameter(conv.weight.new_empty(r * k, conv.in_channels * k))
        self.lora_B = nn.Parameter(conv.weight.new_zeros(conv.out_channels * k, r * k))
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A ~ N(0, 1) or Kaiming-uniform, B = 0 (spec section 3): the update starts at zero."""
        if self.init == "normal":
            nn.init.normal_(self.lora_A, mean=0.0, std=1.0)
        else:  # loralib: the nn.Linear default, a = sqrt(5)
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """Delta W = (B A) reshaped row-major to the conv weight shape, times alpha / r."""
        return (self.lora_B @ self.lora_A).view(self.conv.weight.shape) * self.scaling

    def forward(self, x: torch.Tensor, *, lora: bool = False) -> torch.Tensor:
        use = lora or self.always_on
        weight = self.conv.weight + self.delta_weight() if use else self.conv.weight
        c = self.conv
        return F.conv2d(x, weight, c.bias, c.stride, c.padding, c.dilation, c.groups)

    def merge(self) -> nn.Conv2d:
        """The wrapped conv with ``W0 + Delta W`` written into its weight (same parameter)."""
        with torch.no_grad():
            self.conv.weight.copy_(self.conv.weight + self.delta_weight())
        return self.conv

    def extra_repr(self) -> str:
        on = ", always_on" if self.always_on else ""
        return f"rank={self.rank}, scaling={self.scaling:g}, init={self.init}{on}"


def add_lora(
    model: nn.Module,
    names: Iterable[str],
    config: LoraConfig,
    *,
    init: str = "normal",
    always_on: bool = False,
) -> list[LoraConv2d]:
    """Replace the named ``nn.Conv2d`` submodules of ``model`` by :class:`LoraConv2d` in place.

    Each keeps its slot (and so the module order); ``A`` is drawn in the order of ``names`` from
    the global RNG, like any other weight initialisation.
    """
    wrapped = []
    for name in list(names):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        conv = getattr(parent, leaf)
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"{name} is a {type(conv).__name__}, not an nn.Conv2d")
        module = LoraConv2d(conv, config, init=init, always_on=always_on)
        setattr(parent, leaf, module)
        wrapped.append(module)
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Put every always-on :class:`LoraConv2d` back as its plain conv with ``W0 + Delta W``.

    The merged model is an ordinary instance of its architecture (its state dict has the
    original names), so a saved model needs no LoRA code. Branch convs (AutoLoRa) are left
    alone: their plain forward does not use the update. Returns the number of merged convs.
    """
    merged = 0
    for name, module in lora_modules(model):
        if module.always_on:
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, module.merge())
            merged += 1
    return merged


def run_conv(module: nn.Module, x: torch.Tensor, lora: bool) -> torch.Tensor:
    """Call a conv that may or may not carry a LoRA branch; plain convs ignore ``lora``."""
    if isinstance(module, LoraConv2d):
        return module(x, lora=lora)
    return module(x)


def lora_modules(model: nn.Module) -> list[tuple[str, LoraConv2d]]:
    """All LoRA-wrapped convs with their qualified names, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraConv2d)]


def _pretrained_fe_count(model: nn.Module) -> int:
    """|theta_1|: conv weights/biases + BN gamma/beta, i.e. the pretrained trainable FE.

    Excluded: the classifier head, running statistics, LoRA tensors and the extra trainable
    gamma/beta of the official TWINS frozen branch (they are not part of the pretrained FE).
    """
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d):
            for p in (m.weight, m.bias):
                if p is not None:
                    n += p.numel()
    return n


def lora_parameter_report(model: nn.Module) -> dict[str, float | int]:
    """Declared LoRA parameters relative to the pretrained feature extractor (paper Table 3).

    ``ratio_percent = 100 * (|A| + |B|) / |theta_1|`` where the numerator counts every declared
    LoRA tensor and the denominator ``|theta_1|`` is conv weights + BN gamma/beta of the feature
    extractor (11,176,512 for ResNet-18; head, ImageNet ``fc`` and running statistics excluded).

    With ``coverage="paper"`` this gives 1.19 / 2.38 / 4.76 / 9.51 % for ResNet-18 with
    r = 2 / 4 / 8 / 16; Table 3 reports 1.30 / 2.49 / 4.87 / 9.62 %. The paper's numbers are
    exactly affine in r with the same slope (0.594 points per unit of r) but carry an
    r-independent offset of about 0.11 points (~12.5k parameters) that no natural count
    reproduces (we tried adding/removing the stem, ImageNet fc, downstream heads, BN affine and
    running statistics in numerator and denominator); the slope -- i.e. the LoRA count and the
    FE size -- matches this definition.
    """
    mods = lora_modules(model)
    n_lora = sum(m.lora_A.numel() + m.lora_B.numel() for _, m in mods)
    n_fe = _pretrained_fe_count(model)
    return {
        "lora_params": n_lora,
        "fe_params": n_fe,
        "ratio_percent": 100.0 * n_lora / n_fe if n_fe else float("nan"),
        "wrapped_convs": len(mods),
    }
