"""The papers' figures that plot a final accuracy against a setting, drawn as the papers draw them.

Owns CLAT Figure 3 (adversarial and clean accuracy against the number of critical layers k) and
CLAT Figure 4 (white-box PGD accuracy against the attack strength ε, CLAT in red and PGD-AT in
blue). Both are line plots of the study's cells: the line is our mean over seeds, the band
mean ± sample std, and the paper's printed value is an open circle where the paper gives a
number at that x (CLAT Table 1 is PGD at ε = 0.03 with the architecture's default k, Sec. 4.1;
the figures themselves print no numbers). The plotted numbers are returned as a table the
report prints below the figure. CLAT Figure 2 and AutoLoRa Figures 1–2 are per-epoch curves:
:func:`robustft.report.figures.study_figures` draws them (chained runs on the epoch axis of
the whole budget, the paper's values at the last epoch).

Which figure a study gets is read from its data, not its name: metrics ``PGD_eps<ε>`` give the
ε figure, CLAT runs with two or more distinct k give the k figure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D

from robustft.report.figures import Figure, png_base64, variant_label
from robustft.tables import paper
from robustft.tables.schema import StudyTables
from robustft.threat_models import CLAT_PAPER

__all__ = ["critical_layer_figures", "paper_figures", "sweep_figures"]

_EPS_METRIC = re.compile(r"^PGD_eps(\d+(?:\.\d+)?)$")
#: CLAT Table 1's white-box PGD strength (Sec. 4.1): where Figure 4 meets the table
CLAT_TABLE1_EPS = CLAT_PAPER.eps
#: the papers' colours: CLAT red, PGD-AT blue (CLAT Figure 4's caption)
_RED, _BLUE = "tab:red", "tab:blue"
_OTHERS = ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _colour(method: str, index: int) -> str:
    if "CLAT" in method:
        return _RED
    return _BLUE if index == 0 else _OTHERS[(index - 1) % len(_OTHERS)]


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if math.isfinite(std) else f"{mean:.2f}"


def _printed_table1(st: StudyTables, dataset: str, backbone: str, variant: str, metric: str):
    """CLAT Table 1's printed value for a group (clean for SA, adv for PGD10), or None.

    The study's own paper mapping wins; without one (the figure studies mirror no table) the
    printed backbone is the architecture's paper name and the dataset is matched by name
    (``cifar10_32`` → ``CIFAR-10``)."""
    run = next(
        (r for r in st.runs if (r.dataset, r.backbone, r.variant) == (dataset, backbone, variant)),
        None,
    )
    if run is None:
        return None
    ref = paper.PaperRef.coerce(st.paper_ref) if st.paper_ref else None
    if ref is None or ref.paper != "CLAT":
        ref = paper.PaperRef(paper="CLAT", table=1)
    ref = paper.PaperRef(**{**ref.__dict__, "table": 1})
    arch = (run.protocol or {}).get("arch")
    if backbone not in ref.backbones and arch:
        from robustft.models.cifar import CIFAR_ARCHS  # the architectures' printed names

        spec = CIFAR_ARCHS.get(str(arch))
        if spec is not None:
            ref.backbones = {**ref.backbones, backbone: spec.paper_name}
    if dataset not in ref.datasets:
        printed = paper.resolve_name("CLAT", "dataset", re.sub(r"_\d+$", "", dataset))
        if printed:
            ref.datasets = {**ref.datasets, dataset: printed}
    # Figure 3's k variants share Table 1's method name; only the default k is printed there
    entry = ref.printed_cell(run, metric)
    return entry


def _line_figure(
    title: str,
    panels: Sequence[tuple[str, str, str]],
    xs_by_variant: Mapping[str, Sequence[float]],
    values: Callable[[str, str, float], tuple[float, float]],
    paper_points: Sequence[tuple[str, str, float, float]],
    colours: Mapping[str, str],
    xlabel: str,
    caption: str,
    x_text: Callable[[float], str] = lambda x: f"{x:g}",
) -> Figure:
    """Panels (metric, panel title, y label) of lines over x, one per variant label, with
    mean ± std bands and the paper's points; the legend sits below the axes."""
    fig = MplFigure(figsize=(max(6.0, 4.6 * len(panels)), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, name, ylabel) in zip(axes, panels, strict=True):
        for label, xs in xs_by_variant.items():
            pts = np.array([(x, *values(label, metric, x)) for x in sorted(xs)], dtype=float)
            if not len(pts) or not np.isfinite(pts[:, 1]).any():
                continue
            x, mean, std = pts.T
            ax.plot(x, mean, "-o", ms=3.5, color=colours[label], linewidth=1.5)
            band = np.nan_to_num(std)
            ax.fill_between(x, mean - band, mean + band, color=colours[label], alpha=0.18, lw=0)
        for label, m, x, y in paper_points:
            if m == metric:
                ax.plot([x], [y], "o", mfc="none", mec=colours.get(label, "k"), mew=1.8, ms=9)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[v], lw=2, marker="o", ms=3.5) for v in xs_by_variant]
    names = list(xs_by_variant)
    if paper_points:
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="0.2", mew=1.8, ms=8))
        names.append("paper (CLAT Table 1)")
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), fontsize=8)
    fig.suptitle(title.split(":")[0], fontsize=11)  # the page prints the full title above
    # the numbers of the figure, printed below it
    columns = [xlabel] + [f"{name}: {v}" for _, name, _ in panels for v in xs_by_variant]
    all_x = sorted({x for xs in xs_by_variant.values() for x in xs})
    rows = []
    for x in all_x:
        row = [x_text(x)]
        for metric, _, _ in panels:
            for v in xs_by_variant:
                cell = _fmt(*values(v, metric, x)) if x in xs_by_variant[v] else "—"
                printed = [y for lab, m, px, y in paper_points if (lab, m, px) == (v, metric, x)]
                row.append(cell + (f" (paper {printed[0]:.2f})" if printed else ""))
        rows.append(row)
    return Figure(
        title=title,
        caption=caption,
        png_base64=png_base64(fig),
        table={"columns": columns, "rows": rows},
    )


