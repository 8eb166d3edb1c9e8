from __future__ import annotations

import hashlib
import re
import secrets

import boto3
import pytest
from moto import mock_aws

from ferry.runtime.keys import (
    ApiKeyError,
    _digest,
    bearer,
    carried_id,
    check_key,
    find_key,
    key_id,
    legacy_key_id,
    new_key,
    revoke_key,
    store_key,
)


@pytest.fixture()
def table(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        resource.create_table(TableName="keys", BillingMode="PAY_PER_REQUEST",
                              KeySchema=[{"AttributeName": "key_id", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "key_id", "AttributeType": "S"}])
        yield resource.Table("keys")


def test_a_new_key_carries_a_random_id_that_it_is_stored_under(table):
    key = new_key()
    assert re.fullmatch(r"fry_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    identifier = store_key(table, key, "ci")
    assert identifier == key[4:20] == carried_id(key) == key_id(key) != legacy_key_id(key)
    assert check_key(table, key) == identifier
    assert new_key()[4:20] != identifier


def test_a_stored_key_is_accepted_and_never_kept_in_clear(table):
    key = new_key()
    identifier = store_key(table, key, "ci", quota=500)
    item = table.get_item(Key={"key_id": identifier})["Item"]
    assert key not in str(item) and key.split("_", 2)[2] not in str(item)
    assert len(item["salt"]) == 32 and item["name"] == "ci" and item["quota"] == 500
    assert "quota" not in table.get_item(Key={"key_id": store_key(table, new_key(), "x")})["Item"]


def test_a_key_stored_the_old_way_still_authorizes(table):
    """Keys issued before ids were carried: `fry_` + 43 random characters, stored under their sha256 prefix."""
    old = "fry_" + secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    table.put_item(Item={"key_id": hashlib.sha256(old.encode()).hexdigest()[:16], "salt": salt,
                         "hash": _digest(salt, old), "name": "issued-before", "created_at": 1, "revoked": False})
    assert check_key(table, old) == legacy_key_id(old)
    # any string given to `ferry serve --api-key` is stored and found the same way
    assert store_key(table, "my-local-key-0123456789", "serve") == legacy_key_id("my-local-key-0123456789")
    assert check_key(table, "my-local-key-0123456789") == legacy_key_id("my-local-key-0123456789")


def test_an_old_key_that_happens_to_look_like_a_new_one_is_still_found(table):
    unlucky = "fry_0123456789abcdef_" + secrets.token_urlsafe(20)
    salt = secrets.token_hex(16)
    table.put_item(Item={"key_id": legacy_key_id(unlucky), "salt": salt, "hash": _digest(salt, unlucky),
                         "name": "old", "created_at": 1, "revoked": False})
    assert check_key(table, unlucky) == legacy_key_id(unlucky)


def test_wrong_revoked_and_short_keys_are_refused(table):
    key = new_key()
    identifier = store_key(table, key, "ci")
    assert check_key(table, key + "x") is None
    assert check_key(table, key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # right id, wrong secret
    assert check_key(table, "short") is None
    assert revoke_key(table, identifier) is True
    assert check_key(table, key) is None and find_key(table, key) is None
    assert revoke_key(table, identifier) is False  # already revoked
    with pytest.raises(ApiKeyError, match="at least 16 characters"):
        store_key(table, "tiny", "x")
    with pytest.raises(ApiKeyError, match="already stored"):
        store_key(table, key, "again")
    with pytest.raises(ApiKeyError, match="daily quota"):
        store_key(table, new_key(), "x", quota=-1)


def test_revoking_an_unknown_id_is_an_error_and_creates_nothing(table):
    with pytest.raises(ApiKeyError, match="no key 00000000000000aa"):
        revoke_key(table, "00000000000000aa")
    assert table.scan()["Items"] == []


def test_bearer_header_parsing():
    assert bearer({"Authorization": "Bearer abc"}) == "abc"
    assert bearer({"authorization": "bearer  abc "}) == "abc"
    assert bearer({"authorization": "Basic abc"}) is None
    assert bearer({"authorization": "Bearer"}) is None
    assert bearer(None) is None
