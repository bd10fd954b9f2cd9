"""Datasets: a registry of real and generated datasets (:mod:`.registry`, :mod:`.spec`), their
download (:mod:`.download`), split rules (:mod:`.splits`) and preparation (:mod:`.sources`,
:mod:`.generated`), the single on-disk format (``results/data/<name>/``, :mod:`.format`) every
later step reads, and the training-time augmentations (:mod:`.transforms`).

Typical use (tensors and batches come from :mod:`robustft.batches`, the one reader)::

    from robustft import rng
    from robustft.batches import load_split, train_batches
    from robustft.data import load_prepared, prepare_dataset
    prepare_dataset("textures", "results/data/textures", seed=0)
    ds = load_prepared("results/data/textures")          # manifest, classes, counts
    x_test, y_test = load_split(ds.root, "test").tensors()
    for x, y in train_batches(load_split(ds.root, "train"), 128, rng.new_generator(0)):
        ...
"""

from robustft.data.download import ChecksumError, DataError, DownloadError, fetch
from robustft.data.format import SPLITS, ManifestError, PreparedDataset, load_prepared
from robustft.data.registry import DATASETS, get_spec, num_classes, prepare_dataset
from robustft.data.spec import DEFAULT_PRESET, PRESETS, DatasetSpec, DownloadFile
from robustft.data.transforms import AUGMENTATIONS, random_crop_flip, random_resized_crop_flip

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DEFAULT_PRESET",
    "PRESETS",
    "SPLITS",
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
