"""Test helper: start child processes with SIGINT handled, whatever the test runner was started as."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Start children with SIGINT handled, as a terminal's foreground job: a test runner started as a background job
    of a non-interactive shell (``cmd &`` in a script) has SIGINT ignored, which its children inherit through exec
    and Python keeps (then initwise bench rightly ignores Ctrl-C too, and the Ctrl-C test would wait for nothing)."""
    old = signal.getsignal(signal.SIGINT)
    if old is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a caught signal is reset to SIG_DFL at exec
    try:
        yield
    finally:
        if old is signal.SIG_IGN:
            signal.signal(signal.SIGINT, old)
