"""The model registry: every version of every model, the one place that says which is live, and the maintenance
loop's lock, triggers and checkpoints, in one DynamoDB table (``model`` S hash key, ``sk`` S range key).

**Statuses.** A version is registered ``candidate`` (a retrained model), is ``blessed`` or ``rejected`` by the
gate against the live model, goes ``canary`` and then ``live``; the live version it replaces is ``retired``, and
a version taken back is ``rolled-back``. :data:`TRANSITIONS` lists every allowed change; with ``force`` (``ferry
promote --force``, which skips the gate) a ``candidate``, ``rejected`` or ``rolled-back`` version may also go
``canary`` or ``live``, and its history entry says so. Anything else is a :class:`TransitionError`. Moving a
version to the status it has already is no change and no error (a rerun of a killed update repeats its last step).

**At most one live and one canary per model, without reading then writing.** Every write that moves a version
into or out of ``live`` or ``canary`` is one ``TransactWriteItems``: each version item it changes, conditioned
on the revision it read, and the model's ``current`` item (``live`` and ``canary`` versions and a revision),
conditioned on its revision. The ``current`` item is the point where such writers meet: without it, two writers
that each read "no live version" would both succeed, as each transaction's conditions would hold only on its
own version item. It is read before the versions, so that a snapshot in which a transaction is half visible
(a Query is only read-committed against transactions) always fails its commit: of two writers racing, exactly
one wins and the other gets :class:`ConflictError` with nothing written. Which version is live is read from the
version items' statuses, which the same transactions keep in step with ``current``.

**Items** (sort keys)::

    v#<version>      model, version, status, created_at, updated_at (ISO 8601 UTC), by (who registered it),
                     manifest (JSON of the manifest less its bulky ``reference``), manifest_sha256 (of the whole
                     manifest: :func:`manifest_sha256`), artifacts (map name -> URI), training and gate (JSON,
                     absent when none), history (list of {at, from, to, by, why[, force]}, oldest first; ``from``
                     is "" on registration), revision (N, one more on every write)
    current          live, canary (versions; absent when none), revision, updated_at
    lock             owner, acquired_at (ISO), expires_at (N, epoch seconds), what: the update lock's lease
    event#<13-digit epoch ms>#<event id>
                     event_id, received_at (ISO), epoch_ms, outcome ("started", "skipped"), detail, update_id
    event-id#<event id>
                     the sort key of that event's item: what makes recording an event id twice keep the first
    update#<update id>
                     update_id, by, started_at, updated_at, state (UPDATE_STATES), error, steps (map step ->
                     {at, result: JSON}): an update run's checkpoint, so that a rerun skips finished steps

Manifests, training summaries and gates are stored as JSON strings: their floats would otherwise have to be
Decimals (and NaN cannot be one); nothing read back is ever a Decimal. This module imports only boto3 and the
standard library (it runs in Lambda).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ferry.runtime.aws import plain
from ferry.runtime.capture import error_code
from ferry.runtime.exceptions import ConflictError as ConflictError  # importable from here
from ferry.runtime.exceptions import RegistryError as RegistryError
from ferry.runtime.exceptions import TransitionError as TransitionError

CANDIDATE, BLESSED, REJECTED, CANARY, LIVE, RETIRED, ROLLED_BACK = (
    "candidate", "blessed", "rejected", "canary", "live", "retired", "rolled-back")
STATUSES = (CANDIDATE, BLESSED, REJECTED, CANARY, LIVE, RETIRED, ROLLED_BACK)
TRANSITIONS: Mapping[str, frozenset[str]] = {
    CANDIDATE: frozenset({BLESSED, REJECTED}),
    BLESSED: frozenset({CANARY, LIVE, REJECTED}),
    CANARY: frozenset({LIVE, ROLLED_BACK}),
    LIVE: frozenset({RETIRED, ROLLED_BACK}),
    RETIRED: frozenset({CANARY, LIVE}),  # a rollback's target, or a re-promotion
    REJECTED: frozenset(),
    ROLLED_BACK: frozenset(),
}
FORCED_FROM = frozenset({CANDIDATE, REJECTED, ROLLED_BACK})  # with force, these may also go...
FORCED_TO = frozenset({CANARY, LIVE})  # ...here: `ferry promote --force` skips the gate
REGISTERED_AS = (CANDIDATE, BLESSED, REJECTED, RETIRED, LIVE)  # live: only when no version is (see adopt)
UPDATE_STATES = ("running", "done", "failed", "rejected", "rolled-back", "skipped")
EVENT_OUTCOMES = ("started", "skipped")  # what a recorded trigger led to (others are accepted too)

VERSION_PREFIX = "v#"
CURRENT_KEY = "current"
LOCK_KEY = "lock"
EVENT_PREFIX = "event#"
EVENT_ID_PREFIX = "event-id#"
UPDATE_PREFIX = "update#"
DROPPED_MANIFEST_KEYS = ("reference",)  # the monitor's reference sample: thousands of rows, in the layer anyway
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's limit on an item
ITEM_BYTES_KEPT = 350 * 1024  # what a version item may take when written: the rest is room for its history


def manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """The sha256 of a manifest (all of it, reference included) as canonical JSON: keys sorted, no spaces,
    UTF-8. Two equal manifests have the same digest whatever their key order or indentation on disk."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def allowed(current: str, target: str, force: bool = False) -> bool:
    """Whether a version of status `current` may move to `target` (with `force`: skipping the gate)."""
    return target in TRANSITIONS.get(current, frozenset()) or (
        force and current in FORCED_FROM and target in FORCED_TO)


