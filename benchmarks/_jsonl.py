"""One-record-per-line JSON files for the advisor's benchmarks (validation runs, advisor features): append with
flush + fsync, read the complete lines (first record per ``key``; a partial last line from an interruption is
ignored). The bench runner's results store accepts only its own run records, hence this small reader."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["append", "read"]


def read(path: str | os.PathLike[str], every: bool = False) -> list[dict[str, Any]]:
    """The complete records, the first per ``key`` (``every``: all of them, in file order)."""
    p = Path(path)
    if not p.exists():
        return []
    out, seen = [], set()
    for line in p.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # an interrupted write
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("key"), str) and (every or rec["key"] not in seen):
            seen.add(rec["key"])
            out.append(rec)
    return out


def append(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = p.read_bytes() if p.exists() else b""
    if data and not data.endswith(b"\n"):  # cut a partial last line before appending
        with open(p, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
