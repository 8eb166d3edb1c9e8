"""Run a function of the template as Lambda does: in a process of its own, with its own environment.

A :class:`Worker` is one warm container: a ``python -m ferry.local.worker`` process (:mod:`ferry.local.worker`)
started with exactly the function's environment, which imports the handler once and then takes one invocation
at a time. Its stdout and stderr are the function's log (:class:`ferry.local.logs.LogStream`). A
:class:`LocalFunction` is a function of the template (one version of it: its code and its variables) with a small
pool of workers, one by default, so that concurrent invocations, or two versions of one function, run side by
side without ever seeing each other's environment.

Nothing here changes this process: no environment variable, no ``sys.stdout``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from ferry.local.context import LambdaContext, log_group_of
from ferry.local.exceptions import (
    FunctionError,
    FunctionExitError,
    FunctionInitError,
    FunctionTimeoutError,
    StackStoppedError,
    StartCancelledError,
)
from ferry.local.logs import LogLine, LogStream
from ferry.local.signals import sigint_blocked
from ferry.local.template import Function
from ferry.local.worker import MARKER, Channel

__all__ = ["INIT_TIMEOUT_S", "LambdaContext", "LocalFunction", "Worker", "log_group_of"]

INIT_TIMEOUT_S = 120.0  # a module import that takes longer is stuck (Lambda allows 10 s, then retries once)
STOP_GRACE_S = 2.0  # a worker told to stop that is still there after this is killed
FLUSH_TIMEOUT_S = 10.0  # the longest wait for an invocation's log lines after its answer
_POLL_S = 0.05  # how often a wait that can be cancelled looks at its cancel flag

Sink = Callable[[LogLine], None]
Echo = Callable[[str], None]


def _source_root() -> str:
    """The folder that holds this ``ferry`` package, so that a worker imports the same code as its parent."""
    return str(Path(__file__).resolve().parent.parent.parent)


class Worker:
    """One process of a function: started with `environment` (all of it: it inherits nothing), it imports the
    handler (:meth:`start`, then :meth:`wait_ready`) and runs :meth:`invoke` one event at a time."""

    def __init__(self, function: Function, environment: Mapping[str, str], sink: Sink, echo: Echo | None = None):
        self.function = function
        self.environment = dict(environment)
        self.sink = sink
        self.echo = echo
        self.tail: deque[str] = deque(maxlen=40)  # the last log lines, for the error of a worker that failed
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.ready = False
        self._channel: Channel | None = None
        self._request_fd: int | None = None
        self._streams: list[LogStream] = []
        self._invocations = 0
        self._state = threading.Lock()  # guards the pipes between an invocation and stop()
        self._busy = False
        self._stopping = False

    @property
    def name(self) -> str:
        return self.function.logical_id

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and not self._stopping

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> Worker:
        """Start the process; it imports the handler while this returns (see :meth:`wait_ready`)."""
        requests_read, requests_write = os.pipe()
        responses_read, responses_write = os.pipe()
        config = {"handler": self.function.handler, "code_uri": str(self.function.code_uri.resolve()),
                  "function": self.name, "memory_mb": self.function.memory_mb, "timeout_s": self.function.timeout_s,
                  "requests": requests_read, "responses": responses_write}
        with self._state:
            try:
                if self._stopping:
                    raise StackStoppedError(f"{self.name}: the function is stopped")
                with sigint_blocked():  # it unblocks SIGINT once it ignores it (ferry.local.signals)
                    self.process = subprocess.Popen(
                        [sys.executable, "-m", "ferry.local.worker", "--parent", str(os.getpid()), json.dumps(config)],
                        env=self.environment, cwd=self.function.code_uri, stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(requests_read, responses_write))
            except BaseException:
                os.close(requests_write)
                os.close(responses_read)
                raise
            finally:  # the child has its own copies of these two (or there is no child)
                os.close(requests_read)
                os.close(responses_write)
            self.pid, self.ready, self._invocations = self.process.pid, False, 0
            self._request_fd, self._channel = requests_write, Channel(responses_read, requests_write)
        self.tail.clear()
        group = log_group_of(self.name)
        self._streams = [LogStream(stream, group, self.sink, MARKER, self.echo, self.tail).start()
                         for stream in (self.process.stdout, self.process.stderr) if stream is not None]
        return self

    def wait_ready(self, timeout: float = INIT_TIMEOUT_S, cancelled: Callable[[], bool] | None = None) -> None:
        """Wait for the handler's import. Raises FunctionInitError (with the last lines of the log) when it
        fails, StartCancelledError as soon as `cancelled()` says so."""
        assert self._channel is not None, "start() first"
        deadline = time.monotonic() + timeout
        message = None
        while message is None:
            if cancelled is not None and cancelled():
                raise StartCancelledError(f"{self.name}: stopped while it was starting")
            if time.monotonic() > deadline:
                self.kill()
                raise self._init_error("Runtime.InitTimeout", f"its init took more than {timeout:.0f} s")
            try:
                message = self._channel.receive(timeout=_POLL_S)
            except TimeoutError:
                continue
            if message is None:
                code = self._wait_exit()
                raise self._init_error("Runtime.ExitError", f"its process exited with {_status(code)} during init")
        self._flushed(0)
        if "error" in message:
            error = message["error"]
            self._wait_exit()
            raise self._init_error(error["errorType"], error["errorMessage"], error.get("stackTrace", ()))
        self.ready = True

    def _init_error(self, error_type: str, message: str, stack: Any = ()) -> FunctionInitError:
        self._flushed(0, timeout=1)
        tail = "\n".join(f"  | {line}" for line in list(self.tail)[-15:])
        return FunctionInitError(self.name, error_type, message + (f"; its log ended with:\n{tail}" if tail else ""),
                                 stack)

    def stop(self) -> None:
        """Stop the process for good: at end of file on its request pipe it exits at once, even mid-invocation
        (an invocation in flight then fails with StackStoppedError); killed if still there after a grace period."""
        self.begin_stop()
        self.finish_stop()

    def begin_stop(self) -> None:
        """Tell the process to end, without waiting for it (stop many at once, then :meth:`finish_stop` each)."""
        with self._state:
            self._stopping = True
            if not self._busy:
                self._close_pipes()
            elif self.process is not None:  # the invoking thread owns the pipes: end the process under it
                with contextlib.suppress(OSError):
                    self.process.kill()

    def finish_stop(self, grace: float = STOP_GRACE_S) -> None:
        """Wait for the process to end (killed after `grace` seconds) and for its log to be read."""
        if self.process is not None:
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in self._streams:
            stream.join(timeout=1)
        if not any(stream.alive for stream in self._streams):  # (closing a pipe under a reader would block)
            for pipe in self._process_pipes():
                with contextlib.suppress(OSError):
                    pipe.close()

    def kill(self) -> None:
        """End the process now (a timeout), and wait until its log has been read to the end."""
        if self.process is not None:
            with contextlib.suppress(OSError):
                self.process.kill()
            self.process.wait()
            for stream in self._streams:
                stream.join(timeout=FLUSH_TIMEOUT_S)

    def _wait_exit(self) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def _close_pipes(self) -> None:
        fds = [self._request_fd, self._channel.read_fd if self._channel else None]
        self._request_fd, self._channel = None, None
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _process_pipes(self) -> list[IO[bytes]]:
        if self.process is None:
            return []
        return [pipe for pipe in (self.process.stdout, self.process.stderr) if pipe is not None]

    def _flushed(self, number: int, timeout: float = FLUSH_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for stream in self._streams:
            stream.wait_flushed(number, max(0.0, deadline - time.monotonic()))

    def _log(self, line: str) -> None:
        """A line of the function's log that the local Lambda writes itself."""
        self.sink((log_group_of(self.name), int(time.time() * 1000), line))
        if self.echo is not None:
            self.echo(line)

    # -- invocation -------------------------------------------------------------------------------------------

    def invoke(self, event: Any, request_id: str | None = None) -> Any:
        """Run the handler on `event` in the worker; its answer. Every line the invocation wrote has been filed
        under the function's log group when this returns or raises."""
        with self._state:
            if self._stopping or self._channel is None:
                raise StackStoppedError(f"{self.name}: the function is stopped")
            self._busy = True
            channel = self._channel
        try:
            return self._invoke(channel, event, request_id or str(uuid.uuid4()))
        finally:
            with self._state:
                self._busy = False
                if self._stopping or (self.process is not None and self.process.poll() is not None):
                    self._close_pipes()

    def _invoke(self, channel: Channel, event: Any, request_id: str) -> Any:
        self._invocations += 1
        number = self._invocations
        try:
            channel.send({"id": number, "request_id": request_id, "event": event})
            answer = channel.receive(timeout=self.function.timeout_s)
        except TimeoutError:
            self.kill()
            message = f"{request_id} Task timed out after {self.function.timeout_s:.2f} seconds"
            self._log(message)  # as Lambda logs it
            raise FunctionTimeoutError(self.name, "Sandbox.Timedout", message) from None
        except (BrokenPipeError, ConnectionError):
            answer = None
        if answer is None:
            code = self._wait_exit()
            self._flushed(number, timeout=1)
            if self._stopping:
                raise StackStoppedError(f"{self.name}: the function was stopped during an invocation")
            raise FunctionExitError(self.name, "Runtime.ExitError",
                                    f"RequestId: {request_id} Error: the function's process exited with "
                                    f"{_status(code)}")
        self._flushed(number)
        if "error" in answer:
            error = answer["error"]
            raise FunctionError(self.name, error["errorType"], error["errorMessage"], error.get("stackTrace", ()))
        return answer["result"]


