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

import base64
import datetime as _dt
import html as _html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from robustft.io import write_text_atomic
from robustft.report.figures import per_class_figure, study_figures
from robustft.report.paper_figures import paper_figures
from robustft.tables.protocol import selection_text
from robustft.tables.schema import StudyTables
from robustft.tables.serialise import read_study_json, study_from_json

__all__ = [
    "INDEX",
    "INDEX_TEMPLATE",
    "TEMPLATE",
    "coerce_study",
    "page_name",
    "render_html",
    "render_index",
    "render_report",
    "render_study_pages",
    "template_environment",
]

#: the page template inside the templates directory (it includes ``style.css.html``)
TEMPLATE = "report.html"
#: the template of the index of every built study's page
INDEX_TEMPLATE = "index.html"
#: the index's file name inside the report directory
INDEX = "index.html"
#: how a study page announces its study to the index (read back by :func:`render_index`)
_STUDY_META = re.compile(
    r'<meta name="robustft-study" content="([^"]*)" data-title="([^"]*)" data-summary="([^"]*)">'
)


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
            # the evidence: test examples behind the number, and the paper check
            "n_examples": _commas(c.get("n_examples")),
            "consistent": _consistent(c.get("paper_consistent")),
            "interval": fmt(c.get("interval")),
            "paper_note": c.get("paper_note") or "",
        }
    has_paper = any(c.get("paper_source") for c in cells)

    # comparisons: one row per (comparison, metric), every number of the test visible
    comps = [
        {
            "backbone": c["backbone"],
            "dataset": c["dataset"],
            "label": c["label"],
            "ours": c["variant"],
            "baseline": c["baseline_variant"],
            "metric": c["metric"],
            "diff": fmt(c.get("diff"), signed=True),
            "paper_diff": fmt(c.get("paper_diff"), signed=True, missing=""),
            "n_ours": _int_text(c.get("n_ours")),
            "n_baseline": _int_text(c.get("n_baseline")),
            "t": fmt(c.get("statistic")),
            "df": fmt(c.get("df"), 1),
            "p": fmt_p(c.get("p_value")),
            "mdd": fmt(c.get("mdd")),
            "paper_p": fmt_p(c.get("paper_p_value"), missing=""),
            "significant": bool(c.get("significant")),
            "note": c.get("note") or "",
        }
        for c in _records(st.comparisons)
    ]

    result_rows, comp_rows = _grouped(results.values()), _grouped(comps)
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
        "runs": [
            _run_view(r)
            for r in sorted(st.runs, key=lambda r: (r.dataset, r.backbone, r.variant, r.seed))
        ],
        "figures": study_figures(st.runs, st.figures, cells),
        "paper_figures": paper_figures(st),
        "protocol": _protocol_view(st, cells),
        "power": _power_sentence(st),
        "consistency_rule": st.consistency_rule,
        "any_consistency": any(c.get("paper_consistent") is not None for c in cells),
        # printed as a visible block at the top of the study: a reader must not miss them
        "class_warnings": [str(w.get("text", w)) for w in st.class_warnings],
        "per_class": _per_class_view(st),
    }


