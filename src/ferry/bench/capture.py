"""What capturing one prediction costs, measured rather than guessed.

- The log bytes: the predict handler's own capture lines (the worker collects what it wrote for a request of one
  text and one of eight), and the line a prediction would write without its record (a sampled-out one, which
  still carries its EMF metrics). Lambda's START/END/REPORT lines come on top, per invocation: the bytes of
  AWS's documented example lines.
- The DynamoDB item: the capture record of a real line turned into the item the capture function writes
  (:func:`ferry.runtime.capture.to_item`), sized by DynamoDB's documented rules; write units per KB, once for the
  table and once per index that projects it (the template's CaptureTable).
- The capture function's duration per delivery of 1, 10 and 100 log events: :func:`ferry.runtime.capture.receive`
  (conditional PutItem per record, the usage count per key) against a moto server on 127.0.0.1 standing in for
  DynamoDB, and the same records written with BatchWriteItem (25 a call), the cheaper path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import statistics
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ferry.runtime.constants import CAPTURE_KEY

# AWS's example of the lines Lambda itself writes per invocation of a Python function with active tracing
# (https://docs.aws.amazon.com/lambda/latest/dg/python-logging.html), text format as the template's log groups use.
PLATFORM_LINES = (
    "START RequestId: 1c8df7d3-xmpl-46da-9778-518e6eca8125 Version: $LATEST\n",
    "END RequestId: 1c8df7d3-xmpl-46da-9778-518e6eca8125\n",
    "REPORT RequestId: 1c8df7d3-xmpl-46da-9778-518e6eca8125\tDuration: 4.17 ms\tBilled Duration: 5 ms\t"
    "Memory Size: 2048 MB\tMax Memory Used: 182 MB\t\n"
    "XRAY TraceId: 1-5e34a66a-474xmpl7c2534a87870b4370\tSegmentId: 073cxmpl3e442861\tSampled: true\t\n",
)
DELIVERY_SIZES = (1, 10, 100)
KB = 1024


def platform_bytes() -> int:
    return sum(len(line.encode("utf-8")) for line in PLATFORM_LINES)


def capture_lines_of(lines: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The lines among what the handler wrote that carry a capture record: each as written, and parsed."""
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict) and isinstance(parsed.get(CAPTURE_KEY), dict):
                found.append((line, parsed))
    return found


def without_record(line: Mapping[str, Any]) -> str:
    """The line of a prediction whose record is not kept (sampled out): the same line, its EMF metrics and
    dimensions included, less the record."""
    return json.dumps({key: value for key, value in line.items() if key != CAPTURE_KEY}, separators=(",", ":"))


