"""Entry point: ``initwise [SUBCOMMAND] ...``; with no subcommand, the main job runs on its built-in default."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand name -> module in this package that defines ``add_parser(subparsers)`` and ``run(args) -> int``
SUBCOMMANDS = {"advise": "advise", "diagnose": "diagnose", "bench": "bench", "fans": "fans"}
DEFAULT = "advise"


class CLIError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initwise",
        description="Layer-aware weight initialization for PyTorch: fans, gains, plans, diagnostics, advice.",
        epilog=f"With no subcommand, runs '{DEFAULT}' on its built-in default. 'initwise SUBCOMMAND -h' for help.",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(f"{__package__}.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv or [DEFAULT])
    if args.command is None:
        args = parser.parse_args([DEFAULT, *argv])
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"initwise {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
