"""template.yaml: what the local stack reads from it (tests/integration: test_sam.py, what SAM CLI makes of it;
test_deploy.py, what deploys)."""

from __future__ import annotations

import pytest

from ferry.exceptions import EXIT_USAGE, FerryError
from ferry.local import template as tpl

from helpers import ROOT


def test_routes_tables_and_functions_come_from_the_template():
    template = tpl.load_template(ROOT / "template.yaml")
    routes = {(route.method, route.path): route.function for route in tpl.routes(template)}
    assert routes[("POST", "/v1/models/{model}/predict")] == "PredictFunction"
    assert routes[("POST", "/v1/models/{model}/embed")] == "PredictFunction"
    assert ("GET", "/healthz") in routes
    predict = next(r for r in tpl.routes(template) if r.path == "/v1/models/{model}/predict")
    assert predict.match("POST", "/v1/models/sentiment/predict") == {"model": "sentiment"}
    assert predict.match("GET", "/v1/models/sentiment/predict") is None
    assert predict.match("POST", "/v1/models/a/b/predict") is None
    table = tpl.tables(template)["CaptureTable"]
    assert table["KeySchema"] == [{"AttributeName": "prediction_id", "KeyType": "HASH"}]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "by-model-time"
    functions = tpl.functions(template, ROOT)
    assert set(functions) >= {"PredictFunction", "CaptureFunction"}
    public = {route.path for route in tpl.routes(template) if not route.authorized}
    assert public == {"/healthz", "/openapi.json"}
    assert tpl.lambda_authorizer(template) == "AuthorizerFunction"
    assert tpl.buckets(template)["BatchBucket"].startswith("ferry-batch-")
    for function in functions.values():
        assert (function.code_uri / "app.py").is_file()


def test_what_the_stack_acts_on_comes_from_the_template_as_plain_data():
    template = tpl.load_template(ROOT / "template.yaml")
    functions = tpl.functions(template, ROOT)
    capture, predict, batch = functions["CaptureFunction"], functions["PredictFunction"], functions["BatchFunction"]
    assert (capture.dead_letter_queue, batch.dead_letter_queue, predict.dead_letter_queue) == (
        "CaptureDeadLetterQueue", "BatchDeadLetterQueue", None)
    assert (predict.log_group, capture.timeout_s, predict.timeout_s) == ("PredictLogGroup", 60.0, 29.0)
    assert predict.environment["POWERTOOLS_METRICS_NAMESPACE"] == "Ferry"  # from the Globals
    assert predict.environment["POWERTOOLS_SERVICE_NAME"] == "ferry-predict"  # its own
    filters = {(found.function, found.destination) for found in tpl.subscription_filters(template)}
    assert filters == {("PredictFunction", "CaptureFunction"), ("BatchFunction", "CaptureFunction")}
    assert all(found.pattern.matches('{"capture": {"prediction_id": "x"}}')
               for found in tpl.subscription_filters(template))
    assert set(tpl.queues(template)) == {"CaptureDeadLetterQueue", "BatchDeadLetterQueue", "FeedbackDeadLetterQueue",
                                         "MonitorDeadLetterQueue"}
    assert tpl.s3_triggers(template) == {"BatchBucket": [("BatchFunction", "input/"), ("FeedbackFunction", "labels/")]}
    assert tpl.schedules(template) == {"MonitorFunction": 300}  # rate(${MonitorEveryMinutes} minutes), default 5
    assert tpl.overridable(template, batch) == {"FERRY_BATCH_CHUNK_BYTES"}
    assert "FERRY_STACK_SECRET" not in tpl.overridable(template, predict)  # a !Sub, not a parameter


def test_values_resolve_to_local_names_parameters_and_secrets():
    template = tpl.load_template(ROOT / "template.yaml")
    names = {"KeysTable": "KeysTable", "StackSecret": "arn:secret"}
    assert tpl.resolve(template, {"Ref": "KeysTable"}, names) == "KeysTable"
    assert tpl.resolve(template, {"Ref": "DailyQuota"}, names) == "100000"  # the parameter's default
    assert tpl.resolve(template, {"Ref": "AWS::Region"}, names) == "us-east-1"
    secret = {"Fn::Sub": "{{resolve:secretsmanager:${StackSecret}:SecretString}}"}
    assert tpl.resolve(template, secret, names, lambda arn: f"value of {arn}") == "value of arn:secret"
    assert tpl.resolve(template, 3, names) == "3"


def test_a_template_error_is_a_ferry_error_and_a_usage_error(tmp_path):
    (tmp_path / "template.yaml").write_text("Resources:\n  F:\n    Type: AWS::Serverless::Function\n")
    template = tpl.load_template(tmp_path / "template.yaml")
    with pytest.raises(tpl.TemplateError, match="function F: no CodeUri or no Handler") as raised:
        tpl.functions(template, tmp_path)
    assert isinstance(raised.value, FerryError) and raised.value.exit_status == EXIT_USAGE
    assert raised.value.code == "invalid_template"
    (tmp_path / "bad.yaml").write_text("Resources:\n  S:\n    Type: AWS::Logs::SubscriptionFilter\n"
                                       "    Properties: {FilterPattern: ERROR, DestinationArn: !GetAtt F.Arn}\n")
    with pytest.raises(tpl.TemplateError, match="subscription filter S: filter pattern 'ERROR'"):
        tpl.subscription_filters(tpl.load_template(tmp_path / "bad.yaml"))

