"""API-key authorizer of the HTTP API (payload 2.0, simple responses): Bearer key -> salted hash in DynamoDB."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger

from ferry.runtime.keys import bearer, check_key

logger = Logger(service="ferry-authorizer")
_table: Any = None


def table() -> Any:
    global _table
    if _table is None:
        _table = boto3.resource("dynamodb").Table(os.environ["FERRY_KEYS_TABLE"])
    return _table


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    token = bearer(event.get("headers"))
    identifier = check_key(table(), token) if token else None
    if identifier is None:
        logger.info("refused", extra={"has_token": token is not None})
        return {"isAuthorized": False}
    return {"isAuthorized": True, "context": {"key_id": identifier}}
