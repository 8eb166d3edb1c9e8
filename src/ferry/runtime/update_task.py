"""The Lambda side of the update state machine (``UpdateStateMachine`` in template.yaml): one function per step.

The state machine runs the steps of :class:`ferry.update.steps.Update`, in its order, unattended in AWS::

    lock -> assemble -> (train + build: the SageMaker training job, ferry.update.job) -> gate -> register
         -> promote -> deployed (polled) -> release

Each Lambda task invokes the update function with ``{"step": <name>, "execution": <execution name>, "state":
<the execution's state>}``; :func:`handle` dispatches on the step and returns what the state machine keeps under
``$.<step>`` (small: the state travels with every step, and Step Functions caps it at 256 KB). Bulky results (the
examples, the gate's verdict, the job's output) live in the registry bucket under ``updates/<model>/<update id>/``;
each finished step is checkpointed in the registry (``update#<id>``), so that a step Step Functions retries finds its
work done and returns it again instead of doing it twice (every step is idempotent).

- **lock**: the model's update lock (:meth:`Registry.acquire`, a lease of ``lease_seconds`` that every later step
  renews). Held by another update: the trigger is recorded as skipped and the execution ends (``Skipped``). The same
  event delivered twice (EventBridge delivers at least once) starts one update.
- **assemble**: the registry's live version made to agree with what the stack serves (adopted on the first update;
  a version deployed outside the loop registered and made live), then the labelled feedback with its texts
  (:mod:`ferry.runtime.examples`) to ``examples.jsonl``. Too few since the trigger (``min_labels``) or of one label
  (``min_per_label``): ``enough`` false, and ``wait`` true until ``max_waits`` hourly attempts were made.
- **gate**: the job's ``model.tar.gz`` streamed from S3, its ``layer.zip`` and ``gate-data/`` kept; the live int8
  model (the function's own layer, /opt/models/<name>) and the candidate's, on the same rows of each slice
  (``reference``: the data's test split; ``feedback``: the held-out feedback), judged by :mod:`ferry.runtime.gate`
  with the function's ``gate.json`` (else :data:`~ferry.runtime.gate.DEFAULT_GATE`).
- **register**: the candidate's layer published as a new version of the stack's layer of the model, the version
  registered with its manifest, training report, artifacts and gate verdict (blessed or rejected).
- **promote**: the version goes canary in the registry, then a CloudFormation stack update with the previous
  template sets the model's layer parameter to the candidate's layer version (every other parameter keeps its
  value): the predict function gets a new version and CodeDeploy shifts the API's traffic to it, rolling back on an
  alarm. Promotion goes through the stack so that the stack never drifts: a later deploy keeps the model.
- **deployed**: the stack's status: complete with the parameter set, the version goes live (the one before it is
  retired); complete with the parameter back as it was (CodeDeploy's alarm rolled the canary back, CloudFormation
  the stack), the canary is rolled back in the registry; in progress, the state machine waits and asks again.
- **release**: the update's record finished, the outcome announced on EventBridge (``ModelUpdated``,
  ``ModelUpdateRejected``, ``ModelRolledBack``, ``ModelUpdateFailed``; source ``ferry.update``), the lock released.

This module runs in Lambda: boto3, numpy and :mod:`ferry.runtime` only (no torch); the gate step loads its models
with :class:`ferry.runtime.predictor.Predictor` on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.runtime import layout
from ferry.runtime.batch import exists
from ferry.runtime.constants import ENV_CAPTURE_TABLE, ENV_EVENT_BUS, ENV_FEEDBACK_TABLE, ENV_MODELS_DIR
from ferry.runtime.examples import MIN_LABELS, MIN_PER_LABEL, labelled_examples, too_few, write_examples
from ferry.runtime.exceptions import FerryRuntimeError
from ferry.runtime.manifest import Manifest, is_valid_name, models_search_path, resolve_model_dir
from ferry.runtime.registry import BLESSED, CANARY, CANDIDATE, LIVE, RETIRED, Entry, Lease, Registry

# The steps the state machine's Lambda tasks name, in the order an update that goes live runs them.
STEPS = ("lock", "assemble", "gate", "register", "promote", "deployed", "release")
# How the AWS path covers ferry.update.steps.STEPS: the training job (the state machine's Train) trains and builds.
LOCAL_STEPS: Mapping[str, tuple[str, ...]] = {"assemble": ("assemble",), "train": ("train", "build"),
                                              "gate": ("gate",), "register": ("register",), "promote": ("promote",)}
EVENT_SOURCE = "ferry.update"  # as ferry.update.steps.EVENT_SOURCE
UPDATED, REJECTED, ROLLED_BACK_EVENT, FAILED = "ModelUpdated", "ModelUpdateRejected", "ModelRolledBack", \
    "ModelUpdateFailed"
NOT_ENOUGH_LABELS = "not-enough-labels"
# The stack update: UsePreviousTemplate reruns the SAM transform (a macro) and the template creates IAM roles.
CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND")
ENTRY_KEY = "artifacts/update-entry.tar.gz"  # the training job's program (infra/update), uploaded by `make deploy`
ENTRY_PROGRAM = "entry.py"
JOB_OUTPUT_FILES = ("layer.zip", "result.json", "gate-data/reference.jsonl", "gate-data/feedback.jsonl")
MAX_JOB_NAME = 63  # SageMaker's limit on a training job's name

# Environment variables of the update function (template.yaml); the tables' and the bus's are the runtime's own.
ENV_REGISTRY_TABLE = "FERRY_REGISTRY_TABLE"
ENV_REGISTRY_BUCKET = "FERRY_REGISTRY_BUCKET"
ENV_STACK = "FERRY_STACK"  # the stack's id (or name): the promotion updates it
ENV_ARCH = "FERRY_ARCH"  # the stack's Architecture: the candidate is quantized for it
ENV_CANARY_DEPLOYMENT = "FERRY_CANARY_DEPLOYMENT"  # CodeDeploy's shift (Canary10Percent5Minutes...): its duration
ENV_LAYER_PARAMETERS = "FERRY_LAYER_PARAMETERS"  # model=StackParameter,...: where a promoted layer version goes
ENV_LAYER_NAMES = "FERRY_LAYER_NAMES"  # model=layer name,...: where a candidate's layer is published
ENV_DEPLOYED_LAYERS = "FERRY_DEPLOYED_LAYERS"  # model=layer version ARN,...: what the stack serves now
ENV_GATE_FILE = "FERRY_GATE_FILE"  # the gate's config; default: gate.json beside the handler, else DEFAULT_GATE
ENV_MIN_LABELS = "FERRY_UPDATE_MIN_LABELS"
ENV_MIN_PER_LABEL = "FERRY_UPDATE_MIN_PER_LABEL"
ENV_LEASE_SECONDS = "FERRY_UPDATE_LEASE_SECONDS"
ENV_WORK_DIR = "FERRY_UPDATE_WORK_DIR"

# As ferry.update.config.UpdateConfig (tests/unit/test_update_task.py holds them equal): labels since the trigger,
# and of each label, that an update needs.
DEFAULT_MIN_LABELS = MIN_LABELS  # ferry.runtime.examples: the one rule
DEFAULT_MIN_PER_LABEL = MIN_PER_LABEL
DEFAULT_LEASE_SECONDS = 6 * 3600.0  # renewed by every step; a training job runs 3 hours at most
DEPLOY_MARGIN_SECONDS = 3600.0  # a stack update's own work, beyond CodeDeploy's shift


class UpdateTaskError(FerryRuntimeError):
    """A step of the update cannot go on; its message says why (the state machine's ReleaseOnFailure records it)."""

    code = "update_failed"


class StackBusyError(UpdateTaskError):
    """Another operation runs on the stack: the promotion is tried again later (the state machine's Retry)."""

    code = "stack_busy"


class LeaseLostError(UpdateTaskError):
    """The update's lock expired and another update took it: this one stops."""

    code = "lease_lost"


# ---------------------------------------------------------------------------------------------------- settings


def _pairs(raw: str | None) -> dict[str, str]:
    """``a=x,b=y`` as a mapping (empty entries ignored)."""
    found: dict[str, str] = {}
    for part in (raw or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() and value.strip():
            found[key.strip()] = value.strip()
    return found


def _default_gate_file(env: Mapping[str, str]) -> Path | None:
    """gate.json beside the handler (Lambda's LAMBDA_TASK_ROOT), when there is one."""
    root = env.get("LAMBDA_TASK_ROOT")
    candidate = Path(root) / "gate.json" if root else None
    return candidate if candidate is not None and candidate.is_file() else None


@dataclass(frozen=True)
class UpdateSettings:
    """What the update function is told by its environment (:meth:`from_env`), or a test by its arguments."""

    bucket: str
    stack: str
    layer_parameters: Mapping[str, str]
    layer_names: Mapping[str, str]
    deployed_layers: Mapping[str, str] = field(default_factory=dict)
    arch: str = "x86_64"
    event_bus: str = "default"
    canary_deployment: str = "Canary10Percent5Minutes"
    gate_file: Path | None = None
    models_path: tuple[Path, ...] = field(default_factory=lambda: tuple(models_search_path()))
    min_labels: int = DEFAULT_MIN_LABELS
    min_per_label: int = DEFAULT_MIN_PER_LABEL
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    work: Path = Path("/tmp/ferry-update")
    region: str = ""  # the training job's (the toolkit fetches the entry script from S3 in it)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UpdateSettings:
        env = os.environ if env is None else env
        missing = [name for name in (ENV_REGISTRY_BUCKET, ENV_STACK, ENV_LAYER_PARAMETERS) if not env.get(name)]
        if missing:
            raise UpdateTaskError(f"{', '.join(missing)} not set (template.yaml gives the update function each)")
        gate = env.get(ENV_GATE_FILE)
        return cls(bucket=env[ENV_REGISTRY_BUCKET], stack=env[ENV_STACK],
                   layer_parameters=_pairs(env.get(ENV_LAYER_PARAMETERS)), layer_names=_pairs(env.get(ENV_LAYER_NAMES)),
                   deployed_layers=_pairs(env.get(ENV_DEPLOYED_LAYERS)), arch=env.get(ENV_ARCH) or "x86_64",
                   event_bus=env.get(ENV_EVENT_BUS) or "default",
                   canary_deployment=env.get(ENV_CANARY_DEPLOYMENT) or "Canary10Percent5Minutes",
                   gate_file=Path(gate) if gate else _default_gate_file(env),
                   models_path=tuple(models_search_path(env.get(ENV_MODELS_DIR) or None)),
                   min_labels=int(env.get(ENV_MIN_LABELS) or DEFAULT_MIN_LABELS),
                   min_per_label=int(env.get(ENV_MIN_PER_LABEL) or DEFAULT_MIN_PER_LABEL),
                   lease_seconds=float(env.get(ENV_LEASE_SECONDS) or DEFAULT_LEASE_SECONDS),
                   work=Path(env.get(ENV_WORK_DIR) or "/tmp/ferry-update"), region=env.get("AWS_REGION", ""))

    def deploy_timeout_s(self) -> float:
        """How long a promotion's stack update may take: CodeDeploy's shift, plus the stack's own work."""
        return shift_seconds(self.canary_deployment) + DEPLOY_MARGIN_SECONDS


def table_names(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The registry, feedback and capture tables the update function's environment names."""
    env = os.environ if env is None else env
    names = {"registry": env.get(ENV_REGISTRY_TABLE, ""), "feedback": env.get(ENV_FEEDBACK_TABLE, ""),
             "captures": env.get(ENV_CAPTURE_TABLE, "")}
    missing = [name for name, value in names.items() if not value]
    if missing:
        raise UpdateTaskError(f"the update function needs its {', '.join(missing)} table (template.yaml)")
    return names


def shift_seconds(deployment: str) -> float:
    """The seconds CodeDeploy's predefined Lambda config takes to shift all traffic (0 for AllAtOnce)."""
    canary = re.fullmatch(r"Canary\d+Percent(\d+)Minutes?", deployment)
    if canary:
        return 60.0 * int(canary.group(1))
    linear = re.fullmatch(r"Linear(\d+)PercentEvery(\d+)Minutes?", deployment)
    if linear:
        return 60.0 * int(linear.group(2)) * -(-100 // int(linear.group(1)))
    return 0.0


# ------------------------------------------------------------------------------------------------------- names


def job_name(model: str, update_id: str) -> str:
    """The training job's name: unique per update, within SageMaker's 63 characters of [a-zA-Z0-9-], and starting
    with ``ferry-`` (the state machine's role may create only those)."""
    readable = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9-]", "-", f"ferry-{model}-{update_id}")).strip("-")
    if len(readable) <= MAX_JOB_NAME:
        return readable
    digest = hashlib.sha256(update_id.encode("utf-8")).hexdigest()[:16]
    return f"{readable[:MAX_JOB_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def update_prefix(model: str, update_id: str) -> str:
    """Where an update's files live in the registry bucket."""
    return f"updates/{model}/{update_id}/"


def fp32_key(model: str, version: str) -> str:
    """Where `make deploy` uploads a built model's fp32 weights (model/ in a tar.gz), for the first warm start."""
    return f"models/{model}/{version}/model.tar.gz"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise UpdateTaskError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def since_ms_of(event: Mapping[str, Any]) -> int:
    """When the trigger's episode began (epoch ms): ``detail.since_ms``, else the episode id's trailing time (the
    monitor names episodes ``<model>-<version>-<opened ms>``), else the event's own time."""
    detail = event.get("detail") or {}
    if isinstance(detail.get("since_ms"), int | float):
        return int(detail["since_ms"])
    episode = detail.get("episode")
    if isinstance(episode, Mapping) and isinstance(episode.get("opened_ms"), int | float):
        return int(episode["opened_ms"])
    if isinstance(episode, str):
        found = re.search(r"-(\d{12,14})$", episode)
        if found:
            return int(found.group(1))
    stamp = event.get("time")
    if isinstance(stamp, str) and stamp:
        from datetime import datetime

        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    return 0


# ------------------------------------------------------------------------------------------------------- a run


@dataclass
class _Run:
    """One invocation: the step's model and update, the execution's state, and everything it acts with."""

    step: str
    model: str
    update_id: str
    state: Mapping[str, Any]
    event: Mapping[str, Any]
    registry: Registry
    feedback: Any
    captures: Any
    s3: Any
    cloudformation: Any
    events: Any
    lambda_client: Any
    settings: UpdateSettings
    clock: Callable[[], float]
    load_predictor: Callable[[Path], Any]

    @property
    def prefix(self) -> str:
        return update_prefix(self.model, self.update_id)

    def uri(self, name: str) -> str:
        return s3_uri(self.settings.bucket, self.prefix + name)

    def done(self, step: str) -> dict[str, Any] | None:
        """The result this update recorded for `step` already (a retried step returns it), else None."""
        record = self.registry.get_update(self.model, self.update_id)
        return dict(record.steps[step]) if record is not None and record.done(step) else None

    def record(self, step: str, result: dict[str, Any]) -> dict[str, Any]:
        self.registry.record_step(self.model, self.update_id, step, result)
        return result

    def hold(self) -> None:
        """The update's lock renewed for another lease (the owner is the update): LeaseLostError once another
        update holds it."""
        if self.registry.acquire(self.model, self.update_id, self.settings.lease_seconds,
                                 what=f"update {self.update_id}") is None:
            holder = self.registry.lock_holder(self.model) or {}
            raise LeaseLostError(f"{self.model}: the update lock is held by {holder.get('what', 'another update')}; "
                                 f"update {self.update_id} lost its lease and stops")

    def work(self) -> Path:
        """A fresh folder of this update under the function's /tmp."""
        folder = self.settings.work / self.update_id
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder


def handle(event: Mapping[str, Any], *, registry: Registry, feedback: Any, captures: Any, s3: Any,
           cloudformation: Any, events: Any, lambda_client: Any, settings: UpdateSettings,
           clock: Callable[[], float] = time.time, load_predictor: Callable[[Path], Any] | None = None
           ) -> dict[str, Any]:
    """Run the step `event` names (``step``) for the execution's state (``state``, ``execution``); its result.

    `feedback` and `captures` are boto3 Table resources; `s3`, `cloudformation`, `events` and `lambda_client` boto3
    clients; `load_predictor` loads a model folder (default :meth:`Predictor.load <ferry.runtime.predictor.Predictor
    .load>`)."""
    step = str(event.get("step", ""))
    if step not in _STEPS:
        raise UpdateTaskError(f"unknown step {step!r}; the update's steps are {', '.join(STEPS)}")
    state: Mapping[str, Any] = event.get("state") or {}
    lock = state.get("lock") or {}
    detail = state.get("detail") or {}
    model = str(lock.get("model") or detail.get("model") or "")
    update_id = str(lock.get("update_id") or _update_id(str(event.get("execution") or "")))
    run = _Run(step=step, model=model, update_id=update_id, state=state, event=event, registry=registry,
               feedback=feedback, captures=captures, s3=s3, cloudformation=cloudformation, events=events,
               lambda_client=lambda_client, settings=settings, clock=clock,
               load_predictor=load_predictor or _load_predictor)
    return _STEPS[step](run)


def _update_id(execution: str) -> str:
    """The update's id: the execution's name (unique per state machine, at most 80 characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", execution)
    if not cleaned:
        raise UpdateTaskError("the step was invoked without its execution's name (execution.$: $$.Execution.Name)")
    return cleaned


def _load_predictor(path: Path) -> Any:
    from ferry.runtime.predictor import Predictor

    return Predictor.load(path)


# ------------------------------------------------------------------------------------------------------- steps


def lock(run: _Run) -> dict[str, Any]:
    detail = run.state.get("detail") or {}
    event_id = str(run.state.get("id") or run.update_id)
    base = {"acquired": False, "model": run.model, "update_id": run.update_id, "event_id": event_id}
    if not is_valid_name(run.model):
        raise UpdateTaskError(f"the event names no model (detail.model: {detail.get('model')!r})")
    if run.model not in run.settings.layer_parameters:
        why = (f"{run.model} has no layer parameter in this stack ({', '.join(run.settings.layer_parameters)}): "
               "an update could not promote it")
        run.registry.record_event(run.model, event_id, outcome="skipped", detail=why)
        return {**base, "why": why}
    lease = run.registry.acquire(run.model, run.update_id, run.settings.lease_seconds,
                                 what=f"update {run.update_id}")
    if lease is None:
        holder = run.registry.lock_holder(run.model) or {}
        why = f"an update is running ({holder.get('what', 'unknown')}); this trigger is recorded, not started"
        recorded = run.registry.record_event(run.model, event_id, outcome="skipped", detail=why)
        return {**base, "why": why if recorded.update_id is None else f"event handled by {recorded.update_id}"}
    recorded = run.registry.record_event(run.model, event_id, outcome="started", detail=f"update {run.update_id}",
                                         update_id=run.update_id)
    if recorded.update_id != run.update_id:  # a second delivery of an event recorded before
        lease.release()
        return {**base, "why": f"event {event_id} was recorded before ({recorded.outcome}, update "
                               f"{recorded.update_id}); a redelivery starts nothing"}
    run.registry.start_update(run.model, run.update_id, by=f"{run.state.get('detail-type', 'event')} {event_id}")
    return {**base, "acquired": True, "since_ms": since_ms_of(run.state), "expires_at": lease.expires_at}


def assemble(run: _Run) -> dict[str, Any]:
    run.hold()
    done = run.done("assemble")
    if done is not None:
        return done
    live = _live(run)
    labels = tuple(live.manifest.get("labels") or ())
    attempts = int((run.state.get("assemble") or {}).get("attempts", 0)) + 1
    if not labels:
        return {"enough": False, "wait": False, "attempts": attempts, "live_version": live.version,
                "why": f"{run.model} has no labels (not a classifier): nothing to retrain on feedback"}
    model_uri = _fp32_uri(run, live)
    since_ms = int((run.state.get("lock") or {}).get("since_ms", 0))
    versions = [entry.version for entry in run.registry.versions(run.model)]
    found = labelled_examples(run.feedback, run.captures, run.model, versions)
    recent = [example for example in found.examples if example.epoch_ms > since_ms]
    summary = {**found.summary(), "recent": len(recent), "live_version": live.version, "since_ms": since_ms,
               "attempts": attempts}
    why = too_few(found, recent, labels, run.settings.min_labels, run.settings.min_per_label)
    if why is not None:
        waits = int(run.event.get("max_waits") or 0)
        return {**summary, "enough": False, "wait": bool(found.examples) and attempts <= waits, "why": why}
    path = write_examples(found.examples, run.work() / "examples.jsonl")
    run.s3.upload_file(str(path), run.settings.bucket, run.prefix + "examples.jsonl")
    training = _training(run, since_ms, model_uri)
    return run.record("assemble", {**summary, "enough": True, "wait": False, "examples_uri": run.uri("examples.jsonl"),
                                   "training": training})


def gate(run: _Run) -> dict[str, Any]:
    run.hold()
    done = run.done("gate")
    if done is not None:
        return done
    work = run.work()
    files = _job_output(run, str((run.state.get("train") or {}).get("model_uri", "")), work)
    job = json.loads(files["result.json"].read_text(encoding="utf-8"))
    if not job.get("built"):
        return run.record("gate", {"passed": False, "built": False, "version": job.get("version"),
                                   "summary": str(job.get("why") or "the training job built no candidate")})
    layer = _unzip(files["layer.zip"], work / "layer")
    from ferry.runtime.gate import evaluate

    candidate = run.load_predictor(layout.model_dir_in_layer(layer, run.model))
    live = run.load_predictor(resolve_model_dir(run.model, run.settings.models_path))
    slices = {name: paired(name, read_rows(files[f"gate-data/{name}.jsonl"]), live, candidate)
              for name in ("reference", "feedback")}
    verdict = evaluate(_gate_config(run.settings), slices)
    stored = {**verdict.to_dict(), "summary": verdict.summary(), "slice_sources": job.get("slice_sources", {}),
              "live_version": live.manifest.version, "candidate_version": candidate.manifest.version}
    run.s3.put_object(Bucket=run.settings.bucket, Key=run.prefix + "gate.json",
                      Body=json.dumps(stored, indent=1).encode("utf-8"), ContentType="application/json")
    return run.record("gate", {"passed": verdict.passed, "built": True, "version": candidate.manifest.version,
                               "live_version": live.manifest.version, "summary": verdict.summary(),
                               "gate_uri": run.uri("gate.json")})


def register(run: _Run) -> dict[str, Any]:
    run.hold()
    done = run.done("register")
    if done is not None:
        return done
    gated = run.state.get("gate") or {}
    if not gated.get("built"):
        return run.record("register", {"passed": False, "status": "not-built", "version": gated.get("version"),
                                       "why": gated.get("summary", "no candidate was built")})
    job = _read_json(run, run.prefix + "result.json")
    verdict = _read_json(run, run.prefix + "gate.json")
    manifest = job["manifest"]
    version = str(manifest["version"])
    layer_arn = publish_layer(run, version)
    assembled = run.state.get("assemble") or {}
    artifacts = {"layer": layer_arn, "layer_zip": run.uri("layer.zip"), "gate": run.uri("gate.json"),
                 "model": str((run.state.get("train") or {}).get("model_uri", "")),
                 "examples": str(assembled.get("examples_uri", ""))}
    run.registry.register(manifest, {name: uri for name, uri in artifacts.items() if uri},
                          by=f"update {run.update_id}",
                          why=f"retrained on {assembled.get('examples', 'the')} labelled feedback examples",
                          training=job.get("training"))
    entry = run.registry.get(run.model, version)
    if entry is not None and entry.status == CANDIDATE:
        entry = run.registry.record_gate(run.model, version, verdict, passed=bool(gated.get("passed")), by="gate")
    status = entry.status if entry is not None else "unknown"
    return run.record("register", {"passed": status in (BLESSED, CANARY, LIVE), "status": status,
                                   "version": version, "layer_arn": layer_arn})


def promote(run: _Run) -> dict[str, Any]:
    run.hold()
    done = run.done("promote")
    if done is not None:
        return done
    entry = _entry(run, str((run.state.get("register") or {}).get("version", "")))
    layer_arn = entry.artifacts.get("layer", "")
    parameter = run.settings.layer_parameters[run.model]
    if entry.status not in (CANARY, LIVE):
        run.registry.start_canary(run.model, entry.version, by=f"update {run.update_id}",
                                  why=f"blessed by the gate: CodeDeploy shifts the API to it "
                                      f"({run.settings.canary_deployment})")
    stack = describe_stack(run.cloudformation, run.settings.stack)
    values = {item["ParameterKey"]: item.get("ParameterValue", "") for item in stack.get("Parameters", [])}
    if parameter not in values:
        raise UpdateTaskError(f"the stack has no parameter {parameter}: deploy the template that declares it")
    result = {"parameter": parameter, "layer_arn": layer_arn, "version": entry.version,
              "previous": values[parameter], "requested_at": run.clock()}
    if values[parameter] != layer_arn:
        if str(stack.get("StackStatus", "")).endswith("_IN_PROGRESS"):
            raise StackBusyError(f"the stack is {stack['StackStatus']}; the promotion waits for it")
        run.cloudformation.update_stack(**stack_update(run.settings.stack, list(values), parameter, layer_arn,
                                                       token=f"ferry-{run.update_id}"))
    return run.record("promote", result)


def deployed(run: _Run) -> dict[str, Any]:
    run.hold()
    promoted = run.state.get("promote") or {}
    version, layer_arn = str(promoted.get("version", "")), str(promoted.get("layer_arn", ""))
    stack = describe_stack(run.cloudformation, run.settings.stack)
    status = str(stack.get("StackStatus", ""))
    value = next((item.get("ParameterValue", "") for item in stack.get("Parameters", [])
                  if item["ParameterKey"] == promoted.get("parameter")), "")
    if status.endswith("_IN_PROGRESS"):
        waited = run.clock() - float(promoted.get("requested_at", run.clock()))
        if waited > run.settings.deploy_timeout_s():
            raise UpdateTaskError(f"the stack update has run {waited / 60:.0f} minutes ({status}), longer than "
                                  f"{run.settings.canary_deployment} and its own work should take: see its events")
        return {"state": "in-progress", "status": status}
    if status not in ("UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"):
        raise UpdateTaskError(f"the stack is {status} ({stack.get('StackStatusReason', 'no reason given')}): "
                              f"{run.model} {version} is canary in the registry; fix the stack, then promote or roll "
                              "back by hand")
    if value == layer_arn:
        run.registry.go_live(run.model, version, by="canary", why=f"CodeDeploy shifted the API to it "
                             f"({run.settings.canary_deployment}) and no alarm fired")
        return run.record("deployed", {"state": "live", "status": status, "version": version})
    why = (f"the stack update rolled back ({stack.get('StackStatusReason') or status}): an alarm during CodeDeploy's "
           "traffic shift, or a failed resource update; the stack serves the version before")
    entry = _entry(run, version)
    if entry.status == CANARY:
        run.registry.rollback(run.model, by="canary", why=why)
    return run.record("deployed", {"state": "rolled-back", "status": status, "version": version, "why": why})


def release(run: _Run) -> dict[str, Any]:
    outcome, detail_type, final, why = _outcome(run)
    acquired = bool((run.state.get("lock") or {}).get("acquired"))
    if not acquired:  # failed before the lock (or skipped): nothing to finish or release, but say so
        if detail_type is not None:
            _notify(run, detail_type, {"model": run.model, "update_id": run.update_id, "why": why})
        return {"outcome": outcome, "event": detail_type, "released": False}
    done = run.done("release")
    run.registry.finish_update(run.model, run.update_id, final, error=why if final == "failed" else None)
    if done is None and detail_type is not None:
        _notify(run, detail_type, _event_detail(run, why))
    run.record("release", {"outcome": outcome, "event": detail_type})
    released = Lease(run.registry, run.model, run.update_id, 0.0).release()
    return {"outcome": outcome, "event": detail_type, "released": released}


_STEPS: Mapping[str, Callable[[_Run], dict[str, Any]]] = {
    "lock": lock, "assemble": assemble, "gate": gate, "register": register, "promote": promote,
    "deployed": deployed, "release": release}


# ----------------------------------------------------------------------------------------------------- helpers


def _live(run: _Run) -> Entry:
    """The live version, as the registry and the stack agree: what the function's layer serves. Adopted when the
    registry has no live version; registered and made live (the registry's live retired) when the stack serves
    another version, deployed outside the update loop."""
    manifest = Manifest.load(resolve_model_dir(run.model, run.settings.models_path))
    artifacts = {"layer": run.settings.deployed_layers.get(run.model, "")}
    if exists(run.s3, run.settings.bucket, fp32_key(run.model, manifest.version)):
        artifacts["model"] = s3_uri(run.settings.bucket, fp32_key(run.model, manifest.version))
    artifacts = {name: uri for name, uri in artifacts.items() if uri}
    live = run.registry.live(run.model)
    if live is not None and live.version == manifest.version:
        return live
    if live is None:
        return run.registry.adopt(manifest.to_dict(), artifacts, by="ferry update",
                                  why="the version the stack served when the first update ran")
    if run.registry.get(run.model, manifest.version) is None:
        run.registry.register(manifest.to_dict(), artifacts, by="ferry update", status=RETIRED,
                              why="deployed outside the update loop")
    entry, _ = run.registry.go_live(run.model, manifest.version, by="ferry update", force=True,
                                    why=f"the stack serves it (deployed outside the update loop), not {live.version}")
    return entry


def _fp32_uri(run: _Run, live: Entry) -> str:
    """The live version's fp32 model (the candidate's warm start) in S3."""
    uri = live.artifacts.get("model", "")
    if uri.startswith("s3://"):
        return uri
    key = fp32_key(run.model, live.version)
    if exists(run.s3, run.settings.bucket, key):
        return s3_uri(run.settings.bucket, key)
    raise UpdateTaskError(f"{run.model} {live.version}: no fp32 model to warm-start from (the registry names none and "
                          f"s3://{run.settings.bucket}/{key} is missing): `make deploy` uploads the built model's")


def _training(run: _Run, since_ms: int, model_uri: str) -> dict[str, Any]:
    """What the state machine's Train state passes to SageMaker: the job's name, its inputs and output, and its
    hyperparameters (JSON-encoded strings, as the SageMaker SDK writes them; the container's toolkit decodes them)."""
    arguments: dict[str, Any] = {
        "sagemaker_program": ENTRY_PROGRAM, "sagemaker_submit_directory": s3_uri(run.settings.bucket, ENTRY_KEY),
        "model": run.model, "since_ms": since_ms, "min_rows": _gate_config(run.settings).min_rows,
        "arch": run.settings.arch, "update_id": run.update_id}
    if run.settings.region:
        arguments["sagemaker_region"] = run.settings.region
    return {"job_name": job_name(run.model, run.update_id), "examples_uri": run.uri("examples.jsonl"),
            "live_model_uri": model_uri, "output_uri": run.uri("job/"),
            "hyperparameters": {name: json.dumps(value) for name, value in arguments.items()}}


def _gate_config(settings: UpdateSettings) -> Any:
    from ferry.runtime.gate import DEFAULT_GATE, GateConfig

    return GateConfig.load(settings.gate_file) if settings.gate_file is not None else DEFAULT_GATE


def read_rows(path: Path) -> list[tuple[str, str]]:
    """The (text, label) rows of a gate-data file (JSONL of {"text", "label"})."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                value = json.loads(line)
                rows.append((str(value["text"]), str(value["label"])))
    return rows


def paired(name: str, rows: Sequence[tuple[str, str]], live: Any, candidate: Any) -> Any:
    """A gate slice: the true class of each row and each model's predicted class, in the live model's labels (rows
    of a label the live model does not have are left out: neither model can be right on them)."""
    from ferry.runtime.gate import SliceData

    labels = tuple(live.manifest.labels)
    kept = [(text, label) for text, label in rows if label in labels]
    return SliceData(name=name, labels=labels, truth=[labels.index(label) for _, label in kept],
                     live=_predicted(live, kept), candidate=_predicted(candidate, kept))


def _predicted(predictor: Any, rows: Sequence[tuple[str, str]]) -> list[int]:
    predicted: list[int] = []
    for start in range(0, len(rows), 64):
        batch = predictor.encode([text for text, _ in rows[start:start + 64]])
        predicted.extend(int(value) for value in predictor.forward(batch).argmax(axis=-1))
    return predicted


def _job_output(run: _Run, model_uri: str, work: Path) -> dict[str, Path]:
    """The files of the training job's model.tar.gz the gate and the registration need, streamed out of it (the
    fp32 model in it is skipped) and kept beside it in the update's folder of the bucket."""
    bucket, key = split_s3_uri(model_uri)
    body = run.s3.get_object(Bucket=bucket, Key=key)["Body"]
    found: dict[str, Path] = {}
    with tarfile.open(fileobj=body, mode="r|gz") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name in JOB_OUTPUT_FILES and member.isfile():
                source = archive.extractfile(member)
                assert source is not None, "a regular file has content"
                target = work / "job" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    shutil.copyfileobj(source, out)
                found[name] = target
    built = "result.json" in found and json.loads(found["result.json"].read_text(encoding="utf-8")).get("built")
    wanted = JOB_OUTPUT_FILES if built else ("result.json",)  # a job whose build the parity gate refused: no layer
    missing = [name for name in wanted if name not in found]
    if missing:
        raise UpdateTaskError(f"{model_uri}: the training job's output lacks {', '.join(missing)}")
    for name, path in found.items():
        run.s3.upload_file(str(path), run.settings.bucket, run.prefix + name)
    return found


def _unzip(archive: Path, target: Path) -> Path:
    """A layer zip unpacked into `target`, refusing any member that would land outside it."""
    root = target.resolve()
    with zipfile.ZipFile(archive) as layer:
        for member in layer.infolist():
            destination = (root / member.filename).resolve()
            if not destination.is_relative_to(root):
                raise UpdateTaskError(f"{archive.name}: member {member.filename!r} points outside the layer")
        layer.extractall(root)
    return root


def publish_layer(run: _Run, version: str) -> str:
    """The candidate's layer as a version of the stack's layer of its model, published once: a layer version of
    the same description (model, version and update) already there is the one published before a retry."""
    name = run.settings.layer_names.get(run.model)
    if not name:
        raise UpdateTaskError(f"no layer name for {run.model} ({ENV_LAYER_NAMES})")
    description = f"{run.model} {version} (ferry update {run.update_id})"[:256]
    for page in run.lambda_client.get_paginator("list_layer_versions").paginate(LayerName=name):
        for found in page.get("LayerVersions", []):
            if found.get("Description") == description:
                return str(found["LayerVersionArn"])
    answer = run.lambda_client.publish_layer_version(
        LayerName=name, Description=description, CompatibleRuntimes=["python3.12"],
        Content={"S3Bucket": run.settings.bucket, "S3Key": run.prefix + "layer.zip"})
    return str(answer["LayerVersionArn"])


def describe_stack(cloudformation: Any, stack: str) -> dict[str, Any]:
    stacks = cloudformation.describe_stacks(StackName=stack).get("Stacks", [])
    if not stacks:
        raise UpdateTaskError(f"no stack {stack}")
    return dict(stacks[0])


def stack_update(stack: str, parameters: Sequence[str], parameter: str, value: str, *, token: str
                 ) -> dict[str, Any]:
    """UpdateStack's arguments that change one parameter: the previous template, `parameter` set to `value`, every
    other parameter its previous value, the capabilities the template needs, and a token that makes a retried call
    the same request."""
    return {"StackName": stack, "UsePreviousTemplate": True,
            "Parameters": [{"ParameterKey": name, "ParameterValue": value} if name == parameter
                           else {"ParameterKey": name, "UsePreviousValue": True} for name in parameters],
            "Capabilities": list(CAPABILITIES),
            "ClientRequestToken": re.sub(r"[^a-zA-Z0-9-]", "-", token)[:128]}


def _outcome(run: _Run) -> tuple[str, str | None, str, str]:
    """(outcome, the event announcing it or None, the update record's final state, why) from the state."""
    if run.event.get("failed"):
        error = run.state.get("error") or {}
        why = f"{error.get('Error', 'error')}: {str(error.get('Cause', ''))[:1500]}"
        return "failed", FAILED, "failed", why
    deploy = run.state.get("deployed") or {}
    if deploy.get("state") == "live":
        return "live", UPDATED, "done", f"{deploy.get('version')} is live"
    if deploy.get("state") == "rolled-back":
        return "rolled-back", ROLLED_BACK_EVENT, "rejected", str(deploy.get("why", "rolled back"))
    registered = run.state.get("register") or {}
    if registered and not registered.get("passed"):
        gated = run.state.get("gate") or {}
        return "rejected", REJECTED, "rejected", str(gated.get("summary") or registered.get("why", "rejected"))
    assembled = run.state.get("assemble") or {}
    return NOT_ENOUGH_LABELS, None, "skipped", str(assembled.get("why", "not enough labelled feedback"))


def _event_detail(run: _Run, why: str) -> dict[str, Any]:
    assembled = run.state.get("assemble") or {}
    registered = run.state.get("register") or {}
    detail = {"model": run.model, "update_id": run.update_id, "version": registered.get("version"),
              "live_version": assembled.get("live_version"), "why": why}
    return {name: value for name, value in detail.items() if value is not None}


def _notify(run: _Run, detail_type: str, detail: Mapping[str, Any]) -> None:
    answer = run.events.put_events(Entries=[{"Source": EVENT_SOURCE, "DetailType": detail_type,
                                             "Detail": json.dumps(dict(detail), default=str),
                                             "EventBusName": run.settings.event_bus}])
    if answer.get("FailedEntryCount"):
        raise UpdateTaskError(f"EventBridge refused {detail_type}: {answer.get('Entries')}")


def _entry(run: _Run, version: str) -> Entry:
    entry = run.registry.get(run.model, version) if version else None
    if entry is None:
        raise UpdateTaskError(f"{run.model} {version or '(no version)'}: not in the registry")
    return entry


def _read_json(run: _Run, key: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(run.s3.get_object(Bucket=run.settings.bucket, Key=key)["Body"].read())
    return value


__all__ = ["LOCAL_STEPS", "STEPS", "LeaseLostError", "StackBusyError", "UpdateSettings", "UpdateTaskError",
           "handle", "job_name", "paired", "shift_seconds", "since_ms_of", "stack_update"]
