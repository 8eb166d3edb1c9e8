"""The model registry (ferry.runtime.registry) over moto's DynamoDB in process: every status transition allowed and
refused, at most one live and one canary per model under concurrent writers, rollbacks, the update lock's lease,
recorded triggers and update checkpoints, and what a version item holds (no reference, no Decimal, under 400 KB)."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ferry.runtime.exceptions import RegistryError as RegistryErrorFromItsHome
from ferry.runtime.registry import (
    CURRENT_KEY,
    MAX_ITEM_BYTES,
    STATUSES,
    ConflictError,
    Entry,
    Registry,
    RegistryError,
    TransitionError,
    manifest_sha256,
)

NOW = 1_795_953_600.0  # 2026-11-29T12:00:00Z
MODEL = "sentiment"
TABLE = "ferry-registry"
# The transitions the registry allows, written out here rather than read from the module under test.
ALLOWED = {("candidate", "blessed"), ("candidate", "rejected"), ("blessed", "canary"), ("blessed", "live"),
           ("blessed", "rejected"), ("canary", "live"), ("canary", "rolled-back"), ("live", "retired"),
           ("live", "rolled-back"), ("retired", "canary"), ("retired", "live")}
FORCED = {(source, target) for source in ("rejected", "rolled-back", "candidate") for target in ("canary", "live")}


class Clock:
    """Epoch seconds that move only when a test says so (a tick on every read keeps times apart)."""

    def __init__(self, now: float = NOW, tick: float = 0.01):
        self.now, self.tick = now, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def dynamodb():
    """moto's DynamoDB, started once for the module (starting it takes a good part of a second)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "x")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            yield boto3.resource("dynamodb", region_name="us-east-1")


_TABLES = itertools.count()


def fresh_table(dynamodb: Any) -> Any:
    """A new registry table as the template declares ModelRegistryTable: model (S) hash, sk (S) range."""
    name = f"{TABLE}-{next(_TABLES)}"
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "model", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}],
                          AttributeDefinitions=[{"AttributeName": "model", "AttributeType": "S"},
                                                {"AttributeName": "sk", "AttributeType": "S"}])
    return dynamodb.Table(name)


@pytest.fixture()
def table(dynamodb):
    table = fresh_table(dynamodb)
    yield table
    table.delete()


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def registry(table, clock):
    return Registry(table, clock=clock)


def manifest(version: str, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"schema_version": 1, "name": model, "version": version, "task": "text-classification",
            "labels": ["negative", "positive"], "max_length": 128,
            "files": {"model.onnx": {"sha256": "a" * 64, "size": 1234}},
            "reference": {"token_length": {"edges": [3.0, 12.0, 25.0], "counts": [110, 140], "n": 250}}, **extra}


def artifacts(version: str) -> dict[str, str]:
    return {"layer": f"file:///layers/{version}.zip", "model": f"s3://ferry-artifacts/{MODEL}/{version}/"}


def add(registry: Registry, version: str, status: str = "candidate", model: str = MODEL) -> Entry:
    """A version of `model` brought to `status` through the registry's own calls (the others of the model
    involved: a live version to retire, one to roll back)."""
    def blessed(name: str) -> Entry:
        registry.register(manifest(name, model), artifacts(name), by="test", why="retrained")
        return registry.record_gate(model, name, {"summary": "better"}, passed=True, by="gate")

    if status in ("candidate", "rejected"):
        registry.register(manifest(version, model), artifacts(version), by="test", why="retrained")
        if status == "rejected":
            registry.record_gate(model, version, {"summary": "worse"}, passed=False, by="gate")
    elif status == "blessed":
        blessed(version)
    elif status in ("canary", "rolled-back"):
        blessed(version)
        registry.start_canary(model, version, by="test", why="try it")
        if status == "rolled-back":
            registry.rollback(model, by="test", why="worse in canary")
    elif status == "live":
        blessed(version)
        registry.go_live(model, version, by="test", why="promoted")
    elif status == "retired":
        add(registry, version, "live", model)
        add(registry, f"{version}-next", "live", model)
    entry = registry.get(model, version)
    assert entry is not None and entry.status == status
    return entry


