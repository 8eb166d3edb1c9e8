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



# -- parameters and conditions: what exists locally is what CloudFormation would create ------------------------------

CONDITIONS = """
Parameters:
  Mode: {Type: String, Default: apikey, AllowedValues: [apikey, jwt, iam]}
  Name: {Type: String, Default: "", AllowedPattern: "^([a-z0-9-]*)$"}
  Count: {Type: Number, Default: 10, MinValue: 0, MaxValue: 20}
  Flag: {Type: String, Default: "false"}
Conditions:
  UseKey: !Equals [!Ref Mode, apikey]
  KeyLiteralFirst: !Equals [apikey, !Ref Mode]
  NotKey: !Not [!Condition UseKey]
  HasName: !Not [!Equals [!Ref Name, ""]]
  Reserve: !Not [!Equals [!Ref Count, 0]]
  Both: !And [!Condition HasName, !Equals [!Ref Flag, true]]
  Either: !Or [!Condition HasName, !Condition NotKey, !Equals [!Ref AWS::Region, us-east-1]]
  InOtherRegion: !Equals [!Ref AWS::Region, eu-west-1]
Resources:
  Plain: {Type: AWS::SQS::Queue}
  Named: {Type: AWS::SQS::Queue, Condition: HasName}
"""


def _template(tmp_path, text=CONDITIONS, **parameters):
    (tmp_path / "t.yaml").write_text(text)
    return tpl.load_template(tmp_path / "t.yaml", parameters or None)


def test_conditions_evaluate_as_cloudformation_does(tmp_path):
    truth = tpl.conditions(_template(tmp_path))
    assert truth == {"UseKey": True, "KeyLiteralFirst": True, "NotKey": False, "HasName": False, "Reserve": True,
                     "Both": False, "Either": True, "InOtherRegion": False}  # numbers and YAML booleans as strings
    truth = tpl.conditions(_template(tmp_path, Mode="iam", Name="smollm2", Count="0", Flag="true"))
    assert truth == {"UseKey": False, "KeyLiteralFirst": False, "NotKey": True, "HasName": True, "Reserve": False,
                     "Both": True, "Either": True, "InOtherRegion": False}
    assert tpl.queues(_template(tmp_path)) == ["Plain"]
    assert tpl.queues(_template(tmp_path, Name="smollm2")) == ["Plain", "Named"]


@pytest.mark.parametrize(("conditions", "message"), [
    ("A: !Condition A", "condition A depends on itself"),
    ("A: !Condition B", "condition B is not among"),
    ("A: !Equals [!Ref Nothing, x]", "!Ref Nothing: no parameter"),
    ("A: !Equals [!Join [',', [a]], x]", "cannot evaluate the condition operand"),
    ("A: !Contains [[a], a]", "Fn::Contains is not a condition function"),
])
def test_a_condition_the_local_stack_cannot_evaluate_is_a_template_error(tmp_path, conditions, message):
    text = f"Conditions:\n  {conditions}\nResources:\n  Q: {{Type: AWS::SQS::Queue, Condition: A}}\n"
    with pytest.raises(tpl.TemplateError, match=message):
        tpl.queues(_template(tmp_path, text))


@pytest.mark.parametrize(("parameters", "message"), [
    ({"Nope": "x"}, "Nope is not a parameter of the template"),
    ({"Mode": "basic"}, "Mode must be one of apikey, jwt, iam"),
    ({"Name": "Smol LM"}, "Name must match"),
    ({"Count": "21"}, r"Count must be within \[0, 20\]"),
    ({"Count": "many"}, "Count must be a number"),
])
def test_parameter_overrides_are_checked_as_cloudformation_checks_them(tmp_path, parameters, message):
    with pytest.raises(tpl.TemplateError, match=message):
        _template(tmp_path, **parameters)


