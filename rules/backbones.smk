# Backbones: Salman et al. robust ImageNet ResNets (downloaded on the submit host, verified),
# or a backbone adversarially pre-trained here for the offline demo.


rule fetch_backbone:
    output:
        paths.BACKBONE,
    log:
        paths.log("fetch_backbone", "{backbone}"),
    wildcard_constraints:
        backbone=SALMAN_BACKBONES,
    conda:
        "../envs/robustft.yaml"
    resources:
        attempt=attempt_number,
    params:
        arch=fetch_param("arch"),
        eps=fetch_param("eps_pt"),
    shell:
        step(
            "python -m robustft.steps.fetch_backbone --arch {params.arch} --eps-pt {params.eps} "
            "--out {output}"
        )


rule pretrain_backbone:
    input:
        unpack(pretrain_input),
    output:
        paths.BACKBONE,
    log:
        paths.log("pretrain_backbone", "{backbone}"),
    wildcard_constraints:
        backbone=PRETRAINED_BACKBONES,
    conda:
        "../envs/robustft.yaml"
    # nothing else can run before the backbone exists: use the whole machine (capped by --cores)
    threads: 4
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=120,
        attempt=attempt_number,
        keep_checkpoints=keep_checkpoints,
    params:
        settings=pretrain_settings,
        checkpoints=paths.BACKBONE_CHECKPOINTS,
    shell:
        step(
            "python -m robustft.steps.pretrain_backbone --settings {params.settings:q} "
            "--data {input.data} --checkpoints {params.checkpoints} --out {output} "
            "--keep-checkpoints {resources.keep_checkpoints} "
            "--threads {threads} --gpus {resources.gpu}"
        )


# RobustBench model-zoo checkpoints (CLAT Table 1's WRN-70-16 "X" models), downloaded by the
# robustbench package into resources/robustbench (its own layout; offline: the job's error names
# the file to place) and written as a self-describing model file. Matches no backbone until
# config.yaml declares one with source: robustbench.
ROBUSTBENCH_BACKBONES = one_of(PLAN.backbones("robustbench"))


rule fetch_robustbench:
    output:
        paths.BACKBONE,
    log:
        paths.log("fetch_robustbench", "{backbone}"),
    wildcard_constraints:
        backbone=ROBUSTBENCH_BACKBONES,
    conda:
        "../envs/robustft.yaml"
    # the zoo's WRN-70-16 ensembles hold up to 567M parameters (2.3 GB in fp32), loaded twice
    resources:
        gpu=0,
        mem_mb=12000,
        runtime=60,
        attempt=attempt_number,
    params:
        arch=lambda wc: PLAN.config["backbones"][wc.backbone]["arch"],
    shell:
        step(
            "python -m robustft.steps.fetch_robustbench --arch {params.arch} --out {output}"
        )


# An as-is run (variants with method: as_is; CLAT Table 1's "Peng et al." / "Bai et al." rows):
# the zoo model evaluated without training. Its "training" copies the backbone file (which
# describes its model, head included) to the run's model_best.pt and writes train_log.csv and
# run.yaml, so evaluation, "X + CLAT" chains and the tables treat it like any run. Rule order:
# for those variants this rule, not train, makes the run's files.
import re

AS_IS_VARIANTS = "|".join(map(re.escape, PLAN.as_is_variants())) or "^$"


localrules:
    as_is,


ruleorder: as_is > train


rule as_is:
    input:
        backbone=backbone_file,
    output:
        model=paths.MODEL,
        log_csv=paths.TRAIN_LOG,
        run=paths.RUN_RECORD,
    log:
        paths.log("as_is", paths.RUN),
    wildcard_constraints:
        variant=AS_IS_VARIANTS,
    conda:
        "../envs/robustft.yaml"
    # reads and writes the whole zoo model once (up to 2.3 GB in fp32)
    resources:
        gpu=0,
        mem_mb=12000,
        runtime=30,
        attempt=attempt_number,
    params:
        out=paths.RUN_DIR,
        identity=run_identity,
    shell:
        step(
            "python -m robustft.steps.as_is --backbone {input.backbone} --out {params.out} "
            "--identity {params.identity:q}"
        )
