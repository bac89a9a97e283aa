"""Writing a subcommand's files (JSON, plots): one place that turns file-system errors into CLIErrors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .main import CLIError

__all__ = ["write_text", "write_plot"]


def write_text(path: str, text: str) -> None:
    """Write ``text`` (plus a newline) to ``path``; a CLIError naming the file if that fails."""
    try:
        Path(path).write_text(text + "\n")
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e}") from None
    print(f"wrote {path}")


def write_plot(path: str, plot: Callable[[str], Any]) -> None:
    """Call ``plot(path)``; a CLIError for a missing matplotlib or an unwritable file."""
    try:
        plot(path)
    except ImportError as e:
        raise CLIError(str(e)) from None
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot write the plot to {path}: {e}") from None
    print(f"wrote {path}")
