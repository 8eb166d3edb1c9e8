"""Ground truth in (ferry.runtime.feedback), without a model: labels checked against hand-written manifests and
written once into moto's DynamoDB; scopes on API keys; files of labels under labels/ read line by line; the
feedback function (functions/feedback/app.py) end to end with API Gateway and S3 events; and the confidence each
classification capture carries for the monitor."""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import copy
import hashlib
import importlib.util
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from ferry.local.context import LambdaContext
from ferry.runtime import aws as runtime_aws
from ferry.runtime.api import complete_openapi, operations
from ferry.runtime.exceptions import (
    ApiKeyError,
    ForbiddenError,
    InvalidBodyError,
    LabelFileError,
    PayloadTooLargeError,
)
from ferry.runtime.feedback import (
    FEEDBACK_INDEX,
    FeedbackService,
    Tally,
    is_label_event,
    live_manifests,
    load_labels,
    read_label_file,
    report_key,
)
from ferry.runtime.http import precheck
from ferry.runtime.ids import PredictionIds
from ferry.runtime.keys import authorize, list_keys, new_key, scopes_of, store_key
from ferry.runtime.manifest import Manifest
from ferry.runtime.predictor import Batch, Predictor
from ferry.runtime.service import Options, PredictionService
from ferry.runtime.settings import Settings

from helpers import ROOT

NOW = 1_795_953_600.0  # 2026-11-29T12:00:00Z
VERSION = "1a2b3c4d5e6f"
SECRET = "stack secret"
IDS = PredictionIds(SECRET)
BUCKET = "ferry-batch"


def write_model(models: Path, name: str, task: str = "text-classification",
                labels: tuple[str, ...] = ("negative", "positive"), version: str = VERSION, **extra: Any) -> Path:
    """A model folder with a manifest (what the feedback function reads) and stand-in files: nothing to load."""
    folder = models / name
    folder.mkdir(parents=True)
    files = {}
    for relative in ("model.onnx", "tokenizer.json"):
        (folder / relative).write_bytes(relative.encode())
        files[relative] = {"sha256": hashlib.sha256(relative.encode()).hexdigest(), "size": len(relative)}
    manifest = {"schema_version": 1, "name": name, "version": version, "task": task, "labels": list(labels),
                "max_length": 64, "files": files, **extra}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def create_feedback_table(resource: Any, name: str = "feedback") -> Any:
    """The feedback table as ferry.runtime.feedback describes it: prediction_id, and the by-model-time index."""
    resource.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "prediction_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "prediction_id", "AttributeType": "S"},
                              {"AttributeName": "model_version", "AttributeType": "S"},
                              {"AttributeName": "epoch_ms", "AttributeType": "N"}],
        GlobalSecondaryIndexes=[{"IndexName": FEEDBACK_INDEX, "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "model_version", "KeyType": "HASH"},
                                               {"AttributeName": "epoch_ms", "KeyType": "RANGE"}]}])
    return resource.Table(name)


@pytest.fixture()
def mocked(monkeypatch):
    """moto's in-process AWS: a DynamoDB resource and an S3 client with the bucket."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    runtime_aws._make.cache_clear()  # no client of another test's mock
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield boto3.resource("dynamodb", region_name="us-east-1"), s3
    runtime_aws._make.cache_clear()


@pytest.fixture()
def table(mocked):
    return create_feedback_table(mocked[0])


@pytest.fixture()
def models(tmp_path):
    folder = tmp_path / "models"
    write_model(folder, "sentiment")
    write_model(folder, "minilm", task="feature-extraction", labels=())
    return folder


@pytest.fixture()
def service(table, models):
    return FeedbackService(lambda: table, IDS, live_manifests(Settings(models_path=(models,))), ttl_days=90,
                           clock=lambda: NOW)


def pid(model: str = "sentiment", version: str = VERSION) -> str:
    return IDS.issue(model, version)


def stored(table: Any, prediction_id: str) -> dict[str, Any] | None:
    return table.get_item(Key={"prediction_id": prediction_id}).get("Item")


# -- one label ----------------------------------------------------------------------------------------------------

def test_a_label_is_accepted_and_stored_with_who_sent_it_when_and_for_what(service, table):
    prediction = pid()
    answer = service.respond({"prediction_id": prediction, "label": "positive"}, key_id="k-1")
    assert (answer.status, answer.body) == (202, {"prediction_id": prediction, "status": "accepted",
                                                  "duplicate": False})
    item = stored(table, prediction)
    assert item == {"prediction_id": prediction, "model": "sentiment", "version": VERSION,
                    "model_version": f"sentiment#{VERSION}", "label": "positive", "sampled": False,
                    "epoch_ms": 1_795_953_600_000, "time": "2026-11-29T12:00:00.000+00:00", "source": "api",
                    "expires_at": 1_795_953_600 + 90 * 86_400, "key_id": "k-1"}
    window = table.query(IndexName=FEEDBACK_INDEX, KeyConditionExpression="model_version = :m AND epoch_ms >= :t",
                         ExpressionAttributeValues={":m": f"sentiment#{VERSION}", ":t": 1_795_953_600_000})
    assert [found["prediction_id"] for found in window["Items"]] == [prediction]
    assert answer.tally.counts == {("sentiment", "FeedbackAccepted"): 1}


def test_a_label_may_come_before_its_capture_and_from_an_earlier_version(mocked, models):
    """Captures land asynchronously: nothing is looked up but the id itself, so a label sent the moment the
    prediction was answered is accepted; an earlier version's prediction is labelled from the live label set."""
    table = create_feedback_table(mocked[0])
    settings = Settings(models_path=(models,), stack_secret=SECRET, capture_ttl_days=30)
    predict = PredictionService(settings)  # what the predict function issues its ids with
    receiver = FeedbackService.from_settings(settings, lambda: table)
    fresh = predict.ids.issue("sentiment", VERSION)
    assert receiver.respond({"prediction_id": fresh, "label": "negative"}, key_id=None).status == 202
    older = predict.ids.issue("sentiment", "0" * 12)
    assert receiver.respond({"prediction_id": older, "label": "positive", "sampled": True}, key_id=None).status == 202
    assert stored(table, older)["version"] == "0" * 12 and stored(table, older)["sampled"] is True
    assert "key_id" not in stored(table, fresh)  # no API key: none recorded
    assert [name for name in mocked[0].meta.client.list_tables()["TableNames"]] == ["feedback"]  # no capture read


