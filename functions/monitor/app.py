"""Monitor function: on an EventBridge schedule, each live model's figures, tests and episodes.

It holds the same model layers as the predict function and reads only their manifests (labels, reference sample,
calibration): no model is loaded. What a run reads, tests, publishes and sends: ferry.runtime.monitor. Its figures
go out as one EMF line per model (CloudWatch makes the metrics the template's alarms and dashboard read), a
``ModelDegraded`` event goes to the bus once per episode, and the run's summary is logged and kept in the state
table (`ferry report` draws it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aws_lambda_powertools import Logger

from ferry.runtime import aws
from ferry.runtime.monitor import Monitor, Sources, emf_documents
from ferry.runtime.service import ModelStore
from ferry.runtime.settings import Settings

SERVICE = "ferry-monitor"
settings = Settings.from_env()
logger = Logger(service=SERVICE)
store = ModelStore(settings)


def sources() -> Sources:
    return Sources(
        captures=aws.table(settings.required("capture_table")),
        state=aws.table(settings.required("monitor_table")),
        feedback=aws.table(settings.feedback_table) if settings.feedback_table else None,
        events=aws.client("events"),
        bus=settings.event_bus,
        cloudwatch=aws.client("cloudwatch"),
        namespace=settings.metrics_namespace,
    )


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    results = Monitor(store.available(), sources(), settings.monitor_config()).run()
    for document in emf_documents(results, settings.metrics_namespace):
        sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    for health in results:
        logger.info("monitored", extra={"model": health.model, "version": health.version, "status": health.status,
                                        "firings": [f.test for f in health.firings], "event": health.event_sent,
                                        "notes": health.notes})
    return {"models": [health.to_dict() for health in results]}
