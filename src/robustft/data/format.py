"""The one on-disk format every later step reads: writing it, opening it, verifying it.

A prepared dataset directory holds::

    train_x.npy  val_x.npy  test_x.npy     uint8, N x H x W x 3 (memory-mappable)
    train_y.npy  val_y.npy  test_y.npy     int64, N
    manifest.json                          name, num_classes, classes, resolution, counts,
                                           sha256 of every .npy, split_seed, source, options

Images are stored already resized (short side + centre crop) so that training never decodes
JPEGs: a CPU epoch then costs only the model. When the validation set *is* the test set (the
official DTD / Caltech-256 protocol) ``val_*.npy`` are hard links to ``test_*.npy``.

Owns the files: :func:`write_prepared` (atomic), :func:`load_prepared` /
:class:`PreparedDataset` (manifest, counts, classes) and the verification of what is read.
Every read goes through :meth:`PreparedDataset.arrays`, which first checks the files it is
about to read against the manifest's sha256 (:func:`check_prepared_file`), once per process and
file: a same-size corruption would otherwise be trained and evaluated on silently, and a
truncated file would fail deep inside ``np.load`` without naming itself. Turning the arrays
into batches of tensors is :mod:`robustft.batches` (the one reader); augmentations are
:mod:`robustft.data.transforms`. This module imports no torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from robustft.io import atomic_dir, sha256_file, write_json_atomic

__all__ = [
    "FORMAT_VERSION",
    "SPLITS",
    "ManifestError",
    "PreparedDataset",
    "SplitData",
    "check_prepared_file",
    "load_image",
    "load_prepared",
    "resize_center_crop",
    "write_prepared",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


class ManifestError(RuntimeError):
    """A prepared directory is missing files or does not match its manifest, or a source
    image could not be read while writing one."""


# --------------------------------------------------------------------------------------------
# verification at read time

# sha256 of every file hashed in this process, keyed by the file's identity and state: device,
# inode, size, mtime and ctime (ns). Three ``load_split`` calls of one training job therefore
# hash each file once, the val/test hard links of a val-is-test dataset share one entry, and a
# file rewritten after it was hashed gets a new key (its mtime/ctime move) and is hashed again.
_HASHED: dict[tuple[int, int, int, int, int], str] = {}
# roots whose manifest has no checksums: warned about once per process, not once per read
_WARNED_UNVERIFIED: set[str] = set()


def _redo_hint(root: Path) -> str:
    return (
        f"Delete {root}/ and re-run the pipeline (or "
        "`python -m robustft.steps.prepare_data`) to prepare it again."
    )


def _file_key(path: Path) -> tuple[int, int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_prepared_file(root: Path, manifest: Mapping[str, Any], fname: str) -> None:
    """Raise :class:`ManifestError` unless ``root/fname`` has the sha256 its manifest records.

    The hash is cached per process (see ``_HASHED``), so only the first read of a file pays
    for it. A manifest without a ``sha256`` entry for the file (hand-written fixtures, datasets
    prepared before checksums were recorded) is accepted with a warning, once per directory.
    """
    path = root / fname
    expected = (manifest.get("sha256") or {}).get(fname)
    if expected is None:
        if str(root) not in _WARNED_UNVERIFIED:
            _WARNED_UNVERIFIED.add(str(root))
            log.warning(
                "%s has no sha256 for %s: reading the prepared data unverified",
                root / "manifest.json",
                fname,
            )
        return
    try:
        key = _file_key(path)
    except FileNotFoundError:
        raise ManifestError(
            f"{path} is listed in {root / 'manifest.json'} but missing. {_redo_hint(root)}"
        ) from None
    actual = _HASHED.get(key)
    if actual is None:
        actual = _HASHED[key] = sha256_file(path)
    if actual != expected:
        raise ManifestError(
            f"{path}: the file changed since it was prepared (sha256 {actual}, "
            f"{root / 'manifest.json'} records {expected}; {key[2]} bytes on disk), so it is "
            f"corrupt, truncated or was overwritten. {_redo_hint(root)}"
        )


def _load_array(path: Path, root: Path) -> np.ndarray:
    """``np.load(mmap_mode="r")`` whose failures (truncated or garbled file) name the file."""
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        if isinstance(err, FileNotFoundError):
            raise ManifestError(
                f"{path} missing from prepared dataset {root}. {_redo_hint(root)}"
            ) from err
        raise ManifestError(
            f"{path}: cannot be read as a NumPy array (truncated or "
            f"corrupt: {err}). {_redo_hint(root)}"
        ) from err


# --------------------------------------------------------------------------------------------
# image loading


def resize_center_crop(
    img: Image.Image, resolution: int, short_side: int | None = None
) -> Image.Image:
    """torchvision's ``Resize(short_side) -> CenterCrop(resolution)`` on a PIL image.

    Same arithmetic as torchvision (long side ``int(s * long / short)``, crop offset
    ``round((size - crop) / 2)``, bilinear with PIL's antialiasing) so that ``short_side=256,
    resolution=224`` reproduces the official test transform pixel for pixel.
    """
    s = resolution if short_side is None else int(short_side)
    if s < resolution:
        raise ValueError(f"short side {s} is smaller than the crop {resolution}")
    w, h = img.size
    if w <= h:
        nw, nh = s, int(s * h / w)
    else:
        nw, nh = int(s * w / h), s
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    left = round((nw - resolution) / 2.0)
    top = round((nh - resolution) / 2.0)
    if (left, top, nw, nh) != (0, 0, resolution, resolution):
        img = img.crop((left, top, left + resolution, top + resolution))
    return img


def load_image(
    path: str | os.PathLike[str], resolution: int, short_side: int | None = None
) -> np.ndarray:
    """Decode any PIL-readable image as RGB (grey is repeated to 3 channels) at ``resolution``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im = resize_center_crop(im, resolution, short_side)
        return np.asarray(im, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# writing


@dataclass
class SplitData:
    """One split before writing: images as an array already at the target resolution, or as
    image files that are decoded and resized one by one straight into a memory map (so a
    4 GB Caltech-256 never has to fit in RAM)."""

    images: np.ndarray | Sequence[str | os.PathLike[str]]
    labels: np.ndarray
    # short side for files (None = resolution); arrays are resized only if their size differs
    short_side: int | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _write_images(path: Path, data: SplitData, resolution: int, name: str) -> None:
    n = len(data)
    if isinstance(data.images, np.ndarray):
        arr = data.images
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(
                f"{name}: images must be uint8 N x H x W x 3, got {arr.dtype} {arr.shape}"
            )
        if arr.shape[0] != n:
            raise ValueError(f"{name}: {arr.shape[0]} images but {n} labels")
        if arr.shape[1:3] != (resolution, resolution):
            arr = (
                np.stack(
                    [
                        np.asarray(
                            resize_center_crop(Image.fromarray(a), resolution, data.short_side)
                        )
                        for a in arr
                    ]
                )
                if n
                else np.zeros((0, resolution, resolution, 3), np.uint8)
            )
        np.save(path, np.ascontiguousarray(arr))
        return
    files = list(data.images)
    if len(files) != n:
        raise ValueError(f"{name}: {len(files)} image files but {n} labels")
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(n, resolution, resolution, 3)
    )
    # duplicates (official Caltech-256 windows) are decoded once and kept in a small cache
    seen: set[str] = set()
    dups: set[str] = set()
    for f in files:
        k = os.fspath(f)
        (dups if k in seen else seen).add(k)
    cache: dict[str, np.ndarray] = {}
    t0 = last = time.monotonic()
    for i, f in enumerate(files):
        key = os.fspath(f)
        img = cache.get(key)
        if img is None:
            try:
                img = load_image(f, resolution, data.short_side)
            except (OSError, ValueError) as err:
                raise ManifestError(f"{name}: cannot read image {f}: {err}") from err
            if key in dups:
                cache[key] = img
        out[i] = img
        if time.monotonic() - last > 10:
            last = time.monotonic()
            log.info("  %s: %d/%d images (%.0f s)", name, i + 1, n, last - t0)
    out.flush()
    del out


def write_prepared(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    classes: Sequence[str],
    num_classes: int,
    resolution: int,
    splits: Mapping[str, SplitData],
    split_seed: int | None,
    source: Mapping[str, Any],
    options: Mapping[str, Any],
    val_is_test: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the arrays and the manifest atomically (temp dir, then rename).

    ``splits`` must contain ``train`` and ``test``, and ``val`` unless ``val_is_test`` (then
    the val files are hard links to the test files).
    """
    out_dir = Path(out_dir)
    if len(classes) != num_classes:
        raise ValueError(f"{name}: {len(classes)} class names for num_classes={num_classes}")
    needed = ("train", "test") if val_is_test else SPLITS
    for s in needed:
        if s not in splits:
            raise ValueError(f"{name}: split {s!r} missing")
    for s, data in splits.items():
        labels = np.asarray(data.labels)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name}/{s}: labels outside [0, {num_classes})")
    with atomic_dir(out_dir) as tmp:
        for s in ("train", "test") if val_is_test else SPLITS:
            data = splits[s]
            log.info("Writing %s/%s: %d images at %d px", name, s, len(data), resolution)
            _write_images(tmp / f"{s}_x.npy", data, resolution, f"{name}/{s}")
            np.save(tmp / f"{s}_y.npy", np.asarray(data.labels, dtype=np.int64))
        if val_is_test:
            for kind in ("x", "y"):
                try:
                    os.link(tmp / f"test_{kind}.npy", tmp / f"val_{kind}.npy")
                except OSError:
                    shutil.copyfile(tmp / f"test_{kind}.npy", tmp / f"val_{kind}.npy")
        counts = {s: int(np.load(tmp / f"{s}_y.npy", mmap_mode="r").shape[0]) for s in SPLITS}
        checksums = {
            f"{s}_{k}.npy": sha256_file(tmp / f"{s}_{k}.npy") for s in SPLITS for k in ("x", "y")
        }
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "num_classes": int(num_classes),
            "classes": list(classes),
            "resolution": int(resolution),
            "counts": counts,
            "sha256": checksums,
            "split_seed": split_seed,
            "val_is_test": bool(val_is_test),
            "source": dict(source),
            "options": dict(options),
        }
        if extra:
            manifest.update(dict(extra))
        write_json_atomic(tmp / "manifest.json", manifest)
    log.info("Prepared %s in %s: %s", name, out_dir, counts)
    return out_dir


# --------------------------------------------------------------------------------------------
# reading


@dataclass
class PreparedDataset:
    """A prepared dataset directory (see module docstring)."""

    root: Path
    manifest: dict[str, Any]
    _verified: set[str] = field(default_factory=set, repr=False)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def num_classes(self) -> int:
        """Size of the classifier head (DTD: 57 under both presets, see ``classes``)."""
        return int(self.manifest["num_classes"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def resolution(self) -> int:
        if "resolution" in self.manifest:
            return int(self.manifest["resolution"])
        return int(self.arrays("train")[0].shape[1])

    @property
    def counts(self) -> dict[str, int]:
        if "counts" in self.manifest:
            return dict(self.manifest["counts"])
        return {s: len(self.arrays(s)[1]) for s in SPLITS}

    @property
    def val_is_test(self) -> bool:
        return bool(self.manifest.get("val_is_test", False))

    def _paths(self, split: str) -> tuple[Path, Path]:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; choose from {SPLITS}")
        return self.root / f"{split}_x.npy", self.root / f"{split}_y.npy"

    def check(self, split: str) -> None:
        """Check the two files of ``split`` against the manifest (cached; see
        :func:`check_prepared_file`); every read below calls this first."""
        for path in self._paths(split):
            check_prepared_file(self.root, self.manifest, path.name)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw memory maps ``(uint8 NHWC, int64 N)`` of files checked against the manifest."""
        self.check(split)
        x, y = self._paths(split)
        return _load_array(x, self.root), _load_array(y, self.root)

    def verify(self) -> None:
        """Recompute the sha256 of every array and compare with the manifest.

        Unlike the per-read check this always re-hashes (it is the explicit ``--verify`` of the
        prepare step), and it refuses a manifest without checksums.
        """
        if "sha256" not in self.manifest:
            raise ManifestError(f"{self.root / 'manifest.json'} has no checksums to verify")
        for fname in self.manifest["sha256"]:
            path = self.root / fname
            if path.exists():
                _HASHED.pop(_file_key(path), None)
            check_prepared_file(self.root, self.manifest, fname)
            self._verified.add(fname)


def load_prepared(path: str | os.PathLike[str], *, verify: bool = False) -> PreparedDataset:
    """Open a prepared dataset directory (reads only the manifest; each split's files are
    checked when they are read); ``verify=True`` re-hashes every array now."""
    root = Path(path)
    mpath = root / "manifest.json"
    if not mpath.exists():
        raise ManifestError(
            f"{mpath} not found: {root} is not a prepared dataset "
            "(run `python -m robustft.steps.prepare_data`)."
        )
    try:
        with open(mpath, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"{mpath}: not valid JSON ({err}). {_redo_hint(root)}") from err
    if not isinstance(manifest, dict):
        raise ManifestError(f"{mpath}: expected a JSON object. {_redo_hint(root)}")
    # Only num_classes is needed to train; the rest is provenance (verify needs sha256).
    if "num_classes" not in manifest:
        raise ManifestError(f"{mpath} lacks the key 'num_classes'")
    manifest.setdefault("name", root.name)
    manifest.setdefault("classes", [str(c) for c in range(int(manifest["num_classes"]))])
    ds = PreparedDataset(root=root, manifest=manifest)
    for s in SPLITS:
        for p in ds._paths(s):
            if not p.exists():
                raise ManifestError(f"{p} missing from prepared dataset {root}. {_redo_hint(root)}")
    if verify:
        ds.verify()
    return ds
