# PGD-10 and AutoAttack evaluation of each trained run, with per-example outcomes.


rule evaluate:
    input:
        data=lambda wc: dataset_dir(wc.dataset),
        model=f"{RUN_DIR}/model_best.pt",
    output:
        f"{RUN_DIR}/eval.json",
    params:
        settings=eval_settings,
    log:
        f"logs/evaluate/{RUN_LOG}.log",
    conda:
        "../envs/robustft.yaml"
    threads: 1
    resources:
        gpu=resources_of("eval_resources")("gpu", 0),
        mem_mb=resources_of("eval_resources")("mem_mb", 4000),
        runtime=resources_of("eval_resources")("runtime", 60),
    shell:
        "python -m robustft.steps.evaluate --settings {params.settings:q} "
        "--model {input.model} --data {input.data} --out {output} --threads {threads} "
        "--gpus {resources.gpu} > {log} 2>&1"
