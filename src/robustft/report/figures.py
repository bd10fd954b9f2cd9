"""The report's figures: training curves from ``train_log.csv`` and per-class heat maps.

Training curves (:func:`study_figures`): one figure per (dataset, backbone) of a study, with
one panel per quantity that at least one run logged: natural accuracy, robust (PGD) accuracy,
learning rate, the λ1/λ2 schedule of AutoLoRa (Eq. 6-7) and the cosine similarity between the
natural and adversarial gradients (AutoLoRa Fig. 1). Each variant is one colour; the line is
the mean over seeds and the band the min–max over seeds. Columns a method does not log (or
logs as NaN) are skipped, a non-accuracy column it logs as 0 throughout (AutoLoRa's gradient
similarity: its natural loss does not reach the feature extractor) is left out, each with a note
printed under the figure, and a figure with no data at all is not drawn. Legends sit below the
panels, outside every axes, so they never cover a curve. A chained run ("CLAT after 30 PGD-AT
epochs") is drawn on the epoch axis of the whole budget, and the paper's printed SA / PGD-10
values are open circles at the last epoch (AutoLoRa Figures 1-2, CLAT Figure 2).

Per-class heat maps (:func:`per_class_figure`): one per (dataset, backbone), methods ×
classes, one panel per metric.

Figures are PNG rendered headless (matplotlib's Agg canvas) and returned base64-encoded, so
the report embeds them as ``data:`` URIs and stays a single offline file.
"""

from __future__ import annotations

import base64
import io
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

__all__ = ["PANELS", "Figure", "per_class_figure", "study_figures", "training_figure"]

#: group (the names a study's ``figures`` list uses), panel title, y label,
#: [(train_log column, line-style label)], accuracy in percent?
PANELS: tuple[tuple[str, str, str, tuple[tuple[str, str], ...], bool], ...] = (
    (
        "accuracy",
        "Natural accuracy",
        "accuracy (%)",
        (("train_nat_acc", "train"), ("val_nat_acc", "val"), ("test_nat_acc", "test")),
        True,
    ),
    (
        "accuracy",
        "Robust accuracy (PGD)",
        "accuracy (%)",
        (("train_adv_acc", "train"), ("val_pgd_acc", "val"), ("test_pgd_acc", "test")),
        True,
    ),
    ("lr", "Learning rate", "lr", (("lr", ""),), False),
    ("lambda", "λ schedule", "weight", (("lambda1", "λ1"), ("lambda2", "λ2")), False),
    ("grad_sim", "Gradient similarity", "cosine", (("grad_sim", ""),), False),
)
_STYLES = {"train": ":", "val": "--", "test": "-", "λ1": "-", "λ2": "--", "": "-"}


@dataclass(frozen=True)
class Figure:
    """A rendered figure: title, caption, the PNG as base64 text, the notes printed under it
    (series left out and why) and the numbers it plots (``table``: ``{"columns": [...],
    "rows": [[...], ...]}``, printed below the figure)."""

    title: str
    caption: str
    png_base64: str
    notes: tuple[str, ...] = ()
    table: dict[str, list] | None = None

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + self.png_base64


#: why a series is identically zero for a method, when the reason is known (AutoLoRa Sec. 4.1:
#: its natural loss flows through the LoRA branch, so its gradient w.r.t. the feature
#: extractor, the quantity of Eq. 3/4, is 0)
ZERO_REASONS = {
    "grad_sim": "the natural loss does not reach the feature extractor (it flows through the "
    "LoRA branch), so the gradient similarity of Eq. 3/4 is not defined for it",
}


def png_base64(fig: MplFigure) -> str:
    """The figure as base64 PNG (Agg canvas, 90 dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(
    log: Mapping[str, Sequence[float | None]] | None, col: str
) -> tuple[np.ndarray, np.ndarray] | None:
    if not log or col not in log:
        return None
    y = np.array([math.nan if v is None else float(v) for v in log[col]], dtype=float)
    if not np.isfinite(y).any():
        return None
    epochs = log.get("epoch")
    x = (
        np.array([math.nan if v is None else float(v) for v in epochs], dtype=float)
        if epochs is not None and len(epochs) == len(y)
        else np.arange(len(y), dtype=float)
    )
    keep = np.isfinite(x)
    return x[keep], y[keep]


def _mean_band(
    curves: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and min/max over seeds at each epoch any seed logged (NaN-aware)."""
    xs = np.unique(np.concatenate([x for x, _ in curves]))
    grid = np.full((len(curves), len(xs)), np.nan)
    for i, (x, y) in enumerate(curves):
        idx = np.searchsorted(xs, x)
        grid[i, idx] = y
    # epochs where every seed logged NaN give "Mean of empty slice": expected, not an error
    with (
        np.errstate(all="ignore"),
        warnings.catch_warnings(action="ignore", category=RuntimeWarning),
    ):
        return xs, np.nanmean(grid, 0), np.nanmin(grid, 0), np.nanmax(grid, 0)


