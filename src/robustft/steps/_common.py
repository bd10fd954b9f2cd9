"""Shared start-up of the step scripts: logging, thread count, GPU claim, and the ``--settings``
JSON parsed into the step's contract."""

from __future__ import annotations

import argparse
import json
import logging
from typing import TypeVar

import torch

from robustft.contracts import ContractError
from robustft.devices import claim_gpus

T = TypeVar("T")

# The GPU claim (a flock per device) must live as long as the job's process.
_gpu_claim = None


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
    return p


def start(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
        raise SystemExit(f"--settings: {e}") from e
