"""The predict handler as Lambda runs it: the environment Lambda gives the function, and the API Gateway v2 event
of a prediction request (the recorded one in events/predict.json, pointed at the model benchmarked)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What Lambda sets for a function with active tracing (the template's Globals): LAMBDA_TASK_ROOT makes the X-Ray SDK
# use its Lambda context and local sampler (outside Lambda it builds a botocore client at import); the trace header
# is sampled. FERRY_PRELOAD, FERRY_MODELS_DIR and the threads are set per run.
LAMBDA_ENV = {"AWS_LAMBDA_FUNCTION_NAME": "ferry-predict", "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
              "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_METRICS_NAMESPACE": "Ferry",
              "POWERTOOLS_SERVICE_NAME": "ferry-predict", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
              "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
              "_X_AMZN_TRACE_ID": "Root=1-6760f2a1-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1"}
PREDICT_EVENT = Path("events") / "predict.json"
PREDICT_FUNCTION = Path("functions") / "predict"


def lambda_environment(root: Path, models_dir: Path, model: str, threads: int,
                       base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The predict function's environment: this one's (less any FERRY_ variable), Lambda's, the model folder, the
    threads, and a stack secret (so that capture records carry the text's HMAC, as deployed)."""
    env = {name: value for name, value in (os.environ if base is None else base).items()
           if not name.startswith("FERRY_")}
    env.update(LAMBDA_ENV, LAMBDA_TASK_ROOT=str(root / PREDICT_FUNCTION), FERRY_MODELS_DIR=str(models_dir),
               FERRY_PRELOAD=model, FERRY_ORT_THREADS=str(threads), FERRY_STACK_SECRET=secrets.token_hex(32))
    return env


def predict_event(root: Path, model: str, key_id: str | None = None) -> dict[str, Any]:
    """The recorded POST /v1/models/{model}/predict event for `model` (its body is replaced per call). With
    `key_id`, the context the API-key authorizer adds (so that captures name the key, as with AuthMode apikey)."""
    event: dict[str, Any] = json.loads((root / PREDICT_EVENT).read_text(encoding="utf-8"))
    path = f"/v1/models/{model}/predict"
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"model": model}
    if key_id is not None:
        event["requestContext"]["authorizer"] = {"lambda": {"key_id": key_id, "scopes": "predict,feedback",
                                                            "quota_exceeded": False}}
    return event
