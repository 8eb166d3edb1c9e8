"""template.yaml deploys: CloudFormation's SAM transform accepts it for every combination of the parameters its
conditions read, and what each combination deploys is complete and safe.

`sam validate --lint`, cfn-lint and `sam build` never run the transform CloudFormation runs on
`Transform: AWS::Serverless-2016-10-31`; a template with an intrinsic in `Auth.DefaultAuthorizer` passed all three
and was refused at deploy. So these tests run aws-sam-translator (pinned: the version CloudFormation runs) offline,
as `sam package` hands it the template (local code folders replaced by S3 URIs), then resolve the conditions of
each combination and check the resources that would exist, and lint the transformed output with cfn-lint with
that combination's parameters, failing on informational findings too.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT

TEMPLATE = ROOT / "template.yaml"
PSEUDO = {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::StackName", "AWS::StackId", "AWS::URLSuffix",
          "AWS::NoValue"}
# Every parameter a condition reads, with the values that flip it (the test below fails if one is missing here).
CONDITION_VALUES: dict[str, list[Any]] = {
    "AuthMode": ["apikey", "jwt", "iam"],
    "Architecture": ["x86_64", "arm64"],
    "BatchReservedConcurrency": [10, 0],
    "AlarmEmail": ["", "oncall@example.com"],
}
# Parameters whose conditions only choose a value, the same way in every combination (a model layer: the template's
# own, or the version the update loop promoted): each is set over one combination rather than multiplied in.
SENTIMENT_ARN = "arn:aws:lambda:us-east-1:123456789012:layer:ferry-sentiment:7"
MINILM_ARN = "arn:aws:lambda:us-east-1:123456789012:layer:ferry-minilm:3"
SWAPPED_VALUES: dict[str, list[Any]] = {"SentimentLayerArn": [SENTIMENT_ARN], "MinilmLayerArn": [MINILM_ARN]}
JWT = {"JwtIssuer": "https://issuer.example.com/", "JwtAudience": ["ferry"]}
COMBINATIONS = [dict(zip(CONDITION_VALUES, values, strict=True))
                for values in itertools.product(*CONDITION_VALUES.values())]
COMBINATIONS += [{**COMBINATIONS[0], "SentimentLayerArn": SENTIMENT_ARN},
                 {**COMBINATIONS[-1], "SentimentLayerArn": SENTIMENT_ARN, "MinilmLayerArn": MINILM_ARN}]
# Parameters whose conditions only add resources (the large model, HasLargeModel, and its data capture): read by
# nothing the other conditions decide, so each value is set over a few combinations rather than multiplied in.
ARTIFACT = "s3://ferry-artifacts-example/endpoints/smollm2/model.tar.gz"
LARGE_MODEL = {"LargeModelName": "smollm2", "LargeModelData": ARTIFACT}
ADDED_VALUES: dict[str, list[Any]] = {"LargeModelName": ["smollm2"], "LargeModelData": [ARTIFACT],
                                      "CaptureText": ["false", "true"], "LargeModelImageAccount": ["123456789012"]}
COMBINATIONS += [{**COMBINATIONS[0], **LARGE_MODEL, "CaptureText": "false"},  # apikey, x86_64, 10, no email
                 {**COMBINATIONS[15], **LARGE_MODEL, "CaptureText": "true",  # jwt, arm64, 0, an email
                  "LargeModelImageAccount": "123456789012"},
                 {**COMBINATIONS[16], **LARGE_MODEL, "CaptureText": "true"}]  # iam, x86_64, 10, no email


def _id(parameters: dict[str, Any]) -> str:
    return "-".join(f"{value}" or "none" for name, value in parameters.items() if name != "LargeModelData")


def _sam_template() -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(TEMPLATE.read_text(encoding="utf-8"))


class _NoManagedPolicies:
    """The managed-policy loader `transform` wants (it would ask IAM); the template names no managed policy."""

    def load(self) -> dict[str, str]:
        return {}


def transform(parameters: dict[str, Any]) -> dict[str, Any]:
    """What CloudFormation deploys: the SAM transform of the packaged template, for these parameter values."""
    from samtranslator.translator.transform import transform as sam_transform

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = copy.deepcopy(_sam_template())
    for resource in template["Resources"].values():  # as `sam package` rewrites them
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = "s3://ferry-artifacts/function.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = "s3://ferry-artifacts/layer.zip"
    return sam_transform(template, {**_defaults(template), **parameters}, _NoManagedPolicies())


def _defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {name: spec["Default"] for name, spec in template["Parameters"].items() if "Default" in spec}


def _condition(expression: Any, parameters: dict[str, Any], conditions: dict[str, Any]) -> Any:
    """The value of a condition or of an operand inside one."""
    if isinstance(expression, dict) and len(expression) == 1:
        (function, argument), = expression.items()
        if function == "Condition":
            return _condition(conditions[argument], parameters, conditions)
        if function == "Ref":
            return parameters[argument]
        if function == "Fn::Equals":
            left, right = (_condition(item, parameters, conditions) for item in argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not _condition(argument[0], parameters, conditions)
        if function == "Fn::And":
            return all(_condition(item, parameters, conditions) for item in argument)
        if function == "Fn::Or":
            return any(_condition(item, parameters, conditions) for item in argument)
    return expression


_REMOVED = object()


def _resolve_ifs(value: Any, truth: dict[str, bool]) -> Any:
    if isinstance(value, dict):
        if list(value) == ["Fn::If"]:
            name, then, otherwise = value["Fn::If"]
            return _resolve_ifs(then if truth[name] else otherwise, truth)
        if value == {"Ref": "AWS::NoValue"}:
            return _REMOVED
        resolved = {key: _resolve_ifs(item, truth) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _REMOVED}
    if isinstance(value, list):
        return [item for item in (_resolve_ifs(item, truth) for item in value) if item is not _REMOVED]
    return value


def deployed(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The resources of a transformed template that exist for these parameters, with every Fn::If resolved."""
    values = {**_defaults(template), **parameters}
    conditions = template.get("Conditions", {})
    truth = {name: bool(_condition(expression, values, conditions)) for name, expression in conditions.items()}
    return {logical_id: _resolve_ifs(resource, truth) for logical_id, resource in template["Resources"].items()
            if truth.get(resource.get("Condition", ""), True)}


