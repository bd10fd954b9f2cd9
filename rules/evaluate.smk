# PGD-10 and AutoAttack evaluation of each trained run, with per-example outcomes. The model
# file describes itself, so the settings say only how to attack it.


rule evaluate:
    input:
        data=paths.DATA_DIR,
        model=paths.MODEL,
    output:
        paths.EVAL,
    log:
        paths.log("evaluate", paths.RUN),
    conda:
        "../envs/robustft.yaml"
    threads: 1
    resources:
        gpu=resources_of("eval_resources")("gpu"),
        mem_mb=resources_of("eval_resources")("mem_mb"),
        runtime=resources_of("eval_resources")("runtime"),
        attempt=attempt_number,
    params:
        settings=eval_settings,
    shell:
        step(
            "python -m robustft.steps.evaluate --settings {params.settings:q} "
            "--model {input.model} --data {input.data} --out {output} --threads {threads} "
            "--gpus {resources.gpu}"
        )
