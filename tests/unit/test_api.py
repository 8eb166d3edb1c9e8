"""ferry.runtime.api without a model: body parsing, request models built from Settings, validation errors as
statuses and messages, the OpenAPI document's completion; and the capture record's keyed text hash."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
from datetime import UTC, datetime

import pytest

from ferry.runtime.api import (
    MAX_JSON_DEPTH,
    NOT_BLANK,
    EmbedRequest,
    Health,
    InvalidBodyError,
    OperationDoc,
    complete_openapi,
    parse_json_body,
    request_models,
    validation_error,
)
from ferry.runtime.service import PredictionService, capture_record
from ferry.runtime.settings import Settings


@pytest.mark.parametrize(("body", "message"), [
    ("[" * 100_000 + "]" * 100_000, f"nested more than {MAX_JSON_DEPTH} levels deep"),
    ('{"a": ' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1), "nested more than"),
    ("[" + "9" * (sys.get_int_max_str_digits() + 1) + "]", "an integer of more than 4300 digits"),
    ('{"top_k": Infinity}', "Infinity is not a JSON number"),
    ("[-Infinity]", "-Infinity is not a JSON number"),
])
def test_bodies_json_would_choke_on_are_refused_precisely(body, message):
    with pytest.raises(InvalidBodyError, match=re.escape(message)):
        parse_json_body(body)


def test_bodies_within_the_limits_parse_as_json_does():
    at_depth = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    for body in (at_depth, '{"inputs": "[[[[{{{{"}', "[" + "9" * 4300 + "]", '"\\ud800"', b'{"a": [1.5e3]}'):
        assert parse_json_body(body) == json.loads(body)
    with pytest.raises(json.JSONDecodeError):  # Powertools answers malformed JSON itself (json_invalid)
        parse_json_body('{"inputs": ')


def test_the_blank_pattern_is_exactly_what_str_strip_removes():
    pattern = re.compile(NOT_BLANK)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert (pattern.search(char) is None) == (char.strip() == ""), hex(code)


def errors_of(model, body):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [{**error, "loc": ("body", *error["loc"])} for error in caught.value.errors()]


SMALL = Settings(max_inputs=3, max_input_chars=5)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"inputs": ["a"] * 4}, 413, "inputs has 4 texts; at most 3 are accepted per request"),
    ({"inputs": "abcdef"}, 413, "inputs has 6 characters; at most 5 are accepted per text"),
    ({"inputs": ["ok", "abcdef"]}, 413, "inputs[1] has 6 characters; at most 5 are accepted per text"),
    ({"inputs": ""}, 400, "inputs is empty"),
    ({"inputs": []}, 400, "inputs is empty: give a string or a non-empty list of strings"),
    ({"inputs": ["ok", "\u3000\t"]}, 400, "inputs[1] is empty (whitespace only)"),
    ({"inputs": ["ok", 3]}, 400, "inputs[1] must be a string"),
    ({"inputs": 3}, 400, "inputs must be a string or a list of strings"),
    ({"inputs": "a\ud800"}, 400, "inputs holds a lone surrogate (\\ud800) at character 1"),
    ({"inputs": "ok", "parameters": {"top_k": 0}}, 400, "parameters.top_k: Input should be greater than or equal"),
    ({"inputs": "ok", "parameters": {"top_k": "2"}}, 400, "parameters.top_k: Input should be a valid integer"),
    ({"inputs": "ok", "parameters": {"top": 1}}, 400, "unknown parameter 'parameters.top'; accepted: top_k, "
     "function_to_apply"),
    ({}, 400, "inputs is required"),
])
def test_validation_errors_become_a_status_and_one_precise_message(body, status, message):
    model = request_models(SMALL).predict
    answer = validation_error(errors_of(model, body), model)
    assert (answer.status, answer.code) == (status, "payload_too_large" if status == 413 else "invalid_request")
    assert answer.message.startswith(message), answer.message


def test_request_models_carry_the_settings_limits_and_accept_what_is_within():
    models = request_models(SMALL)
    assert models.predict.__name__ == "PredictRequest" and models.embed.__name__ == "EmbedRequest"
    assert issubclass(models.embed, EmbedRequest)
    assert models.predict.model_validate({"inputs": ["abcde"] * 3, "parameters": {"top_k": 2.0}}).parameters.top_k == 2
    assert models.embed.model_validate({"inputs": "ééééé", "normalize": False}).inputs == "ééééé"
    text, texts = models.embed.model_json_schema()["properties"]["inputs"]["anyOf"]
    assert (text["minLength"], text["maxLength"], text["pattern"]) == (1, 5, NOT_BLANK)
    assert (texts["minItems"], texts["maxItems"]) == (1, 3)


def test_the_openapi_document_is_completed_with_every_error_and_no_422():
    from pydantic import BaseModel

    class Body(BaseModel):
        inputs: str

    generated = {"paths": {
        "/v1/models/{model}/predict": {"post": {"parameters": [{"name": "model", "in": "path", "schema": {}}],
                                                "requestBody": {}, "responses": {"422": {}, "200": {}}}},
        "/healthz": {"get": {"responses": {"422": {}, "200": {}}}},
    }, "components": {"schemas": {"HTTPValidationError": {"properties": {"detail": {"items": {
        "$ref": "#/components/schemas/ValidationError"}}}}, "ValidationError": {}, "Body": Body.model_json_schema()}}}
    document = complete_openapi(generated, {
        ("/v1/models/{model}/predict", "post"): OperationDoc(ok=list[str], errors=(400, 404, 413, 415, 503),
                                                             models=("tiny-bert",)),
        ("/healthz", "get"): OperationDoc(ok=Health, errors=(503,), protected=False),
    }, Settings(max_body_bytes=1234))
    post = document["paths"]["/v1/models/{model}/predict"]["post"]
    assert sorted(post["responses"]) == ["200", "400", "401", "403", "404", "413", "415", "429", "500", "503"]
    assert sorted(document["paths"]["/healthz"]["get"]["responses"]) == ["200", "429", "500", "503"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert "ValidationError" not in document["components"]["schemas"]
    assert post["responses"]["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert post["responses"]["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert post["parameters"][0]["schema"] == {"type": "string", "enum": ["tiny-bert"]}
    assert "at most 1234 bytes" in post["requestBody"]["description"]
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message"}


def record(secret: bytes | None, text: str = "a short text", key_id: str | None = None) -> dict:
    return capture_record(prediction_id="0" * 32, model="m", version="v", time=datetime.now(UTC), label="x",
                          score=0.5, latency_ms=1.0, batch_size=1, token_length=3, truncated=False, text=text,
                          keep_text=False, secret=secret, key_id=key_id)


def test_the_captured_text_hash_is_keyed_by_the_stack_secret_or_absent():
    keyed = record(b"stack-secret")
    assert keyed["text_hmac"] == hmac.new(b"stack-secret", b"a short text", hashlib.sha256).hexdigest()
    assert keyed["text_hmac"] != hashlib.sha256(b"a short text").hexdigest()  # a guess cannot be checked
    assert record(b"another stack")["text_hmac"] != keyed["text_hmac"]
    bare = record(None)
    assert "text_hmac" not in bare and "text_sha256" not in bare and "text" not in bare
    assert record(None, key_id="key-1")["key_id"] == "key-1" and "key_id" not in bare


def test_the_service_keys_its_hash_with_the_configured_secret(tmp_path):
    service = PredictionService(Settings(models_path=(tmp_path,), stack_secret="s3cret"))
    assert service._secret == b"s3cret"
    assert PredictionService(Settings(models_path=(tmp_path,)))._secret is None


def test_the_service_refuses_a_lone_surrogate_from_any_caller(tmp_path):
    from ferry.runtime import InvalidInputError

    service = PredictionService(Settings(models_path=(tmp_path,)))
    with pytest.raises(InvalidInputError, match=re.escape("inputs[1] holds a lone surrogate (\\udc00) at character 2")):
        service.check_inputs(["fine", "ok\udc00"])
    assert service.check_inputs(["ok 😀"]) == ["ok 😀"]
