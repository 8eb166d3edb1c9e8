"""The cost of a million predictions on Lambda, the whole request, from what the run measured and the prices of
:class:`~ferry.bench.prices.Prices`; beside an always-on SageMaker endpoint, with the traffic at which they cross.

Per prediction, for a request of 1 text and of 8 (about 32 tokens each):

- API Gateway (HTTP API): one request per request.
- The predict function: one request, and its billed duration (whole milliseconds) x its memory. The duration is
  the handler's measured mean on this machine, scaled to the CPU Lambda gives at that memory (one vCPU per
  ``lambda_mb_per_vcpu`` MB): T threads of a CPU-bound run need T x their wall time of CPU, so a run measured at
  T threads takes ``latency x max(1, T / vCPUs)``; the thread count with the shortest duration is used (one
  thread below 1,769 MB, two where they pay). Lambda's CPU is not this one: the figure is an estimate.
- CloudWatch Logs ingestion: the handler's capture lines (measured) and Lambda's START/END/REPORT lines.
- The capture function: one invocation per delivery of ``events_per_delivery`` log events (an assumption: the
  batching is CloudWatch's), each lasting the measured time for that many records, at the template's memory.
- DynamoDB: write units of the capture item (table and index), plus one usage update per delivery (API keys).

Captures are kept ``capture_ttl_days`` (their storage is counted as one month's worth per million predictions,
kept that long). Not counted: the authorizer (its answer is cached per key), CloudWatch custom metrics (per
metric, not per request), log storage, data transfer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.bench.prices import Prices

MILLION = 1_000_000
GIB = 1024**3
HOURS_PER_MONTH = 730
REQUEST_SHAPES = {1: "1x32", 8: "8x32"}  # texts a request -> the handler's measured shape


@dataclass(frozen=True)
class CaptureInputs:
    """Measured (lines, item, function) and taken from the template (memory, indexes, retention)."""

    log_bytes_per_prediction: Mapping[int, float]  # what the handler wrote, by texts a request (a request's first
    # line also carries its latency and batch size)
    record_bytes: float  # the capture record's share of a line: what a sampled-out prediction does not write
    platform_bytes_per_invocation: int
    wru_per_capture: int
    item_bytes: int
    indexes: int
    function_ms: Mapping[str, float]  # per delivery, by records in it
    batched_function_ms: Mapping[str, float]
    capture_memory_mb: int
    capture_ttl_days: int
    events_per_delivery: int = 10
    sample_rate: float = 0.1


def lambda_duration_ms(latency_ms: Mapping[int, float], memory_mb: int, mb_per_vcpu: float) -> tuple[float, int]:
    """The estimated duration at `memory_mb` and the thread count giving it, from latencies measured by threads."""
    vcpus = memory_mb / mb_per_vcpu
    options = {threads: latency * max(1.0, threads / vcpus) for threads, latency in latency_ms.items()}
    threads = min(options, key=lambda count: (options[count], count))
    return options[threads], threads


def capture_paths(inputs: CaptureInputs, prices: Prices, texts: int = 1) -> dict[str, dict[str, float]]:
    """Capture cost per prediction (dollars) by part, for requests of `texts` texts: the path as built and two
    cheaper ones."""
    events = inputs.events_per_delivery
    key = str(events)

    def function(ms: float, share: float) -> float:
        billed = math.ceil(ms) / 1000 * inputs.capture_memory_mb / 1024 * prices.lambda_gb_second_x86
        return share * (prices.lambda_per_million_requests / MILLION + billed) / events

    def dynamodb(share: float) -> float:
        writes = share * inputs.wru_per_capture + share / events  # the usage count: one update per delivery
        storage = share * inputs.item_bytes * (1 + inputs.indexes) / GIB * prices.dynamodb_storage_per_gb_month
        return writes * prices.dynamodb_per_million_wru / MILLION + storage * inputs.capture_ttl_days / 30

    rate = inputs.sample_rate
    written = inputs.log_bytes_per_prediction[texts]
    logs_all = written / GIB * prices.logs_ingestion_per_gb
    logs_sampled = (written - (1 - rate) * inputs.record_bytes) / GIB * prices.logs_ingestion_per_gb
    return {
        "as built (PutItem per record)": {"logs": logs_all, "function": function(inputs.function_ms[key], 1.0),
                                          "dynamodb": dynamodb(1.0)},
        "batched writes (BatchWriteItem)": {"logs": logs_all,
                                            "function": function(inputs.batched_function_ms[key], 1.0),
                                            "dynamodb": dynamodb(1.0)},
        f"sampled ({rate:.0%} of predictions kept)": {"logs": logs_sampled,
                                                      "function": function(inputs.function_ms[key], rate),
                                                      "dynamodb": dynamodb(rate)},
    }


def request_row(memory_mb: int, texts: int, latency_ms: Mapping[int, float], capture: dict[str, float],
                platform_bytes: int, prices: Prices) -> dict[str, Any]:
    """One memory size and request size: dollars per million predictions, by part."""
    duration, threads = lambda_duration_ms(latency_ms, memory_mb, prices.lambda_mb_per_vcpu)
    billed_s = math.ceil(duration) / 1000
    per_request = {
        "api_gateway": prices.api_gateway_http_per_million / MILLION,
        "lambda_requests": prices.lambda_per_million_requests / MILLION,
        "lambda_compute": billed_s * memory_mb / 1024 * prices.lambda_gb_second_x86,
        "platform_logs": platform_bytes / GIB * prices.logs_ingestion_per_gb,
    }
    parts = {name: value / texts * MILLION for name, value in per_request.items()}
    parts.update({f"capture_{name}": value * MILLION for name, value in capture.items()})
    inference = parts["lambda_requests"] + parts["lambda_compute"]
    capture_total = sum(value for name, value in parts.items() if name.startswith("capture_"))
    return {"memory_mb": memory_mb, "texts_per_request": texts, "threads": threads, "duration_ms": duration,
            "billed_ms": math.ceil(duration), "per_million": parts, "total_per_million": sum(parts.values()),
            "inference_per_million": inference, "capture_per_million": capture_total,
            "arm_compute_per_million": parts["lambda_compute"] * prices.lambda_gb_second_arm
            / prices.lambda_gb_second_x86,
            "capture_exceeds_inference": capture_total > inference}


def endpoint(prices: Prices, latency_ms: float) -> dict[str, Any]:
    """The always-on endpoint: its month, and how many single-text requests one instance serves in it when busy all
    the time at the handler's measured latency with two threads (its 2 vCPUs)."""
    monthly = prices.sagemaker_per_hour * HOURS_PER_MONTH
    capacity = HOURS_PER_MONTH * 3600 * 1000 / latency_ms if latency_ms > 0 else math.inf
    return {"instance": prices.sagemaker_instance, "per_hour": prices.sagemaker_per_hour, "per_month": monthly,
            "predictions_per_month_one_instance": capacity}


