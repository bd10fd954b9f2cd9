"""Atomic file and directory writes, checksums.

Every step writes its outputs under a temporary name in the *same directory* and renames them
into place (``os.replace`` is atomic within one file system). A job killed half-way therefore
leaves either the previous complete output or nothing — never a truncated file that a later
Snakemake run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DiskFullError",
    "atomic_dir",
    "atomic_path",
    "hash_file",
    "md5_file",
    "move_aside",
    "sha256_file",
    "write_json_atomic",
    "write_text_atomic",
]

_CHUNK = 1 << 20
# Below this many free bytes a failed write is blamed on a full disk (see atomic_path).
_NEARLY_FULL = 16 << 20


class DiskFullError(OSError):
    """A write failed because its file system is full (or the user's quota is used up)."""

    def __init__(self, path: Path, free: int | None) -> None:
        where = f"; {free / 1e6:.1f} MB free there" if free is not None else ""
        super().__init__(
            errno.ENOSPC,
            f"no space left writing {path}{where} — free space on that disk (or move "
            "results/ to a larger one) and run again; the previous file is untouched",
        )
        self.filename = str(path)

    def __str__(self) -> str:
        return self.strerror


def _free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use in ``directory``'s file system."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs (Windows) or the directory vanished
        return None
    return st.f_bavail * st.f_frsize


def _disk_full(exc: BaseException, directory: Path) -> bool:
    """Whether a failed write is explained by a full disk.

    A Python write reports ENOSPC/EDQUOT in ``errno``. torch.save's zip writer does not: it
    raises a RuntimeError like ``unexpected pos 70784 vs 70680`` with the errno lost, so for
    any other error the file system's free space decides."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    free = _free_bytes(directory)
    return free is not None and free < _NEARLY_FULL


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file lives in the same directory (so the final ``os.replace`` is atomic)
    and keeps the final suffix by default, so writers that dispatch on the extension
    (``np.save``, ``torch.save``, pandas) behave as for the real name. On any exception the
    temporary file is removed and ``path`` is left untouched; a write that failed because
    the disk is full raises :class:`DiskFullError` naming ``path`` (whatever the writer's own
    error said).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.",
        suffix=f".tmp{path.suffix if suffix is None else suffix}",
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the result the permissions a plain open() would have
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as exc:
        # measured before the partial file is removed, which frees what it had taken
        full = not isinstance(exc, DiskFullError) and _disk_full(exc, path.parent)
        free = _free_bytes(path.parent) if full else None
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if full:
            raise DiskFullError(path, free) from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``; on success it becomes ``path``.

    An existing ``path`` (e.g. an older preparation, or the empty directory Snakemake may
    create) is replaced only after the new content is complete: it is renamed aside, the new
    directory renamed in, and the old one deleted. On an exception the temporary directory is
    deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "content")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_aside(path: str | os.PathLike[str], tag: str) -> Path:
    """Rename ``path`` to ``<stem>.<tag>-<YYYYmmdd-HHMMSS>[-<n>]<suffix>`` in its directory.

    For files a run cannot use but a person may want to inspect (a corrupt or stale
    ``last.pt``): nothing is deleted, and a second file moved aside within the same second
    gets a counter instead of overwriting the first. Returns the new path.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count():
        extra = f"-{n}" if n else ""
        target = path.with_name(f"{path.stem}.{tag}-{stamp}{extra}{path.suffix}")
        try:
            # a hard link fails if the name exists (no silent overwrite, unlike rename)
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError:  # file systems without hard links: check then rename
            if target.exists():
                continue
            os.replace(path, target)
            return target
        path.unlink()
        return target
    raise AssertionError("unreachable")


def hash_file(
    path: str | os.PathLike[str], algorithms: tuple[str, ...] = ("sha256",)
) -> dict[str, str]:
    """Hex digests of ``path`` for several algorithms in one pass over the file."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks (works for multi-GB archives)."""
    return hash_file(path, ("sha256",))["sha256"]


def md5_file(path: str | os.PathLike[str]) -> str:
    """MD5 hex digest (only because some datasets publish nothing stronger)."""
    return hash_file(path, ("md5",))["md5"]


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON (sorted keys, trailing newline) and write it atomically.

    Keys are sorted so that the same content always gives the same bytes: Snakemake and the
    manifests compare files, and a reordered dict should not look like a change.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n"
    return write_text_atomic(path, text)


def _json_default(obj: Any) -> Any:
    # numpy scalars / arrays and paths show up in manifests; convert them instead of failing.
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    for attr in ("tolist", "item"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            return fn()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
