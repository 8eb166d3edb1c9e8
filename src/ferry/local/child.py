"""A server in a child process of the stack's: the embedded AWS (moto), the local SageMaker endpoint.

The child listens first and reports its port at once on a pipe, so that the parent goes on (imports, starts the
functions) while the child imports and loads what it serves; it then reports ``ready`` (or ``failed: why``). It
ends at end of file on its stdin, which also happens when the parent dies, even killed with SIGKILL, and it ignores
SIGINT (Ctrl-C in a terminal reaches the whole process group: the parent stops it).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ferry.local.exceptions import LocalError, StartCancelledError
from ferry.local.signals import sigint_blocked

_POLL_S = 0.05
READY = "ready"
FAILED = "failed: "


class ChildProcess:
    """The parent's handle on a child server started as ``python -m MODULE --parent PID ARGUMENTS... FD``.

    `error` is the exception type of its failures; `what` names it in their messages."""

    what = "the child process"
    error: type[LocalError] = LocalError

    def __init__(self, module: str, arguments: Sequence[str], environment: Mapping[str, str]):
        self.module = module
        self.arguments = list(arguments)
        self.environment = dict(environment)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._report = -1
        self._buffer = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> ChildProcess:
        """Start the process and learn its port; what it serves loads while this returns."""
        read, write = os.pipe()
        try:
            with sigint_blocked():  # it unblocks SIGINT once it ignores it (ferry.local.signals)
                self.process = subprocess.Popen(
                    [sys.executable, "-m", self.module, "--parent", str(os.getpid()), *self.arguments, str(write)],
                    env=self.environment, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write,))
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        self._report = read
        self.port = int(self._reported(timeout, None))
        return self

    def wait_ready(self, timeout: float, cancelled: Callable[[], bool] | None = None) -> None:
        """Wait until it serves; raises `error` with the child's reason when it failed."""
        if self._reported(timeout, cancelled) != READY:
            raise self.error(f"{self.what} did not start")

    def _reported(self, timeout: float, cancelled: Callable[[], bool] | None) -> str:
        line = self._line(timeout, cancelled)
        if line.startswith(FAILED):
            self.stop()
            raise self.error(f"{self.what} did not start: {line.removeprefix(FAILED)}")
        return line

    def _line(self, timeout: float, cancelled: Callable[[], bool] | None) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if cancelled is not None and cancelled():
                raise StartCancelledError("the local stack was stopped while it was starting")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.error(f"{self.what} did not start within {timeout:.0f} s")
            if not select.select([self._report], [], [], min(left, _POLL_S))[0]:
                continue
            chunk = os.read(self._report, 4096)
            if not chunk:
                code = self.process.wait() if self.process is not None else None
                raise self.error(f"{self.what} exited with status {code} while it was starting (its errors are above)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def stop(self) -> None:
        """End the process (at end of file on its stdin it exits at once; killed if it does not)."""
        if self._report >= 0:
            os.close(self._report)
            self._report = -1
        if self.process is None:
            return
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def report(fd: int, line: str) -> None:
    """In the child: one line to the parent (the port, then ``ready`` or ``failed: why``)."""
    os.write(fd, f"{' '.join(line.splitlines())}\n".encode())


def live_until_parent_goes() -> None:
    """In the child: exit once the parent closes our stdin (it stops the stack, or it is gone)."""

    def lifeline() -> None:
        with contextlib.suppress(OSError):
            while sys.stdin.buffer.read(4096):
                pass
        os._exit(0)

    threading.Thread(target=lifeline, name="lifeline", daemon=True).start()
