# CLAT's evaluation jobs beyond one run: the black-box transfer matrix (Table 2, one job per
# pair of backbones, both directions) and criticality vs. batch size with timing (Table 7, on
# the model a CLAT run starts from). Both are inputs of the studies that ask for them.


rule transfer:
    input:
        unpack(transfer_inputs),
    output:
        "results/transfer/{fidelity}/{dataset}/{variant}/seed{seed}/{first}/{second}.json",
    params:
        settings=transfer_settings,
    log:
        "logs/transfer/{fidelity}/{dataset}/{variant}/seed{seed}/{first}/{second}.log",
    conda:
        "../envs/robustft.yaml"
    wildcard_constraints:
        first="|".join(CFG["backbones"]),
        second="|".join(CFG["backbones"]),
    threads: 1
    resources:
        gpu=resources_of("eval_resources")("gpu", 0),
        mem_mb=resources_of("eval_resources")("mem_mb", 4000),
        runtime=resources_of("eval_resources")("runtime", 60),
    shell:
        "python -m robustft.steps.transfer --settings {params.settings:q} --data {input.data} "
        "--models {wildcards.first}={input.first} {wildcards.second}={input.second} "
        "--out {output} --threads {threads} --gpus {resources.gpu} > {log} 2>&1"


rule criticality:
    input:
        unpack(criticality_inputs),
    output:
        "results/criticality/{fidelity}/{dataset}/{backbone}/{variant}/seed{seed}.json",
    params:
        settings=criticality_settings,
    log:
        "logs/criticality/{fidelity}/{dataset}/{backbone}/{variant}/seed{seed}.log",
    conda:
        "../envs/robustft.yaml"
    threads: 1
    resources:
        gpu=resources_of("eval_resources")("gpu", 0),
        mem_mb=resources_of("eval_resources")("mem_mb", 4000),
        runtime=resources_of("eval_resources")("runtime", 60),
    shell:
        "python -m robustft.steps.criticality --settings {params.settings:q} "
        "--data {input.data} --model {input.model} --train-log {input.log} --out {output} "
        "--threads {threads} --gpus {resources.gpu} > {log} 2>&1"
