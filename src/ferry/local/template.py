"""Read what the local stack needs out of template.yaml: routes, functions, data resources, log subscriptions.

moto's CloudFormation cannot deploy the transformed SAM template (STACK.md), so the tables the template
declares are created from their own properties, and the HTTP routes come from the functions' HttpApi events:
the local stack cannot drift from the template. This module is the only one that reads the template: each
function here returns plain data (names, arguments, resolved values) that the stack acts on.

Conditions hold as CloudFormation would evaluate them with the template's parameter values: their defaults, or the
values given to `load_template(path, parameters)` (as ``sam deploy --parameter-overrides`` gives them). Every reader
below skips a resource whose ``Condition`` is false (no generate function without a ``LargeModelName``, no API-key
authorizer in jwt mode) and sees the branch each ``Fn::If`` takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferry.local.exceptions import TemplateError
from ferry.local.logs import FilterPattern

__all__ = ["Function", "Route", "SubscriptionFilter", "TemplateError", "buckets", "conditions", "exists",
           "functions", "lambda_authorizer", "load_template", "overridable", "parameter_values", "queues", "resolve",
           "routes", "s3_triggers", "schedules", "secrets", "subscription_filters", "substitute", "tables",
           "with_parameters"]


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short tags (!Ref, !GetAtt, !Sub, ...) as plain mappings."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"  # as in the template's JSON form
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
    environment: dict[str, Any]  # the Globals' variables and then its own, as declared (see resolve())
    timeout_s: float = 3.0  # Lambda's default when neither the function nor Globals sets one
    memory_mb: int = 128
    dead_letter_queue: str | None = None  # the logical id of its SQS dead-letter queue, if it has one
    log_group: str | None = None  # the logical id of the log group its LoggingConfig names, if any


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


def load_template(path: Path, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The template at `path`; with `parameters`, as a stack deployed with them as parameter overrides sees it
    (see `with_parameters`)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    except FileNotFoundError:
        raise TemplateError(f"{path}: no such file; run from the project folder or name the template",
                            field="template") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path}: no Resources")
    return with_parameters(data, parameters) if parameters else data


# -- parameters and conditions -------------------------------------------------------------------------------------

def with_parameters(template: dict[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `template` in which each parameter of `parameters` has that value as its default, checked as
    CloudFormation checks a parameter override (declared, AllowedValues, AllowedPattern, MinValue/MaxValue): what
    every reader here (conditions, `resolve`, `schedules`) takes as the parameter's value."""
    declared = template.get("Parameters", {})
    overridden = {name: dict(spec) for name, spec in declared.items()}
    for name, value in parameters.items():
        if name not in declared:
            raise TemplateError(f"is not a parameter of the template (it has {', '.join(sorted(declared))})",
                                field=name)
        overridden[name]["Default"] = _checked(name, _text(value), declared[name])
    return {**template, "Parameters": overridden}


def _checked(name: str, value: str, spec: Mapping[str, Any]) -> str:
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [_text(item) for item in allowed]:
        raise TemplateError(f"must be one of {', '.join(_text(item) for item in allowed)}, got {value!r}", field=name)
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(str(pattern), value):
        raise TemplateError(f"must match {pattern}, got {value!r}", field=name)
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise TemplateError(f"must be a number, got {value!r}", field=name) from None
        if not float(spec.get("MinValue", number)) <= number <= float(spec.get("MaxValue", number)):
            raise TemplateError(f"must be within [{spec.get('MinValue', '')}, {spec.get('MaxValue', '')}], got "
                                f"{value!r}", field=name)
    return value


