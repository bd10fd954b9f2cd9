"""``model_best.pt`` describes its own model: later steps rebuild it without the training config."""

from __future__ import annotations

import pytest
import torch

from robustft.evaluate import load_trained
from robustft.models.checkpoint import CheckpointError, load_model
from robustft.train import TrainConfig, train_run

ATTACK = {"eps": 8 / 255, "step": 4 / 255, "steps": 1, "random_start": True}


def trained(tmp_path, tiny_data, tiny_backbone, method, **params):
    cfg = TrainConfig(
        run_name=f"tiny/{method}",
        method=method,
        arch="resnet_mini",
        width=4,
        seed=0,
        epochs=1,
        batch_size=12,
        train_attack=ATTACK,
        eval_attack={**ATTACK, "random_start": False},
        method_params=params,
    )
    train_run(cfg, tiny_data, tiny_backbone, tmp_path / "ck", tmp_path / "out")
    return tmp_path / "out" / "model_best.pt", cfg


@pytest.mark.parametrize(
    ("method", "params"), [("autolora", {"rank": 2}), ("twins", {"dual_bn": "official"})]
)
def test_model_file_rebuilds_lora_and_dual_bn_models(
    tmp_path, tiny_data, tiny_backbone, method, params
):
    path, cfg = trained(tmp_path, tiny_data, tiny_backbone, method, **params)
    model, extra = load_model(path)
    payload = torch.load(path, weights_only=True)
    assert payload["model"]["method"] == method and payload["model"]["num_classes"] == 3
    assert extra["best_epoch"] == 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key])
    # the settings passed by a step no longer decide the architecture
    wrong = {**cfg.__dict__, "arch": "resnet18", "method": "vanilla_rft", "method_params": {}}
    rebuilt = load_trained(wrong, path, tiny_data, torch.device("cpu"))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(rebuilt(x), model.eval()(x))


def test_file_without_a_description_is_named(tmp_path, tiny_data, tiny_backbone):
    path, cfg = trained(tmp_path, tiny_data, tiny_backbone, "vanilla_rft")
    payload = torch.load(path, weights_only=True)
    del payload["model"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not describe its model"):
        load_model(path)
    # evaluation of such an older file still works from the run's settings
    assert load_trained(cfg.__dict__, path, tiny_data, torch.device("cpu")) is not None
