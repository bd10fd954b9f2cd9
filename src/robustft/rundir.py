"""A run's checkpoint directory (``results/checkpoints/<run>/``): locked while a trainer uses
it, and removed once the run's outputs are complete.

**Lock.** Killing ``snakemake`` does not always kill its jobs (an orphaned trainer keeps
running), and a rerun would start a second trainer writing the same ``last.pt``. So a trainer
holds an exclusive ``flock`` on ``<dir>/.lock`` for its whole life; the kernel releases it
when the process ends, however it ends. A second trainer fails at once, naming the PID and
host that hold the lock (Snakemake's retry, or the user, runs it again later). On NFS, Linux
emulates ``flock`` with POSIX locks, which the server sees from every node; Lustre needs the
``flock`` mount option.

**Clean-up.** Checkpoints exist only to resume a killed job. Once ``model_best.pt``,
``train_log.csv`` and ``run.yaml`` are written, nothing reads them: chained runs ("X + CLAT"),
evaluation, transfer and criticality all read the run's *outputs*. They are deleted unless the
config says ``keep_checkpoints: true``; kept, at most one moved-aside file per tag
(``last.stale-*.pt``, ``last.corrupt-*.pt``) remains.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: tags io.move_aside gives files a run cannot use (train.Trainer.try_resume)
ASIDE_TAGS = ("stale", "corrupt")


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """Exclusive lock on a run directory, held until :meth:`release` or process exit."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"run directory {self.directory} is in use by {holder} — another trainer is "
                "still running this run (e.g. left over from a killed snakemake): wait for it "
                "to finish or stop it, then run again"
            ) from None
        # Who holds it, for the message above; the lock itself is the flock, not this text.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_identity()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _identity() -> dict:
    return {
        "pid": os.getpid(),
        "host": platform.node(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    text = f"PID {info.get('pid')} on host {info.get('host')} since {info.get('since')}"
    if info.get("slurm_job_id"):
        text += f" (SLURM job {info['slurm_job_id']})"
    return text


# The lock of this process's run directory: held for the process lifetime (see hold()).
_held: list[RunLock] = []


def hold(directory: str | os.PathLike[str]) -> RunLock:
    """Lock ``directory`` until this process exits; raise :class:`RunLockedError` if taken."""
    lock = RunLock(directory).acquire()
    _held.append(lock)
    return lock


def prune_aside(directory: str | os.PathLike[str], keep: int = 1) -> list[Path]:
    """Delete all but the newest ``keep`` moved-aside files of each tag; return the deleted."""
    directory = Path(directory)
    deleted: list[Path] = []
    if not directory.is_dir():
        return deleted
    for tag in ASIDE_TAGS:
        files = sorted(
            (p for p in directory.iterdir() if f".{tag}-" in p.name),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
            reverse=True,
        )
        for path in files[keep:]:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def finish(directory: str | os.PathLike[str], *, keep: bool) -> int:
    """After a run's outputs are complete: delete its checkpoint directory, or (``keep``) only
    the surplus moved-aside files. Returns the bytes freed.

    Call it while holding the directory's lock; the lock file goes with the directory."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    before = _size(directory)
    if keep:
        prune_aside(directory)
    else:
        shutil.rmtree(directory)
    freed = before - _size(directory)
    log.info(
        "%s checkpoints of the finished run in %s (%.1f MB freed)",
        "kept the" if keep else "deleted the",
        directory,
        freed / 1e6,
    )
    return freed


def _size(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
