"""One GPU (or one slot of a shared GPU) per job on a multi-GPU workstation without a scheduler.

Snakemake's local executor treats ``gpu`` as a counted resource only: ``--resources gpu=4``
stops a fifth GPU job from starting, but it never says *which* GPU a job gets and it does not
set ``CUDA_VISIBLE_DEVICES`` — so every job would pile onto GPU 0. SLURM does bind GPUs, so
under a scheduler this module does nothing.

:func:`claim_gpus` picks free GPUs with one ``flock`` per GPU in a machine-wide lock directory
and sets ``CUDA_VISIBLE_DEVICES`` for the job. A lock is held as long as the process (and the
children it started) live and the kernel drops it when the process dies, even on SIGKILL, so a
preempted or crashed job never leaves a GPU "taken". When every GPU is busy (e.g. ``gpu`` was
not limited with ``--resources``) the job waits for one to free up instead of sharing.

Small jobs may share a GPU (``jobs_per_gpu`` N > 1, a fidelity's ``jobs_per_gpu``): each GPU then
has N slots. A sharing job holds one slot lock (``<host>-gpu<i>.slot<k>.lock``, k < N) *and* a
shared flock on the GPU's lock (``<host>-gpu<i>.lock``), so an exclusive job (N = 1, an exclusive
flock on that file) never runs beside sharers and vice versa. Slots are filled breadth-first
(slot 0 of every GPU, then slot 1, ...), so jobs spread over the GPUs before they pile up.
Locally, let Snakemake start enough jobs: ``--resources gpu=<GPUs × N>``.

It must run before anything initialises CUDA (``torch.cuda.*``): CUDA reads
``CUDA_VISIBLE_DEVICES`` once, at initialisation. Importing torch is fine.

As a wrapper around any command (the locks are inherited by the command)::

    python -m robustft.devices --gpus 1 -- python -m robustft.steps.train ...

Environment:

* ``CUDA_VISIBLE_DEVICES`` — if set (by SLURM, or by you, even to ``""``), it is respected
  and nothing is claimed.
* ``ROBUSTFT_GPUS`` — the pool of GPU indices to hand out, e.g. ``"0,1,3"``; default: every GPU
  ``nvidia-smi -L`` lists. ``""`` disables GPU picking.
* ``ROBUSTFT_JOBS_PER_GPU`` — N above, when the caller does not pass ``jobs_per_gpu`` (the
  workflow sets it from the targets' fidelities, rules/common.smk); default 1 (exclusive).
* ``ROBUSTFT_GPU_LOCK_DIR`` — where the lock files live (default ``/tmp/robustft-gpu-locks``;
  it must be local to the machine, not a network file system).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Self

__all__ = ["DEFAULT_LOCK_DIR", "GpuClaim", "claim_gpus", "detect_gpus", "jobs_per_gpu_from"]

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/tmp/robustft-gpu-locks"
#: Variables that mean "a scheduler placed this job": it owns GPU binding, not us.
SCHEDULER_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID_SGE")
#: One entry per GPU when the NVIDIA driver is loaded (fallback when nvidia-smi is missing).
PROC_GPUS = Path("/proc/driver/nvidia/gpus")

#: Locks of claims that were not released explicitly; kept referenced so that garbage
#: collection never closes a file descriptor (and so drops a lock) behind the job's back.
_HELD: list[GpuClaim] = []


class GpuClaim:
    """GPUs this process holds; the locks go with :meth:`release` or the process's death."""

    def __init__(self, ids: list[str], handles: list[int], lock_dir: Path) -> None:
        self.ids = ids
        self._handles = handles
        self.lock_dir = lock_dir

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.ids)

    def release(self) -> None:
        for fd in self._handles:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._handles = []
        if self in _HELD:
            _HELD.remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"GpuClaim(ids={self.ids}, lock_dir={str(self.lock_dir)!r})"