def crossing(per_million: float, month: Mapping[str, Any]) -> float | None:
    """Predictions a month at which Lambda's cost reaches one endpoint instance's month (None: Lambda costs
    nothing). Past ``predictions_per_month_one_instance`` the endpoint needs a second instance as well."""
    if per_million <= 0:
        return None
    return float(month["per_month"] / per_million * MILLION)


def cost_table(latency_by_shape: Mapping[str, Mapping[int, float]], inputs: CaptureInputs,
               memory_sizes: Sequence[int], handler_rss_mb: float, prices: Prices) -> dict[str, Any]:
    """Every memory size x request size row, the capture paths, and the endpoint beside them."""
    paths = capture_paths(inputs, prices)
    rows = []
    two_threads = latency_by_shape["1x32"].get(2) or min(latency_by_shape["1x32"].values())
    month = endpoint(prices, two_threads)
    for memory in memory_sizes:
        for texts, shape in REQUEST_SHAPES.items():
            built = capture_paths(inputs, prices, texts)["as built (PutItem per record)"]
            row = request_row(memory, texts, latency_by_shape[shape], built, inputs.platform_bytes_per_invocation,
                              prices)
            row["fits"] = memory >= handler_rss_mb
            row["crosses_endpoint_at"] = crossing(row["total_per_million"], month)
            row["function_only_crosses_endpoint_at"] = crossing(row["inference_per_million"], month)
            rows.append(row)
    return {"rows": rows, "endpoint": month,
            "capture_paths": {name: {**{part: value * MILLION for part, value in parts.items()},
                                     "total_per_million": sum(parts.values()) * MILLION}
                              for name, parts in paths.items()},
            "assumptions": {"events_per_delivery": inputs.events_per_delivery, "sample_rate": inputs.sample_rate,
                            "capture_memory_mb": inputs.capture_memory_mb, "capture_ttl_days": inputs.capture_ttl_days,
                            "handler_peak_rss_mb": handler_rss_mb},
            "capture_exceeds_inference": any(row["capture_exceeds_inference"] for row in rows)}
