"""The HTTP API's request models (they validate requests and generate the OpenAPI document), the one place
where errors become statuses and the ``{"error": {"code", "message"}}`` body, and the OpenAPI document's
account of what each operation answers.

The request models carry the limits of a :class:`Settings` (``request_models``), so that pydantic refuses a
request over a limit before any work, and the document states the same limits the API enforces; their errors
are worded by :mod:`ferry.runtime.texts`, as the service words its own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from annotated_types import Ge
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    create_model,
)

from ferry.runtime import texts
from ferry.runtime.constants import (
    DEFAULT_MAX_INPUT_CHARS,
    FEATURE_EXTRACTION,
    FEEDBACK_PATH,
    MAX_FEEDBACK_ITEMS,
    MODEL_NAME_RE,
    TASK_ENDPOINTS,
    TEXT_CLASSIFICATION,
    TEXT_GENERATION,
)
from ferry.runtime.exceptions import FerryRuntimeError, PayloadTooLargeError
from ferry.runtime.exceptions import InvalidBodyError as InvalidBodyError  # importable from here as before
from ferry.runtime.ids import PREDICTION_ID_PATTERN
from ferry.runtime.service import Options
from ferry.runtime.settings import Settings

Inputs = StrictStr | list[StrictStr]

# A text must hold a character that str.strip() keeps: the class below is exactly the characters for which
# str.isspace() is true, spelled with \u escapes so that Python, pydantic (Rust regex) and JSON Schema (ECMA-262)
# read the same set (their own \s differ: ECMA's includes U+FEFF, Rust's excludes U+001C-U+001F).
NOT_BLANK = (
    "[^\\t\\n\\u000b\\u000c\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
MAX_JSON_DEPTH = 32  # the API's bodies are 3 levels deep; anything near Python's recursion limit is refused


def whole(value: Any) -> Any:
    """2.0 is the integer 2 to JSON Schema (and to most JSON encoders); pydantic's strict int refuses it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer, strictly (no "2", no true), written as 2 or 2.0, at least 1.
TopK = Annotated[int, Strict(), Ge(1), BeforeValidator(whole)]


class PredictParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: TopK | None = Field(default=None, description="how many labels to return, best first")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None


class PredictRequest(BaseModel):
    """The Hugging Face Inference API's text-classification payload."""

    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(description="one text, or a list of texts")
    parameters: PredictParameters | None = None

    def options(self) -> Options:
        parameters = self.parameters
        if parameters is None:
            return Options()
        return Options(top_k=parameters.top_k, function_to_apply=parameters.function_to_apply)


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

    def options(self) -> Options:
        """The options, each from the top level when given there, else from "parameters"."""
        nested = self.parameters or EmbedParameters()
        normalize = self.normalize if self.normalize is not None else nested.normalize
        truncate = self.truncate if self.truncate is not None else nested.truncate
        return Options(normalize=normalize, truncate=True if truncate is None else truncate)