def check_transition(model: str, version: str, current: str, target: str, force: bool = False) -> None:
    """:class:`TransitionError` naming both statuses unless `current` -> `target` is allowed."""
    if target not in STATUSES:
        raise TransitionError(f"{model} {version}: {target!r} is not a status ({', '.join(STATUSES)})",
                              current=current, target=target)
    if allowed(current, target, force):
        return
    choices = sorted(TRANSITIONS.get(current, frozenset()))
    hint = f"from {current} a version may go {' or '.join(choices)}" if choices else f"{current} is final"
    if not force and allowed(current, target, force=True):
        hint += f"; {current} -> {target} needs force (it skips the gate)"
    raise TransitionError(f"{model} {version}: {current} -> {target} is not allowed: {hint}",
                          current=current, target=target)


# -- what is read ------------------------------------------------------------------------------------------------

def _loads(value: Any) -> Any:
    return None if value is None else json.loads(value)


@dataclass(frozen=True)
class Entry:
    """One version of one model as the registry holds it. Every value is plain Python (no Decimal)."""

    model: str
    version: str
    status: str
    created_at: str
    updated_at: str
    by: str
    manifest: dict[str, Any]
    manifest_sha256: str
    artifacts: dict[str, str]
    training: dict[str, Any] | None
    gate: dict[str, Any] | None
    history: tuple[dict[str, Any], ...]
    revision: int

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Entry:
        values = plain(dict(item))
        return cls(model=values["model"], version=values["version"], status=values["status"],
                   created_at=values["created_at"], updated_at=values.get("updated_at", values["created_at"]),
                   by=values.get("by", ""), manifest=_loads(values.get("manifest")) or {},
                   manifest_sha256=values.get("manifest_sha256", ""),
                   artifacts={str(key): str(uri) for key, uri in (values.get("artifacts") or {}).items()},
                   training=_loads(values.get("training")), gate=_loads(values.get("gate")),
                   history=tuple(values.get("history") or ()), revision=int(values.get("revision", 0)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``ferry models history --json``)."""
        return {"model": self.model, "version": self.version, "status": self.status,
                "created_at": self.created_at, "updated_at": self.updated_at, "by": self.by,
                "manifest": self.manifest, "manifest_sha256": self.manifest_sha256, "artifacts": dict(self.artifacts),
                "training": self.training, "gate": self.gate, "history": [dict(entry) for entry in self.history],
                "revision": self.revision}

    def moved_at(self, status: str) -> str:
        """When this version last went `status` ("" if it never did)."""
        return next((str(entry.get("at", "")) for entry in reversed(self.history) if entry.get("to") == status), "")


@dataclass(frozen=True)
class EventRecord:
    """A trigger the maintenance loop received (e.g. a ModelDegraded event) and what it led to."""

    model: str
    event_id: str
    received_at: str
    epoch_ms: int
    outcome: str
    detail: str
    update_id: str | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> EventRecord:
        values = plain(dict(item))
        return cls(model=values["model"], event_id=values["event_id"], received_at=values["received_at"],
                   epoch_ms=int(values["epoch_ms"]), outcome=values["outcome"], detail=values.get("detail", ""),
                   update_id=values.get("update_id"))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "event_id": self.event_id, "received_at": self.received_at,
                "epoch_ms": self.epoch_ms, "outcome": self.outcome, "detail": self.detail,
                "update_id": self.update_id}


@dataclass(frozen=True)
class UpdateRecord:
    """An update run's checkpoint: its state and each finished step's result (in the order they finished), so
    that a rerun of the same update id skips them."""

    model: str
    update_id: str
    by: str
    started_at: str
    updated_at: str
    state: str
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    step_at: dict[str, str] = field(default_factory=dict)  # when each step finished
    error: str | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> UpdateRecord:
        values = plain(dict(item))
        stored = values.get("steps") or {}
        order = sorted(stored, key=lambda name: (str(stored[name].get("at", "")), name))
        return cls(model=values["model"], update_id=values["update_id"], by=values.get("by", ""),
                   started_at=values["started_at"], updated_at=values.get("updated_at", values["started_at"]),
                   state=values["state"], steps={name: json.loads(stored[name]["result"]) for name in order},
                   step_at={name: str(stored[name].get("at", "")) for name in order}, error=values.get("error"))

    def done(self, step: str) -> bool:
        return step in self.steps

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "update_id": self.update_id, "by": self.by, "started_at": self.started_at,
                "updated_at": self.updated_at, "state": self.state, "steps": self.steps, "step_at": self.step_at,
                "error": self.error}


@dataclass(frozen=True)
class _Snapshot:
    """A model's versions (newest first) and the revision of its ``current`` item, read in that order's reverse."""

    model: str
    revision: int
    versions: tuple[Entry, ...]

    def find(self, status: str) -> Entry | None:
        return next((entry for entry in self.versions if entry.status == status), None)

    def require(self, version: str) -> Entry:
        entry = next((entry for entry in self.versions if entry.version == version), None)
        if entry is None:
            raise RegistryError(f"{self.model} has no version {version!r} in the registry: register it first")
        return entry


@dataclass(frozen=True)
class _Move:
    """One version item's change: the transaction's operation, and the entry as it will be once committed."""

    operation: dict[str, Any]
    entry: Entry


# -- the lock ----------------------------------------------------------------------------------------------------

class Lease:
    """The update lock of one model, held by `owner` until `expires_at` (epoch seconds) unless renewed."""

    def __init__(self, registry: Registry, model: str, owner: str, expires_at: float, what: str = ""):
        self.registry, self.model, self.owner, self.expires_at, self.what = registry, model, owner, expires_at, what

    def renew(self, lease_s: float) -> bool:
        """The lease extended to `lease_s` from now; False when the lock is no longer this owner's (it expired
        and another took it, or it was released)."""
        expires_at = self.registry._lock_update(self.model, self.owner, lease_s)
        if expires_at is None:
            return False
        self.expires_at = expires_at
        return True

    def release(self) -> bool:
        """The lock given up; False (and nothing done) when it is no longer this owner's."""
        return self.registry._lock_release(self.model, self.owner)

    def __repr__(self) -> str:
        return f"Lease(model={self.model!r}, owner={self.owner!r}, expires_at={self.expires_at!r})"


