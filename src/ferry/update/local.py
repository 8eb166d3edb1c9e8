"""Updates on the local stack: the versions served by `ferry serve`, and the controller that runs updates there.

:class:`LocalTarget` is where an update's promotion lands locally: the canary is a second copy of the predict
function serving the candidate's layer, taking its weight of the gateway's traffic (as the alias weights shift
traffic between two Lambda versions in AWS); going live installs the layer into the layers folder (what a stack
update would deploy) and restarts the functions that load models.

:class:`Controller` is the local twin of the template's update state machine and the EventBridge rule that starts
it: a thread of `ferry serve` that receives ``ModelDegraded`` from the monitor and the requests of `ferry update`,
`ferry promote` and `ferry rollback` from the embedded bus, and runs each one in-process, one at a time.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.runtime import layout
from ferry.runtime.canary import Traffic
from ferry.runtime.manifest import Manifest
from ferry.update.config import UpdateConfig
from ferry.update.steps import EVENT_SOURCE, WAITING, Tables, Trigger, Update

if TYPE_CHECKING:
    from ferry.local.running import EventQueue

log = logging.getLogger("ferry.update")

CLI_SOURCE = "ferry.cli"
UPDATE_REQUESTED, PROMOTE_REQUESTED, ROLLBACK_REQUESTED = "UpdateRequested", "PromoteRequested", "RollbackRequested"
REGISTRY_TABLE, FEEDBACK_TABLE, CAPTURE_TABLE = "ModelRegistryTable", "FeedbackTable", "CaptureTable"
QUEUE = "ferry-updates"


def canary_function(template: Mapping[str, Any]) -> str:
    """The function whose alias CodeDeploy shifts: the one with an ``AutoPublishAlias`` (the predict function)."""
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function" and "AutoPublishAlias" in resource.get("Properties", {}):
            return str(logical_id)
    raise ValueError("the template has no function with an AutoPublishAlias")


def unsupported(template: Mapping[str, Any]) -> str | None:
    """Why the loop cannot run on a stack of `template` (a template of one's own without the registry, the feedback
    or the predict alias), or None."""
    resources = template.get("Resources", {})
    missing = [name for name in (REGISTRY_TABLE, FEEDBACK_TABLE, CAPTURE_TABLE) if name not in resources]
    if missing:
        return f"the template has no {', '.join(missing)}"
    try:
        canary_function(template)
    except ValueError as exc:
        return str(exc)
    return None


def tables_of(stack: Any) -> Tables:
    """The update's tables on a local stack (a LocalStack or a RunningStack)."""
    if hasattr(stack, "resource"):
        dynamodb = stack.resource("dynamodb")
        names = stack.resources()
        return Tables(*(dynamodb.Table(names[name]) for name in (REGISTRY_TABLE, FEEDBACK_TABLE, CAPTURE_TABLE)))
    return Tables(stack.table(REGISTRY_TABLE), stack.table(FEEDBACK_TABLE), stack.table(CAPTURE_TABLE))


class LocalTarget:
    """The local stack as an update's target."""

    def __init__(self, stack: Any):
        self.stack = stack
        self.function = canary_function(stack.template)

    def deployed(self, model: str) -> Path:
        return layout.layer_dir(self.stack.layers_dir, model)

    def start_canary(self, model: str, layer: Path, weight: float) -> None:
        self.stack.set_canary(self.function, {model: layer}, weight)

    def traffic(self) -> dict[str, Traffic]:
        return dict(self.stack.traffic(self.function))

    def stop_canary(self, model: str) -> None:
        if self.stack.canary(self.function) is not None:
            self.stack.clear_canary(self.function)

    def go_live(self, model: str, layer: Path) -> None:
        """Install `layer` as the model's layer (whole: staged beside it, then renamed), restart the functions
        that load models (new ones ready before the old stop), then end the canary."""
        from ferry.layer.packaging import install_folder

        target = self.deployed(model)
        wanted = Manifest.load(layout.model_dir_in_layer(layer, model)).version
        if _version(target, model) != wanted:
            staging = target.parent / f".{model}-promote-{uuid.uuid4().hex[:8]}"
            shutil.copytree(layer, staging)
            install_folder(staging, target)
        self.stack.reload()
        self.stop_canary(model)

    def notify(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self.stack.client("events").put_events(Entries=[{
            "Source": EVENT_SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail, default=str)}])


def _event_id(event: Mapping[str, Any]) -> str:
    """What the registry records an event under: the CLI's request id (which it follows), else EventBridge's."""
    detail = event.get("detail") or {}
    return str(detail.get("request_id") or event.get("id") or uuid.uuid4())


def _version(layer: Path, model: str) -> str | None:
    try:
        return Manifest.load(layout.model_dir_in_layer(layer, model)).version
    except Exception:  # no layer there yet, or an unreadable one: either way, not the wanted version
        return None


