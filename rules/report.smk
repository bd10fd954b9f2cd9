# The HTML report of the requested studies (Jinja2, autoescaped, readable offline).


rule render_report:
    input:
        tables=expand("results/tables/{study}.json", study=TARGETS),
    output:
        "results/report/index.html",
    params:
        provenance=lambda wc: as_json(study_spec.report_provenance(CFG, workflow.basedir)),
    log:
        "logs/render_report/report.log",
    conda:
        "../envs/robustft.yaml"
    shell:
        "python -m robustft.steps.render_report --tables {input.tables} "
        "--provenance {params.provenance:q} --out {output} > {log} 2>&1"