def detect_gpus(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Indices of this machine's GPUs, without initialising CUDA.

    ``ROBUSTFT_GPUS`` wins; else ``nvidia-smi -L``; else ``/proc/driver/nvidia/gpus``; else none.
    """
    environ = os.environ if environ is None else environ
    pool = environ.get("ROBUSTFT_GPUS")
    if pool is not None:
        ids = [part.strip() for part in pool.split(",") if part.strip()]
        bad = [i for i in ids if not i.isdigit()]
        if bad:
            raise ValueError(f"ROBUSTFT_GPUS={pool!r}: expected comma-separated GPU indices")
        return ids
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=20, check=True
            ).stdout
            # "GPU 0: NVIDIA A100 (UUID: ...)"; MIG instances are indented and not counted.
            return re.findall(r"^GPU (\d+):", out, flags=re.MULTILINE)
        except (OSError, subprocess.SubprocessError) as err:
            log.warning("nvidia-smi -L failed (%s); assuming no GPUs", err)
            return []
    if PROC_GPUS.is_dir():
        return [str(i) for i in range(sum(1 for _ in PROC_GPUS.iterdir()))]
    return []


def _lock_dir(lock_dir: str | os.PathLike[str] | None, environ: MutableMapping[str, str]) -> Path:
    path = Path(lock_dir or environ.get("ROBUSTFT_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        try:  # shared by every user's jobs on this machine, like /tmp itself
            path.chmod(0o1777)
        except OSError:
            pass
    return path


def _try_lock(path: Path, shared: bool = False) -> int | None:
    """A non-blocking flock on ``path`` (exclusive, or shared among sharing jobs), or None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.fchmod(fd, 0o666)  # the next job may belong to another user
    except OSError:
        pass
    if shared:  # several holders: the slot lock next to it says who
        return fd
    # Who holds it, for humans looking at the lock directory; the lock itself is the flock.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    return fd


def jobs_per_gpu_from(environ: MutableMapping[str, str]) -> int:
    """``ROBUSTFT_JOBS_PER_GPU`` (default 1), checked."""
    raw = environ.get("ROBUSTFT_JOBS_PER_GPU", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"ROBUSTFT_JOBS_PER_GPU={raw!r}: expected a whole number >= 1")
    return int(raw)


def _claim_one(directory: Path, host: str, gpu: str, slot: int, sharing: bool) -> list[int]:
    """The locks of one GPU (exclusive) or of one of its slots (sharing), or [] if taken."""
    gpu_lock = directory / f"{host}-gpu{gpu}.lock"
    if not sharing:
        fd = _try_lock(gpu_lock)
        return [] if fd is None else [fd]
    slot_fd = _try_lock(directory / f"{host}-gpu{gpu}.slot{slot}.lock")
    if slot_fd is None:
        return []
    gpu_fd = _try_lock(gpu_lock, shared=True)
    if gpu_fd is None:  # an exclusive job has this GPU
        fcntl.flock(slot_fd, fcntl.LOCK_UN)
        os.close(slot_fd)
        return []
    return [slot_fd, gpu_fd]


def claim_gpus(
    count: int = 1,
    *,
    jobs_per_gpu: int | None = None,
    gpus: Sequence[str] | None = None,
    lock_dir: str | os.PathLike[str] | None = None,
    environ: MutableMapping[str, str] | None = None,
    timeout: float | None = None,
    poll: float = 1.0,
) -> GpuClaim | None:
    """Claim ``count`` free GPUs and set ``CUDA_VISIBLE_DEVICES`` to them in ``environ``.

    With ``jobs_per_gpu`` N > 1 (default: ``ROBUSTFT_JOBS_PER_GPU``) a GPU counts as free while
    fewer than N sharing jobs and no exclusive job hold it.

    Returns ``None`` (and changes nothing) when the job needs no GPU, when
    ``CUDA_VISIBLE_DEVICES`` is already set, when a scheduler runs the job, or when the
    machine has no GPU. ``gpus`` overrides detection (tests pass a fake GPU list). Waits for
    free GPUs, at most ``timeout`` seconds if given (then ``TimeoutError``).
    """
    environ = os.environ if environ is None else environ
    if count <= 0:
        return None
    if "CUDA_VISIBLE_DEVICES" in environ:
        log.info(
            "CUDA_VISIBLE_DEVICES=%r is set already; not picking a GPU",
            environ["CUDA_VISIBLE_DEVICES"],
        )
        return None
    scheduler = [v for v in SCHEDULER_VARIABLES if environ.get(v)]
    if scheduler:
        log.info("%s is set: the scheduler binds GPUs, not robustft.devices", scheduler[0])
        return None
    pool = list(detect_gpus(environ) if gpus is None else gpus)
    if not pool:
        return None
    slots = jobs_per_gpu_from(environ) if jobs_per_gpu is None else jobs_per_gpu
    if slots < 1:
        raise ValueError(f"jobs_per_gpu must be >= 1, got {slots}")
    if count > len(pool):
        raise RuntimeError(
            f"the job needs {count} GPUs but this machine has {len(pool)} ({','.join(pool)})"
        )
    directory = _lock_dir(lock_dir, environ)
    host = socket.gethostname().split(".")[0]
    deadline = None if timeout is None else time.monotonic() + timeout
    announced = False
    while True:
        ids: list[str] = []
        handles: list[int] = []
        for slot in range(slots):  # breadth-first: slot 0 of every GPU first
            for gpu in pool:
                if gpu in ids:
                    continue
                got = _claim_one(directory, host, gpu, slot, sharing=slots > 1)
                if got:
                    ids.append(gpu)
                    handles += got
                    if len(ids) == count:
                        break
            if len(ids) == count:
                break
        if len(ids) == count:
            claim = GpuClaim(ids, handles, directory)
            _HELD.append(claim)
            environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # same numbering as nvidia-smi
            environ["CUDA_VISIBLE_DEVICES"] = claim.cuda_visible_devices
            log.info(
                "picked GPU %s (%s; locks in %s)",
                claim.cuda_visible_devices,
                f"shared by up to {slots} jobs" if slots > 1 else "exclusive",
                directory,
            )
            return claim
        for fd in handles:  # not enough: give back what we got, so two waiters cannot deadlock
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"no {count} free GPU(s) among {','.join(pool)} after "
                f"{timeout:g} s; the holders are listed in {directory}"
            )
        if not announced:
            log.info("all of GPUs %s are busy; waiting for one to free up", ",".join(pool))
            announced = True
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m robustft.devices",
        description="Claim free local GPUs, set CUDA_VISIBLE_DEVICES and run a command "
        "holding them (a no-op under SLURM or when CUDA_VISIBLE_DEVICES is set).",
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs the command needs (0: none)")
    p.add_argument(
        "--jobs-per-gpu",
        type=int,
        default=None,
        help="jobs that may share one GPU (default: ROBUSTFT_JOBS_PER_GPU, else 1)",
    )
    p.add_argument("--timeout", type=float, default=None, help="give up after this many s")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args...]")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    claim = claim_gpus(args.gpus, jobs_per_gpu=args.jobs_per_gpu, timeout=args.timeout)
    if claim is not None:
        for fd in claim._handles:  # the command inherits the locks and holds them until it exits
            os.set_inheritable(fd, True)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
