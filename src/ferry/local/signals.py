"""Ctrl-C and the stack's child processes (moto, the functions' workers).

Ctrl-C in a terminal sends SIGINT to the whole process group; the children ignore it and the parent stops them. A
child can only ignore it once its own code runs, after the interpreter's start (site, .pth files, imports), and a
SIGINT in that window raised KeyboardInterrupt and printed its traceback. So the parent starts each child with
SIGINT blocked (a thread's signal mask is inherited across fork and exec), and the child unblocks it once it
ignores it: a SIGINT that came meanwhile stays pending, then is discarded.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while the block runs (start a child process in it)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_sigint() -> None:
    """In a child: ignore SIGINT from now on, and discard one that came while it was blocked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