def test_a_large_model_runs_locally_only_when_it_is_named():
    """LargeModelName empty (the default): no generate function, no generate routes, no capture of its log."""
    generate = {("POST", "/v1/models/{model}/generate"), ("POST", "/v1/models/{model}/v1/chat/completions")}
    template = tpl.load_template(ROOT / "template.yaml")
    assert "GenerateFunction" not in tpl.functions(template, ROOT)
    assert not {(route.method, route.path) for route in tpl.routes(template)} & generate
    assert "GenerateFunction" not in {found.function for found in tpl.subscription_filters(template)}
    predict = tpl.functions(template, ROOT)["PredictFunction"]
    assert tpl.resolve(template, predict.environment["FERRY_GENERATE_MODEL"], {}) == ""  # lists no large model

    named = tpl.load_template(ROOT / "template.yaml", {"LargeModelName": "smollm2",
                                                       "LargeModelData": "s3://ferry-example/smollm2/model.tar.gz"})
    functions = tpl.functions(named, ROOT)
    routes = {(route.method, route.path): route for route in tpl.routes(named)}
    assert set(routes) >= generate
    assert {routes[key].function for key in generate} == {"GenerateFunction"}
    assert all(routes[key].authorized for key in generate)
    assert ("GenerateFunction", "CaptureFunction") in {(f.function, f.destination)
                                                       for f in tpl.subscription_filters(named)}
    generate_function = functions["GenerateFunction"]
    assert generate_function.log_group == "GenerateLogGroup" and generate_function.timeout_s == 29.0
    variables = {name: tpl.resolve(named, value, {}) for name, value in generate_function.environment.items()
                 if name.startswith("FERRY_GENERATE")}
    assert variables == {"FERRY_GENERATE_MODEL": "smollm2", "FERRY_GENERATE_ENDPOINT": "ferry-smollm2",
                         "FERRY_GENERATE_MAX_NEW_TOKENS": "512", "FERRY_GENERATE_TIMEOUT_S": "25",
                         "FERRY_GENERATE_VERSION": ""}
    predict = functions["PredictFunction"]
    assert tpl.resolve(named, predict.environment["FERRY_GENERATE_ENDPOINT"], {}) == "ferry-smollm2"
    assert set(functions) - {"GenerateFunction"} == set(tpl.functions(template, ROOT))  # nothing else changes


def test_what_exists_with_the_defaults_is_what_existed_before_conditions_were_read():
    template = tpl.load_template(ROOT / "template.yaml")
    assert set(tpl.functions(template, ROOT)) == {"AuthorizerFunction", "PredictFunction", "CaptureFunction",
                                                  "BatchFunction", "FeedbackFunction", "MonitorFunction",
                                                  "UpdateFunction"}  # the authorizer: UseApiKey, true by default
    assert set(tpl.buckets(template)) == {"BatchBucket", "RegistryBucket"}
    assert tpl.secrets(template) == ["StackSecret"]
    assert tpl.exists(template, "ApiKeyAuthorizer") and not tpl.exists(template, "JwtAuthorizer")


def test_fn_if_takes_the_branch_of_its_condition():
    template = tpl.load_template(ROOT / "template.yaml")
    choice = {"Fn::If": ["UseApiKey", {"Ref": "DailyQuota"}, {"Fn::If": ["UseJwt", "jwt", {"Ref": "AWS::NoValue"}]}]}
    assert tpl.resolve(template, choice, {}) == "100000"
    assert tpl.resolve(tpl.with_parameters(template, {"AuthMode": "jwt"}), choice, {}) == "jwt"
    assert tpl.resolve(tpl.with_parameters(template, {"AuthMode": "iam"}), choice, {}) == ""
    jwt = tpl.with_parameters(template, {"AuthMode": "jwt"})
    assert tpl.lambda_authorizer(jwt) is None and "AuthorizerFunction" not in tpl.functions(jwt, ROOT)
    assert {route.path for route in tpl.routes(jwt) if not route.authorized} == {"/healthz", "/openapi.json"}
    assert tpl.parameter_values(jwt)["AuthMode"] == "jwt" and tpl.parameter_values(template)["AuthMode"] == "apikey"
