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


def plain(doc: str | None) -> str:
    """A module docstring as ``--help`` shows it: reST literals (````x````) as plain quotes."""
    return (doc or "").replace("``", "'")


def describe(e: BaseException) -> str:
    """An exception from a user's model or from initwise as a message: the usual error types by their message,
    the others (an ``assert`` in a forward, an IndexError...) with their type in front."""
    text = str(e).strip()
    if isinstance(e, (RuntimeError, ValueError, TypeError)) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
    """Run the command line; exit status 0, 2 for a usage error (one line on stderr), 130 after Ctrl-C."""
    command = ""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser()
        args = parser.parse_args(argv or [DEFAULT])
        if args.command is None:
            args = parser.parse_args([DEFAULT, *argv])
        command = f" {args.command}"
        return int(args.func(args) or 0)
    except CLIError as e:
        text = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line, always
        print(f"initwise{command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"initwise{command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


if __name__ == "__main__":  # pragma: no cover
    # run as ``python -m initwise._cli.main`` (torchrun): use the package's module, whose CLIError the
    # subcommands raise (this file, run as __main__, is a second module object with its own CLIError class)
    from initwise._cli.main import main as package_main

    sys.exit(package_main())
