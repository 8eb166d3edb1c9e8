"""API keys and their daily quotas: keys stored as salted hashes in DynamoDB, checked by the API's authorizer.

**Key ids.** A key made by `ferry keys create` carries its id: ``fry_<16 hex id>_<secret>``; the id is random,
not secret, and is what the keys table, the usage table, the logs and the capture records name. A key of any
other shape (keys issued before ids were carried, any string given to ``ferry serve --api-key``) is looked up
under the first 16 hex digits of its sha256, as every key was before, so keys already issued keep working. The
stored hash is sha256(salt + key) with a per-key random salt; keys are long random tokens, so a slow hash
would buy nothing but latency.

**Quotas.** A key may make ``quota`` predictions a UTC day: its own ``quota`` attribute when set (``ferry keys
create --daily-quota``), else the stack's ``FERRY_DAILY_QUOTA``; 0 is no quota. Counting is off the request
path: the capture function adds each newly written capture record to its key's count for that UTC day in the
usage table (:func:`ferry.runtime.capture.add_usage`), and the authorizer reads that count and says
``quota_exceeded`` in its context; the predict function answers 429 then. The limit is therefore soft: API
Gateway caches the authorizer's answer per key for ``ReauthorizeEvery`` (300 s in the template), and captures
reach the usage table after the log subscription's delivery delay (seconds), so a client can go over its quota
by what it sends within one cache period plus that delay. It bounds copying a model by querying it at volume
to about a day's quota, not to the prediction. Revoking a key takes effect within the same cache period.

**Scopes.** A key may predict, give feedback (labels that the next model may be trained on), or both: its
``scopes`` attribute (a string set, or a list) holds some of :data:`SCOPES`; a key stored without it, as every key
was before scopes, has :data:`DEFAULT_SCOPES` (predict only), and so has a new key unless it is given others. The
authorizer passes them on in its context as one string, ``"scopes": "predict,feedback"`` (a Lambda authorizer's
context holds scalars only), and the functions refuse a route whose scope the key lacks (403,
:func:`ferry.runtime.http.precheck`). Without an authorizer context (no API keys: JWT or IAM auth, or none) every
route is allowed: the gateway's own authorization is the gate.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.runtime.exceptions import ApiKeyError as ApiKeyError  # importable from here as before
from ferry.runtime.telemetry import Log

KEY_PREFIX = "fry_"
MIN_KEY_LENGTH = 16
KEY_ID_HEX_DIGITS = 16
KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_KEY_WITH_ID_RE = re.compile(r"^fry_([0-9a-f]{16})_(.{16,})$")
SECONDS_PER_DAY = 86_400
USAGE_TTL_DAYS = 7  # a usage item expires this many days after the UTC day it counts
SCOPE_PREDICT = "predict"  # POST /v1/models/{model}/predict and /embed
SCOPE_FEEDBACK = "feedback"  # POST /v1/feedback
SCOPES = (SCOPE_PREDICT, SCOPE_FEEDBACK)  # in the order they are listed everywhere
DEFAULT_SCOPES = (SCOPE_PREDICT,)  # a key stored without scopes, and a new key not given any


def legacy_key_id(key: str) -> str:
    """The id of a key that does not carry one: the first 16 hex digits of its sha256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:KEY_ID_HEX_DIGITS]


def carried_id(key: str) -> str | None:
    """The id inside a key of the shape ``fry_<16 hex>_<secret>``; None for any other key."""
    match = _KEY_WITH_ID_RE.match(key)
    return match.group(1) if match else None


def key_id(key: str) -> str:
    """The id a key is stored under: the one it carries, else its sha256 prefix."""
    return carried_id(key) or legacy_key_id(key)


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256((salt + key).encode("utf-8")).hexdigest()


def new_key() -> str:
    """A random key that carries a random id: ``fry_<16 hex id>_<43 characters of secret>``."""
    return f"{KEY_PREFIX}{secrets.token_hex(KEY_ID_HEX_DIGITS // 2)}_{secrets.token_urlsafe(32)}"


def scopes_of(value: Any) -> tuple[str, ...]:
    """A key's scopes, in :data:`SCOPES` order, from what stores or carries them: the keys table's attribute (a
    string set or a list; absent: :data:`DEFAULT_SCOPES`) or the authorizer context's ``"predict,feedback"``.
    A scope this version does not know is dropped: it grants nothing here."""
    if value is None:
        return DEFAULT_SCOPES
    given = {part.strip() for part in value.split(",")} if isinstance(value, str) else {str(part) for part in value}
    return tuple(scope for scope in SCOPES if scope in given)