class FeedbackItem(BaseModel):
    """One label for one prediction (POST /v1/feedback takes one, or a list of them)."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: StrictStr = Field(description=(
        "an id from x-ferry-prediction-ids or a batch output: p1.<model>.<version>.<20 hex>.<16 hex>; an id this "
        "stack did not issue is a 404"))
    label: StrictStr = Field(description="one of the labels of the prediction's model (GET /v1/models lists them)")
    correct: StrictBool = Field(default=False, description=(
        "replace the label the prediction already has (the replaced one is kept in the item's corrections); "
        "without it a different label is a 409"))
    sampled: StrictBool = Field(default=False, description=(
        "the prediction was picked at random for labelling (an audit sample), not labelled because it looked "
        "wrong: the monitor estimates accuracy without bias from these"))
    text: StrictStr | None = Field(default=None, min_length=1, max_length=DEFAULT_MAX_INPUT_CHARS, description=(
        "the text that was predicted, kept with the label so that an update can retrain on it when the stack "
        "captures no text (CaptureText off); without either, a label cannot be learned from"))


FeedbackRequest = FeedbackItem | Annotated[list[FeedbackItem], Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)]


class RequestModels(NamedTuple):
    predict: type[PredictRequest]
    embed: type[EmbedRequest]

    def for_path(self, path: str) -> type[BaseModel]:
        """The model of the request body a path takes (its validation errors name that model's fields)."""
        return self.embed if path.rstrip("/").endswith(TASK_ENDPOINTS[FEATURE_EXTRACTION]) else self.predict


def request_models(settings: Settings) -> RequestModels:
    """PredictRequest and EmbedRequest with `settings`' limits on ``inputs``: 1 to max_inputs texts, each of 1
    to max_input_chars characters, not all whitespace. Same names as the base models (the OpenAPI components)."""
    text: Any = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=settings.max_input_chars,
                                                 pattern=NOT_BLANK)]
    texts: Any = Annotated[list[text], Field(min_length=1, max_length=settings.max_inputs)]
    description = (f"one text, or a list of 1 to {settings.max_inputs} texts; each text 1 to "
                   f"{settings.max_input_chars} characters, not only whitespace")
    inputs: Any = (text | texts, Field(description=description))
    return RequestModels(
        predict=create_model("PredictRequest", __base__=PredictRequest, __doc__=PredictRequest.__doc__,
                             inputs=inputs),
        embed=create_model("EmbedRequest", __base__=EmbedRequest, __doc__=EmbedRequest.__doc__, inputs=inputs),
    )


def _no_constant(name: str) -> Any:
    raise InvalidBodyError(f"the body is not valid JSON ({name} is not a JSON number)")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # built once: json.loads with options builds one a call


