"""The embedded AWS: a moto server in a process of its own (``python -m ferry.local.aws``).

In the process that runs the stack, moto would share the GIL with whatever that process does (a test predicting
thousands of records in process starved the capture function's writes to a quarter of their speed), and keep
its state per process, so that a second stack found the first one's tables. A process per stack has neither
problem, and it ends with the stack.

The process listens before it imports moto and reports its port at once, so that the parent can go on (import
boto3, start functions) while moto imports; it then reports ``ready`` (:mod:`ferry.local.child`: it ends with
its parent and ignores SIGINT).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence

from ferry.local.child import READY, ChildProcess, live_until_parent_goes, report
from ferry.local.exceptions import LocalError
from ferry.local.signals import ignore_sigint

READY_TIMEOUT_S = 60.0


class EmbeddedAwsError(LocalError):
    """The embedded AWS (the moto server's process) did not start."""

    code = "embedded_aws_failed"


class EmbeddedAws(ChildProcess):
    """The parent's handle on the moto server's process; `services` are loaded before it reports ready, so that
    the first call to each is fast."""

    what = "the embedded AWS"
    error = EmbeddedAwsError

    def __init__(self, environment: Mapping[str, str], services: Sequence[str] = ()):
        super().__init__("ferry.local.aws", [",".join(services)], environment)
        self.endpoint = ""

    def start(self, timeout: float = READY_TIMEOUT_S) -> EmbeddedAws:
        """Start the process and learn its port (:attr:`endpoint`); moto imports while this returns."""
        super().start(timeout)
        self.endpoint = self.url
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, cancelled: Callable[[], bool] | None = None) -> None:
        """Wait until moto serves (a request sent before waits in the listen backlog, but a failed import would
        only show as a refused connection)."""
        super().wait_ready(timeout, cancelled)


def main(argv: list[str] | None = None) -> None:
    ignore_sigint()  # ferry.local.signals: it came blocked
    arguments = sys.argv[1:] if argv is None else argv
    services, fd = arguments[-2], int(arguments[-1])  # [--parent PID] SERVICES FD: --parent names whose it is
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    report(fd, str(listener.getsockname()[1]))
    live_until_parent_goes()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log: one line per AWS call
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    application = DomainDispatcherApplication(create_backend_app)
    for service in filter(None, services.split(",")):  # moto loads a service at its first call otherwise
        application.app_instances[service] = create_backend_app(service)  # type: ignore[arg-type]
    server = make_server("127.0.0.1", 0, application, threaded=True, request_handler=MotoRequestHandler,
                         fd=listener.fileno())
    report(fd, READY)
    os.close(fd)
    server.serve_forever()


if __name__ == "__main__":
    main()
