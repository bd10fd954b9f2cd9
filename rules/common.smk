# Turns config.yaml into targets: every input, params and resources function and every wildcard
# constraint lives here, each a one-line question to robustft.plan (torch-free, tested in plain
# pytest); the rule files only wire them up. Every path is a template of robustft.plan.paths.
import glob
import json
import os
import sys

from robustft import plan
from robustft.plan import paths

# Validation runs while the workflow is parsed, i.e. before any job starts; a ConfigError
# names the offending key. It ends Snakemake with that one line (not a traceback of this file).
try:
    PLAN = plan.Plan(config)
except plan.ConfigError as e:
    problems = " | ".join(line.strip() for line in str(e).splitlines() if line.strip())
    # "invalid config.yaml: config key ..."
    problems = problems.replace(": | ", ": ", 1)
    sys.exit(f"robustft: ERROR: {problems} — fix it in the config file and run again")
CFG = PLAN.config
TARGETS = PLAN.targets
# The report's Jinja2 templates live in the workflow's top-level report/ folder; they are an
# input of the report rule, so editing one renders the report again.
REPORT_TEMPLATES = os.path.join(workflow.basedir, "report", "templates")
# Step scripts run as `python -m robustft.steps.<x>` with the interpreter running Snakemake
# (the project's venv) first on PATH, locally and in cluster jobs alike.
os.environ.update(
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.defpath])
    + os.pathsep
    + os.environ.get("PATH", "")
)


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing if there are none)."""
    return "|".join(names) or "^$"


wildcard_constraints:
    fidelity=one_of(CFG["fidelities"]),
    dataset=one_of(CFG["datasets"]),
    backbone=one_of(CFG["backbones"]),
    variant="[A-Za-z0-9_.+-]+",
    seed=r"\d+",
    study=one_of(CFG["studies"]),


localrules:
    prepare_data,
    fetch_backbone,
    aggregate,
    render_report,


SALMAN_BACKBONES = one_of(PLAN.backbones("salman"))
PRETRAINED_BACKBONES = one_of(PLAN.backbones("pretrain"))
ANY_BACKBONE = one_of(PLAN.backbones())


def as_json(value):
    """A job's settings as its ``params`` string (a contract of robustft.contracts or data)."""
    return json.dumps(
        value.to_dict() if hasattr(value, "to_dict") else value, sort_keys=True
    )


def run_of(wc):
    return plan.Run(wc.fidelity, wc.dataset, wc.backbone, wc.variant, int(wc.seed))


def pair_of(wc):
    return plan.TransferPair(
        wc.fidelity, wc.dataset, wc.variant, int(wc.seed), wc.first, wc.second
    )


def final_targets():
    return PLAN.final_targets()


def job_of(wc):
    """The run (train, evaluate, criticality) or transfer pair a job's wildcards name."""
    return pair_of(wc) if hasattr(wc, "first") else run_of(wc)


def resources_of(kind):
    """Portable resources (gpu, mem_mb, runtime) of the job (train/eval_resources of its
    fidelity; a GPU job's runtime from its cost estimate unless the fidelity sets one).
    """

    def pick(key):
        return lambda wc: PLAN.resources(wc.fidelity, kind, job_of(wc))[key]

    return pick


# Local runs: how many jobs robustft.devices lets share one GPU (fidelities.<f>.jobs_per_gpu);
# an explicit ROBUSTFT_JOBS_PER_GPU wins. SLURM binds GPUs itself (profiles/slurm).
os.environ.setdefault("ROBUSTFT_JOBS_PER_GPU", str(PLAN.gpu_sharing()))
# A dry run (-n) prints what the targets cost (robustft plan, one GPU); normal runs stay quiet.
# Snakemake decides on its executor only after parsing, so the flag is read from the command.
from robustft.plan.cli import is_dry_run, summary

if workflow.is_main_process and is_dry_run(sys.argv):
    print("\n".join(summary(PLAN, TARGETS, gpus=1)), file=sys.stderr)


# --- how every step runs ---------------------------------------------------------------------
def attempt_number(wildcards, attempt):
    """Snakemake's attempt number, as a resource (params functions do not receive it)."""
    return attempt


