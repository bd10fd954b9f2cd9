"""Reduced precision and channels_last, for every registered method (issue 9).

Each method trains one epoch (4 steps) on the class-sorted dataset of ``test_method_contract``
twice from the same initial weights and generator: in fp32/NCHW and in bf16 autocast with
channels_last (the settings of the ``paper_bf16`` fidelity). The bf16 run must really run in
bf16 and channels_last (observed inside the model), the model must still receive NCHW inputs
(attacks read their gradients in that layout), every statistic must be finite, and the epoch's
mean loss must stay within ``LOSS_RTOL`` (relative) of fp32's.

Why a loss tolerance and not a gradient one: bf16 keeps 8 significant bits. On these
randomly initialised width-4 networks the first step's parameter gradient of a *plain* pass in
bf16 already has cosine ≈ 0.92 with fp32's; PGD then takes the sign of a rounded input gradient
(≈ 7 % of the signs flip), and AWP normalises its weight perturbation per layer, so one-step
gradients of adversarial methods differ a lot (measured cosines 0.6 for PGD-AT, below 0 for AWP)
while the losses they reach stay close (measured ≤ 6 % apart over an epoch). A broken
precision path (NaN, no training, a dtype fed wrongly to a loss) misses the 10 % bound by far;
``test_channels_last_keeps_the_input_gradient_nchw`` checks the layout change exactly in fp32.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from test_method_contract import config, write_class_sorted_dataset

from robustft import precision
from robustft.methods import METHODS
from robustft.train import Trainer

LOSS_RTOL = 0.1


@pytest.fixture(scope="module")
def sorted_data(tmp_path_factory):
    return write_class_sorted_dataset(tmp_path_factory.mktemp("precision") / "data")


def _train(name, data, directory, **speed):
    """One epoch of ``name``: its log row and what the model saw (dtype and layout inside,
    layout at its entry)."""
    cfg = dataclasses.replace(config(name, epochs=1), **speed)
    trainer = Trainer(cfg, data, None, directory)
    seen = {"dtypes": set(), "channels_last": set(), "entry_nchw": set()}

    def inside(module, args):  # the first conv: after the model's preprocessing
        seen["channels_last"].add(args[0].is_contiguous(memory_format=torch.channels_last))

    def entry(module, args, kwargs):  # what the method (and its attack) feeds the model
        seen["entry_nchw"].add(args[0].is_contiguous())

    def logits(module, args, output):  # the head's output dtype: bf16 under bf16 autocast
        seen["dtypes"].add(output.dtype)

    # (a forward hook on the conv itself crashes RiFT's MRC ascent in torch 2.x on CPU)
    precision._first_conv(trainer.model).register_forward_pre_hook(inside)
    trainer.model.register_forward_pre_hook(entry, with_kwargs=True)
    trainer.model.register_forward_hook(logits)
    return trainer.run_epoch(0), seen


@pytest.fixture(autouse=True)
def _native_convolutions():
    """oneDNN off in this file: with it, a run of these tests crashed the process by heap
    corruption inside oneDNN's convolution backward (``mkldnn_convolution_backward_weights``,
    seen under gdb; first in RiFT's fp32 weight-gradient ascent, later elsewhere, depending on
    heap layout). With the native kernels all runs pass; autocast and the layout change are
    what this file tests, not the CPU kernel library."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bf16_channels_last_tracks_fp32(name, sorted_data, tmp_path):
    ref, ref_seen = _train(name, sorted_data, tmp_path / "fp32")
    low, seen = _train(name, sorted_data, tmp_path / "bf16", precision="bf16", channels_last=True)
    assert ref_seen["dtypes"] == {torch.float32}
    assert torch.bfloat16 in seen["dtypes"], f"{name}: no conv ran in bf16 ({seen['dtypes']})"
    assert seen["channels_last"] == {True}, f"{name}: the network input is not channels_last"
    assert seen["entry_nchw"] == {True}, f"{name}: the model saw a non-NCHW input"
    terms = {k: v for k, v in low.items() if k.startswith(("loss", "train_"))}
    assert all(math.isfinite(v) for v in terms.values()), terms
    assert low["loss"] == pytest.approx(ref["loss"], rel=LOSS_RTOL), name


def test_channels_last_keeps_the_input_gradient_nchw():
    from robustft.models import build_model

    model = build_model("resnet_mini", 3, width=4, input_size=24).eval()
    precision.use_channels_last(model)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    model(x).sum().backward()
    assert x.grad.is_contiguous()  # PGD steps .view() the gradient
    reference = build_model("resnet_mini", 3, width=4, input_size=24).eval()
    reference.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


def test_fp16_off_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device.*bf16"):
        precision.check_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.check_precision("fp8", torch.device("cpu"))
    assert precision.grad_scaler("bf16", torch.device("cpu")) is None