def _references(value: Any) -> set[str]:
    """Every logical id a value names with Ref, GetAtt or ${} inside Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        for function, argument in value.items():
            if function == "Ref" and isinstance(argument, str):
                found.add(argument)
            elif function == "Fn::GetAtt":
                found.add(argument[0] if isinstance(argument, list) else argument.split(".")[0])
            elif function == "Fn::Sub":
                text, names = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([\w.:]+)\}", text)} - set(names)
                found |= _references(names)
            else:
                found |= _references(argument)
    elif isinstance(value, list):
        for item in value:
            found |= _references(item)
    return found


def stack_parameters(combination: dict[str, Any]) -> dict[str, Any]:
    """A combination's parameter values as a deploy gives them (a JWT stack with its issuer and audience)."""
    return {**combination, **(JWT if combination["AuthMode"] == "jwt" else {})}


_TRANSFORMS: dict[str, dict[str, Any]] = {}


def transformed(parameters: dict[str, Any]) -> dict[str, Any]:
    """:func:`transform`, once per set of parameter values for the whole module (it takes most of a second)."""
    key = json.dumps(parameters, sort_keys=True)
    if key not in _TRANSFORMS:
        _TRANSFORMS[key] = transform(parameters)
    return copy.deepcopy(_TRANSFORMS[key])


