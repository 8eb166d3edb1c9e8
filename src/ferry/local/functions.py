"""Run a function of the template in this process, as Lambda would: its environment at import, a context."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ferry.local.logs import LogRouter
from ferry.local.template import Function

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """What a handler may read from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int = 2048
    timeout_s: float = 29.0
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return log_group_of(self.function_name)

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def log_group_of(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class LocalFunction:
    """A template function imported once (a warm container) and invoked one event at a time."""

    def __init__(self, function: Function, variables: Mapping[str, str], router: LogRouter | None = None):
        self.function = function
        self.variables = dict(variables)
        self.router = router
        module_name, _, attribute = function.handler.rpartition(".")
        path = function.code_uri / f"{module_name}.py"
        spec = importlib.util.spec_from_file_location(f"ferry_local_{function.logical_id}", path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"{path}: the handler of {function.logical_id} is missing")
        self.module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = self.module
        with environment(self.variables):
            spec.loader.exec_module(self.module)
        self.handler: Handler = getattr(self.module, attribute)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.function.logical_id

    @property
    def log_group(self) -> str:
        return log_group_of(self.name)

    def invoke(self, event: dict[str, Any]) -> Any:
        logs = self.router.group(self.log_group) if self.router is not None else nullcontext()
        with self._lock, environment(self.variables), logs:
            context = LambdaContext(function_name=self.name, memory_limit_in_mb=self.function.memory_mb,
                                    timeout_s=self.function.timeout_s)
            return self.handler(event, context)