def test_the_same_label_twice_counts_once(service, table):
    prediction = pid()
    first = service.respond({"prediction_id": prediction, "label": "positive"}, key_id="k-1")
    again = service.respond({"prediction_id": prediction, "label": "positive"}, key_id="k-2")
    assert again.status == 202 and again.body == {"prediction_id": prediction, "status": "duplicate",
                                                  "duplicate": True}
    assert stored(table, prediction)["key_id"] == "k-1" and table.scan()["Count"] == 1
    assert (first.tally.counts, again.tally.counts) == (
        {("sentiment", "FeedbackAccepted"): 1}, {("sentiment", "FeedbackDuplicates"): 1})


def test_an_audit_sample_that_repeats_a_label_still_counts_as_sampled(service, table):
    """Voluntary labels lean to mistakes; an audit that picks a prediction someone labelled already must keep it
    in the sampled population, or the unbiased accuracy would leave out the mistakes."""
    prediction = pid()
    service.respond({"prediction_id": prediction, "label": "negative"}, key_id="k-1")
    answer = service.respond({"prediction_id": prediction, "label": "negative", "sampled": True}, key_id="audit")
    assert answer.body["status"] == "duplicate" and stored(table, prediction)["sampled"] is True


@pytest.mark.parametrize(("prediction", "message"), [
    (PredictionIds("another stack").issue("sentiment", VERSION), "was not issued by this stack"),
    (IDS.issue("sentiment", VERSION)[:-1] + "x", "is not a prediction id"),
    ("0" * 32, "was issued before prediction ids were verifiable"),
    ("what-is-this", "is not a prediction id"),
])
def test_an_id_this_stack_did_not_issue_is_a_404_and_writes_nothing(service, table, prediction, message):
    answer = service.respond({"prediction_id": prediction, "label": "positive"}, key_id="k-1")
    assert answer.status == 404 and answer.body["error"]["code"] == "prediction_not_found"
    assert message in answer.body["error"]["message"] and answer.error_code == "prediction_not_found"
    assert table.scan()["Count"] == 0 and answer.tally.counts == {("unknown", "FeedbackRefused"): 1}


def test_a_label_the_model_does_not_have_is_a_400_naming_the_labels(service, table):
    answer = service.respond({"prediction_id": pid(), "label": "Positive"}, key_id=None)
    assert (answer.status, answer.body) == (400, {"error": {"code": "invalid_label", "message": (
        "label 'Positive' is not one of the labels of model 'sentiment': negative, positive")}})
    assert table.scan()["Count"] == 0 and answer.tally.counts == {("sentiment", "FeedbackRefused"): 1}


def test_a_prediction_of_a_model_not_served_or_without_labels_is_refused(service, table, models):
    gone = service.respond({"prediction_id": pid("retired"), "label": "positive"}, key_id=None)
    assert gone.status == 404 and gone.body["error"]["code"] == "model_not_found"
    assert gone.body["error"]["message"].endswith(
        "is of model 'retired', which is not served here (no model named 'retired'; available: minilm, sentiment)")
    vector = service.respond({"prediction_id": pid("minilm"), "label": "positive"}, key_id=None)
    assert vector.status == 400 and vector.body["error"]["code"] == "wrong_task"
    assert "a feature-extraction model: its predictions have no labels" in vector.body["error"]["message"]
    assert table.scan()["Count"] == 0