@pytest.fixture(scope="module", params=COMBINATIONS, ids=_id)
def combination(request) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(parameters, the transformed template, the resources it deploys with them)."""
    parameters = stack_parameters(request.param)
    template = transformed(parameters)
    return parameters, template, deployed(template, parameters)


def test_every_condition_parameter_is_combined():
    template = _sam_template()
    read = {name for expression in template["Conditions"].values() for name in _references(expression)
            if name in template["Parameters"]}
    assert read == set(CONDITION_VALUES) | set(SWAPPED_VALUES) | set(ADDED_VALUES)
    for name, values in {**SWAPPED_VALUES, **ADDED_VALUES}.items():  # each value is deployed by some combination
        assert all(any(combination.get(name) == value for combination in COMBINATIONS) for value in values), name


def test_the_transform_accepts_it_and_every_reference_resolves(combination):
    parameters, _, resources = combination
    template = _sam_template()
    known = set(resources) | set(template["Parameters"]) | PSEUDO
    for logical_id, resource in resources.items():
        dangling = {name for name in _references(resource) if name not in known}
        assert not dangling, f"{logical_id} names {dangling}, which {_id(parameters)} does not create"
    assert any(resource["Type"] == "AWS::Lambda::Function" for resource in resources.values())


def test_routes_use_the_authorizer_of_the_auth_mode_and_only_that_one(combination):
    parameters, _, resources = combination
    mode = parameters["AuthMode"]
    authorizers = {logical_id: resource["Properties"] for logical_id, resource in resources.items()
                   if resource["Type"] == "AWS::ApiGatewayV2::Authorizer"}
    expected = {"apikey": {"REQUEST"}, "jwt": {"JWT"}, "iam": set()}[mode]
    assert {properties["AuthorizerType"] for properties in authorizers.values()} == expected
    for properties in authorizers.values():
        if properties["AuthorizerType"] == "JWT":  # API Gateway refuses a JWT authorizer with an empty issuer
            assert properties["JwtConfiguration"]["Issuer"] == {"Ref": "JwtIssuer"}
    routes = {resource["Properties"]["RouteKey"]: resource["Properties"] for resource in resources.values()
              if resource["Type"] == "AWS::ApiGatewayV2::Route"}
    public = {key for key, properties in routes.items() if properties["AuthorizationType"] == "NONE"}
    assert public == {"GET /healthz", "GET /openapi.json"}
    for key, properties in routes.items():
        if key in public:
            continue
        assert properties["AuthorizationType"] == {"apikey": "CUSTOM", "jwt": "JWT", "iam": "AWS_IAM"}[mode], key
        if mode == "iam":
            assert "AuthorizerId" not in properties, key
        else:
            assert properties["AuthorizerId"]["Ref"] in authorizers, key
    functions = {resource["Properties"].get("Environment", {}).get("Variables", {}).get("POWERTOOLS_SERVICE_NAME")
                 for resource in resources.values() if resource["Type"] == "AWS::Lambda::Function"}
    assert ("ferry-authorizer" in functions) == (mode == "apikey")


def test_every_function_carries_layers_of_its_architecture(combination):
    parameters, _, resources = combination
    arch = parameters["Architecture"]
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        properties = resource["Properties"]
        assert properties["Architectures"] == [{"Ref": "Architecture"}], logical_id
        runtime = powertools = 0
        for layer in properties["Layers"]:
            if layer.get("Ref") in SWAPPED_VALUES:  # a promoted model layer: ONNX files, the same on both
                continue
            if "Ref" in layer:
                compatible = resources[layer["Ref"]]["Properties"].get("CompatibleArchitectures")
                if compatible is not None:  # model layers hold ONNX files, the same on both
                    assert compatible == [arch], f"{logical_id}: layer {layer['Ref']} is for {compatible}"
                    runtime += 1
            else:
                arn = layer["Fn::Sub"].replace("${Architecture}", arch)
                assert arn.split(":")[-2].endswith(f"-{arch}"), arn
                powertools += 1
        assert (runtime, powertools) == (1, 1), logical_id


def test_state_is_retained_logged_and_alarmed(combination):
    parameters, _, resources = combination
    by_type: dict[str, dict[str, Any]] = {}
    for logical_id, resource in resources.items():
        by_type.setdefault(resource["Type"], {})[logical_id] = resource
    stateful = {**by_type["AWS::DynamoDB::Table"], **by_type["AWS::S3::Bucket"],
                **by_type["AWS::SecretsManager::Secret"], **by_type["AWS::SQS::Queue"]}
    for logical_id, resource in stateful.items():
        assert resource.get("DeletionPolicy") == resource.get("UpdateReplacePolicy") == "Retain", logical_id
        fixed = resource["Properties"].get("TableName") or resource["Properties"].get("BucketName")
        # a fixed name would keep a stack of the same name from being created again while the retained one is there
        assert fixed is None or "AWS::StackId" in json.dumps(fixed), logical_id
    for logical_id, table in by_type["AWS::DynamoDB::Table"].items():
        assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, \
            logical_id
    groups = by_type["AWS::Logs::LogGroup"]
    assert all("RetentionInDays" in group["Properties"] for group in groups.values())
    for logical_id, function in by_type["AWS::Lambda::Function"].items():
        assert function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] in groups, logical_id
    stage = next(iter(by_type["AWS::ApiGatewayV2::Stage"].values()))["Properties"]
    assert stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0] in groups
    # functions invoked asynchronously (S3 notifications, log subscriptions) keep what fails in a dead-letter queue
    permissions = by_type["AWS::Lambda::Permission"].values()
    asynchronous = {_references(p["Properties"]["FunctionName"]).pop() for p in permissions
                    if p["Properties"]["Principal"] in ("s3.amazonaws.com", "logs.amazonaws.com")}
    assert asynchronous
    for logical_id in asynchronous:
        queue = by_type["AWS::Lambda::Function"][logical_id]["Properties"]["DeadLetterConfig"]["TargetArn"]
        assert queue["Fn::GetAtt"][0] in by_type["AWS::SQS::Queue"], logical_id
    batch = next(f["Properties"] for f in by_type["AWS::Lambda::Function"].values()
                 if f["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "ferry-batch")
    reserved = parameters["BatchReservedConcurrency"]
    assert batch.get("ReservedConcurrentExecutions") == ({"Ref": "BatchReservedConcurrency"} if reserved else None)
    assert ("AWS::SNS::Subscription" in by_type) == bool(parameters["AlarmEmail"])


def cfn_lint(template: dict[str, Any], parameter_sets: list[dict[str, Any]]) -> list[Any]:
    """cfn-lint's findings, informational ones too, on a template deployed with each of `parameter_sets`: it
    validates the template once and resolves every Ref with each set (a set per combination costs a lint of
    ~4 s each; every set at once, about the same as one)."""
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    return lint(json.dumps(template, indent=1), config=ManualArgs(parameters=parameter_sets, include_checks=["I"],
                                                                  regions=["us-east-1"]))


def test_cfn_lint_finds_nothing_in_what_is_deployed():
    """Every combination's transformed template, linted with that combination's values: the combinations whose
    transforms are the same are linted together; a finding is traced to the combinations that have it."""
    groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for values in COMBINATIONS:
        parameters = stack_parameters(values)
        template = transformed(parameters)
        groups.setdefault(json.dumps(template, sort_keys=True), (template, []))[1].append(parameters)
    for template, parameter_sets in groups.values():
        matches = cfn_lint(template, parameter_sets)
        if matches:
            culprits = [_id(parameters) for parameters in parameter_sets if cfn_lint(template, [parameters])]
            raise AssertionError(f"{culprits}:\n" + "\n".join(str(match) for match in matches))


def test_cfn_lint_checks_every_parameter_set_it_is_given():
    """What makes one lint stand for every combination: a bad value in one set of many is found."""
    parameter_sets = [stack_parameters(values) for values in COMBINATIONS]
    template = transformed(parameter_sets[0])
    parameter_sets[-1] = {**parameter_sets[-1], "BatchReservedConcurrency": -5}
    matches = cfn_lint(template, parameter_sets)
    assert [match.rule.id for match in matches] == ["W1030"], matches
    assert "resolved to -5" in str(matches[0])


def test_cfn_lint_finds_nothing_in_the_sam_template():
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    matches = lint(TEMPLATE.read_text(encoding="utf-8"), config=ManualArgs(include_checks=["I"],
                                                                          regions=["us-east-1"]))
    assert not matches, "\n".join(str(match) for match in matches)


def test_a_jwt_stack_needs_an_issuer_and_an_audience():
    """CloudFormation refuses the parameters before creating anything (a JWT authorizer with no issuer fails)."""
    rule = _sam_template()["Rules"]["JwtNeedsIssuerAndAudience"]
    values = {"AuthMode": "jwt", "JwtIssuer": "", "JwtAudience": ""}
    assert _condition(rule["RuleCondition"], values, {})
    for issuer, audience, holds in [("", "", False), ("https://i.example.com/", "", False),
                                    ("", "ferry", False), ("https://i.example.com/", "ferry", True)]:
        values.update(JwtIssuer=issuer, JwtAudience=audience)
        assertion = json.loads(json.dumps(rule["Assertions"][0]["Assert"]).replace(
            '{"Fn::Join": ["", {"Ref": "JwtAudience"}]}', '{"Ref": "JwtAudience"}'))
        assert bool(_condition(assertion, values, {})) is holds, (issuer, audience)


CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def test_checkov_has_no_unsuppressed_finding():
    assert CHECKOV.exists(), "checkov is installed by `make test` into .venv-checkov (it pins old boto3)"
    # --skip-download: checkov would otherwise fetch guidelines from its vendor's API (no network here, or in CI)
    result = subprocess.run([str(CHECKOV), "-f", str(TEMPLATE), "--output", "json", "--compact", "--skip-download"],
                            capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(result.stdout)
    failed = [f"{check['check_id']} {check['resource']}" for check in report["results"]["failed_checks"]]
    assert not failed, failed
    assert report["summary"]["passed"] > 0
    for check in report["results"]["skipped_checks"]:  # every suppression says why
        assert len(check.get("check_result", {}).get("suppress_comment", "")) > 20, check["check_id"]


def test_runtime_layer_folders_exist_for_each_architecture_the_template_offers():
    template = _sam_template()
    folders = {resource["Properties"]["CompatibleArchitectures"][0]: resource["Properties"]["ContentUri"]
               for resource in template["Resources"].values()
               if resource["Type"] == "AWS::Serverless::LayerVersion"
               and "CompatibleArchitectures" in resource["Properties"]}
    assert set(folders) == set(template["Parameters"]["Architecture"]["AllowedValues"])
    for arch, folder in folders.items():
        assert Path(folder).name == f"runtime-{arch}"


def test_large_batch_files_go_to_a_distributed_map_the_batch_function_can_start():
    resources = deployed(transform({}), {})
    machine = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    batch = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Function"
                 and r["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "ferry-batch")
    name = machine["StateMachineName"]["Fn::Sub"]
    assert batch["Environment"]["Variables"]["FERRY_BATCH_STATE_MACHINE"]["Fn::Sub"].endswith(f":stateMachine:{name}")
    definition = json.loads("\n".join(machine["DefinitionString"]["Fn::Join"][1]))  # SAM's rendering of Definition
    chunks = definition["States"]["Chunks"]
    assert chunks["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert chunks["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject" and chunks["Next"] == "Join"
    assert chunks["ItemProcessor"]["States"]["Chunk"]["Parameters"]["FunctionName"] == "${BatchFunctionArn}"
    assert machine["DefinitionSubstitutions"]["BatchFunctionArn"]["Fn::GetAtt"][0] in resources
    policies = [statement for r in resources.values() if r["Type"] == "AWS::IAM::Role"
                for policy in r["Properties"].get("Policies", [])
                for statement in policy["PolicyDocument"]["Statement"]]
    assert any(statement["Action"] == "states:StartExecution" and statement["Resource"]["Fn::Sub"].endswith(name)
               for statement in policies)  # the batch function may start it


# -- the maintenance loop: promotion through the stack, CodeDeploy's canary, the update state machine ----------------

CODEDEPLOY_LAMBDA_CONFIGS = {  # CodeDeploy's predefined Lambda deployment configurations, less the prefix
    "Canary10Percent5Minutes", "Canary10Percent10Minutes", "Canary10Percent15Minutes", "Canary10Percent30Minutes",
    "Linear10PercentEvery1Minute", "Linear10PercentEvery2Minutes", "Linear10PercentEvery3Minutes",
    "Linear10PercentEvery10Minutes", "AllAtOnce"}
MODEL_LAYERS = {"SentimentLayerArn": "SentimentModelLayer", "MinilmLayerArn": "MinilmModelLayer"}


@pytest.fixture(scope="module")
def default_stack() -> dict[str, Any]:
    return deployed(transform({}), {})


def _by_service(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {resource["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]: resource["Properties"]
            for resource in resources.values() if resource["Type"] == "AWS::Lambda::Function"}


def _statements(resources: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [statement for policy in resources[role]["Properties"].get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]]


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_the_api_invokes_the_predict_alias_that_codedeploy_shifts_on_the_api_s_own_alarms(default_stack):
    resources = default_stack
    (alias_id,) = [logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"]
    assert resources["PredictIntegration"]["Properties"]["IntegrationUri"] == {"Ref": alias_id}  # not $LATEST
    assert resources["PredictInvokePermission"]["Properties"]["FunctionName"] == {"Ref": alias_id}
    update = resources[alias_id]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    group = resources[update["DeploymentGroupName"]["Ref"]]["Properties"]
    alarms = [alarm["Name"]["Ref"] for alarm in group["AlarmConfiguration"]["Alarms"]]
    assert alarms == ["Api5xxRateAlarm", "LatencyP95Alarm"] and group["AlarmConfiguration"]["Enabled"]
    for alarm in alarms:  # the handler answers failures with 500s: Lambda's Errors metric would never move
        namespaces = json.dumps(resources[alarm]["Properties"])
        assert "AWS/Lambda" not in namespaces and ("AWS/ApiGateway" in namespaces or "Ferry" in namespaces)
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
    assert group["DeploymentConfigName"]["Fn::Sub"][1] == {"ConfigName": "Canary10Percent10Minutes"}
    assert set(_sam_template()["Parameters"]["CanaryDeployment"]["AllowedValues"]) == CODEDEPLOY_LAMBDA_CONFIGS
    chosen = deployed(transform({"CanaryDeployment": "AllAtOnce"}), {"CanaryDeployment": "AllAtOnce"})
    (group_id,) = [logical_id for logical_id, r in chosen.items() if r["Type"] == "AWS::CodeDeploy::DeploymentGroup"]
    assert chosen[group_id]["Properties"]["DeploymentConfigName"]["Fn::Sub"][1] == {"ConfigName": "AllAtOnce"}


def test_a_model_layer_alone_publishes_a_new_predict_version_for_the_alias(default_stack):
    """SAM names the alias's version by a hash of the code, environment and memory: a promoted layer alone leaves
    the name as it was, so the version's description, which names the layer versions, is what replaces it."""
    promoted_parameters = {"SentimentLayerArn": SENTIMENT_ARN}
    promoted = deployed(transform(promoted_parameters), promoted_parameters)
    versions = [{logical_id: r for logical_id, r in resources.items() if r["Type"] == "AWS::Lambda::Version"}
                for resources in (default_stack, promoted)]
    assert list(versions[0]) == list(versions[1])  # the same logical id: SAM alone would publish nothing
    for resources, version in zip((default_stack, promoted), versions, strict=True):
        (properties,) = [r["Properties"] for r in version.values()]
        text, names = properties["Description"]["Fn::Sub"]
        assert set(re.findall(r"\$\{(\w+)\}", text)) == set(names) and len(text) < 100
        layers = {name: _references(value) for name, value in names.items()}
        expected = "SentimentLayerArn" if resources is promoted else next(
            logical_id for logical_id in resources if logical_id.startswith("SentimentModelLayer"))
        assert layers["Sentiment"] == {expected}
        assert next(iter(layers["Minilm"])).startswith("MinilmModelLayer")
        select = names["Sentiment"]["Fn::Select"]
        assert select[1]["Fn::Split"][0] == ":" and SENTIMENT_ARN.split(":")[select[0]] == "7"  # the layer version


