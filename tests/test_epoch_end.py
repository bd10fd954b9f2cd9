"""What happens after an epoch, in the paper's and in the official AutoLoRa code's order.

Official loop (spec §4-§5, §7): train → SA for λ on the training set → val PGD → best-val copy →
LR check, halve and reload the best-val weights → test evaluation → best-test selection.
Paper (Algorithm 1): train → val and test evaluation → selection → halve and reload → the next
epoch measures SA on the reloaded weights.
"""

from __future__ import annotations

import pytest
import torch

from robustft.methods.autolora import AutoLoRa
from robustft.train import TrainConfig, Trainer

ATTACK = {"eps": 8 / 255, "step": 4 / 255, "steps": 1, "random_start": True}


def autolora_config(order: str, measured: str) -> TrainConfig:
    return TrainConfig(
        run_name="tiny/autolora",
        method="autolora",
        arch="resnet_mini",
        width=4,
        seed=0,
        epochs=3,
        batch_size=12,
        lr=0.01,
        train_attack=ATTACK,
        eval_attack={**ATTACK, "random_start": False},
        epoch_end_order=order,
        method_params={"lambda_measured": measured},
        lr_schedule={"type": "auto", "variant": "official", "every": 1, "min_lr": 1e-5},
    )


def record_epoch_end(monkeypatch, trainer: Trainer):
    """Events of the epoch end, and the weights each test evaluation saw."""
    events: list[str] = []
    test_weights: dict[int, dict[str, torch.Tensor]] = {}
    trained: dict[int, dict[str, torch.Tensor]] = {}
    scripted = iter([0.5, 0.4, 0.6])  # epoch 1 is worse: 0 of 1 increases → halve + reload
    epoch = {"now": 0}

    def evaluate_split(self, name):
        events.append(f"eval_{name}")
        if name == "test":
            test_weights[epoch["now"]] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return {f"{name}_nat_acc": 0.0, f"{name}_pgd_acc": next(scripted) if name == "val" else 0.0}

    def wrap(owner, name, label, before=None):
        original = getattr(owner, name)

        def spy(self, *args, **kwargs):
            if before:
                before(self, *args)
            events.append(label)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, spy)

    def last_batch_done(self, model, ctx):
        epoch["now"] = ctx.epoch
        trained[ctx.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    monkeypatch.setattr(Trainer, "evaluate_split", evaluate_split)
    wrap(AutoLoRa, "end_epoch", "trained", before=last_batch_done)
    wrap(Trainer, "_select", "select")
    wrap(Trainer, "_track_best_val", "best_val")
    wrap(AutoLoRa, "_update_lambdas", "measure_sa")
    original_load = trainer.model.load_state_dict

    def reload(state, *args, **kwargs):
        events.append("reload")
        return original_load(state, *args, **kwargs)

    monkeypatch.setattr(trainer.model, "load_state_dict", reload)
    return events, test_weights, trained


def epoch_events(events: list[str], epoch: int) -> list[str]:
    """The events from the end of ``epoch``'s training to the end of the next epoch's start."""
    starts = [i for i, e in enumerate(events) if e == "trained"]
    stop = starts[epoch + 1] if epoch + 1 < len(starts) else len(events)
    return events[starts[epoch] : stop]


def test_official_order_measures_before_and_tests_after_the_reload(
    monkeypatch, tmp_path, tiny_data, tiny_backbone
):
    trainer = Trainer(
        autolora_config("official", "epoch_end"), tiny_data, tiny_backbone, tmp_path / "ck"
    )
    events, test_weights, trained = record_epoch_end(monkeypatch, trainer)
    rows = trainer.fit()
    assert events[0] == "measure_sa"  # once before the first epoch, as the official script
    assert epoch_events(events, 1) == [
        "trained",
        "measure_sa",
        "eval_val",
        "best_val",
        "reload",
        "eval_test",
        "select",
    ]
    assert "condition 1" in rows[1]["lr_event"]
    # epoch 1's test row is of the reloaded (epoch 0) weights, which the official run evaluates
    assert all(torch.equal(test_weights[1][k], trained[0][k]) for k in trained[0])
    assert not all(torch.equal(test_weights[1][k], trained[1][k]) for k in trained[1])
    # the λ of epoch 2 came from the weights trained in epoch 1 (before the reload)
    assert rows[2]["lambda1"] == pytest.approx(1 - rows[2]["lora_train_sa"])


def test_paper_order_tests_before_and_measures_after_the_reload(
    monkeypatch, tmp_path, tiny_data, tiny_backbone
):
    trainer = Trainer(
        autolora_config("paper", "epoch_start"), tiny_data, tiny_backbone, tmp_path / "ck"
    )
    events, test_weights, trained = record_epoch_end(monkeypatch, trainer)
    trainer.fit()
    assert epoch_events(events, 1) == [
        "trained",
        "eval_val",
        "eval_test",
        "select",
        "best_val",
        "reload",
        "measure_sa",
    ]
    assert all(torch.equal(test_weights[1][k], trained[1][k]) for k in trained[1])


class Killed(Exception):
    pass


@pytest.mark.parametrize("order", ["paper", "official"])
def test_both_orders_resume_bit_identically(monkeypatch, tmp_path, tiny_data, tiny_backbone, order):
    """Killed at the start of epoch 2 (after the reload epoch), started again: same run."""
    measured = "epoch_end" if order == "official" else "epoch_start"
    whole = Trainer(autolora_config(order, measured), tiny_data, tiny_backbone, tmp_path / "a")
    rows = whole.fit()
    original = Trainer.run_epoch

    def killed_at_2(self, epoch):
        if epoch == 2:
            raise Killed
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "run_epoch", killed_at_2)
    with pytest.raises(Killed):
        Trainer(autolora_config(order, measured), tiny_data, tiny_backbone, tmp_path / "b").fit()
    monkeypatch.setattr(Trainer, "run_epoch", original)
    resumed = Trainer(autolora_config(order, measured), tiny_data, tiny_backbone, tmp_path / "b")
    assert resumed.try_resume() and resumed.start_epoch == 2
    resumed = Trainer(autolora_config(order, measured), tiny_data, tiny_backbone, tmp_path / "b")
    rows_resumed = resumed.fit()

    def strip(rs):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rs]

    assert repr(strip(rows_resumed)) == repr(strip(rows))  # repr: NaN equals NaN
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_unknown_order_is_named(tmp_path, tiny_data, tiny_backbone):
    trainer = Trainer(
        autolora_config("backwards", "epoch_end"), tiny_data, tiny_backbone, tmp_path / "ck"
    )
    with pytest.raises(ValueError, match="epoch_end_order must be 'paper' or 'official'"):
        trainer.fit()
