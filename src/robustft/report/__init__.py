"""The HTML report: one self-contained page with every study's tables and training curves.

Owns drawing what :mod:`robustft.tables` computed: :mod:`robustft.report.render` (the page,
from the Jinja2 templates in the workflow's ``report/templates/``) and
:mod:`robustft.report.figures` (training curves and per-class heat maps as inline PNG).
``render_study_pages(studies, out_dir, provenance, templates=...)`` writes one page per study
and the index of every study page in the directory (the workflow's report);
``render_report(studies, out_html, ...)`` puts several studies on one page.
:mod:`robustft.report.paper_figures` draws the papers' accuracy-against-setting figures.
"""

from robustft.report.figures import study_figures, training_figure
from robustft.report.render import render_html, render_index, render_report, render_study_pages

__all__ = [
    "render_html",
    "render_index",
    "render_report",
    "render_study_pages",
    "study_figures",
    "training_figure",
]
