"""Checksummed downloads and safe archive extraction.

``fetch`` is the only place that touches the network. Its contract:

* an existing file is verified before it is used; a corrupt or truncated one is moved aside
  to ``<dest>.corrupt-<timestamp>`` (kept for inspection, never silently deleted) and fetched
  again;
* a download streams into ``<dest>.part`` and is renamed only after its checksum matched, so
  a killed job never leaves a file that looks complete;
* without network it raises :class:`DownloadError` naming the file, its URL and the exact
  path to place it at, so an offline user knows what to copy where.

Tests monkeypatch :data:`urlopen` or use ``file://`` URLs; nothing here is network-specific.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from robustft.io import hash_file

__all__ = [
    "OFFLINE_ENV",
    "ChecksumError",
    "DataError",
    "DownloadError",
    "extract_archive",
    "fetch",
    "urlopen",
    "verify_file",
]

log = logging.getLogger(__name__)

#: Set this environment variable to 1 to forbid any download (CI, air-gapped clusters):
#: ``fetch`` then fails fast with the same "place file X at path Y" message.
OFFLINE_ENV = "ROBUSTFT_OFFLINE"

#: The opener used by :func:`fetch`; tests replace it (``monkeypatch.setattr``).
urlopen = urllib.request.urlopen

_CHUNK = 1 << 20
_TIMEOUT = 60


class DataError(RuntimeError):
    """Base class for dataset acquisition problems."""


class DownloadError(DataError):
    """The file could not be obtained (no network, HTTP error, refused offline)."""

    def __init__(self, message: str, *, url: str, dest: Path) -> None:
        super().__init__(message)
        self.url = url
        self.dest = dest


class ChecksumError(DataError):
    """A file's digest differs from the published one."""

    def __init__(self, path: Path, algorithm: str, expected: str, actual: str, extra: str = ""):
        msg = (
            f"Checksum mismatch for {path.name} ({path}): expected {algorithm} {expected}, "
            f"got {actual}."
        )
        if extra:
            msg += " " + extra
        super().__init__(msg)
        self.path = path
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    # sha256 wins when both are published; md5 only because CIFAR/CUB/Caltech publish nothing else.
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return None


def verify_file(
    path: str | os.PathLike[str], *, sha256: str | None = None, md5: str | None = None
) -> str:
    """Verify ``path`` against the given digest; return its sha256.

    Raises :class:`ChecksumError` on a mismatch. With no digest given the file is accepted
    (nothing to compare) and its sha256 is returned so the caller can record it.
    """
    path = Path(path)
    digests = hash_file(path, ("sha256", "md5"))
    exp = _expected(sha256, md5)
    if exp is not None and digests[exp[0]] != exp[1]:
        raise ChecksumError(path, exp[0], exp[1], digests[exp[0]])
    return digests["sha256"]


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _move_aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.corrupt-{_timestamp()}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{_timestamp()}-{n}")
        n += 1
    os.replace(path, target)
    return target


def _offline_message(url: str, dest: Path, exp: tuple[str, str] | None, reason: str) -> str:
    check = f" (expected {exp[0]} {exp[1]})" if exp else ""
    return (
        f"Could not download {dest.name} from {url}: {reason}. "
        f"This machine may be offline. Download {url} by hand and place the file "
        f"{dest.name} at {dest.resolve()}{check}, then re-run."
    )


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    offline: bool | None = None,
) -> str:
    """Make sure ``dest`` holds the verified file from ``url``; return its sha256.

    ``offline`` defaults to the ``ROBUSTFT_OFFLINE`` environment variable. A file that is
    already present and verifies is used without any network access (with no published
    checksum it is trusted as is).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    exp = _expected(sha256, md5)

    if dest.exists():
        try:
            digest = verify_file(dest, sha256=sha256, md5=md5)
        except ChecksumError as err:
            aside = _move_aside(dest)
            log.warning(
                "%s is corrupt or incomplete (expected %s %s, got %s); moved it aside to %s "
                "and fetching it again.",
                dest,
                err.algorithm,
                err.expected,
                err.actual,
                aside,
            )
        else:
            if exp is None:
                log.info("Using existing %s (no published checksum; sha256 %s)", dest, digest)
            else:
                log.info("Using existing %s (%s verified)", dest, exp[0])
            return digest

    if offline is None:
        offline = os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}
    if offline:
        raise DownloadError(
            _offline_message(url, dest, exp, f"downloads disabled ({OFFLINE_ENV})"),
            url=url,
            dest=dest,
        )

    part = dest.with_name(dest.name + ".part")
    hashers = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    log.info("Downloading %s -> %s", url, dest)
    try:
        with urlopen(url, timeout=_TIMEOUT) as resp, open(part, "wb") as out:
            total = _content_length(resp)
            done, next_report, t0 = 0, 0.1, time.monotonic()
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                done += len(chunk)
                if total and done / total >= next_report:
                    log.info(
                        "  %s: %3.0f%% of %.1f MB (%.0f s)",
                        dest.name,
                        100 * done / total,
                        total / 1e6,
                        time.monotonic() - t0,
                    )
                    next_report += 0.1
    except (urllib.error.URLError, OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DownloadError(
            _offline_message(url, dest, exp, str(reason)), url=url, dest=dest
        ) from err

    digests = {name: h.hexdigest() for name, h in hashers.items()}
    if exp is not None and digests[exp[0]] != exp[1]:
        aside = _move_aside(part)
        raise ChecksumError(
            dest,
            exp[0],
            exp[1],
            digests[exp[0]],
            extra=f"The downloaded data was kept at {aside} for inspection.",
        )
    os.replace(part, dest)
    if exp is None:
        log.info(
            "Downloaded %s; no published checksum, recording sha256 %s",
            dest.name,
            digests["sha256"],
        )
    return digests["sha256"]


def _content_length(resp) -> int | None:
    headers = getattr(resp, "headers", None)
    try:
        value = headers.get("Content-Length") if headers is not None else None
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract a tar / tar.gz / tgz archive into ``dest`` with the ``data`` safety filter.

    The filter refuses absolute paths, ``..`` components and device files, so a crafted
    archive cannot write outside ``dest``.
    """
    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    log.info("Extracting %s -> %s", archive.name, dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except tarfile.TarError as err:
        raise DataError(
            f"Cannot extract {archive}: {err}. Delete it and re-run to fetch it again."
        ) from err
