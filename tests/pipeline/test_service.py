"""ferry.runtime.service on built tiny models: background preloading, one load per model, scores as numpy gives."""

from __future__ import annotations

import logging
import shutil
import threading

import numpy as np
import pytest

from ferry.runtime import IntegrityError, ModelNotFoundError, Predictor, UnsupportedTaskError
from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from ferry.runtime.exceptions import NoModelsError
from ferry.runtime.predictor import sigmoid, softmax
from ferry.runtime.service import ModelStore, Options, PredictionService
from ferry.runtime.settings import Settings, SettingsError


@pytest.fixture()
def models(bert_build, distilbert_build, tmp_path):
    """A models folder with both tiny classifiers, private to the test."""
    root = tmp_path / "models"
    shutil.copytree(bert_build.model_dir, root / "tiny-bert")
    shutil.copytree(distilbert_build.model_dir, root / "tiny-distilbert")
    return root


def store_for(models, **settings) -> ModelStore:
    return ModelStore(Settings(models_path=(models,), ort_threads=1, **settings))


@pytest.mark.parametrize(("raw", "expected"), [
    ("all", ("*",)), ("*", ("*",)), ("ALL", ("*",)), ("", ()), ("  ", ()),
    ("tiny-bert", ("tiny-bert",)), ("tiny-bert, minilm,", ("tiny-bert", "minilm")),
])
def test_preload_setting(raw, expected):
    assert Settings.from_env({"FERRY_PRELOAD": raw}).preload == expected


@pytest.mark.parametrize(("env", "message"), [
    ({"FERRY_PRELOAD": "Tiny_Bert"}, "'Tiny_Bert' is not a model name"),
    ({"FERRY_PRELOAD": "../etc"}, "is not a model name"),
    ({"FERRY_MAX_INPUTS": "many"}, "FERRY_MAX_INPUTS='many' is not an integer"),
    ({"FERRY_MAX_INPUTS": "0"}, "FERRY_MAX_INPUTS=0 must be at least 1"),
    ({"FERRY_CAPTURE_TEXT": "maybe"}, "is not a boolean"),
])
def test_bad_settings_are_named(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_preload_all_loads_every_model_in_the_background(models):
    store = store_for(models)
    thread = store.preload(("*",))
    assert thread is not None and thread.name == "ferry-preload"
    thread.join(timeout=60)
    assert store.is_loaded("tiny-bert") and store.is_loaded("tiny-distilbert")
    assert store.preload(()) is None


def test_a_request_does_not_wait_for_models_the_preload_has_not_reached(models, monkeypatch):
    original, started, release = Predictor.load, threading.Event(), threading.Event()

    def slow_for_bert(path, **kwargs):
        if path.name == "tiny-bert":
            started.set()
            release.wait(timeout=60)  # the preload thread is stuck on the first model
        return original(path, **kwargs)

    monkeypatch.setattr(Predictor, "load", slow_for_bert)
    store = store_for(models)
    thread = store.preload(("tiny-bert", "tiny-distilbert"))
    assert started.wait(timeout=60)
    assert store.get("tiny-distilbert").name == "tiny-distilbert"  # loaded by this caller, at once
    assert not store.is_loaded("tiny-bert")
    release.set()
    thread.join(timeout=60)
    assert store.is_loaded("tiny-bert")


def test_requests_during_a_preload_share_the_one_load(models, monkeypatch):
    loads = []
    original = Predictor.load

    def counting(path, **kwargs):
        loads.append(path.name)
        return original(path, **kwargs)

    monkeypatch.setattr(Predictor, "load", counting)
    store = store_for(models)
    store.preload(("tiny-bert",))
    got: list[Predictor] = []
    callers = [threading.Thread(target=lambda: got.append(store.get("tiny-bert"))) for _ in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=60)
    assert len(got) == 8 and all(predictor is got[0] for predictor in got)
    assert loads == ["tiny-bert"]


def test_a_model_that_fails_to_preload_is_logged_and_its_request_gets_the_error(models, caplog):
    onnx_file = models / "tiny-bert" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    store = store_for(models)
    with caplog.at_level(logging.WARNING, logger="ferry.runtime.service"):
        store.preload(("tiny-bert", "nope", "tiny-distilbert")).join(timeout=60)
    assert "preloading model 'tiny-bert' failed" in caplog.text and "preloading model 'nope' failed" in caplog.text
    assert store.is_loaded("tiny-distilbert") and not store.is_loaded("tiny-bert")
    service = PredictionService(store.settings, store)
    with pytest.raises(IntegrityError, match=r"model\.onnx: sha256"):
        service.classify("tiny-bert", "still broken")
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        service.classify("nope", "x")


def test_ranked_scores_match_numpy_and_keep_label_order_on_ties(bert_build):
    predictor = Predictor.load(bert_build.layer_dir, threads=1)
    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(64, 2)) * 20).astype(np.float32)
    for function, reference in (("softmax", softmax), ("sigmoid", sigmoid), ("none", lambda x: x)):
        expected = reference(logits.astype(np.float64))
        ranked = predictor.ranked(logits, function_to_apply=function)
        for row, answer in zip(expected, ranked, strict=True):
            order = np.argsort(-row, kind="stable")
            assert [entry["label"] for entry in answer] == [predictor.manifest.labels[i] for i in order]
            assert [entry["score"] for entry in answer] == pytest.approx(row[order].tolist(), rel=1e-12, abs=1e-300)
    tie = predictor.ranked(np.zeros((1, 2), dtype=np.float32))[0]
    assert [entry["label"] for entry in tie] == list(predictor.manifest.labels)
    assert predictor.ranked(np.array([[-1000.0, 1000.0]]), function_to_apply="sigmoid")[0][1]["score"] == 0.0
    assert [len(row) for row in predictor.ranked(logits[:3], top_k=1)] == [1, 1, 1]


