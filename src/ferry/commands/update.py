"""`ferry update`, `ferry promote`, `ferry rollback`: the maintenance loop's steps asked of a running `ferry serve`.

`ferry serve` runs the loop (:class:`ferry.update.local.Controller`, the local twin of the template's update state
machine): these commands put their request on its event bus, as the monitor's ``ModelDegraded`` does, then follow
the registry until the work is done, printing each step as it lands. `ferry models history NAME` shows the
registry afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.commands._common import CommandError, Subparsers
from ferry.commands._local import add_template

if TYPE_CHECKING:
    from ferry.local.running import RunningStack
    from ferry.runtime.registry import Registry

POLL_S = 1.0


def register(subparsers: Subparsers) -> None:
    update = subparsers.add_parser(
        "update", help="retrain a model on its feedback, gate it, and promote it through a canary",
        description="Ask the running `ferry serve` to update MODEL: assemble its labelled feedback, train a "
        "candidate from the live model (warm start, class-balanced feedback plus a replay of its training data), "
        "build it, gate it against the live model (gate.json), register it, and promote it through a canary. "
        "An update killed midway is resumed by the next one.")
    update.add_argument("model")
    update.add_argument("--since-ms", type=int, default=0,
                        help="the recent feedback (the gate's feedback slice and the minimum count) starts here")
    _follow_flags(update)
    update.set_defaults(run=run_update)

    promote = subparsers.add_parser("promote", help="promote a registered version: canary, then live")
    promote.add_argument("model")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true",
                         help="promote a version the gate did not bless (the registry records it)")
    promote.add_argument("--why", default="promoted by hand", help="recorded in the registry")
    _follow_flags(promote)
    promote.set_defaults(run=run_promote)

    rollback = subparsers.add_parser("rollback", help="end a canary, or put the previous live version back")
    rollback.add_argument("model")
    rollback.add_argument("--why", default="rolled back by hand", help="recorded in the registry")
    _follow_flags(rollback)
    rollback.set_defaults(run=run_rollback)


def _follow_flags(parser: argparse.ArgumentParser) -> None:
    add_template(parser)
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="ask, and return at once")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to follow it (default %(default)s)")


def _stack(args: argparse.Namespace) -> RunningStack:
    from ferry.local import running

    root = args.template.resolve().parent if args.template is not None else Path.cwd()
    return running.find(root)


def _registry(stack: RunningStack) -> Registry:
    from ferry.runtime.registry import Registry
    from ferry.update.local import tables_of

    return Registry(tables_of(stack).registry)


def _ask(stack: RunningStack, detail_type: str, detail: dict[str, Any]) -> str:
    from ferry.update.local import CLI_SOURCE

    request_id = uuid.uuid4().hex
    stack.client("events").put_events(Entries=[{
        "Source": CLI_SOURCE, "DetailType": detail_type, "Detail": json.dumps({**detail, "request_id": request_id})}])
    return request_id


def run_update(args: argparse.Namespace) -> int:
    from ferry.update.local import UPDATE_REQUESTED
    from ferry.update.steps import brief

    stack = _stack(args)
    registry = _registry(stack)
    request = _ask(stack, UPDATE_REQUESTED, {"model": args.model, "since_ms": args.since_ms, "by": "ferry update"})
    print(f"ferry: asked {stack.url} to update {args.model} (request {request})", flush=True)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    event = _wait(lambda: next((e for e in registry.events(args.model) if e.event_id == request), None), deadline,
                  "the update to start")
    print(f"  {event.outcome}: {event.detail}", flush=True)
    if event.update_id is None or event.outcome != "started":
        return 1 if event.outcome == "skipped" else 0
    shown: set[str] = set()
    while True:
        record = registry.get_update(args.model, event.update_id)
        for step, result in (record.steps if record is not None else {}).items():
            if step not in shown:
                shown.add(step)
                print(f"  {step}: {brief(result)}", flush=True)
        if record is not None and record.state != "running":
            print(f"ferry: update {record.update_id}: {record.state}" + (f" ({record.error})" if record.error else ""))
            return 0 if record.state == "done" else 1
        if record is not None and not record.steps and event.detail:
            return 0  # waiting for labels: the serving stack retries it as they arrive
        if time.monotonic() > deadline:
            raise CommandError(f"still running after {args.timeout:g} s; ferry models history {args.model} shows it")
        time.sleep(POLL_S)


def run_promote(args: argparse.Namespace) -> int:
    from ferry.update.local import PROMOTE_REQUESTED

    stack = _stack(args)
    registry = _registry(stack)
    entry = registry.get(args.model, args.version)
    if entry is None:
        raise CommandError(f"{args.model} {args.version}: no such version (ferry models history {args.model})")
    _ask(stack, PROMOTE_REQUESTED, {"model": args.model, "version": args.version, "force": args.force,
                                    "why": args.why, "by": "ferry promote"})
    print(f"ferry: asked to promote {args.model} {args.version} ({entry.status}) through a canary", flush=True)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    done = _wait(lambda: _settled(registry, args.model, args.version, entry.revision), deadline, "the promotion")
    print(f"ferry: {args.model} {args.version} is {done.status}: {done.history[-1].get('why', '')}")
    return 0 if done.status == "live" else 1


def _settled(registry: Registry, model: str, version: str, revision: int) -> Any:
    entry = registry.get(model, version)
    if entry is not None and entry.revision > revision and entry.status not in ("canary", "blessed", "candidate"):
        return entry
    return None


def run_rollback(args: argparse.Namespace) -> int:
    from ferry.update.local import ROLLBACK_REQUESTED

    stack = _stack(args)
    registry = _registry(stack)
    before = registry.canary(args.model) or registry.live(args.model)
    if before is None:
        raise CommandError(f"{args.model}: the registry has no live version or canary to roll back")
    _ask(stack, ROLLBACK_REQUESTED, {"model": args.model, "why": args.why, "by": "ferry rollback"})
    print(f"ferry: asked to roll back {args.model} {before.version} ({before.status})", flush=True)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    _wait(lambda: _settled(registry, args.model, before.version, before.revision), deadline, "the rollback")
    live = registry.live(args.model)
    print(f"ferry: {args.model} {before.version} rolled back; live: {live.version if live else 'none'}")
    return 0


def _wait(found: Any, deadline: float, what: str) -> Any:
    while True:
        value = found()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise CommandError(f"timed out waiting for {what}; is `ferry serve` running its updates?")
        time.sleep(POLL_S)
