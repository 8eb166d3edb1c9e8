"""CloudWatch embedded metric format (EMF): the metrics a capture log line carries.

Every capture record is already one log line per prediction. Adding EMF keys to that line makes CloudWatch
count predictions by model, version and label, and the first line of a request also carries the request's
latency and batch size by model and version: no second line, no second serialization, and none of a metrics
library's per-call bookkeeping on the request path. (What is not a prediction, cold starts and errors by
code, goes through Powertools Metrics.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ferry.runtime.constants import METRICS_NAMESPACE, TEXT_GENERATION

NAMESPACE = METRICS_NAMESPACE  # the default; a function passes its Settings.metrics_namespace
PREDICTIONS = "Predictions"
LATENCY = "Latency"
BATCH_SIZE = "BatchSize"
# A generation's (the large model's capture records, ferry.runtime.generation), by model and version
ENDPOINT_LATENCY = "EndpointLatency"  # the SageMaker call that answered, within the request's Latency
PROMPT_TOKENS = "PromptTokens"
GENERATED_TOKENS = "GeneratedTokens"
_GENERATION = ((ENDPOINT_LATENCY, "endpoint_latency_ms", "Milliseconds"), (PROMPT_TOKENS, "prompt_tokens", "Count"),
               (GENERATED_TOKENS, "generated_tokens", "Count"))


def prediction_metrics(record: Mapping[str, Any], namespace: str = NAMESPACE, *,
                       latency_ms: float | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """The EMF keys for a capture record's log line: one prediction counted by model, version and label (a
    classifier's; an embedding and a generation have none), and, when given, the request's latency and batch size;
    a generation's record adds its endpoint's latency and its prompt and generated tokens."""
    by_label = ["model", "version", "label"] if record.get("label") is not None else ["model", "version"]
    directives: list[dict[str, Any]] = [
        {"Namespace": namespace, "Dimensions": [by_label], "Metrics": [{"Name": PREDICTIONS, "Unit": "Count"}]},
    ]
    fields: dict[str, Any] = {PREDICTIONS: 1}
    if latency_ms is not None and batch_size is not None:
        directives.append({"Namespace": namespace, "Dimensions": [["model", "version"]], "Metrics": [
            {"Name": LATENCY, "Unit": "Milliseconds"}, {"Name": BATCH_SIZE, "Unit": "Count"}]})
        fields[LATENCY] = round(latency_ms, 3)
        fields[BATCH_SIZE] = batch_size
    if record.get("task") == TEXT_GENERATION:  # its endpoint's latency and its tokens, those the record has
        present = [(name, record[key], unit) for name, key, unit in _GENERATION if record.get(key) is not None]
        if present:
            directives.append({"Namespace": namespace, "Dimensions": [["model", "version"]],
                               "Metrics": [{"Name": name, "Unit": unit} for name, _, unit in present]})
            fields.update({name: value for name, value, _ in present})
    fields["_aws"] = {"Timestamp": int(record["epoch_ms"]), "CloudWatchMetrics": directives}
    fields.update({name: str(record[name]) for name in by_label})
    return fields
