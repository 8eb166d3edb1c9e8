"""The embedded AWS and the functions of template.yaml, started together and stopped together.

The stack changes nothing of the process that runs it: no environment variable, no ``sys.stdout``. Its moto
server runs in a process of its own (:mod:`ferry.local.aws`), which this process talks to with explicit endpoint
and credentials, and each function runs in processes of its own (:mod:`ferry.local.functions`) with exactly the
environment Lambda would give it. Every one of those processes ends with the stack, or with this process.

A function may run as two versions at once, as CodeDeploy shifts a Lambda alias during a canary: the primary
(what the alias ``live`` points at) and a canary with other model layers (:meth:`LocalStack.set_canary`), which
gets a share of the routed invocations (:meth:`LocalStack.invoke_route`, what the local API calls) until it is
promoted or cleared. A version that is replaced (a promotion, a rollback, :meth:`LocalStack.reload`) is stopped
only once the new one is ready and its own invocations in flight have finished: no request fails for it.
"""

from __future__ import annotations

import functools
import json
import os
import random
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ferry.local import template as tpl
from ferry.local.aws import EmbeddedAws
from ferry.local.context import REGION, log_group_of
from ferry.local.endpoint import ENV_RUNTIME_ENDPOINT, LargeModel, LocalEndpoint, create_endpoint
from ferry.local.exceptions import FunctionError, LayersNotFoundError, StackStoppedError, StartCancelledError
from ferry.local.functions import INIT_TIMEOUT_S, STOP_GRACE_S, LocalFunction
from ferry.local.logs import LogDelivery, Subscription
from ferry.local.schedule import Schedule
from ferry.runtime.canary import Traffic
from ferry.runtime.constants import ENV_BATCH_STATE_MACHINE, ENV_KEYS_TABLE, ENV_MODELS_DIR, ENV_ORT_THREADS
from ferry.runtime.layout import is_model_dir, layer_models_dir, model_dir_in_layer
from ferry.runtime.manifest import discover_models, is_valid_name, layer_models_dirs

__all__ = ["CANARY", "PRIMARY", "REGION", "CanaryState", "LocalStack", "TrafficStats", "available_cpus",
           "echo_to_stderr", "free_port", "ort_threads_per_process", "s3_event"]

CREDENTIALS = {"aws_access_key_id": "ferry-local", "aws_secret_access_key": "local"}  # moto takes any
# What a function gets of this process's environment besides its own variables: what a process needs to run
# (Lambda's sandbox has its own), never AWS_*, which Lambda sets itself
PASSED = ("PATH", "HOME", "LANG", "LANGUAGE", "LD_LIBRARY_PATH", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "SYSTEMROOT")
PASSED_PREFIXES = ("LC_", "HF_")
# Variables of this process that override a function's (see LocalStack): the project's settings, and Powertools'
OVERRIDE_PREFIXES = ("FERRY_", "POWERTOOLS_")
SERVICES = ("cloudwatch", "dynamodb", "events", "s3", "secretsmanager", "sqs")  # what the stack uses, and EMF
LOG_DRAIN_S = 5.0  # at stop, the longest wait for queued log lines to reach their subscriptions
PRIMARY, CANARY = "primary", "canary"  # the two versions a routed invocation may reach (TrafficStats by side)
LATEST = "$LATEST"  # the primary's AWS_LAMBDA_FUNCTION_VERSION, as `sam local` gives it
LATENCY_SAMPLES = 10_000  # latencies a side keeps for its percentiles; past that, a uniform sample (a reservoir)


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


