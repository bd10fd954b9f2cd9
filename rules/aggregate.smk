# Per study: mean ± std over seeds, the paper's value beside each reproduced one, differences
# and t-test p-values (robustft.stats). Cheap, so it runs on the submit host.


rule aggregate:
    input:
        evals=lambda wc: study_inputs(wc, "eval.json"),
        logs=lambda wc: study_inputs(wc, "train_log.csv"),
        models=study_models,
        transfers=study_transfers,
        criticality=study_criticality,
    output:
        csv="results/tables/{study}.csv",
        json="results/tables/{study}.json",
    params:
        runs=study_run_dirs,
        spec=lambda wc: as_json(study_spec.aggregate_spec(CFG, wc.study)),
    log:
        "logs/aggregate/{study}.log",
    conda:
        "../envs/robustft.yaml"
    shell:
        "python -m robustft.steps.aggregate --study {wildcards.study} --runs {params.runs} "
        "--spec {params.spec:q} --transfers {input.transfers} --criticality {input.criticality} "
        "--out-csv {output.csv} --out-json {output.json} > {log} 2>&1"
