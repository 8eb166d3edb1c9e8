"""API-key authorizer of the HTTP API (payload 2.0, simple responses): Bearer key -> salted hash in DynamoDB,
and whether the key has used up its daily quota (the predict function answers 429 then; see ferry.runtime.keys).

API Gateway caches each answer per Authorization header for ReauthorizeEvery seconds.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from ferry.runtime import aws
from ferry.runtime.keys import authorize_event
from ferry.runtime.settings import Settings

logger = Logger(service="ferry-authorizer")
settings = Settings.from_env()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return authorize_event(event, aws.table(settings.required("keys_table")), aws.table(settings.usage_table),
                           settings.daily_quota, logger=logger)