def start(registry: Registry, version: str, status: str, model: str = MODEL) -> Entry:
    """A version of `model` in `status` by the fewest calls: registered in it when a version may start there,
    else through a canary (and its rollback)."""
    if status in ("canary", "rolled-back"):
        registry.register(manifest(version, model), artifacts(version), by="test", why="seed", status="blessed")
        entry = registry.start_canary(model, version, by="test", why="seed")
        if status == "rolled-back":
            entry = registry.rollback(model, by="test", why="seed")[0]
    else:
        entry = registry.register(manifest(version, model), artifacts(version), by="test", why="seed", status=status)
    return entry


def state(table: Any, model: str = MODEL) -> tuple[str | None, str | None, list[Entry]]:
    """(live, canary, versions) of `model`, after checking that at most one version is each and that the
    `current` item says the same."""
    versions = Registry(table).versions(model)
    statuses = [entry.status for entry in versions]
    assert statuses.count("live") <= 1 and statuses.count("canary") <= 1, (model, statuses)
    live = next((entry.version for entry in versions if entry.status == "live"), None)
    canary = next((entry.version for entry in versions if entry.status == "canary"), None)
    current = table.get_item(Key={"model": model, "sk": CURRENT_KEY}).get("Item") or {}
    assert (current.get("live"), current.get("canary")) == (live, canary), model
    return live, canary, versions


def consistent(table: Any, model: str = MODEL) -> tuple[str | None, str | None]:
    """(live, canary) of `model`, checked as state() checks them."""
    return state(table, model)[:2]


