"""The HTML report: one self-contained page with every study's tables and training curves.

Owns drawing what :mod:`robustft.tables` computed: :mod:`robustft.report.render` (the page,
from the Jinja2 templates in the workflow's ``report/templates/``) and
:mod:`robustft.report.figures` (training curves and per-class heat maps as inline PNG).
``render_report(studies, out_html, provenance, templates=...)`` is the entry point.
"""

from robustft.report.figures import study_figures, training_figure
from robustft.report.render import render_html, render_report

__all__ = ["render_html", "render_report", "study_figures", "training_figure"]
