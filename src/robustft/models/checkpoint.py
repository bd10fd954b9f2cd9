"""Load and save feature-extractor (backbone) weights safely and completely.

Why this module is strict: the official code loads Salman et al. checkpoints with
``strict=False`` (spec section 1), so a renamed or missing tensor silently leaves a layer at its
random init. Here every conv weight and every BN tensor (weight, bias, running_mean,
running_var) of the feature extractor must be found with the right shape, otherwise
:class:`BackboneError` names the file and the offending tensors.

Accepted payloads (always read with ``torch.load(..., weights_only=True)`` so a checkpoint
cannot run code):

* robustness library (Salman et al. 2020): ``{"model" | "state_dict": {...}, "epoch": ...}``
  with keys ``module.model.<torchvision key>``; the ``module.attacker.model.`` duplicates and
  ``module.normalizer.*`` are ignored;
* a plain torchvision state dict (optionally ``module.``-prefixed from DataParallel);
* our own backbone file ``{"state_dict": ..., "arch": ..., "format": ...}`` from
  :func:`save_backbone`.

Keys are compared in torchvision ("canonical") naming; a LoRA-wrapped conv's weight lives at
``<name>.conv.weight`` in our model and is mapped to ``<name>.weight``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .lora import LoraConv2d

BACKBONE_FORMAT = "robustft-backbone-v1"
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
_ROBUSTNESS_PREFIX = "module.model."
_ROBUSTNESS_IGNORED = ("module.attacker.", "module.normalizer.")
_LORA_CONV_KEY = re.compile(r"\.conv\.(weight|bias)$")


class CheckpointError(ValueError):
    """A saved torch file (``model_best.pt``, ``last.pt``, a backbone) cannot be read."""


class BackboneError(CheckpointError):
    """A backbone file cannot be used: unreadable, unsafe, incomplete or mis-shaped."""


@dataclass(frozen=True)
class ModelSpec:
    """What a trained model *is*, stored inside its ``model_best.pt``.

    Later steps (evaluation, transfer, criticality, parameter counts) rebuild the model from
    this description and never from the training configuration, so they cannot disagree with
    the run about the architecture, the LoRA branch or the dual BatchNorm.
    """

    arch: str
    num_classes: int
    method: str
    width: int | None = None
    input_size: int | None = None
    lora: dict[str, Any] | None = None  # LoraConfig fields (AutoLoRa's LoRA branch)
    dual_bn: str | None = None  # TWINS' dual BatchNorm mode

    @classmethod
    def of(
        cls,
        arch: str,
        num_classes: int,
        method: str,
        *,
        width: int | None = None,
        input_size: int | None = None,
        lora: Any = None,
        dual_bn: str | None = None,
    ) -> ModelSpec:
        """From the arguments of :func:`robustft.models.build_model` (``lora`` a LoraConfig)."""
        return cls(
            arch=arch,
            num_classes=num_classes,
            method=method,
            width=width,
            input_size=input_size,
            lora=asdict(lora) if lora is not None else None,
            dual_bn=dual_bn,
        )

    def build(self) -> nn.Module:
        from . import LoraConfig, build_model

        lora = LoraConfig(**self.lora) if self.lora is not None else None
        return build_model(
            self.arch,
            self.num_classes,
            width=self.width,
            input_size=self.input_size,
            lora=lora,
            dual_bn=self.dual_bn,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_model(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", hint: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A self-describing model file (``model_best.pt``): the rebuilt model with its weights,
    and the file's other entries (best epoch, selection, finish record)."""
    hint = hint or RETRAIN_HINT
    return model_from_payload(
        load_torch_file(path, map_location=map_location, hint=hint), path, hint
    )


