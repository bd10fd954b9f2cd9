"""Published numbers of the AutoLoRa and CLAT papers, as packaged tidy CSV.

The report shows every reproduced number beside the value the paper printed. Those values
were transcribed once (see the provenance notes in the project's shared folder) and copied into
the package (``robustft/paper_values/*.csv``) so that a run never reads outside the project.

Both CSVs have the columns ``paper,table,backbone,dataset,method,variant,metric,value,unit,note``
and (table, backbone, dataset, method, variant, metric) is unique within a paper. An empty
``variant`` is the paper's default setting; an empty ``dataset`` a dataset-independent value.

Names in the pipeline (``cifar10``, ``resnet18``) differ from the printed ones (``CIFAR-10``,
``ResNet-18``, CLAT's ``RN18``); :func:`resolve_name` maps them through a small alias table and
a case/punctuation-insensitive comparison, so a study config rarely needs an explicit mapping.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources

import pandas as pd

__all__ = [
    "PAPERS",
    "PaperValue",
    "hparams",
    "load_paper_values",
    "lookup",
    "lookup_entry",
    "resolve_name",
]

#: paper name (as in the CSV ``paper`` column) -> packaged file name
PAPERS: dict[str, str] = {"AutoLoRa": "autolora.csv", "CLAT": "clat.csv"}

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
    note: str


@functools.cache
def _load(paper: str) -> pd.DataFrame:
    if paper not in PAPERS:
        raise KeyError(f"unknown paper {paper!r}; known: {sorted(PAPERS)}")
    ref = resources.files("robustft").joinpath("paper_values", PAPERS[paper])
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
    ref = resources.files("robustft").joinpath("paper_values", "autolora_hparams.csv")
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
        paper=row["paper"], table=int(row["table"]), backbone=row["backbone"],
        dataset=row["dataset"], method=row["method"], variant=row["variant"],
        metric=row["metric"], value=float(row["value"]), text=row["text"],
        unit=row["unit"], note=row["note"],
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
