"""Shared start-up of the step scripts: logging, thread count, JSON settings."""

from __future__ import annotations

import argparse
import json
import logging

import torch

from robustft.devices import claim_gpus

# The GPU claim (a flock per device) must live as long as the job's process.
_gpu_claim = None


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--gpus", type=int, default=0,
                   help="GPUs this job needs: on a workstation without a scheduler a free one is "
                        "claimed and CUDA_VISIBLE_DEVICES set (Snakemake does not do it)")
    return p


def start(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    global _gpu_claim
    _gpu_claim = claim_gpus(args.gpus)  # before anything initialises CUDA
    torch.set_num_threads(max(1, args.threads))


def settings(text: str) -> dict:
    """Settings arrive as one JSON string (the rule's ``params``)."""
    return json.loads(text)