def no_decimal(value: Any) -> bool:
    if isinstance(value, Decimal):
        return False
    if isinstance(value, dict):
        return all(no_decimal(key) and no_decimal(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(no_decimal(item) for item in value)
    return True


# -- transitions ---------------------------------------------------------------------------------------------------

def pairs(force: bool) -> list[tuple[str, str]]:
    """Every (from, to) of two statuses; with force, those whose answer force could change (from a status that
    force lets go further)."""
    every = list(itertools.permutations(STATUSES, 2))
    return every if not force else [(source, target) for source, target in every
                                    if source in ("candidate", "rejected", "rolled-back")]


@pytest.mark.parametrize("force", [False, True], ids=["plain", "forced"])
def test_every_transition_is_allowed_or_refused_as_the_table_says(dynamodb, clock, force):
    for source, target in pairs(force):
        table, model = fresh_table(dynamodb), MODEL  # a table each: moto copies the whole table per transaction
        registry = Registry(table, clock=clock)
        expected = start(registry, "v1", source, model)
        if (source, target) in ALLOWED or (force and (source, target) in FORCED):
            moved = registry.transition(model, "v1", target, by="ops", why="because", force=force)
            assert (moved.status, moved.history[-1]["from"], moved.history[-1]["to"]) == (target, source, target)
            assert moved.history[-1].get("force", False) is force
            expected = moved
        else:
            with pytest.raises(TransitionError, match=f"{source} -> {target}") as refused:
                registry.transition(model, "v1", target, by="ops", why="because", force=force)
            assert (refused.value.current, refused.value.target) == (source, target)
        assert state(table, model)[2] == [expected], (source, target)
        table.delete()


def test_a_refusal_that_force_would_allow_says_so_and_an_unknown_status_is_refused(registry):
    add(registry, "v1", "rejected")
    with pytest.raises(TransitionError, match="needs force"):
        registry.go_live(MODEL, "v1", by="ops", why="try")
    with pytest.raises(TransitionError, match="'gone' is not a status"):
        registry.transition(MODEL, "v1", "gone", by="ops", why="try")
    with pytest.raises(RegistryError, match="no version 'v9'"):
        registry.transition(MODEL, "v9", "blessed", by="ops", why="try")
    assert isinstance(TransitionError("x"), RegistryError) and isinstance(ConflictError("x"), RegistryError)
    assert RegistryError is RegistryErrorFromItsHome


def test_moving_a_version_to_the_status_it_has_changes_nothing(registry):
    live = add(registry, "v1", "live")
    assert registry.go_live(MODEL, "v1", by="rerun", why="again") == (live, None)
    canary = add(registry, "v2", "canary")
    assert registry.start_canary(MODEL, "v2", by="rerun", why="again") == canary
    candidate = add(registry, "v3")
    gated = registry.record_gate(MODEL, "v3", {"summary": "fine"}, passed=True, by="gate")
    assert registry.record_gate(MODEL, "v3", {"summary": "other"}, passed=True, by="gate") == gated
    assert gated.revision == candidate.revision + 1


def test_force_is_recorded_in_the_history_with_the_reason(registry):
    add(registry, "v1", "live")
    add(registry, "v2", "rejected")
    live, retired = registry.go_live(MODEL, "v2", by="alice", why="the gate is wrong about slang", force=True)
    assert live.history[-1] == {"at": live.updated_at, "from": "rejected", "to": "live", "by": "alice",
                                "why": "the gate is wrong about slang", "force": True}
    assert retired is not None and retired.version == "v1" and retired.status == "retired"
    assert "force" not in retired.history[-1] and retired.history[-1]["why"].startswith("replaced by v2")
    assert registry.get(MODEL, "v2") == live
    assert all("force" not in step for step in live.history[:-1])


def test_the_gate_blesses_or_rejects_a_candidate_and_is_kept(registry):
    add(registry, "v1")
    add(registry, "v2")
    gate = {"summary": "accuracy 0.912 vs 0.905 live", "accuracy": 0.912, "delta": 0.1 + 0.2, "nan": float("nan")}
    blessed = registry.record_gate(MODEL, "v1", gate, passed=True, by="gate")
    assert blessed.status == "blessed" and blessed.history[-1]["why"] == "accuracy 0.912 vs 0.905 live"
    assert blessed.gate == {**gate, "nan": None} and blessed.gate["delta"] == 0.1 + 0.2
    rejected = registry.record_gate(MODEL, "v2", {"accuracy": 0.5}, passed=False, by="gate")
    assert rejected.status == "rejected" and rejected.history[-1]["why"] == "the gate refused it"
    assert registry.get(MODEL, "v1") == blessed and registry.get(MODEL, "v2") == rejected
    with pytest.raises(TransitionError, match="rejected -> blessed"):
        registry.record_gate(MODEL, "v2", gate, passed=True, by="gate")
    regated = registry.record_gate(MODEL, "v1", {"summary": "worse on new labels"}, passed=False, by="gate")
    assert (regated.status, regated.gate) == ("rejected", {"summary": "worse on new labels"})


def test_a_gate_after_the_candidate_stage_is_refused(registry):
    add(registry, "v1", "live")
    with pytest.raises(TransitionError, match="live -> blessed"):
        registry.record_gate(MODEL, "v1", {"summary": "x"}, passed=True, by="gate")


# -- one live, one canary ------------------------------------------------------------------------------------------

def interleaved(first: Registry, action) -> None:
    """`first` reads the registry, then `action()` commits (as another writer), then `first` writes what it
    decided from its now stale read."""
    read = first._snapshot

    def read_then_let_the_other_commit(model: str):
        seen = read(model)
        action()
        return seen

    first._snapshot = read_then_let_the_other_commit  # type: ignore[method-assign]


@pytest.mark.parametrize("with_live", [True, False], ids=["replacing-live", "first-live"])
def test_of_two_concurrent_go_lives_exactly_one_wins(table, clock, with_live):
    if with_live:
        add(Registry(table, clock=clock), "v1", "live")
    one, other = Registry(table, clock=clock), Registry(table, clock=clock)
    add(one, "v2", "blessed")
    add(one, "v3", "blessed")
    interleaved(one, lambda: other.go_live(MODEL, "v3", by="other", why="mine"))
    with pytest.raises(ConflictError, match="another writer"):
        one.go_live(MODEL, "v2", by="one", why="mine")
    assert consistent(table) == ("v3", None)
    assert one.get(MODEL, "v2").status == "blessed" and one.get(MODEL, "v2").revision == 2
    assert [entry.status for entry in one.versions(MODEL)].count("live") == 1
    if with_live:
        assert one.get(MODEL, "v1").status == "retired"


def test_of_two_concurrent_canaries_exactly_one_wins(table, clock):
    one, other = Registry(table, clock=clock), Registry(table, clock=clock)
    add(one, "v1", "live")
    add(one, "v2", "blessed")
    add(one, "v3", "blessed")
    interleaved(one, lambda: other.start_canary(MODEL, "v3", by="other", why="mine"))
    with pytest.raises(ConflictError):
        one.start_canary(MODEL, "v2", by="one", why="mine")
    assert consistent(table) == ("v1", "v3")
    with pytest.raises(RegistryError, match="v3 is in canary"):
        other.start_canary(MODEL, "v2", by="other", why="a second one")


def test_a_rollback_racing_a_promotion_leaves_one_of_them(table, clock):
    one, other = Registry(table, clock=clock), Registry(table, clock=clock)
    add(one, "v1", "live")
    add(one, "v2", "live")  # v1 retired
    add(one, "v3", "blessed")
    interleaved(one, lambda: other.go_live(MODEL, "v3", by="other", why="promote"))
    with pytest.raises(ConflictError):
        one.rollback(MODEL, by="one", why="v2 degraded")
    assert consistent(table) == ("v3", None)
    assert {entry.version: entry.status for entry in one.versions(MODEL)} == {
        "v1": "retired", "v2": "retired", "v3": "live"}


def test_a_single_item_transition_is_conditional_on_what_was_read(table, clock):
    one, other = Registry(table, clock=clock), Registry(table, clock=clock)
    add(one, "v1", "blessed")
    interleaved(one, lambda: other.transition(MODEL, "v1", "rejected", by="other", why="second thoughts"))
    with pytest.raises(ConflictError):
        one.transition(MODEL, "v1", "rejected", by="one", why="too")
    assert [step["by"] for step in one.get(MODEL, "v1").history] == ["test", "gate", "other"]


def test_promoting_the_canary_ends_the_canary_and_retires_the_live_version(registry, table):
    add(registry, "v1", "live")
    add(registry, "v2", "canary")
    assert consistent(table) == ("v1", "v2")
    live, retired = registry.go_live(MODEL, "v2", by="loop", why="canary healthy")
    assert (live.status, retired.version, retired.status) == ("live", "v1", "retired")
    assert consistent(table) == ("v2", None) and registry.canary(MODEL) is None


def test_a_canary_can_run_without_a_live_version_and_a_live_one_can_be_retired_alone(registry, table):
    add(registry, "v1", "canary")
    assert consistent(table) == (None, "v1")
    registry.go_live(MODEL, "v1", by="loop", why="ok")
    registry.transition(MODEL, "v1", "retired", by="ops", why="model withdrawn")
    assert consistent(table) == (None, None)
    assert registry.live(MODEL) is None


# -- rollback ------------------------------------------------------------------------------------------------------

def test_rollback_with_a_canary_rolls_back_the_canary_only(registry, table):
    add(registry, "v1", "live")
    add(registry, "v2", "canary")
    back, live = registry.rollback(MODEL, by="loop", why="canary error rate 4%")
    assert (back.version, back.status, back.history[-1]["why"]) == ("v2", "rolled-back", "canary error rate 4%")
    assert live is not None and live == registry.get(MODEL, "v1") and live.status == "live"
    assert consistent(table) == ("v1", None)


def test_rollback_without_a_canary_puts_back_the_version_retired_last(registry, table, clock):
    add(registry, "v1", "live")
    clock.advance(60)
    registry.register(manifest("v2"), artifacts("v2"), by="test", why="retrained")
    registry.record_gate(MODEL, "v2", {}, passed=True, by="gate")
    registry.go_live(MODEL, "v2", by="loop", why="better")  # v1 retired
    clock.advance(60)
    registry.register(manifest("v3"), artifacts("v3"), by="test", why="retrained")
    registry.record_gate(MODEL, "v3", {}, passed=True, by="gate")
    registry.go_live(MODEL, "v3", by="loop", why="better")  # v2 retired, after v1
    back, live = registry.rollback(MODEL, by="loop", why="accuracy dropped")
    assert (back.version, back.status, live.version, live.status) == ("v3", "rolled-back", "v2", "live")
    assert live.history[-1]["why"] == "rollback from v3: accuracy dropped"
    assert consistent(table) == ("v2", None)
    back, live = registry.rollback(MODEL, by="loop", why="still bad")
    assert (back.version, live.version) == ("v2", "v1")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(MODEL, by="loop", why="and again")
    assert consistent(table) == ("v1", None)


def test_rollback_with_nothing_to_roll_back_to(registry):
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(MODEL, by="loop", why="no versions at all")
    add(registry, "v1", "live")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(MODEL, by="loop", why="only one version")
    assert registry.live(MODEL).version == "v1"


# -- registering ---------------------------------------------------------------------------------------------------

def test_registering_twice_returns_the_first_entry_unchanged(registry, clock):
    first = registry.register(manifest("v1"), artifacts("v1"), by="loop", why="retrained on feedback",
                              training={"steps": 120, "loss": 0.25})
    assert (first.status, first.revision, first.by, first.training) == ("candidate", 1, "loop",
                                                                         {"steps": 120, "loss": 0.25})
    assert first.history == ({"at": first.created_at, "from": "", "to": "candidate", "by": "loop",
                              "why": "retrained on feedback"},)
    clock.advance(3600)
    again = registry.register(manifest("v1", extra=1), {"layer": "file:///elsewhere"}, by="rerun", why="killed")
    assert again == first
    registry.record_gate(MODEL, "v1", {}, passed=True, by="gate")
    assert registry.register(manifest("v1"), artifacts("v1"), by="rerun", why="x").status == "blessed"


def test_a_registration_racing_its_own_rerun_keeps_the_first(table, clock):
    one, other = Registry(table, clock=clock), Registry(table, clock=clock)
    build = one._version_item

    def meanwhile_the_other_registers(*args: Any, **kwargs: Any) -> dict[str, Any]:
        other.register(manifest("v1"), artifacts("v1"), by="other", why="first")
        return build(*args, **kwargs)

    one._version_item = meanwhile_the_other_registers  # type: ignore[method-assign]
    entry = one.register(manifest("v1"), artifacts("v1"), by="one", why="second")
    assert (entry.by, entry.revision, entry.history[0]["why"]) == ("other", 1, "first")
    assert one.versions(MODEL) == [entry]


def test_registering_refuses_statuses_a_version_cannot_start_in(registry):
    for status in ("canary", "rolled-back", "unknown"):
        with pytest.raises(TransitionError):
            registry.register(manifest("v1"), artifacts("v1"), by="x", why="y", status=status)
    with pytest.raises(RegistryError, match="names its model and version"):
        registry.register({"name": MODEL}, {}, by="x", why="y")
    with pytest.raises(RegistryError, match="artifacts"):
        registry.register(manifest("v1"), {"layer": 3}, by="x", why="y")  # type: ignore[dict-item]
    assert registry.register(manifest("v0"), {}, by="x", why="old", status="retired").status == "retired"
    assert registry.versions(MODEL)[0].version == "v0"


def test_adopt_registers_the_deployed_version_live_once(registry, table):
    live = registry.adopt(manifest("v1"), artifacts("v1"))
    assert (live.status, live.by, live.history[0]["why"]) == ("live", "ferry", "deployed before the registry knew it")
    assert consistent(table) == ("v1", None)
    assert registry.adopt(manifest("v1"), artifacts("v1"), by="again") == live
    with pytest.raises(RegistryError, match="v1 is live"):
        registry.adopt(manifest("v2"), artifacts("v2"))
    assert registry.get(MODEL, "v2") is None
    candidate = add(registry, "v3")
    assert registry.adopt(manifest("v3"), artifacts("v3")) == candidate  # registered already: unchanged
    assert consistent(table) == ("v1", None)


def test_a_big_manifest_is_stored_without_its_reference_under_the_item_limit(registry, table):
    rows = 3000
    text = "a reference text as long as a tweet can be, kept by the build for the monitor's drift tests, number"
    reference = {"sample": {"texts": [f"{text} {i}" for i in range(rows)],
                            "scores": [i / 3001 for i in range(rows)], "token_lengths": list(range(rows)),
                            "labels": ["positive" if i % 2 else "negative" for i in range(rows)]}}
    big = {**manifest("v1"), "reference": reference}
    assert len(json.dumps(big)) > MAX_ITEM_BYTES  # as it is, it would not fit in an item
    entry = registry.register(big, artifacts("v1"), by="loop", why="retrained")
    assert "reference" not in entry.manifest and entry.manifest["labels"] == ["negative", "positive"]
    assert entry.manifest_sha256 == manifest_sha256(big) != manifest_sha256(entry.manifest)
    item = table.get_item(Key={"model": MODEL, "sk": "v#v1"})["Item"]
    assert len(json.dumps(item, default=str).encode()) < MAX_ITEM_BYTES / 10
    huge = {**manifest("v2"), "notes": ["x" * 1000] * 400}  # 400 KB that is not the reference
    with pytest.raises(RegistryError, match="KB"):
        registry.register(huge, artifacts("v2"), by="loop", why="retrained")
    assert registry.get(MODEL, "v2") is None


def test_manifest_digest_ignores_key_order():
    one = manifest("v1")
    assert manifest_sha256(one) == manifest_sha256(dict(reversed(list(one.items()))))
    assert manifest_sha256(one) != manifest_sha256(manifest("v2"))


# -- reading ---------------------------------------------------------------------------------------------------

def test_no_decimal_leaves_the_registry(registry, clock):
    add(registry, "v1", "live")
    add(registry, "v2", "blessed")
    registry.go_live(MODEL, "v2", by="loop", why="better")
    lease = registry.acquire(MODEL, "u1", 90.5)
    expires = clock.now + 90.5
    record = registry.start_update(MODEL, "u1", "loop")
    registry.record_step(MODEL, "u1", "train", {"loss": 0.125, "steps": 40})
    registry.record_event(MODEL, "e1", outcome="started", detail="ModelDegraded", update_id=record.update_id)
    for entry in registry.versions(MODEL):
        assert no_decimal(entry.to_dict()) and no_decimal(list(entry.__dict__.values()))
        assert isinstance(entry.revision, int) and json.loads(json.dumps(entry.to_dict())) == entry.to_dict()
    assert no_decimal(registry.lock_holder(MODEL)) and isinstance(lease.expires_at, float)
    assert registry.lock_holder(MODEL)["expires_at"] == lease.expires_at == pytest.approx(expires, abs=0.001)
    assert no_decimal(registry.get_update(MODEL, "u1").to_dict())
    assert no_decimal([event.to_dict() for event in registry.events(MODEL)])
    assert registry.get_update(MODEL, "u1").steps == {"train": {"loss": 0.125, "steps": 40}}


def test_history_is_kept_in_order(registry, clock):
    add(registry, "v1", "live")
    registry.register(manifest("v2"), artifacts("v2"), by="loop", why="retrained")
    registry.record_gate(MODEL, "v2", {"summary": "better by 1.2 points"}, passed=True, by="gate")
    registry.start_canary(MODEL, "v2", by="loop", why="10% of traffic")
    registry.go_live(MODEL, "v2", by="loop", why="canary healthy")
    registry.rollback(MODEL, by="monitor", why="accuracy dropped")
    entry = registry.get(MODEL, "v2")
    steps = [(step["from"], step["to"], step["by"]) for step in entry.history]
    assert steps == [("", "candidate", "loop"), ("candidate", "blessed", "gate"), ("blessed", "canary", "loop"),
                     ("canary", "live", "loop"), ("live", "rolled-back", "monitor")]
    times = [step["at"] for step in entry.history]
    assert times == sorted(times) and len(set(times)) == len(times) and entry.revision == len(entry.history)
    assert entry.history[-1]["at"] == entry.updated_at and entry.history[0]["at"] == entry.created_at
    assert [step["to"] for step in registry.get(MODEL, "v1").history] == [
        "candidate", "blessed", "live", "retired", "live"]


def test_versions_newest_first_and_models(registry, clock):
    assert registry.versions(MODEL) == [] and registry.models() == [] and registry.live(MODEL) is None
    for version in ("v1", "v2", "v3"):
        add(registry, version)
        clock.advance(10)
    add(registry, "a", model="minilm")
    assert [entry.version for entry in registry.versions(MODEL)] == ["v3", "v2", "v1"]
    assert registry.models() == ["minilm", MODEL]
    assert registry.get(MODEL, "nope") is None
    registry.acquire("locked-only", "u", 10)
    registry.record_event("events-only", "e", outcome="skipped", detail="x")
    assert registry.models() == ["minilm", MODEL]


# -- the lock ------------------------------------------------------------------------------------------------------

def test_the_lock_is_held_by_one_owner_until_its_lease_expires(registry, clock):
    lease = registry.acquire(MODEL, "update-1", 60, what="retraining")
    assert lease is not None and lease.owner == "update-1"
    assert lease.expires_at == pytest.approx(clock.now + 60, abs=0.001)
    assert registry.acquire(MODEL, "update-2", 60) is None
    assert registry.acquire("minilm", "update-2", 60) is not None  # one lock per model
    holder = registry.lock_holder(MODEL)
    assert (holder["owner"], holder["what"]) == ("update-1", "retraining")
    clock.advance(30)
    assert lease.renew(60) and lease.expires_at == pytest.approx(clock.now + 60, abs=0.01)
    clock.advance(45)
    assert registry.acquire(MODEL, "update-2", 60) is None  # renewed: still held
    clock.advance(20)
    assert registry.lock_holder(MODEL) is None  # expired
    taken = registry.acquire(MODEL, "update-2", 60, what="rollback")
    assert taken is not None and registry.lock_holder(MODEL)["owner"] == "update-2"
    assert not lease.renew(60) and not lease.release()  # no longer update-1's: no-ops
    assert registry.lock_holder(MODEL)["owner"] == "update-2"
    assert taken.release() and registry.lock_holder(MODEL) is None and not taken.release()


def test_the_same_owner_takes_its_lock_back(registry, clock):
    first = registry.acquire(MODEL, "update-1", 60)
    clock.advance(10)
    again = registry.acquire(MODEL, "update-1", 120, what="rerun")
    assert again is not None and again.expires_at > first.expires_at
    assert registry.lock_holder(MODEL)["what"] == "rerun"
    with pytest.raises(RegistryError, match="positive lease"):
        registry.acquire(MODEL, "update-1", 0)


# -- events and update checkpoints -------------------------------------------------------------------------------

def test_an_event_recorded_twice_keeps_the_first(registry, clock):
    first = registry.record_event(MODEL, "evt-1", outcome="started", detail="ModelDegraded: accuracy",
                                  update_id="u1")
    clock.advance(5)
    again = registry.record_event(MODEL, "evt-1", outcome="skipped", detail="redelivered")
    assert again == first and first.update_id == "u1" and first.outcome == "started"
    clock.advance(5)
    second = registry.record_event(MODEL, "evt-2", outcome="skipped", detail="an update is running")
    assert second.update_id is None and second.epoch_ms > first.epoch_ms
    assert registry.events(MODEL) == [second, first]
    assert registry.events(MODEL, limit=1) == [second]
    assert registry.events("minilm") == []


def test_update_checkpoints_record_each_step_and_read_back(registry, clock):
    started = registry.start_update(MODEL, "u1", "loop")
    assert (started.state, started.steps, started.error) == ("running", {}, None)
    assert registry.running_update(MODEL) == started
    registry.record_step(MODEL, "u1", "train", {"model_dir": "/tmp/x", "loss": 0.31})
    clock.advance(1)
    registry.record_step(MODEL, "u1", "build", {"layer": "file:///l.zip", "sizes": [1, 2.5]})
    clock.advance(1)
    registry.record_step(MODEL, "u1", "gate", {"passed": True, "accuracy": 0.9})
    rerun = registry.start_update(MODEL, "u1", "rerun")  # a rerun finds what is done
    assert list(rerun.steps) == ["train", "build", "gate"] and rerun.by == "loop"
    assert rerun.steps["build"] == {"layer": "file:///l.zip", "sizes": [1, 2.5]} and rerun.done("gate")
    failed = registry.finish_update(MODEL, "u1", "failed", error="canary error rate 4%")
    assert (failed.state, failed.error) == ("failed", "canary error rate 4%")
    assert registry.running_update(MODEL) is None
    clock.advance(60)
    registry.start_update(MODEL, "u2", "loop")
    done = registry.finish_update(MODEL, "u2", "done")
    assert done.error is None and done.state == "done"
    assert [record.update_id for record in registry.updates(MODEL)] == ["u2", "u1"]
    assert registry.get_update(MODEL, "u1") == failed and registry.get_update(MODEL, "u3") is None
    with pytest.raises(RegistryError, match="no update 'u3'"):
        registry.record_step(MODEL, "u3", "train", {})
    with pytest.raises(RegistryError, match="state"):
        registry.finish_update(MODEL, "u2", "exploded")
    with pytest.raises(RegistryError, match="not JSON-able"):
        registry.record_step(MODEL, "u2", "train", {"path": object()})
