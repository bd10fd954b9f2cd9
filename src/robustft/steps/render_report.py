"""Render the HTML report from the studies' aggregated JSON tables.

By hand::

    python -m robustft.steps.render_report --tables results/tables/demo.json \\
        --provenance results/report/provenance.json --out results/report/index.html

``--provenance`` is a JSON object (file path, or inline text starting with ``{``) with e.g.
``git_commit``, ``config_hash``, ``packages``, ``device``, ``fidelity``; it is shown as given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from robustft.report import render_report

log = logging.getLogger("robustft.steps.render_report")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", required=True, help="study JSON files (aggregate)")
    ap.add_argument("--out", required=True, help="HTML file to write")
    ap.add_argument("--provenance", help="JSON file or inline JSON object")
    ap.add_argument("--title", default="robustft — reproduction report")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    provenance = None
    if args.provenance:
        text = args.provenance.strip()
        provenance = json.loads(text if text.startswith("{")
                                else Path(args.provenance).read_text(encoding="utf-8"))
    out = render_report(args.tables, args.out, provenance, title=args.title)
    log.info("wrote %s (%d studies)", out, len(args.tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