def test_every_function_serves_the_promoted_layer_when_its_parameter_is_set(default_stack):
    promoted_parameters = {"SentimentLayerArn": SENTIMENT_ARN, "MinilmLayerArn": MINILM_ARN}
    promoted = deployed(transform(promoted_parameters), promoted_parameters)
    for resources, given in ((default_stack, False), (promoted, True)):
        with_models = {service: [layer for layer in properties["Layers"]
                                 if _references(layer) & (set(MODEL_LAYERS) | {"SentimentModelLayer"})
                                 or any(name.startswith(tuple(MODEL_LAYERS.values())) for name in _references(layer))]
                       for service, properties in _by_service(resources).items()}
        models = {service: layers for service, layers in with_models.items() if layers}
        assert set(models) == {"ferry-predict", "ferry-batch", "ferry-feedback", "ferry-monitor", "ferry-update"}
        for layers in models.values():
            names = [next(iter(_references(layer))) for layer in layers]
            if given:
                assert names == ["SentimentLayerArn", "MinilmLayerArn"]
            else:
                assert [name.rstrip("0123456789abcdef") for name in names] == list(MODEL_LAYERS.values())


def test_the_update_function_is_told_every_layer_parameter_and_may_change_only_this_stack(default_stack):
    template = _sam_template()
    update = _by_service(default_stack)["ferry-update"]
    variables = update["Environment"]["Variables"]
    parameters = dict(part.split("=") for part in variables["FERRY_LAYER_PARAMETERS"].split(","))
    assert set(parameters.values()) == set(MODEL_LAYERS)
    names = dict(part.split("=") for part in variables["FERRY_LAYER_NAMES"]["Fn::Sub"].split(","))
    for model, parameter in parameters.items():
        layer = template["Resources"][MODEL_LAYERS[parameter]]["Properties"]["LayerName"]["Fn::Sub"]
        assert names[model] == layer  # candidates go where the stack's own layer versions are
    assert (update["Timeout"], update["MemorySize"], update["EphemeralStorage"]) == (300, 2048, {"Size": 1024})
    role = update["Role"]["Fn::GetAtt"][0]
    statements = _statements(default_stack, role)
    stack = [s for s in statements if _actions(s) & {"cloudformation:UpdateStack"}]
    assert [s["Resource"] for s in stack] == [{"Ref": "AWS::StackId"}]
    publish = next(s for s in statements if "lambda:PublishLayerVersion" in _actions(s))
    assert sorted(r["Fn::Sub"].split(":layer:")[1] for r in publish["Resource"]) == sorted(names.values())
    passed = next(s for s in statements if "iam:PassRole" in _actions(s))
    assert passed["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    assert not any(s.get("Resource") == "*" for s in statements)


def test_model_degraded_starts_the_update_machine_which_may_train_only_through_its_own_role(default_stack):
    resources = default_stack
    machine_id = next(logical_id for logical_id, r in resources.items()
                      if r["Type"] == "AWS::StepFunctions::StateMachine" and logical_id.startswith("Update"))
    rules = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Events::Rule"
             and any(target["Arn"] == {"Ref": machine_id} for target in r["Properties"]["Targets"])]
    assert [rule["EventPattern"] for rule in rules] == [{"source": ["ferry.monitor"], "detail-type": ["ModelDegraded"],
                                                         "detail": {"model": ["sentiment"]}}]
    statements = _statements(resources, resources[machine_id]["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    training = next(s for s in statements if "sagemaker:CreateTrainingJob" in _actions(s))
    assert training["Resource"]["Fn::Sub"].endswith(":training-job/ferry-*")
    passed = next(s for s in statements if "iam:PassRole" in _actions(s))
    assert passed["Resource"] == {"Fn::GetAtt": ["TrainingRole", "Arn"]}
    assert passed["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    invoke = next(s for s in statements if "lambda:InvokeFunction" in _actions(s))
    assert "UpdateFunction" in json.dumps(invoke["Resource"])
    outcome = resources["ModelUpdateOutcomeRule"]["Properties"]
    assert outcome["EventPattern"]["detail-type"] == ["ModelUpdateRejected", "ModelRolledBack", "ModelUpdateFailed"]
    assert outcome["Targets"][0]["Arn"] == {"Ref": "AlarmTopic"}
    allowed = [s["Condition"]["ArnEquals"]["aws:SourceArn"] for s in
               resources["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"] if "ArnEquals" in
               s.get("Condition", {})]
    assert {"Fn::GetAtt": ["ModelUpdateOutcomeRule", "Arn"]} in allowed
    failed = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"
              and r["Properties"].get("Dimensions") == [{"Name": "StateMachineArn", "Value": {"Ref": machine_id}}]]
    assert [alarm["MetricName"] for alarm in failed] == ["ExecutionsFailed"]


def test_the_registry_bucket_takes_tls_only_and_is_an_output(default_stack):
    statement, = default_stack["RegistryBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"], statement["Condition"]) == (
        "Deny", "s3:*", {"Bool": {"aws:SecureTransport": "false"}})
    bucket = default_stack["RegistryBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    outputs = _sam_template()["Outputs"]
    assert outputs["RegistryBucketName"]["Value"] == {"Ref": "RegistryBucket"}
    assert outputs["UpdateStateMachineArn"]["Value"] == {"Ref": "UpdateStateMachine"}


def test_the_update_function_s_gate_step_judges_real_int8_layers(bert_build, eval_csv, tmp_path, monkeypatch):
    """The gate step as it runs in Lambda: the candidate's layer.zip out of a training job's model.tar.gz in S3,
    both int8 models loaded by the runtime's Predictor, the gate.json beside the handler. The candidate here is the
    live model built again: no row differs, and the gate refuses a candidate that is no better."""
    import csv
    import io
    import tarfile

    import boto3
    from moto import mock_aws

    from ferry.local import template as tpl
    from ferry.runtime import update_task
    from ferry.runtime.registry import Registry
    from ferry.update.job import zip_layer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    model, update_id, bucket = bert_build.name, "an-execution", "ferry-registry"
    with eval_csv.open(encoding="utf-8") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    files = {"result.json": json.dumps({"built": True, "version": bert_build.version,
                                        "manifest": bert_build.manifest.to_dict()}).encode(),
             "layer.zip": zip_layer(bert_build.layer_dir, tmp_path / "layer.zip").read_bytes()}
    for name, part in (("reference", rows[:150]), ("feedback", rows[150:])):
        files[f"gate-data/{name}.jsonl"] = "".join(json.dumps({"text": text, "label": label}) + "\n"
                                                   for text, label in part).encode()
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="job/model.tar.gz", Body=packed.getvalue())
        arguments = tpl.tables(tpl.load_template(TEMPLATE))["ModelRegistryTable"]
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        dynamodb.create_table(**arguments)
        registry = Registry(dynamodb.Table(arguments["TableName"]))
        registry.acquire(model, update_id, 3600)
        registry.start_update(model, update_id, by="test")
        settings = update_task.UpdateSettings(
            bucket=bucket, stack="ferry", layer_parameters={model: "SentimentLayerArn"}, layer_names={model: model},
            models_path=(bert_build.layer_dir / "models",), work=tmp_path / "work",
            gate_file=ROOT / "functions" / "update" / "gate.json")
        state = {"lock": {"model": model, "update_id": update_id, "acquired": True},
                 "train": {"model_uri": f"s3://{bucket}/job/model.tar.gz"}}
        verdict = update_task.handle({"step": "gate", "execution": update_id, "state": state}, registry=registry,
                                     feedback=None, captures=None, s3=s3, cloudformation=None, events=None,
                                     lambda_client=None, settings=settings)
        stored = json.loads(s3.get_object(Bucket=bucket, Key=f"updates/{model}/{update_id}/gate.json")["Body"].read())
        recorded = registry.get_update(model, update_id).steps["gate"]
    assert (verdict["built"], verdict["version"], verdict["live_version"]) == (True, bert_build.version,
                                                                             bert_build.version)
    assert verdict["passed"] is False and "the models differ on 0 rows" in verdict["summary"]
    assert stored["slices"]["reference"]["rows"] == 150 and stored["slices"]["feedback"]["rows"] == 150
    assert stored["slices"]["feedback"]["live"] == stored["slices"]["feedback"]["candidate"]
    assert recorded == verdict


# -- the large model: a GPU SageMaker endpoint behind the same API, only when LargeModelName is set ------------------

LARGE_MODEL_TYPES = {"AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig", "AWS::SageMaker::Endpoint",
                     "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy"}
GENERATE_ROUTES = {"POST /v1/models/{model}/generate", "POST /v1/models/{model}/v1/chat/completions"}


@pytest.fixture(scope="module")
def large_stack() -> dict[str, Any]:
    return deployed(transform(LARGE_MODEL), LARGE_MODEL)


@pytest.fixture(scope="module")
def capturing_large_stack() -> dict[str, Any]:
    parameters = {**LARGE_MODEL, "CaptureText": "true"}
    return deployed(transform(parameters), parameters)


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {logical_id: r["Properties"] for logical_id, r in resources.items() if r["Type"] == kind}


def _one(resources: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    (found,) = _of_type(resources, kind).items()
    return found


def _routes(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["RouteKey"]: p for p in _of_type(resources, "AWS::ApiGatewayV2::Route").values()}


def test_without_a_large_model_the_stack_creates_none_of_it(default_stack):
    """The default (LargeModelName empty) costs nothing: no endpoint, no scaling, no function, no route, no bucket."""
    resources = default_stack
    assert not {r["Type"] for r in resources.values()} & LARGE_MODEL_TYPES
    assert "ferry-generate" not in _by_service(resources)
    assert not set(_routes(resources)) & GENERATE_ROUTES
    assert not [logical_id for logical_id in resources if logical_id.startswith(("LargeModel", "Generate"))]
    assert "sagemaker" not in json.dumps(_statements(resources, _by_service(resources)["ferry-predict"]["Role"]
                                                     ["Fn::GetAtt"][0]))
    predict = _by_service(resources)["ferry-predict"]["Environment"]["Variables"]
    assert predict["FERRY_GENERATE_MODEL"] == {"Ref": "LargeModelName"}  # empty: GET /v1/models lists none
    template = _sam_template()
    assert template["Parameters"]["LargeModelName"]["Default"] == ""
    for name in ("LargeModelEndpointName", "GenerateUrl"):
        assert template["Outputs"][name]["Condition"] == "HasLargeModel"
    assert template["Outputs"]["LargeModelCaptureBucketName"]["Condition"] == "CaptureLargeModelText"


def test_a_large_model_gets_an_endpoint_its_scaling_a_function_and_routes_that_reference_each_other(large_stack):
    resources = large_stack
    model_id, model = _one(resources, "AWS::SageMaker::Model")
    config_id, config = _one(resources, "AWS::SageMaker::EndpointConfig")
    endpoint_id, endpoint = _one(resources, "AWS::SageMaker::Endpoint")
    assert model["PrimaryContainer"]["ModelDataUrl"] == {"Ref": "LargeModelData"}
    assert model["PrimaryContainer"]["Environment"]["HF_MODEL_ID"] == "/opt/ml/model"  # the unpacked artifact
    assert model["EnableNetworkIsolation"] is True
    role = model["ExecutionRoleArn"]["Fn::GetAtt"][0]
    assert resources[role]["Type"] == "AWS::IAM::Role"
    (variant,) = config["ProductionVariants"]
    assert variant["ModelName"] == {"Fn::GetAtt": [model_id, "ModelName"]}
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == (
        {"Ref": "LargeModelInstanceType"}, {"Ref": "LargeModelMinInstances"})
    assert 300 <= variant["ContainerStartupHealthCheckTimeoutInSeconds"] <= 3600
    assert 300 <= variant["ModelDataDownloadTimeoutInSeconds"] <= 3600
    assert endpoint["EndpointConfigName"] == {"Fn::GetAtt": [config_id, "EndpointConfigName"]}
    name = endpoint["EndpointName"]
    assert name == {"Fn::Sub": "${AWS::StackName}-${LargeModelName}"}
    target_id, target = _one(resources, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["ServiceNamespace"], target["ScalableDimension"]) == ("sagemaker",
                                                                         "sagemaker:variant:DesiredInstanceCount")
    resource_id = f"endpoint/${{{endpoint_id}.EndpointName}}/variant/{variant['VariantName']}"
    assert target["ResourceId"] == {"Fn::Sub": resource_id}
    assert (target["MinCapacity"], target["MaxCapacity"]) == ({"Ref": "LargeModelMinInstances"},
                                                              {"Ref": "LargeModelMaxInstances"})
    _, policy = _one(resources, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert policy["ScalingTargetId"] == {"Ref": target_id} and policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    metric = tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
    assert metric == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == {"Ref": "LargeModelTargetInvocations"}
    assert tracking["ScaleOutCooldown"] > 0 and tracking["ScaleInCooldown"] >= tracking["ScaleOutCooldown"]

    functions = _by_service(resources)
    generate, predict = functions["ferry-generate"], functions["ferry-predict"]
    variables = generate["Environment"]["Variables"]
    assert variables["FERRY_GENERATE_ENDPOINT"] == name  # the functions compute the endpoint's name
    assert predict["Environment"]["Variables"]["FERRY_GENERATE_ENDPOINT"] == name
    assert variables["FERRY_GENERATE_MODEL"] == {"Ref": "LargeModelName"}
    assert variables["FERRY_GENERATE_MAX_NEW_TOKENS"] == {"Ref": "LargeModelMaxNewTokens"}
    # the predict function's /openapi.json states the bound the generate function enforces
    assert predict["Environment"]["Variables"]["FERRY_GENERATE_MAX_NEW_TOKENS"] == {"Ref": "LargeModelMaxNewTokens"}
    assert variables["FERRY_GENERATE_TIMEOUT_S"] == "25" and generate["Timeout"] == 29  # under API Gateway's 30 s
    assert variables["FERRY_CAPTURE_TEXT"] == {"Ref": "CaptureText"}
    assert variables["FERRY_STACK_SECRET"] == predict["Environment"]["Variables"]["FERRY_STACK_SECRET"]
    assert generate["MemorySize"] <= 512 and generate["Handler"] == "app.lambda_handler"
    assert len(generate["Layers"]) == 2  # the Globals' runtime and Powertools layers, no model layer
    assert not any("ModelLayer" in json.dumps(layer) for layer in generate["Layers"])

    function_id = next(logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::Lambda::Function"
                       and r["Properties"] == generate)
    routes = _routes(resources)
    assert set(routes) >= GENERATE_ROUTES
    integrations = {_references(routes[key]["Target"]).pop() for key in GENERATE_ROUTES}
    (integration,) = integrations
    assert resources[integration]["Properties"]["IntegrationUri"] == {"Fn::GetAtt": [function_id, "Arn"]}
    permissions = _of_type(resources, "AWS::Lambda::Permission").values()
    assert any(p["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
               and p["Principal"] == "apigateway.amazonaws.com" for p in permissions)
    for key in GENERATE_ROUTES:  # protected exactly as the predict route
        assert {k: routes[key][k] for k in ("AuthorizationType", "AuthorizerId")} == \
            {k: routes["POST /v1/models/{model}/predict"][k] for k in ("AuthorizationType", "AuthorizerId")}


def test_generations_are_captured_like_predictions(large_stack):
    resources = large_stack
    function_id = next(logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::Lambda::Function"
                       and r["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "ferry-generate")
    group = resources[function_id]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    (subscription,) = [r for r in resources.values() if r["Type"] == "AWS::Logs::SubscriptionFilter"
                       and r["Properties"]["LogGroupName"] == {"Ref": group}]
    predict = resources["CaptureSubscription"]["Properties"]
    assert subscription["Properties"]["DestinationArn"] == predict["DestinationArn"]
    assert subscription["Properties"]["FilterPattern"] == predict["FilterPattern"]
    permission = resources[subscription["DependsOn"]]["Properties"]
    assert (permission["Principal"], permission["SourceArn"]) == ("logs.amazonaws.com", {"Fn::GetAtt": [group, "Arn"]})


def test_the_functions_may_reach_that_endpoint_only(large_stack):
    resources = large_stack
    functions = _by_service(resources)
    generate = _statements(resources, functions["ferry-generate"]["Role"]["Fn::GetAtt"][0])
    assert generate == [{"Effect": "Allow", "Action": ["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"],
                         "Resource": {"Ref": "LargeModelEndpoint"}}]  # Ref: the ARN as SageMaker reports it
    predict = _statements(resources, functions["ferry-predict"]["Role"]["Fn::GetAtt"][0])
    assert predict == [{"Effect": "Allow", "Action": "sagemaker:DescribeEndpoint",
                        "Resource": {"Ref": "LargeModelEndpoint"}}]
    assert "*" not in json.dumps(generate + predict)


def test_the_endpoint_role_reads_its_artifact_pulls_its_image_and_nothing_else(large_stack):
    resources = large_stack
    (role_id,) = {r["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0] for r in resources.values()
                  if r["Type"] == "AWS::SageMaker::Model"}
    role = resources[role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    statements = _statements(resources, role_id)
    read = next(s for s in statements if "s3:GetObject" in _actions(s))
    text, names = read["Resource"]["Fn::Sub"]
    assert text.endswith(":::${Object}") and "LargeModelData" in json.dumps(names)  # the object, not the bucket
    assert not any("s3:PutObject" in _actions(s) for s in statements)  # no data capture unless CaptureText
    pull = next(s for s in statements if "ecr:BatchGetImage" in _actions(s))
    assert pull["Resource"]["Fn::Sub"][0].endswith(":repository/${Repository}")
    for statement in statements:  # "*" only where the action takes no resource
        if statement["Resource"] == "*":
            assert _actions(statement) in ({"ecr:GetAuthorizationToken"}, {"cloudwatch:PutMetricData"})
            assert "cloudwatch:PutMetricData" not in _actions(statement) or statement["Condition"]


def test_data_capture_to_s3_follows_capture_text(large_stack, capturing_large_stack):
    """SageMaker's data capture stores raw prompts and answers: only where CaptureText keeps raw text."""
    _, config = _one(large_stack, "AWS::SageMaker::EndpointConfig")
    assert "DataCaptureConfig" not in config
    assert not {k for k, r in large_stack.items() if r["Type"] == "AWS::S3::Bucket"} - {"BatchBucket", "RegistryBucket"}
    resources = capturing_large_stack
    _, config = _one(resources, "AWS::SageMaker::EndpointConfig")
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True
    assert {option["CaptureMode"] for option in capture["CaptureOptions"]} == {"Input", "Output"}
    (bucket_id,) = _references(capture["DestinationS3Uri"])
    bucket = resources[bucket_id]
    assert bucket["Type"] == "AWS::S3::Bucket" and bucket["DeletionPolicy"] == "Retain"
    properties = bucket["Properties"]
    assert all(properties["PublicAccessBlockConfiguration"].values())
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    rules = properties["LifecycleConfiguration"]["Rules"]
    assert any(rule.get("ExpirationInDays") == {"Ref": "CaptureRetentionDays"} for rule in rules)
    assert "VersioningConfiguration" not in properties  # versions would keep expired prompts
    (policy,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::S3::BucketPolicy"
                 and r["Properties"]["Bucket"] == {"Ref": bucket_id}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    role = next(r["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0] for r in resources.values()
                if r["Type"] == "AWS::SageMaker::Model")
    writes = [s for s in _statements(resources, role) if "s3:PutObject" in _actions(s)]
    assert [_references(s["Resource"]) for s in writes] == [{bucket_id}]


def test_the_serving_image_is_a_maintained_llm_container_from_the_region_s_registry():
    template = _sam_template()
    image = template["Parameters"]["LargeModelImage"]["Default"]
    repository, tag = image.split(":")
    assert repository == "djl-inference" and "-lmi" in tag  # AWS's LMI (DJL Serving + vLLM)
    assert "tgi" not in image.lower() and "text-generation-inference" not in image  # archived in March 2026
    accounts = template["Mappings"]["DeepLearningContainers"]
    assert accounts["us-east-1"] == {"Account": "763104351884"} and accounts["af-south-1"] != accounts["us-east-1"]
    assert all(re.fullmatch(r"[0-9]{12}", entry["Account"]) for entry in accounts.values())
    for parameters in (LARGE_MODEL, {**LARGE_MODEL, "LargeModelImageAccount": "123456789012"}):
        _, model = _one(deployed(transform(parameters), parameters), "AWS::SageMaker::Model")
        text, names = model["PrimaryContainer"]["Image"]["Fn::Sub"]
        assert text == "${Account}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${LargeModelImage}"
        expected = ({"Ref": "LargeModelImageAccount"} if "LargeModelImageAccount" in parameters else
                    {"Fn::FindInMap": ["DeepLearningContainers", {"Ref": "AWS::Region"}, "Account"]})
        assert names["Account"] == expected


def test_the_large_model_s_name_is_an_api_model_name_that_fits_an_endpoint_name():
    from ferry.runtime.constants import MODEL_NAME_RE

    template = _sam_template()
    pattern = template["Parameters"]["LargeModelName"]["AllowedPattern"]
    for name in ("", "smollm2", "llama-3-8b", "a" * 32):
        assert re.fullmatch(pattern, name), name
        assert name == "" or MODEL_NAME_RE.fullmatch(name)
    for name in ("SmolLM2", "smollm2-", "-x", "a" * 33, "small_lm"):  # SageMaker ARNs are lowercase; 63 in all
        assert not re.fullmatch(pattern, name), name
    rule = template["Rules"]["LargeModelNeedsItsArtifact"]
    values = {"LargeModelName": "smollm2", "LargeModelData": ""}
    assert _condition(rule["RuleCondition"], values, {})
    assert not _condition(rule["Assertions"][0]["Assert"], values, {})
    assert _condition(rule["Assertions"][0]["Assert"], {**values, "LargeModelData": ARTIFACT}, {})
