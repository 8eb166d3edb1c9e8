"""The local HTTP API under a bounded concurrent load: the local stack (the template's functions in their own
processes, `clients` of each, the embedded AWS) behind its gateway on 127.0.0.1, and `clients` threads each
keeping one request in flight over a kept-alive connection, until `requests` were sent or `seconds` passed,
whichever comes first. Each request is one ~32-token text. Figures: throughput, latency p50/p99 as the client saw
it, errors (any answer but 200, or no answer), and the captures that reached the capture table afterwards.

Each function process gets cores / clients ONNX Runtime threads (at least one), so the processes do not fight
over the cores; the clients, the gateway and the embedded AWS share the same cores, as they would not in AWS.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ferry.bench.stats import summary

CAPTURE_WAIT_S = 15.0  # for the last captures to reach the table (the local log delivery batches them)


@dataclass(frozen=True)
class LoadPlan:
    requests: int
    seconds: float
    clients: int


class _Tally:
    def __init__(self, plan: LoadPlan):
        self.plan = plan
        self.lock = threading.Lock()
        self.issued = 0
        self.latencies_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.deadline = time.monotonic() + plan.seconds

    def take(self) -> int | None:
        with self.lock:
            if self.issued >= self.plan.requests or time.monotonic() >= self.deadline:
                return None
            self.issued += 1
            return self.issued - 1

    def record(self, status: str, latency_ms: float) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == "200":
                self.latencies_ms.append(latency_ms)


def _client(url: str, path: str, bodies: Sequence[bytes], tally: _Tally) -> None:
    split = urlsplit(url)
    host = split.hostname or "127.0.0.1"
    connection = http.client.HTTPConnection(host, split.port, timeout=30)
    try:
        while (index := tally.take()) is not None:
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=bodies[index % len(bodies)],
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                status = exc.__class__.__name__
                connection.close()
                connection = http.client.HTTPConnection(host, split.port, timeout=30)
            tally.record(status, (time.perf_counter() - started) * 1000)
    finally:
        connection.close()


def drive(url: str, path: str, texts: Sequence[str], plan: LoadPlan) -> dict[str, Any]:
    """The load itself, against any server speaking the API at `url`."""
    bodies = [json.dumps({"inputs": text}).encode() for text in texts]
    tally = _Tally(plan)
    started = time.perf_counter()
    threads = [threading.Thread(target=_client, args=(url, path, bodies, tally), daemon=True)
               for _ in range(plan.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ok = tally.statuses.get("200", 0)
    return {"requests": tally.issued, "ok": ok, "errors": tally.issued - ok, "statuses": tally.statuses,
            "seconds": elapsed, "throughput_rps": ok / elapsed if elapsed > 0 else 0.0,
            "stopped_by": "count" if tally.issued >= plan.requests else "time",
            "latency_ms": summary(tally.latencies_ms, percentiles=(50, 95, 99))}


def run_load_test(root: Path, layer: Path, model: str, texts: Sequence[str], plan: LoadPlan,
                  work: Path) -> dict[str, Any]:
    """Start the local stack with this one model layer, warm each function process, drive the load, count the
    captures written, stop the stack."""
    from ferry.local.gateway import Gateway
    from ferry.local.stack import LocalStack

    layers = work / "load-layers"
    shutil.rmtree(layers, ignore_errors=True)
    shutil.copytree(layer, layers / model)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // plan.clients)
    environ = {name: value for name, value in os.environ.items() if not name.startswith("FERRY_")}
    environ.update(FERRY_PRELOAD=model, FERRY_ORT_THREADS=str(threads))
    stack = LocalStack(root=root, layers_dir=layers, environ=environ, concurrency=plan.clients, echo=None)
    path = f"/v1/models/{model}/predict"
    try:
        started = time.perf_counter()
        stack.start()
        gateway = Gateway(stack, "127.0.0.1", 0)
        gateway.serve_in_background()
        start_s = time.perf_counter() - started
        try:
            warm = drive(gateway.url, path, texts, LoadPlan(plan.clients * 2, 60.0, plan.clients))  # every process
            result = drive(gateway.url, path, texts, plan)
            result["warmup_ok"] = warm["ok"]
            result["captures_written"] = _captures(stack, result["ok"] + warm["ok"])
        finally:
            gateway.shutdown()
            gateway.server_close()
    finally:
        stack.stop()
    return {**result, "clients": plan.clients, "function_processes": plan.clients, "ort_threads": threads,
            "limits": {"requests": plan.requests, "seconds": plan.seconds}, "stack_start_s": start_s,
            "text_tokens": "about 32 (the 1x32 texts, in turn)"}


def _captures(stack: Any, expected: int) -> int:
    """Captures in the capture table once `expected` arrived, or when CAPTURE_WAIT_S has passed."""
    table = stack.table_names.get("CaptureTable")
    if table is None:
        return 0
    client = stack.client("dynamodb")
    deadline = time.monotonic() + CAPTURE_WAIT_S
    while True:
        count = 0
        pages = client.get_paginator("scan").paginate(TableName=table, Select="COUNT")
        for page in pages:
            count += int(page["Count"])
        if count >= expected or time.monotonic() >= deadline:
            return count
        time.sleep(0.5)
