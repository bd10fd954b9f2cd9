# Turns config.yaml into targets; every input function and wildcard constraint lives here.
# The logic is in robustft.config so that plain pytest can test it.
import json
import os
import sys

from robustft import config as rcfg
from robustft import study_spec

# Validation runs while the workflow is parsed, i.e. before any job starts; a ConfigError
# names the offending key.
CFG = rcfg.validate(config)
TARGETS = CFG["targets"]
RUNS = rcfg.all_runs(CFG, TARGETS)
# Step scripts run as `python -m robustft.steps.<x>` with the interpreter running Snakemake
# (the project's venv) first on PATH, locally and in cluster jobs alike.
os.environ.update(PATH=os.pathsep.join([os.path.dirname(sys.executable), os.defpath]) + os.pathsep
                  + os.environ.get("PATH", ""))


wildcard_constraints:
    fidelity="|".join(CFG["fidelities"]),
    dataset="|".join(CFG["datasets"]),
    backbone="|".join(CFG["backbones"]),
    variant="[A-Za-z0-9_.+-]+",
    seed=r"\d+",
    study="|".join(CFG["studies"]),


localrules:
    prepare_data,
    fetch_backbone,
    aggregate,
    render_report,


RUN_DIR = "results/runs/{fidelity}/{dataset}/{backbone}/{variant}/seed{seed}"
RUN_LOG = "{fidelity}/{dataset}/{backbone}/{variant}/seed{seed}"


def run_of(wc):
    return rcfg.Run(wc.fidelity, wc.dataset, wc.backbone, wc.variant, int(wc.seed))


def as_json(value):
    return json.dumps(value, sort_keys=True)


def train_settings(wc):
    return as_json(rcfg.train_settings(CFG, run_of(wc)))


def run_identity(wc):
    return as_json(rcfg.run_identity(CFG, run_of(wc)))


def eval_settings(wc):
    run = run_of(wc)
    return as_json(rcfg.eval_settings(CFG, run, rcfg.needs_autoattack(CFG, run, TARGETS)))


def resources_of(kind):
    """Portable resources (gpu, mem_mb, runtime) from the run's fidelity."""

    def pick(key, default):
        return lambda wc: CFG["fidelities"][wc.fidelity].get(kind, {}).get(key, default)

    return pick


def backbone_file(wc):
    """The run's initial weights: the upstream run's model_best.pt for a chained variant
    ("X + CLAT"), the backbone file, or nothing for a scratch backbone (random init)."""
    path = rcfg.backbone_input(CFG, run_of(wc))
    return [] if path is None else path


def backbone_arg(wc, input):
    return f"--backbone {input.backbone}" if input.backbone else ""


def dataset_dir(name):
    return f"results/data/{name}"


def study_inputs(wc, filename):
    return [f"{run.directory}/{filename}" for run in rcfg.study_runs(CFG, wc.study)]


def final_targets():
    return [f"results/tables/{s}.json" for s in TARGETS] + ["results/report/index.html"]


def dataset_options(wc):
    """Dataset options plus the workflow preset for datasets that have paper/official splits."""
    from robustft.data import get_spec

    ds = CFG["datasets"][wc.dataset]
    options = dict(ds.get("options", {}))
    if get_spec(ds["kind"]).presets:
        options.setdefault("preset", CFG["preset"])
    return as_json(options)


def backbone_rule_input(wc):
    bb = CFG["backbones"][wc.backbone]
    return {"data": dataset_dir(bb["dataset"])} if bb["source"] == "pretrain" else {}


def study_run_dirs(wc):
    return [run.directory for run in rcfg.study_runs(CFG, wc.study)]


def study_models(wc):
    """Trained models the aggregation reads itself (CLAT Table 6: total parameter counts)."""
    if "trainable_params" not in CFG["studies"][wc.study].get("derived", []):
        return []
    return study_inputs(wc, "model_best.pt")


# CLAT Table 2: black-box transfer, one job per pair of backbones (both directions)
def pair_of(wc):
    return rcfg.TransferPair(wc.fidelity, wc.dataset, wc.variant, int(wc.seed), wc.first,
                             wc.second)


def transfer_inputs(wc):
    pair = pair_of(wc)
    return {"data": dataset_dir(wc.dataset),
            "first": f"{pair.run(wc.first).directory}/model_best.pt",
            "second": f"{pair.run(wc.second).directory}/model_best.pt"}


def transfer_settings(wc):
    return as_json(rcfg.transfer_settings(CFG, pair_of(wc)))


def study_transfers(wc):
    return [pair.path for pair in rcfg.transfer_pairs(CFG, wc.study)]


# CLAT Table 7: criticality vs. batch size, on the model a CLAT run starts from
def criticality_inputs(wc):
    return {"data": dataset_dir(wc.dataset), **rcfg.criticality_inputs(CFG, run_of(wc))}


def criticality_settings(wc):
    return as_json(rcfg.criticality_settings(CFG, run_of(wc)))


def study_criticality(wc):
    return [rcfg.criticality_path(run) for run in rcfg.criticality_runs(CFG, wc.study)]