def test_each_manifest_is_read_once_and_a_broken_one_fails_its_own_labels_only(service, table, models):
    assert service.respond({"prediction_id": pid(), "label": "positive"}, key_id=None).status == 202
    (models / "sentiment" / "manifest.json").write_text("{}")  # layers do not change under a running function
    assert service.respond({"prediction_id": pid(), "label": "positive"}, key_id=None).status == 202
    (write_model(models, "broken") / "manifest.json").write_text("{}")
    broken = service.respond({"prediction_id": pid("broken"), "label": "positive"}, key_id=None)
    assert (broken.status, broken.body["error"]["code"]) == (503, "model_unavailable")
    assert table.scan()["Count"] == 2


def test_a_conflicting_label_is_a_409_and_a_correction_replaces_it_and_is_recorded(service, table):
    prediction = pid()
    service.respond({"prediction_id": prediction, "label": "positive"}, key_id="k-1")
    conflict = service.respond({"prediction_id": prediction, "label": "negative"}, key_id="k-2")
    assert (conflict.status, conflict.body["error"]["code"]) == (409, "label_conflict")
    assert conflict.body["error"]["message"] == (
        f"prediction {prediction!r} already has the label 'positive'; to replace it with 'negative', send the "
        'label with "correct": true')
    assert stored(table, prediction)["label"] == "positive"
    corrected = service.respond({"prediction_id": prediction, "label": "negative", "correct": True}, key_id="k-2")
    assert (corrected.status, corrected.body["status"]) == (202, "corrected")
    item = stored(table, prediction)
    assert (item["label"], item["key_id"], item["epoch_ms"], item["corrected_at"]) == (
        "negative", "k-1", 1_795_953_600_000, 1_795_953_600_000)  # epoch_ms: the first label's, kept
    assert item["corrections"] == [{"previous_label": "positive", "label": "negative", "epoch_ms": 1_795_953_600_000,
                                    "time": "2026-11-29T12:00:00.000+00:00", "source": "api", "key_id": "k-2"}]
    same = service.respond({"prediction_id": prediction, "label": "negative", "correct": True}, key_id="k-3")
    assert same.body["status"] == "duplicate" and len(stored(table, prediction)["corrections"]) == 1


def test_corrections_are_bounded(service, table, monkeypatch):
    monkeypatch.setattr("ferry.runtime.feedback.MAX_CORRECTIONS", 2)
    prediction = pid()
    service.respond({"prediction_id": prediction, "label": "positive"}, key_id=None)
    for label in ("negative", "positive"):
        assert service.respond({"prediction_id": prediction, "label": label, "correct": True},
                               key_id=None).status == 202
    third = service.respond({"prediction_id": prediction, "label": "negative", "correct": True}, key_id=None)
    assert third.status == 409 and "has been corrected 2 times, the most kept" in third.body["error"]["message"]
    assert stored(table, prediction)["label"] == "positive"


# -- the body -----------------------------------------------------------------------------------------------------

def test_a_list_is_answered_label_by_label_with_207_when_some_are_refused(service, table):
    good, twice, forged = pid(), pid(), PredictionIds("elsewhere").issue("sentiment", VERSION)
    service.respond({"prediction_id": twice, "label": "positive"}, key_id=None)
    body = [{"prediction_id": good, "label": "negative"}, {"prediction_id": twice, "label": "positive"},
            {"prediction_id": forged, "label": "negative"}, {"prediction_id": good, "label": "nope"},
            {"prediction_id": twice, "label": "negative"}]
    answer = service.respond(body, key_id="k-1")
    assert answer.status == 207 and (answer.body["accepted"], answer.body["refused"]) == (2, 3)
    results = answer.body["results"]
    assert [(result["prediction_id"], result["status"]) for result in results] == [
        (good, 202), (twice, 202), (forged, 404), (good, 400), (twice, 409)]
    assert [result.get("outcome") for result in results[:2]] == ["accepted", "duplicate"]
    assert [result["error"]["code"] for result in results[2:]] == [
        "prediction_not_found", "invalid_label", "label_conflict"]
    assert table.scan()["Count"] == 2
    assert answer.tally.counts == {("sentiment", "FeedbackAccepted"): 1, ("sentiment", "FeedbackDuplicates"): 1,
                                   ("sentiment", "FeedbackRefused"): 2, ("unknown", "FeedbackRefused"): 1}
    every = service.respond([{"prediction_id": pid(), "label": "positive"}, {"prediction_id": good,
                                                                               "label": "negative"}], key_id=None)
    assert every.status == 202 and every.body["refused"] == 0


