"""Render the studies' tables and training curves into one self-contained HTML file.

Owns the HTML report: reshaping :class:`~robustft.tables.schema.StudyTables` into rows a
template prints without logic, and rendering the Jinja2 templates. The templates are not part
of the library: they live in the workflow's ``report/templates/`` (next to the Snakefile, beside
the captions of Snakemake's own ``--report``) and their directory is an argument, so editing a
template is a change of a rule input and re-renders the report.

The page must be readable offline and from an archive years later, so everything is inline:
CSS in a ``<style>`` element, figures as base64 PNG ``data:`` URIs, no scripts, fonts or
links to other hosts. Jinja2 autoescaping is on for ``.html`` templates, so study, method or
dataset names from a config can never inject markup.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from robustft.io import write_text_atomic
from robustft.report.figures import per_class_figure, study_figures
from robustft.tables.schema import StudyTables
from robustft.tables.serialise import read_study_json, study_from_json

__all__ = ["TEMPLATE", "coerce_study", "render_html", "render_report", "template_environment"]

#: the page template inside the templates directory (it includes ``style.css.html``)
TEMPLATE = "report.html"


def template_environment(templates: str | Path) -> Environment:
    """A Jinja2 environment over the templates directory, checked to hold :data:`TEMPLATE`."""
    directory = Path(templates)
    if not (directory / TEMPLATE).is_file():
        raise FileNotFoundError(
            f"report templates: {directory / TEMPLATE} does not exist; pass the workflow's "
            "report/templates directory (it holds report.html and style.css.html)"
        )
    return Environment(
        loader=FileSystemLoader(directory),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _num(v: Any) -> float:
    """Float or NaN (JSON round trips turn NaN into null, pandas into None/NaN)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fmt(v: Any, digits: int = 2, *, signed: bool = False, missing: str = "—") -> str:
    f = _num(v)
    if not math.isfinite(f):
        return missing
    return f"{f:+.{digits}f}" if signed else f"{f:.{digits}f}"


def fmt_p(v: Any, *, missing: str = "—") -> str:
    """p-values as the paper prints them: 4 decimals, scientific below 1e-4."""
    f = _num(v)
    if not math.isfinite(f):
        return missing
    return f"{f:.0e}" if f < 1e-4 else f"{f:.4f}"


def coerce_study(obj: StudyTables | Mapping[str, Any] | str | Path) -> StudyTables:
    """Accept a StudyTables, its JSON dict, or the path of the JSON written by aggregate."""
    if isinstance(obj, StudyTables):
        return obj
    if isinstance(obj, Mapping):
        return study_from_json(obj)
    return read_study_json(obj)


def _records(df) -> list[dict[str, Any]]:
    return [] if df is None or df.empty else df.to_dict(orient="records")