def _status(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"status {code}"


class LocalFunction:
    """A function of the template (one version: its code and its `variables`) with its pool of workers.

    `variables` are the function's environment variables as its configuration declares them; `environment` is
    everything its processes get (those variables and what Lambda itself provides). An invocation takes an idle
    worker, waiting for one when all `concurrency` are busy (Lambda's reserved concurrency); a worker that died
    or timed out is started again by the next invocation that takes it (a cold start)."""

    def __init__(self, function: Function, variables: Mapping[str, str], environment: Mapping[str, str],
                 sink: Sink, echo: Echo | None = None, concurrency: int = 1):
        if concurrency < 1:
            raise ValueError(f"concurrency {concurrency}: at least 1")
        self.function = function
        self.variables = dict(variables)
        self.environment = dict(environment)
        self.workers = [Worker(function, self.environment, sink, echo) for _ in range(concurrency)]
        self._idle: queue.Queue[Worker] = queue.Queue()
        for worker in self.workers:
            self._idle.put(worker)
        self._stopped = False

    @property
    def name(self) -> str:
        return self.function.logical_id

    @property
    def log_group(self) -> str:
        return log_group_of(self.name)

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if worker.pid is not None and worker.alive]

    def start(self) -> LocalFunction:
        """Start every worker; each imports the handler while this returns (see :meth:`wait_ready`)."""
        for worker in self.workers:
            worker.start()
        return self

    def wait_ready(self, timeout: float = INIT_TIMEOUT_S, cancelled: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.wait_ready(max(0.0, deadline - time.monotonic()), cancelled)

    def invoke(self, event: Any) -> Any:
        worker = self._take()
        try:
            if not worker.alive or not worker.ready:  # it died, timed out or failed to start: a cold start
                worker.finish_stop(grace=0)
                worker.start().wait_ready()
            return worker.invoke(event)
        finally:
            self._idle.put(worker)

    def _take(self) -> Worker:
        while True:
            if self._stopped:
                raise StackStoppedError(f"{self.name}: the function is stopped")
            with contextlib.suppress(queue.Empty):
                return self._idle.get(timeout=0.2)

    def begin_stop(self) -> None:
        self._stopped = True
        for worker in self.workers:
            worker.begin_stop()

    def finish_stop(self) -> None:
        for worker in self.workers:
            worker.finish_stop()

    def stop(self) -> None:
        self.begin_stop()
        self.finish_stop()


def invoke_error(error: FunctionError) -> dict[str, Any]:
    """A failed invocation as Lambda's Invoke API answers it (``sam local invoke`` prints this)."""
    return {"errorType": error.error_type, "errorMessage": error.error_message, "stackTrace": error.stack_trace}
