"""What the aggregate and report steps are told about a study (built from the validated config).

:func:`aggregate_spec` maps a study onto the printed paper table it mirrors (names, variants,
metrics, the comparisons and their printed Diff./p-value columns); :func:`known_metrics` says
which metrics a study at a fidelity can show; :func:`report_provenance` states where the
report's numbers come from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from robustft.contracts import AggregateSpec, sweep_metric
from robustft.plan.grid import (
    method_label,
    study_backbones,
    study_datasets,
    study_variants,
    variant_spec,
)
from robustft.plan.settings import evaluation_protocol

#: metrics of every run (``eval.json``) under the standard protocol
STANDARD_METRICS = ["SA", "PGD10", "AA"]
#: under the CLAT protocol (before the ε sweep), and the CLAT jobs' and derived rows' metrics
CLAT_METRICS = ["SA", "PGD10", "PGD10_worst", "APGD_CE", "AA"]
CLAT_EXTRA_METRICS = ["BB", "CRIT", "TIME_S", "EPOCH_S", "PARAMS", "PARAMS_TOTAL", "PARAMS_PCT"]


def known_metrics(config: dict[str, Any], fidelity: str) -> list[str]:
    """Metric names a study at this fidelity can show."""
    protocol = evaluation_protocol(config, fidelity)
    if protocol is None:
        return list(STANDARD_METRICS)
    return CLAT_METRICS + [sweep_metric(e) for e in protocol.epsilons] + CLAT_EXTRA_METRICS


def _labels(paper_variant: str | None) -> dict[str, str]:
    """'rank=4' → {'rank': '4'}: the group labels the paper's variant column is matched on."""
    if not paper_variant:
        return {}
    return dict(part.split("=", 1) for part in paper_variant.split(";"))


def aggregate_spec(config: dict[str, Any], study: str) -> AggregateSpec:
    """The ``--spec`` of ``robustft.steps.aggregate`` for one study."""
    s = config["studies"][study]
    paper = s.get("paper")
    printed = (paper or {}).get("variants", {})
    variants = {}
    study_vars = study_variants(config, study)
    for v in study_vars:
        spec = variant_spec(config, v)
        variants[v] = {
            "method": (paper or {}).get("methods", {}).get(v) or method_label(config, v),
            "labels": _labels(printed.get(v, spec.get("paper_variant"))),
        }
    comparisons = [
        {"ours": s["reference"], "baseline": v}
        for v in study_vars
        if "reference" in s and v != s["reference"]
    ]
    comparisons += [dict(c) for c in s.get("comparisons", [])]
    out: dict[str, Any] = {
        "title": study,
        "description": s.get("description", ""),
        "test": s.get("ttest", "welch"),
        "variants": variants,
        "comparisons": comparisons,
        "paper": None,
    }
    if "metrics" in s:
        out["metrics"] = list(s["metrics"])
    if s.get("derived"):
        out["derived"] = list(s["derived"])
    if s.get("figures"):
        out["figures"] = list(s["figures"])
    if paper:
        out["paper"] = {
            "paper": paper["name"],
            "table": paper["table"],
            "pvalue_table": 8 if paper["name"] == "AutoLoRa" and paper["table"] in (1, 2) else None,
            "datasets": {
                d: paper.get("datasets", {}).get(d, config["datasets"][d].get("paper_name"))
                for d in study_datasets(config, study)
                if d in paper.get("datasets", {}) or "paper_name" in config["datasets"][d]
            },
            "backbones": {
                b: (
                    paper["backbones"][b]
                    if b in paper.get("backbones", {})
                    else _printed_backbone(
                        config["backbones"][b], paper.get("backbone_variants", False)
                    )
                )
                for b in study_backbones(config, study)
                if b in paper.get("backbones", {}) or "paper_name" in config["backbones"][b]
            },
        }
        if paper.get("diff_metric"):  # e.g. Table 5's printed "diff." column
            for comparison in comparisons:
                comparison["paper_diff"] = {"metric": paper["diff_metric"], "variant": ""}
        if "metrics" in paper:
            out["paper"]["metrics"] = paper["metrics"]
    return AggregateSpec.from_dict(out)


def _printed_backbone(backbone: dict[str, Any], with_variant: bool) -> Any:
    """A backbone's printed name, plus its printed variant (``eps_pt=1/255``) in studies that
    sweep backbones (AutoLoRa Table 4)."""
    if with_variant and backbone.get("paper_variant"):
        return {"name": backbone["paper_name"], "variant": backbone["paper_variant"]}
    return backbone["paper_name"]


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def report_provenance(config: dict[str, Any], root: str | Path = ".") -> dict[str, Any]:
    """What the report states about where its numbers come from."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown (not a git checkout)", False
    packages = {}
    for name in (
        "robustft",
        "torch",
        "torchvision",
        "snakemake",
        "pyautoattack",
        "numpy",
        "scipy",
        "pandas",
    ):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    fidelities = sorted({config["studies"][s]["fidelity"] for s in config["targets"]})
    return {
        "git_commit": commit + (" (uncommitted changes)" if dirty else ""),
        "config_hash": config_hash(config),
        "preset": config["preset"],
        "device": config["device"],
        "fidelity": ", ".join(fidelities),
        "python": platform.python_version(),
        "packages": packages,
    }
