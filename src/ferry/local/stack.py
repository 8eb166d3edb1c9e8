"""The embedded AWS and the functions of template.yaml, started together and stopped together."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferry.local import template as tpl
from ferry.local.functions import LocalFunction
from ferry.local.logs import FilterPattern, LogDelivery, LogRouter, Subscription
from ferry.runtime.constants import ENV_BATCH_STATE_MACHINE, ENV_MODELS_DIR
from ferry.runtime.manifest import layer_models_dirs

REGION = "us-east-1"


def s3_event(bucket: str, key: str, etag: str, size: int) -> dict[str, Any]:
    """The S3 ObjectCreated notification Lambda receives."""
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION, "eventName": "ObjectCreated:Put",
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag.strip('"')}},
    }]}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


_DYNAMIC_SECRET = re.compile(r"\{\{resolve:secretsmanager:(.+?):SecretString\}\}")


def _resolve(value: Any, names: dict[str, str], parameters: dict[str, Any],
             secret: Callable[[str], str] | None = None) -> str:
    """A template value as the local stack sees it: refs to resources become their local names (a secret's, its
    ARN), parameters their defaults, and a `{{resolve:secretsmanager:...}}` dynamic reference the secret's value."""
    def name_of(ref: str) -> str:
        default = parameters.get(ref, {}).get("Default")
        return names.get(ref) or (str(default) if default is not None else tpl.LOCAL_PSEUDO.get(ref, ""))

    if isinstance(value, dict) and "Ref" in value:
        return name_of(value["Ref"])
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        text = re.sub(r"\$\{([\w:]+)\}", lambda match: name_of(match.group(1)), value["Fn::Sub"])
        if secret is not None:
            text = _DYNAMIC_SECRET.sub(lambda match: secret(match.group(1)), text)
        return text
    return str(value)


