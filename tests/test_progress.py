"""Progress lines of a training run and of an evaluation (issues 9 and 12).

A micro run's log shows what it runs on (device, threads, precision, layout, data sizes, the
backbone file and its SHA-256), the batch progress inside an epoch (the "epoch k: batch i/n"
lines that tests/test_resilience.py waits for), and after every epoch ``k/N`` with the elapsed
time and an ETA; an evaluation logs each metric's result as it is computed.
"""

from __future__ import annotations

import logging
import re

from test_train import config

from robustft.evaluate import evaluate_run
from robustft.io import sha256_file
from robustft.train import train_run


def test_training_and_evaluation_log_their_progress(tmp_path, tiny_data, tiny_backbone, caplog):
    caplog.set_level(logging.INFO, logger="robustft")
    train_run(config(epochs=2), tiny_data, tiny_backbone, tmp_path / "ck", tmp_path / "out")
    lines = [r.getMessage() for r in caplog.records]
    start = next(line for line in lines if ": start on " in line)
    for part in (
        "tiny/vanilla_rft: start on cpu",
        "CPU threads",
        "precision fp32",
        "channels_last False",
        "train 36 (host), val 12, test 12",
        f"{tiny_backbone} (sha256 {sha256_file(tiny_backbone)})",
    ):
        assert part in start, (part, start)
    assert any(re.search(r"tiny/vanilla_rft epoch 1: batch 2/3 \(\d+ s\)", x) for x in lines)
    done = [x for x in lines if " done (" in x]
    assert len(done) == 2
    assert re.search(r"epoch 1 done \(2/2\): .*loss=.*; elapsed \d+s, ETA 0s$", done[1]), done

    caplog.clear()
    result = evaluate_run(
        {"eval_attack": config().eval_attack, "batch_size": 12},
        tmp_path / "out" / "model_best.pt",
        tiny_data,
    )
    lines = [r.getMessage() for r in caplog.records]
    assert any("precision fp32" in x and "12 test images" in x for x in lines), lines
    for metric in ("SA", "PGD10"):
        accuracy = result["metrics"][metric]["accuracy"]
        assert f"{metric}: {accuracy:.4f} on 12 examples" in "\n".join(lines)
    assert result["compute"] == {"precision": "fp32", "device": "cpu", "device_name": "cpu"}