def checked_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes to store for a key, in :data:`SCOPES` order: at least one, each one of :data:`SCOPES`."""
    wanted = list(scopes)
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope {', '.join(map(repr, unknown))}; a key's scopes are among "
                          f"{', '.join(SCOPES)}")
    if not wanted:
        raise ApiKeyError(f"a key needs at least one scope of {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in wanted)


def store_key(table: Any, key: str, name: str, quota: int | None = None,
              scopes: Iterable[str] = DEFAULT_SCOPES) -> str:
    """Keep the salted hash of `key` (never the key), its daily quota (None: the stack's) and its scopes (a
    string set); returns its id. A key already stored is an error."""
    from botocore.exceptions import ClientError

    if len(key) < MIN_KEY_LENGTH:
        raise ApiKeyError(f"an API key needs at least {MIN_KEY_LENGTH} characters")
    if quota is not None and quota < 0:
        raise ApiKeyError(f"a daily quota is 0 (none) or more, not {quota}")
    granted = checked_scopes(scopes)
    salt = secrets.token_hex(16)
    identifier = key_id(key)
    item: dict[str, Any] = {"key_id": identifier, "salt": salt, "hash": _digest(salt, key), "name": name,
                            "created_at": int(time.time()), "revoked": False, "scopes": set(granted)}
    if quota is not None:
        item["quota"] = quota
    try:
        table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_id)")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise ApiKeyError(f"key {identifier} is already stored") from None
        raise
    return identifier


def find_key(table: Any, key: str) -> dict[str, Any] | None:
    """The stored item of a valid, unrevoked key; None for anything else.

    A key that has the shape of one carrying an id, but with no item under that id, is also looked up under its
    sha256 prefix: a key issued before ids were carried (``fry_`` and 43 random characters) has that shape by
    chance about once in 10^12."""
    if not key or len(key) < MIN_KEY_LENGTH:
        return None
    carried = carried_id(key)
    item = table.get_item(Key={"key_id": carried or legacy_key_id(key)}).get("Item")
    if item is None and carried:
        item = table.get_item(Key={"key_id": legacy_key_id(key)}).get("Item")
    if not item or item.get("revoked"):
        return None
    if not hmac.compare_digest(str(item.get("hash", "")), _digest(str(item.get("salt", "")), key)):
        return None
    return dict(item)


def check_key(table: Any, key: str) -> str | None:
    """The id of a valid, unrevoked key; None for anything else."""
    item = find_key(table, key)
    return str(item["key_id"]) if item else None


def bearer(headers: dict[str, Any] | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (header names are case-insensitive)."""
    for name, value in (headers or {}).items():
        if name.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


# --- daily usage ---------------------------------------------------------------------------------------------


