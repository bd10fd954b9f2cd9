"""The one home of every path the workflow reads or writes.

Each location is a template with Snakemake-style ``{wildcards}``: the rule files use the
templates as their output/log patterns, and the planning code formats them for concrete runs,
pairs and studies, so a path is spelled exactly once. Relative to the workflow's directory.

    results/data/{dataset}/                         prepared arrays + manifest
    resources/raw/{kind}/                           downloaded archives (shared by datasets)
    results/backbones/{backbone}.pt                 fetched or pre-trained backbone
    results/runs/<run>/  model_best.pt train_log.csv run.yaml eval.json
    results/checkpoints/<run>/                      resumable checkpoints (not an output)
    results/transfer/{fidelity}/{dataset}/{variant}/seed{seed}/{first}/{second}.json
    results/criticality/<run>.json
    results/tables/{study}.csv|json                 aggregated tables
    results/report/{study}.html                     one report page per study
    results/report/index.html                       index of every study page on disk
    results/report/figures/{study}/*.png            a study's figures (Snakemake's --report)
    logs/<rule>/<job>.log                           one log per job

``<run>`` is ``{fidelity}/{dataset}/{backbone}/{variant}/seed{seed}`` (:data:`RUN`).
"""

from __future__ import annotations

from typing import Any

#: a run's name and the path segment of everything per run
RUN = "{fidelity}/{dataset}/{backbone}/{variant}/seed{seed}"
#: one pair of backbones of a transfer job (CLAT Table 2)
PAIR = "{fidelity}/{dataset}/{variant}/seed{seed}/{first}/{second}"

DATA_DIR = "results/data/{dataset}"
RAW_DIR = "resources/raw/{kind}"
BACKBONE = "results/backbones/{backbone}.pt"
BACKBONE_CHECKPOINTS = "results/checkpoints/backbones/{backbone}"
RUN_DIR = f"results/runs/{RUN}"
RUN_CHECKPOINTS = f"results/checkpoints/{RUN}"
MODEL = f"{RUN_DIR}/model_best.pt"
TRAIN_LOG = f"{RUN_DIR}/train_log.csv"
RUN_RECORD = f"{RUN_DIR}/run.yaml"
EVAL = f"{RUN_DIR}/eval.json"
TRANSFER = f"results/transfer/{PAIR}.json"
CRITICALITY = f"results/criticality/{RUN}.json"
TABLE_CSV = "results/tables/{study}.csv"
TABLE_JSON = "results/tables/{study}.json"
REPORT_DIR = "results/report"
#: the index of every study page in REPORT_DIR (pages of earlier builds included)
REPORT = f"{REPORT_DIR}/index.html"
REPORT_PAGE = REPORT_DIR + "/{study}.html"
#: a study's figures as PNG files (shown by Snakemake's own --report)
REPORT_FIGURES = REPORT_DIR + "/figures/{study}"

#: file names inside a run directory
RUN_FILES = {
    "model": "model_best.pt",
    "train_log": "train_log.csv",
    "record": "run.yaml",
    "eval": "eval.json",
}


def log(rule: str, job: str) -> str:
    """``logs/<rule>/<job>.log`` (``job`` a template such as :data:`RUN` or a name)."""
    return f"logs/{rule}/{job}.log"


def fill(template: str, **wildcards: Any) -> str:
    return template.format(**wildcards)


def data_dir(dataset: str) -> str:
    return fill(DATA_DIR, dataset=dataset)


def raw_dir(kind: str) -> str:
    return fill(RAW_DIR, kind=kind)


def backbone_file(backbone: str) -> str:
    return fill(BACKBONE, backbone=backbone)


def backbone_checkpoints(backbone: str) -> str:
    return fill(BACKBONE_CHECKPOINTS, backbone=backbone)


def table_csv(study: str) -> str:
    return fill(TABLE_CSV, study=study)


def table_json(study: str) -> str:
    return fill(TABLE_JSON, study=study)


def report_page(study: str) -> str:
    return fill(REPORT_PAGE, study=study)


def report_figures(study: str) -> str:
    return fill(REPORT_FIGURES, study=study)
