"""The embedded AWS and the functions of template.yaml, started together and stopped together.

The stack changes nothing of the process that runs it: no environment variable, no ``sys.stdout``. Its moto
server runs in a process of its own (:mod:`ferry.local.aws`), which this process talks to with explicit endpoint
and credentials, and each function runs in processes of its own (:mod:`ferry.local.functions`) with exactly the
environment Lambda would give it. Every one of those processes ends with the stack, or with this process.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ferry.local import template as tpl
from ferry.local.aws import EmbeddedAws
from ferry.local.context import REGION, log_group_of
from ferry.local.exceptions import FunctionError, LayersNotFoundError, StartCancelledError
from ferry.local.functions import INIT_TIMEOUT_S, LocalFunction
from ferry.local.logs import LogDelivery, Subscription
from ferry.local.schedule import Schedule
from ferry.runtime.constants import ENV_BATCH_STATE_MACHINE, ENV_KEYS_TABLE, ENV_MODELS_DIR
from ferry.runtime.manifest import layer_models_dirs

__all__ = ["REGION", "LocalStack", "echo_to_stderr", "free_port", "s3_event"]

CREDENTIALS = {"aws_access_key_id": "ferry-local", "aws_secret_access_key": "local"}  # moto takes any
# What a function gets of this process's environment besides its own variables: what a process needs to run
# (Lambda's sandbox has its own), never AWS_*, which Lambda sets itself
PASSED = ("PATH", "HOME", "LANG", "LANGUAGE", "LD_LIBRARY_PATH", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "SYSTEMROOT")
PASSED_PREFIXES = ("LC_", "HF_")
# Variables of this process that override a function's (see LocalStack): the project's settings, and Powertools'
OVERRIDE_PREFIXES = ("FERRY_", "POWERTOOLS_")
SERVICES = ("cloudwatch", "dynamodb", "events", "s3", "secretsmanager", "sqs")  # what the stack uses, and EMF
LOG_DRAIN_S = 5.0  # at stop, the longest wait for queued log lines to reach their subscriptions


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


def echo_to_stderr(line: str) -> None:
    """A function's log line on this process's stderr, as ``sam local`` shows them (stdout stays the caller's)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _python_path(environ: Mapping[str, str]) -> str:
    """PYTHONPATH for the stack's processes: this ``ferry`` package first, so that they run the same code."""
    import ferry

    source = str(Path(ferry.__file__).resolve().parent.parent)
    return os.pathsep.join([source, *([environ["PYTHONPATH"]] if environ.get("PYTHONPATH") else [])])


class LocalStack:
    """moto server + the template's tables, buckets, secrets and queues + its functions, each in its own processes.

    A function's environment is what Lambda gives it: its variables from the template (resources named as the
    local stack names them, parameters at their defaults), Lambda's own (``AWS_REGION``,
    ``AWS_LAMBDA_FUNCTION_NAME``...) with the moto server as ``AWS_ENDPOINT_URL``, and what a process needs
    (``PATH``, ``HOME``, the locale). `environ` (this process's environment unless given) may override two kinds
    of variables, as ``sam local --parameter-overrides`` and ``--env-vars`` would: a variable the template fills
    from a parameter (``FERRY_BATCH_CHUNK_BYTES=... ferry batch big.jsonl``), and a ``FERRY_*`` or
    ``POWERTOOLS_*`` variable the template does not set (``FERRY_MAX_INPUTS=3 ferry serve``).

    `concurrency` is the number of processes of each function (invocations beyond it wait); `echo` gets every
    log line of every function (None: no echo).
    """

    def __init__(self, root: Path, layers_dir: Path, template_path: Path | None = None, *,
                 environ: Mapping[str, str] | None = None, concurrency: int = 1,
                 echo: Callable[[str], None] | None = echo_to_stderr):
        self.root = root
        self.layers_dir = layers_dir
        self.template = tpl.load_template(template_path or root / "template.yaml")
        self.routes = tpl.routes(self.template)
        self.authorizer = tpl.lambda_authorizer(self.template)
        self.environ = environ
        self.concurrency = concurrency
        self.echo = echo
        self.functions: dict[str, LocalFunction] = {}
        self.table_names: dict[str, str] = {}  # logical id -> name (a queue's URL, a secret's ARN: what !Ref gives)
        self.queue_urls: dict[str, str] = {}
        self.logs: LogDelivery | None = None
        self.endpoint = ""
        self._secret_values: dict[str, str] = {}  # by ARN
        self._aws: EmbeddedAws | None = None
        self._clients: dict[str, Any] = {}
        self.schedules: list[Schedule] = []

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self, cancelled: Callable[[], bool] | None = None) -> LocalStack:
        """Start the embedded AWS, create the template's resources and start every function; returns once each
        function's init has finished (they run at the same time), or raises FunctionInitError with the first
        init that failed. `cancelled` is asked while it waits: when it says True, StartCancelledError. Whatever
        way it fails, what had started is stopped."""
        try:
            self._start(cancelled or (lambda: False))
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, cancelled: Callable[[], bool]) -> None:
        if not self.layers_dir.is_dir():
            raise LayersNotFoundError(f"{self.layers_dir}: no such folder of model layers; build models first "
                                      "(make up)")
        environ = os.environ if self.environ is None else self.environ
        self._aws = EmbeddedAws({**environ, "PYTHONPATH": _python_path(environ)}, SERVICES).start()
        self.endpoint = self._aws.endpoint
        for service in SERVICES:  # boto3 loads each service's model while moto imports
            self.client(service)
        self.logs = LogDelivery([], self.client("cloudwatch").put_metric_data)
        self._aws.wait_ready(cancelled=cancelled)
        self._create_resources()
        self._check(cancelled)
        models = os.pathsep.join(str(path.resolve()) for path in layer_models_dirs(self.layers_dir))
        for logical_id, function in tpl.functions(self.template, self.root).items():
            variables = self._variables(function, environ, models)
            environment = self._environment(function, variables, environ)
            self.functions[logical_id] = LocalFunction(function, variables, environment, self.logs.put, self.echo,
                                                       self.concurrency)
            self.functions[logical_id].start()  # its workers import the handler while the next ones start
        self.logs.subscriptions.extend(
            Subscription(self.functions[found.function].log_group, found.pattern,
                         self.functions[found.destination].invoke, self._dead_letter_queue(found.destination))
            for found in tpl.subscription_filters(self.template))
        self.logs.start()
        deadline = time.monotonic() + INIT_TIMEOUT_S
        for started in self.functions.values():
            started.wait_ready(max(0.0, deadline - time.monotonic()), cancelled)

    @staticmethod
    def _check(cancelled: Callable[[], bool]) -> None:
        if cancelled():
            raise StartCancelledError("the local stack was stopped while it was starting")

    def stop(self) -> None:
        """Stop everything that started (safe to call twice, or after a failed start): log delivery first (what is
        queued still reaches its subscriptions, for a few seconds at most; what is left then is counted lost), then
        the functions, then moto (and with its process, everything the stack stored)."""
        for schedule in self.schedules:
            schedule.stop()
        if self.logs is not None:
            self.logs.stop(timeout=LOG_DRAIN_S)
            self.logs.abandon()  # a delivery still running fails as its destination stops: nothing to retry
        for function in self.functions.values():
            function.begin_stop()
        if self.logs is not None:
            self.logs.join(timeout=2)
        for function in self.functions.values():
            function.finish_stop()
        if self._aws is not None:
            self._aws.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def delivered(self) -> int:
        """Log events delivered to subscription filters' destinations so far."""
        return self.logs.delivered if self.logs else 0

    @property
    def dead_lettered(self) -> int:
        """Log events whose delivery failed after the retries and went to the destination's dead-letter queue."""
        return self.logs.dead_lettered if self.logs else 0

    # -- resources --------------------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client of the embedded AWS, one per service (explicit endpoint and credentials: nothing read
        from the environment or the AWS configuration files)."""
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(service, region_name=REGION, endpoint_url=self.endpoint,
                                                  **CREDENTIALS)
        return self._clients[service]

    def resource(self, service: str) -> Any:
        import boto3

        return boto3.resource(service, region_name=REGION, endpoint_url=self.endpoint, **CREDENTIALS)

    def _create_resources(self) -> None:
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
            value = secrets.token_urlsafe(36)
            arn = secretsmanager.create_secret(Name=logical_id, SecretString=value)["ARN"]
            self.table_names[logical_id], self._secret_values[arn] = arn, value
        sqs = self.client("sqs")
        for logical_id in tpl.queues(self.template):  # named by logical id, as tables are
            self.queue_urls[logical_id] = sqs.create_queue(QueueName=logical_id)["QueueUrl"]
            self.table_names[logical_id] = self.queue_urls[logical_id]

    def _secret_value(self, secret_id: str) -> str:
        if secret_id in self._secret_values:
            return self._secret_values[secret_id]
        return str(self.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])

    def store_api_key(self, key: str, name: str = "local", scopes: tuple[str, ...] | None = None) -> str:
        """Store a key (hashed) in the table the authorizer reads, as `ferry keys create` does in AWS; `scopes`
        default to every scope (the local user is the stack's owner: predictions and feedback)."""
        from ferry.runtime.keys import SCOPES, store_key

        if self.authorizer is None:
            raise ValueError("the template has no Lambda authorizer")
        table_name = self.functions[self.authorizer].variables[ENV_KEYS_TABLE]
        return store_key(self.resource("dynamodb").Table(table_name), key, name, scopes=scopes or SCOPES)

    def drop_file(self, bucket_id: str, key: str, path: Path) -> Any:
        """Put a file into a template bucket and deliver the S3 event to the function it triggers."""
        triggers = tpl.s3_triggers(self.template).get(bucket_id, [])
        function = next((name for name, prefix in triggers if key.startswith(prefix)), None)
        if function is None:
            under = ", ".join(f"{prefix} ({name})" for name, prefix in triggers) or "no prefix"
            raise ValueError(f"{key}: the template triggers functions of {bucket_id} only under {under}")
        s3 = self.client("s3")
        bucket = self.table_names[bucket_id]
        s3.upload_file(str(path), bucket, key)
        head = s3.head_object(Bucket=bucket, Key=key)
        return self.invoke(function, s3_event(bucket, key, head["ETag"], head["ContentLength"]))

    def _dead_letter_queue(self, function: str) -> Callable[[dict[str, Any], Exception], None] | None:
        """What Lambda does with an async event that still fails after its retries: the function's
        ``DeadLetterQueue`` (an SQS queue of the template) gets the event as the message body, with the error in
        the ``ErrorMessage`` attribute; None when the function has no dead-letter queue."""
        queue_id = self.functions[function].function.dead_letter_queue
        if queue_id not in self.queue_urls:
            return None
        sqs, url = self.client("sqs"), self.queue_urls[queue_id]

        def send(event: dict[str, Any], error: Exception) -> None:
            message = (f"{error.error_type}: {error.error_message}" if isinstance(error, FunctionError)
                       else f"{error.__class__.__name__}: {error}")
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event), MessageAttributes={
                "ErrorMessage": {"DataType": "String", "StringValue": message[:1000]},
                "ErrorCode": {"DataType": "Number", "StringValue": "200"}})
        return send

    # -- functions --------------------------------------------------------------------------------------------

    def _variables(self, function: tpl.Function, environ: Mapping[str, str], models: str) -> dict[str, str]:
        """The function's environment variables: the template's, with this stack's names and values."""
        variables = {name: tpl.resolve(self.template, value, self.table_names, self._secret_value)
                     for name, value in function.environment.items()}
        variables.update({name: environ[name] for name in tpl.overridable(self.template, function) if name in environ})
        variables.update({name: value for name, value in environ.items()
                          if name.startswith(OVERRIDE_PREFIXES) and name not in function.environment})
        variables[ENV_MODELS_DIR] = models
        # moto's Step Functions cannot run a Lambda task: locally the batch function runs a large file's
        # chunks itself, in order, where in AWS it starts the template's state machine
        variables.pop(ENV_BATCH_STATE_MACHINE, None)
        variables.setdefault("POWERTOOLS_SERVICE_NAME", function.logical_id)
        return variables

    def _environment(self, function: tpl.Function, variables: Mapping[str, str],
                     environ: Mapping[str, str]) -> dict[str, str]:
        """Everything the function's processes get: what Lambda sets, its variables, and what a process needs."""
        return {
            **{name: value for name, value in environ.items() if name in PASSED or name.startswith(PASSED_PREFIXES)},
            "PYTHONPATH": _python_path(environ),
            "TZ": ":UTC",
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"], "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_LAMBDA_FUNCTION_NAME": function.logical_id, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": log_group_of(function.logical_id), "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "LAMBDA_TASK_ROOT": str(function.code_uri.resolve()),
            "AWS_SAM_LOCAL": "true",  # as `sam local` sets it: Powertools' Tracer turns itself off
            "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_DEV": environ.get("POWERTOOLS_DEV", "false"),
            **variables,
        }

    # -- schedules --------------------------------------------------------------------------------------------

    def start_schedules(self, every: Mapping[str, float] | None = None) -> list[Schedule]:
        """Run each function of a Schedule event on its rate (`every` overrides it, by logical id, in seconds),
        as EventBridge would; they stop with the stack."""
        periods = {**tpl.schedules(self.template), **(every or {})}
        for function, seconds in periods.items():
            if function in self.functions:
                self.schedules.append(Schedule(function, seconds, self.invoke, self.echo).start())
        return self.schedules

    def resources(self) -> dict[str, str]:
        """Every resource the stack made, logical id -> its name (a queue's URL, a secret's ARN)."""
        return dict(self.table_names)

    # -- invocation -------------------------------------------------------------------------------------------

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        """Invoke a function synchronously: its answer, or FunctionError with what it raised (its type's name
        and message, as Lambda reports them)."""
        return self.functions[logical_id].invoke(event)
