"""Update function: one step of the update state machine (UpdateStateMachine in template.yaml) per invocation.

Step Functions invokes it with ``{"step": <name>, "execution": <execution name>, "state": <the execution's state>}``
and keeps what it returns under ``$.<step>``; ferry.runtime.update_task does the step (lock, assemble, gate, register,
promote, deployed, release). It holds the live model layers (the manifests, and the live int8 model for the gate)
and ``gate.json``, the project's gate, beside this file. A step that fails raises: the state machine retries
Lambda's own errors, retries a busy stack (StackBusyError), and sends anything else to its ReleaseOnFailure step.
"""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger

from ferry.runtime import aws
from ferry.runtime.registry import Registry
from ferry.runtime.update_task import UpdateSettings, handle, table_names

SERVICE = "ferry-update"
logger = Logger(service=SERVICE)


@functools.cache
def settings() -> UpdateSettings:
    """Read at the first invocation, once per container (the local stack starts this function without running it)."""
    return UpdateSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    tables = table_names()
    logger.append_keys(step=event.get("step"), execution=event.get("execution"))
    result = handle(event, registry=Registry(aws.table(tables["registry"])), feedback=aws.table(tables["feedback"]),
                    captures=aws.table(tables["captures"]), s3=aws.client("s3"),
                    cloudformation=aws.client("cloudformation"), events=aws.client("events"),
                    lambda_client=aws.client("lambda"), settings=settings())
    logger.info("update step done", extra={"result": result})
    return result
