"""`ferry update`, `ferry promote`, `ferry rollback`, `ferry models history` against a running `ferry serve` (in a
subprocess, as a user runs them): what they ask of the serving stack, and a clear error with a non-zero exit for
every request that cannot be done. The whole loop is tests/e2e/test_update_loop.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Server, offline_env, run_ferry


@pytest.fixture(scope="module")
def server(serving_layers: Path, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("updates")
    served = Server(serving_layers, env={"FERRY_UPDATES_DIR": str(folder)})
    try:
        yield served
    finally:
        served.stop()


def test_before_any_update_the_registry_commands_say_what_is_missing(server):
    history = run_ferry("models", "history", "tiny-bert")
    assert history.returncode == 1 and "no registered version" in history.stderr
    promote = run_ferry("promote", "tiny-bert", "0123456789ab")
    assert promote.returncode == 1 and "no such version" in promote.stderr
    rollback = run_ferry("rollback", "tiny-bert")
    assert rollback.returncode == 1 and "no live version or canary" in rollback.stderr


def test_an_update_without_feedback_learns_nothing_and_the_live_version_is_registered(server):
    update = run_ferry("update", "tiny-bert", "--timeout", "120")
    assert update.returncode == 1, update.stdout + update.stderr
    assert "no labelled feedback" in update.stdout and "skipped" in update.stdout
    listed = run_ferry("models", "history", "tiny-bert", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert [entry["status"] for entry in document["versions"]] == ["live"]
    assert document["versions"][0]["history"][0]["to"] == "live"
    assert [event["outcome"] for event in document["events"]] == ["started"]
    text = run_ferry("models", "history", "tiny-bert")
    assert text.returncode == 0 and " live " in text.stdout


def test_an_embedding_model_is_not_updated_and_says_why(server):
    update = run_ferry("update", "minilm", "--timeout", "120")
    assert update.returncode == 1 and "updates are for text classifiers" in update.stdout


def test_without_a_serving_stack_the_commands_say_how_to_start_one(tmp_path):
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    for args in (("update", "tiny-bert"), ("models", "history", "tiny-bert"), ("rollback", "tiny-bert")):
        done = run_ferry(*args, "--template", str(tmp_path / "template.yaml"), env=offline_env())
        assert done.returncode == 1 and "ferry serve" in done.stderr and "Traceback" not in done.stderr
