"""The HTML report: one self-contained page with every study's tables and training curves.

``render_report(studies, out_html, provenance)`` is the entry point; see
:mod:`robustft.report.render` and :mod:`robustft.report.figures`.
"""

from robustft.report.figures import study_figures, training_figure
from robustft.report.render import render_html, render_report

__all__ = ["render_html", "render_report", "study_figures", "training_figure"]