def test_a_list_with_an_item_that_is_no_label_object_is_refused_whole(service, table):
    """The shape is the client's bug (and what the OpenAPI document promises to refuse): 400 naming the item,
    nothing written; the labels themselves are then answered one by one."""
    good = pid()
    for bad, message in (("not an object", "[1]: a label is an object with prediction_id and label, not a string"),
                         ({"prediction_id": 7, "label": "x"}, "[1]: prediction_id: Input should be a valid string"),
                         ({"prediction_id": good, "label": "x", "why": 1}, "[1]: unknown field 'why'")):
        with pytest.raises(InvalidBodyError) as raised:
            service.respond([{"prediction_id": good, "label": "negative"}, bad], key_id=None)
        assert str(raised.value).startswith(message)
    assert table.scan()["Count"] == 0


def test_more_than_64_labels_is_a_413_and_nothing_is_written(service, table):
    body = [{"prediction_id": pid(), "label": "positive"} for _ in range(65)]
    with pytest.raises(PayloadTooLargeError, match="the body has 65 labels; at most 64 are accepted per request"):
        service.respond(body, key_id=None)
    assert table.scan()["Count"] == 0
    assert service.respond(body[:64], key_id=None).status == 202 and table.scan()["Count"] == 64


@pytest.mark.parametrize(("body", "message"), [
    ([], "the body is an empty list: give 1 to 64 labels"),
    ("positive", "the body must be a label object or a list of 1 to 64, not a string"),
    (None, "the body must be a label object or a list of 1 to 64, not null"),
])
def test_a_body_neither_a_label_nor_a_list_of_them_is_a_400(service, body, message):
    with pytest.raises(InvalidBodyError, match=message):
        service.respond(body, key_id=None)


@pytest.mark.parametrize(("body", "message"), [
    ({"prediction_id": "p", "label": "x", "comment": "!", "score": 1},
     "unknown fields 'comment', 'score'; accepted: prediction_id, label, correct, sampled, text"),
    ({"prediction_id": "p", "labels": "x"},
     "unknown field 'labels'; accepted: prediction_id, label, correct, sampled, text"),
    ({"prediction_id": "p"}, "label is required"),
    ({"prediction_id": "p", "label": "x", "sampled": "yes"}, "sampled: Input should be a valid boolean"),
])
def test_a_label_of_the_wrong_shape_is_a_400_naming_what_is_wrong(service, body, message):
    answer = service.respond(body, key_id=None)
    assert (answer.status, answer.body) == (400, {"error": {"code": "invalid_request", "message": message}})


# -- writing ------------------------------------------------------------------------------------------------------

class Flaky:
    """The feedback table, throttled for the first `failures` puts (or every put)."""

    def __init__(self, table: Any, failures: int | None):
        self.table, self.failures, self.puts = table, failures, 0

    def put_item(self, **arguments: Any) -> Any:
        self.puts += 1
        if self.failures is None or self.puts <= self.failures:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutItem")
        return self.table.put_item(**arguments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def test_a_throttled_write_is_retried_and_one_never_written_is_a_503_safe_to_resend(table, models):
    manifests = live_manifests(Settings(models_path=(models,)))
    flaky = Flaky(table, failures=2)
    receiver = FeedbackService(lambda: flaky, IDS, manifests, ttl_days=90)
    assert receiver.respond({"prediction_id": pid(), "label": "positive"}, key_id=None).status == 202
    assert flaky.puts == 3
    down = FeedbackService(lambda: Flaky(table, failures=None), IDS, manifests, ttl_days=90)
    answer = down.respond([{"prediction_id": pid(), "label": "positive"}], key_id=None)
    assert answer.status == 207 and answer.body["results"][0]["status"] == 503
    assert answer.body["results"][0]["error"]["message"].endswith(
        "the feedback table did not take the label (ProvisionedThroughputExceededException); sending it again is safe")


def test_the_labels_are_counted_by_model_in_emf_lines():
    tally = Tally()
    tally.counts.update({("sentiment", "FeedbackAccepted"): 2, ("unknown", "FeedbackRefused"): 1})
    lines = [json.loads(line) for line in tally.emf_lines("TestNS", epoch_ms=5)]
    assert [(line["model"], line["FeedbackAccepted"], line["FeedbackDuplicates"], line["FeedbackRefused"])
            for line in lines] == [("sentiment", 2, 0, 0), ("unknown", 0, 0, 1)]
    names = ("FeedbackAccepted", "FeedbackDuplicates", "FeedbackRefused")
    assert lines[0]["_aws"] == {"Timestamp": 5, "CloudWatchMetrics": [{
        "Namespace": "TestNS", "Dimensions": [["model"]],
        "Metrics": [{"Name": name, "Unit": "Count"} for name in names]}]}
    assert Tally().emf_lines("TestNS") == []


# -- scopes -------------------------------------------------------------------------------------------------------

def feedback_event(body: Any, **authorizer: Any) -> dict[str, Any]:
    """An API Gateway (HTTP API, payload 2.0) request for POST /v1/feedback, as the recorded predict event."""
    event = json.loads((ROOT / "events" / "predict.json").read_text())
    event.update(routeKey="POST /v1/feedback", rawPath="/v1/feedback", body=json.dumps(body))
    event.pop("pathParameters")
    event["requestContext"].update(routeKey="POST /v1/feedback")
    event["requestContext"]["http"]["path"] = "/v1/feedback"
    if authorizer:
        event["requestContext"]["authorizer"] = {"lambda": authorizer}
    return event


def predict_event(**authorizer: Any) -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "predict.json").read_text())
    if authorizer:
        event["requestContext"]["authorizer"] = {"lambda": authorizer}
    return event


