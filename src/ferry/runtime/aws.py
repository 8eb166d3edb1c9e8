"""The functions' AWS clients and resources: one of each per container, created at first use and reused.

The region and the endpoint are boto3's own environment variables (Lambda sets AWS_DEFAULT_REGION; the local
stack sets its moto server's AWS_ENDPOINT_URL); a resource is kept per pair, so that local stacks started one
after the other in one process each get their own.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ferry.runtime.exceptions import SettingsError


def dynamodb() -> Any:
    return _make("resource", "dynamodb", os.environ.get("AWS_DEFAULT_REGION"), os.environ.get("AWS_ENDPOINT_URL"))


def client(service: str) -> Any:
    """A boto3 client of `service` (s3, stepfunctions...), one per container."""
    return _make("client", service, os.environ.get("AWS_DEFAULT_REGION"), os.environ.get("AWS_ENDPOINT_URL"))


@functools.cache
def _make(kind: str, service: str, region: str | None, endpoint: str | None) -> Any:
    import boto3

    return getattr(boto3, kind)(service, region_name=region, endpoint_url=endpoint)


def table(name: str | None, variable: str | None = None) -> Any:
    """The DynamoDB table `name`; None when it is not configured, unless `variable` names the setting that must
    give it (then a missing name is an error saying so; ``Settings.required`` says the same from a setting)."""
    if name:
        return dynamodb().Table(name)
    if variable is not None:
        raise SettingsError(f"{variable} is not set")
    return None


BATCH_GET_KEYS = 100  # DynamoDB's limit on the keys of one BatchGetItem


def batch_get(client: Any, table: str, keys: Sequence[Mapping[str, Any]], *, projection: str,
              names: Mapping[str, str] | None = None, attempts: int = 5) -> tuple[list[dict[str, Any]], int]:
    """The items of `keys` in `table` that exist, by BatchGetItem, 100 keys a call; the keys DynamoDB leaves
    unprocessed (throttling) are asked again with capped backoff, up to `attempts` calls per 100. Returns the items
    and the number of keys still unprocessed after that (the caller decides what a shortfall means).

    `client` takes and gives plain values: a DynamoDB service resource, or a Table resource's ``meta.client``."""
    found: list[dict[str, Any]] = []
    left = 0
    for start in range(0, len(keys), BATCH_GET_KEYS):
        wanted: dict[str, Any] = {"Keys": list(keys[start:start + BATCH_GET_KEYS]), "ProjectionExpression": projection}
        if names:
            wanted["ExpressionAttributeNames"] = dict(names)
        request: dict[str, Any] = {table: wanted}
        for attempt in range(attempts):
            answer = client.batch_get_item(RequestItems=request)
            found.extend(answer.get("Responses", {}).get(table, []))
            request = answer.get("UnprocessedKeys") or {}
            if not request or attempt + 1 == attempts:
                break
            time.sleep(min(1.0, 0.05 * 2 ** attempt))
        left += len(request[table]["Keys"]) if request else 0
    return found, left


def plain(value: Any) -> Any:
    """A DynamoDB value as plain Python: Decimal to int or float, sets to sorted lists, recursively (what the
    monitor and the registry read back: nothing they return is ever a Decimal)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(item) for item in value)
    return value
