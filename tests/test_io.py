"""Atomic writes and checksums (robustft.io)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from robustft.io import (
    atomic_dir,
    atomic_path,
    hash_file,
    md5_file,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "arr.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".npy" and tmp != target
        np.save(tmp, np.arange(3))  # np.save would append .npy to a name without it
        assert not target.exists()
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["arr.npy"]


def test_atomic_path_leaves_nothing_on_exception(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_existing_and_cleans_up(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
        assert (out / "stale.txt").exists()  # old content stays until success
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_atomic_dir_exception_keeps_old_and_leaves_no_temp(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(ValueError), atomic_dir(out) as tmp:
        (tmp / "partial.npy").write_bytes(b"123")
        raise ValueError("killed")
    assert list(tmp_path.iterdir()) == []


def test_checksums_match_hashlib(tmp_path):
    f = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()
    assert md5_file(f) == hashlib.md5(data).hexdigest()
    both = hash_file(f, ("sha256", "md5"))
    assert both == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }


def test_write_json_atomic_is_canonical(tmp_path):
    p1 = write_json_atomic(tmp_path / "a.json", {"b": 1, "a": np.int64(2), "c": np.arange(2)})
    p2 = write_json_atomic(tmp_path / "b.json", {"c": [0, 1], "a": 2, "b": 1})
    assert p1.read_bytes() == p2.read_bytes()
    assert json.loads(p1.read_text()) == {"a": 2, "b": 1, "c": [0, 1]}
    assert p1.read_text().endswith("\n")
    write_text_atomic(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"


def test_write_json_atomic_unserialisable_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []
