"""The API's limits and answers to the letter: JSON depth at its bound, each pydantic error worded as the client
sees it (real errors and the shapes pydantic may give), the request models' documentation, and the OpenAPI
document's account of every operation."""

from __future__ import annotations

import copy
import inspect
import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ferry.runtime.api import (
    _ERRORS,
    FEEDBACK_DOC,
    MAX_JSON_DEPTH,
    PREDICTION_IDS_HEADER,
    RETRY_AFTER,
    EmbedRequest,
    Error,
    GatewayError,
    Health,
    InvalidBodyError,
    Label,
    ModelDetails,
    ModelList,
    OperationDoc,
    PredictRequest,
    complete_openapi,
    operations,
    parse_json_body,
    request_models,
    validation_error,
)
from ferry.runtime.constants import MODEL_NAME_RE
from ferry.runtime.generation import generation_models, generation_operations
from ferry.runtime.ids import PREDICTION_ID_PATTERN
from ferry.runtime.service import Options
from ferry.runtime.settings import Settings

SETTINGS = Settings(models_path=(), max_inputs=3, max_input_chars=40, max_body_bytes=400)


# -- JSON depth ---------------------------------------------------------------------------------------------------

def _chain(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_body_exactly_at_the_depth_limit_passes_however_many_brackets_it_has():
    at_limit = "[" + _chain(MAX_JSON_DEPTH - 1) + ", []" * 10 + "]"  # 32 deep, 42 brackets
    assert parse_json_body(at_limit) == json.loads(at_limit)
    over = "[" + _chain(MAX_JSON_DEPTH) + ", []" * 10 + "]"
    with pytest.raises(InvalidBodyError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        parse_json_body(over)
    objects = '{"a": ' * MAX_JSON_DEPTH + "{}" + "}" * MAX_JSON_DEPTH  # objects only, 33 deep
    with pytest.raises(InvalidBodyError, match="nested more than"):
        parse_json_body(objects)
    lists = _chain(MAX_JSON_DEPTH + 8)  # lists only
    with pytest.raises(InvalidBodyError, match="nested more than"):
        parse_json_body(lists)


def test_brackets_inside_strings_or_spread_wide_are_not_depth():
    assert parse_json_body(json.dumps("[" * 100)) == "[" * 100
    wide = json.dumps({"inputs": [[1]] * 40, "parameters": {"a": {}}})
    assert parse_json_body(wide.encode()) == json.loads(wide)


# -- validation errors, as pydantic makes them -------------------------------------------------------------------------

def errors_of(model: type[BaseModel], body: Any) -> list[Any]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return caught.value.errors()


def models() -> Any:
    """The request models, made in the test (module-level ones would be made before a mutant is switched on)."""
    return request_models(SETTINGS)


@pytest.mark.parametrize(("which", "body", "message"), [
    ("predict", {"inputs": "x", "nope": 1}, "unknown parameter 'nope'; accepted: inputs, parameters"),
    ("predict", {"inputs": "x", "parameters": {"k": 1}},
     "unknown parameter 'parameters.k'; accepted: top_k, function_to_apply"),
    ("embed", {"inputs": "x", "parameters": {"top_k": 1}},
     "unknown parameter 'parameters.top_k'; accepted: normalize, truncate"),
    ("predict", {"inputs": ["ok", 5]}, "inputs[1] must be a string"),
    ("predict", {"inputs": 5}, "inputs must be a string or a list of strings"),
    ("base", {"inputs": 5}, "inputs must be a string or a list of strings"),
    ("base", {"inputs": ["a", 5]}, "inputs[1] must be a string"),
    ("predict", {}, "inputs is required"),
    ("predict", [], "the body must be a JSON object"),
])
def test_a_validation_error_is_worded_for_the_client(which, body, message):
    model = PredictRequest if which == "base" else getattr(models(), which)
    answer = validation_error(errors_of(model, body), model)
    assert (answer.status, answer.code, answer.message) == (400, "invalid_request", message)


# -- validation errors, in every shape the wording handles ------------------------------------------------------------

@pytest.mark.parametrize(("error", "model", "message"), [
    ({"type": "json_invalid", "loc": ("body", 7), "ctx": {"error": "Expecting value"}}, PredictRequest,
     "the body is not valid JSON (Expecting value)"),
    ({"type": "json_invalid", "loc": ("body",)}, PredictRequest, "the body is not valid JSON (parse error)"),
    ({"type": "extra_forbidden", "loc": ("body", "inputs", "x")}, PredictRequest,
     "unknown parameter 'inputs.x'; accepted: none"),
    ({"type": "extra_forbidden", "loc": ("body", "inputs", "x", "y")}, PredictRequest,
     "unknown parameter 'inputs.x.y'; accepted: none"),
    ({"type": "extra_forbidden", "loc": ("body", "error", "x")}, Error,
     "unknown parameter 'error.x'; accepted: code, message"),
    ({"type": "extra_forbidden", "loc": ("body", "error", "code", "x")}, Error,
     "unknown parameter 'error.code.x'; accepted: none"),
    ({"type": "string_too_long", "loc": ("body", "inputs"), "input": 5, "ctx": {"max_length": 3}}, PredictRequest,
     "inputs has too many characters; at most 3 are accepted per text"),
    ({"type": "string_unicode", "loc": ("body", "inputs"), "input": 5}, PredictRequest,
     "inputs is not valid Unicode"),
    ({"type": "string_unicode", "loc": ("body", "inputs", 0), "input": "a\udc80"}, PredictRequest,
     "inputs[0] holds a lone surrogate (\\udc80) at character 1: texts must be valid Unicode"),
    ({"type": "missing", "loc": ("body",)}, PredictRequest, "body is required"),
    ({"type": "string_type", "loc": ("body", "inputs", 3)}, PredictRequest,
     "inputs must be a string or a list of strings"),
    ({"type": "int_type", "loc": ("body", "parameters", "top_k")}, PredictRequest, "parameters.top_k: invalid value"),
    ({"type": "int_type", "loc": ("body", "parameters", "top_k"), "msg": "Input should be a valid integer"},
     PredictRequest, "parameters.top_k: Input should be a valid integer"),
    ({"loc": ("body", "parameters")}, PredictRequest, "parameters: invalid value"),
    ({"type": "model_type"}, PredictRequest, "the body must be a JSON object"),
])
def test_each_shape_of_error_is_worded(error, model, message):
    assert validation_error([error], model).message == message


def test_the_most_specific_error_is_answered_first():
    missing = {"type": "missing", "loc": ("body", "inputs")}
    typed = {"type": "bool_type", "loc": ("body", "normalize"), "msg": "Input should be a valid boolean"}
    extra = {"type": "extra_forbidden", "loc": ("body", "x")}
    assert validation_error([missing, typed], EmbedRequest).message == "normalize: Input should be a valid boolean"
    assert validation_error([typed, missing, extra], EmbedRequest).message.startswith("unknown parameter 'x'")
    too_long = {"type": "too_long", "loc": ("body", "inputs"), "ctx": {"actual_length": 5, "max_length": 3}}
    assert validation_error([too_long, missing], EmbedRequest).message == "inputs is required"
    assert validation_error([too_long, typed], EmbedRequest).message == "normalize: Input should be a valid boolean"
    answer = validation_error([too_long], EmbedRequest)
    assert (answer.status, answer.message) == (413, "inputs has 5 texts; at most 3 are accepted per request")
    assert validation_error([], EmbedRequest).message == "the request body is invalid"
    no_location = {"type": "string_type"}
    assert validation_error([no_location, missing], EmbedRequest).message == "the body must be a JSON object"


# -- the request models ------------------------------------------------------------------------------------------------

def test_the_request_models_say_their_limits_and_keep_their_documentation():
    made_models = models()
    for made, base in ((made_models.predict, PredictRequest), (made_models.embed, EmbedRequest)):
        assert made.__name__ == base.__name__ and made.__doc__ == base.__doc__
        schema = made.model_json_schema()
        assert schema["description"] == inspect.cleandoc(base.__doc__ or "")
        assert schema["properties"]["inputs"]["description"] == (
            "one text, or a list of 1 to 3 texts; each text 1 to 40 characters, not only whitespace")


def test_predict_options_carry_both_parameters():
    request = PredictRequest.model_validate({"inputs": "x", "parameters": {"top_k": 2.0,
                                                                          "function_to_apply": "sigmoid"}})
    assert request.options() == Options(top_k=2, function_to_apply="sigmoid")
    assert PredictRequest.model_validate({"inputs": "x"}).options() == Options()


@pytest.mark.parametrize(("path", "embed"), [
    ("/v1/models/m/embed", True), ("/v1/models/m/embed/", True), ("/v1/models/m/predict", False),
    ("/v1/models/m/predict/", False), ("/v1/models/m/embedX", False), ("/v1/models/m/embed/x", False),
])
def test_the_request_model_of_a_path(path, embed):
    made = models()
    assert made.for_path(path) is (made.embed if embed else made.predict)


# -- the OpenAPI document ----------------------------------------------------------------------------------------------

def test_what_each_operation_answers():
    documented = operations({"sentiment": "text-classification", "alpha": "text-classification",
                             "minilm": "feature-extraction"})
    one = PREDICTION_ID_PATTERN
    ids = {PREDICTION_IDS_HEADER: {"description": "one prediction id per input, in input order, comma-separated "
                                                  "(ferry.runtime.ids: p1.<model>.<version>.<nonce>.<mac>); POST "
                                                  "/v1/feedback takes them",
                                   "required": True, "schema": {"type": "string", "pattern": f"^{one}(,{one})*$"}}}
    assert documented == {
        ("/v1/models/{model}/predict", "post"): OperationDoc(ok=list[list[Label]], errors=(400, 404, 413, 415, 503),
                                                             ok_headers=ids, models=("alpha", "sentiment")),
        ("/v1/models/{model}/embed", "post"): OperationDoc(ok=list[list[float]], errors=(400, 404, 413, 415, 503),
                                                           ok_headers=ids, models=("minilm",)),
        ("/v1/models", "get"): OperationDoc(ok=ModelList, errors=(503,)),
        ("/v1/models/{model}", "get"): OperationDoc(ok=ModelDetails, errors=(404, 503),
                                                    models=("alpha", "minilm", "sentiment")),
        ("/healthz", "get"): OperationDoc(ok=Health, errors=(503,), protected=False),
        ("/openapi.json", "get"): OperationDoc(ok=dict[str, Any], errors=(), protected=False),
        ("/v1/feedback", "post"): FEEDBACK_DOC,
    }
    assert list(documented) == [("/v1/models/{model}/predict", "post"), ("/v1/models/{model}/embed", "post"),
                                ("/v1/models", "get"), ("/v1/models/{model}", "get"), ("/healthz", "get"),
                                ("/openapi.json", "get"), ("/v1/feedback", "post")]
    assert operations({})[("/v1/models/{model}", "get")].models == ()


def _model_parameter() -> dict[str, Any]:
    return {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}


def _powertools_document() -> dict[str, Any]:
    """What Powertools makes, in the parts complete_openapi reads (the model list route left out)."""
    invalid = {"422": {"description": "Validation Error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}}
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ferry", "version": "1"},
        "paths": {
            "/v1/models/{model}/predict": {"post": {"parameters": [_model_parameter()], "requestBody": body,
                                                    "responses": copy.deepcopy(invalid)}},
            "/v1/models/{model}/embed": {"post": {"parameters": [_model_parameter()], "requestBody": body,
                                                  "responses": copy.deepcopy(invalid)}},
            "/v1/models/{model}": {"get": {"parameters": [{"name": "model", "in": "query"}, _model_parameter(),
                                                          {"name": "other", "in": "path"}],
                                           "responses": {}}},
            "/healthz": {"get": {"responses": {}}},
            "/openapi.json": {"get": {"responses": {}}},
        },
        "components": {"schemas": {"HTTPValidationError": {"type": "object"}, "ValidationError": {"type": "object"},
                                   "ResponseValidationError": {"type": "object"}, "PredictRequest": {}}},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(status: int, *shapes: str) -> dict[str, Any]:
    schema = _ref(shapes[0]) if len(shapes) == 1 else {"anyOf": [_ref(shape) for shape in shapes]}
    return {"description": _ERRORS[status][0], "content": {"application/json": {"schema": schema}}}


def test_the_document_says_what_each_operation_answers():
    document = complete_openapi(_powertools_document(), operations({"sentiment": "text-classification"}), SETTINGS)
    paths = document["paths"]
    predict = paths["/v1/models/{model}/predict"]["post"]
    assert predict["responses"] == {
        "200": {"description": "success", "content": {"application/json": {"schema": {
            "type": "array", "items": {"type": "array", "items": _ref("Label")}}}},
            "headers": operations({})[("/v1/models/{model}/predict", "post")].ok_headers},
        "400": _error(400, "Error"), "401": _error(401, "GatewayError"), "403": _error(403, "Error", "GatewayError"),
        "404": _error(404, "Error", "GatewayError"), "413": _error(413, "Error", "GatewayError"),
        "415": _error(415, "Error"),
        "429": {**_error(429, "Error", "GatewayError"), "headers": {"Retry-After": RETRY_AFTER}},
        "500": _error(500, "Error", "GatewayError"), "503": _error(503, "Error"),
    }
    assert list(predict["responses"]) == ["200", "400", "401", "403", "404", "413", "415", "429", "500", "503"]
    assert predict["requestBody"]["description"] == "JSON, at most 400 bytes (UTF-8; a base64 body counts decoded)"
    assert predict["parameters"] == [{"name": "model", "in": "path", "required": True,
                                      "description": "one of the models served here that this operation applies to",
                                      "schema": {"type": "string", "enum": ["sentiment"]}}]
    embed = paths["/v1/models/{model}/embed"]["post"]
    assert embed["parameters"] == [{"name": "model", "in": "path", "required": True,
                                    "description": "a model's name (no model is served here now)",
                                    "schema": {"type": "string", "pattern": MODEL_NAME_RE.pattern}}]
    assert embed["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    described = paths["/v1/models/{model}"]["get"]
    assert described["parameters"] == [{"name": "model", "in": "query"}, {
        "name": "model", "in": "path", "required": True,
        "description": "one of the models served here that this operation applies to",
        "schema": {"type": "string", "enum": ["sentiment"]}}, {"name": "other", "in": "path"}]
    assert "requestBody" not in described and "headers" not in described["responses"]["200"]
    assert described["responses"]["429"] == _error(429, "GatewayError")  # a GET is throttled, never over quota
    assert list(described["responses"]) == ["200", "401", "403", "404", "429", "500", "503"]
    health = paths["/healthz"]["get"]["responses"]
    assert list(health) == ["200", "429", "500", "503"]  # not behind the authorizer
    assert health["200"]["content"]["application/json"]["schema"] == _ref("Health")
    assert list(paths["/openapi.json"]["get"]["responses"]) == ["200", "429", "500"]
    assert paths["/openapi.json"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "object", "additionalProperties": True}
    assert "/v1/models" not in paths  # an operation the document lacks is passed over, the next ones completed


def test_the_document_s_components_and_its_description():
    document = complete_openapi(_powertools_document(), operations({}), SETTINGS)
    components = document["components"]["schemas"]
    assert {"Error", "ErrorDetail", "GatewayError", "Health", "Label", "ModelDetails", "PredictRequest"} <= set(
        components)
    assert not {"HTTPValidationError", "ValidationError", "ResponseValidationError"} & set(components)
    assert components["Label"] == {"properties": {"label": {"title": "Label", "type": "string"},
                                                  "score": {"title": "Score", "type": "number"}},
                                   "required": ["label", "score"], "title": "Label", "type": "object"}
    assert components["Error"]["properties"]["error"] == _ref("ErrorDetail")
    assert "$defs" not in components["Error"] and "$defs" not in components["ModelDetails"]
    assert components["GatewayError"] == GatewayError.model_json_schema()
    assert document["info"] == {"title": "Ferry", "version": "1", "description": (
        "Limits: 3 texts a request, 40 characters a text, 400 bytes a body (413 over any of them). Errors are "
        '{"error": {"code", "message"}}; those API Gateway makes itself are {"message"}.')}


def test_a_validation_component_still_referred_to_is_kept():
    document = _powertools_document()
    document["paths"]["/extra"] = {"get": {"responses": {"422": {"content": {"application/json": {
        "schema": _ref("ValidationError")}}}}}}
    document["components"]["schemas"]["Wrapper"] = {"items": _ref("ResponseValidationError")}
    completed = complete_openapi(document, operations({}), SETTINGS)["components"]["schemas"]
    assert "ValidationError" in completed and "ResponseValidationError" in completed
    assert "HTTPValidationError" not in completed


def _keys(value: Any) -> set[str]:
    """Every key of every object in a JSON value."""
    if isinstance(value, dict):
        return set(value).union(*(_keys(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(item) for item in value))
    return set()


def test_the_generation_routes_are_described_when_the_stack_has_a_large_model():
    large = {**operations({"sentiment": "text-classification", "smollm2": "text-generation"}),
             **generation_operations("smollm2", generation_models(SETTINGS))}
    document = complete_openapi(_powertools_document(), large, SETTINGS)
    paths, components = document["paths"], document["components"]["schemas"]
    for path, request, ok in (("/v1/models/{model}/generate", "GenerateRequest",
                               {"type": "array", "items": _ref("GeneratedText")}),
                              ("/v1/models/{model}/v1/chat/completions", "ChatRequest", _ref("ChatCompletion"))):
        operation = paths[path]["post"]  # another function's route: added with its request body and {model}
        assert operation["parameters"] == [{"name": "model", "in": "path", "required": True,
                                            "description": "one of the models served here that this operation "
                                                           "applies to", "schema": {"type": "string",
                                                                                    "enum": ["smollm2"]}}]
        assert operation["requestBody"]["content"]["application/json"]["schema"] == _ref(request)
        responses = operation["responses"]
        assert list(responses) == ["200", "400", "401", "403", "404", "413", "415", "429", "500", "502", "503",
                                   "504"]
        assert responses["200"]["content"]["application/json"]["schema"] == ok
        assert PREDICTION_IDS_HEADER in responses["200"]["headers"]
        assert responses["429"]["headers"] == {"Retry-After": RETRY_AFTER}  # the key's quota counts generations
        assert "not in service" in responses["503"]["description"]
        assert responses["504"]["description"] == _ERRORS[504][0]
    bound = SETTINGS.generate_max_new_tokens
    tokens = components["GenerateParameters"]["properties"]["max_new_tokens"]["anyOf"][0]
    assert (tokens["minimum"], tokens["maximum"]) == (1, bound)
    assert components["ChatRequest"]["properties"]["max_tokens"]["anyOf"][0]["maximum"] == bound
    assert components["GenerateRequest"]["properties"]["inputs"]["maxLength"] == SETTINGS.max_input_chars
    assert set(components["ChatCompletion"]["required"]) == {"id", "object", "created", "model",
                                                             "system_fingerprint", "choices"}
    without = complete_openapi(_powertools_document(), operations({"sentiment": "text-classification"}), SETTINGS)
    assert not any("generate" in path or "chat" in path for path in without["paths"])


def test_no_schema_states_a_bound_json_schema_does_not_know():
    """pydantic writes a bound it cannot put in the core schema (after a BeforeValidator) as "ge" or "le": a
    client reading the document would see no bound at all."""
    document = complete_openapi(_powertools_document(), {
        **operations({"sentiment": "text-classification", "smollm2": "text-generation"}),
        **generation_operations("smollm2", generation_models(SETTINGS))}, SETTINGS)
    document["components"]["schemas"].update({model.__name__: model.model_json_schema() for model in (
        PredictRequest, EmbedRequest)})
    assert not {"ge", "gt", "le", "lt"} & _keys(document["components"])


def test_a_bare_document_is_given_components_and_an_info():
    document = complete_openapi({}, operations({}), SETTINGS)
    assert set(document) == {"components", "info", "paths"}
    assert list(document["paths"]) == ["/v1/feedback"]  # another function's route: added, with its request body
    assert document["info"]["description"].startswith("Limits: 3 texts a request")
    assert "ModelList" not in document["components"]["schemas"]  # no operation to describe, no schema added
