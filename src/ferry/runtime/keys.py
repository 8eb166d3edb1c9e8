"""API keys: stored as salted hashes in DynamoDB, never in clear; checked by the API's Lambda authorizer.

A key is looked up by an id derived from the key itself (the first 16 hex digits of its sha256), so any
string can be a key; `ferry keys create` makes random ones. The stored hash is sha256(salt + key) with a
per-key random salt; keys are long random tokens, so a slow hash would buy nothing but latency.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

KEY_PREFIX = "fry_"
MIN_KEY_LENGTH = 16


class ApiKeyError(Exception):
    """A key that cannot be stored (too short, already there)."""


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256((salt + key).encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def store_key(table: Any, key: str, name: str) -> str:
    """Keep the salted hash of `key` (never the key); returns its id. A key already stored is an error."""
    from botocore.exceptions import ClientError

    if len(key) < MIN_KEY_LENGTH:
        raise ApiKeyError(f"an API key needs at least {MIN_KEY_LENGTH} characters")
    salt = secrets.token_hex(16)
    identifier = key_id(key)
    item = {"key_id": identifier, "salt": salt, "hash": _digest(salt, key), "name": name,
            "created_at": int(time.time()), "revoked": False}
    try:
        table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_id)")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise ApiKeyError(f"key {identifier} is already stored") from None
        raise
    return identifier


def check_key(table: Any, key: str) -> str | None:
    """The id of a valid, unrevoked key; None for anything else."""
    if not key or len(key) < MIN_KEY_LENGTH:
        return None
    item = table.get_item(Key={"key_id": key_id(key)}).get("Item")
    if not item or item.get("revoked"):
        return None
    if not hmac.compare_digest(str(item.get("hash", "")), _digest(str(item.get("salt", "")), key)):
        return None
    return str(item["key_id"])


def bearer(headers: dict[str, Any] | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (header names are case-insensitive)."""
    for name, value in (headers or {}).items():
        if name.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None
