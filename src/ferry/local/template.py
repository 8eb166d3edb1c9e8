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
    timeout_s: float = 3.0  # Lambda's default when neither the function nor Globals sets one
    memory_mb: int = 128


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
    shared = template.get("Globals", {}).get("Function", {})
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties", {})
        environment = properties.get("Environment", {}).get("Variables", {})
        found[logical_id] = Function(
            logical_id, root / properties["CodeUri"], properties["Handler"], environment,
            timeout_s=float(properties.get("Timeout", shared.get("Timeout", 3))),
            memory_mb=int(properties.get("MemorySize", shared.get("MemorySize", 128))),
        )
    return found


def routes(template: dict[str, Any]) -> list[Route]:
    """The HTTP API's routes: each AWS::ApiGatewayV2::Route, its integration's function, and whether it is public."""
    resources = template["Resources"]
    found = []
    for resource in resources.values():
        if resource.get("Type") != "AWS::ApiGatewayV2::Route":
            continue
        properties = resource["Properties"]
        method, _, path = str(properties["RouteKey"]).partition(" ")
        target = properties.get("Target")
        integration = _sub_names(target)[0] if _sub_names(target) else None
        if integration is None or integration not in resources:
            raise TemplateError(f"route {properties['RouteKey']!r}: its Target names no integration of the template")
        function = _function_of(resources[integration]["Properties"].get("IntegrationUri"))
        pattern = re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)))
        authorized = properties.get("AuthorizationType", "NONE") != "NONE"
        found.append(Route(method.upper(), path, function, pattern, authorized))
    return found


def _sub_names(value: Any) -> list[str]:
    """The ${Name} (or ${Name.Attribute}) references of a !Sub string, as logical ids."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
        return [name.split(".")[0] for name in re.findall(r"\$\{([\w.:]+)\}", text) if "::" not in name]
    return []


def _function_of(uri: Any) -> str:
    """The function logical id of an integration or authorizer URI: !Ref Fn.Alias, !GetAtt Fn.Arn or a !Sub."""
    if isinstance(uri, dict) and "Ref" in uri:
        return str(uri["Ref"]).split(".")[0]
    if isinstance(uri, dict) and "Fn::GetAtt" in uri:
        return str(uri["Fn::GetAtt"][0])
    names = _sub_names(uri)
    if names:
        return names[0]
    raise TemplateError(f"cannot tell which function {uri!r} invokes")


def lambda_authorizer(template: dict[str, Any]) -> str | None:
    """The logical id of the function behind the HTTP API's Lambda (REQUEST) authorizer, if it has one."""
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::ApiGatewayV2::Authorizer" and \
                resource.get("Properties", {}).get("AuthorizerType") == "REQUEST":
            return _function_of(resource["Properties"]["AuthorizerUri"])
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
                "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackId": "arn:aws:cloudformation:us-east-1:000000000000:stack/ferry/"
                                "10ca1000-0000-4000-8000-10ca15ac0000"}


def substitute(value: Any) -> Any:
    """A value built from pseudo parameters only (!Sub, !Join, !Select, !Split, !Ref AWS::...), as the local stack
    names things; anything else is returned as it is."""
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), = value.items()
        if function == "Ref" and argument in LOCAL_PSEUDO:
            return LOCAL_PSEUDO[argument]
        if function == "Fn::Sub" and isinstance(argument, str):
            return re.sub(r"\$\{([\w:]+)\}", lambda m: LOCAL_PSEUDO.get(m.group(1), m.group(0)), argument)
        if function == "Fn::Join":
            return str(argument[0]).join(str(substitute(part)) for part in substitute(argument[1]))
        if function == "Fn::Select":
            return substitute(argument[1])[int(argument[0])]
        if function == "Fn::Split":
            return str(substitute(argument[1])).split(argument[0])
    if isinstance(value, list):
        return [substitute(item) for item in value]
    return value


def buckets(template: dict[str, Any]) -> dict[str, str]:
    """Bucket names by logical id (a !Sub of pseudo parameters resolved as the local stack names things)."""
    return {logical_id: str(substitute(resource.get("Properties", {}).get("BucketName", logical_id.lower())))
            for logical_id, resource in template["Resources"].items() if resource.get("Type") == "AWS::S3::Bucket"}


def secrets(template: dict[str, Any]) -> list[str]:
    """Logical ids of the Secrets Manager secrets the template generates."""
    return [logical_id for logical_id, resource in template["Resources"].items()
            if resource.get("Type") == "AWS::SecretsManager::Secret"]


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