def parse_json_body(raw: str | bytes) -> Any:
    """A request body as JSON, refusing with :class:`InvalidBodyError` what the json module would take or raise
    on unexpectedly: nesting past MAX_JSON_DEPTH (past Python's recursion limit json raises RecursionError),
    an integer of more digits than ``sys.get_int_max_str_digits()`` (ValueError), NaN and Infinity.

    Malformed JSON raises json.JSONDecodeError, which Powertools reports as a validation error.
    """
    text = raw if isinstance(raw, str) else raw.decode("utf-8")
    try:
        document = _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise InvalidBodyError(f"the body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError:  # what json raises for an integer over Python's limit on digits
        raise InvalidBodyError(
            f"the body holds an integer of more than {sys.get_int_max_str_digits()} digits") from None
    # Fewer brackets than the limit cannot nest past it: the usual body has 2 or 3, and counting is C-fast.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _deeper_than(document, MAX_JSON_DEPTH):
        raise InvalidBodyError(f"the body is nested more than {MAX_JSON_DEPTH} levels deep")
    return document


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels; iterative, so no depth can overflow it."""
    if not isinstance(document, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


# -- errors ----------------------------------------------------------------------------------------------------

def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def status_of(error: FerryRuntimeError) -> tuple[int, str]:
    """The HTTP status and the code an error is answered with: its own (500, internal_error unless it says)."""
    return error.status, error.code


@dataclass(frozen=True)
class ApiError:
    status: int
    code: str
    message: str


_TYPE_ERRORS = {"string_type", "list_type"}
_ORDER = {"json_invalid": 0, "extra_forbidden": 1, "missing": 3, "too_long": 4, "string_too_long": 4}
_PLAIN: Mapping[str, Callable[[str], str]] = {
    "missing": lambda where: f"{where} is required",
    "too_short": texts.no_texts,
    "string_too_short": texts.blank,
    "string_pattern_mismatch": texts.blank_only,
}


def validation_error(errors: Sequence[Any], model: type[BaseModel]) -> ApiError:
    """One answer a client can act on, from pydantic's errors (the most specific first): 413 for a request over
    a limit, 400 for everything else."""
    for error in sorted(_relevant(list(errors)), key=lambda e: _ORDER.get(e.get("type", ""), 2)):
        return _explain(error, model)
    return _invalid("the request body is invalid")


def _explain(error: Mapping[str, Any], model: type[BaseModel]) -> ApiError:
    kind = error.get("type", "")
    location = [part for part in error.get("loc", ()) if part != "body"]
    where = _where(location)
    ctx = error.get("ctx") or {}
    if kind == "json_invalid":
        return _invalid(f"the body is not valid JSON ({ctx.get('error', 'parse error')})")
    if kind == "extra_forbidden":
        container = _container(model, [str(part) for part in location[:-1]])
        accepted = ", ".join(container.model_fields) if container else "none"
        return _invalid(f"unknown parameter {where!r}; accepted: {accepted}")
    if kind == "too_long":
        return _too_large(texts.too_many_texts(where, ctx.get("actual_length"), ctx.get("max_length")))
    if kind == "string_too_long":
        value = error.get("input")
        length = len(value) if isinstance(value, str) else "too many"
        return _too_large(texts.too_many_chars(where, length, ctx.get("max_length")))
    if kind in _PLAIN:
        return _invalid(_PLAIN[kind](where))
    if kind == "string_unicode":
        return _invalid(f"{where} {_surrogate_message(error.get('input'))}")
    if not location:
        return _invalid("the body must be a JSON object")
    if location[0] == "inputs":
        return _invalid(texts.not_text(where if len(location) > 2 else "inputs", item=len(location) > 2))
    return _invalid(f"{where}: {error.get('msg', 'invalid value')}")


def _invalid(message: str) -> ApiError:
    return ApiError(InvalidBodyError.status, InvalidBodyError.code, message)


def _too_large(message: str) -> ApiError:
    return ApiError(PayloadTooLargeError.status, PayloadTooLargeError.code, message)


def _is_union_tag(part: Any) -> bool:
    """pydantic names the member of a union an error comes from in its location: ``str``, ``list[...]``..."""
    return isinstance(part, str) and (part in {"str", "constrained-str"} or part.startswith("list["))


def _relevant(errors: list[Any]) -> list[Any]:
    """Of a union's members, the errors of the one the value has the type of (a list's item errors, not "not a
    string"); when the value fits no member at all, one of the type errors."""
    members = [e for e in errors if any(_is_union_tag(part) for part in e.get("loc", ()))]
    if not members:
        return errors
    specific = [e for e in members if e.get("type") not in _TYPE_ERRORS or not _is_union_tag(e["loc"][-1])]
    others = [e for e in errors if e not in members]
    return others + (specific or members[:1])


def _where(location: Sequence[Any]) -> str:
    where = ""
    for part in location:
        if _is_union_tag(part):
            continue
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where or "body"


def _surrogate_message(value: Any) -> str:
    return (texts.lone_surrogate(value) if isinstance(value, str) else None) or "is not valid Unicode"


def _container(model: type[BaseModel], path: Sequence[str]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in path:
        if current is None or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        current = next((arg for arg in getattr(annotation, "__args__", (annotation,))
                        if isinstance(arg, type) and issubclass(arg, BaseModel)), None)
    return current


# -- what the API answers, for the OpenAPI document ---------------------------------------------------------------

class Label(BaseModel):
    label: str
    score: float


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(description="stable, machine-readable: invalid_request, model_not_found, ...")
    message: str = Field(description="what is wrong and what to do")


class Error(BaseModel):
    """The API's own errors."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


class GatewayError(BaseModel):
    """Errors API Gateway makes itself (no route, a refused authorization, throttling, a body over 10 MB)."""

    message: str


ModelStatus = Literal["loaded", "loading", "available"]


class ModelSummary(BaseModel):
    name: str
    version: str = Field(description="the first 12 hex digits of the sha256 of model.onnx")
    task: Literal["text-classification", "feature-extraction"]
    labels: list[str]
    max_length: int
    status: ModelStatus


class EndpointSummary(BaseModel):
    name: str | None = Field(description="the SageMaker endpoint's name (FERRY_GENERATE_ENDPOINT)")
    status: str = Field(description="SageMaker's EndpointStatus (InService, Creating, Updating, Failed...), NotFound, "
                                    "or Unknown (why) when it cannot be read")


class LargeModelSummary(BaseModel):
    """The large model (FERRY_GENERATE_MODEL): served by a SageMaker endpoint, through POST
    /v1/models/{model}/generate and /v1/models/{model}/v1/chat/completions."""

    name: str
    task: Literal["text-generation"]
    version: str = Field(description="FERRY_GENERATE_VERSION, or 12 hex digits derived from the model's and the "
                                     "endpoint's names")
    max_new_tokens: int = Field(description="the most new tokens a request may ask for")
    endpoint: EndpointSummary


class ModelList(BaseModel):
    models: list[ModelSummary | LargeModelSummary]


class ModelDetails(ModelSummary):
    status: Literal["loaded"]
    quantization: Any = None
    parity: Any = None
    training: Any = None
    source: Any = None
    arch: Any = None
    created_at: Any = None
    onnxruntime_version: Any = None


FeedbackStatus = Literal["accepted", "duplicate", "corrected"]


class FeedbackOutcome(BaseModel):
    """What became of one label: written (accepted), already there (duplicate: it counts once) or written over
    the prediction's earlier label (corrected)."""

    prediction_id: str
    status: FeedbackStatus
    duplicate: bool


class FeedbackResult(BaseModel):
    """One label of a list, in the list's order: its HTTP status, and its outcome or its error."""

    prediction_id: str | None = Field(description="null when the item had no prediction_id string")
    status: int = Field(description="202, or the status the label alone would have been answered with")
    outcome: FeedbackStatus | None = None
    error: ErrorDetail | None = None


class FeedbackResults(BaseModel):
    """The answer to a list of labels: each one answered on its own, never all or nothing."""

    accepted: int = Field(description="labels accepted: written, duplicates and corrections")
    refused: int
    results: list[FeedbackResult]


class Health(BaseModel):
    status: Literal["ok"]
    models: dict[str, ModelStatus] = Field(description="every model found, by name, without loading any")


@dataclass(frozen=True)
class OperationDoc:
    """What one operation answers: its success body, the error statuses it can send, whether it is behind auth.

    An operation with a `request` body schema is added to a document that lacks it: the feedback and generation
    routes are other functions', and the predict function's document describes the whole API."""

    ok: Any
    errors: tuple[int, ...]
    protected: bool = True
    ok_headers: Mapping[str, Any] | None = None
    models: tuple[str, ...] = ()  # the values of a {model} path parameter this operation applies to
    ok_status: int = 200
    ok_description: str = "success"
    also: tuple[tuple[int, str, Any], ...] = ()  # other success answers: (status, description, body)
    request: Any = None  # the request body, for an operation the document may lack
    summary: str | None = None
    notes: tuple[tuple[int, str], ...] = ()  # this operation's own description of an error status
    quota: bool = True  # a POST counted against the key's daily quota (429 with Retry-After)


_REF = "#/components/schemas/{model}"
_ERRORS: Mapping[int, tuple[str, tuple[type[BaseModel], ...]]] = {
    400: ("invalid request: not JSON, a wrong type or value, an unknown parameter (the message names it)",
          (Error,)),
    401: ("no Authorization header (API Gateway's own answer)", (GatewayError,)),
    403: ("the API key was refused (API Gateway's own answer), or it lacks the scope of the operation (predict, "
          "feedback)", (Error, GatewayError)),
    404: ("no model of that name (from API Gateway: no such route)", (Error, GatewayError)),
    409: ("the prediction already has another label; send \"correct\": true to replace it", (Error,)),
    413: ("over a limit: texts per request, characters per text, bytes per body (the message names it)",
          (Error, GatewayError)),
    415: ("the Content-Type is not application/json", (Error,)),
    429: ("this API key's daily quota is used (Retry-After says when to try again), or API Gateway throttled "
          "the request", (Error, GatewayError)),
    500: ("the service failed; the request id is in the logs", (Error, GatewayError)),
    502: ("the large model's endpoint failed, or answered what the API cannot read (the details are in the logs)",
          (Error,)),
    503: ("the model, or every model, cannot be loaded", (Error,)),
    504: ("the large model did not answer in time: ask for fewer new tokens", (Error, GatewayError)),
}
RETRY_AFTER = {"description": "seconds until the quota allows requests again", "required": False,
               "schema": {"type": "integer", "minimum": 0}}
PREDICTION_IDS_HEADER = "x-ferry-prediction-ids"  # one id per input, in input order, comma-separated
PREDICTION_IDS_DOC = {PREDICTION_IDS_HEADER: {
    "description": "one prediction id per input, in input order, comma-separated (ferry.runtime.ids: "
                   "p1.<model>.<version>.<nonce>.<mac>); POST /v1/feedback takes them", "required": True,
    "schema": {"type": "string", "pattern": f"^{PREDICTION_ID_PATTERN}(,{PREDICTION_ID_PATTERN})*$"}}}
_POST_ERRORS = (400, 404, 413, 415, 503)
FEEDBACK_DOC = OperationDoc(
    ok=FeedbackOutcome | FeedbackResults, errors=(400, 404, 409, 413, 415, 503), ok_status=202,
    ok_description="every label accepted: one label's outcome, or a list's results",
    also=((207, "some labels of a list were refused: each result says why", FeedbackResults),),
    request=FeedbackRequest, quota=False,
    summary=f"Labels for predictions: one, or a list of 1 to {MAX_FEEDBACK_ITEMS}, answered label by label",
    notes=((400, "invalid request or label: not JSON, an unknown field, a label the model does not have "
                 "(the message names the accepted labels)"),
           (404, "a prediction id this stack did not issue, or of a model no longer served"),
           (413, f"a list of more than {MAX_FEEDBACK_ITEMS} labels, or a body over the byte limit"),
           (503, "the feedback table did not take the label; sending it again is safe")))


def operations(tasks: Mapping[str, str]) -> dict[tuple[str, str], OperationDoc]:
    """What each operation of the API answers; `tasks` is each served model's task, by name (the {model}
    values an operation applies to)."""
    of_task = {task: tuple(sorted(name for name, kind in tasks.items() if kind == task)) for task in TASK_ENDPOINTS}
    model = "/v1/models/{model}"
    return {
        (model + TASK_ENDPOINTS[TEXT_CLASSIFICATION], "post"): OperationDoc(
            ok=list[list[Label]], errors=_POST_ERRORS, ok_headers=PREDICTION_IDS_DOC,
            models=of_task[TEXT_CLASSIFICATION]),
        (model + TASK_ENDPOINTS[FEATURE_EXTRACTION], "post"): OperationDoc(
            ok=list[list[float]], errors=_POST_ERRORS, ok_headers=PREDICTION_IDS_DOC,
            models=of_task[FEATURE_EXTRACTION]),
        ("/v1/models", "get"): OperationDoc(ok=ModelList, errors=(503,)),
        (model, "get"): OperationDoc(ok=ModelDetails | LargeModelSummary if TEXT_GENERATION in tasks.values()
                                     else ModelDetails, errors=(404, 503), models=tuple(sorted(tasks))),
        ("/healthz", "get"): OperationDoc(ok=Health, errors=(503,), protected=False),
        ("/openapi.json", "get"): OperationDoc(ok=dict[str, Any], errors=(), protected=False),
        (FEEDBACK_PATH, "post"): FEEDBACK_DOC,
    }


def complete_openapi(document: dict[str, Any], operations: Mapping[tuple[str, str], OperationDoc],
                     settings: Settings) -> dict[str, Any]:
    """Powertools' document, made to say what the API does: no 422 (the API answers 400), every error status an
    operation can send with its schema, the schema of each 200 answer, and the limits."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for (path, method), doc in operations.items():
        operation = _operation(document, path, method, doc, components)
        if operation is None:
            continue
        operation["responses"] = _responses(method, doc, components)
        for parameter in operation.get("parameters", []):
            if parameter.get("name") == "model" and parameter.get("in") == "path":
                _describe_model_parameter(parameter, doc.models)
        if "requestBody" in operation:
            operation["requestBody"]["description"] = (
                f"JSON, at most {settings.max_body_bytes} bytes (UTF-8; a base64 body counts decoded)")
    powertools = ("HTTPValidationError", "ValidationError", "ResponseValidationError")  # its 422 bodies
    used = json.dumps([document.get("paths"), {k: v for k, v in components.items() if k not in powertools}])
    for name in powertools:
        if f'"{_REF.format(model=name)}"' not in used:
            components.pop(name, None)
    document.setdefault("info", {})["description"] = (
        f"Limits: {settings.max_inputs} texts a request, {settings.max_input_chars} characters a text, "
        f"{settings.max_body_bytes} bytes a body (413 over any of them). Errors are "
        '{"error": {"code", "message"}}; those API Gateway makes itself are {"message"}.')
    return document


def _operation(document: dict[str, Any], path: str, method: str, doc: OperationDoc,
               components: dict[str, Any]) -> dict[str, Any] | None:
    """The document's operation, with the summary and request body `doc` gives; an operation the document lacks
    is added when `doc` has a request body (another function's route), else None."""
    operation: dict[str, Any] | None = document.get("paths", {}).get(path, {}).get(method)
    if operation is None:
        if doc.request is None:
            return None
        operation = document.setdefault("paths", {}).setdefault(path, {}).setdefault(method, {})
        if "{model}" in path:  # described below, as the document's own {model} parameters are
            operation["parameters"] = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    if doc.summary:
        operation.setdefault("summary", doc.summary)
    if doc.request is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _schema(doc.request, components)}}}
    return operation


