"""The dataset registry: every dataset the pipeline knows, as data.

======================  =======  ======================================================
name                    classes  official preset / paper preset (train / val / test)
======================  =======  ======================================================
cifar10                 10       47,500 / 2,500 / 10,000 (both)
cifar100                100      47,500 / 2,500 / 10,000 (both)
dtd                     57 head  official 3,760 / = test / 1,880; paper 3,572 / 188 / 1,880
                        (47 real)
dog120                  120      11,400 / 600 / 8,580 (both)
cub200                  200      5,694 / 300 / 5,794 (both)
caltech256              257      official 38,550 (with duplicates) / = test / 3,549;
                                 paper: random 3,549 test, rest 95/5 train/val
textures                10       generated (demo downstream task), options below
textures_source         16       generated (pre-training the demo backbone)
======================  =======  ======================================================

Options are validated (an unknown key is an error naming it); ``{"preset": "paper"}`` or
``{"preset": "official"}`` (default) choose a consistent set, explicit keys override it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustft.data import sources
from robustft.data.generated import build_generated
from robustft.data.spec import (
    COMMON_OPTIONS,
    HIGHRES_OPTIONS,
    DatasetSpec,
    DownloadFile,
    Option,
)

__all__ = ["DATASETS", "get_spec", "num_classes", "prepare_dataset"]

_SPLIT_95_5 = (
    "train = random 95% of the official training set, val = the other 5% "
    "(np.random.RandomState(seed).choice, as the official code), test = official test"
)

_CIFAR_PRESETS = {"official": {}, "paper": {}}
_HIGHRES_PRESETS = {"official": {"crop_pct": 0.875}, "paper": {"crop_pct": 1.0}}

_GEN_OPTIONS = {
    "num_classes": Option(10, "number of texture classes", kind=int),
    "per_class": Option(100, "train-pool images per class (val is held out of it)", kind=int),
    "test_per_class": Option(None, "test images per class (default per_class // 2)", kind=int),
    "resolution": Option(None, "image size (same as --resolution; default 32)", kind=int),
    "val_fraction": Option(
        0.05, "stratified fraction of the train pool held out for val", kind=float
    ),
    "class_seed": Option(
        0,
        "seed of the class definitions (the split seed only changes which images are drawn)",
        kind=int,
    ),
    "noise": Option(0.06, "std of the additive pixel noise", kind=float),
}


def _gen_options(**defaults: Any) -> dict[str, Option]:
    out = dict(_GEN_OPTIONS)
    for k, v in defaults.items():
        o = out[k]
        out[k] = Option(v, o.doc, o.choices, o.kind)
    return out


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        name="cifar10",
        num_classes=10,
        default_resolution=32,
        build=sources.build_cifar10,
        description="CIFAR-10 (Krizhevsky 2009), 50,000 / 10,000 at 32 px",
        split_rule=_SPLIT_95_5,
        files=(
            DownloadFile(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "cifar-10-python.tar.gz",
                md5="c58f30108f718f92721af3b95e74349a",
            ),
        ),
        probe=("cifar-10-batches-py/batches.meta",),
        options=COMMON_OPTIONS,
        presets=_CIFAR_PRESETS,
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        num_classes=100,
        default_resolution=32,
        build=sources.build_cifar100,
        description="CIFAR-100 (fine labels), 50,000 / 10,000 at 32 px",
        split_rule=_SPLIT_95_5,
        files=(
            DownloadFile(
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "cifar-100-python.tar.gz",
                md5="eb9058c3a382ffc7106e4002c42a8d85",
            ),
        ),
        probe=("cifar-100-python/meta",),
        options=COMMON_OPTIONS,
        presets=_CIFAR_PRESETS,
    ),
    "dtd": DatasetSpec(
        name="dtd",
        num_classes=57,
        default_resolution=224,
        build=sources.build_dtd,
        description="Describable Textures (Cimpoi 2014), 47 classes x 120 images; "
        "'DTD-57' head as in the paper and the official --num_classes 57",
        split_rule="train = labels/train{k}.txt + val{k}.txt (3,760), test = test{k}.txt "
        "(1,880); official: val = test; paper: 5% of train held out",
        files=(
            DownloadFile(
                "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                "dtd-r1.0.1.tar.gz",
            ),
        ),
        probe=("dtd/images", "dtd/labels/train1.txt"),
        options={
            **HIGHRES_OPTIONS,
            "partition": Option(
                1, "DTD's official split number 1..10 (official code: 1)", kind=int
            ),
            "train_lists": Option(
                "train+val",
                "training lists: 'train+val' (official, 3,760) or 'train' (1,880)",
                choices=("train+val", "train"),
            ),
            "num_classes": Option(
                57,
                "classifier head size; 57 reproduces the paper/official "
                "DTD-57 (10 dead logits), 47 is the true class count",
                kind=int,
            ),
        },
        presets={
            "official": {"crop_pct": 0.875, "val_source": "test"},
            "paper": {"crop_pct": 1.0, "val_source": "split"},
        },
        num_classes_fn=lambda o: int(o["num_classes"]),
    ),
    "dog120": DatasetSpec(
        name="dog120",
        num_classes=120,
        default_resolution=224,
        build=sources.build_dog120,
        description="Stanford Dogs (Khosla 2011), full images (no bounding-box crop)",
        split_rule=_SPLIT_95_5 + " (train_list.mat 12,000 / test_list.mat 8,580)",
        files=(
            DownloadFile(
                "http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar", "images.tar"
            ),
            DownloadFile("http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar", "lists.tar"),
        ),
        probe=("Images", "train_list.mat", "test_list.mat"),
        options=HIGHRES_OPTIONS,
        presets=_HIGHRES_PRESETS,
    ),
    "cub200": DatasetSpec(
        name="cub200",
        num_classes=200,
        default_resolution=224,
        build=sources.build_cub200,
        description="Caltech-UCSD Birds-200-2011 (Wah 2011)",
        split_rule=_SPLIT_95_5 + " (train_test_split.txt 5,994 / 5,794)",
        files=(
            DownloadFile(
                "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                "CUB_200_2011.tgz",
                md5="97eceeb196236b17998738112f37df78",
            ),
        ),
        probe=("CUB_200_2011/images.txt", "CUB_200_2011/images"),
        options=HIGHRES_OPTIONS,
        presets=_HIGHRES_PRESETS,
    ),
    "caltech256": DatasetSpec(
        name="caltech256",
        num_classes=257,
        default_resolution=224,
        build=sources.build_caltech256,
        description="Caltech-256 (Griffin 2007), 257 classes incl. clutter, 30,607 images",
        split_rule="official: 150 consecutive entries per class (duplicates), test = rest, "
        "val = test; paper: random test of 3,549, 5% of the rest held out",
        files=(
            DownloadFile(
                "https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar",
                "256_ObjectCategories.tar",
                md5="67b4f42ca05d46448c6bb8ecd2220f6d",
            ),
        ),
        probe=("256_ObjectCategories",),
        options={
            **HIGHRES_OPTIONS,
            "split": Option(
                "official",
                "'official' = deterministic 150-per-class windows; "
                "'random' = random test_size test images",
                choices=("official", "random"),
            ),
            "train_per_class": Option(150, "window length of the official rule", kind=int),
            "test_size": Option(3549, "test images of the random split (paper: 3,549)", kind=int),
        },
        presets={
            "official": {"crop_pct": 0.875, "split": "official", "val_source": "test"},
            "paper": {"crop_pct": 1.0, "split": "random", "val_source": "split"},
        },
    ),
    "textures": DatasetSpec(
        name="textures",
        num_classes=10,
        default_resolution=32,
        build=build_generated("textures"),
        generated=True,
        description="generated DTD-like textures (gratings, checkers, blobs, band-pass "
        "noise): the offline demo's downstream task",
        split_rule="per_class train-pool images per class, stratified val_fraction held out; "
        "test_per_class separately generated test images per class",
        options=_gen_options(num_classes=10, per_class=100),
        num_classes_fn=lambda o: int(o["num_classes"]),
    ),
    "textures_source": DatasetSpec(
        name="textures_source",
        num_classes=16,
        default_resolution=32,
        build=build_generated("textures_source"),
        generated=True,
        description="generated textures of other families (plaids, rings, square stripes, "
        "dot lattices, zig-zags): pre-training data for the demo backbone",
        split_rule="as textures",
        options=_gen_options(num_classes=16, per_class=200),
        num_classes_fn=lambda o: int(o["num_classes"]),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry, with an error listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


def num_classes(name: str, options: Mapping[str, Any] | None = None) -> int:
    """Head size of ``name`` under ``options`` without preparing anything."""
    return get_spec(name).num_classes_for(options)


def prepare_dataset(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    raw_dir: str | os.PathLike[str] | None = None,
    resolution: int | None = None,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    offline: bool | None = None,
) -> Path:
    """Prepare dataset ``name`` into ``out_dir`` (the step ``prepare_data`` calls this)."""
    return get_spec(name).prepare(raw_dir, out_dir, resolution, options, seed, offline=offline)