@pytest.mark.parametrize("keep_text", [False, True])
def test_capture_lines_carry_the_text_only_when_configured_and_survive_delivery(models, keep_text):
    from ferry.runtime.capture import (
        capture_line,
        capture_records,
        decode_subscription_event,
        encode_subscription_event,
        to_item,
    )

    service = PredictionService(Settings(models_path=(models,), ort_threads=1, capture_text=keep_text))
    texts = ["今天天气很好 🌞", "plain ascii, with a \"quote\"\nand a newline"]
    answer = service.classify("tiny-bert", texts)
    lines = [capture_line(record, service="ferry-predict", request_id="r") for record in answer.captures]
    assert all("\n" not in line for line in lines)  # one log event per prediction
    event = encode_subscription_event("/aws/lambda/predict", "local", [(1, line) for line in lines])
    records = list(capture_records(decode_subscription_event(event)))
    assert [record["prediction_id"] for record in records] == answer.prediction_ids
    items = [to_item(record, ttl_days=90) for record in records]
    assert [item.get("text") for item in items] == (texts if keep_text else [None, None])
    assert all(item["label"] == row[0]["label"] for item, row in zip(items, answer.payload, strict=True))


def test_predict_does_what_the_model_s_task_does_and_checks_an_endpoint_s_task(models):
    service = PredictionService(Settings(models_path=(models,), ort_threads=1))
    answer = service.predict("tiny-bert", ["what a day", "so bad"], Options(top_k=1))
    assert answer.task == TEXT_CLASSIFICATION and [len(row) for row in answer.payload] == [1, 1]
    assert service.predict("tiny-bert", "one text", task=TEXT_CLASSIFICATION).payload[0][0]["label"] in {
        "negative", "positive"}
    wrong = "model 'tiny-bert' is text-classification: use /predict, not /embed"
    with pytest.raises(UnsupportedTaskError, match=wrong):
        service.predict("tiny-bert", "x", task=FEATURE_EXTRACTION)
    with pytest.raises(UnsupportedTaskError, match="use /predict, not /embed"):
        service.embed("tiny-bert", "x")


def test_the_cli_s_service_has_no_request_limits_and_keys_nothing(models, monkeypatch):
    monkeypatch.setenv("FERRY_STACK_SECRET", "not for the cli")
    service = PredictionService.for_models([models])
    answer = service.predict("tiny-bert", ["x " * 6000] * 70)  # over the API's 64 texts and 10,000 characters
    assert len(answer.payload) == len(answer.captures) == 70
    assert not any("text_hmac" in record or "text" in record for record in answer.captures)


def test_what_the_models_routes_show(models, tmp_path):
    service = PredictionService(Settings(models_path=(models,), ort_threads=1))
    assert [(entry["name"], entry["status"]) for entry in service.models()] == [
        ("tiny-bert", "available"), ("tiny-distilbert", "available")]
    assert service.health() == {"status": "ok", "models": {"tiny-bert": "available", "tiny-distilbert": "available"}}
    described = service.describe("tiny-bert")
    assert described["status"] == "loaded" and described["name"] == "tiny-bert"
    assert {"quantization", "parity", "created_at", "onnxruntime_version"} <= set(described)
    assert described["parity"]["passed"] is True
    assert service.tasks() == {"tiny-bert": TEXT_CLASSIFICATION, "tiny-distilbert": TEXT_CLASSIFICATION}
    with pytest.raises(NoModelsError, match="no models found in the models path"):
        PredictionService(Settings(models_path=(tmp_path,))).health()
