"""The results store: one JSONL file of run records that several processes can share without losing a result.

- **Reading** never fails on a bad line: a line that is not UTF-8, not JSON, or not a complete record (its fields
  must rebuild its own ``key``, or, for a record of an older version without today's settings, match the key's
  parts and config hash; an ``ok`` record must carry its PSNR curve) is skipped and reported with its line
  number (:func:`read_results`), so a stub or a garbage line can never shadow a complete record of the same key.
  Of several complete records of one key the first wins; the others are reported as duplicates.
- **Writing** happens under an exclusive ``fcntl.flock`` on ``<file>.lock``: a partial last line left by a writer
  that was killed is cut off first, a record whose key is already complete is not written again, and the line goes
  out in one ``write`` followed by ``fsync``.
- **Claims** split a grid between processes: before a run starts, its process takes a non-blocking ``flock`` on
  ``<file>.claims/<hash of key>``; a second process finds the claim held and moves on. The kernel drops the lock
  when its holder dies (even by ``kill -9``), so a claim never outlives its process and needs no clean-up.

flock is advisory and local: processes on one machine (or a file system with working flock) share a file safely;
machines without a shared file system use the torch.distributed path of :mod:`initwise.bench.runner`.

Example:
    >>> import tempfile, pathlib
    >>> store = ResultsFile(pathlib.Path(tempfile.mkdtemp()) / "results.jsonl")
    >>> store.read().records
    []
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Claim", "ResultsFile", "StoreRead", "complete_problem", "read_records", "read_results"]


def complete_problem(rec: Any) -> str | None:
    """Why ``rec`` is not a complete run record (``None`` when it is one)."""
    from .runner import RunSpec

    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a record"
    key = rec.get("key")
    if not isinstance(key, str):
        return "no key"
    if rec.get("status") not in ("ok", "error"):
        return f"status {rec.get('status')!r}, not 'ok' or 'error'"
    head = ("task", "model", "scheme", "seed", "steps")
    missing = [n for n in (*head, "config_hash") if n not in rec]
    if missing:
        return f"missing {', '.join(missing)}"
    if key.split("|") != [*map(str, (rec[n] for n in head)), str(rec["config_hash"])]:
        return "its settings do not match its key"
    names = [f.name for f in fields(RunSpec)]
    if all(n in rec for n in names):  # a record of this version: every setting must rebuild the key
        try:
            rebuilt = RunSpec(**{n: (tuple(rec[n]) if n == "eval_at" else rec[n]) for n in names}).key
        except (TypeError, ValueError) as e:
            return f"its settings do not form a run ({e})"
        if rebuilt != key:
            return "its settings do not match its key"
    if rec["status"] == "error":
        return None if isinstance(rec.get("error"), str) else "an error record without its error"
    steps, psnr = rec.get("eval_steps"), rec.get("eval_psnr")
    if not isinstance(steps, list) or not isinstance(psnr, list) or len(steps) != len(psnr) or "final_psnr" not in rec:
        return "an ok record without its PSNR curve (eval_steps, eval_psnr, final_psnr)"
    return None


@dataclass
class StoreRead:
    """What a read found: the complete records (first per key, in file order) and the lines skipped, as
    ``(line number, reason)``."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def describe(self, path: str | os.PathLike[str]) -> str:
        """One line for the user, e.g. ``results.jsonl: skipped 2 unreadable lines (3: not JSON; 7: ...)``."""
        if not self.skipped:
            return ""
        parts = "; ".join(f"{n}: {why}" for n, why in self.skipped[:5])
        more = f"; and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
        return f"{path}: skipped {len(self.skipped)} unusable line(s) ({parts}{more})"


def _parse(data: bytes) -> StoreRead:
    out = StoreRead()
    seen: dict[str, int] = {}
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            out.skipped.append((n, f"not UTF-8 (byte {e.start})"))
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError:
            out.skipped.append((n, "not JSON"))
            continue
        problem = complete_problem(rec)
        if problem is not None:
            out.skipped.append((n, f"incomplete record: {problem}"))
        elif rec["key"] in seen:
            out.skipped.append((n, f"a second record of the key of line {seen[rec['key']]}"))
        else:
            seen[rec["key"]] = n
            out.records.append(rec)
    if tail.strip():
        out.skipped.append((len(lines) + 1, "a partial last line (an interrupted write)"))
    return out


def read_results(path: str | os.PathLike[str]) -> StoreRead:
    """Every complete record of a results file and the lines skipped (a missing file: none of either)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return StoreRead()
    return _parse(data)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete records of a results file (first per key); unusable lines are skipped (see
    :func:`read_results` for which)."""
    return read_results(path).records


class Claim:
    """A held claim on one run (an open, flock-ed file); :meth:`release` is idempotent."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self, done: bool = True) -> None:
        if self.fd < 0:
            return
        if done:
            try:
                self.path.unlink()  # a waiter that still gets this inode re-checks the results under the lock
            except FileNotFoundError:
                pass
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


class ResultsFile:
    """A JSONL results file shared safely by processes on one machine (see the module docstring).

    Opening it creates its folder and cuts off a partial last line (under the lock, so never another writer's).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.claims_dir = self.path.with_name(self.path.name + ".claims")
        with self._locked():
            self._repair()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _repair(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if not size:
            return
        with open(self.path, "r+b") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> StoreRead:
        return read_results(self.path)

    def records(self) -> list[dict[str, Any]]:
        return self.read().records

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records()}

    def append(self, record: dict[str, Any]) -> bool:
        """Write ``record`` unless its key already has a complete record; True if written.

        Raises ValueError for a record that is not complete (it would be skipped on reading) or not JSON-able.
        """
        problem = complete_problem(record)
        if problem is not None:
            raise ValueError(f"not a complete run record ({problem}): {str(record)[:200]}")
        line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        with self._locked():
            self._repair()
            if record["key"] in self.keys():
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        return True

    def claim(self, key: str, *, wait: bool = False) -> Claim | None:
        """Claim the run ``key`` for this process: a :class:`Claim`, or None when another live process holds it
        (``wait=True``: block until it is free) or the key is already complete."""
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        path = self.claims_dir / (hashlib.sha1(key.encode()).hexdigest()[:24] + ".claim")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        claim = Claim(fd, path)
        if key in self.keys():  # finished by another process since this one last looked
            claim.release(done=True)
            return None
        return claim
