"""Datasets: downloads, the real preparers on tiny archives in the real layouts, generated
textures, the on-disk format and the prepare_data step. Nothing here touches the network:
archives are built by the tests and served through file:// URLs (or pre-placed in raw_dir)
with their checksums patched into the registry entry."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robustft
from robustft.batches import eval_batches, load_split, train_batches
from robustft.data import (
    DATASETS,
    ChecksumError,
    DownloadError,
    DownloadFile,
    ManifestError,
    get_spec,
    load_prepared,
    num_classes,
    prepare_dataset,
    random_crop_flip,
    random_resized_crop_flip,
)
from robustft.data import download as dl
from robustft.data.format import SplitData, resize_center_crop, write_prepared
from robustft.data.generated import generate
from robustft.data.splits import caltech_official_windows, official_holdout
from robustft.steps import prepare_data as step

RES = 16  # tiny output resolution for the high-res preparers


# ============================================================================================
# helpers


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_jpg(path: Path, seed: int, size: tuple[int, int] = (20, 14), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, quality=90)


def make_tar(out: Path, src_dir: Path, members: list[str], gz: bool) -> Path:
    with tarfile.open(out, "w:gz" if gz else "w") as tar:
        for m in members:
            tar.add(src_dir / m, arcname=m)
    return out


def serve(monkeypatch, name: str, archives: dict[str, Path], *, publish: bool = True) -> None:
    """Point the registry entry at file:// URLs of local archives (same file names).

    ``publish`` puts their md5 in the entry, as for datasets with a published checksum."""
    spec = DATASETS[name]
    files = []
    for f in spec.files:
        p = archives[f.filename]
        files.append(
            DownloadFile(
                p.resolve().as_uri(), f.filename, md5=md5(p) if publish and f.md5 else None
            )
        )
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(spec, files=tuple(files)))


def assert_manifest_consistent(out: Path) -> dict:
    ds = load_prepared(out, verify=True)
    m = ds.manifest
    for s in ("train", "val", "test"):
        x, y = ds.arrays(s)
        assert x.dtype == np.uint8 and x.shape[1:] == (m["resolution"], m["resolution"], 3)
        assert y.dtype == np.int64 and len(y) == len(x) == m["counts"][s]
        if len(y):
            assert 0 <= y.min() and y.max() < m["num_classes"]
    for fname, digest in m["sha256"].items():
        assert hashlib.sha256((out / fname).read_bytes()).hexdigest() == digest
    assert len(m["classes"]) == m["num_classes"]
    return m


def no_leftovers(parent: Path) -> None:
    """No temporary files/dirs (the per-dataset .lock file is expected to stay)."""
    assert not [
        p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")
    ]
    assert not list(parent.glob("*.part"))


# ============================================================================================
# downloads


@pytest.fixture
def blob(tmp_path) -> tuple[Path, str]:
    src = tmp_path / "srv" / "archive.tar.gz"
    src.parent.mkdir()
    src.write_bytes(os.urandom(3000))
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_fetch_file_url_and_reuse(tmp_path, blob, monkeypatch):
    src, sha = blob
    dest = tmp_path / "raw" / "archive.tar.gz"
    assert dl.fetch(src.as_uri(), dest, sha256=sha) == sha
    assert dest.read_bytes() == src.read_bytes()
    assert not dest.with_name(dest.name + ".part").exists()

    # a verified file is used without any network access
    def no_network(*a, **k):
        raise AssertionError("must not download")

    monkeypatch.setattr(dl, "urlopen", no_network)
    assert dl.fetch("http://example.invalid/x", dest, sha256=sha) == sha
    # md5 as the only published checksum works too
    assert dl.fetch("http://example.invalid/x", dest, md5=md5(src)) == sha


def test_fetch_moves_corrupt_file_aside_and_refetches(tmp_path, blob, caplog):
    src, sha = blob
    dest = tmp_path / "archive.tar.gz"
    dest.write_bytes(src.read_bytes()[:1000])  # truncated earlier download
    with caplog.at_level("WARNING"):
        assert dl.fetch(src.as_uri(), dest, md5=md5(src)) == sha
    assert dest.read_bytes() == src.read_bytes()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("archive.tar.gz.corrupt-")]
    assert len(aside) == 1 and aside[0].stat().st_size == 1000
    assert "corrupt" in caplog.text and str(aside[0]) in caplog.text


def test_fetch_checksum_mismatch_names_file_expected_actual(tmp_path, blob):
    src, sha = blob
    dest = tmp_path / "archive.tar.gz"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as exc:
        dl.fetch(src.as_uri(), dest, sha256=wrong)
    msg = str(exc.value)
    assert "archive.tar.gz" in msg and wrong in msg and sha in msg
    assert exc.value.expected == wrong and exc.value.actual == sha
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_fetch_offline_names_file_url_and_path(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(dl, "urlopen", offline)
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    dest = tmp_path / "raw" / "cifar-10-python.tar.gz"
    with pytest.raises(DownloadError) as exc:
        dl.fetch(url, dest, md5="c58f30108f718f92721af3b95e74349a")
    msg = str(exc.value)
    assert "cifar-10-python.tar.gz" in msg and url in msg and str(dest.resolve()) in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    # the environment switch refuses before trying
    monkeypatch.setattr(dl, "urlopen", lambda *a, **k: pytest.fail("must not try"))
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    with pytest.raises(DownloadError, match="place the file cifar-10-python.tar.gz at"):
        dl.fetch(url, dest)


def test_prepare_offline_error_from_registry(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    with pytest.raises(DownloadError) as exc:
        prepare_dataset("cub200", tmp_path / "out", raw_dir=tmp_path / "raw", resolution=RES)
    assert "CUB_200_2011.tgz" in str(exc.value)
    assert str((tmp_path / "raw" / "CUB_200_2011.tgz").resolve()) in str(exc.value)
    assert not (tmp_path / "out").exists()
    # a dataset with two archives names both
    with pytest.raises(DownloadError) as exc:
        prepare_dataset("dog120", tmp_path / "out", raw_dir=tmp_path / "raw", resolution=RES)
    msg = str(exc.value)
    assert "images.tar" in msg and "lists.tar" in msg
    assert "http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar" in msg
    assert str(tmp_path / "raw" / "dog120" / "train_list.mat") in msg


def test_registry_has_real_urls_and_checksums():
    assert set(DATASETS) >= {
        "cifar10",
        "cifar100",
        "dtd",
        "dog120",
        "cub200",
        "caltech256",
        "textures",
        "textures_source",
    }
    c10 = get_spec("cifar10").files[0]
    assert c10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert c10.md5 == "c58f30108f718f92721af3b95e74349a"
    assert get_spec("cifar100").files[0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert get_spec("cub200").files[0].md5 == "97eceeb196236b17998738112f37df78"
    assert get_spec("caltech256").files[0].md5 == "67b4f42ca05d46448c6bb8ecd2220f6d"
    assert [f.filename for f in get_spec("dog120").files] == ["images.tar", "lists.tar"]
    assert get_spec("dtd").files[0].md5 is None and get_spec("dtd").files[0].sha256 is None
    assert num_classes("dtd") == 57 and num_classes("dtd", {"num_classes": 47}) == 47
    assert num_classes("caltech256") == 257 and num_classes("dog120") == 120
    assert num_classes("textures", {"num_classes": 7}) == 7
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        get_spec("nope")
    with pytest.raises(ValueError, match="unknown option 'val_frac'"):
        get_spec("cifar10").resolve_options({"val_frac": 0.1})
    with pytest.raises(ValueError, match="'split' must be one of"):
        get_spec("caltech256").resolve_options({"split": "weird"})
    with pytest.raises(ValueError, match="unknown preset"):
        get_spec("dtd").resolve_options({"preset": "mine"})
    paper = get_spec("caltech256").resolve_options({"preset": "paper"})
    assert paper["split"] == "random" and paper["val_source"] == "split"
    assert get_spec("caltech256").resolve_options()["split"] == "official"


# ============================================================================================
# CIFAR


def _cifar_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({k.encode(): v for k, v in obj.items()}, fh, protocol=2)


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10_tar(tmp_path) -> Path:
    src = tmp_path / "build10"
    base = src / "cifar-10-batches-py"
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    _cifar_pickle(
        base / "batches.meta",
        {"label_names": [n.encode() for n in names], "num_cases_per_batch": 6},
    )
    for i in range(1, 6):
        _cifar_pickle(
            base / f"data_batch_{i}",
            {
                "data": _cifar_rows(6, i),
                "labels": [(i * 6 + j) % 10 for j in range(6)],
                "batch_label": f"training batch {i} of 5".encode(),
            },
        )
    _cifar_pickle(
        base / "test_batch", {"data": _cifar_rows(8, 99), "labels": [j % 10 for j in range(8)]}
    )
    return make_tar(tmp_path / "cifar-10-python.tar.gz", src, ["cifar-10-batches-py"], True)


def test_cifar10_prepare(tmp_path, cifar10_tar, monkeypatch):
    serve(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": cifar10_tar})
    out = prepare_dataset(
        "cifar10", tmp_path / "data" / "cifar10", raw_dir=tmp_path / "raw", seed=1
    )
    m = assert_manifest_consistent(out)
    assert m["counts"] == {"train": 28, "val": 2, "test": 8}  # int(0.95 * 30) = 28
    assert m["resolution"] == 32 and m["num_classes"] == 10 and m["classes"][0] == "airplane"
    assert m["split_seed"] == 1 and m["val_is_test"] is False
    src = m["source"]["files"][0]
    assert src["md5_published"] == md5(cifar10_tar)
    assert src["sha256"] == hashlib.sha256(cifar10_tar.read_bytes()).hexdigest()
    # the split is the official np.random.seed(seed); np.random.choice(N, int(.95 N)) draw
    np.random.seed(1)
    official_train = np.sort(np.random.choice(30, 28, replace=False))
    all_rows = np.concatenate([_cifar_rows(6, i) for i in range(1, 6)])
    all_imgs = all_rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    ds = load_prepared(out)
    x, y = ds.arrays("train")
    np.testing.assert_array_equal(x, all_imgs[official_train])  # channel order: CHW rows
    labels = np.array([(i * 6 + j) % 10 for i in range(1, 6) for j in range(6)])
    np.testing.assert_array_equal(y, labels[official_train])
    xt, _ = ds.arrays("test")
    np.testing.assert_array_equal(
        xt, _cifar_rows(8, 99).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    )
    # deterministic: same seed -> same bytes; other seed -> other split
    out2 = prepare_dataset("cifar10", tmp_path / "data" / "again", raw_dir=tmp_path / "raw", seed=1)
    assert json.loads((out2 / "manifest.json").read_text())["sha256"] == m["sha256"]
    out3 = prepare_dataset("cifar10", tmp_path / "data" / "seed2", raw_dir=tmp_path / "raw", seed=2)
    assert json.loads((out3 / "manifest.json").read_text())["sha256"]["val_y.npy"] != m["sha256"][
        "val_y.npy"
    ] or not np.array_equal(np.load(out3 / "val_x.npy"), np.load(out / "val_x.npy"))
    no_leftovers(tmp_path / "data")
    no_leftovers(tmp_path / "raw")


def test_cifar10_preplaced_archive_is_used_without_network(tmp_path, cifar10_tar, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(cifar10_tar.read_bytes())
    spec = DATASETS["cifar10"]
    f = spec.files[0]
    monkeypatch.setitem(
        DATASETS,
        "cifar10",
        dataclasses.replace(spec, files=(dataclasses.replace(f, md5=md5(cifar10_tar)),)),
    )  # real URL
    monkeypatch.setattr(dl, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    out = prepare_dataset("cifar10", tmp_path / "out", raw_dir=raw, options={"val_source": "test"})
    m = assert_manifest_consistent(out)
    assert m["counts"] == {"train": 30, "val": 8, "test": 8} and m["val_is_test"]
    assert (
        m["source"]["files"][0]["url"] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )
    # val is the test set, stored as hard links
    assert (
        os.path.samefile(out / "val_x.npy", out / "test_x.npy")
        or (out / "val_x.npy").read_bytes() == (out / "test_x.npy").read_bytes()
    )


def test_cifar10_resolution_override_resizes(tmp_path, cifar10_tar, monkeypatch):
    serve(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": cifar10_tar})
    out = prepare_dataset("cifar10", tmp_path / "o", raw_dir=tmp_path / "raw", resolution=8)
    assert load_prepared(out).arrays("train")[0].shape[1:] == (8, 8, 3)


def test_cifar_unpickler_reads_old_numpy_names_and_refuses_code(tmp_path):
    from robustft.data.sources import load_cifar_pickle

    # the real batches were written by Python 2 / numpy 1 ("numpy.core.multiarray")
    arr = np.arange(12, dtype=np.uint8).reshape(2, 6)
    blob = pickle.dumps({b"data": arr, b"labels": [3, 4]}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in blob
    old = tmp_path / "old"
    old.write_bytes(blob)
    loaded = load_cifar_pickle(old)
    np.testing.assert_array_equal(loaded["data"], arr)
    assert loaded["labels"] == [3, 4]

    bad = tmp_path / "evil"
    bad.write_bytes(pickle.dumps({"data": os.getcwd}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar_pickle(bad)


def test_cifar100_prepare(tmp_path, monkeypatch):
    src = tmp_path / "build100"
    base = src / "cifar-100-python"
    fine = [f"class{i:02d}".encode() for i in range(100)]
    _cifar_pickle(base / "meta", {"fine_label_names": fine, "coarse_label_names": [b"c"] * 20})
    _cifar_pickle(
        base / "train",
        {
            "data": _cifar_rows(40, 1),
            "fine_labels": list(range(0, 80, 2)),
            "coarse_labels": [0] * 40,
        },
    )
    _cifar_pickle(
        base / "test",
        {"data": _cifar_rows(10, 2), "fine_labels": list(range(10)), "coarse_labels": [0] * 10},
    )
    tar = make_tar(tmp_path / "cifar-100-python.tar.gz", src, ["cifar-100-python"], True)
    serve(monkeypatch, "cifar100", {"cifar-100-python.tar.gz": tar})
    out = prepare_dataset("cifar100", tmp_path / "out", raw_dir=tmp_path / "raw", seed=0)
    m = assert_manifest_consistent(out)
    assert m["counts"] == {"train": 38, "val": 2, "test": 10}
    assert m["num_classes"] == 100 and m["classes"][5] == "class05"
    y = np.concatenate([load_prepared(out).arrays(s)[1] for s in ("train", "val")])
    assert sorted(y.tolist()) == list(range(0, 80, 2))  # fine labels, nothing lost


# ============================================================================================
# DTD


@pytest.fixture
def dtd_tar(tmp_path) -> Path:
    src = tmp_path / "builddtd"
    classes = ["banded", "blotchy", "zigzagged"]
    lists: dict[str, list[str]] = {
        "train1": [],
        "val1": [],
        "test1": [],
        "train2": [],
        "val2": [],
        "test2": [],
    }
    for ci, c in enumerate(classes):
        for k in range(5):
            rel = f"{c}/{c}_{k:04d}.jpg"
            write_jpg(src / "dtd" / "images" / rel, 10 * ci + k, size=(24 + k, 20))
            lists["train1" if k == 0 else "val1" if k == 1 else "test1"].append(rel)
            lists["test2" if k == 0 else "train2"].append(rel)
    for name, rels in lists.items():
        p = src / "dtd" / "labels" / f"{name}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(rels) + "\n")
    (src / "dtd" / "imdb").mkdir()
    (src / "dtd" / "imdb" / "imdb.mat").write_bytes(b"not used")
    return make_tar(tmp_path / "dtd-r1.0.1.tar.gz", src, ["dtd"], True)


def test_dtd_official_and_paper(tmp_path, dtd_tar, monkeypatch):
    serve(monkeypatch, "dtd", {"dtd-r1.0.1.tar.gz": dtd_tar})
    raw = tmp_path / "raw"
    out = prepare_dataset(
        "dtd", tmp_path / "official", raw_dir=raw, resolution=RES, options={"preset": "official"}
    )
    m = assert_manifest_consistent(out)
    # train1 + val1 -> train, val = test, 57-way head with 47 (here 3) real classes
    assert m["counts"] == {"train": 6, "val": 9, "test": 9} and m["val_is_test"]
    assert m["num_classes"] == 57 and m["classes"][:3] == ["banded", "blotchy", "zigzagged"]
    assert m["classes"][3] == "__unused_3__"
    assert m["options"]["crop_pct"] == 0.875 and m["options"]["preset"] == "official"
    # no published checksum: the computed sha256 is recorded on first use
    assert m["source"]["files"][0]["sha256"] == hashlib.sha256(dtd_tar.read_bytes()).hexdigest()
    assert m["source"]["files"][0]["md5_published"] is None
    ds = load_prepared(out)
    _, ytr = ds.arrays("train")
    assert sorted(ytr.tolist()) == [0, 0, 1, 1, 2, 2]
    assert ds.num_classes == 57

    paper = prepare_dataset(
        "dtd",
        tmp_path / "paper",
        raw_dir=raw,
        resolution=RES,
        options={"preset": "paper", "num_classes": 47},
    )
    mp = assert_manifest_consistent(paper)
    assert mp["counts"] == {"train": 5, "val": 1, "test": 9} and not mp["val_is_test"]
    assert mp["num_classes"] == 47

    p2 = prepare_dataset(
        "dtd",
        tmp_path / "p2",
        raw_dir=raw,
        resolution=RES,
        options={"partition": 2, "train_lists": "train"},
    )
    assert load_prepared(p2).counts == {"train": 12, "val": 3, "test": 3}
    with pytest.raises(ValueError, match="num_classes=2"):
        prepare_dataset(
            "dtd", tmp_path / "bad", raw_dir=raw, resolution=RES, options={"num_classes": 2}
        )
    assert not (tmp_path / "bad").exists()
    no_leftovers(tmp_path)


# ============================================================================================
# Stanford Dogs


def _mat_list(path: Path, names: list[str], labels: list[int]) -> None:
    import scipy.io

    ann = np.empty((len(names), 1), dtype=object)
    files = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        ann[i, 0] = np.array([n])
        files[i, 0] = np.array([n + ".jpg"])
    scipy.io.savemat(
        path,
        {
            "annotation_list": ann,
            "file_list": files,
            "labels": np.array(labels, dtype=np.float64)[:, None],
        },
    )


def test_dog120_prepare(tmp_path, monkeypatch):
    src = tmp_path / "builddog"
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
    train, test = [], []
    for bi, b in enumerate(breeds):
        wnid = b.split("-")[0]
        for k in range(6):
            name = f"{b}/{wnid}_{1000 + k}"
            write_jpg(
                src / "Images" / f"{name}.jpg",
                100 * bi + k,
                size=(30, 22),
                mode="L" if k == 0 else "RGB",
            )  # a grey image must become RGB
            (train if k < 4 else test).append((name, bi + 1))
    lists = src / "lists"
    lists.mkdir()
    _mat_list(lists / "train_list.mat", *map(list, zip(*train, strict=True)))
    _mat_list(lists / "test_list.mat", *map(list, zip(*test, strict=True)))
    _mat_list(lists / "file_list.mat", *map(list, zip(*(train + test), strict=True)))
    images = make_tar(tmp_path / "images.tar", src, ["Images"], False)
    lists_tar = make_tar(
        tmp_path / "lists.tar", lists, ["file_list.mat", "train_list.mat", "test_list.mat"], False
    )
    serve(monkeypatch, "dog120", {"images.tar": images, "lists.tar": lists_tar})
    out = prepare_dataset(
        "dog120", tmp_path / "out", raw_dir=tmp_path / "raw", resolution=RES, seed=0
    )
    m = assert_manifest_consistent(out)
    assert m["counts"] == {"train": 11, "val": 1, "test": 6}  # int(.95 * 12) = 11
    assert m["num_classes"] == 3 and m["classes"] == [
        "Chihuahua",
        "Japanese_spaniel",
        "Maltese_dog",
    ]
    digests = {f["filename"]: f["sha256"] for f in m["source"]["files"]}
    assert digests == {
        "images.tar": hashlib.sha256(images.read_bytes()).hexdigest(),
        "lists.tar": hashlib.sha256(lists_tar.read_bytes()).hexdigest(),
    }
    _, yte = load_prepared(out).arrays("test")
    assert yte.tolist() == [0, 0, 1, 1, 2, 2]  # mat label - 1
    # a second preparation reuses the extracted raw data (no network, no re-extraction)
    monkeypatch.setattr(dl, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    (tmp_path / "images.tar").unlink()
    out2 = prepare_dataset(
        "dog120", tmp_path / "out2", raw_dir=tmp_path / "raw", resolution=RES, seed=0
    )
    assert json.loads((out2 / "manifest.json").read_text())["sha256"] == m["sha256"]


# ============================================================================================
# CUB-200-2011


def test_cub200_prepare(tmp_path, monkeypatch):
    src = tmp_path / "buildcub"
    base = src / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    rows_img, rows_lab, rows_split = [], [], []
    img_id = 0
    for ci, c in enumerate(classes):
        for k in range(7):
            img_id += 1
            rel = f"{c}/{c.split('.')[1]}_{k:04d}_{img_id}.jpg"
            write_jpg(base / "images" / rel, img_id, size=(26, 18))
            rows_img.append(f"{img_id} {rel}")
            rows_lab.append(f"{img_id} {ci + 1}")
            rows_split.append(f"{img_id} {1 if k < 4 else 0}")
    (base / "images.txt").write_text("\n".join(rows_img) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(rows_lab) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(rows_split) + "\n")
    (base / "classes.txt").write_text(
        "\n".join(f"{i + 1} {c}" for i, c in enumerate(classes)) + "\n"
    )
    (src / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    tgz = make_tar(tmp_path / "CUB_200_2011.tgz", src, ["CUB_200_2011", "attributes.txt"], True)
    serve(monkeypatch, "cub200", {"CUB_200_2011.tgz": tgz})
    out = prepare_dataset(
        "cub200",
        tmp_path / "out",
        raw_dir=tmp_path / "raw",
        resolution=RES,
        seed=3,
        options={"val_fraction": 0.25},
    )
    m = assert_manifest_consistent(out)
    assert m["counts"] == {"train": 9, "val": 3, "test": 9}
    assert m["classes"] == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert m["options"]["val_fraction"] == 0.25
    _, va = official_holdout(12, 0.25, 3)
    y_pool = np.repeat([0, 1, 2], 4)
    np.testing.assert_array_equal(load_prepared(out).arrays("val")[1], y_pool[va])
    # the stored pixels are the resized centre crop of the source image
    first_test = base / "images" / rows_img[4].split(" ", 1)[1]
    with Image.open(first_test) as im:
        expect = np.asarray(resize_center_crop(im.convert("RGB"), RES, int(RES / 0.875)))
    np.testing.assert_array_equal(load_prepared(out).arrays("test")[0][0], expect)


# ============================================================================================
# Caltech-256


@pytest.fixture
def caltech_tar(tmp_path) -> Path:
    src = tmp_path / "buildcal"
    base = src / "256_ObjectCategories"
    sizes = {"001.ak47": 3, "002.american-flag": 2, "003.backpack": 4, "257.clutter": 5}
    for ci, (d, n) in enumerate(sizes.items()):
        for k in range(1, n + 1):
            write_jpg(
                base / d / f"{ci + 1:03d}_{k:04d}.jpg",
                1000 * ci + k,
                size=(22, 30),
                mode="L" if k == 2 else "RGB",
            )
    (base / "003.backpack" / "RENAME2").write_text("not an image")
    return make_tar(tmp_path / "256_ObjectCategories.tar", src, ["256_ObjectCategories"], False)


def test_caltech_official_rule_unit():
    tr, te = caltech_official_windows([3, 2, 4, 5], 3)
    assert tr.tolist() == [0, 1, 2, 3, 4, 5, 5, 6, 7, 9, 10, 11]
    assert te.tolist() == [8, 12, 13]
    # 257 x 150 = 38,550 entries whatever the class sizes
    sizes = [80 + (i * 37) % 200 for i in range(256)] + [827]
    tr, te = caltech_official_windows(sizes, 150)
    assert len(tr) == 38_550 and len(set(tr.tolist()) | set(te.tolist())) == sum(sizes)


def test_caltech256_official_and_random(tmp_path, caltech_tar, monkeypatch):
    serve(monkeypatch, "caltech256", {"256_ObjectCategories.tar": caltech_tar})
    raw = tmp_path / "raw"
    out = prepare_dataset(
        "caltech256", tmp_path / "off", raw_dir=raw, resolution=RES, options={"train_per_class": 3}
    )
    m = assert_manifest_consistent(out)
    assert m["counts"] == {"train": 12, "val": 3, "test": 3} and m["val_is_test"]
    assert m["unique_train"] == 11 and m["num_classes"] == 4
    assert m["classes"] == ["ak47", "american-flag", "backpack", "clutter"]
    ds = load_prepared(out)
    x, y = ds.arrays("train")
    # the window of class 1 (2 images) runs into class 2: the duplicate keeps its label
    assert y.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    np.testing.assert_array_equal(x[5], x[6])
    assert ds.arrays("test")[1].tolist() == [2, 3, 3]

    rnd = prepare_dataset(
        "caltech256",
        tmp_path / "rnd",
        raw_dir=raw,
        resolution=RES,
        seed=5,
        options={"preset": "paper", "test_size": 4},
    )
    mr = assert_manifest_consistent(rnd)
    assert mr["counts"] == {"train": 9, "val": 1, "test": 4}  # int(.95 * 10) = 9
    assert mr["options"]["split"] == "random" and mr["options"]["crop_pct"] == 1.0
    ys = np.concatenate([load_prepared(rnd).arrays(s)[1] for s in ("train", "val", "test")])
    assert np.bincount(ys).tolist() == [3, 2, 4, 5]  # each image exactly once
    rnd2 = prepare_dataset(
        "caltech256",
        tmp_path / "rnd2",
        raw_dir=raw,
        resolution=RES,
        seed=5,
        options={"preset": "paper", "test_size": 4},
    )
    assert load_prepared(rnd2).manifest["sha256"] == mr["sha256"]


# ============================================================================================
# generated textures


def test_generated_deterministic_and_balanced(tmp_path):
    opts = {"num_classes": 5, "per_class": 20, "resolution": 16}
    a = prepare_dataset("textures", tmp_path / "a", seed=3, options=opts)
    b = prepare_dataset("textures", tmp_path / "b", seed=3, options=opts)
    ma, mb = assert_manifest_consistent(a), assert_manifest_consistent(b)
    assert ma["sha256"] == mb["sha256"]
    assert ma["counts"] == {"train": 95, "val": 5, "test": 50} and ma["resolution"] == 16
    assert ma["num_classes"] == 5 and ma["source"]["generator"] == "textures"
    ds = load_prepared(a)
    for s, per in (("train", 19), ("val", 1), ("test", 10)):
        assert np.bincount(ds.arrays(s)[1], minlength=5).tolist() == [per] * 5
    c = prepare_dataset("textures", tmp_path / "c", seed=4, options=opts)
    assert load_prepared(c).manifest["sha256"]["train_x.npy"] != ma["sha256"]["train_x.npy"]
    # class c is the same texture whatever num_classes is (class_seed fixes definitions)
    x5, _ = generate("textures", 5, 2, 16, 3, "train")
    x7, _ = generate("textures", 7, 2, 16, 3, "train")
    np.testing.assert_array_equal(x5, x7[:10])
    src = prepare_dataset(
        "textures_source",
        tmp_path / "s",
        seed=3,
        options={"num_classes": 6, "per_class": 4, "test_per_class": 2},
        resolution=16,
    )
    ms = assert_manifest_consistent(src)
    assert ms["counts"] == {"train": 24, "val": 0, "test": 12}
    assert ms["classes"][0].startswith("plaid") and ma["classes"][0].startswith("grating")
    with pytest.raises(ValueError, match="conflicts"):
        prepare_dataset("textures", tmp_path / "d", resolution=32, options=opts)
    with pytest.raises(ValueError, match="unknown option 'classes'"):
        prepare_dataset("textures", tmp_path / "d", options={"classes": 3})


def test_generated_not_linearly_trivial():
    """Random phase makes every class's mean image nearly uniform, so a pixel-space
    nearest-class-mean classifier is weak (the CNN must learn local structure)."""
    x, y = generate("textures", 6, 40, 16, 0, "train")
    xt, yt = generate("textures", 6, 20, 16, 0, "test")
    xf, xtf = x.reshape(len(x), -1) / 255.0, xt.reshape(len(xt), -1) / 255.0
    means = np.stack([xf[y == c].mean(0) for c in range(6)])
    pred = ((xtf[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yt).mean() < 0.6


# ============================================================================================
# format: loading, augmentation, verification, atomicity


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small") / "textures"
    return prepare_dataset(
        "textures",
        out,
        seed=0,
        options={"num_classes": 4, "per_class": 10, "test_per_class": 3, "val_fraction": 0.2},
    )


def test_split_tensors_through_the_one_reader(small):
    ds = load_prepared(small)
    assert ds.num_classes == 4 and ds.resolution == 32 and ds.counts["val"] == 8
    tr = load_split(small, "train")
    x, y = ds.arrays("train")
    img, lab = tr.tensors(np.array([3]))
    assert img.shape == (1, 3, 32, 32) and img.dtype == torch.float32 and lab.dtype == torch.int64
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    np.testing.assert_allclose(img[0].permute(1, 2, 0).numpy() * 255.0, x[3], atol=1e-4)
    assert int(lab[0]) == int(y[3])
    xt, yt = load_split(small, "test").tensors()
    assert xt.shape == (12, 3, 32, 32) and yt.dtype == torch.int64
    batches = list(eval_batches(load_split(small, "test"), 5))
    assert [len(b[1]) for b in batches] == [5, 5, 2]
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), xt)
    with pytest.raises(KeyError):
        load_split(small, "holdout")


def test_augmentations_live_in_transforms_not_in_the_format():
    import robustft.data.format as fmt
    from robustft.data import transforms

    assert not any(hasattr(fmt, n) for n in ("random_crop_flip", "AUGMENTATIONS", "ArrayDataset"))
    assert transforms.AUGMENTATIONS == {
        "crop_flip": random_crop_flip,
        "resized_crop_flip": random_resized_crop_flip,
    }
    assert transforms.augmentation("none") is None
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        transforms.augmentation("mixup")


def test_augmentation_seeded_and_valid(small):
    split = load_split(small, "train")
    a = next(train_batches(split, 6, torch.Generator().manual_seed(7), augment="crop_flip"))
    b = next(train_batches(split, 6, torch.Generator().manual_seed(7), augment="crop_flip"))
    plain = next(train_batches(split, 6, torch.Generator().manual_seed(7), augment="none"))
    torch.testing.assert_close(a, b)
    assert torch.equal(a[1], plain[1]) and not torch.equal(a[0], plain[0])
    # crop+flip: every output is a (possibly flipped) shifted copy with zero fill
    x = torch.rand(3, 8, 8) * 0.9 + 0.1
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        out = random_crop_flip(x, g, padding=2)
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        cands = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out, c) or torch.equal(out, c.flip(-1)) for c in cands)
    batch = random_crop_flip(torch.rand(5, 3, 8, 8), g)
    assert batch.shape == (5, 3, 8, 8)
    rrc = random_resized_crop_flip(torch.rand(2, 3, 16, 16), torch.Generator().manual_seed(1))
    assert rrc.shape == (2, 3, 16, 16) and 0 <= float(rrc.min()) and float(rrc.max()) <= 1
    with pytest.raises(ValueError, match="unknown augmentation"):
        next(train_batches(split, 6, g, augment="mixup"))


def test_verify_names_tampered_file(tmp_path, small):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small, copy)
    load_prepared(copy, verify=True)
    y = np.load(copy / "val_y.npy")
    y[0] = (y[0] + 1) % 4
    np.save(copy / "val_y.npy", y)
    load_prepared(copy)  # not verified by default: cheap open
    with pytest.raises(ManifestError, match="val_y.npy"):
        load_prepared(copy, verify=True)
    (copy / "test_x.npy").unlink()
    with pytest.raises(ManifestError, match="test_x.npy"):
        load_prepared(copy)
    with pytest.raises(ManifestError, match="not a prepared dataset"):
        load_prepared(tmp_path / "nothing")


def test_load_minimal_manifest(tmp_path):
    """Hand-written fixtures with only num_classes still load (provenance is optional)."""
    for s, n in (("train", 4), ("val", 2), ("test", 3)):
        np.save(tmp_path / f"{s}_x.npy", np.zeros((n, 8, 8, 3), np.uint8))
        np.save(tmp_path / f"{s}_y.npy", np.arange(n, dtype=np.int64) % 2)
    (tmp_path / "manifest.json").write_text('{"num_classes": 2}')
    ds = load_prepared(tmp_path)
    assert ds.num_classes == 2 and ds.resolution == 8 and ds.classes == ["0", "1"]
    assert ds.counts == {"train": 4, "val": 2, "test": 3}
    with pytest.raises(ManifestError, match="no checksums"):
        ds.verify()


def test_write_prepared_failure_leaves_nothing(tmp_path):
    good = tmp_path / "img.jpg"
    write_jpg(good, 0)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    parent = tmp_path / "data"
    parent.mkdir()
    out = parent / "ds"
    with pytest.raises(ManifestError, match="broken.jpg"):
        write_prepared(
            out,
            name="x",
            classes=["a", "b"],
            num_classes=2,
            resolution=8,
            splits={
                "train": SplitData([good, good], np.array([0, 1])),
                "val": SplitData([good], np.array([0])),
                "test": SplitData([good, bad], np.array([0, 1])),
            },
            split_seed=0,
            source={},
            options={},
        )
    assert list(parent.iterdir()) == []
    # an earlier complete preparation survives a failed re-preparation untouched
    write_prepared(
        out,
        name="x",
        classes=["a", "b"],
        num_classes=2,
        resolution=8,
        splits={s: SplitData([good], np.array([1])) for s in ("train", "val", "test")},
        split_seed=0,
        source={},
        options={},
    )
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ManifestError):
        write_prepared(
            out,
            name="x",
            classes=["a", "b"],
            num_classes=2,
            resolution=8,
            splits={s: SplitData([bad], np.array([0])) for s in ("train", "val", "test")},
            split_seed=0,
            source={},
            options={},
        )
    assert (out / "manifest.json").read_bytes() == before
    assert [p.name for p in parent.iterdir()] == ["ds"]
    with pytest.raises(ValueError, match="labels outside"):
        write_prepared(
            parent / "y",
            name="x",
            classes=["a"],
            num_classes=1,
            resolution=8,
            splits={s: SplitData([good], np.array([3])) for s in ("train", "val", "test")},
            split_seed=0,
            source={},
            options={},
        )


# ============================================================================================
# the step script


def test_step_main_in_process(tmp_path, capsys, caplog):
    out = tmp_path / "data" / "textures"
    rc = step.main(
        [
            "--dataset",
            "textures",
            "--out",
            str(out),
            "--seed",
            "1",
            "--resolution",
            "16",
            "--options",
            json.dumps({"num_classes": 3, "per_class": 4}),
            "--verify",
        ]
    )
    assert rc == 0
    assert load_prepared(out).counts == {"train": 12, "val": 0, "test": 6}
    assert (
        step.main(
            ["--dataset", "textures", "--out", str(tmp_path / "x"), "--options", '{"bogus": 1}']
        )
        == 2
    )
    assert "unknown option 'bogus'" in caplog.text
    opts = tmp_path / "o.json"
    opts.write_text('{"preset": "paper"}')
    rc = step.main(
        [
            "--dataset",
            "cifar10",
            "--out",
            str(tmp_path / "c"),
            "--raw-dir",
            str(tmp_path / "raw"),
            "--offline",
            "--options",
            f"@{opts}",
        ]
    )
    assert rc == 3
    err = caplog.text
    assert "cifar-10-python.tar.gz" in err and str((tmp_path / "raw").resolve()) in err
    assert not (tmp_path / "c").exists()
    assert step.main(["--list"]) == 0
    assert "caltech256" in capsys.readouterr().out


def test_step_runs_as_module(tmp_path):
    src_root = Path(robustft.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src_root), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "tx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustft.steps.prepare_data",
            "--dataset",
            "textures",
            "--out",
            str(out),
            "--resolution",
            "8",
            "--options",
            '{"num_classes": 2, "per_class": 2}',
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "textures" in proc.stderr and proc.stdout == ""
    assert load_prepared(out).counts["train"] == 4
