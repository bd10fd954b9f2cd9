"""Shared start-up and exit of the step scripts: logging, thread count, GPU claim, the
``--settings`` JSON parsed into the step's contract, and what a failing step tells its user.

Every step ends with ``if __name__ == "__main__": run(main)``. A failure then prints the
traceback (for developers) followed by ONE last line a user can act on::

    robustft: ERROR: <what went wrong, naming the file or key> — <what to do>

and exits with the code of its kind (:data:`FAILURES`), so the end of the job's log — which
``show-failed-logs`` prints — says what to do instead of a library's internals.

Deterministic failures (a bad setting, a checksum mismatch, a missing offline file, a NaN loss,
a corrupt checkpoint) fail again the same way when retried. Snakemake retries every failed job
(``retries:`` in the profiles, meant for node failures and preemption) and cannot ask why it
failed, so such a failure is recorded in ``--failure-marker`` (next to the job's log); a retry
of the same Snakemake invocation (``--attempt`` > 1) exits at once with the recorded line
instead of redoing minutes of work. Attempt 1 — a new invocation, e.g. after the user fixed
the problem — always clears the marker and runs.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import platform
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import torch

from robustft.contracts import ContractError
from robustft.devices import claim_gpus

T = TypeVar("T")

# The GPU claim (a flock per device) must live as long as the job's process.
_gpu_claim = None
# The parsed arguments of this job (attempt number, failure marker), for run().
_job: argparse.Namespace | None = None

PREFIX = "robustft: ERROR: "


@dataclass(frozen=True)
class Failure:
    """One kind of failure: its exit code, whether a retry can help, and the default advice
    (used only when the error's own message does not already say what to do)."""

    code: int
    retry_helps: bool
    hint: str


#: Exit codes by kind. 1 stays "unexpected" (a bug: read the traceback); 2 is argparse's.
FAILURES: dict[str, Failure] = {
    "settings": Failure(3, False, "fix the named key in config.yaml and run again"),
    "data": Failure(4, False, "replace or delete the named file or directory, then run again"),
    "download": Failure(5, True, "place the file at the named path, then run again"),
    "checkpoint": Failure(6, False, "delete the named file and run again"),
    "nonfinite": Failure(
        7,
        False,
        "the run diverged: lower the learning rate or check the backbone and data; "
        "a retry would diverge the same way",
    ),
    "disk_full": Failure(8, True, "free space there (or move results/ to a larger disk)"),
    "locked": Failure(9, True, "wait for that process to finish or stop it, then run again"),
}


def classify(exc: BaseException) -> str | None:
    """The kind of a failure (a key of :data:`FAILURES`), or None for an unexpected one.

    Imports are local: this module is imported by every step, and the error classes live
    in modules some steps never need."""
    from robustft.data.download import ChecksumError, DataError, DownloadError
    from robustft.data.format import ManifestError
    from robustft.io import DiskFullError
    from robustft.methods.base import HyperParameterError
    from robustft.models.checkpoint import CheckpointError
    from robustft.plan.errors import ConfigError
    from robustft.rundir import RunLockedError
    from robustft.train import NonFiniteLossError

    kinds: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        ((ContractError, ConfigError, HyperParameterError), "settings"),
        (DownloadError, "download"),
        ((ChecksumError, ManifestError, DataError), "data"),
        (CheckpointError, "checkpoint"),
        (NonFiniteLossError, "nonfinite"),
        (DiskFullError, "disk_full"),
        (RunLockedError, "locked"),
    ]
    for types, kind in kinds:
        if isinstance(exc, types):
            return kind
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    return None