def _describe_model_parameter(parameter: dict[str, Any], models: tuple[str, ...]) -> None:
    """The {model} segment: one of the models this deployment serves for the operation (any other name is a 404,
    a model of the other task a 400), or, when there is none, what a model name looks like."""
    if models:
        parameter["description"] = "one of the models served here that this operation applies to"
        parameter["schema"] = {"type": "string", "enum": list(models)}
    else:
        parameter["description"] = "a model's name (no model is served here now)"
        parameter["schema"] = {"type": "string", "pattern": MODEL_NAME_RE.pattern}


def _responses(method: str, doc: OperationDoc, components: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": doc.ok_description, "content": {"application/json": {
        "schema": _schema(doc.ok, components)}}}
    if doc.ok_headers:
        ok["headers"] = dict(doc.ok_headers)
    responses = {str(doc.ok_status): ok}
    for status, description, body in doc.also:
        responses[str(status)] = {"description": description, "content": {"application/json": {
            "schema": _schema(body, components)}}}
    notes = dict(doc.notes)
    quota = method == "post" and doc.quota
    for status in sorted({*doc.errors, *((401, 403) if doc.protected else ()), 429, 500}):
        description, shapes = _ERRORS[status]
        description = notes.get(status, description)
        if method == "get" and status == 403:  # the scopes guard POSTs only; a GET's 403 is API Gateway's
            shapes = (GatewayError,)
        if status == 429 and not quota:  # API Gateway's throttling; the quota counts predictions only
            shapes = (GatewayError,)
        schemas = [_schema(shape, components) for shape in shapes]
        response: dict[str, Any] = {"description": description, "content": {"application/json": {
            "schema": schemas[0] if len(schemas) == 1 else {"anyOf": schemas}}}}
        if status == 429 and quota:
            response["headers"] = {"Retry-After": RETRY_AFTER}
        responses[str(status)] = response
    return responses


def _schema(kind: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a model or type, its definitions moved into the document's components."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        schema = kind.model_json_schema(ref_template=_REF, mode="serialization")
        definitions = schema.pop("$defs", {})
        components.update(definitions)
        components[kind.__name__] = schema
        return {"$ref": _REF.format(model=kind.__name__)}
    schema = TypeAdapter(kind).json_schema(ref_template=_REF, mode="serialization")
    components.update(schema.pop("$defs", {}))
    return schema
