"""Step: prepare one dataset into ``results/data/<name>/`` (arrays + manifest).

Run by the Snakemake data rule, or by hand for debugging::

    python -m robustft.steps.prepare_data --dataset textures --out results/data/textures \
        --seed 0 --options '{"num_classes": 10, "per_class": 100}'
    python -m robustft.steps.prepare_data --dataset cifar10 --raw-dir results/raw \
        --out results/data/cifar10 --options '{"preset": "official"}'
    python -m robustft.steps.prepare_data --list          # datasets and their options

Archives are looked for / downloaded in ``--raw-dir`` (``--offline`` or ROBUSTFT_OFFLINE=1
forbids downloading; the error then says which file to place where). The output directory
is written atomically. A failure ends with one ``robustft: ERROR:`` line (what to do); exit code
2 = bad arguments/options, 3 = data could not be obtained (this step's own codes, older than
:data:`robustft.steps._common.FAILURES`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from robustft.contracts import ContractError
from robustft.data import DATASETS, DataError, get_spec, load_prepared
from robustft.steps._common import add_job_arguments, report_failure, run, start_job

log = logging.getLogger("robustft.steps.prepare_data")


def _parse_options(text: str | None) -> dict:
    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError(f"--options must be a JSON object, got {type(value).__name__}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m robustft.steps.prepare_data", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), help="registry name")
    p.add_argument("--out", type=Path, help="output directory (results/data/<name>)")
    p.add_argument(
        "--raw-dir",
        type=Path,
        default=None,
        help="where archives are stored/downloaded and extracted",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="image size in px (default: 32 for CIFAR/generated, 224 otherwise)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (and generator seed)")
    p.add_argument(
        "--options",
        default=None,
        help='JSON object of dataset options (or @file.json), e.g. \'{"preset": "paper"}\'',
    )
    p.add_argument("--offline", action="store_true", help="never download")
    p.add_argument("--verify", action="store_true", help="re-read and check the output")
    p.add_argument("--list", action="store_true", help="describe every dataset and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return add_job_arguments(p)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    start_job(args)
    if args.list:
        for name in sorted(DATASETS):
            print(DATASETS[name].describe_options() + "\n")
        return 0
    if args.dataset is None or args.out is None:
        log.error("--dataset and --out are required")
        return 2
    try:
        options = _parse_options(args.options)
        spec = get_spec(args.dataset)
        out = spec.prepare(
            args.raw_dir,
            args.out,
            args.resolution,
            options,
            args.seed,
            offline=True if args.offline else None,
        )
    except (ValueError, TypeError, KeyError) as err:
        log.error("%s", err)
        return report_failure(ContractError(f"dataset {args.dataset!r}: {err}"), code=2)
    except (DataError, FileNotFoundError) as err:  # not obtained, or an unexpected layout
        log.error("%s", err)
        return report_failure(err if isinstance(err, DataError) else DataError(str(err)), code=3)
    ds = load_prepared(out, verify=args.verify)
    log.info(
        "%s: %d classes, counts %s, resolution %d -> %s",
        ds.name,
        ds.num_classes,
        ds.counts,
        ds.resolution,
        out,
    )
    return 0


if __name__ == "__main__":
    run(main)