def model_from_payload(
    payload: Any, path: str | os.PathLike[str], hint: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_model` on an already loaded file (``path`` names it in errors)."""
    hint = hint or RETRAIN_HINT
    if not isinstance(payload, Mapping) or not isinstance(payload.get("model"), Mapping):
        raise CheckpointError(
            f"{path}: does not describe its model (no 'model' entry; written "
            f"by an older version of robustft?). {hint}"
        )
    try:
        spec = ModelSpec(**payload["model"])
        model = spec.build()
        model.load_state_dict(state_dict_of(payload, path, hint))
    except (TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(
            f"{path}: its weights do not fit the model it describes "
            f"({payload['model']}): {e}. {hint}"
        ) from e
    return model, {k: v for k, v in payload.items() if k not in ("state_dict", "model")}


#: what to do about an unreadable ``model_best.pt`` (the train rule's output)
RETRAIN_HINT = (
    "Delete it and re-run the training job that wrote it (the workflow re-runs the "
    "job when the file is missing; a finished run's checkpoints make that quick)."
)


def load_torch_file(
    path: str | os.PathLike[str],
    *,
    map_location: Any = "cpu",
    hint: str = RETRAIN_HINT,
    error: type[CheckpointError] = CheckpointError,
) -> Any:
    """``torch.load(path, weights_only=True)`` whose failures name ``path`` and say what to do.

    The one place every saved model or checkpoint of this project is read: torch's own errors
    for a truncated or garbled file ("PytorchStreamReader failed reading zip archive") do not
    say which file, and ``weights_only=True`` means a file cannot run code when it is read.
    A missing file still raises :class:`FileNotFoundError` (it names the path already).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError for unsafe payloads, RuntimeError for corrupt zips
        raise error(
            f"{path}: cannot be loaded with torch.load(weights_only=True): the file is corrupt "
            f"or incomplete, or not a plain tensor checkpoint ({type(e).__name__}: {e}). {hint}".rstrip()
        ) from e


def load_model_state(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", hint: str = RETRAIN_HINT
) -> dict[str, torch.Tensor]:
    """The state dict of a run's saved model: ``model_best.pt`` (``{"state_dict": ...,
    "best_epoch": ...}``) or a bare state dict (``best.pt`` / ``final.pt``)."""
    return state_dict_of(load_torch_file(path, map_location=map_location, hint=hint), path, hint)


def state_dict_of(
    payload: Any, path: str | os.PathLike[str], hint: str = RETRAIN_HINT
) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded model file (see :func:`load_model_state`)."""
    state = payload.get("state_dict", payload) if isinstance(payload, Mapping) else payload
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"{path}: holds no model state dict (a dict of tensors, or one "
            f"under 'state_dict'). {hint}"
        )
    return dict(state)


def _fe_tensors(model: nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    """canonical key -> (model tensor, required) for every conv and BN tensor of the FE.

    The head (``nn.Linear``), LoRA tensors and the frozen dual-BN branch are not part of a
    backbone file; ``num_batches_tracked`` is loaded when present but not required.
    """
    lora_names = {name for name, m in model.named_modules() if isinstance(m, LoraConv2d)}
    out: dict[str, tuple[torch.Tensor, bool]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            parent, _, leaf = name.rpartition(".")
            canon = parent if (leaf == "conv" and parent in lora_names) else name
            out[f"{canon}.weight"] = (m.weight, True)
            if m.bias is not None:
                out[f"{canon}.bias"] = (m.bias, True)
        elif isinstance(m, nn.BatchNorm2d):
            for t in _BN_TENSORS:
                out[f"{name}.{t}"] = (getattr(m, t), True)
            if m.num_batches_tracked is not None:
                out[f"{name}.num_batches_tracked"] = (m.num_batches_tracked, False)
    return out


def _read(path: Path) -> object:
    return load_torch_file(
        path,
        error=BackboneError,
        hint="Replace it with a valid backbone file (or delete it and "
        "re-run the fetch_backbone / pretrain_backbone job).",
    )


def _extract_state_dict(payload: object, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """Return (canonical torchvision-style state dict, declared arch or None)."""
    arch = None
    sd: object = payload
    if isinstance(payload, Mapping):
        arch = payload.get("arch") if isinstance(payload.get("arch"), str) else None
        for key in ("model", "state_dict"):
            if isinstance(payload.get(key), Mapping):
                sd = payload[key]
                break
    if not isinstance(sd, Mapping) or not sd:
        raise BackboneError(
            f"{path}: no state dict found (expected a dict of tensors, or one "
            f"under 'model' / 'state_dict')"
        )
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise BackboneError(f"{path}: the state dict contains no tensors")

    if any(k.startswith(_ROBUSTNESS_PREFIX) for k in tensors):
        tensors = {
            k[len(_ROBUSTNESS_PREFIX) :]: v
            for k, v in tensors.items()
            if k.startswith(_ROBUSTNESS_PREFIX)
        }
    else:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(_ROBUSTNESS_IGNORED)}
        for prefix in ("module.", "model."):
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    # Already LoRA-renamed files (official AutoLoRa): <name>.conv.weight -> <name>.weight
    return {_LORA_CONV_KEY.sub(r".\1", k): v for k, v in tensors.items()}, arch


def load_backbone(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Copy pretrained conv/BN tensors from ``path`` into ``model`` and sync the frozen BN.

    Raises :class:`BackboneError` (naming ``path``) if the payload is unsafe/unreadable, if any
    conv weight or BN tensor of the feature extractor is missing, or on shape mismatches;
    nothing is modified in that case. Returns ``{"loaded": [...], "ignored": [...]}``
    (canonical keys), e.g. to log that the ImageNet ``fc`` was ignored.
    """
    path = Path(path)
    state, arch = _extract_state_dict(_read(path), path)
    model_arch = getattr(model, "arch", None)
    if arch is not None and model_arch is not None and arch != model_arch:
        raise BackboneError(
            f"{path}: backbone was saved for arch {arch!r}, model is {model_arch!r}"
        )

    targets = _fe_tensors(model)
    missing = [k for k, (_, req) in targets.items() if req and k not in state]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(t.shape)}"
        for k, (t, _) in targets.items()
        if k in state and state[k].shape != t.shape
    ]
    if missing or mismatched:
        lines = [f"{path}: incompatible backbone for {model_arch or type(model).__name__}"]
        if missing:
            lines.append(f"missing {len(missing)} tensor(s): {', '.join(missing)}")
        if mismatched:
            lines.append(f"shape mismatch in {len(mismatched)} tensor(s): {'; '.join(mismatched)}")
        raise BackboneError("\n".join(lines))

    loaded = []
    with torch.no_grad():
        for k, (t, _) in targets.items():
            if k in state:
                t.copy_(state[k])
                loaded.append(k)
    sync = getattr(model, "sync_frozen_bn", None)
    if callable(sync):
        sync()
    ignored = sorted(set(state) - set(loaded))
    return {"loaded": loaded, "ignored": ignored}


def backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The FE's conv/BN tensors under canonical torchvision names (no head, LoRA, frozen BN)."""
    return {k: t.detach().clone() for k, (t, _) in _fe_tensors(model).items()}


def save_backbone(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the FE in canonical names atomically (``<path>.tmp`` then ``os.replace``)."""
    path = Path(path)
    payload = {
        "format": BACKBONE_FORMAT,
        "arch": getattr(model, "arch", None),
        "state_dict": backbone_state_dict(model),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