def _cells(st: StudyTables) -> list[dict[str, Any]]:
    return [] if st.cells is None or st.cells.empty else st.cells.to_dict(orient="records")


def sweep_figures(st: StudyTables) -> list[Figure]:
    """CLAT Figure 4: PGD accuracy (y) against ε (x) per (dataset, backbone), one line per
    method, from the ``PGD_eps<ε>`` cells; Table 1's printed adv accuracy at ε = 0.03."""
    stats: dict[tuple[str, str], dict[str, dict[float, tuple[float, float]]]] = {}
    meta: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    for c in _cells(st):
        m = _EPS_METRIC.match(str(c["metric"]))
        if not m:
            continue
        key = (str(c["dataset"]), str(c["backbone"]))
        label = variant_label(str(c["method"]), str(c["variant"]))
        stats.setdefault(key, {}).setdefault(label, {})[float(m[1])] = (
            _num(c["mean"]),
            _num(c["std"]),
        )
        meta.setdefault(key, {})[label] = (str(c["variant"]), str(c["method"]))
    figures = []
    for (dataset, backbone), by_label in stats.items():
        colours = {
            lab: _colour(meta[(dataset, backbone)][lab][1], i) for i, lab in enumerate(by_label)
        }
        points = []
        for lab, (variant, _) in meta[(dataset, backbone)].items():
            printed = _printed_table1(st, dataset, backbone, variant, "PGD10")
            if printed is not None:
                points.append((lab, "PGD", CLAT_TABLE1_EPS, printed.value))
        figures.append(
            _line_figure(
                f"{dataset} · {backbone}: white-box PGD accuracy across ε",
                [("PGD", "PGD accuracy", "accuracy (%)")],
                {lab: list(v) for lab, v in by_label.items()},
                lambda lab, _m, x, d=by_label: d[lab].get(x, (math.nan, math.nan)),
                points,
                colours,
                "ε",
                f"{dataset} · {backbone}: robust accuracy (%) under PGD of strength ε "
                "(x axis) as in CLAT Figure 4 (CLAT red, PGD-AT blue). Line = mean over seeds, "
                "band = ± sample std. Open circles: CLAT Table 1 at ε = 0.03 (there the minimum "
                "over ≥ 10 restarts).",
            )
        )
    return figures


