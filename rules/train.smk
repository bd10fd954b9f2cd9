# One training job per run (fidelity, dataset, backbone, variant, seed). The resolved settings
# are the job's params: changing one ablation value re-runs exactly the runs it changes.
# Checkpoints live outside the outputs, so a killed job resumes where it stopped; a lock keeps a
# second trainer out of them, and they are deleted when the run finished (keep_checkpoints).
# A chained variant ("X + CLAT") takes its upstream run's model_best.pt as `backbone`, so the
# upstream run is a job of its own, shared by every run and study that starts from it.


rule train:
    input:
        data=paths.DATA_DIR,
        backbone=backbone_file,
    output:
        model=paths.MODEL,
        log_csv=paths.TRAIN_LOG,
        run=paths.RUN_RECORD,
    log:
        paths.log("train", paths.RUN),
    conda:
        "../envs/robustft.yaml"
    threads: 1
    resources:
        gpu=resources_of("train_resources")("gpu"),
        mem_mb=resources_of("train_resources")("mem_mb"),
        runtime=resources_of("train_resources")("runtime"),
        attempt=attempt_number,
        keep_checkpoints=keep_checkpoints,
    params:
        settings=train_settings,
        checkpoints=paths.RUN_CHECKPOINTS,
        out=paths.RUN_DIR,
        identity=run_identity,
        backbone=backbone_arg,
    shell:
        step(
            "python -m robustft.steps.train --settings {params.settings:q} --data {input.data} "
            "{params.backbone} --checkpoints {params.checkpoints} --out {params.out} "
            "--identity {params.identity:q} --keep-checkpoints {resources.keep_checkpoints} "
            "--threads {threads} --gpus {resources.gpu}"
        )
