"""A contract every registered method keeps when it runs through the real training loop.

The pieces of each method are tested against their papers and reference code elsewhere; this
file tests the seams between a method, the data and the loop, for *every* entry of the
registry (a new method is covered the moment it is registered):

* the loss is finite;
* only the parameters the method declares trainable change in an epoch, and some do;
* the frozen branch of a dual BatchNorm keeps its pretrained statistics;
* every class reaches every branch/half the method trains (the dataset is stored sorted by
  class, as the prepared splits are; a batch that stays sorted sends the first classes to
  TWINS' frozen half and the last ones to its adaptive half);
* a run killed between epochs and started again ends with bit-identical weights and log.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustft.methods import METHODS
from robustft.models import DualBatchNorm2d
from robustft.train import TrainConfig, Trainer

CLASSES, PER_CLASS, RES = 4, 16, 16
ATTACK = {"eps": 8 / 255, "step": 4 / 255, "steps": 1, "random_start": True}
#: Only to keep each method cheap on a 64-image dataset; the contract itself is generic.
CHEAP = {
    "rift": {"mrc_examples": 16, "mrc_batch_size": 16, "mrc_epochs": 1, "alphas": 2},
    "clat": {"criticality_examples": 16, "calibration_batches": 1, "reselect_every": 1},
    "autolora": {"rank": 2},
    "lora_ft": {"rank": 2},
}


def method_params(name: str) -> dict:
    base = METHODS[name]
    for parent in base.__mro__:  # CLAT's variants share CLAT's knobs
        if getattr(parent, "name", None) in CHEAP:
            return {k: v for k, v in CHEAP[parent.name].items() if k in base.defaults}
    return {}


def write_class_sorted_dataset(root: Path) -> Path:
    """Each image is one grey level that encodes its class, stored sorted by class.

    The level ``(c + 0.5) / CLASSES`` survives an 8/255 perturbation, so the class of any
    input a model sees (clean or adversarial) can be read back from its mean.
    """
    root.mkdir(parents=True)
    counts = {}
    for split, per in (("train", PER_CLASS), ("val", 4), ("test", 4)):
        y = np.repeat(np.arange(CLASSES), per)
        x = np.repeat(((y + 0.5) / CLASSES * 255).round().astype(np.uint8), RES * RES * 3)
        np.save(root / f"{split}_x.npy", x.reshape(len(y), RES, RES, 3))
        np.save(root / f"{split}_y.npy", y.astype(np.int64))
        counts[split] = len(y)
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "name": "sorted",
                "num_classes": CLASSES,
                "classes": [str(c) for c in range(CLASSES)],
                "resolution": RES,
                "counts": counts,
                "split_seed": 0,
            }
        )
    )
    return root


def config(name: str, epochs: int = 2) -> TrainConfig:
    needs_branches = bool(METHODS[name](**method_params(name)).model_kwargs())
    return TrainConfig(
        run_name=f"contract/{name}",
        method=name,
        method_params=method_params(name),
        # LoRA and dual-BN methods adapt the ImageNet-style ResNet; the rest train CIFAR nets
        arch="resnet_mini" if needs_branches else "cifar_resnet18",
        width=4,
        seed=0,
        epochs=epochs,
        batch_size=16,
        lr=0.05,
        augment="none",
        train_attack=ATTACK,
        eval_attack={**ATTACK, "random_start": False},
        lr_schedule={"type": "multistep", "milestones": [1], "factor": 0.5},
    )


@pytest.fixture(scope="module")
def sorted_data(tmp_path_factory) -> Path:
    return write_class_sorted_dataset(tmp_path_factory.mktemp("contract") / "data")


TOLIST = torch.Tensor.tolist


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_keeps_the_training_contract(name, sorted_data, tmp_path, monkeypatch):
    trainer = Trainer(config(name), sorted_data, None, tmp_path / "ck")
    model = trainer.model
    branches: dict[tuple, set[int]] = {}

    def record(module, args, kwargs):
        if module.training:  # the loss's forward passes (attacks and probes run in eval mode)
            key = (bool(kwargs.get("lora", False)), kwargs.get("bn", "adaptive"))
            classes = (args[0].detach().flatten(1).mean(1) * CLASSES).floor().long()
            # the test's own read of the batch, not counted as the step's (host_reads below)
            branches.setdefault(key, set()).update(TOLIST(classes.clamp(0, CLASSES - 1)))

    model.register_forward_pre_hook(record, with_kwargs=True)
    frozen_stats = {
        n: (m.frozen_mean.clone(), m.frozen_var.clone())
        for n, m in model.named_modules()
        if isinstance(m, DualBatchNorm2d)
    }
    names = {id(p): n for n, p in model.named_parameters()}
    changed_outside: dict[int, list[str]] = {}
    changed_any: dict[int, int] = {}
    original_run, original_end = Trainer.run_epoch, Trainer.end_epoch
    before: dict[str, torch.Tensor] = {}

    def run_epoch(self, epoch):
        before.clear()
        before.update({n: p.detach().clone() for n, p in self.model.named_parameters()})
        return original_run(self, epoch)

    def end_epoch(self, epoch, row):  # right after the epoch's last optimiser step
        declared = {names[id(p)] for p in self.params}
        changed = [n for n, p in self.model.named_parameters() if not torch.equal(p, before[n])]
        changed_outside[epoch] = sorted(set(changed) - declared)
        changed_any[epoch] = len(changed)
        return original_end(self, epoch, row)

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    monkeypatch.setattr(Trainer, "end_epoch", end_epoch)
    host_reads: set[str] = set()
    original_loss = trainer.method.batch_loss

    def batch_loss(*args, **kwargs):  # a tensor read on the host waits for the GPU every step
        with pytest.MonkeyPatch.context() as reads:
            for read in ("item", "tolist", "__float__", "__int__", "__bool__"):
                original = getattr(torch.Tensor, read)

                def spy(tensor, *a, _read=read, _original=original):
                    host_reads.add(_read)
                    return _original(tensor, *a)

                reads.setattr(torch.Tensor, read, spy)
            return original_loss(*args, **kwargs)

    monkeypatch.setattr(trainer.method, "batch_loss", batch_loss)
    rows = trainer.fit()
    assert not host_reads, f"{name}: a training step reads tensors on the host: {host_reads}"

    assert all(math.isfinite(r["loss"]) for r in rows), [r["loss"] for r in rows]
    for epoch, count in changed_any.items():
        assert count > 0, f"{name}: epoch {epoch} changed no parameter"
        assert not changed_outside[epoch], (
            f"{name}: epoch {epoch} changed parameters it does not declare trainable: "
            f"{changed_outside[epoch][:5]}"
        )
    for bn_name, (mean, var) in frozen_stats.items():
        module = dict(model.named_modules())[bn_name]
        assert torch.equal(module.frozen_mean, mean) and torch.equal(module.frozen_var, var), (
            f"{name}: the frozen BN branch {bn_name} changed its statistics"
        )
    assert branches, f"{name}: no training forward pass was observed"
    for key, seen in branches.items():
        assert seen == set(range(CLASSES)), (
            f"{name}: branch lora={key[0]} bn={key[1]} saw classes {sorted(seen)} only"
        )


class Killed(Exception):
    pass


@pytest.mark.parametrize("name", sorted(METHODS))
def test_resumed_run_is_bit_identical(name, sorted_data, tmp_path, monkeypatch):
    whole = Trainer(config(name), sorted_data, None, tmp_path / "whole")
    rows = whole.fit()
    original = Trainer.run_epoch

    def killed(self, epoch):
        if epoch == 1:
            raise Killed
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "run_epoch", killed)
    with pytest.raises(Killed):
        Trainer(config(name), sorted_data, None, tmp_path / "parts").fit()
    monkeypatch.setattr(Trainer, "run_epoch", original)
    resumed = Trainer(config(name), sorted_data, None, tmp_path / "parts")
    rows_resumed = resumed.fit()
    assert resumed.start_epoch == 1, f"{name}: did not resume"

    def strip(rs):  # repr: NaN (an undefined statistic) equals NaN
        return repr(
            [{k: v for k, v in r.items() if k != "seconds" and "seconds" not in k} for r in rs]
        )

    assert strip(rows_resumed) == strip(rows)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), f"{name}: {key} differs"
