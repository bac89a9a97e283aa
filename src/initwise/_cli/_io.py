"""Writing a subcommand's files (JSON, plots, state dicts): checked before any work, written all or nothing.

A subcommand calls :func:`check_outputs` with every output path it was given *before* it computes anything, so a
bad path (a directory, a missing or unwritable folder, a plot format matplotlib cannot write, the same file twice)
is a one-line CLIError and nothing runs. At the end :func:`write_outputs` writes each file to a temporary name
beside its destination and renames them all only when every one was written: a failure leaves no file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .main import CLIError

__all__ = ["check_outputs", "json_text", "write_outputs", "write_text", "write_plot"]

Writer = Callable[[str], Any]


def _plot_formats() -> dict[str, str]:
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install 'initwise[plot]'") from None
    return FigureCanvasBase.get_supported_filetypes()


def check_outputs(outputs: Sequence[tuple[str, str | None, str]]) -> None:
    """Check ``(flag, path, kind)`` outputs before any work; ``kind`` is ``"file"`` or ``"plot"``; None: not given.

    A CLIError names the flag and the path: an empty path, an existing directory, a missing or unwritable parent
    folder, an existing file that cannot be overwritten, a plot suffix matplotlib cannot write, or two outputs
    that are the same file.
    """
    seen: dict[Path, str] = {}
    for flag, path, kind in outputs:
        if path is None:
            continue
        if not path.strip():
            raise CLIError(f"{flag} is empty: give a file name")
        p = Path(path)
        if p.is_dir():
            raise CLIError(f"{flag} {path}: is a directory; give a file name")
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.exists():
            raise CLIError(f"{flag} {path}: folder {parent} does not exist")
        if not parent.is_dir():
            raise CLIError(f"{flag} {path}: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CLIError(f"{flag} {path}: folder {parent} is not writable")
        if p.exists() and not os.access(p, os.W_OK):
            raise CLIError(f"{flag} {path}: the file exists and is not writable")
        if kind == "plot":
            formats = _plot_formats()
            suffix = p.suffix.lower().lstrip(".")
            if suffix not in formats:
                raise CLIError(f"{flag} {path}: unknown image format {('.' + suffix) if suffix else '(no suffix)'};"
                               f" use one of {', '.join('.' + f for f in sorted(formats))}")
        key = p.resolve()
        if key in seen:
            raise CLIError(f"{flag} and {seen[key]} name the same file {path}")
        seen[key] = flag


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """Strict JSON (RFC 8259) of ``obj``, indented, with a final newline: nan and inf become null (Python's json
    would write ``NaN``, which other readers reject)."""
    return json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_outputs(items: Sequence[tuple[str, Writer]], *, announce: bool = True) -> None:
    """Write every ``(path, writer)``: ``writer(tmp)`` fills a temporary file beside ``path``; when all succeeded
    they are renamed into place. On any failure every temporary file is removed and a CLIError names the file.
    ``announce``: print ``wrote PATH`` for each."""
    staged: list[tuple[str, str]] = []
    try:
        for path, writer in items:
            p = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=p.suffix, dir=p.parent if str(p.parent) else ".")
            os.close(fd)
            staged.append((tmp, path))
            try:
                writer(tmp)
            except ImportError as e:
                raise CLIError(str(e)) from None
            except (OSError, ValueError, RuntimeError) as e:
                raise CLIError(f"cannot write {path}: {e}") from None
        mode = 0o666 & ~_umask()
        for tmp, path in staged:
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except OSError as e:
        raise CLIError(f"cannot write the output files: {e}") from None
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    for _, path in staged if announce else ():
        print(f"wrote {path}")


def write_text(path: str, text: str) -> None:
    """Write ``text`` (plus a newline) to ``path``; a CLIError naming the file if that fails."""
    write_outputs([(path, lambda tmp: Path(tmp).write_text(text + "\n"))])


def write_plot(path: str, plot: Callable[[str], Any]) -> None:
    """Call ``plot(path)``; a CLIError for a missing matplotlib or an unwritable file."""
    write_outputs([(path, plot)])
