"""CLAT's layer numbering: which modules are "layer i" and what "the layer's parameters" are.

Owns the numbering of CLAT spec §1.2 (Ambiguities A1, A14) and A6, for any ``nn.Module``
(the CIFAR architectures of :mod:`robustft.models.cifar` keep their reference module names, so
the numbers mean the same modules as in the paper):

* :func:`candidate_layers` — every ``nn.Conv2d`` in definition (= forward) order except 1×1
  projection shortcuts, then the final linear classifier; CLAT's index ``i`` is position ``i``
  (1-based). On ResNet-18 this makes layer 11 ``layer3.0.conv2`` (589,824 weights, CLAT
  Table 6's "590K");
* :func:`layer_index` — qualified module name → CLAT's layer number;
* :func:`following_batchnorm` — the BatchNorm applied directly to a layer's output (A2's ``bn``
  tap, A6's γ/β);
* :func:`layer_parameters` — the trainable parameters of chosen layers (CLAT Sec. 3.2: only
  the critical layers train).

It lives with CLAT, not with the models, because only CLAT (and its criticality measurement)
numbers layers; the models know nothing of it (``robustft.models`` never imports
``robustft.clat``, which sits above it).
"""

from __future__ import annotations

import torch
from torch import nn

#: name fragments of projection shortcuts, which the numbering skips (spec §1.2)
SHORTCUT_MARKERS = ("shortcut", "downsample")
#: module-name components of squeeze-excitation gates (RobustBench's RaWRN-70-16, Peng et al.
#: 2023), whose two 1×1 convs are skipped like the shortcuts: side branches that rescale a
#: block's output, not a stage of the main path
SIDE_BRANCH_COMPONENTS = ("se",)


def _numbered(name: str) -> bool:
    """Is the conv at qualified ``name`` on the main path (not a shortcut or an SE gate)?"""
    if any(marker in name.lower() for marker in SHORTCUT_MARKERS):
        return False
    return not set(name.split(".")) & set(SIDE_BRANCH_COMPONENTS)


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """CLAT's numbered layers: ``[(qualified name, module), ...]``, index 0 = CLAT layer 1.

    Spec §1.2 / A1, A14: every ``nn.Conv2d`` in definition order (= forward order for all the
    models here) except 1×1 projection shortcuts (modules whose name contains ``shortcut`` or
    ``downsample``) and squeeze-excitation gates (a name component ``se``), followed by the
    final linear classifier (``model.head`` when present, else the last ``nn.Linear``).

    On RobustBench's WRN-70-16 models this gives 68 layers for DeepMind's WideResNet-70-16
    (``init_conv``, 33 blocks × 2 convs, ``logits``: Gowal et al. 2020, Rebuffi et al. 2021,
    Wang et al. 2023 — the robust bases of Bai et al.) and 144 for Peng et al.'s RaWRN-70-16
    (``init_conv``, 71 blocks × 2, ``logits``); CLAT Table 3's WRN70-16 indices (1-62) are in
    range for both, and k = 4 of 68 is the paper's "≈5% of layers". A model class may define its own ``candidate_layers()`` method
    returning the same kind of list, which then wins (used by toy networks in tests).
    """
    if callable(getattr(type(model), "candidate_layers", None)):
        return model.candidate_layers()
    convs: list[tuple[str, nn.Module]] = []
    linears: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if not _numbered(name):
                continue
            # a LoRA wrapper's inner conv is reached through the wrapper's name
            convs.append((name, m))
        elif isinstance(m, nn.Linear):
            linears.append((name, m))
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        final = [(n, m) for n, m in linears if m is head]
    else:
        final = linears[-1:]
    return convs + final


def layer_index(model: nn.Module) -> dict[str, int]:
    """Qualified module name → CLAT's 1-based layer number."""
    return {name: i + 1 for i, (name, _) in enumerate(candidate_layers(model))}


def following_batchnorm(model: nn.Module, example: torch.Tensor) -> dict[str, nn.BatchNorm2d]:
    """For each candidate layer, the BatchNorm applied *directly* to its output, if any.

    Found by tracing one forward pass of ``example``: a BN follows a layer when its input tensor
    is that layer's output tensor itself. This is the BN of post-activation nets (ResNet, VGG);
    pre-activation convs (PreAct, WRN, DenseNet) feed an addition or concatenation, so they have
    none. Used for "the layer's parameters" = conv weight + its BN's γ/β (CLAT spec A6).
    """
    outputs: dict[int, str] = {}
    found: dict[str, nn.BatchNorm2d] = {}
    handles = []
    names = dict(candidate_layers(model))
    for name, m in names.items():
        handles.append(
            m.register_forward_hook(
                lambda _m, _i, out, name=name: outputs.__setitem__(id(out), name)
            )
        )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):

            def pre(bn, inputs):
                owner = outputs.get(id(inputs[0]))
                if owner is not None and owner not in found:
                    found[owner] = bn

            handles.append(m.register_forward_pre_hook(pre))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found


def layer_parameters(
    model: nn.Module,
    names: list[str],
    *,
    include_bn: bool = True,
    example: torch.Tensor | None = None,
) -> list[nn.Parameter]:
    """The trainable parameters of the named candidate layers (CLAT spec A6).

    Each layer contributes its own weight (and bias); with ``include_bn`` also the γ/β of the
    BatchNorm applied directly to its output (found with :func:`following_batchnorm` on
    ``example``, default a 2×3×32×32 zero batch).
    """
    modules = dict(candidate_layers(model))
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"not candidate layers: {unknown}")
    params: list[nn.Parameter] = []
    bns = {}
    if include_bn:
        if example is None:
            p = next(model.parameters())
            example = torch.zeros(2, 3, 32, 32, device=p.device, dtype=p.dtype)
        bns = following_batchnorm(model, example)
    seen: set[int] = set()
    for name in names:
        group = list(modules[name].parameters())
        if name in bns:
            group += list(bns[name].parameters())
        for p in group:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


__all__ = [
    "SHORTCUT_MARKERS",
    "SIDE_BRANCH_COMPONENTS",
    "candidate_layers",
    "following_batchnorm",
    "layer_index",
    "layer_parameters",
]
