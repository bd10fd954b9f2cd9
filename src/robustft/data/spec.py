"""Dataset descriptions as data: what to download, which options exist, how to split.

A :class:`DatasetSpec` is a plain record. The registry (``robustft.data.registry``) holds one
per dataset; the generic :meth:`DatasetSpec.prepare` does the common work (resolve options,
fetch + verify + extract the raw files, call the dataset's own ``build`` function, write the
prepared directory atomically with its manifest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustft.data.download import DownloadError, extract_archive, fetch
from robustft.data.format import SplitData, write_prepared
from robustft.data.splits import official_holdout
from robustft.io import atomic_dir, write_json_atomic

__all__ = [
    "COMMON_OPTIONS",
    "DEFAULT_PRESET",
    "HIGHRES_OPTIONS",
    "PRESETS",
    "Built",
    "DatasetSpec",
    "DownloadFile",
    "Option",
    "PrepareContext",
    "finish_splits",
    "take",
]

log = logging.getLogger(__name__)

#: Presets choose a consistent set of options where the paper and the official code differ.
PRESETS = ("official", "paper")
#: The paper's tables were produced by the official code, so that is the default.
DEFAULT_PRESET = "official"

_MARKER = ".robustft-extracted.json"


@contextlib.contextmanager
def _raw_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so that concurrent jobs (e.g. the ``paper`` and ``official`` variants
    of one dataset) do not download or extract the same raw files at the same time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class DownloadFile:
    """One file to fetch into ``raw_dir``. ``md5``/``sha256`` are the *published* digests
    (``None`` where the source publishes none: the computed sha256 then goes to the
    manifest on first use)."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Option:
    """A named dataset option: default, allowed values/type and why it exists."""

    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    kind: type | tuple[type, ...] | None = None

    def check(self, dataset: str, key: str, value: Any) -> Any:
        if self.choices is not None and value not in self.choices:
            raise ValueError(
                f"dataset {dataset!r}: option {key!r} must be one of "
                f"{list(self.choices)}, got {value!r}"
            )
        if self.kind is not None and value is not None:
            kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                names = "/".join(k.__name__ for k in kinds)
                raise ValueError(
                    f"dataset {dataset!r}: option {key!r} must be {names}, got {value!r}"
                )
        return value


COMMON_OPTIONS: dict[str, Option] = {
    "val_fraction": Option(
        0.05,
        "fraction of the training data held out for validation "
        "(paper Sec. 5: 5%); drawn like the official code with the split "
        "seed",
        kind=float,
    ),
    "val_source": Option(
        "split",
        "'split' = hold val_fraction out of train; 'test' = the "
        "validation set is the test set (official DTD/Caltech-256, TWINS "
        "baselines); then all training data stays in train",
        choices=("split", "test"),
    ),
}

HIGHRES_OPTIONS: dict[str, Option] = {
    **COMMON_OPTIONS,
    "crop_pct": Option(
        1.0,
        "resize the short side to floor(resolution / crop_pct), then "
        "centre-crop `resolution`; 0.875 = the official Resize(256) -> "
        "CenterCrop(224) test transform (training-time RandomResizedCrop then "
        "works on that stored crop, not on the full 256-px image)",
        kind=float,
    ),
}


@dataclass
class PrepareContext:
    """What a dataset's ``build`` function receives."""

    name: str
    root: Path | None
    resolution: int
    options: dict[str, Any]
    seed: int

    @property
    def short_side(self) -> int:
        crop = float(self.options.get("crop_pct", 1.0))
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"{self.name}: crop_pct must be in (0, 1], got {crop}")
        return math.floor(self.resolution / crop + 1e-9)


