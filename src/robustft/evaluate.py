"""Evaluation of a trained model: natural accuracy, PGD-10 and AutoAttack with provenance.

Every metric keeps its per-example outcomes; a point is robust under AutoAttack only if it is
classified correctly clean and under every attack of the cascade (reference semantics).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from robustft.attacks import PGDConfig, eval_mode, pgd_accuracy
from robustft.io import sha256_file
from robustft.batches import eval_batches, load_split, num_classes
from robustft.methods import build_method
from robustft.train import resolve_device


def provenance(device: torch.device, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import numpy

    import robustft

    info = {"robustft": robustft.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(),
            "device": str(device), "host": platform.node()}
    try:
        from importlib.metadata import version

        info["pyautoattack"] = version("pyautoattack")
    except Exception:  # not installed: AutoAttack was not run
        pass
    return {**info, **(extra or {})}


def load_trained(settings: dict[str, Any], model_path: Path, data_dir: Path,
                 device: torch.device) -> torch.nn.Module:
    """Rebuild the run's model and load its selected weights (inference drops the LoRA branch)."""
    from robustft.models import build_model

    method = build_method(settings["method"], **settings["method_params"])
    model = build_model(settings["arch"], num_classes(data_dir), width=settings["width"],
                        input_size=settings["input_size"], **method.model_kwargs())
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def evaluate_run(settings: dict[str, Any], model_path: Path, data_dir: Path) -> dict[str, Any]:
    device = resolve_device(settings["device"])
    model = load_trained(settings, Path(model_path), Path(data_dir), device)
    test = load_split(data_dir, "test")
    bs = settings["batch_size"]
    clean, pgd_flags = [], []
    started = time.perf_counter()
    attack = PGDConfig(**settings["eval_attack"])
    generator = torch.Generator().manual_seed(settings["seed"])
    for x, y in eval_batches(test, bs):
        x, y = x.to(device), y.to(device)
        with torch.no_grad(), eval_mode(model):
            clean += (model(x).argmax(1) == y).long().tolist()
        pgd_flags += pgd_accuracy(model, x, y, attack, generator=generator).tolist()
    # a point is PGD-robust only if it is also correct clean
    pgd_flags = [c & p for c, p in zip(clean, pgd_flags)]
    metrics = {"SA": _metric(clean), "PGD10": _metric(pgd_flags, attack=attack.__dict__)}
    per_example = {"SA": clean, "PGD10": pgd_flags}
    timing = {"pgd_seconds": time.perf_counter() - started}
    warnings: list[str] = []
    if settings["autoattack"]:
        from robustft.attacks.autoattack import run_autoattack

        subset = test.subset(settings["autoattack_examples"])
        x, y = subset.tensors()
        result = run_autoattack(model, x.to(device), y.to(device), eps=settings["autoattack_eps"],
                                seed=settings["seed"], batch_size=settings["autoattack_batch_size"],
                                device=str(device))
        metrics["AA"] = _metric(list(result.per_example), config=result.config,
                                flagged=result.flagged, library=result.library)
        per_example["AA"] = list(result.per_example)
        warnings = list(result.warnings)
        timing["autoattack_seconds"] = result.seconds
    return {
        "metrics": metrics, "per_example": per_example, "warnings": warnings, "timing": timing,
        "provenance": provenance(device, {"checkpoint_sha256": sha256_file(model_path),
                                          "seed": settings["seed"]}),
    }


def _metric(flags: list[int], **extra: Any) -> dict[str, Any]:
    return {"accuracy": sum(flags) / max(len(flags), 1), "n": len(flags), **extra}
