"""The FERRY_MAX_* limits, set small, from both sides: exactly at a limit is answered 200, one over 413 naming the
limit; the body limit counts bytes of UTF-8 (a base64 body's decoded bytes), the text limit characters; and the
OpenAPI document states the same limits. (The defaults, 64 texts and 10,000 characters, are tested at their
defaults in test_handlers.py.)"""

from __future__ import annotations

import base64
import json

import pytest

from ferry.local.stack import LocalStack

from helpers import ROOT

MAX_INPUTS, MAX_CHARS, MAX_BYTES = 3, 500, 1200
EMPTY = len('{"inputs": ""}')  # the bytes a body of one text has besides the text
TRIPLE = len('{"inputs": ["", "", ""]}')  # and one of three texts


@pytest.fixture(scope="module")
def limited(serving_layers):
    with pytest.MonkeyPatch.context() as patch:
        # read by the predict function as it imports: the template does not set them, as in AWS when left default
        patch.setenv("FERRY_MAX_INPUTS", str(MAX_INPUTS))
        patch.setenv("FERRY_MAX_INPUT_CHARS", str(MAX_CHARS))
        patch.setenv("FERRY_MAX_BODY_BYTES", str(MAX_BYTES))
        with LocalStack(root=ROOT, layers_dir=serving_layers) as running:
            yield running


def predict(stack: LocalStack, body: str | bytes, *, as_base64: bool = False) -> tuple[int, object]:
    event = json.loads((ROOT / "events" / "predict.json").read_text().replace("/models/sentiment/",
                                                                              "/models/tiny-bert/"))
    event["pathParameters"]["model"] = "tiny-bert"
    raw = body.encode("utf-8") if isinstance(body, str) else body
    event["body"] = base64.b64encode(raw).decode() if as_base64 else raw.decode("utf-8")
    event["isBase64Encoded"] = as_base64
    response = stack.invoke("PredictFunction", event)
    return response["statusCode"], json.loads(response["body"])


def one_text(text: str) -> str:
    return json.dumps({"inputs": text}, ensure_ascii=False)


def body_of(size: int, char: str = "x") -> str:
    """A body of exactly `size` bytes: three texts of `char` (1 or 2 bytes), each within the characters limit."""
    width = len(char.encode())
    count, rest = divmod(size - TRIPLE, width)
    assert rest == 0, "a size the character cannot fill exactly"
    lengths = [count // 3 + (1 if index < count % 3 else 0) for index in range(3)]
    body = json.dumps({"inputs": [char * length for length in lengths]}, ensure_ascii=False)
    assert len(body.encode()) == size and max(lengths) <= MAX_CHARS
    return body


def test_texts_per_request(limited):
    assert predict(limited, json.dumps({"inputs": ["a"] * MAX_INPUTS}))[0] == 200
    status, answer = predict(limited, json.dumps({"inputs": ["a"] * (MAX_INPUTS + 1)}))
    assert status == 413 and answer == {"error": {"code": "payload_too_large", "message": (
        f"inputs has {MAX_INPUTS + 1} texts; at most {MAX_INPUTS} are accepted per request")}}


def test_characters_per_text_count_characters(limited):
    assert predict(limited, one_text("x" * MAX_CHARS))[0] == 200
    assert predict(limited, one_text("é" * MAX_CHARS))[0] == 200  # characters, not bytes: 1,000 bytes of text
    assert predict(limited, one_text("é" * (MAX_CHARS + 1)))[0] == 413
    status, answer = predict(limited, one_text("x" * (MAX_CHARS + 1)))
    assert status == 413 and answer["error"]["message"] == (
        f"inputs has {MAX_CHARS + 1} characters; at most {MAX_CHARS} are accepted per text")
    status, answer = predict(limited, json.dumps({"inputs": ["ok", "y" * (MAX_CHARS + 1)]}))
    assert status == 413 and answer["error"]["message"].startswith(f"inputs[1] has {MAX_CHARS + 1} characters")


@pytest.mark.parametrize("as_base64", [False, True], ids=["text body", "base64 body"])
def test_body_bytes_from_both_sides(limited, as_base64):
    assert predict(limited, body_of(MAX_BYTES), as_base64=as_base64)[0] == 200
    status, answer = predict(limited, body_of(MAX_BYTES + 1), as_base64=as_base64)
    assert status == 413 and answer == {"error": {"code": "payload_too_large", "message": (
        f"the body has {MAX_BYTES + 1} bytes; at most {MAX_BYTES} are accepted")}}


def test_body_size_counts_utf8_bytes_not_characters(limited):
    # 589 two-byte characters: 613 characters of body, under the limit if characters were counted; 1202 bytes
    body = body_of(MAX_BYTES + 2, "é")
    assert len(body) < MAX_BYTES
    status, answer = predict(limited, body)
    assert status == 413 and answer["error"]["message"] == (
        f"the body has {MAX_BYTES + 2} bytes; at most {MAX_BYTES} are accepted")
    assert predict(limited, body_of(MAX_BYTES, "é"))[0] == 200  # 1,200 bytes exactly, of two-byte characters


def test_a_base64_body_counts_its_decoded_bytes(limited):
    body = body_of(MAX_BYTES)
    assert len(base64.b64encode(body.encode())) > MAX_BYTES  # the encoded text is over; what it carries is not
    assert predict(limited, body, as_base64=True)[0] == 200


def test_the_openapi_document_states_the_same_limits(limited):
    event = json.loads((ROOT / "events" / "healthz.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/openapi.json"
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /openapi.json"
    document = json.loads(limited.invoke("PredictFunction", event)["body"])
    for name in ("PredictRequest", "EmbedRequest"):
        text, texts = document["components"]["schemas"][name]["properties"]["inputs"]["anyOf"]
        assert (text["minLength"], text["maxLength"]) == (1, MAX_CHARS)
        assert (texts["minItems"], texts["maxItems"]) == (1, MAX_INPUTS) and texts["items"] == text
    body = document["paths"]["/v1/models/{model}/predict"]["post"]["requestBody"]
    assert f"at most {MAX_BYTES} bytes" in body["description"]
