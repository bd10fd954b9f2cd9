"""Step of rule ``render_report``: the HTML report from the studies' aggregated JSON tables.

By hand, from the workflow directory (the one holding the Snakefile)::

    python -m robustft.steps.render_report --tables results/tables/demo.json \\
        --provenance results/report/provenance.json --out-dir results/report

``--out-dir`` writes one page per study (``<dir>/<study>.html``) and ``<dir>/index.html``, the
index of every study page in that directory, so building another study later adds its page
and keeps this one. ``--out FILE`` instead puts all the given studies on one page.

``--templates`` is the directory of the Jinja2 templates; by default ``report/templates`` of
the current directory, which is the workflow directory when Snakemake runs the step (the rule
passes it explicitly, so ``--directory`` elsewhere works too). ``--provenance`` is a JSON
object (file path, or inline text starting with ``{``) with e.g. ``git_commit``,
``config_hash``, ``packages``, ``device``, ``fidelity``; it is shown as given.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from robustft.report import render_report, render_study_pages
from robustft.report.render import TEMPLATE
from robustft.steps._common import run

log = logging.getLogger("robustft.steps.render_report")

#: where the templates are, relative to the workflow directory
DEFAULT_TEMPLATES = Path("report") / "templates"


def templates_dir(given: str | None) -> Path:
    """The templates directory: ``--templates``, else ``report/templates`` of the current
    directory; a clear stop naming the expected path when it does not hold the templates."""
    directory = Path(given) if given else Path.cwd() / DEFAULT_TEMPLATES
    if not (directory / TEMPLATE).is_file():
        how = (
            ""
            if given
            else " (the default: run from the workflow directory, the one with the Snakefile)"
        )
        raise SystemExit(
            f"render_report: report templates not found: expected "
            f"{directory.resolve() / TEMPLATE}{how}; pass --templates "
            "<workflow>/report/templates"
        )
    return directory


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", required=True, help="study JSON files (aggregate)")
    out = ap.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="one HTML file with every study")
    out.add_argument("--out-dir", help="directory: one page per study plus index.html")
    ap.add_argument(
        "--figures-dir",
        help="with --out-dir: also write each study's figures as PNG to <dir>/<study>/",
    )
    ap.add_argument("--provenance", help="JSON file or inline JSON object")
    ap.add_argument("--title", default="robustft — reproduction report")
    ap.add_argument(
        "--templates",
        help=f"Jinja2 templates directory (default: "
        f"./{DEFAULT_TEMPLATES}, i.e. next to the Snakefile)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    templates = templates_dir(args.templates)

    provenance = None
    if args.provenance:
        text = args.provenance.strip()
        provenance = json.loads(
            text if text.startswith("{") else Path(args.provenance).read_text(encoding="utf-8")
        )
    if args.out_dir:
        written = render_study_pages(
            args.tables,
            args.out_dir,
            provenance,
            templates=templates,
            title=args.title,
            figures_dir=args.figures_dir,
        )
        log.info("wrote %s", ", ".join(map(str, written)))
        return 0
    out = render_report(args.tables, args.out, provenance, templates=templates, title=args.title)
    log.info("wrote %s (%d studies)", out, len(args.tables))
    return 0


if __name__ == "__main__":
    run(main)