class Controller:
    """Runs updates, promotions and rollbacks on the local stack when the bus asks, one at a time.

    ``ModelDegraded`` starts an update (recorded by event id: a redelivery runs nothing twice); an update
    waiting for labels is tried again every `retry_seconds` until it starts. ``UpdateRequested``,
    ``PromoteRequested`` and ``RollbackRequested`` come from the CLI."""

    def __init__(self, stack: Any, config: UpdateConfig | None = None, *, retry_seconds: float = 30.0,
                 echo: Callable[[str], None] | None = None):
        self.stack = stack
        self.config = config or UpdateConfig()
        self.retry_seconds = retry_seconds
        self.echo = echo or (lambda line: log.info("%s", line))
        self.target = LocalTarget(stack)
        self.waiting: dict[str, Trigger] = {}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: EventQueue | None = None
        self._busy: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self) -> Controller:
        from ferry.local.running import EventQueue

        self._queue = EventQueue(self.stack, QUEUE, {"$or": [
            {"source": ["ferry.monitor"], "detail-type": ["ModelDegraded"]}, {"source": [CLI_SOURCE]}]})
        self._thread = threading.Thread(target=self._run, name="ferry-updates", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        last_retry = time.monotonic()
        failing = False
        while not self._stopped.is_set():
            try:
                for event in self._receive():
                    self.dispatch(event)
                if self.waiting and time.monotonic() - last_retry >= self.retry_seconds:
                    last_retry = time.monotonic()
                    for model, trigger in list(self.waiting.items()):
                        self._start(model, lambda m=model, t=trigger: self._update(m, t), None)
            except Exception as exc:  # the controller outlives a failed receive (the stack stopping, moto gone)
                if self._stopped.is_set():
                    break
                if not failing:
                    log.warning("the update controller cannot read the bus (%s); trying again every second", exc)
                failing = True
                self._stopped.wait(1.0)
            else:
                failing = False

    def _receive(self) -> list[dict[str, Any]]:
        return self._queue.drain(wait_seconds=1) if self._queue is not None else []

    def dispatch(self, event: Mapping[str, Any]) -> threading.Thread | None:
        """Start the work an event asks for in a thread of its own, unless that model's work is already running:
        then the event is recorded in the registry and not started (one update per model at a time)."""
        model = str((event.get("detail") or {}).get("model", ""))
        return self._start(model, lambda: self.handle(event), event)

    def _start(self, model: str, work: Callable[[], Any], event: Mapping[str, Any] | None) -> threading.Thread | None:
        with self._lock:
            running = self._busy.get(model)
            if running is not None and running.is_alive():
                if event is not None:
                    from ferry.runtime.registry import Registry

                    Registry(tables_of(self.stack).registry).record_event(
                        model, _event_id(event), outcome="skipped",
                        detail=f"{event.get('detail-type')} while an update of {model} runs: recorded, not started")
                self.echo(f"ferry: {event.get('detail-type') if event else 'retry'} for {model} while its update "
                          "runs: recorded, not started")
                return None
            thread = threading.Thread(target=self._guarded, args=(work,), name=f"ferry-update-{model}", daemon=True)
            self._busy[model] = thread
            thread.start()
            return thread

    def _guarded(self, work: Callable[[], Any]) -> None:
        try:
            work()
        except Exception as exc:  # recorded in the registry by the update itself; the controller carries on
            log.exception("an update failed")
            self.echo(f"ferry: an update failed ({type(exc).__name__}: {exc}); ferry models history shows where")

    def handle(self, event: Mapping[str, Any]) -> Any:
        """Act on one event of the bus, in this thread; returns what was done (an update's outcome, a registry
        entry)."""
        detail, kind = event.get("detail") or {}, event.get("detail-type")
        model = str(detail.get("model", ""))
        if kind == "ModelDegraded":
            since = int(detail.get("since_ms") or 0)  # where the windows that fired began
            return self._update(model, Trigger(by=f"ModelDegraded {event.get('id', '')}".strip(),
                                               event_id=_event_id(event), since_ms=since))
        if kind == UPDATE_REQUESTED:
            return self._update(model, Trigger(by=str(detail.get("by", "ferry update")),
                                               event_id=_event_id(event),
                                               since_ms=int(detail.get("since_ms", 0))))
        if kind == PROMOTE_REQUESTED:
            return self.promotions(model).promote(str(detail["version"]), force=bool(detail.get("force")),
                                                  by=str(detail.get("by", "ferry promote")),
                                                  why=str(detail.get("why", "promoted by hand")))
        if kind == ROLLBACK_REQUESTED:
            return self.promotions(model).rollback(by=str(detail.get("by", "ferry rollback")),
                                                   why=str(detail.get("why", "rolled back by hand")))
        return None

    def join(self, timeout: float | None = None) -> None:
        """Wait for the work started so far (tests, and `ferry serve` as it stops)."""
        for thread in list(self._busy.values()):
            thread.join(timeout)

    def updater(self, model: str) -> Update:
        return Update(model, tables_of(self.stack), self.target, self.config, progress=self.echo)

    def promotions(self, model: str) -> Any:
        from ferry.update.promotion import Promotions

        return Promotions(self.updater(model))

    def _update(self, model: str, trigger: Trigger) -> Any:
        outcome = self.updater(model).run(trigger)
        if outcome.state == WAITING:
            self.waiting[model] = trigger
        else:
            self.waiting.pop(model, None)
        self.echo(f"ferry: update of {model}: {outcome.state}: {outcome.why}")
        return outcome