def test_each_route_needs_its_scope_when_an_authorizer_ran():
    both = {"key_id": "k", "scopes": "predict,feedback", "quota_exceeded": False}
    assert precheck(feedback_event({}, **both), 10_000)
    assert precheck(feedback_event({}), 10_000)  # no authorizer (JWT, IAM, none): the gateway is the gate
    for context, held in (({"key_id": "k", "scopes": "predict"}, "predict"), ({"key_id": "k"}, "predict"),
                          ({"key_id": "k", "scopes": ""}, "none")):
        with pytest.raises(ForbiddenError) as caught:
            precheck(feedback_event({}, **context), 10_000)
        assert str(caught.value) == (f"this API key may not give feedback: it lacks the 'feedback' scope (its "
                                     f"scopes: {held}); use a key created with the 'feedback' scope")
        assert (caught.value.status, caught.value.code) == (403, "forbidden")
    assert precheck(predict_event(key_id="k", quota_exceeded=False), 10_000)  # a key stored before scopes
    with pytest.raises(ForbiddenError, match="may not predict: it lacks the 'predict' scope"):
        precheck(predict_event(key_id="k", scopes="feedback", quota_exceeded=False), 10_000)


@pytest.fixture()
def keys_table(mocked):
    resource = mocked[0]
    resource.create_table(TableName="keys", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "key_id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "key_id", "AttributeType": "S"}])
    return resource.Table("keys")


def test_keys_carry_scopes_to_the_authorizer_context_predict_only_by_default(keys_table):
    plain, labeller, old = new_key(), new_key(), new_key()
    plain_id = store_key(keys_table, plain, "app")
    labeller_id = store_key(keys_table, labeller, "labeller", scopes=["feedback", "predict"])
    old_id = store_key(keys_table, old, "old")
    keys_table.update_item(Key={"key_id": old_id}, UpdateExpression="REMOVE scopes")  # as stored before scopes
    assert keys_table.get_item(Key={"key_id": labeller_id})["Item"]["scopes"] == {"predict", "feedback"}
    assert authorize(keys_table, None, plain, 0)["context"]["scopes"] == "predict"
    assert authorize(keys_table, None, labeller, 0)["context"]["scopes"] == "predict,feedback"
    assert authorize(keys_table, None, old, 0)["context"]["scopes"] == "predict"
    assert {info.key_id: info.scopes for info in list_keys(keys_table)} == {
        plain_id: ("predict",), labeller_id: ("predict", "feedback"), old_id: ("predict",)}
    assert [info.to_dict()["scopes"] for info in list_keys(keys_table) if info.key_id == labeller_id] == [
        ["predict", "feedback"]]
    with pytest.raises(ApiKeyError, match="unknown scope 'admin'; a key's scopes are among predict, feedback"):
        store_key(keys_table, new_key(), "x", scopes=["predict", "admin"])
    with pytest.raises(ApiKeyError, match="at least one scope"):
        store_key(keys_table, new_key(), "x", scopes=[])
    assert scopes_of(["feedback", "later"]) == ("feedback",) and scopes_of(None) == ("predict",)


def test_ferry_keys_create_takes_scopes_and_list_shows_them():
    from ferry.commands.keys import format_keys
    from ferry.runtime.keys import KeyInfo

    table = format_keys([KeyInfo("0" * 16, "labeller", 0, False, None, scopes=("predict", "feedback"))])
    assert table.splitlines()[0].split() == ["ID", "NAME", "SCOPES", "CREATED", "(UTC)", "REVOKED", "DAILY", "QUOTA",
                                             "USED", "TODAY"]
    assert "predict,feedback" in table.splitlines()[1]


# -- files of labels ----------------------------------------------------------------------------------------------

def rows_of(data: bytes, key: str, **options: Any) -> list[tuple[int, Any]]:
    return [(line, row if isinstance(row, Exception) else row.model_dump(exclude_none=True))
            for line, row in read_label_file(data, key, **options)]


def test_a_csv_of_labels_is_read_row_by_row_with_every_bad_row_numbered():
    ok, other = pid(), pid()
    data = (b"\xef\xbb\xbfprediction_id , label,sampled\n"
            + f"{ok},positive,true\n".encode()
            + b"\n"
            + f"{other},neg\xffative,\n".encode("latin-1")
            + f"{other},positive,true,extra\n".encode()
            + f"{other},positive,maybe\n".encode()
            + f'"{other}","positive"\n'.encode()
            + f' {other} ,negative,0'.encode())
    rows = rows_of(data, "labels/day.csv")
    assert [line for line, _ in rows] == [2, 4, 5, 6, 7, 8]  # the blank line 3 is no row
    assert rows[0][1] == {"prediction_id": ok, "label": "positive", "correct": False, "sampled": True}
    assert [str(row) for _, row in rows[1:5]] == [
        "not valid UTF-8",
        "the row has 4 fields; the header has 3 (prediction_id, label, sampled)",
        "sampled is true or false (or 1, 0, yes, no, empty), not 'maybe'",
        "the row has 2 fields; the header has 3 (prediction_id, label, sampled)"]
    assert rows[5][1] == {"prediction_id": other, "label": "negative", "correct": False, "sampled": False}


@pytest.mark.parametrize(("header", "message"), [
    (b"id,label\n", "the CSV header (line 1) has no prediction_id; unknown 'id': the columns are prediction_id, "
                    "label and optionally sampled, correct, text"),
    (b"prediction_id,label,comment\n", "has unknown 'comment'"),
    (b"prediction_id,label,label\n", "has repeated label"),
    (b"prediction_id,lab\xffel\n", "the CSV header (line 1) cannot be read: not valid UTF-8"),
])
def test_a_csv_header_without_the_columns_refuses_the_file(header, message):
    with pytest.raises(LabelFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rows_of(header + b"x,y\n", "labels/day.csv")


def test_a_jsonl_of_labels_is_read_line_by_line_with_every_bad_line_numbered():
    ok = pid()
    lines = [json.dumps({"prediction_id": ok, "label": "positive", "correct": True}).encode(), b"", b"{not json",
             b'{"prediction_id": "caf\xe9", "label": "x"}', b"[1, 2]",
             json.dumps({"prediction_id": ok, "label": "x", "why": "?"}).encode(), b'{"x": "' + b"y" * 300 + b'"}',
             b"   "]
    rows = rows_of(b"\n".join(lines), "labels/2026/day.JSONL", max_bytes=200)
    assert [line for line, _ in rows] == [1, 3, 4, 5, 6, 7]
    assert rows[0][1] == {"prediction_id": ok, "label": "positive", "correct": True, "sampled": False}
    assert [str(row) for _, row in rows[1:]] == [
        "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "not valid UTF-8: byte 23 of the line is 0xe9",
        "a label is an object with prediction_id and label, not an array",
        "unknown field 'why'; accepted: prediction_id, label, correct, sampled, text",
        "the line is longer than 200 bytes"]


def test_a_file_of_another_format_is_refused():
    with pytest.raises(LabelFileError, match=r"s3 key 'labels/day.txt': unknown format '.txt'; labels are .csv"):
        read_label_file(b"", "labels/day.txt")


def test_every_row_of_a_file_is_accepted_or_rejected_and_none_vanishes(service, table):
    ok, twice = pid(), pid()
    data = (b"prediction_id,label,correct\n" + f"{ok},positive,\n".encode() + b"\n"
            + f"{twice},negative,\n".encode() + f"{twice},negative,\n".encode()
            + f"{twice},positive,\n".encode() + f"{twice},positive,true\n".encode()
            + b"garbage,positive,\n" + f"{ok},positive,no,extra\n".encode() + b"\xff\xfe,\x00\n"
            + f"{pid('minilm')},positive,\n".encode() + b'"unterminated,positive\n')  # a quote to the end
    result = load_labels(data, "labels/day.csv", service)
    assert (result.rows, result.accepted, result.duplicates, result.corrected, result.rejected) == (10, 4, 1, 1, 6)
    assert result.rows == result.accepted + result.rejected
    assert [(error["line"], error["code"]) for error in result.errors] == [
        (6, "label_conflict"), (8, "prediction_not_found"), (9, "invalid_request"), (10, "invalid_request"),
        (11, "wrong_task"), (12, "invalid_request")]
    assert stored(table, twice)["label"] == "positive" and stored(table, ok)["source"] == "bulk:labels/day.csv:2"
    assert stored(table, twice)["corrections"][0]["source"] == "bulk:labels/day.csv:7"
    report = result.report()
    assert report["complete"] and (report["rows"], report["errors_not_listed"]) == (10, 0)
    assert result.errors[-1]["message"] == "the row has 1 field; the header has 3 (prediction_id, label, correct)"


def test_a_file_stops_with_the_time_it_has_and_says_where(service):
    data = "\n".join(json.dumps({"prediction_id": pid(), "label": "positive"}) for _ in range(5)).encode()
    left = iter([100_000, 100_000, 100_000, 10_000])
    result = load_labels(data, "labels/day.jsonl", service, remaining_ms=lambda: next(left, 0))
    assert (result.rows, result.accepted, result.stopped_at_line) == (2, 2, 3)
    report = result.report()
    assert not report["complete"] and report["stopped"].startswith("out of time at line 3")


def s3_event(*keys: str) -> dict[str, Any]:
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": 1}}} for key in keys]}


def test_a_file_dropped_under_labels_gets_its_report(mocked, service, table):
    from ferry.runtime.feedback import handle_label_event

    s3 = mocked[1]
    good = pid()
    s3.put_object(Bucket=BUCKET, Key="labels/2026/day+1.jsonl", Body=json.dumps(
        {"prediction_id": good, "label": "negative"}).encode() + b"\nnope\n")
    s3.put_object(Bucket=BUCKET, Key="labels/bad.csv", Body=b"id,label\n1,x\n")
    counted: list[tuple[str, float]] = []
    metrics = type("M", (), {"add_metric": lambda self, name, unit, value: counted.append((name, value)),
                             "add_dimension": lambda self, name, value: None})()
    answer = handle_label_event(s3_event("labels/2026/day%2B1.jsonl", "labels/bad.csv", "input/m/x.csv"), s3,
                                service, logger=logging.getLogger("test"), metrics=metrics, namespace="TestNS")
    assert [summary["report"] for summary in answer["files"]] == ["labels-report/2026/day+1.jsonl.json",
                                                                  "labels-report/bad.csv.json"]
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="labels-report/2026/day+1.jsonl.json")["Body"].read())
    assert (report["rows"], report["accepted"], report["rejected"], report["complete"]) == (2, 1, 1, True)
    assert report["errors"] == [{"line": 2, "code": "invalid_request",
                                 "message": "not valid JSON: Expecting value: line 1 column 1 (char 0)"}]
    refused = json.loads(s3.get_object(Bucket=BUCKET, Key="labels-report/bad.csv.json")["Body"].read())
    assert not refused["complete"] and refused["refused"].startswith("the CSV header (line 1) has no prediction_id")
    assert counted == [("LabelFileFailures", 1), ("LabelFileFailures", 1)]  # the refused file, the stray key
    assert stored(table, good)["source"] == "bulk:labels/2026/day+1.jsonl:1"
    assert report_key("labels/x.csv") == "labels-report/x.csv.json"
    assert is_label_event(s3_event("labels/x.csv")) and not is_label_event(feedback_event({}))


