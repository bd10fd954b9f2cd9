"""The one owner of numeric precision, memory layout and kernel choices of a training step.

Methods and attacks contain no precision code: the training loop (:mod:`robustft.train`) runs
each method's ``batch_loss`` (its training attack included, which is the point of fast training)
inside :func:`autocast`, and the evaluation (:mod:`robustft.evaluate`) does so only when its
settings ask for it.

Rules:

* ``fp32`` — no autocast. On CUDA, PyTorch already runs cuDNN convolutions in TF32 on Ampere or
  newer (``torch.backends.cudnn.allow_tf32`` defaults to True); matmuls stay full fp32
  (``torch.backends.cuda.matmul.allow_tf32`` defaults to False). We keep both defaults, so
  "fp32" means what it means in the official code run with a recent PyTorch.
* ``bf16`` — autocast to bfloat16 on CUDA and on the CPU (CPU autocast supports bf16, so every
  method's bf16 path is tested on CPU). No loss scaling: bf16 has fp32's exponent range.
* ``fp16`` — autocast to float16 with a :class:`torch.amp.GradScaler`, CUDA only. On another
  device it is an error naming the alternative (bf16), not a silent fallback: a run's recorded
  precision must be the one it ran in.
* Evaluation defaults to ``fp32``: a gradient attack (PGD, AutoAttack) in reduced precision
  follows rounded gradients and can find weaker adversarial examples, which over-states
  robustness. Ask for reduced precision there only knowingly; ``eval.json`` records it.

Layout: :func:`use_channels_last` converts the weights to ``channels_last`` and the input of the
model's first convolution, i.e. after the model's own preprocessing (upsampling, normalisation),
so attacks keep seeing and returning NCHW-contiguous images. ``cudnn.benchmark`` is switched on
for CUDA runs (:func:`configure_backends`): batch shapes are fixed except the short last batch
and the evaluation batches, each of which is tuned once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "PRECISIONS",
    "autocast",
    "channels_last_supported",
    "check_precision",
    "configure_backends",
    "grad_scaler",
    "maybe_compile",
    "use_channels_last",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a ValueError naming the problem if ``precision`` cannot run on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision fp16 needs a CUDA device (loss scaling), this run is on {device}; "
            "use precision: bf16 (autocast on CPU supports it) or fp32"
        )


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The autocast region of one step in ``precision`` (``fp32``: no autocast at all)."""
    check_precision(precision, device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA; ``None`` otherwise (bf16 and fp32 need none)."""
    check_precision(precision, device)
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def configure_backends(device: torch.device) -> None:
    """Kernel choices of a CUDA run: cudnn.benchmark on (fixed shapes); TF32 as PyTorch's
    defaults (see the module docstring). Nothing to do on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


class _ToChannelsLast(torch.autograd.Function):
    """``x`` in channels_last for the network, its gradient back in the caller's layout: the
    input gradient an attack reads stays NCHW-contiguous (PGD steps ``.view()`` it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _first_conv(model: nn.Module) -> nn.Module:
    """The first convolution in registration order (the stem of every architecture here); a
    LoRA-wrapped conv as its wrapper, which owns the forward call."""
    from robustft.models.lora import LoraConv2d

    for module in model.modules():
        if isinstance(module, nn.Conv2d | LoraConv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d: channels_last does not apply")


def channels_last_supported(device: torch.device) -> bool:
    """Whether channels_last is applied on ``device``.

    Not on the CPU while oneDNN is enabled: with torch 2.14.1 on the project's AMD EPYC
    machines, a plain fp32 forward+backward of ``resnet_mini`` (width 4) in channels_last,
    written with plain torch calls, corrupts the heap inside oneDNN's convolution backward
    (``corrupted size vs. prev_size``, or a hang); widths 8-64 ran, but a run must not depend
    on its channel count. channels_last is a GPU optimisation (tensor-core kernels); on
    the CPU the run stays NCHW and says so in its log and ``run.yaml``.
    """
    if device.type != "cpu":
        return True
    return not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def use_channels_last(model: nn.Module, device: torch.device | None = None) -> bool:
    """Switch ``model`` (in place) to channels_last after its preprocessing, for every
    architecture: weights in channels_last, and a pre-hook on the first convolution (the first
    layer after the model's upsampling/normalisation) converts its input. Idempotent. Returns
    whether it was applied (see :func:`channels_last_supported`)."""
    device = device or next(model.parameters()).device
    if not channels_last_supported(device):
        log.warning(
            "channels_last is not applied on %s with oneDNN enabled (see robustft.precision)",
            device,
        )
        return False
    model.to(memory_format=torch.channels_last)
    if not getattr(model, "_robustft_channels_last", False):
        conv = _first_conv(model)
        conv.register_forward_pre_hook(
            lambda _module, args: (_ToChannelsLast.apply(args[0]), *args[1:])
        )
        model._robustft_channels_last = True
    return True


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """Opt-in ``torch.compile`` in place (``nn.Module.compile``: the state_dict keys stay those
    of the eager model, so checkpoints and model files are unchanged)."""
    if enabled:
        model.compile()
    return model