def _text(value: Any) -> str:
    """A parameter or literal as CloudFormation compares it: a string (YAML's true is "true", a list is joined)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    return str(value)


def parameter_values(template: dict[str, Any]) -> dict[str, str]:
    """Every parameter that has a value (its default, or the value `with_parameters` gave it), as a string."""
    return {name: _text(spec["Default"]) for name, spec in template.get("Parameters", {}).items()
            if isinstance(spec, dict) and "Default" in spec}


def conditions(template: dict[str, Any]) -> dict[str, bool]:
    """The truth of each of the template's Conditions with its parameter values (Fn::Equals, Fn::Not, Fn::And,
    Fn::Or and Condition, over literals, parameters and pseudo parameters)."""
    evaluator = _Conditions(template.get("Conditions", {}), parameter_values(template))
    return {name: evaluator.condition(name, ()) for name in evaluator.definitions}


class _Conditions:
    """Evaluates conditions as CloudFormation does, each once (a condition may name another: `Condition`)."""

    def __init__(self, definitions: Mapping[str, Any], values: Mapping[str, str]):
        self.definitions, self.values = definitions, values
        self.truth: dict[str, bool] = {}

    def condition(self, name: str, chain: tuple[str, ...]) -> bool:
        if name not in self.truth:
            if name not in self.definitions:
                raise TemplateError(f"condition {name} is not among the template's Conditions")
            if name in chain:
                raise TemplateError(f"condition {name} depends on itself ({' -> '.join((*chain, name))})")
            self.truth[name] = self.evaluate(self.definitions[name], (*chain, name))
        return self.truth[name]

    def evaluate(self, expression: Any, chain: tuple[str, ...]) -> bool:
        if not (isinstance(expression, dict) and len(expression) == 1):
            raise TemplateError(f"condition {chain[-1]}: {expression!r} is no condition function")
        (function, argument), = expression.items()
        if function == "Condition":
            return self.condition(str(argument), chain)
        if function == "Fn::Equals":
            left, right = argument
            return self.operand(left) == self.operand(right)
        if function == "Fn::Not":
            return not self.evaluate(argument[0], chain)
        if function in ("Fn::And", "Fn::Or"):
            results = [self.evaluate(item, chain) for item in argument]  # each one evaluated, as CloudFormation does
            return all(results) if function == "Fn::And" else any(results)
        raise TemplateError(f"condition {chain[-1]}: {function} is not a condition function")

    def operand(self, value: Any) -> str:
        if isinstance(value, dict) and set(value) == {"Ref"}:
            name = value["Ref"]
            if name in self.values:
                return self.values[name]
            if name in LOCAL_PSEUDO:
                return LOCAL_PSEUDO[name]
            raise TemplateError(f"condition operand !Ref {name}: no parameter with a value, no pseudo parameter")
        if isinstance(value, dict | list):
            raise TemplateError(f"cannot evaluate the condition operand {value!r} locally")
        return _text(value)


def exists(template: dict[str, Any], logical_id: str, truth: Mapping[str, bool] | None = None) -> bool:
    """Whether the resource `logical_id` is created with the template's parameter values (its Condition holds)."""
    resource = template["Resources"][logical_id]
    name = resource.get("Condition") if isinstance(resource, dict) else None
    if name is None:
        return True
    truth = conditions(template) if truth is None else truth
    if name not in truth:
        raise TemplateError(f"resource {logical_id}: its Condition {name} is not among the template's Conditions")
    return truth[name]


_NO_VALUE = object()


def _chosen(value: Any, truth: Mapping[str, bool]) -> Any:
    """`value` with each Fn::If replaced by the branch its condition takes, and !Ref AWS::NoValue removed."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, then, otherwise = value["Fn::If"]
            if name not in truth:
                raise TemplateError(f"Fn::If names {name}, which is not among the template's Conditions")
            return _chosen(then if truth[name] else otherwise, truth)
        if value == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        kept = {key: _chosen(item, truth) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item is not _NO_VALUE}
    if isinstance(value, list):
        return [item for item in (_chosen(item, truth) for item in value) if item is not _NO_VALUE]
    return value


def _resources(template: dict[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(logical id, resource) of each resource of type `kind` that exists, with its Fn::If branches chosen."""
    truth = conditions(template)
    for logical_id, resource in template["Resources"].items():
        if isinstance(resource, dict) and resource.get("Type") == kind and exists(template, logical_id, truth):
            yield logical_id, _chosen(resource, truth)


# -- what the local stack acts on ----------------------------------------------------------------------------------