def _k_of(run: Any) -> int | None:
    """A CLAT run's number of critical layers: its ``k`` parameter, else the paper's k of its
    architecture (CLAT Sec. 4.1); None for a run that is not CLAT."""
    protocol = run.protocol or {}
    if "CLAT" not in run.method:
        return None
    k = (protocol.get("method_params") or {}).get("k")
    if k is not None:
        return int(k)
    arch = protocol.get("arch")
    if not arch:
        return None
    from robustft.clat.criticality import PAPER_K
    from robustft.models.cifar import CIFAR_ARCHS

    spec = CIFAR_ARCHS.get(str(arch))
    return PAPER_K.get(spec.paper_name, 1) if spec is not None else None


def critical_layer_figures(st: StudyTables) -> list[Figure]:
    """CLAT Figure 3: adversarial and clean accuracy (y) against k (x) per (dataset,
    backbone); Table 1's printed values at the architecture's default k."""
    ks: dict[tuple[str, str, str], int] = {}
    for r in st.runs:
        k = _k_of(r)
        if k is not None:
            ks[(r.dataset, r.backbone, r.variant)] = k
    cells = _cells(st)
    figures = []
    for dataset, backbone in dict.fromkeys((d, b) for d, b, _ in ks):
        group = {v: k for (d, b, v), k in ks.items() if (d, b) == (dataset, backbone)}
        if len(set(group.values())) < 2:
            continue
        stats: dict[tuple[str, float], tuple[float, float]] = {}
        for c in cells:
            v = str(c["variant"])
            if (c["dataset"], c["backbone"]) == (dataset, backbone) and v in group:
                stats[(str(c["metric"]), float(group[v]))] = (_num(c["mean"]), _num(c["std"]))
        points = []
        default_k = {}
        for v, k in group.items():
            for metric in ("PGD10", "SA"):
                printed = _printed_table1(st, dataset, backbone, v, metric)
                # Table 1 prints the default k only: a k variant's explicit k is not it
                explicit = any(
                    (r.protocol or {}).get("method_params", {}).get("k") is not None
                    for r in st.runs
                    if (r.dataset, r.backbone, r.variant) == (dataset, backbone, v)
                )
                if printed is not None and not explicit:
                    points.append(("CLAT", metric, float(k), printed.value))
                    default_k[v] = k
        figures.append(
            _line_figure(
                f"{dataset} · {backbone}: CLAT against the number of critical layers",
                [("PGD10", "Adversarial accuracy", "accuracy (%)"), ("SA", "Clean accuracy", "")],
                {"CLAT": sorted(float(k) for k in group.values())},
                lambda _lab, m, x, d=stats: d.get((m, x), (math.nan, math.nan)),
                points,
                {"CLAT": _RED},
                "number of critical layers k",
                f"{dataset} · {backbone}: CLAT's adversarial (PGD-10) and clean accuracy (%) "
                "against the number of critical layers fine-tuned, as in CLAT Figure 3. Line = "
                "mean over seeds, band = ± sample std. Open circles: CLAT Table 1 at the "
                "architecture's default k.",
                x_text=lambda x: f"{x:.0f}",
            )
        )
    return figures


def paper_figures(st: StudyTables) -> list[Figure]:
    """Every settings-axis paper figure the study's data supports (possibly none)."""
    return sweep_figures(st) + critical_layer_figures(st)
