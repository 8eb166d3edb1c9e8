"""The template's Schedule events, run by the local stack: moto keeps EventBridge rules but never fires them.

One thread per scheduled function invokes it every `seconds` with the event EventBridge sends a scheduled
target, the first time one period after the start. A run that fails is reported through `echo` and the next one
comes on time; a run still going when the next is due delays it (a function's runs never overlap, as the
template's ReservedConcurrentExecutions of 1 makes them in AWS).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ferry.local.context import REGION

Invoke = Callable[[str, dict[str, Any]], Any]


def scheduled_event(function: str) -> dict[str, Any]:
    """What EventBridge sends a function on a schedule."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": REGION, "resources": [f"arn:aws:events:{REGION}:000000000000:rule/{function}-schedule"],
            "detail": {}}


class Schedule:
    """Runs `function` every `seconds` until stopped; counts the runs and the failures."""

    def __init__(self, function: str, seconds: float, invoke: Invoke, echo: Callable[[str], None] | None = None):
        if seconds <= 0:
            raise ValueError(f"a schedule's period is positive, not {seconds}")
        self.function = function
        self.seconds = seconds
        self.invoke = invoke
        self.echo = echo
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ferry-schedule-{function}", daemon=True)

    def start(self) -> Schedule:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        due = time.monotonic() + self.seconds
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            try:
                self.invoke(self.function, scheduled_event(self.function))
            except Exception as error:  # the next run comes anyway, as EventBridge's does
                self.failures += 1
                if self.echo is not None:
                    self.echo(f"ferry: scheduled run of {self.function} failed: {error}")
            self.runs += 1
            due = max(due + self.seconds, time.monotonic())