#: the papers' colours: AutoLoRa Figure 1 draws vanilla RFT blue and TWINS green, CLAT Figure 4
#: PGD-AT blue and CLAT red; the first variant of such a method gets its paper's colour
PAPER_COLOURS = {
    "Vanilla RFT": "tab:blue",
    "TWINS": "tab:green",
    "AutoLoRa": "tab:red",
    "PGD-AT": "tab:blue",
    "PGD-AT+CLAT": "tab:red",
}


def variant_colours(labels: Sequence[str]) -> list:
    """One colour per variant label: the paper's colour for the first variant of a method the
    papers colour (:data:`PAPER_COLOURS`), the unused tab10 colours in order for the rest."""
    taken: dict[int, str] = {}
    for i, label in enumerate(labels):
        colour = PAPER_COLOURS.get(label.split(" (")[0])
        if colour is not None and colour not in taken.values():
            taken[i] = colour
    free = [
        c for c in colormaps["tab10"].colors if to_hex(c) not in {to_hex(v) for v in taken.values()}
    ]
    rest = iter(free * (1 + len(labels) // max(len(free), 1)))
    return [taken[i] if i in taken else next(rest) for i in range(len(labels))]


def _defined(curves: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """False for a series that is identically zero in every seed (a quantity the method does
    not define, logged as 0): it is left out with a note instead of drawn as a flat line."""
    return any(np.any(y[np.isfinite(y)] != 0) for _, y in curves)


def training_figure(
    logs_by_variant: Mapping[str, Sequence[Mapping[str, Sequence[float | None]] | None]],
    title: str,
    groups: Sequence[str] | None = None,
    paper_points: Mapping[str, Sequence[tuple[str, float, float, str]]] | None = None,
) -> Figure | None:
    """Draw the panels for one (dataset, backbone): ``{variant label: [train_log per seed]}``.

    ``groups`` restricts the panels (``accuracy``, ``lr``, ``lambda``, ``grad_sim``).
    ``paper_points`` maps a panel title to ``(variant label, epoch, value %, source)`` points
    drawn as open markers (the paper's printed values). A series a variant logs as NaN
    throughout is skipped with a note, a non-accuracy series it logs as 0 throughout (AutoLoRa's
    gradient similarity) is left out with a note saying why (the method does not define it). The legend sits below the panels, outside every axes, so it never
    covers a curve. Returns None when no run logged any plotted column.
    """
    panels, notes = [], []
    labels = list(logs_by_variant)
    for group, name, ylabel, cols, percent in PANELS:
        if groups is not None and group not in groups:
            continue
        lines, missing, zero = [], [], []
        for ci, (label, logs) in enumerate(logs_by_variant.items()):
            for col, style_label in cols:
                curves = [s for s in (_series(log, col) for log in logs) if s is not None]
                if not curves:
                    missing.append(label)
                elif not percent and not _defined(curves):
                    # (an accuracy of 0 is a result, drawn; a 0 gradient similarity or λ
                    # is a quantity the method does not have)
                    zero.append((label, col))
                else:
                    lines.append((ci, label, style_label, curves))
        if lines:
            panels.append((name, ylabel, percent, lines))
            for label, col in dict.fromkeys(zero):
                why = ZERO_REASONS.get(col, "the method does not define it")
                notes.append(f"{name}: {label} omitted — identically 0 in every seed; {why}.")
            absent = sorted(set(missing) - {line[1] for line in lines})
            if absent:
                notes.append(f"{name}: not logged by {', '.join(absent)} (not defined for it).")
    if not panels:
        return None

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    # object-oriented API with the Agg canvas: no pyplot, no global backend state
    fig = MplFigure(figsize=(4.2 * ncols, 3.0 * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colours = variant_colours(labels)
    styles_used: dict[str, None] = {}
    numbers: list[list[str]] = []  # the table printed below the figure
    for ax, (name, ylabel, percent, lines) in zip(axes.flat, panels, strict=False):
        all_max = max(np.nanmax(y) for *_, curves in lines for _, y in curves)
        # train_log.csv stores accuracies as fractions; show percent like the tables
        scale = 100.0 if percent and all_max <= 1.0 else 1.0
        positive = True
        for ci, label, style_label, curves in lines:
            x, mean, lo, hi = _mean_band(curves)
            if style_label in _TABLED and name != "Learning rate":
                numbers.append(_numbers_row(label, name, style_label, x, mean * scale))
            colour = colours[ci]
            styles_used[style_label] = None
            ax.plot(
                x,
                mean * scale,
                _STYLES.get(style_label, "-"),
                color=colour,
                linewidth=1.4,
                marker="o" if len(x) <= 3 else None,  # a one-epoch run is a point, not a line
                markersize=4,
            )
            if len(curves) > 1:
                ax.fill_between(x, lo * scale, hi * scale, color=colour, alpha=0.15, linewidth=0)
            positive &= bool(np.nanmin(lo) > 0)
        for label, x, y, _source in (paper_points or {}).get(name, ()):
            colour = colours[labels.index(label)] if label in labels else "k"
            ax.plot([x], [y], "o", mfc="none", mec=colour, mew=1.6, ms=7, zorder=5)
        if name == "Learning rate" and positive:
            lo_all = min(np.nanmin(y) for *_, curves in lines for _, y in curves)
            if all_max / lo_all > 50:
                ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    drawn = sorted({ci for *_, lines in panels for ci, *_ in lines})
    handles = [Line2D([], [], color=colours[ci], lw=2) for ci in drawn]
    names = [labels[ci] for ci in drawn]
    for style in (s for s in styles_used if s):
        handles.append(Line2D([], [], color="0.3", ls=_STYLES.get(style, "-")))
        names.append(style)
    if paper_points:
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="0.2", mew=1.6))
        names.append("paper (printed value)")
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 6), fontsize=8)
    fig.suptitle(title, fontsize=11)
    shown = ", ".join(p[0] for p in panels)
    caption = (
        f"{title}: {shown} per epoch. Line = mean over seeds, band = min–max over "
        "seeds; line style: dotted train, dashed validation, solid test."
    )
    if paper_points:
        caption += (
            " Open circles: the paper's printed value ("
            + "; ".join(sorted({p[3] for pts in paper_points.values() for p in pts}))
            + ") at the last epoch."
        )
    table = {
        "columns": ["variant", "series", "epochs", "last (mean)", "best (mean)", "best at epoch"],
        "rows": numbers,
    }
    return Figure(
        title=title,
        caption=caption,
        png_base64=png_base64(fig),
        notes=tuple(notes),
        table=table if numbers else None,
    )


#: the series whose numbers are tabled below a training figure: the test split of the
#: accuracies (AutoLoRa Figure 1b: PGD-10 test accuracy) and the single-line quantities
_TABLED = ("test", "", "λ1", "λ2")


def _numbers_row(label: str, panel: str, style: str, x: np.ndarray, y: np.ndarray) -> list[str]:
    """One row of the numbers below a training figure: the epoch range drawn (a chained run
    starts after its first phase), the last value and the best one with its epoch."""
    finite = np.isfinite(y)
    xs, ys = x[finite], y[finite]
    best = int(np.argmax(ys))
    series = f"{panel} · {style}" if style else panel
    return [
        label,
        series,
        f"{xs[0]:g}–{xs[-1]:g}",
        f"{ys[-1]:.4g}",
        f"{ys[best]:.4g}",
        f"{xs[best]:g}",
    ]


def variant_label(method: str, variant: str) -> str:
    """``method (variant)``, or just the method when the variant is its name."""
    same = re.sub(r"[^0-9a-z]", "", method.lower()) == re.sub(r"[^0-9a-z]", "", variant.lower())
    return method if same else f"{method} ({variant})"


def _shifted(log: Mapping[str, Sequence[float | None]] | None, offset: float | None):
    """A chained run's log on the epoch axis of the whole budget (CLAT Figure 2: CLAT after
    30 PGD-AT epochs starts at epoch 30)."""
    if not log or not offset or "epoch" not in log:
        return log
    return {**log, "epoch": [None if e is None else e + offset for e in log["epoch"]]}


#: cell metric -> the training-curve panel its printed value is drawn on
_PAPER_PANELS = {"SA": "Natural accuracy", "PGD10": "Robust accuracy (PGD)"}


def study_figures(
    runs: Sequence[object],
    groups: Sequence[str] | None = None,
    cells: Sequence[Mapping[str, object]] = (),
) -> list[Figure]:
    """One :func:`training_figure` per (dataset, backbone) of the runs (RunRecord-like).

    Variants are labelled ``method (variant)`` unless the variant is just the method's name.
    ``cells`` (the study's cell rows) put the paper's printed SA / PGD-10 values on the
    accuracy panels at the last epoch (AutoLoRa Figures 1–2 plot the same quantities).
    """
    by_pair: dict[tuple[str, str], dict[str, list]] = {}
    last_epoch: dict[tuple[str, str], float] = {}
    for r in runs:
        offset = (getattr(r, "protocol", None) or {}).get("epoch_offset")
        log = _shifted(r.train_log, offset)
        key = (r.dataset, r.backbone)
        by_pair.setdefault(key, {}).setdefault(variant_label(r.method, r.variant), []).append(log)
        epochs = [e for e in (log or {}).get("epoch", []) if e is not None]
        if epochs:
            last_epoch[key] = max(last_epoch.get(key, 0.0), max(epochs))
    points: dict[tuple[str, str], dict[str, list]] = {}
    for c in cells:
        key, panel = (str(c["dataset"]), str(c["backbone"])), _PAPER_PANELS.get(str(c["metric"]))
        value = c.get("paper_value")
        if panel and key in last_epoch and isinstance(value, int | float) and math.isfinite(value):
            label = variant_label(str(c["method"]), str(c["variant"]))
            point = (label, last_epoch[key], float(value), str(c.get("paper_source") or "paper"))
            points.setdefault(key, {}).setdefault(panel, []).append(point)
    figures = []
    for (dataset, backbone), by_variant in by_pair.items():
        fig = training_figure(
            by_variant, f"{dataset} · {backbone}", groups, points.get((dataset, backbone))
        )
        if fig is not None:
            figures.append(fig)
    return figures


def per_class_figure(
    panels: Mapping[str, Sequence[Sequence[float]]],
    rows: Sequence[str],
    classes: Sequence[str],
    title: str,
) -> Figure | None:
    """Heat map of per-class accuracy (%): one panel per metric, methods × classes.

    ``panels`` maps a metric name to a matrix ``[row][class]`` (NaN = not recorded). A whole
    column near 0 in one row while the others are bright is the symptom the per-class view
    exists for (a class the method never predicts). Returns None without any finite value.
    """
    mats = {m: np.array(v, dtype=float) for m, v in panels.items()}
    mats = {m: a for m, a in mats.items() if a.size and np.isfinite(a).any()}
    if not mats:
        return None
    n_cls, n_rows = len(classes), len(rows)
    annotate = n_cls <= 20 and n_rows <= 12
    width = min(16.0, 2.5 + 0.55 * n_cls)
    fig = MplFigure(figsize=(width, len(mats) * (0.9 + 0.35 * n_rows)), layout="constrained")
    axes = fig.subplots(len(mats), 1, squeeze=False)[:, 0]
    for ax, (metric, a) in zip(axes, mats.items(), strict=True):
        im = ax.imshow(
            np.ma.masked_invalid(a),
            vmin=0,
            vmax=100,
            cmap="viridis",
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(f"{metric} per class (%)", fontsize=10)
        ax.set_yticks(range(n_rows), rows, fontsize=8)
        if n_cls <= 40:
            ax.set_xticks(range(n_cls), classes, fontsize=7, rotation=45, ha="right")
        else:  # too many names to read: index ticks only
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(axis="x", labelsize=7)
            ax.set_xlabel("class index", fontsize=8)
        if annotate:
            for (i, j), v in np.ndenumerate(a):
                if math.isfinite(v):
                    ax.text(
                        j,
                        i,
                        f"{v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v < 55 else "black",
                    )
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    fig.suptitle(title, fontsize=11)
    caption = (
        f"{title}: per-class accuracy (%, mean over seeds) of "
        f"{', '.join(mats)}; rows are methods, columns classes."
    )
    return Figure(title=title, caption=caption, png_base64=png_base64(fig))
