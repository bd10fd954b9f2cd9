# Datasets: generated offline or downloaded (URL + checksum, on the submit host, which has the
# network that compute nodes often lack) and prepared once per dataset into one on-disk format.


rule prepare_data:
    output:
        directory(paths.DATA_DIR),
    log:
        paths.log("prepare_data", "{dataset}"),
    conda:
        "../envs/robustft.yaml"
    resources:
        attempt=attempt_number,
    params:
        kind=prepare_param("kind"),
        resolution=prepare_param("resolution"),
        seed=prepare_param("split_seed"),
        options=prepare_options,
        raw=prepare_param("raw_dir"),
    shell:
        step(
            "python -m robustft.steps.prepare_data --dataset {params.kind} --out {output} "
            "--raw-dir {params.raw} --resolution {params.resolution} --seed {params.seed} "
            "--options {params.options:q}"
        )
