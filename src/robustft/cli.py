"""The ``robustft`` command: ``robustft <subcommand> [options]``.

Each subcommand lives in its own module and is imported only when called, so
``robustft plan`` stays torch-free and starts in well under a second.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module, function taking argv, one-line help)
COMMANDS = {
    "plan": ("robustft.plan.cli", "main", "jobs, GPU-hours and wall time of studies"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
        print("usage: robustft <command> [options]\n\ncommands:\n" + "\n".join(lines))
        known = not argv or argv[0] in ("-h", "--help")
        if not known:
            print(f"\nrobustft: unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if known else 2
    module, function, _ = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module), function)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
