"""Every error the local stack raises on purpose, under :class:`LocalError` (a :class:`ferry.exceptions.FerryError`).

A function runs in a process of its own, as in Lambda, so what it raises cannot cross back as the same object:
the parent raises a :class:`FunctionError` that carries what Lambda reports of a failed invocation, the error's
type name (``errorType``), its message (``errorMessage``) and its traceback (``stackTrace``). Callers that care
which error it was compare ``error_type`` (a class name, or Lambda's own ``Runtime.ExitError``,
``Sandbox.Timedout``...), never ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ferry.exceptions import EXIT_USAGE, FerryError


class LocalError(FerryError):
    """Base class of every error the local stack raises on purpose."""

    code: ClassVar[str] = "local_error"


class TemplateError(LocalError):
    """template.yaml is missing or does not declare what the local stack needs."""

    code = "invalid_template"
    exit_status = EXIT_USAGE


class LayersNotFoundError(LocalError):
    """The folder of model layers the functions would read does not exist."""

    code = "layers_not_found"
    exit_status = EXIT_USAGE


class ListenError(LocalError):
    """The local HTTP API cannot listen on the address asked for (taken, or not this machine's)."""

    code = "cannot_listen"


class StartCancelledError(LocalError):
    """The stack was asked to stop (a signal) before it had finished starting; what had started is stopped."""

    code = "start_cancelled"


class StackStoppedError(LocalError):
    """An invocation of a stack that is stopping or stopped."""

    code = "stack_stopped"


class NotServingError(LocalError):
    """No `ferry serve` runs for the project (or the file saying where it is is stale)."""

    code = "not_serving"


class FunctionError(LocalError):
    """An invocation failed: the handler raised, or its process died or ran out of time.

    ``str()`` is one line, ``"<function>: <errorType>: <errorMessage>"``; the traceback, as Lambda's
    ``stackTrace``, is in ``stack_trace`` (it is in the function's log as well)."""

    code = "function_failed"

    def __init__(self, function: str, error_type: str, error_message: str, stack_trace: Sequence[str] = ()):
        self.function = function
        self.error_type = error_type
        self.error_message = error_message
        self.stack_trace = list(stack_trace)
        super().__init__(f"{function}: {error_type}: {error_message}")



class FunctionInitError(FunctionError):
    """The handler's module failed to import (Lambda's init phase), or its process died during it. The message
    ends with the last lines the process wrote, where the cause usually is."""

    code = "function_init_failed"


class FunctionTimeoutError(FunctionError):
    """The invocation ran past the function's Timeout: its process was killed, as Lambda ends the sandbox, and
    the next invocation starts a new one (a cold start)."""

    code = "function_timed_out"


class FunctionExitError(FunctionError):
    """The function's process ended during an invocation (a crash, ``sys.exit``, killed); the next invocation
    starts a new one."""

    code = "function_exited"