def _study_view(st: StudyTables) -> dict[str, Any]:
    """Reshape the tidy tables into rows the template can print without logic."""
    cells = _records(st.cells)
    metrics = list(st.metrics)

    # results: one row per (backbone, dataset, variant), one cell per metric
    results: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        key = (c["backbone"], c["dataset"], c["variant"])
        row = results.setdefault(
            key,
            {
                "backbone": c["backbone"],
                "dataset": c["dataset"],
                "method": c["method"],
                "variant": c["variant"],
                "labels": _labels_text(c.get("labels")),
                "presets": c.get("presets") or "",
                "fidelity": c.get("fidelity") or "",
                "cells": {},
            },
        )
        n = _num(c.get("n_seeds"))
        n = int(n) if math.isfinite(n) else 0
        row["cells"][c["metric"]] = {
            "mean": fmt(c.get("mean")),
            "std": fmt(c.get("std")) if n >= 2 else None,
            "n": n,
            "vals": c.get("values") or "",
            "seeds": c.get("seeds") or "",
            # as printed ("84.20"), so trailing zeros and the paper's precision survive
            "paper": c.get("paper_text") or fmt(c.get("paper_value"), missing=""),
            "paper_source": c.get("paper_source") or "",
            "diff": fmt(c.get("diff_vs_paper"), signed=True, missing=""),
            "flagged": bool(c.get("aa_flagged")),
        }
    has_paper = any(c.get("paper_source") for c in cells)

    comps: dict[tuple, dict[str, Any]] = {}
    for c in _records(st.comparisons):
        key = (c["backbone"], c["dataset"], c["comparison"])
        row = comps.setdefault(
            key,
            {
                "backbone": c["backbone"],
                "dataset": c["dataset"],
                "label": c["label"],
                "ours": c["variant"],
                "baseline": c["baseline_variant"],
                "cells": {},
            },
        )
        row["cells"][c["metric"]] = {
            "diff": fmt(c.get("diff"), signed=True),
            "paper_diff": fmt(c.get("paper_diff"), signed=True, missing=""),
            "p": fmt_p(c.get("p_value")),
            "paper_p": fmt_p(c.get("paper_p_value"), missing=""),
            "n": f"{c.get('n_ours')}/{c.get('n_baseline')}",
            "t": fmt(c.get("statistic")),
            "df": fmt(c.get("df"), 1),
            "significant": bool(c.get("significant")),
            "note": c.get("note") or "",
        }

    result_rows, comp_rows = _grouped(results.values()), _grouped(comps.values())
    # the table already says "(1 seed, no std)"; list only the notes it does not show
    cell_notes = [
        {**c, "note": "; ".join(n for n in str(c["note"]).split("; ") if n != "one seed: no std")}
        for c in cells
        if c.get("note")
    ]
    flagged_runs = [r for r in st.runs if r.aa_warnings]
    return {
        "id": "study-" + "".join(ch if ch.isalnum() else "-" for ch in st.study),
        "name": st.study,
        "title": st.title or st.study,
        "description": st.description,
        "metrics": metrics,
        "test": st.test,
        "test_description": st.test_description,
        "alpha": st.alpha,
        "paper_ref": st.paper_ref,
        "has_paper": has_paper,
        "results": result_rows,
        "comparisons": comp_rows,
        "cells": cells,
        "cell_notes": [c for c in cell_notes if c["note"]],
        "notes": st.notes,
        "flagged_runs": flagged_runs,
        "runs": sorted(st.runs, key=lambda r: (r.dataset, r.backbone, r.variant, r.seed)),
        "figures": study_figures(st.runs, st.figures),
        # printed as a visible block at the top of the study: a reader must not miss them
        "class_warnings": [str(w.get("text", w)) for w in st.class_warnings],
        "per_class": _per_class_view(st),
    }


#: robust metric shown beside SA in the per-class tables, first present wins
_ROBUST_ORDER = ("PGD10", "AA", "APGD_CE", "PGD10_worst")
#: with more classes the per-class table is folded away (the heat map stays visible)
PER_CLASS_TABLE_MAX = 20


def _per_class_view(st: StudyTables) -> list[dict[str, Any]]:
    """One block per (backbone, dataset): per-class SA and robust accuracy by method.

    Rows of the table are classes, columns the methods under each metric; a cell is the mean
    over seeds (per-seed values in its tooltip). Cells of a warning are marked.
    """
    rows = _records(st.per_class)
    if not rows:
        return []
    present = list(dict.fromkeys(r["metric"] for r in rows))
    robust = [m for m in _ROBUST_ORDER if m in present][:1] or [m for m in present if m != "SA"][:1]
    shown = [m for m in ["SA", *robust] if m in present]
    flagged = {
        (w.get("dataset"), w.get("backbone"), w.get("variant"), int(w.get("class", -1)))
        for w in st.class_warnings
        if isinstance(w, Mapping)
    }
    blocks: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["metric"] not in shown:
            continue
        b = blocks.setdefault(
            (r["backbone"], r["dataset"]),
            {
                "backbone": r["backbone"],
                "dataset": r["dataset"],
                "metrics": shown,
                "variants": {},
                "classes": {},
                "cells": {},
            },
        )
        b["variants"].setdefault(r["variant"], r["method"])
        c = int(r["class"])
        count = _num(r.get("count"))
        b["classes"].setdefault(
            c,
            {
                "index": c,
                "name": r.get("class_name") or str(c),
                "count": int(count) if math.isfinite(count) else "",
            },
        )
        mean = _num(r.get("mean"))
        never = str(r.get("never_predicted_seeds") or "")
        b["cells"][(r["metric"], r["variant"], c)] = {
            "mean": fmt(mean, 1),
            "title": f"seeds {_commas(r.get('seeds'))}: {_commas(r.get('values'))}"
            + (f"; never predicted in seed(s) {never.replace(';', ', ')}" if never else ""),
            "zero": math.isfinite(mean) and mean == 0.0,
            "flagged": r["metric"] == "SA"
            and (r["dataset"], r["backbone"], r["variant"], c) in flagged,
        }
    out = []
    for (backbone, dataset), b in sorted(blocks.items()):
        variants = list(b["variants"].items())
        classes = [b["classes"][c] for c in sorted(b["classes"])]
        labels = [m if _same_name(m, v) else f"{m} ({v})" for v, m in variants]
        panels = {
            m: [
                [_num((b["cells"].get((m, v, c["index"])) or {}).get("mean")) for c in classes]
                for v, _ in variants
            ]
            for m in shown
        }
        fig = per_class_figure(
            panels, labels, [c["name"] for c in classes], f"{dataset} · {backbone}"
        )
        out.append(
            {
                "backbone": backbone,
                "dataset": dataset,
                "metrics": shown,
                "variants": [
                    {"variant": v, "method": m, "label": lab}
                    for (v, m), lab in zip(variants, labels, strict=True)
                ],
                "classes": classes,
                "cells": {f"{m}|{v}|{c}": cell for (m, v, c), cell in b["cells"].items()},
                "folded": len(classes) > PER_CLASS_TABLE_MAX,
                "figure": fig,
            }
        )
    return out


