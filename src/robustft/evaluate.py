"""Evaluation of a trained model: natural accuracy, PGD-10 and AutoAttack with provenance.

Every metric keeps its per-example outcomes; a point is robust under AutoAttack only if it is
classified correctly clean and under every attack of the cascade (reference semantics).

``settings.protocol`` (:class:`robustft.contracts.ClatProtocol`, from
``fidelities.<f>.evaluation``) switches the PGD part to CLAT's
protocol (:mod:`robustft.clat.protocol`, CLAT Sec. 4.1): ``PGD10`` is the lowest robust accuracy
over ``restarts`` random-start runs, ``PGD10_worst`` the per-example worst case, plus
``APGD_CE`` (Table 8) and ``PGD_eps<ε>`` for every ε of the sweep (Figure 4). AutoAttack is
unchanged.

Per-class view (so that a method that never predicts a class cannot hide behind its overall
accuracy): every metric carries ``per_class`` = ``{"<class index>": accuracy}`` over the
examples of that metric (AutoAttack: its subset), computed by
:func:`robustft.tables.per_class.per_class_accuracy`; the top level adds ``classes`` (``names``
from the dataset manifest, ``counts`` of the clean-pass examples per class), ``predictions`` (the
clean predicted label of every example, in the order of ``per_example["SA"]``) and
``never_predicted`` (classes present in the test set that the model predicts for no example).
``per_example`` keeps only 0/1 flags, as before.

Precision: the evaluation runs in fp32 unless ``settings.precision`` asks otherwise (then the
whole evaluation runs under that autocast, :mod:`robustft.precision`). Keep it fp32 for
reported numbers: a gradient attack in reduced precision follows rounded gradients and can
find weaker adversarial examples, over-stating robustness. ``eval.json`` records it under
``compute`` (``precision``, ``device``, ``device_name``). Each metric's result is logged as it
is computed.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustft import precision, rng
from robustft.attacks import PGDConfig, pgd_accuracy, predict
from robustft.batches import eval_batches, load_split, num_classes
from robustft.contracts import ClatProtocol, EvaluateSettings, sweep_metric
from robustft.data.format import load_prepared
from robustft.io import sha256_file
from robustft.methods import build_method
from robustft.tables.per_class import class_counts, never_predicted, per_class_accuracy
from robustft.train import resolve_device

log = logging.getLogger(__name__)


def provenance(device: torch.device, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import numpy

    import robustft

    info = {
        "robustft": robustft.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "host": platform.node(),
    }
    from importlib.metadata import PackageNotFoundError, version

    try:
        info["pyautoattack"] = version("pyautoattack")
    except PackageNotFoundError:  # not installed: AutoAttack was not run
        info["pyautoattack"] = "not installed"
    return {**info, **(extra or {})}


def load_trained(
    settings: Mapping[str, Any] | None, model_path: Path, data_dir: Path, device: torch.device
) -> torch.nn.Module:
    """The run's model with its selected weights (inference drops the LoRA branch).

    A ``model_best.pt`` describes its own model (:class:`robustft.models.checkpoint.ModelSpec`)
    and is rebuilt from that; ``settings`` are not read. A file written before models described
    themselves is rebuilt from ``settings`` (a mapping with ``arch``, ``width``, ``input_size``,
    ``method``, ``method_params``, e.g. the run's training settings) or, without them, from the
    ``run.yaml`` its training job wrote beside it. An unreadable file raises
    :class:`robustft.models.checkpoint.CheckpointError` naming it and what to do.
    """
    from robustft.models import build_model
    from robustft.models.checkpoint import (
        RETRAIN_HINT,
        CheckpointError,
        load_torch_file,
        model_from_payload,
        state_dict_of,
    )

    payload = load_torch_file(model_path, hint=RETRAIN_HINT)
    if isinstance(payload, dict) and "model" in payload:
        return model_from_payload(payload, model_path)[0].to(device).eval()
    legacy = _legacy_model_settings(settings, model_path)
    method = build_method(legacy["method"], **(legacy.get("method_params") or {}))
    model = build_model(
        legacy["arch"],
        num_classes(data_dir),
        width=legacy.get("width"),
        input_size=legacy.get("input_size"),
        **method.model_kwargs(),
    )
    state = state_dict_of(payload, model_path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{model_path}: does not fit the model these settings build "
            f"({legacy['arch']}, {legacy['method']}): {e}. "
            f"{RETRAIN_HINT}"
        ) from e
    return model.to(device).eval()


def _legacy_model_settings(
    settings: Mapping[str, Any] | None, model_path: Path
) -> Mapping[str, Any]:
    """What rebuilds a model file that does not describe itself: ``settings`` if they name an
    architecture, else the training settings in the ``run.yaml`` beside the file."""
    from robustft.models.checkpoint import RETRAIN_HINT, CheckpointError

    if settings and settings.get("arch"):
        return settings
    record = Path(model_path).with_name("run.yaml")
    if record.is_file():
        import yaml

        values = (yaml.safe_load(record.read_text(encoding="utf-8")) or {}).get("settings") or {}
        if values.get("arch"):
            return values
    raise CheckpointError(
        f"{model_path}: does not describe its model (written by an older "
        "version of robustft) and nothing says which model it is (no arch in "
        f"the settings, no run.yaml beside it). {RETRAIN_HINT}"
    )


def evaluate_run(
    settings: EvaluateSettings | Mapping[str, Any], model_path: Path, data_dir: Path
) -> dict[str, Any]:
    """``settings``: the evaluate step's contract (a mapping is read as one, strictly)."""
    settings = EvaluateSettings.from_dict(settings)
    device = resolve_device(settings.device)
    model = load_trained(settings.to_dict(), Path(model_path), Path(data_dir), device)
    with precision.autocast(settings.precision, device):
        return _evaluate(settings, model, Path(model_path), Path(data_dir), device)


def _evaluate(
    settings: EvaluateSettings,
    model: torch.nn.Module,
    model_path: Path,
    data_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    test = load_split(data_dir, "test")
    log.info(
        "evaluate %s on %s: %d test images, precision %s",
        model_path,
        device,
        len(test),
        settings.precision,
    )
    bs = settings.batch_size
    started = time.perf_counter()
    protocol = settings.protocol
    n_cls = num_classes(data_dir)
    if protocol is not None:
        metrics, per_example, timing, labels, preds = _clat_protocol(
            model, test, protocol, settings, n_cls
        )
    else:
        predicted, truth = predict(model, eval_batches(test, bs))  # the one clean loop
        preds, labels = predicted.tolist(), truth.tolist()
        attack = PGDConfig(**settings.eval_attack)
        generator = rng.new_generator(settings.seed)
        pgd_flags = []
        for x, y in eval_batches(test, bs):
            pgd_flags += pgd_accuracy(
                model, x.to(device), y.to(device), attack, generator=generator
            ).tolist()
        clean = [int(p == t) for p, t in zip(preds, labels, strict=True)]
        # a point is PGD-robust only if it is also correct clean
        pgd_flags = [c & p for c, p in zip(clean, pgd_flags)]
        metrics = {
            "SA": _metric(clean, labels, n_cls),
            "PGD10": _metric(pgd_flags, labels, n_cls, attack=attack.__dict__),
        }
        per_example = {"SA": clean, "PGD10": pgd_flags}
        timing = {"pgd_seconds": time.perf_counter() - started}
        for name in ("SA", "PGD10"):
            _log_metric(name, metrics[name], started)
    warnings: list[str] = []
    if settings.autoattack:
        from robustft.attacks.autoattack import run_autoattack

        eps = settings.autoattack_eps
        if eps is None:  # the threat model of the PGD part
            eps = (protocol.attack if protocol is not None else settings.eval_attack)["eps"]
        subset = test.subset(settings.autoattack_examples)
        x, y = subset.tensors()
        result = run_autoattack(
            model,
            x.to(device),
            y.to(device),
            eps=eps,
            seed=settings.seed,
            batch_size=settings.autoattack_batch_size,
            device=str(device),
        )
        metrics["AA"] = _metric(
            list(result.per_example),
            y.tolist(),
            n_cls,
            config=result.config,
            flagged=result.flagged,
            library=result.library,
        )
        per_example["AA"] = list(result.per_example)
        warnings = list(result.warnings)
        timing["autoattack_seconds"] = result.seconds
        _log_metric("AA", metrics["AA"], time.perf_counter() - result.seconds)
    counts = class_counts(labels, n_cls)
    return {
        "metrics": metrics,
        "per_example": per_example,
        "warnings": warnings,
        "timing": timing,
        "provenance": provenance(
            device, {"checkpoint_sha256": sha256_file(model_path), "seed": settings.seed}
        ),
        "classes": {"names": _class_names(data_dir, n_cls), "counts": counts},
        "predictions": preds,
        "never_predicted": never_predicted(preds, counts),
        "compute": {
            "precision": settings.precision,
            "device": str(device),
            "device_name": (
                torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
            ),
        },
    }


def _log_metric(name: str, metric: dict[str, Any], started: float) -> None:
    log.info(
        "%s: %.4f on %d examples (%.0f s)",
        name,
        metric["accuracy"],
        metric["n"],
        time.perf_counter() - started,
    )


def _class_names(data_dir: Path, n_cls: int) -> list[str]:
    """The manifest's class names, or the indices when it lists a different number."""
    names = [str(n) for n in load_prepared(data_dir).classes]
    return names if len(names) == n_cls else [str(c) for c in range(n_cls)]


def _clat_protocol(
    model: torch.nn.Module, test, protocol: ClatProtocol, settings: EvaluateSettings, n_cls: int
) -> tuple[dict, dict, dict, list[int], list[int]]:
    """SA, PGD10 (min over restarts), PGD10_worst, APGD_CE and the ε sweep (CLAT Sec. 4.1).

    Also returns the labels and clean predictions of the evaluated examples.
    """
    from robustft.clat import protocol as ec

    x, y = test.subset(protocol.examples).tensors()
    labels = y.tolist()

    def metric(flags: list[int], **extra: Any) -> dict[str, Any]:
        return _metric(flags, labels, n_cls, **extra)

    bs, seed = settings.batch_size, settings.seed
    attack = PGDConfig(**protocol.attack)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    res = ec.pgd_restarts(
        model, x, y, attack=attack, restarts=protocol.restarts, seed=seed, batch_size=bs
    )
    # clean predictions once; correctness as in ec.clean_correct (argmax == label, eval mode)
    preds = predict(model, zip(x.split(bs), y.split(bs)))[0].tolist()
    clean = [int(p == t) for p, t in zip(preds, labels, strict=True)]
    timing["pgd_seconds"] = time.perf_counter() - started
    metrics = {
        "SA": metric(clean),
        "PGD10": metric(
            res.per_example_min_run,
            attack=attack.__dict__,
            restarts=protocol.restarts,
            accuracies=res.accuracies,
            min_run=res.min_run,
            reported="minimum over restarts (CLAT Sec. 4.1)",
        ),
        "PGD10_worst": metric(
            res.per_example_worst_case,
            attack=attack.__dict__,
            restarts=protocol.restarts,
            reported="robust in every restart (per example)",
        ),
    }
    per_example = {
        "SA": clean,
        "PGD10": res.per_example_min_run,
        "PGD10_worst": res.per_example_worst_case,
    }
    for name in ("SA", "PGD10", "PGD10_worst"):
        _log_metric(name, metrics[name], started)
    if protocol.apgd_ce:
        started = time.perf_counter()
        apgd = ec.apgd_ce(
            model,
            x,
            y,
            eps=attack.eps,
            n_iter=protocol.apgd_ce_iterations,
            restarts=1,
            seed=seed,
            batch_size=bs,
        )
        metrics["APGD_CE"] = metric(apgd["per_example"], settings=apgd["settings"])
        per_example["APGD_CE"] = apgd["per_example"]
        timing["apgd_ce_seconds"] = time.perf_counter() - started
        _log_metric("APGD_CE", metrics["APGD_CE"], started)
    if protocol.epsilons:
        started = time.perf_counter()
        for eps in protocol.epsilons:
            if eps == 0:
                flags = clean
            else:
                cfg = PGDConfig(
                    eps=eps,
                    step=attack.step / attack.eps * eps,
                    steps=attack.steps,
                    random_start=True,
                )
                flags = ec.pgd_restarts(
                    model,
                    x,
                    y,
                    attack=cfg,
                    seed=seed,
                    batch_size=bs,
                    restarts=protocol.sweep_restarts,
                ).per_example_min_run
            metrics[sweep_metric(eps)] = metric(flags, eps=eps, restarts=protocol.sweep_restarts)
            _log_metric(sweep_metric(eps), metrics[sweep_metric(eps)], started)
        timing["sweep_seconds"] = time.perf_counter() - started
    return metrics, per_example, timing, labels, preds


def _metric(flags: list[int], labels: list[int], n_cls: int, **extra: Any) -> dict[str, Any]:
    return {
        "accuracy": sum(flags) / max(len(flags), 1),
        "n": len(flags),
        **extra,
        "per_class": per_class_accuracy(flags, labels, n_cls),
    }
