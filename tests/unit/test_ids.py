"""Prediction ids that prove where they come from (ferry.runtime.ids): issued and verified without a lookup, refused
when forged, tampered with, made under another secret or of no known shape; a batch record's id the same every
time its file is predicted."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime

import pytest

from ferry.runtime.batch import BatchObject
from ferry.runtime.exceptions import PredictionNotFoundError
from ferry.runtime.ids import (
    MAX_ID_CHARS,
    PREDICTION_ID_PATTERN,
    UNKEYED_SECRET,
    IssuedId,
    PredictionIds,
)
from ferry.runtime.service import PredictionService, capture_record
from ferry.runtime.settings import Settings

VERSION = "1a2b3c4d5e6f"
IDS = PredictionIds("stack secret")


def test_an_issued_id_carries_its_model_version_and_nonce_and_parses_back():
    issued = IDS.issue("sentiment", VERSION)
    assert re.fullmatch(PREDICTION_ID_PATTERN, issued) and issued.startswith(f"p1.sentiment.{VERSION}.")
    assert len(issued) == 63 and IDS.keyed
    parsed = IDS.parse(issued)
    assert parsed == IssuedId("sentiment", VERSION, issued.split(".")[3])
    assert parsed.model_version == f"sentiment#{VERSION}"  # the capture table's index key
    assert len({IDS.issue("sentiment", VERSION) for _ in range(1000)}) == 1000  # random nonces
    longest = IDS.issue("m" * 63, VERSION)
    assert len(longest) == MAX_ID_CHARS and IDS.parse(longest).model == "m" * 63


def test_a_given_nonce_makes_the_same_id_under_the_same_secret_only():
    nonce = "0123456789abcdef0123"
    assert IDS.issue("sentiment", VERSION, nonce) == PredictionIds(b"stack secret").issue("sentiment", VERSION, nonce)
    assert IDS.issue("sentiment", VERSION, nonce) != PredictionIds("another").issue("sentiment", VERSION, nonce)
    assert IDS.parse(IDS.issue("sentiment", VERSION, nonce)).nonce == nonce


@pytest.mark.parametrize("part", [1, 2, 3, 4], ids=["model", "version", "nonce", "mac"])
def test_an_id_changed_anywhere_is_refused_as_not_issued_here(part):
    parts = IDS.issue("sentiment", VERSION).split(".")
    last = parts[part][-1]
    parts[part] = parts[part][:-1] + {"t": "u"}.get(last, "0" if last != "0" else "1")  # one character changed
    with pytest.raises(PredictionNotFoundError) as caught:
        IDS.parse(".".join(parts))
    assert "was not issued by this stack (its signature does not match)" in str(caught.value)
    assert (caught.value.status, caught.value.code) == (404, "prediction_not_found")


def test_another_stack_s_ids_and_unkeyed_ones_are_refused():
    other = PredictionIds("another stack").issue("sentiment", VERSION)
    unkeyed = PredictionIds(None).issue("sentiment", VERSION)
    for foreign in (other, unkeyed):
        with pytest.raises(PredictionNotFoundError, match="not issued by this stack"):
            IDS.parse(foreign)
    # without a secret (the CLI) the fixed, public key is used: such ids check their shape and that key only
    assert not PredictionIds(None).keyed and not PredictionIds("").keyed
    assert PredictionIds("").parse(unkeyed).model == "sentiment"
    assert PredictionIds(UNKEYED_SECRET).parse(unkeyed).model == "sentiment"  # public: it proves nothing


def test_the_mac_is_not_the_captured_text_hash_of_the_id():
    """The key is derived from the secret, not the secret itself: a client that sends an id's text as its input
    must not find that id's mac in the capture's text_hmac (HMAC-SHA256 under the raw secret)."""
    issued = IDS.issue("sentiment", VERSION)
    body, mac = issued.rsplit(".", 1)
    record = capture_record(prediction_id="x", model="m", version="v", time=datetime.now(UTC), label=None,
                            score=None, latency_ms=1, batch_size=1, token_length=1, truncated=False, text=body,
                            keep_text=False, secret=b"stack secret")
    assert mac not in record["text_hmac"]
    assert mac != hmac.new(b"stack secret", body.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.mark.parametrize(("value", "message"), [
    ("", "'' is not a prediction id: Ferry issues p1.<model>.<version>.<20 hex>.<16 hex>"),
    ("abc", "'abc' is not a prediction id"),
    ("0" * 32, "was issued before prediction ids were verifiable and cannot take feedback"),
    (f"p1.Sentiment.{VERSION}.{'0' * 20}.{'0' * 16}", "is not a prediction id"),  # no capital in a name
    (f"p1.sentiment.{VERSION.upper()}.{'0' * 20}.{'0' * 16}", "is not a prediction id"),
    (f"p2.sentiment.{VERSION}.{'0' * 20}.{'0' * 16}", "is not a prediction id"),  # another format
    (f"p1.sentiment.{VERSION}.{'0' * 20}.{'0' * 16}.x", "is not a prediction id"),
    (f"p1.sentiment.{VERSION}.{'0' * 19}.{'0' * 16}", "is not a prediction id"),
    (f" p1.sentiment.{VERSION}.{'0' * 20}.{'0' * 16}", "is not a prediction id"),
])
def test_what_has_no_id_s_shape_is_refused_saying_what_an_id_is(value, message):
    with pytest.raises(PredictionNotFoundError) as caught:
        IDS.parse(value)
    assert message in str(caught.value)


def test_a_value_that_is_no_string_or_far_too_long_is_refused_briefly():
    for value, message in ((None, "a prediction id is a string, not NoneType"), (7, "not int")):
        with pytest.raises(PredictionNotFoundError, match=message):
            IDS.parse(value)
    with pytest.raises(PredictionNotFoundError) as caught:
        IDS.parse("x" * 100_000)
    assert len(str(caught.value)) < 400 and "...'" in str(caught.value)


@pytest.mark.parametrize(("model", "version", "nonce"), [
    ("Sentiment", VERSION, None), ("a.b", VERSION, None), ("sentiment", "v1", None),
    ("sentiment", VERSION, "short"), ("sentiment", VERSION, "Z" * 20),
])
def test_issuing_for_a_name_version_or_nonce_of_another_shape_is_a_bug(model, version, nonce):
    with pytest.raises(ValueError, match="prediction id"):
        IDS.issue(model, version, nonce)


def test_a_batch_record_s_id_is_the_same_at_every_rerun_and_verifiable():
    obj = BatchObject("bucket", "input/sentiment/reviews.jsonl", "etag-1", "sentiment", "reviews", ".jsonl")
    first = obj.prediction_id(7, IDS, VERSION)
    assert first == obj.prediction_id(7, PredictionIds("stack secret"), VERSION)  # another process, same stack
    assert IDS.parse(first) == IssuedId("sentiment", VERSION, obj.prediction_nonce(7))
    assert obj.prediction_nonce(7) == hashlib.sha256(b"input/sentiment/reviews.jsonl\netag-1\n7").hexdigest()[:20]
    assert len({first, obj.prediction_id(8, IDS, VERSION), obj.prediction_id(7, IDS, "0" * 12)}) == 3
    edited = BatchObject("bucket", obj.key, "etag-2", "sentiment", "reviews", ".jsonl")  # a new version of the file
    assert edited.prediction_id(7, IDS, VERSION) != first


def test_the_service_issues_verifiable_ids_under_its_stack_secret(tmp_path):
    service = PredictionService(Settings(models_path=(tmp_path,), stack_secret="stack secret"))
    assert IDS.parse(service.ids.issue("sentiment", VERSION)).model == "sentiment"
    cli = PredictionService.for_models([tmp_path])  # no secret: unkeyed ids
    assert not cli.ids.keyed


def test_issuing_an_id_is_cheap():
    """It runs for every prediction: a few microseconds (0.8 us for the mac, about 2 us in all, on the 2-core
    machine this was written on); the bound leaves room for a loaded machine."""
    issue = IDS.issue
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(2000):
            issue("sentiment", VERSION)
        best = min(best, (time.perf_counter() - started) / 2000)
    assert best < 20e-6, f"{best * 1e6:.1f} us an id"