def functions(template: dict[str, Any], root: Path) -> dict[str, Function]:
    """The template's functions by logical id, with what the Globals give them (variables, timeout, memory,
    dead-letter queue) already applied."""
    shared = _chosen(template.get("Globals", {}).get("Function", {}), conditions(template))
    shared_variables = shared.get("Environment", {}).get("Variables", {})
    found = {}
    for logical_id, resource in _resources(template, "AWS::Serverless::Function"):
        properties = resource.get("Properties", {})
        environment = {**shared_variables, **properties.get("Environment", {}).get("Variables", {})}
        if "CodeUri" not in properties or "Handler" not in properties:
            raise TemplateError(f"function {logical_id}: no CodeUri or no Handler")
        found[logical_id] = Function(
            logical_id, root / properties["CodeUri"], properties["Handler"], environment,
            timeout_s=float(properties.get("Timeout", shared.get("Timeout", 3))),
            memory_mb=int(properties.get("MemorySize", shared.get("MemorySize", 128))),
            dead_letter_queue=_dead_letter_queue(properties.get("DeadLetterQueue") or shared.get("DeadLetterQueue")),
            log_group=_ref(properties.get("LoggingConfig", {}).get("LogGroup")),
        )
    return found


def _ref(value: Any) -> str | None:
    return str(value["Ref"]) if isinstance(value, dict) and "Ref" in value else None


def _dead_letter_queue(config: Any) -> str | None:
    """The SQS queue of a ``DeadLetterQueue: {Type: SQS, TargetArn: !GetAtt Queue.Arn}``; None otherwise."""
    if not isinstance(config, dict) or config.get("Type") != "SQS":
        return None
    target = config.get("TargetArn")
    return str(target["Fn::GetAtt"][0]) if isinstance(target, dict) and "Fn::GetAtt" in target else None


_DYNAMIC_SECRET = re.compile(r"\{\{resolve:secretsmanager:(.+?):SecretString\}\}")


def resolve(template: dict[str, Any], value: Any, names: Mapping[str, str],
            secret: Callable[[str], str] | None = None) -> str:
    """A template value as the local stack sees it: refs to resources become their local `names` (a table's name,
    a queue's URL, a secret's ARN), parameters their values (defaults, or as `with_parameters` set them), pseudo
    parameters the local stack's, a ``{{resolve:secretsmanager:ID:SecretString}}`` dynamic reference
    `secret(ID)`, and an Fn::If the branch its condition takes (!Ref AWS::NoValue: "")."""
    parameters = template.get("Parameters", {})

    def name_of(ref: str) -> str:
        default = parameters.get(ref, {}).get("Default")
        return names.get(ref) or (_text(default) if default is not None else LOCAL_PSEUDO.get(ref, ""))

    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        chosen = _chosen(value, conditions(template))
        return "" if chosen is _NO_VALUE else resolve(template, chosen, names, secret)
    if isinstance(value, dict) and "Ref" in value:
        return name_of(value["Ref"])
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        text = re.sub(r"\$\{([\w:]+)\}", lambda match: name_of(match.group(1)), value["Fn::Sub"])
        if secret is not None:
            text = _DYNAMIC_SECRET.sub(lambda match: secret(match.group(1)), text)
        return text
    return str(value)


def overridable(template: dict[str, Any], function: Function) -> set[str]:
    """The variables of `function` that the template fills from one of its parameters (``!Ref Parameter``): the
    ones a deploy sets with ``--parameter-overrides``, and so the ones a local run may set too."""
    parameters = template.get("Parameters", {})
    return {name for name, value in function.environment.items() if _ref(value) in parameters}


def routes(template: dict[str, Any]) -> list[Route]:
    """The HTTP API's routes: each AWS::ApiGatewayV2::Route, its integration's function, and whether it is public."""
    resources = template["Resources"]
    found = []
    for _, resource in _resources(template, "AWS::ApiGatewayV2::Route"):
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
    for _, resource in _resources(template, "AWS::ApiGatewayV2::Authorizer"):
        if resource.get("Properties", {}).get("AuthorizerType") == "REQUEST":
            return _function_of(resource["Properties"]["AuthorizerUri"])
    return None


def tables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """create_table arguments of every DynamoDB table, by logical id."""
    found = {}
    for logical_id, resource in _resources(template, "AWS::DynamoDB::Table"):
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
            for logical_id, resource in _resources(template, "AWS::S3::Bucket")}


def queues(template: dict[str, Any]) -> list[str]:
    """Logical ids of the SQS queues (the local stack names each queue by its logical id, as it does tables)."""
    return [logical_id for logical_id, _ in _resources(template, "AWS::SQS::Queue")]


