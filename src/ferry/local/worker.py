"""One local function instance, as a process of its own: a warm Lambda container (``python -m ferry.local.worker``).

Lambda runs each function in a sandbox of its own, with the function's environment variables and nothing of any
other function's; Powertools and boto3 read ``os.environ`` themselves, and Powertools' Metrics keeps class-level
state shared by every instance in a process, so functions that share a process share all of that. A worker is
therefore a process: started by :class:`ferry.local.functions.Worker` with the function's environment, it
imports the handler's module once (the init phase) and then runs one invocation at a time.

The protocol, over two pipes of its own (file descriptors given on the command line), is length-prefixed JSON:

- the worker sends ``{"ready": ...}`` once its module is imported, or ``{"error": ...}`` (and exits) if it fails;
- the parent sends ``{"id": N, "request_id": ..., "event": ...}``, the worker answers ``{"id": N, "result": ...}``
  or ``{"id": N, "error": {"errorType", "errorMessage", "stackTrace"}}``, as Lambda reports them.

The worker's stdout and stderr (file descriptors 1 and 2, so that C-level writes count too) are the function's
log: the parent files each line under the function's log group. Before each answer the worker flushes them and
writes a marker line (``MARKER`` and the invocation's number) to both, so that the parent can wait until every
line of the invocation has been filed before it returns.

The worker ends when the parent closes the request pipe, which also happens when the parent dies, even killed
with SIGKILL: a thread of the worker reads requests, and exits the process at end of file, whatever the handler
is doing. It ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the parent stops it.

Only the standard library is imported here: what this module imports counts in the function's cold start.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import queue
import select
import struct
import sys
import threading
import time
import traceback
from typing import Any

from ferry.local.context import LambdaContext
from ferry.local.signals import ignore_sigint

MARKER = "\x1eferry-local flushed "  # starts with ASCII RS: no log line of a function's own looks like it
_HEADER = struct.Struct("!Q")
_READ_SIZE = 1 << 20


class Channel:
    """Length-prefixed JSON messages: read from one file descriptor, written to another."""

    def __init__(self, read_fd: int, write_fd: int):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buffer = bytearray()
        self._eof = False

    def send(self, message: dict[str, Any]) -> None:
        """Write a message (raises TypeError or ValueError, having written nothing, if it is not JSON)."""
        data = json.dumps(message).encode("utf-8")
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self.write_fd, view):]

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message; None at end of file (the other side closed its end or is gone). Raises TimeoutError
        when no whole message has come within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        while True:
            message = self._take()
            if message is not None:
                return message
            if self._eof:
                return None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                if not poller.poll(max(1, int(left * 1000))):
                    continue
            chunk = os.read(self.read_fd, _READ_SIZE)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True

    def _take(self) -> dict[str, Any] | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        if len(self._buffer) < _HEADER.size + size:
            return None
        data = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
        del self._buffer[:_HEADER.size + size]
        message: dict[str, Any] = json.loads(data)
        return message


def error_of(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    """An exception as Lambda reports it: errorType, errorMessage and stackTrace (the function's frames)."""
    return {"errorType": error_type or type(exc).__name__, "errorMessage": str(exc),
            "stackTrace": traceback.format_tb(_beyond_worker(exc))}


def _beyond_worker(exc: BaseException) -> Any:
    """The traceback from the frame the worker called on: this module's frame is no part of the function."""
    trace = exc.__traceback__
    return trace.tb_next if trace is not None and trace.tb_frame.f_code.co_filename == __file__ else trace


def _log_error(exc: BaseException) -> None:
    """The error in the function's log, as Lambda's runtime writes it there."""
    trace = "".join(traceback.format_exception(type(exc), exc, _beyond_worker(exc)))
    sys.stderr.write(f"[ERROR] {type(exc).__name__}: {exc}\n{trace}")


class _Logs:
    """Flushes everything the function wrote, down to the C library's buffers, then writes a marker line."""

    def __init__(self) -> None:
        self._fflush: Any = None
        with contextlib.suppress(Exception):  # no C library to reach (not Linux or macOS): Python's buffers only
            import ctypes

            self._fflush = ctypes.CDLL(None).fflush

    def flush(self, number: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a handler may have closed or replaced them
                stream.flush()
        if self._fflush is not None:
            self._fflush(None)
        line = f"\n{MARKER}{number}\n".encode()
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.write(fd, line)


def _read_requests(channel: Channel, requests: queue.Queue[dict[str, Any]]) -> None:
    with contextlib.suppress(Exception):
        while (message := channel.receive()) is not None:
            requests.put(message)
    os._exit(0)  # the parent closed the pipe: it stops this function, or it is gone


def main(argv: list[str] | None = None) -> None:
    ignore_sigint()  # ferry.local.signals: it came blocked
    arguments = sys.argv[1:] if argv is None else argv
    config = json.loads(arguments[-1])  # [--parent PID] CONFIG: the parent's pid names whose worker this is
    channel = Channel(config["requests"], config["responses"])
    requests: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_read_requests, args=(channel, requests), name="requests", daemon=True).start()
    for stream in (sys.stdout, sys.stderr):  # a pipe is block-buffered: a line should reach the log when written
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    logs = _Logs()
    started = time.monotonic()
    module_name, _, attribute = config["handler"].rpartition(".")
    sys.path.insert(0, config["code_uri"])
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # a SystemExit at import is an init failure too
        _log_error(exc)
        logs.flush(0)
        channel.send({"error": error_of(exc, "Runtime.ImportModuleError" if isinstance(exc, ImportError) else None)})
        os._exit(1)
    handler = getattr(module, attribute, None)
    if not callable(handler):
        logs.flush(0)
        channel.send({"error": {"errorType": "Runtime.HandlerNotFound", "stackTrace": [],
                                "errorMessage": f"{config['handler']} is undefined or not exported"}})
        os._exit(1)
    logs.flush(0)
    channel.send({"ready": True, "pid": os.getpid(), "init_ms": round((time.monotonic() - started) * 1000, 1)})
    while True:
        request = requests.get()
        context = LambdaContext(function_name=config["function"], memory_limit_in_mb=config["memory_mb"],
                                timeout_s=config["timeout_s"], aws_request_id=request["request_id"])
        try:
            answer: dict[str, Any] = {"id": request["id"], "result": handler(request["event"], context)}
        except Exception as exc:
            _log_error(exc)
            answer = {"id": request["id"], "error": error_of(exc)}
        logs.flush(request["id"])
        try:
            channel.send(answer)
        except (TypeError, ValueError) as exc:  # the handler's answer is no JSON
            channel.send({"id": request["id"], "error": error_of(exc, "Runtime.MarshalError")})


if __name__ == "__main__":
    main()
