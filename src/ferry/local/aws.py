"""The embedded AWS: a moto server in a process of its own (``python -m ferry.local.aws``).

In the process that runs the stack, moto would share the GIL with whatever that process does (a test predicting
thousands of records in process starved the capture function's writes to a quarter of their speed), and keep
its state per process, so that a second stack found the first one's tables. A process per stack has neither
problem, and it ends with the stack.

The process listens before it imports moto and reports its port at once, so that the parent can go on (import
boto3, start functions) while moto imports; it then reports ``ready``. It ends at end of file on its stdin,
which also happens when the parent dies, even killed with SIGKILL, and it ignores SIGINT (Ctrl-C in a terminal
reaches the whole process group: the parent stops it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ferry.local.exceptions import LocalError, StartCancelledError
from ferry.local.signals import ignore_sigint, sigint_blocked

READY_TIMEOUT_S = 60.0
_POLL_S = 0.05


class EmbeddedAwsError(LocalError):
    """The embedded AWS (the moto server's process) did not start."""

    code = "embedded_aws_failed"


class EmbeddedAws:
    """The parent's handle on the moto server's process."""

    def __init__(self, environment: Mapping[str, str], services: Sequence[str] = ()):
        self.environment = dict(environment)
        self.services = list(services)  # loaded before it reports ready: the first call to each is then fast
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self._report = -1
        self._buffer = b""

    def start(self) -> EmbeddedAws:
        """Start the process and learn its port (:attr:`endpoint`); moto imports while this returns."""
        read, write = os.pipe()
        try:
            with sigint_blocked():  # it unblocks SIGINT once it ignores it (ferry.local.signals)
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "ferry.local.aws", "--parent", str(os.getpid()), ",".join(self.services),
                     str(write)],
                    env=self.environment, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write,))
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        self._report = read
        self.endpoint = f"http://127.0.0.1:{int(self._line(READY_TIMEOUT_S, None))}"
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, cancelled: Callable[[], bool] | None = None) -> None:
        """Wait until moto serves (a request sent before waits in the listen backlog, but a failed import would
        only show as a refused connection)."""
        if self._line(timeout, cancelled) != "ready":
            raise EmbeddedAwsError("the embedded AWS did not start")

    def _line(self, timeout: float, cancelled: Callable[[], bool] | None) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if cancelled is not None and cancelled():
                raise StartCancelledError("the local stack was stopped while it was starting")
            left = deadline - time.monotonic()
            if left <= 0:
                raise EmbeddedAwsError(f"the embedded AWS did not start within {timeout:.0f} s")
            if not select.select([self._report], [], [], min(left, _POLL_S))[0]:
                continue
            chunk = os.read(self._report, 64)
            if not chunk:
                code = self.process.wait() if self.process is not None else None
                raise EmbeddedAwsError(f"the embedded AWS exited with status {code} while it was starting "
                                       "(its errors are above)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

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


def _lifeline() -> None:
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    os._exit(0)  # the parent closed our stdin: it stops the stack, or it is gone


def main(argv: list[str] | None = None) -> None:
    ignore_sigint()  # ferry.local.signals: it came blocked
    arguments = sys.argv[1:] if argv is None else argv
    services, report = arguments[-2], int(arguments[-1])  # [--parent PID] SERVICES FD: --parent names whose it is
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    os.write(report, f"{listener.getsockname()[1]}\n".encode())
    threading.Thread(target=_lifeline, name="lifeline", daemon=True).start()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log: one line per AWS call
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    application = DomainDispatcherApplication(create_backend_app)
    for service in filter(None, services.split(",")):  # moto loads a service at its first call otherwise
        application.app_instances[service] = create_backend_app(service)  # type: ignore[arg-type]
    server = make_server("127.0.0.1", 0, application, threaded=True, request_handler=MotoRequestHandler,
                         fd=listener.fileno())
    os.write(report, b"ready\n")
    os.close(report)
    server.serve_forever()


if __name__ == "__main__":
    main()