@dataclass(frozen=True)
class SubscriptionFilter:
    """A log subscription filter as it applies to one function: the lines of `function`'s log (the log group its
    LoggingConfig names) that match `pattern` go to the function `destination`."""

    function: str
    pattern: FilterPattern
    destination: str


def subscription_filters(template: dict[str, Any]) -> list[SubscriptionFilter]:
    """Every AWS::Logs::SubscriptionFilter, once per function that logs to its log group."""
    logging_to: dict[str, list[str]] = {}
    for logical_id, resource in _resources(template, "AWS::Serverless::Function"):
        group = _ref(resource.get("Properties", {}).get("LoggingConfig", {}).get("LogGroup"))
        if group is not None:
            logging_to.setdefault(group, []).append(logical_id)
    found = []
    for name, resource in _resources(template, "AWS::Logs::SubscriptionFilter"):
        properties = resource.get("Properties", {})
        destination = properties.get("DestinationArn", {})
        if not (isinstance(destination, dict) and "Fn::GetAtt" in destination):
            raise TemplateError(f"subscription filter {name}: its DestinationArn is no !GetAtt Function.Arn")
        try:
            pattern = FilterPattern.parse(properties.get("FilterPattern", ""))
        except ValueError as exc:
            raise TemplateError(f"subscription filter {name}: {exc}") from None
        for function in logging_to.get(_ref(properties.get("LogGroupName")) or "", []):
            found.append(SubscriptionFilter(function, pattern, str(destination["Fn::GetAtt"][0])))
    return found


def secrets(template: dict[str, Any]) -> list[str]:
    """Logical ids of the Secrets Manager secrets the template generates."""
    return [logical_id for logical_id, _ in _resources(template, "AWS::SecretsManager::Secret")]


def s3_triggers(template: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Bucket logical id -> (function logical id, key prefix) of each S3 event on it (a bucket may notify several
    functions, each under its own prefix: input/ the batch function, labels/ the feedback function)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for logical_id, resource in _resources(template, "AWS::Serverless::Function"):
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") == "S3":
                properties = event["Properties"]
                rules = properties.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                prefix = next((rule["Value"] for rule in rules if rule.get("Name") == "prefix"), "")
                found.setdefault(properties["Bucket"]["Ref"], []).append((logical_id, prefix))
    return found


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def schedules(template: dict[str, Any]) -> dict[str, float]:
    """Function logical id -> seconds between runs, of each Schedule event whose expression is ``rate(...)`` (a
    parameter in it at its default): moto never fires a schedule, so the local stack runs them itself."""
    found: dict[str, float] = {}
    for logical_id, resource in _resources(template, "AWS::Serverless::Function"):
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") != "Schedule":
                continue
            expression = event.get("Properties", {}).get("Schedule")
            if isinstance(expression, dict) and isinstance(expression.get("Fn::Sub"), str):
                expression = re.sub(r"\$\{(\w+)\}", lambda m: str(_parameter_default(template, m.group(1))),
                                    expression["Fn::Sub"])
            match = _RATE.match(str(expression))
            if not match:
                raise TemplateError(f"{logical_id}: schedule {expression!r} is not rate(N minutes|hours|days)")
            found[logical_id] = int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]
    return found


def _parameter_default(template: dict[str, Any], name: str) -> Any:
    parameter = template.get("Parameters", {}).get(name)
    if parameter is None or "Default" not in parameter:
        raise TemplateError(f"parameter {name} has no default for the local stack")
    return parameter["Default"]


def endpoint_name(template: dict[str, Any]) -> str:
    """The name of the template's SageMaker endpoint (its ``EndpointName``, resolved), which must exist under the
    template's parameters: what the functions' variables name, and what the local endpoint server answers to."""
    for logical_id, resource in _resources(template, "AWS::SageMaker::Endpoint"):
        name = resource.get("Properties", {}).get("EndpointName")
        if name is None:
            raise TemplateError(f"{logical_id}: no EndpointName (the functions could not name the endpoint)")
        return resolve(template, name, {})
    raise TemplateError("no AWS::SageMaker::Endpoint exists with these parameters (LargeModelName, LargeModelData)")