def available_cpus() -> int:
    """The cores this process may run on (its affinity where the platform tells it, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ort_threads_per_process(concurrency: int, cpus: int | None = None) -> int:
    """ONNX Runtime's intra-op threads for each of `concurrency` processes sharing `cpus` cores (this machine's):
    an equal share, at least one. More would make concurrent requests fight for the cores (and ONNX Runtime's
    threads spin while they wait), slowing every one of them."""
    return max(1, (available_cpus() if cpus is None else cpus) // max(1, concurrency))


def echo_to_stderr(line: str) -> None:
    """A function's log line on this process's stderr, as ``sam local`` shows them (stdout stays the caller's)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class CanaryState:
    """A function's canary: the model layers it serves from (model name -> layer folder, over the primary's),
    its share of the routed invocations, when it started (``time.time()``) and the Lambda version it runs as."""

    layers: Mapping[str, Path]
    weight: float
    started_at: float
    version: str


@dataclass
class TrafficStats:
    """Counts, as they come, of the routed invocations one version answered since the canary was set, promoted or
    cleared (since the stack started when it never had one): how many, how many were server errors (an answer of
    status 500 or more, or an invocation that failed, which the API answers 500) and client errors (4xx), and their
    latencies in ms as this process measured them (every one up to LATENCY_SAMPLES, then a uniform sample)."""

    requests: int = 0
    errors_5xx: int = 0
    errors_4xx: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, status: int, latency_ms: float, sampler: random.Random) -> None:
        self.requests += 1
        if status >= 500:
            self.errors_5xx += 1
        elif status >= 400:
            self.errors_4xx += 1
        if len(self.latencies_ms) < LATENCY_SAMPLES:
            self.latencies_ms.append(latency_ms)
        elif (slot := sampler.randrange(self.requests)) < LATENCY_SAMPLES:
            self.latencies_ms[slot] = latency_ms

    def snapshot(self) -> Traffic:
        """What was counted so far, as the canary's judge reads it (:class:`ferry.runtime.canary.Traffic`)."""
        return Traffic(self.requests, self.errors_5xx, self.errors_4xx, tuple(self.latencies_ms))


@dataclass
class _Canary:
    function: LocalFunction
    state: CanaryState
    layers: dict[str, Path]  # what it serves from: the primary's layers with the canary's over them


def _fresh_traffic() -> dict[str, TrafficStats]:
    return {PRIMARY: TrafficStats(), CANARY: TrafficStats()}


