"""Read what the local stack needs out of template.yaml: routes, functions and data resources.

moto's CloudFormation cannot deploy the transformed SAM template (STACK.md), so the tables the template
declares are created from their own properties, and the HTTP routes come from the functions' HttpApi events:
the local stack cannot drift from the template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """template.yaml is missing or does not declare what the local stack needs."""


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short tags (!Ref, !GetAtt, !Sub, ...) as plain mappings."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_uri: Path
    handler: str  # module.function
    environment: dict[str, Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # /v1/models/{model}/predict
    function: str  # logical id
    pattern: re.Pattern[str]
    authorized: bool = True  # False for routes with `Auth: {Authorizer: NONE}`

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method.upper() != self.method:
            return None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


def load_template(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    except FileNotFoundError:
        raise TemplateError(f"{path}: no such file; run from the project folder or pass --template") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path}: no Resources")
    return data


def functions(template: dict[str, Any], root: Path) -> dict[str, Function]:
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties", {})
        environment = properties.get("Environment", {}).get("Variables", {})
        found[logical_id] = Function(logical_id, root / properties["CodeUri"], properties["Handler"], environment)
    return found


def routes(template: dict[str, Any]) -> list[Route]:
    found = []
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") != "HttpApi":
                continue
            properties = event["Properties"]
            path, method = properties["Path"], properties["Method"].upper()
            pattern = re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)))
            authorized = properties.get("Auth", {}).get("Authorizer") != "NONE"
            found.append(Route(method, path, logical_id, pattern, authorized))
    return found


def lambda_authorizer(template: dict[str, Any]) -> str | None:
    """The logical id of the function behind the HTTP API's Lambda authorizer, if it has one."""
    for resource in template["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::HttpApi":
            continue
        authorizers = resource.get("Properties", {}).get("Auth", {}).get("Authorizers", {})
        for authorizer in authorizers.values():
            arn = authorizer.get("FunctionArn")
            if isinstance(arn, dict) and "Fn::GetAtt" in arn:
                return str(arn["Fn::GetAtt"][0])
    return None


def tables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """create_table arguments of every DynamoDB table, by logical id."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        properties = resource["Properties"]
        arguments: dict[str, Any] = {
            "TableName": properties.get("TableName", logical_id),
            "KeySchema": properties["KeySchema"],
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if properties.get("GlobalSecondaryIndexes"):
            arguments["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
        found[logical_id] = arguments
    return found


LOCAL_PSEUDO = {"AWS::StackName": "ferry", "AWS::AccountId": "000000000000", "AWS::Region": "us-east-1",
                "AWS::Partition": "aws"}


def substitute(value: Any) -> str:
    """A !Sub of pseudo parameters only, as the local stack names things."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return re.sub(r"\$\{([\w:]+)\}", lambda m: LOCAL_PSEUDO.get(m.group(1), m.group(1)), value["Fn::Sub"])
    return str(value)


def buckets(template: dict[str, Any]) -> dict[str, str]:
    """Bucket names by logical id (a !Sub of pseudo parameters resolved as the local stack names things)."""
    return {logical_id: substitute(resource.get("Properties", {}).get("BucketName", logical_id.lower()))
            for logical_id, resource in template["Resources"].items() if resource.get("Type") == "AWS::S3::Bucket"}


def s3_triggers(template: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Bucket logical id -> (function logical id, key prefix) of each S3 event in the template."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") == "S3":
                properties = event["Properties"]
                rules = properties.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                prefix = next((rule["Value"] for rule in rules if rule.get("Name") == "prefix"), "")
                found[properties["Bucket"]["Ref"]] = (logical_id, prefix)
    return found
