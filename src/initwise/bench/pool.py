"""Running grid entries: in this process, or in a pool of spawned worker processes that never outlive it.

Workers ignore SIGINT (Ctrl-C goes to the whole process group; the parent alone handles it and terminates them)
and die with their parent, even after ``kill -9``: on Linux the kernel kills them (``PR_SET_PDEATHSIG``), elsewhere
a thread polling the parent's pid ends them within a second; with the last of them multiprocessing's resource
tracker exits too (its pipe closes). A worker still importing torch when its parent dies exits as soon as its
initializer runs (it checks the parent's pid first). A run is claimed right before it starts, so that
several processes sharing a results file split the grid (:meth:`initwise.bench.store.ResultsFile.claim`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["execute"]


WATCH_THREAD = "initwise-watch"  # the watcher's OS thread name on Linux (ps -L, /proc/PID/task/*/comm)


def _watch_parent(ppid: int, period_s: float = 0.5) -> None:
    """Exit this worker as soon as its parent is gone (after ``kill -9`` the worker is re-parented)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(15, WATCH_THREAD.encode(), 0, 0, 0)  # 15 = PR_SET_NAME: this thread's name
        except (OSError, AttributeError):
            pass
    while True:
        time.sleep(period_s)
        if os.getppid() != ppid:
            os._exit(1)


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this worker when its parent dies (prctl PR_SET_PDEATHSIG), which works even
    while the worker holds the GIL in a long computation. The signal follows the *thread* that spawned the worker:
    the pool spawns from the parent's main thread (``submit``), whose end is the parent's end."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG (linux/prctl.h)
    except (OSError, AttributeError):  # no libc symbol: the watcher thread alone
        pass


def _worker_init(num_threads: int, ppid: int) -> None:
    _die_with_parent()
    if os.getppid() != ppid:  # the parent died before the kernel was told
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent alone handles it
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True, name=WATCH_THREAD).start()
    torch.set_num_threads(num_threads)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while workers are spawned: an ignored signal stays ignored through exec (and Python keeps it
    so), so a Ctrl-C that comes while a worker is still importing torch cannot print its traceback."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)


Claimer = Callable[[Any], Any]  # spec -> a claim with .release(done), or None: skip it (another has it)


def execute(specs: Sequence[Any], sink: Callable[[dict[str, Any]], None], *, workers: int = 1,
            num_threads: int | None = None, claim: Claimer | None = None) -> list[Any]:
    """Run ``specs``, calling ``sink(record)`` in this process as each run ends (completion order).

    ``workers > 1``: a pool of spawned processes, each with ``num_threads`` torch threads (default 1); the workers
    ignore Ctrl-C (the parent stops them) and exit within a second when the parent dies. ``claim(spec)`` is asked
    right before a run starts (so concurrent processes split the grid); a spec it refuses is skipped and returned.
    """
    from .runner import run_one

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    skipped: list[Any] = []
    queue = list(specs)

    def next_claimed() -> tuple[Any, Any] | None:
        while queue:
            s = queue.pop(0)
            c = claim(s) if claim is not None else None
            if claim is not None and c is None:
                skipped.append(s)
                continue
            return s, c
        return None

    def finish(c: Any, ok: bool) -> None:
        if c is not None:
            c.release(done=ok)

    if workers == 1 or len(specs) <= 1:
        while (item := next_claimed()) is not None:
            s, c = item
            ok = False
            try:
                sink(run_one(s, num_threads))
                ok = True
            finally:
                finish(c, ok)
        return skipped
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = 1 if num_threads is None else num_threads
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                               initargs=(threads, os.getpid()))
    pending: dict[Any, Any] = {}
    try:
        def fill() -> None:
            while len(pending) < workers and (item := next_claimed()) is not None:
                with _sigint_ignored():  # submit() may spawn a worker
                    pending[pool.submit(run_one, item[0], threads)] = item[1]

        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                c = pending.pop(f)
                try:
                    sink(f.result())
                finally:
                    finish(c, True)
            fill()
    except BaseException:
        for c in pending.values():
            finish(c, False)
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return skipped


def _stop(pool: Any) -> None:
    """Stop a process pool now (Ctrl-C, an error): cancel what has not started and terminate the workers.

    ``ProcessPoolExecutor`` has no public way to kill running tasks; ``_processes`` (pid -> Process) is read here.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
