"""Datasets: a registry of real and generated datasets, their download/split/prepare logic,
and the single on-disk format (``results/data/<name>/``) every later step reads.

Typical use::

    from robustft.data import prepare_dataset, load_prepared
    prepare_dataset("textures", "results/data/textures", seed=0)
    ds = load_prepared("results/data/textures")
    train = ds.split("train", augment="crop_flip", generator=torch.Generator().manual_seed(0))
    x_test, y_test = ds.as_tensors("test")
"""

from robustft.data.download import ChecksumError, DataError, DownloadError, fetch
from robustft.data.format import (
    SPLITS,
    ArrayDataset,
    ManifestError,
    PreparedDataset,
    load_prepared,
    random_crop_flip,
    random_resized_crop_flip,
)
from robustft.data.registry import DATASETS, get_spec, num_classes, prepare_dataset
from robustft.data.spec import DEFAULT_PRESET, PRESETS, DatasetSpec, DownloadFile

__all__ = [
    "DATASETS",
    "DEFAULT_PRESET",
    "PRESETS",
    "SPLITS",
    "ArrayDataset",
    "ChecksumError",
    "DataError",
    "DatasetSpec",
    "DownloadError",
    "DownloadFile",
    "ManifestError",
    "PreparedDataset",
    "fetch",
    "get_spec",
    "load_prepared",
    "num_classes",
    "prepare_dataset",
    "random_crop_flip",
    "random_resized_crop_flip",
]
