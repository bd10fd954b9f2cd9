# The HTML report of the requested studies (Jinja2, autoescaped, readable offline).


rule render_report:
    input:
        tables=report_tables,
        templates=sorted(glob.glob(os.path.join(REPORT_TEMPLATES, "*.html"))),
    output:
        paths.REPORT,
    log:
        paths.log("render_report", "report"),
    conda:
        "../envs/robustft.yaml"
    params:
        provenance=report_provenance,
        templates=REPORT_TEMPLATES,
    shell:
        "python -m robustft.steps.render_report --tables {input.tables} "
        "--templates {params.templates:q} --provenance {params.provenance:q} --out {output} "
        "> {log} 2>&1"
