"""The HTTP API's request models (they validate requests and generate the OpenAPI document) and the one
place where errors become statuses and the ``{"error": {"code", "message"}}`` body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ferry.runtime.exceptions import (
    FerryRuntimeError,
    IntegrityError,
    InvalidInputError,
    ManifestError,
    ModelNotFoundError,
    UnsupportedTaskError,
)
from ferry.runtime.service import PayloadTooLargeError

Inputs = StrictStr | list[StrictStr]


class PredictParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(default=None, ge=1, strict=True, description="how many labels to return, best first")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None


class PredictRequest(BaseModel):
    """The Hugging Face Inference API's text-classification payload."""

    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(description="one text, or a list of texts")
    parameters: PredictParameters | None = None


class EmbedParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normalize: StrictBool | None = None
    truncate: StrictBool | None = None


class EmbedRequest(BaseModel):
    """The text-embeddings-inference / InferenceClient.feature_extraction payload (options at the top level,
    or inside "parameters")."""

    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(description="one text, or a list of texts")
    normalize: StrictBool | None = Field(default=None, description="unit-length vectors (default: the model's)")
    truncate: StrictBool | None = Field(default=None, description="cut texts over max_length (default true)")
    parameters: EmbedParameters | None = None


class Label(BaseModel):
    label: str
    score: float


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prediction_id: StrictStr
    label: StrictStr


_STATUS: Sequence[tuple[type[Exception], int, str]] = (
    (PayloadTooLargeError, 413, "payload_too_large"),
    (ModelNotFoundError, 404, "model_not_found"),
    (UnsupportedTaskError, 400, "wrong_task"),
    (InvalidInputError, 400, "invalid_input"),
    (IntegrityError, 503, "model_unavailable"),
    (ManifestError, 503, "model_unavailable"),
)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def status_of(error: FerryRuntimeError) -> tuple[int, str]:
    for kind, status, code in _STATUS:
        if isinstance(error, kind):
            return status, code
    return 500, "internal_error"


def validation_message(errors: Sequence[Any], model: type[BaseModel]) -> str:
    """One sentence a client can act on, from pydantic's errors (the most specific one first)."""
    order = {"json_invalid": 0, "extra_forbidden": 1, "missing": 3}
    for error in sorted(errors, key=lambda e: order.get(e.get("type", ""), 2)):
        kind = error.get("type", "")
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        where = ".".join(location) or "body"
        if kind == "json_invalid":
            return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
        if kind == "extra_forbidden":
            container = _container(model, location[:-1])
            accepted = ", ".join(container.model_fields) if container else "none"
            return f"unknown parameter {where!r}; accepted: {accepted}"
        if kind == "missing":
            return f"{where} is required"
        if location and location[0] == "inputs":
            return "inputs must be a string or a list of strings"
        return f"{where}: {error.get('msg', 'invalid value')}"
    return "the request body is invalid"


def _container(model: type[BaseModel], path: Sequence[str]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in path:
        if current is None or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        current = next((arg for arg in getattr(annotation, "__args__", (annotation,))
                        if isinstance(arg, type) and issubclass(arg, BaseModel)), None)
    return current
