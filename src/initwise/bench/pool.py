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
    if hasattr(signal, "pthread_sigmask"):  # spawned with SIGINT blocked (_sigint_deferred): a pending one was
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # discarded by SIG_IGN; unblock the rest
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True, name=WATCH_THREAD).start()
    torch.set_num_threads(num_threads)


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that comes inside the block until its end, where it is raised again (as the handler in place
    then treats it: ``KeyboardInterrupt`` by default; an inherited SIG_IGN, a background job's, stays ignored).

    Around spawning workers: the pool's state is never left half-updated by a ``KeyboardInterrupt``, the Ctrl-C is
    not lost, and SIGINT is *blocked* in this thread meanwhile, which a spawned process inherits through exec, so a
    Ctrl-C while a worker still imports torch stays pending there until its initializer ignores it (no traceback
    from the worker). Around stopping the pool: a second Ctrl-C cannot cut the termination of the workers short
    (the interpreter's exit would then wait for them). Outside the main thread (no signal handling there): a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGINT pending meanwhile arrives now (held)
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)
        if held:
            signal.raise_signal(signal.SIGINT)  # to the handler restored above


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
                with _sigint_deferred():  # submit() may spawn a worker
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
        with _sigint_deferred():  # a second Ctrl-C waits until every worker is stopped
            _stop(pool)
            for c in pending.values():
                finish(c, False)
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
        if proc.is_alive():  # its code handles SIGTERM: the pool's manager thread, and so the exit, would wait
            proc.kill()
            proc.join(timeout=5)