# -- the registry ------------------------------------------------------------------------------------------------

class Registry:
    """The registry of one table (a boto3 DynamoDB Table resource); `clock` gives epoch seconds (tests pass
    their own)."""

    def __init__(self, table: Any, clock: Callable[[], float] = time.time):
        self.table = table
        self.clock = clock
        self._client = table.meta.client  # a resource's client: it takes and gives plain values, as the table does

    # -- versions: reading

    def get(self, model: str, version: str) -> Entry | None:
        item = self.table.get_item(Key=self._key(model, VERSION_PREFIX + version), ConsistentRead=True).get("Item")
        return Entry.from_item(item) if item else None

    def versions(self, model: str) -> list[Entry]:
        """Every version of `model`, newest first (by created_at, then version)."""
        entries = [Entry.from_item(item) for item in self._query(model, VERSION_PREFIX)]
        return sorted(entries, key=lambda entry: (entry.created_at, entry.version), reverse=True)

    def live(self, model: str) -> Entry | None:
        return next((entry for entry in self.versions(model) if entry.status == LIVE), None)

    def canary(self, model: str) -> Entry | None:
        return next((entry for entry in self.versions(model) if entry.status == CANARY), None)

    def models(self) -> list[str]:
        """Every model with a version in the registry, sorted."""
        from boto3.dynamodb.conditions import Attr

        names: set[str] = set()
        arguments: dict[str, Any] = {"FilterExpression": Attr("sk").begins_with(VERSION_PREFIX),
                                     "ProjectionExpression": "#model", "ExpressionAttributeNames": {"#model": "model"}}
        while True:
            page = self.table.scan(**arguments)
            names.update(str(item["model"]) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(names)
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- versions: registering

    def register(self, manifest: Mapping[str, Any], artifacts: Mapping[str, str], *, by: str, why: str,
                 training: Mapping[str, Any] | None = None, status: str = CANDIDATE) -> Entry:
        """The version of `manifest` (its ``name`` and ``version``) recorded with its artifacts' URIs. A version
        registered already is returned unchanged (a rerun of a killed update). `status` is candidate, blessed,
        rejected or retired; live only when the model has no live version (see :meth:`adopt`)."""
        model, version = _identity(manifest)
        if status not in REGISTERED_AS:
            raise TransitionError(f"{model} {version}: a version is registered as {', '.join(REGISTERED_AS)}, "
                                  f"not {status!r}", current="", target=status)
        existing = self.get(model, version) if status == LIVE else None  # else the condition finds it
        if existing is not None:
            return existing
        item = self._version_item(model, version, manifest, artifacts, by=by, why=why, training=training,
                                  status=status)
        put = {"Put": {"TableName": self.table.name, "Item": item,
                       "ConditionExpression": "attribute_not_exists(sk)"}}
        operations = [put]
        if status == LIVE:
            snapshot = self._snapshot(model)
            live = snapshot.find(LIVE)
            if live is not None:
                raise RegistryError(f"{model}: version {live.version} is live; {version} cannot be registered live "
                                    "beside it (register it as a candidate, then promote it)")
            canary = snapshot.find(CANARY)
            operations.append(self._current(model, snapshot.revision, live=version,
                                            canary=canary.version if canary else None, now=item["updated_at"]))
        try:
            self._commit(operations, f"registering {model} {version}")
        except ConflictError:
            existing = self.get(model, version)  # registered meanwhile by a rerun: the same version, kept
            if existing is None:
                raise
            return existing
        return Entry.from_item(item)

    def adopt(self, manifest: Mapping[str, Any], artifacts: Mapping[str, str], *, by: str = "ferry",
              why: str = "deployed before the registry knew it") -> Entry:
        """The version deployed now, registered live when the model has no live version (the loop's first run
        on a stack). A version registered already is returned unchanged, whatever its status; another version
        live is a :class:`RegistryError` (the caller decides)."""
        model, version = _identity(manifest)
        existing = self.get(model, version)
        if existing is not None:
            return existing
        return self.register(manifest, artifacts, by=by, why=why, status=LIVE)

    # -- versions: moving

    def record_gate(self, model: str, version: str, gate: Mapping[str, Any], *, passed: bool, by: str) -> Entry:
        """A candidate blessed (`passed`) or rejected by the gate, the gate's JSON kept; the history's reason is
        the gate's ``summary`` when it has one."""
        target = BLESSED if passed else REJECTED
        entry = self._require(model, version)
        if entry.status == target:
            return entry
        check_transition(model, version, entry.status, target)
        why = str(gate.get("summary") or ("the gate passed" if passed else "the gate refused it"))
        move = self._move(entry, target, by=by, why=why, extra={"gate": _dumps(gate, "gate")})
        self._commit([move.operation], f"{model} {version} -> {target}")
        return move.entry

    def transition(self, model: str, version: str, to: str, *, by: str, why: str, force: bool = False) -> Entry:
        """`version` moved to `to`, on the condition that it is still as read. Into live or canary is
        :meth:`go_live` or :meth:`start_canary` (the version returned); out of them clears the ``current`` item
        in the same transaction (live -> rolled-back here leaves no live version: :meth:`rollback` replaces it)."""
        if to == LIVE:
            return self.go_live(model, version, by=by, why=why, force=force)[0]
        if to == CANARY:
            return self.start_canary(model, version, by=by, why=why, force=force)
        snapshot = self._snapshot(model)
        entry = snapshot.require(version)
        if entry.status == to:
            return entry
        check_transition(model, version, entry.status, to, force)
        move = self._move(entry, to, by=by, why=why, force=force)
        operations = [move.operation]
        if entry.status in (LIVE, CANARY):
            live, canary = snapshot.find(LIVE), snapshot.find(CANARY)
            operations.append(self._current(
                model, snapshot.revision, live=None if entry.status == LIVE else _version_of(live),
                canary=None if entry.status == CANARY else _version_of(canary), now=move.entry.updated_at))
        self._commit(operations, f"{model} {version} -> {to}")
        return move.entry

    def start_canary(self, model: str, version: str, *, by: str, why: str, force: bool = False) -> Entry:
        """`version` -> canary; refused while another version is in canary."""
        snapshot = self._snapshot(model)
        entry = snapshot.require(version)
        if entry.status == CANARY:
            return entry
        check_transition(model, version, entry.status, CANARY, force)
        other = snapshot.find(CANARY)
        if other is not None:
            raise RegistryError(f"{model}: version {other.version} is in canary; promote it or roll it back before "
                                f"{version} goes canary")
        move = self._move(entry, CANARY, by=by, why=why, force=force)
        current = self._current(model, snapshot.revision, live=_version_of(snapshot.find(LIVE)), canary=version,
                                now=move.entry.updated_at)
        self._commit([move.operation, current], f"{model} {version} -> canary")
        return move.entry

    def go_live(self, model: str, version: str, *, by: str, why: str,
                force: bool = False) -> tuple[Entry, Entry | None]:
        """`version` -> live and the live version -> retired, in one transaction: (the new live, the retired one
        or None). A version live already is returned unchanged, with None."""
        snapshot = self._snapshot(model)
        entry = snapshot.require(version)
        if entry.status == LIVE:
            return entry, None
        check_transition(model, version, entry.status, LIVE, force)
        promoted = self._move(entry, LIVE, by=by, why=why, force=force)
        operations = [promoted.operation]
        retired: _Move | None = None
        old = snapshot.find(LIVE)
        if old is not None:
            retired = self._move(old, RETIRED, by=by, why=f"replaced by {version}: {why}",
                                 now=promoted.entry.updated_at)
            operations.append(retired.operation)
        canary = snapshot.find(CANARY)
        operations.append(self._current(model, snapshot.revision, live=version,
                                        canary=None if entry.status == CANARY else _version_of(canary),
                                        now=promoted.entry.updated_at))
        self._commit(operations, f"{model} {version} -> live")
        return promoted.entry, retired.entry if retired else None

    def rollback(self, model: str, *, by: str, why: str) -> tuple[Entry, Entry | None]:
        """With a canary: the canary -> rolled-back, the live version unchanged: (the canary, the live version or
        None). Without: the live version -> rolled-back and the version retired most recently -> live, in one
        transaction: (the version rolled back, the new live one)."""
        snapshot = self._snapshot(model)
        live, canary = snapshot.find(LIVE), snapshot.find(CANARY)
        if canary is not None:
            back = self._move(canary, ROLLED_BACK, by=by, why=why)
            current = self._current(model, snapshot.revision, live=_version_of(live), canary=None,
                                    now=back.entry.updated_at)
            self._commit([back.operation, current], f"rolling back {model}'s canary {canary.version}")
            return back.entry, live
        if live is None:
            raise RegistryError(f"{model} has no live or canary version: nothing to roll back")
        retired = [entry for entry in snapshot.versions if entry.status == RETIRED]
        if not retired:
            raise RegistryError(f"{model}: nothing to roll back to: no retired version to put back in place of "
                                f"{live.version}")
        target = max(retired, key=lambda entry: (entry.moved_at(RETIRED), entry.updated_at, entry.version))
        back = self._move(live, ROLLED_BACK, by=by, why=why)
        restored = self._move(target, LIVE, by=by, why=f"rollback from {live.version}: {why}",
                              now=back.entry.updated_at)
        current = self._current(model, snapshot.revision, live=target.version, canary=None, now=back.entry.updated_at)
        self._commit([back.operation, restored.operation, current], f"rolling back {model} {live.version}")
        return back.entry, restored.entry

    # -- the lock

    def acquire(self, model: str, owner: str, lease_s: float, what: str = "") -> Lease | None:
        """The update lock of `model` for `lease_s` seconds: taken when there is none, it expired, or `owner`
        holds it (re-entrant: a rerun of the same update takes it back); None while another owner's lease runs."""
        from botocore.exceptions import ClientError

        if not owner or not lease_s > 0:
            raise RegistryError(f"a lock needs an owner and a positive lease, not {owner!r} for {lease_s!r} s")
        now = self.clock()
        expires_at = _number(now + lease_s)
        item = {"model": model, "sk": LOCK_KEY, "owner": owner, "acquired_at": _iso(now),
                "expires_at": expires_at, "what": what}
        try:
            self.table.put_item(Item=item,
                                ConditionExpression="attribute_not_exists(sk) OR expires_at <= :now OR #owner = :owner",
                                ExpressionAttributeNames={"#owner": "owner"},
                                ExpressionAttributeValues={":now": _number(now), ":owner": owner})
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return Lease(self, model, owner, float(expires_at), what)

    def lock_holder(self, model: str) -> dict[str, Any] | None:
        """The lock's owner, acquired_at, expires_at and what; None when no one holds it (none, or expired)."""
        item = self.table.get_item(Key=self._key(model, LOCK_KEY), ConsistentRead=True).get("Item")
        if not item or float(item["expires_at"]) <= self.clock():
            return None
        values = plain(dict(item))
        return {name: values.get(name) for name in ("owner", "acquired_at", "expires_at", "what")}

    def _lock_update(self, model: str, owner: str, lease_s: float) -> float | None:
        from botocore.exceptions import ClientError

        expires_at = _number(self.clock() + lease_s)
        try:
            self.table.update_item(Key=self._key(model, LOCK_KEY), UpdateExpression="SET expires_at = :expires",
                                   ConditionExpression="#owner = :owner", ExpressionAttributeNames={"#owner": "owner"},
                                   ExpressionAttributeValues={":expires": expires_at, ":owner": owner})
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return float(expires_at)

    def _lock_release(self, model: str, owner: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.table.delete_item(Key=self._key(model, LOCK_KEY), ConditionExpression="#owner = :owner",
                                   ExpressionAttributeNames={"#owner": "owner"},
                                   ExpressionAttributeValues={":owner": owner})
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -- events

    def record_event(self, model: str, event_id: str, *, outcome: str, detail: str,
                     update_id: str | None = None) -> EventRecord:
        """A trigger recorded with what it led to (EVENT_OUTCOMES); the same event id again keeps and returns
        the first record (EventBridge delivers at least once)."""
        if not event_id:
            raise RegistryError("an event needs an id")
        now = self.clock()
        epoch_ms = int(now * 1000)
        sort_key = f"{EVENT_PREFIX}{epoch_ms:013d}#{event_id}"
        item: dict[str, Any] = {"model": model, "sk": sort_key, "event_id": event_id, "received_at": _iso(now),
                                "epoch_ms": epoch_ms, "outcome": outcome, "detail": detail}
        if update_id is not None:
            item["update_id"] = update_id
        guard = {"model": model, "sk": EVENT_ID_PREFIX + event_id, "event_sk": sort_key}
        new_only = "attribute_not_exists(sk)"
        try:
            self._commit([{"Put": {"TableName": self.table.name, "Item": guard,
                                   "ConditionExpression": new_only}},
                          {"Put": {"TableName": self.table.name, "Item": item,
                                   "ConditionExpression": new_only}}], f"recording event {event_id}")
        except ConflictError:
            first = self._get(model, EVENT_ID_PREFIX + event_id)
            recorded = self._get(model, str(first["event_sk"])) if first else None
            if recorded is None:
                raise
            return EventRecord.from_item(recorded)
        return EventRecord.from_item(item)

    def events(self, model: str, limit: int | None = None) -> list[EventRecord]:
        """The recorded triggers of `model`, newest first (at most `limit`)."""
        items = self._query(model, EVENT_PREFIX, forward=False, limit=limit)
        return [EventRecord.from_item(item) for item in items]

    # -- update checkpoints

    def start_update(self, model: str, update_id: str, by: str) -> UpdateRecord:
        """An update run's checkpoint, state running; one that exists already is returned as it is (a rerun: its
        finished steps are in ``steps``)."""
        from botocore.exceptions import ClientError

        if not update_id:
            raise RegistryError("an update needs an id")
        now = _iso(self.clock())
        item = {"model": model, "sk": UPDATE_PREFIX + update_id, "update_id": update_id, "by": by,
                "started_at": now, "updated_at": now, "state": "running", "steps": {}}
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(sk)")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            existing = self.get_update(model, update_id)
            if existing is None:  # written and removed between the two calls: no one removes updates
                raise ConflictError(f"{model}: update {update_id} changed while it was started; start it again") \
                    from None
            return existing
        return UpdateRecord.from_item(item)

    def record_step(self, model: str, update_id: str, step: str, result: Mapping[str, Any]) -> UpdateRecord:
        """`step` of the update finished with `result` (JSON-able): recorded, replacing any earlier result."""
        value = {"at": _iso(self.clock()), "result": _dumps(result, f"step {step!r}")}
        return self._update_update(model, update_id, "SET steps.#step = :step, updated_at = :now",
                                   {"#step": step}, {":step": value, ":now": value["at"]})

    def finish_update(self, model: str, update_id: str, state: str, error: str | None = None) -> UpdateRecord:
        """The update's state set (UPDATE_STATES: done, failed, rejected, skipped; or running again, for a rerun
        of a failed one), with the error that ended it, if any."""
        if state not in UPDATE_STATES:
            raise RegistryError(f"an update's state is one of {', '.join(UPDATE_STATES)}, not {state!r}")
        values: dict[str, Any] = {":state": state, ":now": _iso(self.clock())}
        expression = "SET #state = :state, updated_at = :now"
        if error is None:
            expression += " REMOVE #error"
        else:
            expression += ", #error = :error"
            values[":error"] = error
        return self._update_update(model, update_id, expression, {"#state": "state", "#error": "error"}, values)

    def get_update(self, model: str, update_id: str) -> UpdateRecord | None:
        item = self._get(model, UPDATE_PREFIX + update_id)
        return UpdateRecord.from_item(item) if item else None

    def updates(self, model: str) -> list[UpdateRecord]:
        """Every update run of `model`, newest first (by started_at, then id)."""
        records = [UpdateRecord.from_item(item) for item in self._query(model, UPDATE_PREFIX)]
        return sorted(records, key=lambda record: (record.started_at, record.update_id), reverse=True)

    def running_update(self, model: str) -> UpdateRecord | None:
        """The newest update of `model` still running (None when none is)."""
        return next((record for record in self.updates(model) if record.state == "running"), None)

    def _update_update(self, model: str, update_id: str, expression: str, names: Mapping[str, str],
                       values: Mapping[str, Any]) -> UpdateRecord:
        from botocore.exceptions import ClientError

        used = {name: value for name, value in names.items() if name in expression}
        try:
            answer = self.table.update_item(
                Key=self._key(model, UPDATE_PREFIX + update_id), UpdateExpression=expression,
                ConditionExpression="attribute_exists(sk)", ExpressionAttributeNames=used,
                ExpressionAttributeValues=dict(values), ReturnValues="ALL_NEW")
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RegistryError(f"{model} has no update {update_id!r}: start_update it first") from None
            raise
        return UpdateRecord.from_item(answer["Attributes"])

    # -- writing

    def _version_item(self, model: str, version: str, manifest: Mapping[str, Any], artifacts: Mapping[str, str], *,
                      by: str, why: str, training: Mapping[str, Any] | None, status: str) -> dict[str, Any]:
        if not all(isinstance(key, str) and isinstance(uri, str) for key, uri in artifacts.items()):
            raise RegistryError(f"{model} {version}: artifacts map names to URIs (strings)")
        now = _iso(self.clock())
        kept = {key: value for key, value in manifest.items() if key not in DROPPED_MANIFEST_KEYS}
        item: dict[str, Any] = {
            "model": model, "sk": VERSION_PREFIX + version, "version": version, "status": status,
            "created_at": now, "updated_at": now, "by": by, "manifest": _dumps(kept, "manifest"),
            "manifest_sha256": manifest_sha256(manifest), "artifacts": dict(artifacts),
            "history": [{"at": now, "from": "", "to": status, "by": by, "why": why}], "revision": 1}
        if training is not None:
            item["training"] = _dumps(training, "training")
        _check_size(item, f"{model} {version}")
        return item

    def _move(self, entry: Entry, to: str, *, by: str, why: str, force: bool = False, now: str | None = None,
              extra: Mapping[str, str] | None = None) -> _Move:
        """`entry` -> `to` as a transaction's Update, on the condition that its revision (and so its status) is
        still the one read."""
        now = now or _iso(self.clock())
        step: dict[str, Any] = {"at": now, "from": entry.status, "to": to, "by": by, "why": why}
        if force:
            step["force"] = True
        extra = dict(extra or {})
        sets = ["#status = :to", "updated_at = :now", "revision = :next", "history = list_append(history, :step)"]
        sets += [f"#{name} = :{name}" for name in extra]
        values = {":to": to, ":now": now, ":next": entry.revision + 1, ":step": [step], ":seen": entry.revision,
                  ":from": entry.status, **{f":{name}": value for name, value in extra.items()}}
        operation = {"Update": {
            "TableName": self.table.name, "Key": self._key(entry.model, VERSION_PREFIX + entry.version),
            "UpdateExpression": "SET " + ", ".join(sets), "ConditionExpression": "revision = :seen AND #status = :from",
            "ExpressionAttributeNames": {"#status": "status", **{f"#{name}": name for name in extra}},
            "ExpressionAttributeValues": values}}
        moved = {"status": to, "updated_at": now, "revision": entry.revision + 1, "history": (*entry.history, step)}
        for name, value in extra.items():
            moved[name] = _loads(value)
        changed = Entry(**{**entry.__dict__, **moved})
        _check_size(changed.to_dict(), f"{entry.model} {entry.version}")
        return _Move(operation, changed)

    def _current(self, model: str, seen: int, *, live: str | None, canary: str | None, now: str) -> dict[str, Any]:
        """The Put of the model's ``current`` item (its live and canary versions), on the condition that its
        revision is still `seen` (0: that there is none)."""
        item: dict[str, Any] = {"model": model, "sk": CURRENT_KEY, "revision": seen + 1, "updated_at": now}
        if live is not None:
            item["live"] = live
        if canary is not None:
            item["canary"] = canary
        put: dict[str, Any] = {"TableName": self.table.name, "Item": item}
        if seen:
            put.update(ConditionExpression="revision = :seen", ExpressionAttributeValues={":seen": seen})
        else:
            put["ConditionExpression"] = "attribute_not_exists(sk)"
        return {"Put": put}

    def _commit(self, operations: Sequence[Mapping[str, Any]], what: str) -> None:
        """`operations` in one transaction; :class:`ConflictError` when a condition failed (nothing written)."""
        from botocore.exceptions import ClientError

        try:
            self._client.transact_write_items(TransactItems=list(operations))
        except ClientError as exc:
            if error_code(exc) in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                raise ConflictError(f"{what}: another writer changed the registry since it was read; nothing was "
                                    "written (read it again and decide again)") from None
            raise

    # -- reading, plainly

    def _snapshot(self, model: str) -> _Snapshot:
        """The ``current`` item's revision, then the versions: read in this order, any transaction that changed
        live or canary after the first read fails the writer's condition on that revision."""
        current = self._get(model, CURRENT_KEY)
        revision = int(current["revision"]) if current else 0
        return _Snapshot(model, revision, tuple(self.versions(model)))

    def _require(self, model: str, version: str) -> Entry:
        entry = self.get(model, version)
        if entry is None:
            raise RegistryError(f"{model} has no version {version!r} in the registry: register it first")
        return entry

    def _get(self, model: str, sort_key: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key=self._key(model, sort_key), ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def _query(self, model: str, prefix: str, *, forward: bool = True, limit: int | None = None) -> Iterator[Any]:
        from boto3.dynamodb.conditions import Key

        arguments: dict[str, Any] = {"KeyConditionExpression": Key("model").eq(model) & Key("sk").begins_with(prefix),
                                     "ConsistentRead": True, "ScanIndexForward": forward}
        given = 0
        while True:
            page = self.table.query(**arguments)
            for item in page.get("Items", []):
                if limit is not None and given >= limit:
                    return
                given += 1
                yield item
            if "LastEvaluatedKey" not in page:
                return
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _key(model: str, sort_key: str) -> dict[str, str]:
        return {"model": model, "sk": sort_key}


# -- helpers -----------------------------------------------------------------------------------------------------

def _identity(manifest: Mapping[str, Any]) -> tuple[str, str]:
    model, version = manifest.get("name"), manifest.get("version")
    if not isinstance(model, str) or not model or not isinstance(version, str) or not version:
        raise RegistryError(f"a manifest names its model and version (strings), not name={model!r}, "
                            f"version={version!r}")
    return model, version


def _version_of(entry: Entry | None) -> str | None:
    return entry.version if entry else None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _number(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))


def _finite(value: Any) -> Any:
    """JSON-able: NaN and infinities (which JSON has not) as None, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _dumps(value: Mapping[str, Any], what: str) -> str:
    try:
        return json.dumps(_finite(plain(value)), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"the {what} is not JSON-able: {exc}") from None


def _size(value: Any) -> int:
    """An item's size as DynamoDB counts it, near enough: UTF-8 of names and strings, numbers ~21 bytes."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float | Decimal):
        return 21
    if isinstance(value, Mapping):
        return 3 + sum(_size(str(key)) + 1 + _size(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return 3 + sum(1 + _size(item) for item in value)
    return len(str(value))


def _check_size(item: Mapping[str, Any], what: str) -> None:
    size = _size(item)
    if size > ITEM_BYTES_KEPT:
        parts = sorted(((_size(value), name) for name, value in item.items()), reverse=True)[:3]
        biggest = ", ".join(f"{name} {part // 1024} KB" for part, name in parts)
        raise RegistryError(f"{what}: the registry item would take {size // 1024} KB, over the "
                            f"{ITEM_BYTES_KEPT // 1024} KB kept for it (DynamoDB holds {MAX_ITEM_BYTES // 1024} KB an "
                            f"item; biggest: {biggest}): store the bulky part elsewhere and its URI in artifacts")
