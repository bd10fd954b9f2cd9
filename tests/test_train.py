"""The shared training loop: determinism, resume, NaN handling, AutoLR reloads, outputs."""

from __future__ import annotations

import math

import pytest
import torch

from robustft.train import NonFiniteLossError, TrainConfig, Trainer, train_run

ATTACK = {"eps": 8 / 255, "step": 4 / 255, "steps": 2, "random_start": True}


def config(method="vanilla_rft", **kw):
    values = {
        "run_name": f"tiny/{method}",
        "method": method,
        "arch": "resnet_mini",
        "width": 4,
        "seed": 0,
        "epochs": 3,
        "batch_size": 12,
        "lr": 0.05,
        "train_attack": ATTACK,
        "eval_attack": {**ATTACK, "random_start": False},
        "grad_sim_batches": 1,
        "lr_schedule": {"type": "multistep", "milestones": [2], "factor": 0.1},
    }
    values.update(kw)
    return TrainConfig(**values)


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("method", ["vanilla_rft", "twins", "autolora"])
def test_each_method_trains_and_writes_outputs(tmp_path, tiny_data, tiny_backbone, method):
    rows = train_run(config(method), tiny_data, tiny_backbone, tmp_path / "ck", tmp_path / "out")
    assert len(rows) == 3
    assert (tmp_path / "out" / "model_best.pt").exists()
    header = (tmp_path / "out" / "train_log.csv").read_text().splitlines()[0].split(",")
    for column in ("epoch", "lr", "loss", "val_pgd_acc", "test_pgd_acc", "grad_sim"):
        assert column in header
    assert rows[2]["lr"] == pytest.approx(0.005)  # multistep ×0.1 at epoch 2
    assert all(math.isfinite(r["loss"]) for r in rows)
    if method == "autolora":
        assert {"lambda1", "lambda2"} <= set(rows[0])
        assert rows[0]["grad_sim"] == 0.0  # the natural term never reaches the FE (Eq. 5)
    else:
        assert -1.0 <= rows[0]["grad_sim"] <= 1.0


def test_deterministic_on_cpu(tmp_path, tiny_data, tiny_backbone):
    a = train_run(config(), tiny_data, tiny_backbone, tmp_path / "a", tmp_path / "oa")
    b = train_run(config(), tiny_data, tiny_backbone, tmp_path / "b", tmp_path / "ob")
    assert strip_time(a) == strip_time(b)


def test_resume_after_interruption_gives_identical_metrics(
    tmp_path, tiny_data, tiny_backbone, monkeypatch
):
    full = train_run(
        config("autolora"), tiny_data, tiny_backbone, tmp_path / "full", tmp_path / "o1"
    )
    trainer = Trainer(config("autolora"), tiny_data, tiny_backbone, tmp_path / "ck")
    original = Trainer.run_epoch

    def die_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "run_epoch", die_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(Trainer, "run_epoch", original)
    resumed = train_run(
        config("autolora"), tiny_data, tiny_backbone, tmp_path / "ck", tmp_path / "o2"
    )
    assert strip_time(resumed) == strip_time(full)
    saved = [
        torch.load(tmp_path / o / "model_best.pt", weights_only=True)["state_dict"]
        for o in ("o1", "o2")
    ]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])


def test_checkpoint_of_other_settings_is_kept_aside_not_resumed(tmp_path, tiny_data, tiny_backbone):
    train_run(config(epochs=1), tiny_data, tiny_backbone, tmp_path / "ck", tmp_path / "o")
    rows = train_run(
        config(epochs=1, lr=0.1), tiny_data, tiny_backbone, tmp_path / "ck", tmp_path / "o"
    )
    assert rows[0]["lr"] == 0.1  # trained afresh with the new settings
    assert len(list((tmp_path / "ck").glob("last.stale-*.pt"))) == 1