def _commas(v: Any) -> str:
    """``0;6`` (the tables' list spelling) as ``0, 6`` for a tooltip."""
    return ", ".join(str(v or "").split(";"))


def _same_name(method: str, variant: str) -> bool:
    """``AutoLoRa`` vs ``autolora``: the variant adds nothing to the label."""

    def norm(t: str) -> str:
        return "".join(ch for ch in t.lower() if ch.isalnum())

    return norm(method) == norm(variant)


def _grouped(rows) -> list[dict[str, Any]]:
    """Rows sorted by (backbone, dataset), insertion order within; mark each group's first."""
    out = sorted(rows, key=lambda r: (r["backbone"], r["dataset"]))
    for i, r in enumerate(out):
        r["first_in_group"] = i == 0 or (out[i - 1]["backbone"], out[i - 1]["dataset"]) != (
            r["backbone"],
            r["dataset"],
        )
    return out


def _labels_text(labels: Any) -> str:
    if not labels:
        return ""
    if isinstance(labels, str):
        try:
            labels = json.loads(labels)
        except json.JSONDecodeError:
            return labels
    if isinstance(labels, Mapping):
        return ", ".join(f"{k}={v}" for k, v in labels.items())
    return str(labels)


def _provenance_rows(prov: Mapping[str, Any] | None, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested provenance into (key, value) rows; lists are joined."""
    rows: list[tuple[str, str]] = []
    for k, v in (prov or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            rows += _provenance_rows(v, name + ".")
        elif isinstance(v, list | tuple):
            rows.append((name, ", ".join(map(str, v))))
        else:
            rows.append((name, "" if v is None else str(v)))
    return rows


def render_html(
    studies: Sequence[StudyTables | Mapping[str, Any] | str | Path],
    provenance: Mapping[str, Any] | None = None,
    *,
    templates: str | Path,
    title: str = "robustft — reproduction report",
) -> str:
    """The report as an HTML string (see :func:`render_report`)."""
    env = template_environment(templates)
    views = [_study_view(coerce_study(s)) for s in studies]
    presets = sorted({p for v in views for r in v["runs"] for p in [r.preset] if p})
    fidelities = sorted({f for v in views for r in v["runs"] for f in [r.fidelity] if f})
    return env.get_template(TEMPLATE).render(
        title=title,
        studies=views,
        provenance=_provenance_rows(provenance),
        presets=presets,
        fidelities=fidelities,
        any_flagged=any(v["flagged_runs"] for v in views),
        any_class_warnings=any(v["class_warnings"] for v in views),
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def render_report(
    studies: Sequence[StudyTables | Mapping[str, Any] | str | Path],
    out_html: str | Path,
    provenance: Mapping[str, Any] | None = None,
    *,
    templates: str | Path,
    title: str = "robustft — reproduction report",
) -> Path:
    """Write one self-contained HTML page: a section per study, provenance at the end.

    ``studies`` are :class:`~robustft.tables.schema.StudyTables`, their JSON dicts or JSON
    paths (the ``--out-json`` of the aggregate step). ``provenance`` is free-form (git commit,
    config hash, package versions, device, fidelity preset, ...); nested mappings are
    flattened. ``templates`` is the directory of ``report.html`` (the workflow's
    ``report/templates``). The file is written atomically.
    """
    html = render_html(studies, provenance, templates=templates, title=title)
    return write_text_atomic(out_html, html)
