# CLAT's evaluation jobs beyond one run: the black-box transfer matrix (Table 2, one job per
# pair of backbones, both directions) and criticality vs. batch size with timing (Table 7, on
# the model a CLAT run starts from). Both are inputs of the studies that ask for them.


rule transfer:
    input:
        unpack(transfer_inputs),
    output:
        paths.TRANSFER,
    log:
        paths.log("transfer", paths.PAIR),
    wildcard_constraints:
        first=ANY_BACKBONE,
        second=ANY_BACKBONE,
    conda:
        "../envs/robustft.yaml"
    threads: 1
    resources:
        gpu=resources_of("eval_resources")("gpu"),
        mem_mb=resources_of("eval_resources")("mem_mb"),
        runtime=resources_of("eval_resources")("runtime"),
        attempt=attempt_number,
    params:
        settings=transfer_settings,
    shell:
        step(
            "python -m robustft.steps.transfer --settings {params.settings:q} "
            "--data {input.data} "
            "--models {wildcards.first}={input.first} {wildcards.second}={input.second} "
            "--out {output} --threads {threads} --gpus {resources.gpu}"
        )


rule criticality:
    input:
        unpack(criticality_inputs),
    output:
        paths.CRITICALITY,
    log:
        paths.log("criticality", paths.RUN),
    conda:
        "../envs/robustft.yaml"
    threads: 1
    resources:
        gpu=resources_of("eval_resources")("gpu"),
        mem_mb=resources_of("eval_resources")("mem_mb"),
        runtime=resources_of("eval_resources")("runtime"),
        attempt=attempt_number,
    params:
        settings=criticality_settings,
    shell:
        step(
            "python -m robustft.steps.criticality --settings {params.settings:q} "
            "--data {input.data} --model {input.model} --train-log {input.log} "
            "--out {output} --threads {threads} --gpus {resources.gpu}"
        )