def _consistent(v: Any) -> bool | None:
    """The cell's paper check (True/False) or None when there is nothing to check."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return bool(v)


def _int_text(v: Any) -> str:
    f = _num(v)
    return str(int(f)) if math.isfinite(f) else "—"


def _seconds_text(v: Any) -> str:
    """Wall time as ``42 s``, ``12.5 min`` or ``3.2 h``; "not recorded" when absent."""
    f = _num(v)
    if not math.isfinite(f):
        return "not recorded"
    if f < 120:
        return f"{f:.0f} s"
    return f"{f / 60:.1f} min" if f < 7200 else f"{f / 3600:.1f} h"


def _distinct(values: Sequence[Any]) -> str:
    """Distinct recorded values as ``a, b``; "not recorded" when none is."""
    seen = [str(v) for v in dict.fromkeys(values) if v not in (None, "")]
    return ", ".join(seen) if seen else "not recorded"


def _run_view(r: Any) -> dict[str, Any]:
    """One visible row of the runs table: identity, protocol facts and wall time."""
    p = r.protocol or {}
    return {
        "dataset": r.dataset,
        "backbone": r.backbone,
        "method": r.method,
        "variant": r.variant,
        "seed": r.seed,
        "preset": r.preset or "—",
        "fidelity": r.fidelity or "—",
        "selection": p.get("selection") or "—",
        "precision": f"{p.get('train_precision') or '—'} / {p.get('eval_precision') or '—'}",
        "device": f"{p.get('train_device') or '—'} / "
        f"{p.get('eval_device') or r.provenance.get('device') or '—'}",
        "train_time": _seconds_text(p.get("train_seconds")),
        "eval_time": _seconds_text(p.get("eval_seconds")),
        "aa_warnings": r.aa_warnings,
        "run_dir": r.run_dir or "",
    }


def _protocol_view(st: StudyTables, cells: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The protocol and evidence of a study, printed beside its table (label, text, warn)."""
    protocols = [r.protocol or {} for r in st.runs]
    rows: list[dict[str, Any]] = []
    selections = list(dict.fromkeys(p.get("selection") for p in protocols if p.get("selection")))
    for sel in selections or [None]:
        users = sorted({r.variant for r in st.runs if (r.protocol or {}).get("selection") == sel})
        who = f" — {', '.join(users)}" if len(selections) > 1 else ""
        rows.append(
            {
                "label": "Checkpoint selection",
                "text": selection_text(sel) + who,
                "warn": sel is not None and sel.startswith("test"),
            }
        )
    rows.append(
        {
            "label": "Training",
            "text": f"epochs {_distinct([p.get('epochs') for p in protocols])}; attack "
            f"{_distinct([p.get('train_attack') for p in protocols])}",
        }
    )
    evaluation: dict[str, list[str]] = {}  # text -> metrics (a sweep's metrics share one)
    for metric in st.metrics:
        mine = [c for c in cells if c["metric"] == metric and _num(c.get("n_seeds")) > 0]
        if not mine:
            continue
        attack = _distinct([c.get("attack") for c in mine])
        n = _distinct([_commas(c.get("n_examples")) for c in mine])
        text = (f"{attack}; " if attack != "not recorded" else "") + f"on {n} test examples per run"
        evaluation.setdefault(text, []).append(metric)
    for text, metrics in evaluation.items():
        rows.append({"label": f"Evaluation · {', '.join(metrics)}", "text": text})
    rows.append(
        {
            "label": "Precision",
            "text": f"training {_distinct([p.get('train_precision') for p in protocols])}; "
            f"evaluation {_distinct([p.get('eval_precision') for p in protocols])}",
        }
    )
    rows.append(
        {
            "label": "Device actually used",
            "text": f"training {_distinct([p.get('train_device') for p in protocols])}; "
            f"evaluation {_distinct([p.get('eval_device') for p in protocols])} "
            f"(requested: {_distinct([p.get('device_requested') for p in protocols])})",
        }
    )
    train_s = [_num(p.get("train_seconds")) for p in protocols]
    eval_s = [_num(p.get("eval_seconds")) for p in protocols]
    finite = [t for t in train_s + eval_s if math.isfinite(t)]
    rows.append(
        {
            "label": "Wall time",
            "text": (
                f"{_seconds_text(sum(finite))} in total over {len(st.runs)} runs "
                "(training + evaluation); per run in the runs table below"
                if finite
                else "not recorded"
            ),
        }
    )
    return rows


def _power_sentence(st: StudyTables) -> str:
    """What the seeds can detect: the range of the minimum detectable differences."""
    rows = _records(st.comparisons)
    if not rows:
        return ""
    powered = [c for c in rows if math.isfinite(_num(c.get("mdd")))]
    seeds = sorted(
        {int(_num(c.get(k))) for c in powered or rows for k in ("n_ours", "n_baseline")} - {-1}
    )
    seeds_text = (
        "?" if not seeds else str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    )
    if not powered:
        return (
            f"With {seeds_text} seed(s) per group and no seed spread to estimate, no test can "
            "say whether a difference is real; read the differences as single observations."
        )
    mdds = sorted(_num(c["mdd"]) for c in powered)
    lo, mid, hi = mdds[0], mdds[len(mdds) // 2], mdds[-1]
    span = f"{lo:.2f}" if math.isclose(lo, hi) else f"{lo:.2f}–{hi:.2f} (median {mid:.2f})"
    missing = len(rows) - len(powered)
    return (
        f"What {seeds_text} seeds can detect: at α = {st.alpha:g} with 80 % power, given the "
        f"observed seed spread, only true differences of at least {span} percentage points "
        "would be found (column MDD). A smaller difference that is not significant is not "
        "evidence of no effect, and a bold p from two or three seeds rests on a spread "
        "estimated from two or three numbers."
        + (
            f" {missing} comparison(s) have no MDD: fewer than two seeds or no spread."
            if missing
            else ""
        )
    )


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
    index_href: str | None = None,
) -> str:
    """The report as an HTML string (see :func:`render_report`); ``index_href`` links back to
    the index of all studies (the per-study pages)."""
    env = template_environment(templates)
    views = [s if isinstance(s, _View) else _study_view(coerce_study(s)) for s in studies]
    presets = sorted({r["preset"] for v in views for r in v["runs"] if r["preset"] != "—"})
    fidelities = sorted({r["fidelity"] for v in views for r in v["runs"] if r["fidelity"] != "—"})
    return env.get_template(TEMPLATE).render(
        title=title,
        studies=views,
        provenance=_provenance_rows(provenance),
        presets=presets,
        fidelities=fidelities,
        any_flagged=any(v["flagged_runs"] for v in views),
        any_class_warnings=any(v["class_warnings"] for v in views),
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        index_href=index_href,
        study_meta=[
            {"name": v["name"], "title": v["title"], "summary": _summary(v)} for v in views
        ],
    )