def utc_day(epoch_s: float) -> str:
    """The UTC day of a time, as the usage table's sort key: ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s))


def seconds_to_next_utc_day(epoch_s: float) -> int:
    """Whole seconds from a time to the next UTC midnight (at least 1)."""
    return max(1, SECONDS_PER_DAY - int(epoch_s) % SECONDS_PER_DAY)


def usage_expiry(day: str, ttl_days: int = USAGE_TTL_DAYS) -> int:
    """The TTL (epoch seconds) of a usage item: `ttl_days` after the end of its day."""
    start = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    return start + (1 + ttl_days) * SECONDS_PER_DAY


def usage_of(usage_table: Any, identifier: str, day: str) -> int:
    """Predictions counted for a key on a UTC day (0 when none were)."""
    item = usage_table.get_item(Key={"key_id": identifier, "day": day},
                                ProjectionExpression="predictions").get("Item")
    return int(item.get("predictions", 0)) if item else 0


def quota_of(item: Mapping[str, Any], default_quota: int) -> int:
    """A key's daily quota: its own `quota` attribute when set, else the stack's; 0 is none."""
    own = item.get("quota")
    return default_quota if own is None else int(own)


def authorize(keys_table: Any, usage_table: Any | None, key: str | None, default_quota: int,
              now: float | None = None) -> dict[str, Any]:
    """The Lambda authorizer's simple response for a bearer key.

    A refused key: ``{"isAuthorized": false}``. A valid one: its id, its scopes (``"predict,feedback"``) and
    whether it has used up today's quota, with the seconds until the quota renews when it has. The usage item is
    read only when a quota applies."""
    item = find_key(keys_table, key) if key else None
    if item is None:
        return {"isAuthorized": False}
    identifier = str(item["key_id"])
    context: dict[str, Any] = {"key_id": identifier, "scopes": ",".join(scopes_of(item.get("scopes"))),
                               "quota_exceeded": False}
    quota = quota_of(item, default_quota)
    if quota > 0 and usage_table is not None:
        now = time.time() if now is None else now
        if usage_of(usage_table, identifier, utc_day(now)) >= quota:
            context.update(quota_exceeded=True, retry_after=seconds_to_next_utc_day(now))
    return {"isAuthorized": True, "context": context}


def authorize_event(event: Mapping[str, Any], keys_table: Any, usage_table: Any | None, default_quota: int, *,
                    logger: Log) -> dict[str, Any]:
    """What the authorizer function answers for a request (payload 2.0, simple response): :func:`authorize`
    for its bearer key, the refusals and the keys over quota logged (never the key)."""
    token = bearer(event.get("headers"))
    answer = authorize(keys_table, usage_table, token, default_quota)
    if not answer["isAuthorized"]:
        logger.info("refused", extra={"has_token": token is not None})
    elif answer["context"]["quota_exceeded"]:
        logger.info("over quota", extra={"key_id": answer["context"]["key_id"]})
    return answer


# --- administration (`ferry keys list / revoke`) ---------------------------------------------------------------


@dataclass(frozen=True)
class KeyInfo:
    """What `ferry keys list` shows of a key: never its hash or salt."""

    key_id: str
    name: str
    created_at: int
    revoked: bool
    quota: int | None  # None: the stack's daily quota
    used_today: int | None = None  # None: the usage table was not read
    scopes: tuple[str, ...] = DEFAULT_SCOPES

    @property
    def created_utc(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at))

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "created": self.created_utc, "revoked": self.revoked,
                "scopes": list(self.scopes), "daily_quota": self.quota, "used_today": self.used_today}


def list_keys(keys_table: Any) -> list[KeyInfo]:
    """Every stored key (a paginated scan of the keys table), oldest first."""
    projection = {"ProjectionExpression": "key_id, #n, created_at, revoked, quota, scopes",
                  "ExpressionAttributeNames": {"#n": "name"}}
    found = []
    page = keys_table.scan(**projection)
    while True:
        for item in page.get("Items", []):
            quota = item.get("quota")
            found.append(KeyInfo(str(item["key_id"]), str(item.get("name", "")), int(item.get("created_at", 0)),
                                 bool(item.get("revoked")), None if quota is None else int(quota),
                                 scopes=scopes_of(item.get("scopes"))))
        if "LastEvaluatedKey" not in page:
            break
        page = keys_table.scan(ExclusiveStartKey=page["LastEvaluatedKey"], **projection)
    return sorted(found, key=lambda info: (info.created_at, info.key_id))


def usage_on(dynamodb: Any, usage_table_name: str, identifiers: Iterable[str], day: str,
             attempts: int = 5) -> dict[str, int]:
    """Predictions counted on a UTC day for each key id (absent: none), by BatchGetItem in chunks of 100.

    `dynamodb` is a boto3 DynamoDB service resource."""
    from ferry.runtime.aws import batch_get

    wanted = [{"key_id": identifier, "day": day} for identifier in identifiers]
    items, _ = batch_get(dynamodb, usage_table_name, wanted, projection="key_id, predictions", attempts=attempts)
    return {str(item["key_id"]): int(item.get("predictions", 0)) for item in items}


def revoke_key(table: Any, identifier: str) -> bool:
    """Mark a key revoked; True when it was not revoked before. An unknown id is an error, not a new item."""
    from botocore.exceptions import ClientError

    try:
        answer = table.update_item(
            Key={"key_id": identifier}, ConditionExpression="attribute_exists(key_id)",
            UpdateExpression="SET revoked = :true, revoked_at = if_not_exists(revoked_at, :now)",
            ExpressionAttributeValues={":true": True, ":now": int(time.time())}, ReturnValues="ALL_OLD")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise ApiKeyError(f"no key {identifier}") from None
        raise
    return not answer.get("Attributes", {}).get("revoked", False)


# --- scopes at request time -------------------------------------------------------------------------------------


def allowed(authorizer_context: Mapping[str, Any], scope: str) -> bool:
    """Whether a request may use a route that needs `scope`, by what the Lambda authorizer said of its key: any
    route when no authorizer ran (an empty context: JWT or IAM auth, or none); else the key's scopes, those of
    a key stored without any (predict only) when the context carries none (an authorizer deployed before
    scopes)."""
    if not authorizer_context:
        return True
    return scope in scopes_of(authorizer_context.get("scopes"))
