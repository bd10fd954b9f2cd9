# Per study: mean ± std over seeds, the paper's value beside each reproduced one, differences
# and t-test p-values (robustft.tables). Cheap, so it runs on the submit host.


rule aggregate:
    input:
        evals=study_files("eval"),
        logs=study_files("train_log"),
        models=study_models,
        transfers=study_transfers,
        criticality=study_criticality,
    output:
        csv=report(
            paths.TABLE_CSV,
            caption="../report/captions/study_table.rst",
            category="Tables",
            subcategory="{study}",
            labels={"study": "{study}", "table": "cells and comparisons (CSV)"},
        ),
        json=paths.TABLE_JSON,
    log:
        paths.log("aggregate", "{study}"),
    conda:
        "../envs/robustft.yaml"
    params:
        runs=study_run_dirs,
        spec=aggregate_spec,
    shell:
        "python -m robustft.steps.aggregate --study {wildcards.study} --runs {params.runs} "
        "--spec {params.spec:q} --transfers {input.transfers} --criticality {input.criticality} "
        "--out-csv {output.csv} --out-json {output.json} > {log} 2>&1"
