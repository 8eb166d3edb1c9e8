"""CloudWatch embedded metric format (EMF): the metric a capture log line carries.

Every capture record is already one log line per prediction; adding the EMF keys to that line makes
CloudWatch count predictions by model, version and label without a second line, a second flush or any
work on the request path beyond a few dictionary keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAMESPACE = "Ferry"
PREDICTIONS_METRIC = "Predictions"


def prediction_count(record: Mapping[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
    """The EMF keys that make a capture record's log line count one prediction.

    Dimensions: model and version, and label for a classifier (an embedding has none).
    """
    dimensions = ["model", "version", "label"] if record.get("label") is not None else ["model", "version"]
    fields: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(record["epoch_ms"]),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions],
                "Metrics": [{"Name": PREDICTIONS_METRIC, "Unit": "Count"}],
            }],
        },
        PREDICTIONS_METRIC: 1,
    }
    fields.update({name: str(record[name]) for name in dimensions})
    return fields
