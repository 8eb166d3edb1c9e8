"""Lambda's context object, as a local function's handler receives it.

It imports nothing beyond the standard library: the worker process (:mod:`ferry.local.worker`) builds one per
invocation, and its imports would count in the function's cold start.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

ACCOUNT = "000000000000"
REGION = "us-east-1"


def log_group_of(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


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
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return log_group_of(self.function_name)

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))
