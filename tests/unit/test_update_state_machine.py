"""The update state machine (UpdateStateMachine in template.yaml), as CloudFormation deploys it: SAM's rendering of
its definition, with the DefinitionSubstitutions applied.

Two checks, because neither is enough alone. moto's Step Functions parser (with ``execute_state_machine`` on; off,
moto stores any string) parses the definition against the ASL grammar: it refuses a misspelt Type, but it accepts a
StartAt naming no state, an unreachable state and a Next naming no state. cfn-lint, as the project runs it on the SAM
template, does not read a SAM state machine's definition at all (measured: the four defects below pass it). So
:func:`problems` checks the graph: every name resolves, every state is reachable and can reach an end, every Task is
of a form the template uses, retried and caught, and the Lambda tasks name exactly the steps
:func:`ferry.runtime.update_task.handle` dispatches on.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import pytest

from ferry.runtime import update_task

from helpers import ROOT

ACCOUNT, REGION = "123456789012", "us-east-1"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ferry-UpdateFunction-1A2B3C4D"
# What CloudFormation substitutes, for a stack with the parameters' defaults (the test fails on a new substitution)
SUBSTITUTIONS = {
    "UpdateFunctionArn": FUNCTION_ARN,
    "TrainingRoleArn": f"arn:aws:iam::{ACCOUNT}:role/ferry-TrainingRole-1A2B3C4D",
    "TrainingImage": f"763104351884.dkr.ecr.{REGION}.amazonaws.com/"
                     "huggingface-pytorch-training:2.8.0-transformers4.56.2-gpu-py312-cu129-ubuntu22.04",
    "TrainingInstanceType": "ml.m5.xlarge",
    "MaxWaitHours": "24",
}
TYPES = ("Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map")
TERMINAL = ("Succeed", "Fail")
SAGEMAKER_TRAINING = "arn:aws:states:::sagemaker:createTrainingJob.sync"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$")
LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                 "Lambda.TooManyRequestsException"}
FAILURE_HANDLER = "ReleaseOnFailure"


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def _transformed_machine() -> dict[str, Any]:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    template = yaml_parse((ROOT / "template.yaml").read_text(encoding="utf-8"))
    for resource in template["Resources"].values():  # as `sam package` rewrites them
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://ferry-artifacts/function.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = "s3://ferry-artifacts/layer.zip"
    defaults = {name: spec["Default"] for name, spec in template["Parameters"].items() if "Default" in spec}
    transformed = transform(template, defaults, _NoManagedPolicies())
    return dict(transformed["Resources"]["UpdateStateMachine"]["Properties"])


@pytest.fixture(scope="module")
def machine() -> dict[str, Any]:
    return _transformed_machine()


@pytest.fixture(scope="module")
def definition_text(machine) -> str:
    """The definition as Step Functions receives it: SAM's JSON, each ${Name} replaced by CloudFormation."""
    assert set(machine["DefinitionSubstitutions"]) == set(SUBSTITUTIONS)
    text = "\n".join(machine["DefinitionString"]["Fn::Join"][1])
    for name, value in SUBSTITUTIONS.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, re.findall(r"\$\{[^}]*\}", text)
    return text


@pytest.fixture()
def definition(definition_text) -> dict[str, Any]:
    return json.loads(definition_text)


# -- the validator --------------------------------------------------------------------------------------------------


def _targets(state: Mapping[str, Any]) -> list[str]:
    """Every state name a state may go to next."""
    found = [state["Next"]] if "Next" in state else []
    found += [choice["Next"] for choice in state.get("Choices", []) if "Next" in choice]
    found += [state["Default"]] if "Default" in state else []
    found += [catch["Next"] for catch in state.get("Catch", []) if "Next" in catch]
    return found