@dataclass
class Built:
    """What a ``build`` function returns: class names, head size and the splits."""

    classes: list[str]
    splits: dict[str, SplitData]
    val_is_test: bool = False
    num_classes: int | None = None  # head size; defaults to len(classes)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def take(data: SplitData, idx: np.ndarray) -> SplitData:
    """Subset a :class:`SplitData` (array or file list) by integer indices."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(data.images, np.ndarray):
        images: Any = data.images[idx]
    else:
        files = list(data.images)
        images = [files[i] for i in idx]
    return SplitData(images, np.asarray(data.labels)[idx], data.short_side)


def finish_splits(
    train_pool: SplitData, test: SplitData, ctx: PrepareContext
) -> tuple[dict[str, SplitData], bool, list[str]]:
    """Apply ``val_source`` / ``val_fraction`` to a train pool (the common rule of Sec. 5)."""
    if ctx.options["val_source"] == "test":
        return (
            {"train": train_pool, "test": test},
            True,
            ["validation set = test set (no held-out split), as in the official code"],
        )
    vf = float(ctx.options["val_fraction"])
    tr, va = official_holdout(len(train_pool), vf, ctx.seed)
    note = (
        f"validation = random {vf:.0%} of the training data: "
        f"np.random.RandomState({ctx.seed}).choice(N, int({1 - vf:g}*N), replace=False) "
        "are train, the rest val (official draw)"
    )
    return {"train": take(train_pool, tr), "val": take(train_pool, va), "test": test}, False, [note]


BuildFn = Callable[[PrepareContext], Built]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset in the registry."""

    name: str
    num_classes: int  # head size under the default options
    default_resolution: int
    build: BuildFn
    description: str
    split_rule: str  # human-readable, also written to the manifest
    files: tuple[DownloadFile, ...] = ()
    probe: tuple[str, ...] = ()  # paths (relative to raw_dir/<name>) that prove
    # the raw data is already extracted
    options: Mapping[str, Option] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {p: {} for p in PRESETS}
    )
    num_classes_fn: Callable[[Mapping[str, Any]], int] | None = None
    generated: bool = False

    # ---- options -------------------------------------------------------------------------
    def resolve_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults <- preset <- explicit options; unknown keys are an error naming the key."""
        options = dict(options or {})
        preset = options.pop("preset", DEFAULT_PRESET)
        if preset not in self.presets:
            raise ValueError(
                f"dataset {self.name!r}: unknown preset {preset!r}; choose from "
                f"{sorted(self.presets)}"
            )
        resolved = {k: o.default for k, o in self.options.items()}
        resolved.update(self.presets[preset])
        for key, value in options.items():
            if key not in self.options:
                raise ValueError(
                    f"dataset {self.name!r}: unknown option {key!r}; known "
                    f"options: {sorted(self.options) + ['preset']}"
                )
            resolved[key] = value
        for key, value in list(resolved.items()):
            resolved[key] = self.options[key].check(self.name, key, value)
        resolved["preset"] = preset
        return resolved

    def num_classes_for(self, options: Mapping[str, Any] | None = None) -> int:
        """Head size for the given options (e.g. generated ``num_classes``, DTD 47/57)."""
        if self.num_classes_fn is None:
            return self.num_classes
        return int(self.num_classes_fn(self.resolve_options(options)))

    def describe_options(self) -> str:
        lines = [f"{self.name}: {self.description}", f"  split rule: {self.split_rule}"]
        for k, o in self.options.items():
            lines.append(f"  {k} (default {o.default!r}): {o.doc}")
        for p, vals in self.presets.items():
            lines.append(f"  preset {p}: {dict(vals)}")
        return "\n".join(lines)

    # ---- raw data ------------------------------------------------------------------------
    def raw_root(self, raw_dir: str | os.PathLike[str]) -> Path:
        return Path(raw_dir) / self.name

    def ensure_raw(
        self, raw_dir: str | os.PathLike[str], *, offline: bool | None = None
    ) -> tuple[Path, list[dict[str, Any]]]:
        """Fetch, verify and extract the raw files; return the extracted root and the
        provenance of every file (URL, published and computed checksums).

        Archives live in ``raw_dir/<filename>`` (the place to drop manually downloaded
        files); they are extracted to ``raw_dir/<name>/`` atomically, with a marker recording
        the archive checksums. A ``raw_dir/<name>/`` that already holds the layout but no
        marker is used as it is (data extracted by hand).
        """
        raw_dir = Path(raw_dir)
        with _raw_lock(raw_dir / f".{self.name}.lock"):
            return self._ensure_raw(raw_dir, offline)

    def _ensure_raw(self, raw_dir: Path, offline: bool | None) -> tuple[Path, list[dict[str, Any]]]:
        root = self.raw_root(raw_dir)
        marker = root / _MARKER
        present = bool(self.probe) and all((root / p).exists() for p in self.probe)
        if present and marker.exists():
            with open(marker, encoding="utf-8") as fh:
                info = json.load(fh)
            log.info("Using extracted %s in %s", self.name, root)
            return root, info["files"]
        if present:
            log.warning(
                "Using %s as found in %s (extracted by hand: archive checksums cannot be checked)",
                self.name,
                root,
            )
            return root, [
                {
                    "filename": f.filename,
                    "url": f.url,
                    "md5_published": f.md5,
                    "sha256_published": f.sha256,
                    "sha256": None,
                    "note": "pre-extracted by the user",
                }
                for f in self.files
            ]
        info: list[dict[str, Any]] = []
        failed: DownloadError | None = None
        also_missing: list[str] = []
        for f in self.files:
            dest = raw_dir / f.filename
            if failed is not None:  # name every missing file in one message, try no more
                if not dest.exists():
                    also_missing.append(f"{f.filename} from {f.url} at {dest.resolve()}")
                continue
            try:
                digest = fetch(f.url, dest, sha256=f.sha256, md5=f.md5, offline=offline)
            except DownloadError as err:
                failed = err
                continue
            info.append(
                {
                    "filename": f.filename,
                    "url": f.url,
                    "md5_published": f.md5,
                    "sha256_published": f.sha256,
                    "sha256": digest,
                }
            )
        if failed is not None:
            msg = str(failed)
            if also_missing:
                msg += " Also missing: " + "; ".join(also_missing) + "."
            msg += (
                f" (Alternatively extract the data by hand so that "
                f"{', '.join(str(root / p) for p in self.probe)} exist.)"
            )
            raise DownloadError(msg, url=failed.url, dest=failed.dest) from failed
        with atomic_dir(root) as tmp:
            for f in self.files:
                extract_archive(raw_dir / f.filename, tmp)
            missing = [p for p in self.probe if not (tmp / p).exists()]
            if missing:
                raise FileNotFoundError(
                    f"{self.name}: after extracting {[f.filename for f in self.files]} the "
                    f"expected paths {missing} are missing under {root}; the archives do not "
                    "have the expected layout."
                )
            write_json_atomic(tmp / _MARKER, {"files": info})
        return root, info

    # ---- preparation ---------------------------------------------------------------------
    def prepare(
        self,
        raw_dir: str | os.PathLike[str] | None,
        out_dir: str | os.PathLike[str],
        resolution: int | None = None,
        options: Mapping[str, Any] | None = None,
        seed: int = 0,
        *,
        offline: bool | None = None,
    ) -> Path:
        """Prepare this dataset into ``out_dir`` (see ``robustft.data.format``)."""
        opts = self.resolve_options(options)
        res = resolution
        if "resolution" in opts:  # generated datasets also take it as an option
            opt_res = opts.pop("resolution")
            if res is None:
                res = opt_res
            elif opt_res is not None and int(opt_res) != int(res):
                raise ValueError(
                    f"{self.name}: resolution {res} conflicts with option resolution={opt_res}"
                )
        res = int(res if res is not None else self.default_resolution)
        if res <= 0:
            raise ValueError(f"{self.name}: resolution must be positive, got {res}")
        if self.generated:
            root, files = None, []
        else:
            if raw_dir is None:
                raise ValueError(f"{self.name} needs --raw-dir (where archives are stored)")
            root, files = self.ensure_raw(raw_dir, offline=offline)
        ctx = PrepareContext(self.name, root, res, opts, int(seed))
        log.info("Preparing %s at %d px, seed %d, options %s", self.name, res, seed, opts)
        built = self.build(ctx)
        num_classes = built.num_classes if built.num_classes is not None else len(built.classes)
        classes = list(built.classes)
        if num_classes > len(classes):  # head wider than the label set (DTD-57)
            classes += [f"__unused_{i}__" for i in range(len(classes), num_classes)]
        source: dict[str, Any] = {"files": files} if not self.generated else {}
        source.update(built.extra.pop("source", {}))
        return write_prepared(
            out_dir,
            name=self.name,
            classes=classes,
            num_classes=num_classes,
            resolution=res,
            splits=built.splits,
            split_seed=int(seed),
            source=source,
            options=opts,
            val_is_test=built.val_is_test,
            extra={"split_rule": self.split_rule, "notes": built.notes, **built.extra},
        )
