"""API-key authorizer of the HTTP API (payload 2.0, simple responses): Bearer key -> salted hash in DynamoDB,
and whether the key has used up its daily quota (the predict function answers 429 then; see ferry.runtime.keys).

API Gateway caches each answer per Authorization header for ReauthorizeEvery seconds.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from ferry.runtime import aws
from ferry.runtime.constants import ENV_KEYS_TABLE
from ferry.runtime.keys import authorize, bearer
from ferry.runtime.settings import Settings

logger = Logger(service="ferry-authorizer")
settings = Settings.from_env()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    token = bearer(event.get("headers"))
    answer = authorize(aws.table(settings.keys_table, ENV_KEYS_TABLE), aws.table(settings.usage_table), token,
                       settings.daily_quota)
    if not answer["isAuthorized"]:
        logger.info("refused", extra={"has_token": token is not None})
    elif answer["context"]["quota_exceeded"]:
        logger.info("over quota", extra={"key_id": answer["context"]["key_id"]})
    return answer
