"""Shared start-up of the step scripts: logging, thread count, JSON settings."""

from __future__ import annotations

import argparse
import json
import logging

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return p


def start(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))


def settings(text: str) -> dict:
    """Settings arrive as one JSON string (the rule's ``params``)."""
    return json.loads(text)
