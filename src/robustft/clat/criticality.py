"""CLAT's feature weakness and layer criticality (CLAT Sec. 3.1, Eq. 5-6; Alg. 1 lines 4-9).

Owns the ranking of CLAT's layers: :func:`layer_criticality` (W_i and C_i of every layer),
:class:`FeatureTap` (reading F_i during a forward pass), :func:`tap_modules` (spec A2) and the
paper's k per architecture (:data:`PAPER_K`, :func:`default_k`).

For the candidate layers f_1..f_L (spec §1.2 numbering,
:func:`robustft.clat.layers.candidate_layers`) and one batch x with an untargeted output-space PGD
perturbation δ:

    W_i = (1/N_i) · mean_x ‖F_i(x + δ) − F_i(x)‖₂                          (CLAT Eq. 5)
    C_i = W_i / W_{i−1}                                                     (CLAT Eq. 6)

The paper approximates the per-layer sup over δ by the single output attack, so the whole
ranking costs one PGD plus "two forward passes". Because both passes run in eval mode (BN
with running statistics: every example is processed independently), they are done here as one
forward pass of the concatenated batch [x; x+δ], and each hook reduces its layer's output to
the per-example distances at once, so no feature map is kept (a DenseNet-121 batch of 128
would otherwise hold >1 GB of features).

Open points of the paper, each a named option (spec §1.8):

* A2 ``tap``: ``"module"`` — the raw conv/linear output (default); ``"bn"`` — the output of the
  BatchNorm applied directly to it (falls back to the raw output when there is none).
* A3 ``first``: the paper sets C_1 = W_1, which is on another scale than the ratios (W_1 carries
  1/N_1); ``"input"`` (default) uses W_0 = (1/N_0)·mean‖δ‖₂ of the input and C_1 = W_1/W_0;
  ``"literal"`` is C_1 = W_1 as printed. Both values are always recorded.
* A15 ``ratio``: ``"previous"`` — W_{i−1} of the previous candidate in the numbering (default,
  the paper's formula); ``"own_input"`` — the weakness of the layer's own input tensor, a true
  per-layer amplification ratio in branched networks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from robustft.attacks import eval_mode, pgd
from robustft.clat.layers import candidate_layers, following_batchnorm
from robustft.models.cifar import CIFAR_ARCHS

TAPS = ("module", "bn")
FIRSTS = ("input", "literal")
RATIOS = ("previous", "own_input")
_TINY = 1e-30

#: CLAT Sec. 4.1: the number of critical layers per architecture (≈5 % of the layers), keyed
#: by the paper's name of the architecture (``CifarArch.paper_name``). PreAct RN18's k is not
#: stated in the paper; 1 as for RN18 (spec §1.3).
PAPER_K: dict[str, int] = {
    "RN18": 1,
    "RN50": 3,
    "WRN34-10": 2,
    "VGG19": 1,
    "WRN70-16": 4,
    "DN121": 5,
    "PreActRN18": 1,
}


def default_k(model: nn.Module) -> int:
    """CLAT's k for the model's architecture (:data:`PAPER_K` of its paper name), else 1."""
    spec = CIFAR_ARCHS.get(getattr(model, "arch", ""))
    return PAPER_K.get(spec.paper_name, 1) if spec is not None else 1


def tap_modules(
    model: nn.Module, names: Sequence[str], tap: str = "module", example: torch.Tensor | None = None
) -> list[nn.Module]:
    """The module whose output represents each named candidate layer (spec A2)."""
    if tap not in TAPS:
        raise ValueError(f"tap must be one of {TAPS}, got {tap!r}")
    layers = dict(candidate_layers(model))
    modules = [layers[n] for n in names]
    if tap == "module":
        return modules
    if example is None:
        p = next(model.parameters())
        example = torch.zeros(2, 3, 32, 32, device=p.device, dtype=p.dtype)
    bns = following_batchnorm(model, example)
    return [bns.get(n, m) for n, m in zip(names, modules)]


class _Stop(Exception):
    """Raised from a hook once every requested feature is captured (skips the rest)."""


class FeatureTap:
    """Reads the outputs F_i of chosen modules during a forward pass of ``model``.

    ``run(x)`` returns ``(logits, [F_i(x), ...])``; with ``stop_early=True`` the forward pass
    is abandoned once the last requested module has run (``logits`` is then ``None``), which
    makes CLAT's feature-space attack cheaper when the critical layers are early. Hooks exist
    only during a call, so the model is never left modified.
    """

    def __init__(self, model: nn.Module, modules: Sequence[nn.Module]) -> None:
        self.model = model
        self.modules = list(modules)

    def run(
        self, x: torch.Tensor, *, stop_early: bool = False
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        captured: dict[int, torch.Tensor] = {}
        n = len(self.modules)

        def make(i: int):
            def hook(_module, _inputs, output):
                captured.setdefault(i, output)
                if stop_early and len(captured) == n:
                    raise _Stop

            return hook

        handles = [m.register_forward_hook(make(i)) for i, m in enumerate(self.modules)]
        logits = None
        try:
            logits = self.model(x)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [i for i in range(n) if i not in captured]
        if missing:
            raise RuntimeError(f"modules {missing} were not called in the forward pass")
        return logits, [captured[i] for i in range(n)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.run(x, stop_early=True)[1]


@dataclass
class Criticality:
    """Weakness and criticality of every candidate layer (index 0 = CLAT layer 1)."""

    names: list[str]
    weakness: list[float]  # W_i, CLAT Eq. 5
    criticality: list[float]  # C_i under the chosen options, CLAT Eq. 6
    input_weakness: float  # W_0 = (1/N_0) mean ‖δ‖₂
    first_literal: float  # the paper's C_1 = W_1
    options: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    examples: int = 0

    def ranking(self) -> list[int]:
        """1-based layer numbers, most critical first (ties: lower number first)."""
        order = sorted(range(len(self.criticality)), key=lambda i: (-self.criticality[i], i))
        return [i + 1 for i in order]

    def top(self, k: int) -> list[int]:
        return self.ranking()[:k]

    def as_dict(self) -> dict:
        return {
            "names": list(self.names),
            "weakness": list(self.weakness),
            "criticality": list(self.criticality),
            "input_weakness": self.input_weakness,
            "first_literal": self.first_literal,
            "options": dict(self.options),
            "seconds": self.seconds,
            "examples": self.examples,
        }


def _distance(out: torch.Tensor, n: int) -> tuple[float, int]:
    """Σ over examples of ‖second half − first half‖₂ (per-example flattened), and N_i."""
    clean, adv = out[:n], out[n:]
    return float((adv - clean).flatten(1).norm(dim=1).sum()), clean[0].numel()


def layer_criticality(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    tap: str = "module",
    first: str = "input",
    ratio: str = "previous",
    include_head: bool = True,
    batch_size: int | None = None,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Criticality:
    """W_i and C_i of every candidate layer on the batch ``(x, y)`` (CLAT Eq. 5-6).

    δ is an untargeted CE-PGD on the model output (ε, step, steps, random start; CLAT Sec. 3.1),
    crafted and measured in eval mode (spec A10/A11). ``batch_size`` splits large batches (the
    distances are summed over chunks, so the result does not depend on it); ``attack(x, y)``
    replaces the PGD (tests).
    """
    if first not in FIRSTS:
        raise ValueError(f"first must be one of {FIRSTS}, got {first!r}")
    if ratio not in RATIOS:
        raise ValueError(f"ratio must be one of {RATIOS}, got {ratio!r}")
    started = time.perf_counter()
    layers = candidate_layers(model)
    if not include_head:
        head = getattr(model, "head", None)
        layers = [(n, m) for n, m in layers if m is not head]
    names = [n for n, _ in layers]
    modules = tap_modules(model, names, tap, example=x[:2])
    L = len(names)
    out_sum = [0.0] * L
    in_sum = [0.0] * L
    out_dim = [0] * L
    in_dim = [0] * L
    delta_sum, n_total = 0.0, 0
    chunk = batch_size or len(y)
    with eval_mode(model):
        for s in range(0, len(y), chunk):
            xb, yb = x[s : s + chunk], y[s : s + chunk]
            if attack is not None:
                xa = attack(xb, yb)
            else:
                xa = pgd(
                    model,
                    xb,
                    yb,
                    eps=eps,
                    step=step,
                    steps=steps,
                    random_start=random_start,
                    generator=generator,
                )
            n = len(yb)
            handles = []
            for i, (m, (_, layer)) in enumerate(zip(modules, layers)):

                def out_hook(_m, _inp, out, i=i, n=n):
                    d, dim = _distance(out, n)
                    out_sum[i] += d
                    out_dim[i] = dim

                handles.append(m.register_forward_hook(out_hook))
                if ratio == "own_input":

                    def in_hook(_m, inputs, i=i, n=n):
                        d, dim = _distance(inputs[0], n)
                        in_sum[i] += d
                        in_dim[i] = dim

                    handles.append(layer.register_forward_pre_hook(in_hook))
            try:
                with torch.no_grad():
                    model(torch.cat([xb, xa]))
            finally:
                for h in handles:
                    h.remove()
            d0, dim0 = _distance(torch.cat([xb, xa]), n)
            delta_sum += d0
            n_total += n
    weakness = [out_sum[i] / n_total / out_dim[i] for i in range(L)]  # CLAT Eq. 5
    w0 = delta_sum / n_total / dim0
    crit = []
    for i in range(L):  # CLAT Eq. 6
        if ratio == "own_input":
            denom = in_sum[i] / n_total / in_dim[i]
        elif i == 0:
            denom = w0 if first == "input" else 1.0
        else:
            denom = weakness[i - 1]
        crit.append(weakness[i] / max(denom, _TINY))
    if first == "literal":
        crit[0] = weakness[0]
    return Criticality(
        names=names,
        weakness=weakness,
        criticality=crit,
        input_weakness=w0,
        first_literal=weakness[0],
        options={"tap": tap, "first": first, "ratio": ratio},
        seconds=time.perf_counter() - started,
        examples=n_total,
    )
