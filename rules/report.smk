# The HTML report: one page per requested study plus the index of every study page on disk
# (Jinja2, autoescaped, readable offline), so building one study keeps the others' pages.
# Pages, figures and the index are also in Snakemake's own report (`snakemake --report`).


rule render_report:
    input:
        tables=report_tables,
        templates=sorted(glob.glob(os.path.join(REPORT_TEMPLATES, "*.html"))),
    output:
        index=report(
            paths.REPORT,
            caption="../report/captions/report_index.rst",
            category="Report",
            labels={"page": "index of all built studies"},
        ),
        pages=[
            report(
                paths.report_page(s),
                caption="../report/captions/html_report.rst",
                category="Report",
                labels={"page": s},
            )
            for s in TARGETS
        ],
        figures=[
            report(
                directory(paths.report_figures(s)),
                patterns=["{name}.png"],
                caption="../report/captions/study_figures.rst",
                category="Figures",
                subcategory=s,
                labels={"study": s, "figure": "{name}"},
            )
            for s in TARGETS
        ],
    log:
        paths.log("render_report", "report"),
    conda:
        "../envs/robustft.yaml"
    params:
        provenance=report_provenance,
        templates=REPORT_TEMPLATES,
        out_dir=paths.REPORT_DIR,
        figures_dir=os.path.dirname(paths.REPORT_FIGURES),
    shell:
        "python -m robustft.steps.render_report --tables {input.tables} "
        "--templates {params.templates:q} --provenance {params.provenance:q} "
        "--out-dir {params.out_dir:q} --figures-dir {params.figures_dir:q} > {log} 2>&1"