class _View(dict):
    """A study already reshaped by :func:`_study_view` (rendered without reshaping again)."""


def _figures_of(view: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(file stem, Figure) of every figure of a study's view."""
    out = [(f"paper_{i}", f) for i, f in enumerate(view["paper_figures"], 1)]
    out += [(f"training_{i}", f) for i, f in enumerate(view["figures"], 1)]
    out += [
        (f"per_class_{i}", b["figure"])
        for i, b in enumerate(view["per_class"], 1)
        if b.get("figure") is not None
    ]
    return out


def write_figures(view: Mapping[str, Any], directory: str | Path) -> list[Path]:
    """The study's figures as PNG files in ``directory`` (what Snakemake's ``--report`` shows);
    the directory is created, files are named ``paper_1.png``, ``training_1.png``, ..."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in _figures_of(view):
        path = directory / f"{stem}.png"
        path.write_bytes(base64.b64decode(fig.png_base64))
        written.append(path)
    return written


def _summary(view: Mapping[str, Any]) -> str:
    """One line about a study for the index: runs, seeds, paper check."""
    runs = view["runs"]
    checked = [c for c in view["cells"] if c.get("paper_consistent") is not None]
    ok = sum(bool(c.get("paper_consistent")) for c in checked)
    methods = ", ".join(dict.fromkeys(r["method"] for r in runs))
    text = f"{len(runs)} runs" + (f" ({methods})" if methods else "")
    if checked:
        text += f"; {ok} of {len(checked)} paper values consistent with ours"
    return text


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


def page_name(study: str) -> str:
    """The file name of a study's page: the study name with anything but letters, digits and
    ``_.+-`` replaced (config study names are kept as they are)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", study).lstrip(".") + ".html"


def render_study_pages(
    studies: Sequence[StudyTables | Mapping[str, Any] | str | Path],
    out_dir: str | Path,
    provenance: Mapping[str, Any] | None = None,
    *,
    templates: str | Path,
    title: str = "robustft — reproduction report",
    index: bool = True,
    figures_dir: str | Path | None = None,
) -> list[Path]:
    """One page per study, ``<out_dir>/<study>.html``, and (``index``) the index of every
    study page in ``out_dir``: building one study leaves the pages of the others in place.
    With ``figures_dir``, each study's figures are also written as PNG files to
    ``<figures_dir>/<study>/`` (for Snakemake's own report)."""
    out_dir = Path(out_dir)
    written = []
    for s in studies:
        st = coerce_study(s)
        if page_name(st.study) == INDEX:
            raise ValueError(f"study {st.study!r}: its page would overwrite the index; rename it")
        view = _View(_study_view(st))
        if figures_dir is not None:
            write_figures(view, Path(figures_dir) / page_name(st.study)[: -len(".html")])
        html = render_html(
            [view],
            provenance,
            templates=templates,
            title=f"{st.title or st.study} — {title}",
            index_href=INDEX,
        )
        written.append(write_text_atomic(out_dir / page_name(st.study), html))
    if index:
        written.append(render_index(out_dir, templates=templates, title=title))
    return written


def render_index(
    out_dir: str | Path, *, templates: str | Path, title: str = "robustft — reproduction report"
) -> Path:
    """``<out_dir>/index.html``: a link to every study page present in ``out_dir`` (pages of
    earlier builds included), with the title and summary each page announces."""
    out_dir = Path(out_dir)
    pages = []
    for path in sorted(out_dir.glob("*.html")):
        if path.name == INDEX:
            continue
        m = _STUDY_META.search(path.read_text(encoding="utf-8", errors="replace")[:4000])
        if m is None:  # not a study page (a file someone put there)
            continue
        study, page_title, summary = (_html.unescape(g) for g in m.groups())
        modified = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.UTC)
        pages.append(
            {
                "href": path.name,
                "study": study,
                "title": page_title,
                "summary": summary,
                "built": modified.strftime("%Y-%m-%d %H:%M UTC"),
            }
        )
    env = template_environment(templates)
    html = env.get_template(INDEX_TEMPLATE).render(
        title=title,
        pages=pages,
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return write_text_atomic(out_dir / INDEX, html)
