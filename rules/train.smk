# One training job per run (fidelity, dataset, backbone, variant, seed). The resolved settings
# are the job's params: changing one ablation value re-runs exactly the runs it changes.
# Checkpoints live outside the outputs, so a killed job resumes where it stopped.
# A chained variant ("X + CLAT") takes its upstream run's model_best.pt as `backbone`, so the
# upstream run is a job of its own, shared by every run and study that starts from it.


rule train:
    input:
        data=lambda wc: dataset_dir(wc.dataset),
        backbone=backbone_file,
    output:
        model=f"{RUN_DIR}/model_best.pt",
        log_csv=f"{RUN_DIR}/train_log.csv",
        run=f"{RUN_DIR}/run.yaml",
    params:
        settings=train_settings,
        checkpoints=lambda wc: run_of(wc).checkpoint_directory,
        out=RUN_DIR,
        identity=run_identity,
        backbone=backbone_arg,
    log:
        f"logs/train/{RUN_LOG}.log",
    conda:
        "../envs/robustft.yaml"
    threads: 1
    resources:
        gpu=resources_of("train_resources")("gpu", 0),
        mem_mb=resources_of("train_resources")("mem_mb", 4000),
        runtime=resources_of("train_resources")("runtime", 60),
    shell:
        "python -m robustft.steps.train --settings {params.settings:q} --data {input.data} "
        "{params.backbone} --checkpoints {params.checkpoints} --out {params.out} "
        "--identity {params.identity:q} "
        "--threads {threads} --gpus {resources.gpu} > {log} 2>&1"