def line_figures(probe: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Bytes written per prediction, from what the handler wrote for a request of one text and of eight."""
    per_request = {name: sum(len(line.encode("utf-8")) + 1 for line in lines) for name, lines in probe.items()}
    eight = capture_lines_of(probe["eight_texts"])
    later = eight[1:] or eight  # lines after a request's first carry no request metrics
    return {
        "bytes_one_text_request": per_request["one_text"],
        "bytes_eight_text_request": per_request["eight_texts"],
        "capture_line_bytes": statistics.fmean(len(raw.encode("utf-8")) + 1 for raw, _ in later),
        "line_without_record_bytes": statistics.fmean(len(without_record(line).encode("utf-8")) + 1
                                                      for _, line in later),
        "platform_bytes_per_invocation": platform_bytes(),
        "example_line": probe["one_text"][0] if probe["one_text"] else None,
    }


def record_of(probe: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    lines = capture_lines_of(probe["one_text"])
    if not lines:
        raise ValueError("the handler wrote no capture line")
    return dict(lines[0][1][CAPTURE_KEY])


# -- DynamoDB item size (CapacityUnitCalculations: names and values in bytes) --------------------------------------

def attribute_bytes(value: Any) -> int:
    """A value's size as DynamoDB counts it: UTF-8 bytes of a string; a number 1 byte per two significant digits
    plus 1; a boolean or null 1; a list or map 3 plus its elements (and a map's names)."""
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, int | float | Decimal):
        digits = Decimal(str(value)).normalize().as_tuple().digits
        return math.ceil(max(1, len(digits)) / 2) + 1
    if isinstance(value, Mapping):
        return 3 + sum(len(str(key).encode("utf-8")) + attribute_bytes(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return 3 + sum(1 + attribute_bytes(item) for item in value)
    return len(str(value).encode("utf-8"))


def item_bytes(item: Mapping[str, Any]) -> int:
    return sum(len(name.encode("utf-8")) + attribute_bytes(value) for name, value in item.items())


def item_figures(record: Mapping[str, Any], ttl_days: int, indexes: int) -> dict[str, Any]:
    from ferry.runtime.capture import to_item

    item = to_item(record, ttl_days)
    size = item_bytes(item)
    units = math.ceil(size / KB)
    return {"item_bytes": size, "wru_per_write": units, "indexes": indexes, "wru_per_capture": units * (1 + indexes),
            "attributes": sorted(item)}


# -- the capture function against a local stand-in for DynamoDB ---------------------------------------------------

class _Quiet:
    def info(self, *args: Any, **kwargs: Any) -> None: ...

    def error(self, *args: Any, **kwargs: Any) -> None: ...

    def exception(self, *args: Any, **kwargs: Any) -> None: ...

    def add_metric(self, *args: Any, **kwargs: Any) -> None: ...

    def add_dimension(self, *args: Any, **kwargs: Any) -> None: ...


@contextlib.contextmanager
def _tables(template: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The template's capture and usage tables on a moto server on 127.0.0.1 (stopped afterwards)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from ferry.local import template as tpl

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1", endpoint_url=f"http://{host}:{port}",
                                  aws_access_key_id="bench", aws_secret_access_key="bench")
        made = {}
        for logical_id, arguments in tpl.tables(template).items():
            if logical_id in ("CaptureTable", "UsageTable"):
                made[logical_id] = dynamodb.create_table(**arguments)
        yield made["CaptureTable"], made["UsageTable"]
    finally:
        server.stop()


def _delivery(record: Mapping[str, Any], count: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from ferry.runtime.capture import encode_subscription_event

    records = [{**record, "prediction_id": f"{record['prediction_id']}-{uuid.uuid4().hex[:12]}"} for _ in range(count)]
    lines = [(int(item["epoch_ms"]), json.dumps({CAPTURE_KEY: item})) for item in records]
    return encode_subscription_event("/aws/lambda/ferry-predict", "bench", lines), records


def function_figures(record: Mapping[str, Any], template: dict[str, Any], ttl_days: int,
                     sizes: Sequence[int] = DELIVERY_SIZES, rounds: int = 3) -> dict[str, Any]:
    """Milliseconds per delivery of each size (median of `rounds`): as built (conditional PutItem per record) and
    with BatchWriteItem."""
    from ferry.runtime.capture import Retrier, capture_records, decode_subscription_event, receive, to_item

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's access log
    figures: dict[str, Any] = {"as_built_ms": {}, "batched_ms": {}, "stand_in": "moto server on 127.0.0.1"}
    with _tables(template) as (table, usage):
        for size in sizes:
            built, batched = [], []
            for _ in range(rounds):
                event, _ = _delivery(record, size)
                started = time.perf_counter()
                receive(event, lambda: table, ttl_days, usage, Retrier(), logger=_Quiet(), metrics=_Quiet())
                built.append((time.perf_counter() - started) * 1000)
                event, _ = _delivery(record, size)
                started = time.perf_counter()
                with table.batch_writer() as writer:
                    for found in capture_records(decode_subscription_event(event)):
                        writer.put_item(Item=to_item(found, ttl_days))
                batched.append((time.perf_counter() - started) * 1000)
            figures["as_built_ms"][str(size)] = statistics.median(built)
            figures["batched_ms"][str(size)] = statistics.median(batched)
    return figures


def template_facts(template_path: Path) -> dict[str, Any]:
    """What the template says that the cost depends on: memory sizes, the capture table's indexes, retention."""
    from ferry.local import template as tpl

    template = tpl.load_template(template_path)
    resources, parameters = template["Resources"], template.get("Parameters", {})
    indexes = resources.get("CaptureTable", {}).get("Properties", {}).get("GlobalSecondaryIndexes") or []
    return {
        "template": template,
        "predict_memory_mb": int(resources["PredictFunction"]["Properties"].get("MemorySize", 128)),
        "capture_memory_mb": int(resources["CaptureFunction"]["Properties"].get("MemorySize", 128)),
        "capture_indexes": sum(1 for index in indexes if index.get("Projection", {}).get("ProjectionType") == "ALL"),
        "capture_ttl_days": int(parameters.get("CaptureRetentionDays", {}).get("Default", 90)),
    }
