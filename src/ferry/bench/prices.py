"""The public prices the bench's cost figures rest on: one place, each with the page that documents it.

On-demand list prices for us-east-1 as those pages gave them at `as_of` (nothing here is fetched: the bench runs
offline). A price changes, or another region is wanted: pass a JSON file of the fields to change
(``ferry bench --prices FILE``); the run records the prices it used in bench.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.bench.exceptions import InvalidBenchConfigError

LAMBDA_PRICING = "https://aws.amazon.com/lambda/pricing/"
API_GATEWAY_PRICING = "https://aws.amazon.com/api-gateway/pricing/"
CLOUDWATCH_PRICING = "https://aws.amazon.com/cloudwatch/pricing/"
DYNAMODB_PRICING = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
DYNAMODB_ITEM_SIZE = "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html"
SAGEMAKER_PRICING = "https://aws.amazon.com/sagemaker/pricing/"
LAMBDA_MEMORY = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html"

SOURCES = {
    "lambda_gb_second_x86": LAMBDA_PRICING + " (x86, first 6 billion GB-s a month)",
    "lambda_gb_second_arm": LAMBDA_PRICING + " (Arm, first 7.5 billion GB-s a month)",
    "lambda_per_million_requests": LAMBDA_PRICING,
    "lambda_mb_per_vcpu": LAMBDA_MEMORY + " (one vCPU at 1,769 MB; CPU in proportion to memory)",
    "api_gateway_http_per_million": API_GATEWAY_PRICING + " (HTTP API, first 300 million a month, per 512 KB)",
    "logs_ingestion_per_gb": CLOUDWATCH_PRICING + " (Lambda logs, Standard class, first 10 TB a month)",
    "dynamodb_per_million_wru": DYNAMODB_PRICING + " (on-demand since the 2024-11-01 price cut; 1 WRU per KB)",
    "dynamodb_storage_per_gb_month": DYNAMODB_PRICING + " (Standard table class)",
    "sagemaker_per_hour": SAGEMAKER_PRICING + " (real-time inference, on-demand)",
}


@dataclass(frozen=True)
class Prices:
    """US dollars. `sagemaker_instance` is the always-on endpoint compared with Lambda: a CPU instance with 2 vCPUs
    (the cores this bench measures on), at `sagemaker_per_hour`."""

    region: str = "us-east-1"
    as_of: str = "2026-11-30"
    lambda_gb_second_x86: float = 0.0000166667
    lambda_gb_second_arm: float = 0.0000133334
    lambda_per_million_requests: float = 0.20
    lambda_mb_per_vcpu: float = 1769.0
    api_gateway_http_per_million: float = 1.00
    logs_ingestion_per_gb: float = 0.50
    dynamodb_per_million_wru: float = 0.625
    dynamodb_storage_per_gb_month: float = 0.25
    sagemaker_instance: str = "ml.m5.large (2 vCPU, 8 GiB)"
    sagemaker_per_hour: float = 0.115

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.type == "float" and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise InvalidBenchConfigError(f"price {item.name} must be a number of 0 or more, got {value!r}",
                                              field="prices")

    @classmethod
    def from_file(cls, path: Path) -> Prices:
        """The default prices with those of a JSON object file changed (keys: the field names)."""
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidBenchConfigError(f"{path}: not a readable JSON file ({exc.__class__.__name__})",
                                          field="prices") from None
        names = {item.name for item in dataclasses.fields(cls)}
        if not isinstance(given, dict) or set(given) - names:
            unknown = sorted(set(given) - names) if isinstance(given, dict) else given
            raise InvalidBenchConfigError(
                f"{path}: unknown prices {unknown}; the known ones: {', '.join(sorted(names))}", field="prices")
        return dataclasses.replace(cls(), **given)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sources": SOURCES,
                "note": "on-demand list prices of the pages named, as given at as_of; not fetched by the run"}
