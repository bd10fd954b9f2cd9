# Datasets: generated offline or downloaded (URL + checksum, on the submit host, which has the
# network that compute nodes often lack) and prepared once per dataset into one on-disk format.


rule prepare_data:
    output:
        directory("results/data/{dataset}"),
    params:
        kind=lambda wc: CFG["datasets"][wc.dataset]["kind"],
        resolution=lambda wc: CFG["datasets"][wc.dataset]["resolution"],
        seed=lambda wc: CFG["datasets"][wc.dataset].get("split_seed", 0),
        options=dataset_options,
        raw=lambda wc: f"resources/raw/{CFG['datasets'][wc.dataset]['kind']}",
    log:
        "logs/prepare_data/{dataset}.log",
    conda:
        "../envs/robustft.yaml"
    shell:
        "python -m robustft.steps.prepare_data --dataset {params.kind} --out {output} "
        "--raw-dir {params.raw} --resolution {params.resolution} --seed {params.seed} "
        "--options {params.options:q} > {log} 2>&1"