def step(command):
    """A step's shell command whose log keeps the earlier attempts of the job.

    Snakemake deletes a job's log before every attempt, so the output also goes to
    ``<log>.attempts``, which is copied to the top of the next attempt's log and deleted once
    the job succeeds: a killed and resumed training has both attempts in its log. The step gets
    the attempt number and ``<log>.failed`` to skip retries of a failure that would repeat
    (robustft.steps._common)."""
    return (
        "touch {log}.attempts; cat {log}.attempts > {log}; "
        + command
        + " --attempt {resources.attempt} --failure-marker {log}.failed"
        + " 2>&1 | tee -a {log}.attempts >> {log}; rm -f {log}.attempts"
    )


def keep_checkpoints(wildcards):
    """1 if config.yaml says keep_checkpoints: true (else a finished run's checkpoints are
    deleted). A resource, not a param: switching it re-runs nothing."""
    return int(bool(CFG.get("keep_checkpoints")))


# --- data ------------------------------------------------------------------------------------
def prepare_param(key):
    """kind, resolution, split_seed or raw_dir of the dataset entry."""
    return lambda wc: getattr(PLAN.prepare(wc.dataset), key)


def prepare_options(wc):
    """Dataset options plus the workflow preset for datasets that have paper/official splits."""
    return as_json(PLAN.prepare(wc.dataset).options)


# --- backbones -------------------------------------------------------------------------------
def fetch_param(key):
    """arch or eps_pt of a downloaded backbone."""
    return lambda wc: getattr(PLAN.fetch_settings(wc.backbone), key)


def pretrain_input(wc):
    return {"data": paths.data_dir(PLAN.pretrain_dataset(wc.backbone))}


def pretrain_settings(wc):
    return as_json(PLAN.pretrain_settings(wc.backbone))


# --- one run ---------------------------------------------------------------------------------
def train_settings(wc):
    return as_json(PLAN.train_settings(run_of(wc)))


def run_identity(wc):
    return as_json(PLAN.run_identity(run_of(wc)))


def backbone_file(wc):
    """The run's initial weights: the upstream run's model_best.pt for a chained variant
    ("X + CLAT"), the backbone file, or nothing for a scratch backbone (random init)."""
    path = PLAN.backbone_input(run_of(wc))
    return [] if path is None else path


def backbone_arg(wc, input):
    return f"--backbone {input.backbone}" if input.backbone else ""


def eval_settings(wc):
    return as_json(PLAN.eval_settings(run_of(wc)))


# --- one study -------------------------------------------------------------------------------
def study_files(kind):
    """``model``, ``train_log`` or ``eval`` of every run of the study."""
    return lambda wc: PLAN.study_files(wc.study, kind)


def study_run_dirs(wc):
    return PLAN.study_run_dirs(wc.study)


def study_models(wc):
    """Trained models the aggregation reads itself (CLAT Table 6: total parameter counts)."""
    return PLAN.study_models(wc.study)


def aggregate_spec(wc):
    return as_json(PLAN.aggregate_spec(wc.study))


def report_tables(wc):
    return [paths.table_json(s) for s in TARGETS]


def report_provenance(wc):
    return as_json(PLAN.report_provenance(workflow.basedir))


# --- CLAT Table 2: black-box transfer, one job per pair of backbones (both directions) --------
def transfer_inputs(wc):
    return {"data": paths.data_dir(wc.dataset), **PLAN.transfer_models(pair_of(wc))}


def transfer_settings(wc):
    return as_json(PLAN.transfer_settings(pair_of(wc)))


def study_transfers(wc):
    return PLAN.study_transfers(wc.study)


# --- CLAT Table 7: criticality vs. batch size, on the model a CLAT run starts from ------------
def criticality_inputs(wc):
    return {"data": paths.data_dir(wc.dataset), **PLAN.criticality_inputs(run_of(wc))}


def criticality_settings(wc):
    return as_json(PLAN.criticality_settings(run_of(wc)))


def study_criticality(wc):
    return PLAN.study_criticality(wc.study)
