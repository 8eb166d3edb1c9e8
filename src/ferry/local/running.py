"""Where a running `ferry serve` is: ``<project>/.ferry/serve-<pid>.json``, written when it starts serving, removed
when it stops. `ferry monitor`, `ferry status`, `ferry report` and `ferry feedback` read it to reach that stack's
API and its embedded AWS (moto keeps everything in the serving process's memory: no other process has it). With
several `ferry serve` of one project running, the commands take the one started last.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.local.exceptions import NotServingError

if TYPE_CHECKING:
    from ferry.local.stack import LocalStack

FOLDER = ".ferry"
PREFIX = "serve-"



@dataclass(frozen=True)
class RunningStack:
    """A `ferry serve` of this project: its API's URL, its embedded AWS and the names of the template's resources."""

    url: str
    endpoint: str
    region: str
    resources: dict[str, str]
    layers_dir: Path
    pid: int
    api_key: bool  # whether the API asks for a key

    def client(self, service: str) -> Any:
        import boto3

        from ferry.local.stack import CREDENTIALS

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint, **CREDENTIALS)

    def table(self, logical_id: str) -> Any:
        import boto3

        from ferry.local.stack import CREDENTIALS

        dynamodb = boto3.resource("dynamodb", region_name=self.region, endpoint_url=self.endpoint, **CREDENTIALS)
        return dynamodb.Table(self.resources[logical_id])


class EventQueue:
    """The events of the stack's default bus that match a pattern, as moto delivers them: to an SQS queue that a
    rule targets (moto delivers events to queues, log groups, buses and API destinations only)."""

    def __init__(self, stack: RunningStack | LocalStack, name: str, pattern: dict[str, Any]):
        self.sqs, events = stack.client("sqs"), stack.client("events")
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=name, Targets=[{"Id": name, "Arn": arn}])

    def drain(self, wait_seconds: int = 0) -> list[dict[str, Any]]:
        """Every event delivered since the last drain, oldest first (each removed from the queue); with
        `wait_seconds`, the first receive waits that long for one when there is none (a long poll)."""
        seen = []
        wait = wait_seconds
        while messages := self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=wait).get("Messages", []):
            wait = 0
            seen.extend(json.loads(message["Body"]) for message in messages)
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return seen


def path_of(root: Path, pid: int | None = None) -> Path:
    return root / FOLDER / f"{PREFIX}{os.getpid() if pid is None else pid}.json"


def write(root: Path, url: str, stack: LocalStack, *, api_key: bool) -> Path:
    """Say where this stack is (temporary file, then rename: a reader never sees half of it)."""
    from ferry.local.context import REGION

    path = path_of(root)
    path.parent.mkdir(exist_ok=True)
    document = {"url": url, "endpoint": stack.endpoint, "region": REGION, "resources": stack.resources(),
                "layers_dir": str(stack.layers_dir), "pid": os.getpid(), "api_key": api_key}
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path


def remove(path: Path) -> None:
    """Remove the file if it is still this process's (a second `ferry serve` may have written its own since)."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def find(root: Path) -> RunningStack:
    """The `ferry serve` running for the project at `root` (the one started last, if several are), or
    NotServingError saying how to start one. Files of servers that are gone are skipped."""
    folder = root / FOLDER
    candidates = sorted(folder.glob(f"{PREFIX}*.json"), key=_started, reverse=True) if folder.is_dir() else []
    for path in candidates:
        stack = _read(path)
        if stack is not None and _alive(stack.pid):
            return stack
    raise NotServingError(f"no `ferry serve` is running for {root} (start one there: ferry serve)")


def _started(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read(path: Path) -> RunningStack | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return RunningStack(url=document["url"], endpoint=document["endpoint"], region=document["region"],
                            resources=dict(document["resources"]), layers_dir=Path(document["layers_dir"]),
                            pid=int(document["pid"]), api_key=bool(document.get("api_key")))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # half a file cannot be (it is renamed into place); another version's, or removed meanwhile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
