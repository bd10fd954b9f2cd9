# The HTML report of the requested studies (Jinja2, autoescaped, readable offline).


rule render_report:
    input:
        tables=report_tables,
    output:
        paths.REPORT,
    params:
        provenance=report_provenance,
    log:
        paths.log("render_report", "report"),
    conda:
        "../envs/robustft.yaml"
    shell:
        "python -m robustft.steps.render_report --tables {input.tables} "
        "--provenance {params.provenance:q} --out {output} > {log} 2>&1"