def _reachable(states: Mapping[str, Any], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in states:
            continue
        seen.add(name)
        todo.extend(_targets(states[name]))
    return seen


def _ends(state: Mapping[str, Any]) -> bool:
    return state.get("Type") in TERMINAL or state.get("End") is True


def _structure(states: Mapping[str, Any], start: Any) -> list[str]:
    found = []
    if start not in states:
        found.append(f"StartAt {start!r} names no state")
    for name, state in states.items():
        kind = state.get("Type")
        if kind not in TYPES:
            found.append(f"{name}: Type {kind!r} is not one of {', '.join(TYPES)}")
        for target in _targets(state):
            if target not in states:
                found.append(f"{name}: goes to {target!r}, which is no state")
        if kind not in (*TERMINAL, "Choice") and ("Next" in state) == (state.get("End") is True):
            found.append(f"{name}: needs exactly one of Next and End: true")
        if kind == "Choice" and not state.get("Choices"):
            found.append(f"{name}: a Choice without Choices")
    return found


def _paths(states: Mapping[str, Any], start: str) -> list[str]:
    """States not reachable from StartAt, and reachable states from which no path reaches an end."""
    reachable = _reachable(states, start)
    found = [f"{name}: not reachable from StartAt" for name in states if name not in reachable]
    finishing = {name for name, state in states.items() if _ends(state)}
    grew = True
    while grew:
        more = {name for name, state in states.items() if name not in finishing
                and any(target in finishing for target in _targets(state))}
        finishing |= more
        grew = bool(more)
    found += [f"{name}: no path from it reaches a Succeed, a Fail or an End" for name in sorted(reachable - finishing)]
    return found


def _task(name: str, state: Mapping[str, Any], steps: tuple[str, ...]) -> list[str]:
    resource = str(state.get("Resource", ""))
    found = []
    lambda_task = bool(LAMBDA_ARN.match(resource)) or resource == LAMBDA_INVOKE
    if not lambda_task and resource != SAGEMAKER_TRAINING:
        found.append(f"{name}: Resource {resource!r} is none of a Lambda function ARN, {LAMBDA_INVOKE}, "
                     f"{SAGEMAKER_TRAINING}")
    if lambda_task:
        parameters = state.get("Parameters") or {}
        payload = parameters.get("Payload", parameters) if resource == LAMBDA_INVOKE else parameters
        if payload.get("step") not in steps:
            found.append(f"{name}: step {payload.get('step')!r} is not one update_task.handle dispatches on")
        retried = {error for retry in state.get("Retry", []) for error in retry.get("ErrorEquals", [])}
        if LAMBDA_ERRORS - retried:
            found.append(f"{name}: no Retry on {', '.join(sorted(LAMBDA_ERRORS - retried))}")
    caught = {catch["Next"] for catch in state.get("Catch", []) if "States.ALL" in catch.get("ErrorEquals", [])}
    if name != FAILURE_HANDLER and caught != {FAILURE_HANDLER}:
        found.append(f"{name}: does not Catch States.ALL into {FAILURE_HANDLER}")
    return found


def problems(definition: Mapping[str, Any], steps: tuple[str, ...] = update_task.STEPS) -> list[str]:
    """What is wrong with a state machine definition (nothing: an empty list)."""
    states = definition.get("States") or {}
    start = definition.get("StartAt")
    found = _structure(states, start)
    if start in states:
        found += _paths(states, start)
    found += [problem for name, state in states.items() if state.get("Type") == "Task"
              for problem in _task(name, state, steps)]
    named = {_step(state) for state in states.values() if state.get("Type") == "Task"} - {None}
    found += [f"no Lambda task runs step {step!r}" for step in steps if step not in named]
    return found


def _step(state: Mapping[str, Any]) -> str | None:
    parameters = state.get("Parameters") or {}
    step = parameters.get("Payload", parameters).get("step")
    return None if step is None else str(step)


# -- the definition -------------------------------------------------------------------------------------------------


def test_moto_parses_the_definition_and_refuses_what_its_grammar_refuses(definition_text, monkeypatch):
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    role = f"arn:aws:iam::{ACCOUNT}:role/ferry-update"
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # off, moto parses nothing
        client = boto3.client("stepfunctions", region_name=REGION)
        arn = client.create_state_machine(name="ferry-update", definition=definition_text, roleArn=role,
                                          type="STANDARD")["stateMachineArn"]
        assert json.loads(client.describe_state_machine(stateMachineArn=arn)["definition"]) == \
            json.loads(definition_text)
        misspelt = json.loads(definition_text)
        misspelt["States"]["Lock"]["Type"] = "Taks"
        with pytest.raises(ClientError, match="Taks"):  # proof that it parses what it is given
            client.create_state_machine(name="misspelt", definition=json.dumps(misspelt), roleArn=role)


def test_the_definition_has_no_problem(definition):
    assert problems(definition) == []


def test_the_lambda_tasks_name_exactly_the_steps_handle_dispatches_on(definition):
    named = [_step(state) for state in definition["States"].values()
             if state.get("Type") == "Task" and state["Resource"] == FUNCTION_ARN]
    assert set(named) == set(update_task.STEPS)
    with pytest.raises(update_task.UpdateTaskError, match="unknown step 'train'"):  # and handle refuses others
        update_task.handle({"step": "train"}, registry=None, feedback=None, captures=None, s3=None,
                           cloudformation=None, events=None, lambda_client=None, settings=None)


def _walk(definition: Mapping[str, Any], results: Mapping[str, Any]) -> list[str]:
    """The states an execution visits when each step returns `results[step]` (Choices evaluated on them)."""
    states, name, state_data, visited = definition["States"], definition["StartAt"], {}, []
    while len(visited) < 50:
        visited.append(name)
        state = states[name]
        if state["Type"] in TERMINAL:
            return visited
        if state["Type"] == "Task":
            state_data[state["ResultPath"].removeprefix("$.")] = results.get(_step(state) or name, {})
        if state["Type"] == "Choice":
            name = next((choice["Next"] for choice in state["Choices"] if _holds(choice, state_data)),
                        state["Default"])
        else:
            name = state["Next"]
    raise AssertionError(f"no end after {visited}")


def _holds(choice: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    value: Any = data
    for part in choice["Variable"].removeprefix("$.").split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if "BooleanEquals" in choice:
        return value is choice["BooleanEquals"]
    return value == choice["StringEquals"]


HAPPY = {"lock": {"acquired": True}, "assemble": {"enough": True}, "register": {"passed": True},
         "deployed": {"state": "live"}, "release": {"outcome": "live"}}


def test_an_update_that_goes_live_runs_the_local_update_s_steps_in_its_order(definition):
    from ferry.update.steps import STEPS

    visited = _walk(definition, HAPPY)
    tasks = [definition["States"][name] for name in visited if definition["States"][name]["Type"] == "Task"]
    aws = [_step(task) or ("train" if task["Resource"] == SAGEMAKER_TRAINING else "?") for task in tasks]
    assert aws == ["lock", "assemble", "train", "gate", "register", "promote", "deployed", "release"]
    assert [local for step in aws for local in update_task.LOCAL_STEPS.get(step, ())] == list(STEPS)
    assert visited[-1] == "Done"


@pytest.mark.parametrize(("results", "end", "visits", "skips"), [
    ({**HAPPY, "lock": {"acquired": False}}, "Skipped", "Locked?", "Assemble"),
    ({**HAPPY, "assemble": {"enough": False, "wait": False}, "release": {"outcome": "not-enough-labels"}},
     "NotEnoughLabels", "Release", "Train"),
    ({**HAPPY, "register": {"passed": False}, "release": {"outcome": "rejected"}}, "Done", "Release", "Promote"),
    ({**HAPPY, "deployed": {"state": "rolled-back"}, "release": {"outcome": "rolled-back"}}, "Done",
     "WaitForDeployment", "ReleaseOnFailure"),
], ids=["lock-held", "not-enough-labels", "rejected", "rolled-back"])
def test_each_other_outcome_ends_where_it_should(definition, results, end, visits, skips):
    visited = _walk(definition, results)
    assert visited[-1] == end and visits in visited and skips not in visited
    assert ("Release" in visited) == (end != "Skipped")  # the lock is released whatever the outcome


def test_waiting_for_labels_loops_back_to_assemble_and_a_deployment_in_progress_is_polled(definition):
    states = definition["States"]
    assert states["WaitForLabels"] == {"Type": "Wait", "Seconds": 3600, "Next": "Assemble"}
    assert {"Variable": "$.assemble.wait", "BooleanEquals": True, "Next": "WaitForLabels"} in \
        states["Enough?"]["Choices"]
    assert states["WaitForDeployment"]["Next"] == "Deployed" and states["Deployed"]["Next"] == "Deployed?"
    assert states["Deployed?"]["Choices"][0] == {"Variable": "$.deployed.state", "StringEquals": "in-progress",
                                                  "Next": "WaitForDeployment"}
    assert states["Assemble"]["Parameters"]["max_waits"] == SUBSTITUTIONS["MaxWaitHours"]


def test_a_failure_releases_the_lock_then_fails_the_execution(definition):
    states = definition["States"]
    handler = states[FAILURE_HANDLER]
    assert _step(handler) == "release" and handler["Parameters"]["failed"] is True
    assert handler["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"
    assert [catch["Next"] for catch in handler["Catch"]] == ["Failed"]
    assert states["Promote"]["Retry"][-1]["ErrorEquals"] == [update_task.StackBusyError.__name__]


def test_the_training_job_gets_what_the_assemble_step_returns(definition):
    train = definition["States"]["Train"]
    parameters = train["Parameters"]
    assert parameters["AlgorithmSpecification"] == {"TrainingImage": SUBSTITUTIONS["TrainingImage"],
                                                     "TrainingInputMode": "File"}
    assert parameters["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert parameters["StoppingCondition"]["MaxRuntimeInSeconds"] > 0
    channels = {channel["ChannelName"]: channel["DataSource"]["S3DataSource"]["S3Uri.$"]
                for channel in parameters["InputDataConfig"]}
    assert channels == {"examples": "$.assemble.training.examples_uri", "live": "$.assemble.training.live_model_uri"}
    assert parameters["TrainingJobName.$"] == "$.assemble.training.job_name"
    assert parameters["HyperParameters.$"] == "$.assemble.training.hyperparameters"
    assert parameters["OutputDataConfig"] == {"S3OutputPath.$": "$.assemble.training.output_uri"}
    assert train["ResultSelector"]["model_uri.$"] == "$.ModelArtifacts.S3ModelArtifacts"
    assert "Retry" not in train  # a job's name is unique: a second attempt would be refused


def test_the_machine_is_logged_traced_and_started_by_the_monitor_s_event(machine):
    assert machine["LoggingConfiguration"]["Level"] == "ERROR"
    assert machine["TracingConfiguration"] == {"Enabled": True}
    assert machine["StateMachineType"] == "STANDARD"


# -- the validator catches what the others let through --------------------------------------------------------------


def _misspelt_type(definition: dict[str, Any]) -> None:
    definition["States"]["Gate"]["Type"] = "Taks"


def _start_at_no_state(definition: dict[str, Any]) -> None:
    definition["StartAt"] = "Start"


def _unreachable(definition: dict[str, Any]) -> None:
    definition["States"]["Forgotten"] = {"Type": "Pass", "Next": "Done"}


def _dangling_next(definition: dict[str, Any]) -> None:
    definition["States"]["Gate"]["Next"] = "Regsiter"


def _unknown_step(definition: dict[str, Any]) -> None:
    definition["States"]["Gate"]["Parameters"]["step"] = "gates"


def _endless_loop(definition: dict[str, Any]) -> None:
    definition["States"]["Deployed?"] = {"Type": "Choice", "Default": "WaitForDeployment", "Choices": [
        {"Variable": "$.deployed.state", "StringEquals": "live", "Next": "WaitForDeployment"}]}
    definition["States"]["Deployed"].pop("Catch")
    definition["States"]["Deployed"]["Retry"] = []


def _uncaught(definition: dict[str, Any]) -> None:
    del definition["States"]["Register"]["Catch"]


@pytest.mark.parametrize(("mutate", "expected"), [
    (_misspelt_type, "Gate: Type 'Taks' is not one of"),
    (_start_at_no_state, "StartAt 'Start' names no state"),
    (_unreachable, "Forgotten: not reachable from StartAt"),
    (_dangling_next, "Gate: goes to 'Regsiter', which is no state"),
    (_unknown_step, "Gate: step 'gates' is not one update_task.handle dispatches on"),
    (_endless_loop, "no path from it reaches a Succeed, a Fail or an End"),
    (_uncaught, "Register: does not Catch States.ALL into ReleaseOnFailure"),
], ids=["misspelt-type", "start-at-no-state", "unreachable", "dangling-next", "unknown-step", "endless-loop",
        "uncaught"])
def test_the_validator_catches(definition, mutate, expected):
    broken = copy.deepcopy(definition)
    mutate(broken)
    found = problems(broken)
    assert any(expected in problem for problem in found), found


def test_a_step_handle_dispatches_on_that_no_task_runs_is_a_problem(definition):
    assert "no Lambda task runs step 'rollback'" in problems(definition, (*update_task.STEPS, "rollback"))