# -- the function -------------------------------------------------------------------------------------------------

@pytest.fixture()
def function(mocked, models, monkeypatch):
    """functions/feedback/app.py imported as Lambda imports it, over moto's AWS."""
    create_feedback_table(mocked[0])
    for name, value in {"FERRY_FEEDBACK_TABLE": "feedback", "FERRY_STACK_SECRET": SECRET,
                        "FERRY_MODELS_DIR": str(models), "FERRY_CAPTURE_TTL_DAYS": "7",
                        "POWERTOOLS_METRICS_NAMESPACE": "TestNS"}.items():
        monkeypatch.setenv(name, value)
    path = ROOT / "functions" / "feedback" / "app.py"
    spec = importlib.util.spec_from_file_location("ferry_feedback_app_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def invoke(module: Any, event: dict[str, Any]) -> tuple[int, Any]:
    answer = module.lambda_handler(copy.deepcopy(event), LambdaContext("FeedbackFunction"))
    return answer["statusCode"], json.loads(answer["body"])


def test_the_function_takes_labels_over_http_with_the_api_s_precheck_and_errors(function, mocked, capsys):
    table = mocked[0].Table("feedback")
    prediction = pid()
    status, body = invoke(function, feedback_event({"prediction_id": prediction, "label": "positive"},
                                                   key_id="k-1", scopes="predict,feedback"))
    assert (status, body["status"]) == (202, "accepted")
    assert stored(table, prediction)["key_id"] == "k-1"
    assert stored(table, prediction)["expires_at"] - stored(table, prediction)["epoch_ms"] // 1000 == 7 * 86_400
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"FeedbackAccepted"' in line]
    assert [(line["model"], line["FeedbackAccepted"]) for line in emf] == [("sentiment", 1)]
    status, body = invoke(function, feedback_event({"prediction_id": prediction, "label": "negative"},
                                                   key_id="k-2", scopes="predict"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = invoke(function, feedback_event([{"prediction_id": prediction, "label": "positive"}] * 65))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    not_json = feedback_event({})
    not_json["body"] = "{nope"
    status, body = invoke(function, not_json)
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["message"].startswith("the body is not valid JSON")
    plain = feedback_event({})
    plain["headers"]["content-type"] = "text/plain"
    assert invoke(function, plain)[0] == 415
    status, body = invoke(function, feedback_event([{"prediction_id": prediction, "label": "positive"},
                                                    {"prediction_id": pid(), "label": "meh"}]))
    assert status == 207 and [result["status"] for result in body["results"]] == [202, 400]
    missing = feedback_event({})
    missing["rawPath"] = missing["requestContext"]["http"]["path"] = "/v1/feedbacks"
    assert invoke(function, missing)[0] == 404


def test_the_function_reads_a_labels_file_from_its_s3_notification(function, mocked):
    s3 = mocked[1]
    prediction = pid()
    s3.put_object(Bucket=BUCKET, Key="labels/audit.csv",
                  Body=f"prediction_id,label,sampled\n{prediction},negative,yes\n".encode())
    answer = function.lambda_handler(s3_event("labels/audit.csv"), LambdaContext("FeedbackFunction", timeout_s=900))
    assert answer["files"][0]["accepted"] == 1 and answer["files"][0]["complete"]
    item = stored(mocked[0].Table("feedback"), prediction)
    assert (item["label"], item["sampled"], item["source"]) == ("negative", True, "bulk:labels/audit.csv:2")


def test_the_api_document_describes_the_feedback_route(function):
    document = json.loads(function.app.get_openapi_json_schema(title="Ferry", version="1"))
    completed = complete_openapi(document, operations({}), function.settings)
    operation = completed["paths"]["/v1/feedback"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["anyOf"][0] == {"$ref": "#/components/schemas/FeedbackItem"}
    assert (schema["anyOf"][1]["minItems"], schema["anyOf"][1]["maxItems"]) == (1, 64)
    assert list(operation["responses"]) == ["202", "207", "400", "401", "403", "404", "409", "413", "415", "429",
                                            "500", "503"]
    assert "headers" not in operation["responses"]["429"]  # no quota on labels: no Retry-After
    assert set(completed["components"]["schemas"]["FeedbackItem"]["properties"]) == {
        "prediction_id", "label", "correct", "sampled", "text"}


# -- what each capture carries for the monitor --------------------------------------------------------------------

class FixedLogits(Predictor):
    """A predictor whose model answers fixed logits: the service's own code around it, no ONNX Runtime."""

    def __init__(self, manifest: Manifest, logits: list[list[float]]):
        self.manifest, self.logits = manifest, np.asarray(logits, dtype=np.float32)

    def encode(self, texts: Any) -> Batch:
        return Batch(feeds={}, token_lengths=[3] * len(texts), truncated=[False] * len(texts))

    def forward(self, batch: Batch) -> np.ndarray:
        return self.logits


@pytest.mark.parametrize("function_to_apply", [None, "softmax", "sigmoid", "none"])
def test_a_capture_s_confidence_is_the_model_s_own_probability_whatever_the_client_asked(tmp_path,
                                                                                         function_to_apply):
    folder = write_model(tmp_path, "sentiment")
    service = PredictionService(Settings(models_path=(tmp_path,), stack_secret=SECRET))
    service.store._loaded["sentiment"] = FixedLogits(Manifest.load(folder), [[0.5, 2.5], [1.0, -1.0]])
    answer = service.predict("sentiment", ["a", "b"], Options(function_to_apply=function_to_apply))
    softmax = [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-2.0))]
    assert [record["confidence"] for record in answer.captures] == [round(float(p), 6) for p in softmax]
    assert [record["label"] for record in answer.captures] == ["positive", "negative"]
    if function_to_apply == "none":
        assert [record["score"] for record in answer.captures] == [2.5, 1.0]  # what the client got: logits
    assert [IDS.parse(record["prediction_id"]).model for record in answer.captures] == ["sentiment"] * 2
    assert answer.prediction_ids == [record["prediction_id"] for record in answer.captures]


def test_a_multi_label_model_s_confidence_is_its_sigmoid(tmp_path):
    folder = write_model(tmp_path, "topics", labels=("a", "b"), problem_type="multi_label_classification")
    service = PredictionService(Settings(models_path=(tmp_path,)))
    service.store._loaded["topics"] = FixedLogits(Manifest.load(folder), [[1.0, 3.0]])
    [record] = service.predict("topics", "x", Options(function_to_apply="softmax")).captures
    assert record["confidence"] == round(1 / (1 + float(np.exp(-3.0))), 6) and record["score"] != record["confidence"]


def test_the_stream_reader_takes_an_s3_body():
    body = io.BytesIO(b"prediction_id,label\n" + f"{pid()},positive\n".encode())
    assert [line for line, _ in read_label_file(body, "labels/x.csv")] == [2]