def _status_of(result: Any) -> int:
    """The HTTP status the API answers for a function's result (a result without statusCode is a 200)."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200
    try:
        return int(result["statusCode"])
    except (TypeError, ValueError):
        return 500  # the API cannot answer it


def _check_weight(weight: float, *, bounds_included: bool) -> float:
    weight = float(weight)
    inside = 0 <= weight <= 1 if bounds_included else 0 < weight < 1
    if not inside:
        expected = "from 0 to 1" if bounds_included else "between 0 and 1 (both excluded)"
        raise ValueError(f"weight {weight}: a canary's share of the invocations is {expected}")
    return weight


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

    With `large_model`, the stack is deployed as with ``LargeModelName`` and ``LargeModelData`` set: the template's
    text-generation resources exist (the generate function and its routes; the SageMaker endpoint in the embedded
    AWS), and the endpoint's invocations reach Ferry's endpoint server running the model on this machine
    (:mod:`ferry.local.endpoint`).

    `concurrency` is the number of processes of each function (invocations beyond it wait), capped, as in Lambda,
    by a function's ``ReservedConcurrentExecutions`` when the template reserves one (the monitor reserves 1). The
    processes share this machine's cores where Lambda gives each sandbox its own: with more than one per function,
    each ONNX Runtime session gets an equal share of the cores (``FERRY_ORT_THREADS``, unless `environ` sets it), so
    that N requests at once do not run N x cores threads on the cores (:func:`ort_threads_per_process`).
    `echo` gets every log line of every function (None: no echo). `traffic_seed` seeds the choice between a
    function's primary and its canary (also settable later as ``stack.traffic_seed``): None, a fresh choice each run.

    Every method may be called from any thread; changes of versions (canaries, promotions, reloads) happen one at
    a time, while invocations go on.
    """

    def __init__(self, root: Path, layers_dir: Path, template_path: Path | None = None, *,
                 environ: Mapping[str, str] | None = None, concurrency: int = 1,
                 echo: Callable[[str], None] | None = echo_to_stderr, traffic_seed: int | None = None,
                 large_model: LargeModel | None = None):
        self.root = root
        self.layers_dir = layers_dir
        self.large_model = large_model
        self.template = tpl.load_template(template_path or root / "template.yaml",
                                          None if large_model is None else large_model.parameters())
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
        self._endpoint: LocalEndpoint | None = None
        self._clients: dict[str, Any] = {}
        self.schedules: list[Schedule] = []
        self._environ: Mapping[str, str] = {}
        self._definitions: dict[str, tpl.Function] = {}
        # Versions: which processes a function's invocations go to. `_routing` guards the fields below it (and
        # `functions`, which holds each function's primary); `_changes` lets one change of versions run at a time.
        self._routing = threading.Condition()
        self._changes = threading.Lock()
        self._traffic_seed = traffic_seed
        self._chooser = random.Random(traffic_seed)
        self._sampler = random.Random(0)  # the latency reservoirs': a seeded split does not depend on latencies
        self._layers: dict[str, dict[str, Path]] = {}  # logical id -> the primary's layers, by model name
        self._versions: dict[str, str] = {}  # logical id -> the Lambda version its primary runs as
        self._published: dict[str, int] = {}  # logical id -> the last version number given to one of its canaries
        self._canaries: dict[str, _Canary] = {}
        self._traffic: dict[str, dict[str, TrafficStats]] = {}
        self._in_flight: Counter[LocalFunction] = Counter()
        self._pending: set[LocalFunction] = set()  # starting, or replaced and finishing: stop() ends them too
        self._stopping = False

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
        services = SERVICES if self.large_model is None else (*SERVICES, "sagemaker")
        if self.large_model is not None:  # first: torch's import and the model's load are the longest wait
            self._endpoint = LocalEndpoint(self.large_model.folder, tpl.endpoint_name(self.template),
                                           {**environ, "PYTHONPATH": _python_path(environ)}).start()
        self._aws = EmbeddedAws({**environ, "PYTHONPATH": _python_path(environ)}, services).start()
        self.endpoint = self._aws.endpoint
        for service in services:  # boto3 loads each service's model while moto imports
            self.client(service)
        self.logs = LogDelivery([], self.client("cloudwatch").put_metric_data)
        self._aws.wait_ready(cancelled=cancelled)
        self._create_resources()
        if self._endpoint is not None:
            create_endpoint(self.client("sagemaker"), self._endpoint.name, tpl.resolve(
                self.template, {"Ref": "LargeModelData"}, self.table_names))
        self._check(cancelled)
        self._environ = environ
        self._definitions = tpl.functions(self.template, self.root)
        for logical_id in self._definitions:
            self._layers[logical_id], self._versions[logical_id] = {}, LATEST
            self.functions[logical_id] = self._new_function(logical_id, {}, LATEST)
            self.functions[logical_id].start()  # its workers import the handler while the next ones start
        # (a destination is invoked by name: its primary of the moment, as a subscription names the function)
        self.logs.subscriptions.extend(
            Subscription(self.functions[found.function].log_group, found.pattern,
                         functools.partial(self.invoke, found.destination), self._dead_letter_queue(found.destination))
            for found in tpl.subscription_filters(self.template))
        self.logs.start()
        deadline = time.monotonic() + INIT_TIMEOUT_S
        for started in self.functions.values():
            started.wait_ready(max(0.0, deadline - time.monotonic()), cancelled)
        if self._endpoint is not None:
            self._endpoint.wait_ready(cancelled=cancelled)

    @property
    def large_model_url(self) -> str | None:
        """Where the local endpoint server listens (what ``sagemaker-runtime`` calls), None without a large model."""
        return None if self._endpoint is None else self._endpoint.url

    @staticmethod
    def _check(cancelled: Callable[[], bool]) -> None:
        if cancelled():
            raise StartCancelledError("the local stack was stopped while it was starting")

    def stop(self) -> None:
        """Stop everything that started (safe to call twice, or after a failed start): log delivery first (what is
        queued still reaches its subscriptions, for a few seconds at most; what is left then is counted lost), then
        the functions (canaries, and versions starting or finishing, too), then moto (and with its process,
        everything the stack stored)."""
        with self._routing:
            self._stopping = True  # a change of versions under way stops waiting, and starts nothing more
            self._routing.notify_all()
        for schedule in self.schedules:
            schedule.stop()
        if self.logs is not None:
            self.logs.stop(timeout=LOG_DRAIN_S)
            self.logs.abandon()  # a delivery still running fails as its destination stops: nothing to retry
        functions = self._every_function()
        for function in functions:
            function.begin_stop()
        if self.logs is not None:
            self.logs.join(timeout=2)
        for function in functions:
            function.finish_stop()
        if self._endpoint is not None:
            self._endpoint.stop()
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
        if self.concurrency > 1 and ENV_ORT_THREADS not in variables:
            variables[ENV_ORT_THREADS] = str(ort_threads_per_process(self.concurrency))
        # moto's Step Functions cannot run a Lambda task: locally the batch function runs a large file's
        # chunks itself, in order, where in AWS it starts the template's state machine
        variables.pop(ENV_BATCH_STATE_MACHINE, None)
        variables.setdefault("POWERTOOLS_SERVICE_NAME", function.logical_id)
        return variables

    def _environment(self, function: tpl.Function, variables: Mapping[str, str],
                     environ: Mapping[str, str], version: str = LATEST) -> dict[str, str]:
        """Everything the function's processes get: what Lambda sets, its variables, and what a process needs."""
        return {
            **{name: value for name, value in environ.items() if name in PASSED or name.startswith(PASSED_PREFIXES)},
            "PYTHONPATH": _python_path(environ),
            "TZ": ":UTC",
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"], "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_LAMBDA_FUNCTION_NAME": function.logical_id, "AWS_LAMBDA_FUNCTION_VERSION": version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": log_group_of(function.logical_id), "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "LAMBDA_TASK_ROOT": str(function.code_uri.resolve()),
            "AWS_SAM_LOCAL": "true",  # as `sam local` sets it: Powertools' Tracer turns itself off
            "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_DEV": environ.get("POWERTOOLS_DEV", "false"),
            **({} if self._endpoint is None else {ENV_RUNTIME_ENDPOINT: self._endpoint.url}),
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
        and message, as Lambda reports them).

        The primary answers, never a canary, and nothing is counted in :meth:`traffic`: these are the direct
        invocations (a schedule, an S3 event, a log subscription, `ferry invoke`), which in AWS name the function
        ($LATEST) or its alias; locally only the API's invocations (:meth:`invoke_route`) go through the alias."""
        function, _, _ = self._take(logical_id, routed=False)
        try:
            return function.invoke(event)
        finally:
            self._give_back(function)

    def invoke_route(self, logical_id: str, event: dict[str, Any]) -> tuple[Any, str]:
        """Invoke a function as an API route does, through its alias ``live``: the canary with the probability of
        its weight, else the primary. Returns the answer and which answered ("primary" or "canary"); raises as
        :meth:`invoke` does. The outcome is counted in :meth:`traffic` either way."""
        function, side, stats = self._take(logical_id, routed=True)
        started = time.perf_counter()
        status = 500  # unless the function answers: the API answers an invocation that failed with a 500
        try:
            result = function.invoke(event)
            status = _status_of(result)
            return result, side
        finally:
            self._give_back(function, stats, status, (time.perf_counter() - started) * 1000)

    def traffic(self, logical_id: str) -> dict[str, Traffic]:
        """What each version of a function ("primary", "canary") answered of its routed invocations since its
        canary was last set, promoted or cleared (since the stack started, when it never had one): snapshots."""
        self._known(logical_id)
        with self._routing:
            return {side: stats.snapshot()
                    for side, stats in self._traffic.get(logical_id, _fresh_traffic()).items()}

    def _take(self, logical_id: str, routed: bool) -> tuple[LocalFunction, str, TrafficStats | None]:
        """The version an invocation goes to, counted in flight until :meth:`_give_back` (a version is stopped only
        once nothing is in flight on it), which side it is, and where a routed invocation's outcome is counted."""
        with self._routing:
            primary = self.functions[logical_id]
            canary = self._canaries.get(logical_id) if routed else None
            side = CANARY if canary is not None and self._chooser.random() < canary.state.weight else PRIMARY
            function = canary.function if canary is not None and side == CANARY else primary
            self._in_flight[function] += 1
            stats = self._traffic.setdefault(logical_id, _fresh_traffic())[side] if routed else None
            return function, side, stats

    def _give_back(self, function: LocalFunction, stats: TrafficStats | None = None, status: int = 200,
                   latency_ms: float = 0.0) -> None:
        with self._routing:
            if stats is not None:  # (counts reset since the invocation began went with the old counts)
                stats.record(status, latency_ms, self._sampler)
            self._in_flight[function] -= 1
            if self._in_flight[function] <= 0:
                del self._in_flight[function]
                self._routing.notify_all()

    # -- versions: canaries, promotions, reloads ----------------------------------------------------------------
    #
    # Lambda numbers the versions a deployment publishes; locally the primary runs as $LATEST (as `sam local`
    # does) and a function's canaries as "2", "3"... in the order they are set (the deployed version counting as
    # 1). A promoted canary keeps its number, and a reload keeps the number of what it starts again.

    @property
    def traffic_seed(self) -> int | None:
        return self._traffic_seed

    @traffic_seed.setter
    def traffic_seed(self, seed: int | None) -> None:
        with self._routing:
            self._traffic_seed = seed
            self._chooser.seed(seed)

    def canary(self, logical_id: str) -> CanaryState | None:
        """The function's canary, or None when it has none."""
        self._known(logical_id)
        with self._routing:
            canary = self._canaries.get(logical_id)
            return None if canary is None else canary.state

    def canary_function(self, logical_id: str) -> LocalFunction | None:
        """The canary's processes and environment, or None when the function has none (its primary is
        ``functions[logical_id]``)."""
        self._known(logical_id)
        with self._routing:
            canary = self._canaries.get(logical_id)
            return None if canary is None else canary.function

    def set_canary(self, logical_id: str, layers: Mapping[str, Path], weight: float) -> None:
        """Start a canary of a function: the same function (code, variables) serving each model named in `layers`
        from that layer folder (model name -> a folder holding ``models/<name>/``) instead of the primary's, and
        once its workers are ready send it `weight` of the routed invocations (0 < weight < 1). A canary already
        there is replaced, and stops once its invocations in flight have finished; the traffic counts start again.
        Raises FunctionInitError when the canary's init fails, as start() does (a canary already there then
        stays), ValueError for a weight out of range, LayersNotFoundError for a folder without that model."""
        weight = _check_weight(weight, bounds_included=False)
        self._known(logical_id)
        layers = self._checked_layers(layers)
        with self._changes:
            with self._routing:
                number = self._published.get(logical_id, 1) + 1
                merged = {**self._layers[logical_id], **layers}
            [function] = self._start_versions([(logical_id, merged, str(number))])
            state = CanaryState(MappingProxyType(dict(layers)), weight, time.time(), str(number))
            with self._routing:
                replaced = self._canaries.get(logical_id)
                self._canaries[logical_id] = _Canary(function, state, merged)
                self._published[logical_id] = number
                self._traffic[logical_id] = _fresh_traffic()
                self._pending.discard(function)
                if replaced is not None:
                    self._pending.add(replaced.function)
            if replaced is not None:
                self._retire([replaced.function])

    def set_weight(self, logical_id: str, weight: float) -> None:
        """Change the canary's share of the routed invocations (0 to 1); ValueError when there is no canary."""
        weight = _check_weight(weight, bounds_included=True)
        self._known(logical_id)
        with self._routing:
            canary = self._canaries.get(logical_id)
            if canary is None:
                raise ValueError(f"{logical_id} has no canary (set_canary first)")
            canary.state = replace(canary.state, weight=weight)

    def promote_canary(self, logical_id: str) -> None:
        """The canary becomes the function: every invocation goes to it, its layers are the function's (for later
        canaries and reloads), and the old primary stops once its invocations in flight have finished; the
        traffic counts start again. ValueError when there is no canary."""
        self._known(logical_id)
        with self._changes:
            with self._routing:
                canary = self._canaries.pop(logical_id, None)
                if canary is None:
                    raise ValueError(f"{logical_id} has no canary to promote")
                replaced = self.functions[logical_id]
                self.functions[logical_id] = canary.function
                self._layers[logical_id] = canary.layers
                self._versions[logical_id] = canary.state.version
                self._traffic[logical_id] = _fresh_traffic()
                self._pending.add(replaced)
            self._retire([replaced])

    def clear_canary(self, logical_id: str) -> None:
        """Roll back: every invocation goes to the primary again, the canary stops once its invocations in flight
        have finished, and the traffic counts start again. Nothing happens when there is no canary."""
        self._known(logical_id)
        with self._changes:
            with self._routing:
                canary = self._canaries.pop(logical_id, None)
                if canary is None:
                    return
                self._traffic[logical_id] = _fresh_traffic()
                self._pending.add(canary.function)
            self._retire([canary.function])

    def reload(self, logical_ids: Sequence[str] | None = None, layers: Mapping[str, Path] | None = None) -> None:
        """Start functions again so that they load their models again: after a model layer changed on disk, or
        with `layers` (model name -> layer folder, as set_canary takes them) served instead of the stack's, for
        this and every later reload. By default every function that reads models (FERRY_MODELS_DIR among its
        template variables). A function's canary starts again too, its own layers still over the primary's.

        The new processes are ready before the old ones stop, and an old one stops only once its invocations in
        flight have finished: no invocation fails for a reload. Canary weights and traffic counts stay."""
        overrides = self._checked_layers(layers or {})
        ids = (list(dict.fromkeys(logical_ids)) if logical_ids is not None else
               [name for name, definition in self._definitions.items() if ENV_MODELS_DIR in definition.environment])
        for logical_id in ids:
            self._known(logical_id)
        with self._changes:
            wanted: list[tuple[str, str, dict[str, Path], str]] = []  # logical id, side, layers, version
            with self._routing:
                for logical_id in ids:
                    primary = {**self._layers[logical_id], **overrides}
                    wanted.append((logical_id, PRIMARY, primary, self._versions[logical_id]))
                    canary = self._canaries.get(logical_id)
                    if canary is not None:
                        wanted.append((logical_id, CANARY, {**primary, **canary.state.layers}, canary.state.version))
            started = self._start_versions([(logical_id, merged, version)
                                            for logical_id, _, merged, version in wanted])
            replaced = []
            with self._routing:
                for (logical_id, side, merged, _), function in zip(wanted, started, strict=True):
                    replaced.append(self._swap(logical_id, side, function, merged))
                self._pending.difference_update(started)
                self._pending.update(replaced)
            self._retire(replaced)

    def _swap(self, logical_id: str, side: str, function: LocalFunction, layers: dict[str, Path]) -> LocalFunction:
        """Route a side of a function to `function` (with `routing` held); the version it replaces."""
        if side == PRIMARY:
            replaced = self.functions[logical_id]
            self.functions[logical_id], self._layers[logical_id] = function, layers
            return replaced
        canary = self._canaries[logical_id]
        replaced, canary.function, canary.layers = canary.function, function, layers
        return replaced

    def _start_versions(self, wanted: Sequence[tuple[str, Mapping[str, Path], str]]) -> list[LocalFunction]:
        """New versions of functions ((logical id, layers, Lambda version) each), started side by side and ready,
        not routed to yet (stop() ends them all the same). When one fails (its init, or the stack stopping), every
        one of them is stopped and the error raised."""
        started: list[LocalFunction] = []
        try:
            for logical_id, layers, version in wanted:
                function = self._new_function(logical_id, layers, version)
                with self._routing:
                    if self._stopping:
                        raise StackStoppedError("the local stack is stopping: no new version starts")
                    self._pending.add(function)
                started.append(function)
                function.start()
            deadline = time.monotonic() + INIT_TIMEOUT_S
            for function in started:
                function.wait_ready(max(0.0, deadline - time.monotonic()), lambda: self._stopping)
        except BaseException:
            self._stop_functions(started)
            raise
        return started

    def _retire(self, functions: Sequence[LocalFunction]) -> None:
        """Stop versions that no invocation is routed to any more (they are in `_pending`) once their invocations
        in flight have finished, or their function's timeout has passed (those are then ended)."""
        for function in functions:
            deadline = time.monotonic() + function.function.timeout_s + STOP_GRACE_S
            with self._routing:
                while self._in_flight[function] and not self._stopping and (left := deadline - time.monotonic()) > 0:
                    self._routing.wait(left)
        self._stop_functions(functions)

    def _stop_functions(self, functions: Sequence[LocalFunction]) -> None:
        for function in functions:
            function.begin_stop()
        for function in functions:
            function.finish_stop()
        with self._routing:
            self._pending.difference_update(functions)

    def _new_function(self, logical_id: str, layers: Mapping[str, Path], version: str) -> LocalFunction:
        """A version of a function, not started: the variables and environment the stack gives it, serving `layers`
        over the stack's model layers, running as Lambda version `version`."""
        assert self.logs is not None, "start() first"
        definition = self._definitions[logical_id]
        variables = self._variables(definition, self._environ, self._models_path(layers))
        environment = self._environment(definition, variables, self._environ, version)
        return LocalFunction(definition, variables, environment, self.logs.put, self.echo,
                             self.pool_size(logical_id))

    def pool_size(self, logical_id: str) -> int:
        """How many processes the function runs: the stack's concurrency, capped by the function's reserved
        concurrency when the template reserves a number (as Lambda never runs more instances than that)."""
        properties = self.template["Resources"][logical_id].get("Properties") or {}
        reserved = tpl.resolve(self.template, properties.get("ReservedConcurrentExecutions", ""), self.table_names)
        if reserved.isdigit() and int(reserved) > 0:
            return min(self.concurrency, int(reserved))
        return self.concurrency

    def _models_path(self, layers: Mapping[str, Path]) -> str:
        """FERRY_MODELS_DIR of a version serving `layers` (model name -> layer folder) over the stack's layers: the
        ``models/`` folder of each of those layers first (the first folder holding a name wins, as in /opt/models),
        then the ``models/`` folders of the stack's layers, less those holding only models that `layers` replaces."""
        chosen = [layer_models_dir(layer).resolve() for layer in layers.values()]
        replaced = set(layers)
        kept = []
        for path in (path.resolve() for path in layer_models_dirs(self.layers_dir)):
            held = set(discover_models([path]))
            if not (held and held <= replaced):
                kept.append(path)
        return os.pathsep.join(str(path) for path in dict.fromkeys([*chosen, *kept]))

    @staticmethod
    def _checked_layers(layers: Mapping[str, Path | str]) -> dict[str, Path]:
        checked = {}
        for name, layer in layers.items():
            model = model_dir_in_layer(Path(layer), name)
            if not is_valid_name(name) or not is_model_dir(model):
                raise LayersNotFoundError(f"{layer}: not a layer of model {name!r} (no {model}/manifest.json)")
            checked[name] = Path(layer).resolve()
        return checked

    def _known(self, logical_id: str) -> None:
        if logical_id not in self._definitions:
            known = ", ".join(sorted(self._definitions)) or "none (start the stack first)"
            raise ValueError(f"no function {logical_id!r}; the template's: {known}")

    def _every_function(self) -> list[LocalFunction]:
        """Every version that runs or may: primaries, canaries, versions starting and versions finishing."""
        with self._routing:
            canaries = [canary.function for canary in self._canaries.values()]
            return list(dict.fromkeys([*self.functions.values(), *canaries, *self._pending]))