def test_nan_loss_stops_with_run_epoch_and_step(tmp_path, tiny_data, tiny_backbone, monkeypatch):
    from robustft.methods.vanilla_rft import VanillaRFT

    original = VanillaRFT.batch_loss
    calls = {"n": 0}

    def poisoned(self, model, x, y, ctx):
        out = original(self, model, x, y, ctx)
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 1, step 1 (3 batches per epoch)
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(VanillaRFT, "batch_loss", poisoned)
    with pytest.raises(
        NonFiniteLossError,
        match=r"run tiny/vanilla_rft: loss is nan at epoch 1 "
        r"step 1",
    ):
        train_run(config(), tiny_data, tiny_backbone, tmp_path / "ck", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_auto_lr_halves_and_reloads_best_validation_weights(
    tmp_path, tiny_data, tiny_backbone, monkeypatch
):
    cfg = config(
        "autolora",
        epochs=3,
        lr=0.01,
        lr_schedule={"type": "auto", "variant": "official", "every": 1, "min_lr": 1e-5},
    )
    trainer = Trainer(cfg, tiny_data, tiny_backbone, tmp_path / "ck")
    scripted = iter([0.5, 0.4, 0.6])  # epoch 1 is worse: 0 of 1 increases -> halve + reload
    monkeypatch.setattr(
        Trainer,
        "evaluate_split",
        lambda self, name: {
            f"{name}_nat_acc": 0.0,
            f"{name}_pgd_acc": next(scripted) if name == "val" else 0.0,
        },
    )
    snapshots = {}
    original_run, original_end = Trainer.run_epoch, Trainer.end_epoch

    def recording(self, epoch):
        snapshots[f"start{epoch}"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return original_run(self, epoch)

    def trained(self, epoch, row):  # the epoch's weights, before any reload
        snapshots[f"end{epoch}"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return original_end(self, epoch, row)

    monkeypatch.setattr(Trainer, "run_epoch", recording)
    monkeypatch.setattr(Trainer, "end_epoch", trained)
    rows = trainer.fit()
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.01, 0.005])
    assert "condition 1" in rows[1]["lr_event"]
    # epoch 2 starts from the weights of epoch 0 (best validation RA), not those of epoch 1
    assert all(torch.equal(snapshots["start2"][k], snapshots["end0"][k]) for k in snapshots["end0"])
    assert not all(
        torch.equal(snapshots["start2"][k], snapshots["end1"][k]) for k in snapshots["end1"]
    )


def test_the_loop_drives_any_schedule_through_the_protocol(
    tmp_path, tiny_data, tiny_backbone, monkeypatch
):
    """No special case for AutoLR: a schedule the loop has never heard of gets its per-step LR
    applied, and its end-of-epoch decision (reload the best-val weights, stop) is carried out
    and logged."""
    from robustft import train as train_module
    from robustft.schedules import LRDecision, Schedule

    class Scripted(Schedule):
        def lr_for_epoch(self, epoch):
            return 0.01 * (epoch + 1)

        def lr_for_step(self, epoch, step, steps_per_epoch):
            return 0.001 * (step + 1) / steps_per_epoch

        def end_epoch(self, epoch, val_robust_acc):
            return LRDecision(
                lr=0.0, reload_best=epoch == 1, stop=epoch == 1, reason="scripted", logged=True
            )

    monkeypatch.setattr(train_module, "build_schedule", lambda cfg: Scripted())
    trainer = Trainer(config(epochs=3), tiny_data, tiny_backbone, tmp_path / "ck")
    step_lrs = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        step_lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", recording_step)
    rows = trainer.fit()
    assert len(rows) == 2 and trainer.stopped  # stopped after epoch 1, not 3 epochs
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.02])
    assert step_lrs == pytest.approx([0.001 / 3, 0.002 / 3, 0.001] * 2)  # 36 examples / 12
    assert [r["lr_event"] for r in rows] == ["", "scripted"]
    best = trainer.best_val["state"]
    assert all(torch.equal(v, best[k]) for k, v in trainer.model.state_dict().items())
