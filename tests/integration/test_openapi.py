"""The OpenAPI document says what the API does: schemathesis generates requests from it against `ferry serve`
and checks every answer (status documented, body matching its schema, headers, valid data accepted, invalid
data refused, no 5xx). Any finding fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import Server

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

# 413 is how this API refuses data over its limits (maxItems, maxLength), which schemathesis's negative cases
# probe; its default list of statuses that refuse invalid data lacks it. Everything else as the defaults.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
"""


@pytest.fixture(scope="module")
def server(serving_layers):
    running = Server(serving_layers)
    yield running
    assert running.stop() == 0


ERROR_REF = {"$ref": "#/components/schemas/Error"}
STATUSES = {  # what each operation can answer, as documented
    ("/v1/models/{model}/predict", "post"): {200, 400, 401, 403, 404, 413, 415, 429, 500, 503},
    ("/v1/models/{model}/embed", "post"): {200, 400, 401, 403, 404, 413, 415, 429, 500, 503},
    ("/v1/models", "get"): {200, 401, 403, 429, 500, 503},
    ("/v1/models/{model}", "get"): {200, 401, 403, 404, 429, 500, 503},
    ("/healthz", "get"): {200, 429, 500, 503},
    ("/openapi.json", "get"): {200, 429, 500},
}


def test_the_document_states_every_answer_and_the_limits(server):
    code, _, document = server.request("GET", "/openapi.json")
    assert code == 200
    for (path, method), statuses in STATUSES.items():
        responses = document["paths"][path][method]["responses"]
        assert {int(status) for status in responses} == statuses, (path, method)  # no 422: the API answers 400
        for status in statuses - {200}:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == ERROR_REF or ERROR_REF in schema.get("anyOf", []) or status in (401, 403, 429), status
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["Error"]["required"] == ["error"] and set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    text, texts = schemas["PredictRequest"]["properties"]["inputs"]["anyOf"]
    assert (text["minLength"], text["maxLength"], texts["minItems"], texts["maxItems"]) == (1, 10_000, 1, 64)
    predict = document["paths"]["/v1/models/{model}/predict"]["post"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array", "items": {"type": "array", "items": {"$ref": "#/components/schemas/Label"}}}
    assert predict["parameters"][0]["schema"]["enum"] == ["tiny-bert"]  # the classifiers served; minilm embeds
    assert "x-ferry-prediction-ids" in predict["responses"]["200"]["headers"]
    assert server.request("POST", "/v1/models/tiny-bert/predict", {"inputs": ""})[0] == 400  # minLength 1, as said


def test_schemathesis_finds_nothing(server, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{server.url}/openapi.json",
        "--checks", "all",
        # unsupported_method expects 405 for a method an operation lacks; API Gateway HTTP APIs answer 404
        # {"message": "Not Found"} (no route matches), and so does the local gateway: by design, not a finding.
        "--exclude-checks", "unsupported_method",
        # No stateful phase: it feeds the model names of GET /v1/models into both /predict and /embed, over
        # the {model} parameter's enum (the models of that operation's task), and reports the documented 400
        # wrong_task for an embedder sent to /predict as a valid request rejected.
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "25", "--request-timeout", "20", "--seed", "1", "--workers", "2",
        "--generation-database", "none", "--continue-on-failure", "--no-color",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=170, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "No issues found" in output, output[-8000:]
