"""`ferry serve` as a library: the local stack and its HTTP API, from start to a clean stop on SIGINT or SIGTERM.

A signal handler runs in the main thread, between two bytecodes of whatever that thread is doing, so it must not
take a lock the main thread may hold: ``threading.Event.set()`` in the handler, with the main thread in
``Event.wait()`` on the same event, deadlocks when the signal lands while ``wait`` holds the event's lock (a
server that ignored four SIGINT/SIGTERM in a row, blocked in ``Event.set`` inside the handler, four deep). Here
the handler only assigns a plain attribute, and the signal also reaches the main thread through
:func:`signal.set_wakeup_fd`: the C-level handler writes the signal's number to a pipe, which the main thread
waits on with ``select``. The handlers are installed before anything starts, and a signal during the start
stops what has started (the stack checks between its steps and while its functions initialize).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ferry.local import running
from ferry.local.exceptions import ListenError, StartCancelledError

if TYPE_CHECKING:
    from ferry.local.endpoint import LargeModel
    from ferry.local.stack import LocalStack
    from ferry.update.config import UpdateConfig
    from ferry.update.local import Controller

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_HOST = "127.0.0.1"  # this machine only, as `sam local start-api`
DEFAULT_PORT = 3000  # sam local's
# Processes per function unless --concurrency says otherwise: one, so that `ferry serve` starts one process of each
# function (each predict process loads every model); a load test asks for more (`ferry bench` does).
DEFAULT_CONCURRENCY = 1


class StopSignals:
    """SIGINT and SIGTERM as a request to stop, taken without any lock: a context manager for the main thread.

    Inside it the signals neither raise KeyboardInterrupt nor end the process: :attr:`received` is the first one
    that came (None until then), :meth:`wait` waits for one. The previous handlers come back on exit.
    """

    def __init__(self, signals: Iterable[signal.Signals] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._read = self._write = -1
        self._previous: dict[signal.Signals, Any] = {}
        self._previous_fd = -1

    def __enter__(self) -> StopSignals:
        # both handlers set explicitly: a shell that starts a job in the background without job control makes it
        # ignore SIGINT, and Python then installs no KeyboardInterrupt handler
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)  # the C-level handler must never block on a full pipe
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(self._previous_fd)
        for fd in (self._read, self._write):
            os.close(fd)

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        # no lock, no I/O, no allocation that could wait on another thread: one attribute, set once
        if self.received is None:
            self.received = number

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            data = os.read(self._read, 512)
            if data and self.received is None:
                wanted = [byte for byte in data if byte in self.signals]
                if wanted:
                    self.received = wanted[0]

    @property
    def requested(self) -> bool:
        """Whether a stop signal has come (cheap: a flag, and a read that never blocks)."""
        if self.received is None:
            self._drain()
        return self.received is not None

    def wait(self, timeout: float | None = None) -> int | None:
        """The signal that came, waiting up to `timeout` seconds (for ever if None); None if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requested:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            select.select([self._read], [], [], left)
        return self.received


@dataclass(frozen=True)
class Stopped:
    """How a :func:`serve` ended: the signal that stopped it, and whether it had been serving (False: the signal
    came while it was starting, and nothing was served)."""

    signal: int
    served: bool


def _start_updates(stack: LocalStack, updates: UpdateConfig | None) -> Controller | None:
    if updates is None:
        return None
    from ferry.update.local import Controller, unsupported

    why = unsupported(stack.template)
    if why is not None:
        if stack.echo is not None:
            stack.echo(f"ferry: updates off: {why}")
        return None
    return Controller(stack, updates, echo=stack.echo).start()


def serve(root: Path, layers_dir: Path, template_path: Path | None = None, *, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, api_key: str | None = None, progress: Callable[[str], None] | None = None,
          on_ready: Callable[[str, LocalStack], None] | None = None,
          schedules: Mapping[str, float] | None = None, updates: UpdateConfig | None = None,
          large_model: LargeModel | None = None, concurrency: int | None = None) -> Stopped:
    """Start the local stack and its HTTP API on `host`:`port`, call `on_ready(url, stack)` and serve until SIGINT
    or SIGTERM; then stop everything and say how it ended. Call it from the main thread (signals go there).

    While it serves, the template's scheduled functions run on their rates (`schedules` overrides them: logical id
    -> seconds), and ``<root>/.ferry/serve.json`` says where the stack is (:mod:`ferry.local.running`), so that
    `ferry monitor`, `ferry status`, `ferry report` and `ferry feedback` find it; the file goes when it stops.

    With `updates`, the stack runs the maintenance loop too (:class:`ferry.update.local.Controller`): a
    ``ModelDegraded`` from the monitor, or a request of `ferry update`, `ferry promote` or `ferry rollback`, runs
    in this process, one at a time per model.

    With `large_model`, a text-generation model is served too, on a local SageMaker endpoint beside the stack
    (:class:`ferry.local.stack.LocalStack`).

    `concurrency` is the number of processes of each function (:data:`DEFAULT_CONCURRENCY` when None): the HTTP
    server answers each connection in a thread of its own, and up to that many invocations of a function run at once.

    Raises what the start raises (TemplateError, LayersNotFoundError, FunctionInitError), ListenError when the
    address cannot be listened on and ApiKeyError for a key too short, everything stopped first.
    """
    with StopSignals() as signals:
        if progress is not None:
            progress("starting the local stack")
        from ferry.local.gateway import Gateway
        from ferry.local.stack import LocalStack

        stack = LocalStack(root=root, layers_dir=layers_dir, template_path=template_path, large_model=large_model,
                           concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency)
        gateway: Gateway | None = None
        serving = False
        written: Path | None = None
        controller: Controller | None = None
        try:
            stack.start(cancelled=lambda: signals.requested)
            if not signals.requested:
                try:
                    gateway = Gateway(stack, host, port, api_key=api_key)
                except OSError as exc:
                    raise ListenError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
                gateway.serve_in_background()
                serving = True
                stack.start_schedules(schedules)
                controller = _start_updates(stack, updates)
                written = running.write(root, gateway.url, stack, api_key=api_key is not None)
                if on_ready is not None:
                    on_ready(gateway.url, stack)
            received = signals.wait()
        except StartCancelledError:
            received = signals.wait()
        finally:
            if controller is not None:
                controller.stop()
            if written is not None:
                running.remove(written)
            if gateway is not None and serving:
                gateway.shutdown()
            if gateway is not None:
                gateway.server_close()
            stack.stop()
        assert received is not None
        return Stopped(received, serving)
