"""The papers' printed numbers and how a study's rows map onto them.

Owns (1) the published values of the AutoLoRa and CLAT papers, packaged as tidy CSV in
``robustft/tables/paper_values/`` so that a run never reads outside the project (they were
transcribed once; see the provenance notes in the project's shared folder), and (2)
:class:`PaperRef`, a study's statement of which paper table it mirrors and how pipeline names
(``cifar10``, ``resnet18``, variant labels, ``PGD10``) become the printed ones.

Both value CSVs have the columns ``paper,table,backbone,dataset,method,variant,metric,value,
unit,transcription,note`` and (table, backbone, dataset, method, variant, metric) is unique
within a paper. ``transcription`` is how the cell was read (the shared transcription's ``note``:
printed form, caption details); ``note`` says where the paper contradicts itself or cannot be
reproduced by any count (CLAT Table 6's trainable parameters beyond RN18/RN50, AutoLoRa Table
3's LoRA ratios), empty elsewhere: :attr:`PaperValue.note` is what the report shows beside the
cell (the cell records' ``paper_note``), so a mismatch there is explained, not silent.
An empty ``variant`` is the paper's default setting; an empty ``dataset`` a dataset-independent
value. ``autolora_hparams.csv`` is AutoLoRa Table 7 (baseline hyper-parameters) as printed.

Names in the pipeline (``cifar10``, ``resnet18``) differ from the printed ones (``CIFAR-10``,
``ResNet-18``, CLAT's ``RN18``); :func:`resolve_name` maps them through a small alias table and
a case/punctuation-insensitive comparison, so a study config rarely needs an explicit mapping.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from robustft.tables.records import RunRecord

__all__ = [
    "PAPERS",
    "PaperRef",
    "PaperValue",
    "hparams",
    "load_paper_values",
    "lookup",
    "lookup_entry",
    "resolve_name",
]

#: paper name (as in the CSV ``paper`` column) -> packaged file name
PAPERS: dict[str, str] = {"AutoLoRa": "autolora.csv", "CLAT": "clat.csv"}
#: package and folder that hold the CSVs (package data, see pyproject.toml)
_PACKAGE, _FOLDER = "robustft.tables", "paper_values"

# Pipeline spellings that the punctuation-insensitive match cannot find on its own.
# Keys are canonical (lower-case alphanumerics); values are printed names in either paper.
_ALIASES: dict[str, tuple[str, ...]] = {
    # datasets
    "dtd": ("DTD-57",),
    "dtd47": ("DTD-57",),  # the paper prints DTD-57 for the 47-class DTD
    "dog": ("DOG-120",),
    "dogs": ("DOG-120",),
    "stanforddogs": ("DOG-120",),
    "cub": ("CUB-200",),
    "cub2002011": ("CUB-200",),
    "caltech": ("Caltech-256",),
    # backbones: AutoLoRa spells ResNet-18, CLAT RN18
    "resnet18": ("ResNet-18", "RN18"),
    "resnet50": ("ResNet-50", "RN50"),
    "preactresnet18": ("PreactRN18",),
    "densenet121": ("DN121",),
    "wideresnet3410": ("WRN34-10",),
    "wrn3410": ("WRN34-10",),
    "wideresnet7016": ("WRN70-16",),
    "wrn7016": ("WRN70-16",),
    "vgg19bn": ("VGG19",),
}


def _canon(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


@dataclass(frozen=True)
class PaperValue:
    """One printed cell: ``value`` as float, ``text`` exactly as printed."""

    paper: str
    table: int
    backbone: str
    dataset: str
    method: str
    variant: str
    metric: str
    value: float
    text: str
    unit: str
    #: where the paper is inconsistent or cannot be reproduced (shown beside the cell), or ""
    note: str
    #: how the cell was transcribed (printed form, caption details)
    transcription: str = ""


@functools.cache
def _load(paper: str) -> pd.DataFrame:
    if paper not in PAPERS:
        raise KeyError(f"unknown paper {paper!r}; known: {sorted(PAPERS)}")
    ref = resources.files(_PACKAGE).joinpath(_FOLDER, PAPERS[paper])
    with ref.open("r", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    df = pd.DataFrame(rows, dtype=str).fillna("")
    df["text"] = df["value"]
    df["value"] = df["value"].astype(float)
    df["table"] = df["table"].astype(int)
    return df


def load_paper_values(paper: str | None = None) -> pd.DataFrame:
    """All printed values of one paper (or both), one row per cell; ``text`` keeps the print."""
    if paper is not None:
        return _load(paper).copy()
    return pd.concat([_load(p) for p in PAPERS], ignore_index=True)


def hparams() -> pd.DataFrame:
    """AutoLoRa Table 7 (baseline lr, weight decay, TWINS gamma) as printed."""
    ref = resources.files(_PACKAGE).joinpath(_FOLDER, "autolora_hparams.csv")
    with ref.open("r", encoding="utf-8", newline="") as fh:
        return pd.DataFrame(list(csv.DictReader(fh)), dtype=str).fillna("")


def resolve_name(paper: str, column: str, name: str | None) -> str | None:
    """Map a pipeline name (``cifar10``) to the paper's printed one (``CIFAR-10``).

    Exact match first, then case/punctuation-insensitive, then the alias table. Returns None
    when the paper has no such name in ``column`` (``dataset``, ``backbone``, ``method``...).
    """
    if name is None:
        return None
    printed = set(_load(paper)[column].unique())
    if name in printed:
        return name
    by_canon = {_canon(p): p for p in printed}
    key = _canon(name)
    if key in by_canon:
        return by_canon[key]
    for alias in _ALIASES.get(key, ()):
        if alias in printed:
            return alias
    return None


def lookup_entry(
    paper: str,
    table: int | None,
    backbone: str | None,
    dataset: str | None,
    method: str,
    variant: str | None,
    metric: str,
) -> PaperValue | None:
    """The printed cell for these keys, or None when the paper does not print it.

    ``backbone`` and ``dataset`` go through :func:`resolve_name`; ``None``/"" for ``variant``
    is the paper's default setting, and for ``dataset`` a dataset-independent value.
    ``table=None`` searches every table and answers only when the match is unambiguous
    (one cell, or several cells printing the same value — e.g. a default row repeated).
    """
    df = _load(paper)
    keys = {
        "backbone": resolve_name(paper, "backbone", backbone) if backbone else "",
        "dataset": resolve_name(paper, "dataset", dataset) if dataset else "",
        "method": method,
        "variant": variant or "",
        "metric": metric,
    }
    if any(v is None for v in keys.values()):
        return None
    mask = pd.Series(True, index=df.index)
    for col, val in keys.items():
        mask &= df[col] == val
    if table is not None:
        mask &= df["table"] == int(table)
    hit = df[mask]
    if hit.empty or hit["value"].nunique() != 1:
        return None
    row = hit.iloc[0]
    return PaperValue(
        paper=row["paper"],
        table=int(row["table"]),
        backbone=row["backbone"],
        dataset=row["dataset"],
        method=row["method"],
        variant=row["variant"],
        metric=row["metric"],
        value=float(row["value"]),
        text=row["text"],
        unit=row["unit"],
        note=row["note"],
        transcription=row["transcription"],
    )


def lookup(
    paper: str,
    table: int | None,
    backbone: str | None,
    dataset: str | None,
    method: str,
    variant: str | None,
    metric: str,
) -> float | None:
    """The printed value as float (percent for accuracies), or None when absent."""
    entry = lookup_entry(paper, table, backbone, dataset, method, variant, metric)
    return None if entry is None else entry.value


# ----------------------------------------------------------------------------- a study's mapping


# Which printed metric corresponds to our eval.json metric, per (paper, table).
# AutoLoRa Tables 3-6 print PGD-10 accuracy as "RA" (Table 3 caption); CLAT prints "clean"
# and "adv" (white-box PGD-10, eps=0.03), APGD-CE in Table 8, black-box transfer in Table 2,
# layer indices (Tables 3, 7), timing (Table 7) and parameter counts (Table 6).
_DEFAULT_METRIC_MAP: dict[str, dict[int | None, dict[str, str]]] = {
    "AutoLoRa": {3: {"PGD10": "RA"}, 4: {"PGD10": "RA"}, 5: {"PGD10": "RA"}, 6: {"PGD10": "RA"}},
    "CLAT": {
        None: {
            "SA": "clean",
            "PGD10": "adv",
            "APGD_CE": "adv_apgd_ce",
            "BB": "adv_blackbox",
            "CRIT": "critical_layer_index",
            "TIME_S": "time_s",
            "EPOCH_S": "epoch_time_s",
            "PARAMS": "trainable_params",
            "PARAMS_TOTAL": "trainable_params_total",
            "PARAMS_PCT": "pct_params_trainable",
        }
    },
}

#: the printed row of a run: (backbone, dataset, method, variant)
CellKey = tuple[str, str, str, str]


@dataclass
class PaperRef:
    """Where a study mirrors a paper table, and how our names map onto the printed ones.

    ``paper`` (alias ``name``) is ``AutoLoRa`` or ``CLAT``. ``table`` may be an int, a
    ``{backbone: table}`` mapping (AutoLoRa Tables 1/2), or None (search every table; a value
    is used only when unambiguous). ``pvalue_table`` is where the printed p-values are
    (AutoLoRa Table 8). ``datasets`` and ``backbones`` map pipeline names to printed ones where
    the automatic matching of :func:`resolve_name` is not enough; a backbone may also carry a
    printed variant, ``{"name": "ResNet-18", "variant": "eps_pt=1/255"}`` (AutoLoRa Table 4
    varies the backbone). ``metrics`` maps ``SA``/``PGD10``/``AA`` to printed metric names
    (defaults: AutoLoRa Tables 3-6 ``PGD10→RA``; CLAT ``SA→clean``, ``PGD10→adv``).
    ``variants`` maps one of our variants to the printed ``{"method": ..., "variant": ...}``
    (``null`` = no paper value); by default the printed method is the run's display name and
    the printed variant its group labels joined as ``k=v;k=v`` (``{"rank": 4}`` → ``rank=4``,
    the spelling of AutoLoRa Tables 3-6), or "" (the paper's default setting) when it has none.
    """

    paper: str
    table: int | dict[str, int] | None = None
    pvalue_table: int | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    backbones: dict[str, str | dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, str] | None = None
    variants: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    @classmethod
    def coerce(cls, obj: PaperRef | Mapping[str, Any] | None) -> PaperRef | None:
        if obj is None or isinstance(obj, PaperRef):
            return obj
        obj = dict(obj)
        if "name" in obj:  # config.yaml spells it paper: {name: AutoLoRa, table: 1}
            obj["paper"] = obj.pop("name")
        return cls(**obj)

    def _backbone(self, backbone: str) -> tuple[str, str]:
        bb = self.backbones.get(backbone, backbone)
        if isinstance(bb, Mapping):
            return str(bb.get("name", backbone)), str(bb.get("variant") or "")
        return str(bb), ""

    def table_for(self, backbone: str) -> int | None:
        """The printed table of a backbone's rows (AutoLoRa: Table 1 ResNet-18, 2 ResNet-50)."""
        if isinstance(self.table, Mapping):
            t = self.table.get(backbone)
            if t is None:
                printed = resolve_name(self.paper, "backbone", self._backbone(backbone)[0])
                t = self.table.get(printed) if printed else None
            return None if t is None else int(t)
        return None if self.table is None else int(self.table)

    def metric_for(self, metric: str, table: int | None) -> str:
        """The printed name of one of our metrics in ``table``."""
        if self.metrics is not None and metric in self.metrics:
            return self.metrics[metric]
        defaults = _DEFAULT_METRIC_MAP.get(self.paper, {})
        return {**defaults.get(None, {}), **defaults.get(table, {})}.get(metric, metric)

    def cell_key(self, run: RunRecord) -> CellKey | None:
        """Printed (backbone, dataset, method, variant) of a run's row; None = not printed."""
        if run.variant in self.variants and self.variants[run.variant] is None:
            return None
        v = self.variants.get(run.variant) or {}
        backbone, backbone_variant = self._backbone(run.backbone)
        if "variant" in v:
            variant = str(v["variant"] or "")
        else:
            variant = ";".join(f"{k}={x}" for k, x in run.labels.items())
        variant = ";".join(p for p in (backbone_variant, variant) if p)
        return (
            backbone,
            self.datasets.get(run.dataset, run.dataset),
            str(v.get("method", run.method)),
            variant,
        )

    def source(self, table: int | None) -> str:
        """``AutoLoRa Table 1``: where a printed value was read, as the report cites it."""
        return f"{self.paper} Table {table}" if table is not None else self.paper

    def printed_cell(self, run: RunRecord, metric: str) -> PaperValue | None:
        """The printed value beside a run's ``metric`` cell, or None when the paper has none."""
        key = self.cell_key(run)
        if key is None:
            return None
        table = self.table_for(run.backbone)
        return lookup_entry(self.paper, table, *key, self.metric_for(metric, table))