class LocalStack:
    """moto server + the template's tables + its functions, loaded once and invoked in this process."""

    def __init__(self, root: Path, layers_dir: Path, template_path: Path | None = None):
        self.root = root
        self.layers_dir = layers_dir
        self.template = tpl.load_template(template_path or root / "template.yaml")
        self.routes = tpl.routes(self.template)
        self.authorizer = tpl.lambda_authorizer(self.template)
        self.functions: dict[str, LocalFunction] = {}
        self.table_names: dict[str, str] = {}  # logical id -> name (a queue's URL, a secret's ARN: what !Ref gives)
        self.queue_urls: dict[str, str] = {}
        self._moto: Any = None
        self.logs: LogDelivery | None = None
        self.router: LogRouter | None = None
        self.endpoint = ""

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log: one line per AWS call
        port = free_port()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._moto.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        os.environ.update({
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "ferry-local", "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_DEV": os.environ.get("POWERTOOLS_DEV", "false"),
        })
        self._create_tables()
        self.logs = LogDelivery([], self.client("cloudwatch").put_metric_data)
        self.router = LogRouter(self.logs.put)
        self.router.install()  # before the functions import: Powertools' Logger keeps the stream it finds
        self._load_functions()
        self.logs.subscriptions.extend(self._subscriptions())
        self.logs.start()
        return self

    @property
    def delivered(self) -> int:
        """Log events delivered to subscription filters' destinations so far."""
        return self.logs.delivered if self.logs else 0

    @property
    def dead_lettered(self) -> int:
        """Log events whose delivery failed after the retries and went to the destination's dead-letter queue."""
        return self.logs.dead_lettered if self.logs else 0

    def stop(self) -> None:
        if self.logs is not None:
            self.logs.stop()
        if self.router is not None:
            self.router.uninstall()
        if self._moto is not None:
            # moto keeps its state per process, not per server: without a reset the next stack of this process
            # would find these tables, buckets and secrets already there
            import urllib.request

            urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"),
                                   timeout=10).close()
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- resources --------------------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint)

    def _create_tables(self) -> None:
        dynamodb = self.client("dynamodb")
        for logical_id, arguments in tpl.tables(self.template).items():
            dynamodb.create_table(**arguments)
            self.table_names[logical_id] = arguments["TableName"]
        s3 = self.client("s3")
        for logical_id, name in tpl.buckets(self.template).items():
            s3.create_bucket(Bucket=name)
            self.table_names[logical_id] = name
        secretsmanager = self.client("secretsmanager")
        for logical_id in tpl.secrets(self.template):  # generated per local stack, as CloudFormation does per stack
            created = secretsmanager.create_secret(Name=logical_id, SecretString=secrets.token_urlsafe(36))
            self.table_names[logical_id] = created["ARN"]
        sqs = self.client("sqs")
        for logical_id, resource in self.template["Resources"].items():
            if resource.get("Type") == "AWS::SQS::Queue":  # named by logical id, as tables are
                self.queue_urls[logical_id] = sqs.create_queue(QueueName=logical_id)["QueueUrl"]
                self.table_names[logical_id] = self.queue_urls[logical_id]

    def store_api_key(self, key: str, name: str = "local") -> str:
        """Store a key (hashed) in the table the authorizer reads, as `ferry keys create` does in AWS."""
        import boto3

        from ferry.runtime.keys import store_key

        if self.authorizer is None:
            raise ValueError("the template has no Lambda authorizer")
        table_name = self.functions[self.authorizer].variables["FERRY_KEYS_TABLE"]
        table = boto3.resource("dynamodb", region_name=REGION, endpoint_url=self.endpoint).Table(table_name)
        return store_key(table, key, name)

    def drop_file(self, bucket_id: str, key: str, path: Path) -> Any:
        """Put a file into a template bucket and deliver the S3 event to the function it triggers."""
        function, prefix = tpl.s3_triggers(self.template)[bucket_id]
        if not key.startswith(prefix):
            raise ValueError(f"{key}: the template triggers {function} only under {prefix}")
        s3 = self.client("s3")
        bucket = self.table_names[bucket_id]
        s3.upload_file(str(path), bucket, key)
        head = s3.head_object(Bucket=bucket, Key=key)
        return self.invoke(function, s3_event(bucket, key, head["ETag"], head["ContentLength"]))

    def _load_functions(self) -> None:
        parameters = self.template.get("Parameters", {})
        shared = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        models = os.pathsep.join(str(path) for path in layer_models_dirs(self.layers_dir))
        for logical_id, function in tpl.functions(self.template, self.root).items():
            declared = {**shared, **function.environment}
            variables = {key: _resolve(value, self.table_names, parameters, self._secret_value)
                         for key, value in declared.items()}
            # a variable the template fills from a parameter takes this process's value when it has one, as
            # `sam local --parameter-overrides` would (FERRY_BATCH_CHUNK_BYTES=... ferry batch big.jsonl)
            variables.update({key: os.environ[key] for key, value in declared.items()
                              if isinstance(value, dict) and value.get("Ref") in parameters and key in os.environ})
            variables[ENV_MODELS_DIR] = models
            # moto's Step Functions cannot run a Lambda task: locally the batch function runs a large file's
            # chunks itself, in order, where in AWS it starts the template's state machine
            variables.pop(ENV_BATCH_STATE_MACHINE, None)
            variables.setdefault("POWERTOOLS_SERVICE_NAME", logical_id)
            self.functions[logical_id] = LocalFunction(function, variables, router=self.router)

    def _secret_value(self, secret_id: str) -> str:
        return str(self.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])

    def _subscriptions(self) -> list[Subscription]:
        """The template's log subscription filters: a function's log group (its LoggingConfig), a pattern, a function
        to invoke."""
        resources = self.template["Resources"]
        subscriptions = []
        for resource in resources.values():
            if resource.get("Type") != "AWS::Logs::SubscriptionFilter":
                continue
            properties = resource["Properties"]
            group = properties["LogGroupName"].get("Ref") if isinstance(properties["LogGroupName"], dict) else None
            destination = properties["DestinationArn"].get("Fn::GetAtt", [None])[0]
            try:
                pattern = FilterPattern.parse(properties.get("FilterPattern", ""))
            except ValueError as exc:
                raise tpl.TemplateError(str(exc)) from None
            for logical_id, candidate in resources.items():
                logging_config = candidate.get("Properties", {}).get("LoggingConfig", {})
                if candidate.get("Type") == "AWS::Serverless::Function" and \
                        logging_config.get("LogGroup") == {"Ref": group}:
                    subscriptions.append(Subscription(self.functions[logical_id].log_group, pattern,
                                                      self.functions[destination].invoke,
                                                      self._dead_letter_queue(destination)))
        return subscriptions

    def _dead_letter_queue(self, function: str) -> Callable[[dict[str, Any], Exception], None] | None:
        """What Lambda does with an async event that still fails after its retries: the function's
        ``DeadLetterQueue`` (an SQS queue of the template) gets the event as the message body, with the error in
        the ``ErrorMessage`` attribute; None when the function has no dead-letter queue."""
        config = self.template["Resources"][function].get("Properties", {}).get("DeadLetterQueue") or \
            self.template.get("Globals", {}).get("Function", {}).get("DeadLetterQueue") or {}
        target = config.get("TargetArn")
        queue_id = target.get("Fn::GetAtt", [None])[0] if isinstance(target, dict) else None
        if config.get("Type") != "SQS" or queue_id not in self.queue_urls:
            return None
        sqs, url = self.client("sqs"), self.queue_urls[queue_id]

        def send(event: dict[str, Any], error: Exception) -> None:
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event), MessageAttributes={
                "ErrorMessage": {"DataType": "String", "StringValue": f"{error.__class__.__name__}: {error}"[:1000]},
                "ErrorCode": {"DataType": "Number", "StringValue": "200"}})
        return send

    # -- invocation -------------------------------------------------------------------------------------------

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        return self.functions[logical_id].invoke(event)
