from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from ferry.runtime.keys import ApiKeyError, bearer, check_key, key_id, new_key, store_key


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


def test_a_stored_key_is_accepted_and_never_kept_in_clear(table):
    key = new_key()
    identifier = store_key(table, key, "ci")
    assert identifier == key_id(key) and check_key(table, key) == identifier
    item = table.get_item(Key={"key_id": identifier})["Item"]
    assert key not in str(item) and len(item["salt"]) == 32 and item["name"] == "ci"


def test_wrong_revoked_and_short_keys_are_refused(table):
    key = new_key()
    store_key(table, key, "ci")
    assert check_key(table, key + "x") is None
    assert check_key(table, "short") is None
    table.update_item(Key={"key_id": key_id(key)}, UpdateExpression="SET revoked = :t",
                      ExpressionAttributeValues={":t": True})
    assert check_key(table, key) is None
    with pytest.raises(ApiKeyError, match="at least 16 characters"):
        store_key(table, "tiny", "x")
    with pytest.raises(ApiKeyError, match="already stored"):
        store_key(table, key, "again")


def test_bearer_header_parsing():
    assert bearer({"Authorization": "Bearer abc"}) == "abc"
    assert bearer({"authorization": "bearer  abc "}) == "abc"
    assert bearer({"authorization": "Basic abc"}) is None
    assert bearer({"authorization": "Bearer"}) is None
    assert bearer(None) is None
