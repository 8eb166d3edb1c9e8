"""The handlers called directly with the recorded events under events/, against an embedded moto server."""

from __future__ import annotations

import copy
import json

import pytest

from ferry.local.stack import LocalStack

from conftest import ROOT, run_ferry

EVENTS = ROOT / "events"


def load_event(name: str, model: str | None = None) -> dict:
    event = json.loads((EVENTS / name).read_text())
    if model is not None:
        old = event["pathParameters"]["model"]
        event = json.loads(json.dumps(event).replace(f"/models/{old}/", f"/models/{model}/"))
        event["pathParameters"]["model"] = model
    return event


@pytest.fixture(scope="module")
def stack(serving_layers):
    with LocalStack(root=ROOT, layers_dir=serving_layers) as running:
        yield running


def test_predict_event(stack):
    response = stack.invoke("PredictFunction", load_event("predict.json", model="tiny-bert"))
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert len(body) == 2 and all(len(item) == 1 for item in body)
    assert len(response["headers"]["x-ferry-prediction-ids"].split(",")) == 2


def test_embed_event(stack):
    response = stack.invoke("PredictFunction", load_event("embed.json"))
    assert response["statusCode"] == 200 and len(json.loads(response["body"])[0]) == 384


def test_bad_parameter_event_is_a_400_in_the_project_shape(stack):
    response = stack.invoke("PredictFunction", load_event("predict-bad-parameter.json", model="tiny-bert"))
    assert response["statusCode"] == 400
    assert json.loads(response["body"]) == {"error": {
        "code": "invalid_request", "message": "unknown parameter 'parameters.temperature'; accepted: top_k, "
        "function_to_apply"}}


def test_base64_body_is_decoded(stack):
    event = load_event("predict.json", model="tiny-bert")
    event["body"] = __import__("base64").b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    assert stack.invoke("PredictFunction", event)["statusCode"] == 200


def test_oversized_body_is_413(stack, monkeypatch):
    event = load_event("predict.json", model="tiny-bert")
    event["body"] = json.dumps({"inputs": ["x" * 5000] * 1300})  # 6.5 MB
    response = stack.invoke("PredictFunction", event)
    assert response["statusCode"] == 413 and "at most 6291456 are accepted" in response["body"]


def test_capture_event_is_idempotent(stack):
    event = load_event("capture.json")
    first = stack.invoke("CaptureFunction", copy.deepcopy(event))
    again = stack.invoke("CaptureFunction", copy.deepcopy(event))
    assert first == {"written": 2, "duplicates": 0, "invalid": 0}
    assert again == {"written": 0, "duplicates": 2, "invalid": 0}
    table = stack.client("dynamodb")
    item = table.get_item(TableName="CaptureTable", Key={"prediction_id": {"S": "0" * 31 + "1"}})["Item"]
    assert item["model_version"] == {"S": "sentiment#0123456789ab"} and item["label"] == {"S": "positive"}


def test_capture_rejects_a_malformed_event_without_failing(stack):
    assert stack.invoke("CaptureFunction", {"awslogs": {"data": "not base64!"}}) == {
        "written": 0, "duplicates": 0, "invalid": 1}


def test_authorizer_event_refuses_an_unknown_key_and_accepts_a_stored_one(stack):
    event = load_event("authorizer.json")
    assert stack.invoke("AuthorizerFunction", event) == {"isAuthorized": False}
    key = "fry_handler-test-key-0123456789"
    identifier = stack.store_api_key(key, "handler-test")
    event["headers"]["authorization"] = event["identitySource"][0] = f"Bearer {key}"
    assert stack.invoke("AuthorizerFunction", event) == {"isAuthorized": True, "context": {"key_id": identifier}}
    del event["headers"]["authorization"]
    assert stack.invoke("AuthorizerFunction", event) == {"isAuthorized": False}


def test_ferry_invoke_mirrors_sam_local_invoke(serving_layers, tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps(load_event("predict.json", model="tiny-bert")))
    result = run_ferry("invoke", "predict", "-e", str(event), "--layers-dir", str(serving_layers))
    assert result.returncode == 0, result.stderr[-1500:]
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    unknown = run_ferry("invoke", "nothing", "-e", str(event), "--layers-dir", str(serving_layers))
    assert unknown.returncode == 2
    assert "no function 'nothing' in the template; known: AuthorizerFunction, BatchFunction" in unknown.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    broken = run_ferry("invoke", "PredictFunction", "-e", str(bad), "--layers-dir", str(serving_layers))
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr


def test_batch_keeps_order_reports_bad_lines_and_ignores_redelivery(stack, tmp_path):
    from ferry.local.stack import s3_event

    source = tmp_path / "reviews.jsonl"
    lines = [json.dumps({"text": f"review number {i}: {'great' if i % 2 else 'awful'}", "id": f"r{i}"})
             for i in range(70)]
    lines[10] = '{"text": ""}'
    lines[40] = "not json"
    source.write_text("\n".join(lines) + "\n")
    answer = stack.drop_file("BatchBucket", "input/tiny-bert/reviews.jsonl", source)
    outcome = answer["results"][0]
    assert (outcome["predicted"], outcome["errors"], outcome["skipped"]) == (68, 2, False)
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    output = s3.get_object(Bucket=bucket, Key=outcome["output"])["Body"].read().decode().splitlines()
    rows = [json.loads(line) for line in output]
    assert [row["line"] for row in rows] == [n for n in range(1, 71) if n not in (11, 41)]
    assert rows[0]["id"] == "r0" and {p["label"] for p in rows[0]["predictions"]} == {"negative", "positive"}
    errors = s3.get_object(Bucket=bucket, Key=outcome["output"].replace(".predictions.", ".errors."))
    assert [json.loads(line)["line"] for line in errors["Body"].read().decode().splitlines()] == [11, 41]
    head = s3.head_object(Bucket=bucket, Key="input/tiny-bert/reviews.jsonl")
    again = stack.invoke("BatchFunction", s3_event(bucket, "input/tiny-bert/reviews.jsonl", head["ETag"], 1))
    assert again["results"][0]["skipped"] is True
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="output/tiny-bert/")["Contents"]]
    assert len(keys) == 2  # predictions and errors, once


def test_batch_csv_and_refusals(stack, tmp_path):
    source = tmp_path / "texts.csv"
    source.write_text('id,text\n1,"hello, world"\n2,\n')
    outcome = stack.drop_file("BatchBucket", "input/tiny-bert/texts.csv", source)["results"][0]
    assert (outcome["predicted"], outcome["errors"]) == (1, 1)
    unknown = stack.drop_file("BatchBucket", "input/nope/texts.csv", source)["results"][0]
    assert "no model named 'nope'" in unknown["error"]
    from ferry.local.stack import s3_event

    refused = stack.invoke("BatchFunction", s3_event(stack.table_names["BatchBucket"], "input/x.txt", "e", 1))
    assert "batch inputs go to input/<model>/<file>.jsonl or .csv" in refused["rejected"]
    # both failures are counted for an alarm, through the batch function's EMF, in the embedded CloudWatch
    import time

    cloudwatch, failures = stack.client("cloudwatch"), 0.0
    deadline = time.time() + 10
    while time.time() < deadline and failures < 2:
        points = cloudwatch.get_metric_statistics(
            Namespace="Ferry", MetricName="BatchFailures", Dimensions=[{"Name": "service", "Value": "ferry-batch"}],
            StartTime=time.time() - 3600, EndTime=time.time() + 60, Period=60, Statistics=["Sum"])["Datapoints"]
        failures = sum(point["Sum"] for point in points)
        time.sleep(0.2)
    assert failures == 2