def one_line(exc: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with ' | ')."""
    from robustft.io import DiskFullError

    text = str(exc).strip() or type(exc).__name__
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if full and not isinstance(exc, DiskFullError):  # a plain write outside atomic_path
        text = f"no space left writing {exc.filename or 'a file'} ({exc.strerror})"
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


# Words with which the library's messages say what to do ("Delete X and re-run ...").
_REMEDY = re.compile(
    r"\b(delete|re-?run|run again|place the file|remove|wait for)\b", re.IGNORECASE
)


def failure_line(exc: BaseException) -> tuple[int, bool, str]:
    """(exit code, whether a retry can help, the final log line) for ``exc``."""
    kind = classify(exc)
    message = one_line(exc)
    if kind is None:
        return (
            1,
            True,
            (
                f"{PREFIX}unexpected {type(exc).__name__}: {message} — this looks like a bug; "
                "the traceback above shows where (please report it with this log)"
            ),
        )
    failure = FAILURES[kind]
    # The library's messages usually end with the remedy already; add the default otherwise.
    tail = "" if _REMEDY.search(message) else f" — {failure.hint}"
    retry_helps = failure.retry_helps
    if kind == "download":
        # refused offline: deterministic; a network error may pass, so a retry may help
        from robustft.data.download import OFFLINE_ENV

        retry_helps = not environment_flag(OFFLINE_ENV)
    return failure.code, retry_helps, f"{PREFIX}{message}{tail}"


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run a step's ``main`` and exit; see the module docstring for what a failure prints."""
    try:
        status = main()
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise  # sys.exit(n), argparse's usage errors (2): their message is printed already
        # a step's own "raise SystemExit('what is wrong')": bad arguments, same last line
        print(f"{PREFIX}{' | '.join(exc.code.strip().splitlines())}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure gets its final line
        code, retry_helps, line = failure_line(exc)
        traceback.print_exc()
        sys.stdout.flush()
        print(line, file=sys.stderr, flush=True)
        if not retry_helps:
            _record_failure(code, line)
        sys.exit(code)
    if not status:
        _clear_failure()
    sys.exit(status or 0)


def report_failure(exc: BaseException, code: int | None = None) -> int:
    """For a step whose ``main`` returns exit codes itself: print ``exc``'s final line, record
    it if a retry would repeat it, and return the exit code (``code`` overrides the kind's)."""
    kind_code, retry_helps, line = failure_line(exc)
    code = kind_code if code is None else code
    print(line, file=sys.stderr, flush=True)
    if not retry_helps:
        _record_failure(code, line)
    return code


# --- failure marker (not retrying deterministic failures) -----------------------------------


def _marker() -> Path | None:
    return None if _job is None else getattr(_job, "failure_marker", None)


def _record_failure(code: int, line: str) -> None:
    marker = _marker()
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"code": code, "line": line}) + "\n")


def _clear_failure() -> None:
    marker = _marker()
    if marker is not None:
        marker.unlink(missing_ok=True)


def _repeat_recorded_failure(args: argparse.Namespace) -> None:
    """On a retry (attempt > 1), end at once with a deterministic failure recorded by an
    earlier attempt of this invocation; on attempt 1 forget any older record."""
    marker = getattr(args, "failure_marker", None)
    if marker is None or not marker.exists():
        return
    if args.attempt <= 1:
        marker.unlink(missing_ok=True)
        return
    try:
        recorded = json.loads(marker.read_text())
        code, line = int(recorded["code"]), str(recorded["line"])
    except (ValueError, KeyError, TypeError):
        marker.unlink(missing_ok=True)  # unreadable: just run
        return
    print(
        f"attempt {args.attempt}: not retried — attempt 1 failed in a way a retry repeats "
        f"(recorded in {marker}):",
        file=sys.stderr,
    )
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


# --- start-up ---------------------------------------------------------------------------------


def add_job_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments every rule passes: Snakemake's attempt number and the failure marker."""
    p.add_argument(
        "--attempt",
        type=int,
        default=1,
        help="Snakemake's attempt number of this job (1 = first try of an invocation)",
    )
    p.add_argument(
        "--failure-marker",
        type=Path,
        default=None,
        help="file recording a failure a retry would repeat (see robustft.steps._common)",
    )
    return p


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs this job needs: on a workstation without a scheduler a free one is "
        "claimed and CUDA_VISIBLE_DEVICES set (Snakemake does not do it)",
    )
    return add_job_arguments(p)


def add_keep_checkpoints(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--keep-checkpoints 0|1`` of the training steps (the rule passes config.yaml's
    ``keep_checkpoints``): without it a finished run's checkpoint directory is deleted."""
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        nargs="?",
        const=1,
        default=0,
        choices=(0, 1),
        help="keep the checkpoint directory once the outputs are written (default: delete it)",
    )
    return p


def start_job(args: argparse.Namespace) -> None:
    """Logging, and the failure marker of an earlier attempt (steps without torch threads)."""
    global _job
    _job = args
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Marks where each attempt starts in a log that keeps earlier attempts (rules/common.smk).
    logging.getLogger("robustft.steps").info(
        "%s attempt %d: pid %d on %s",
        Path(sys.argv[0]).stem,
        args.attempt,
        os.getpid(),
        platform.node(),
    )
    _repeat_recorded_failure(args)


def start(args: argparse.Namespace) -> None:
    start_job(args)
    global _gpu_claim
    _gpu_claim = claim_gpus(args.gpus)  # before anything initialises CUDA
    torch.set_num_threads(max(1, args.threads))


def settings(text: str) -> dict:
    """Settings arrive as one JSON string (the rule's ``params``)."""
    return json.loads(text)


def read_settings(contract: type[T], text: str) -> T:
    """``--settings`` JSON as the step's contract (:mod:`robustft.contracts`): an unknown or
    missing setting stops the step with a message naming it, before any work."""
    try:
        return contract.from_dict(settings(text))
    except (ContractError, json.JSONDecodeError) as e:
        raise ContractError(f"--settings: {e}") from e


def environment_flag(name: str) -> bool:
    """An on/off environment variable (``1``/``true``/``yes`` = on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
