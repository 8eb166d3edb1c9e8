"""ferry.runtime on layers built from the tiny models: loading, integrity, tokenization, outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ferry.runtime import (
    IntegrityError,
    InvalidInputError,
    Manifest,
    ManifestError,
    ModelNotFoundError,
    Predictor,
    UnsupportedTaskError,
    discover_models,
    layer_models_dirs,
    resolve_model_dir,
)


@pytest.fixture(scope="module")
def bert(bert_build):
    return Predictor.load(bert_build.layer_dir, threads=1)


def test_layer_unpacks_to_models_name(bert_build):
    # SAM zips the layer folder and Lambda unpacks it into /opt: /opt/models/<name>/...
    layer_dir = bert_build.layer_dir
    files = sorted(p.relative_to(layer_dir).as_posix() for p in layer_dir.rglob("*") if p.is_file())
    assert files == ["models/tiny-bert/manifest.json", "models/tiny-bert/model.onnx", "models/tiny-bert/tokenizer.json"]
    assert discover_models(layer_models_dirs(bert_build.layer_dir.parent)) == {"tiny-bert": bert_build.model_dir}


def test_classify_shape_order_and_options(bert):
    answer = bert.classify(["I love this so much", "worst day ever, I hate it"])
    assert len(answer) == 2
    for ranked in answer:
        assert {entry["label"] for entry in ranked} == {"negative", "positive"}
        assert ranked[0]["score"] >= ranked[1]["score"]
        assert sum(entry["score"] for entry in ranked) == pytest.approx(1.0, abs=1e-5)
    assert [len(r) for r in bert.classify(["a", "b"], top_k=1)] == [1, 1]
    raw = bert.classify(["a"], function_to_apply="none")[0]
    sig = bert.classify(["a"], function_to_apply="sigmoid")[0]
    assert all(0 < e["score"] < 1 for e in sig)
    expected = {e["label"]: 1 / (1 + np.exp(-e["score"])) for e in raw}
    assert {e["label"]: e["score"] for e in sig} == pytest.approx(expected, rel=1e-5)


def test_predictions_vary_across_texts(bert, eval_csv):
    texts = [line.split(",", 1)[0] for line in eval_csv.read_text().splitlines()[1:60]]
    labels = {ranked[0]["label"] for ranked in bert.classify(texts)}
    assert labels == {"negative", "positive"}  # a model that predicts one class would make parity vacuous


def test_pads_to_longest_of_batch_and_truncates_to_max_length(bert):
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(bert.path / "tokenizer.json"))
    max_length = bert.manifest.max_length
    texts = ["hi", "hello there friend"]
    short = bert.encode(texts)
    longest = max(len(plain.encode(text).ids) for text in texts)
    assert longest < 10
    assert short.feeds["input_ids"].shape == (2, longest)  # padded to the longest text, not to max_length
    assert short.attention_mask[0].sum() == len(plain.encode("hi").ids)
    long_text = " ".join(["word"] * (max_length * 2))
    batch = bert.encode([long_text, "hi"])
    assert batch.feeds["input_ids"].shape == (2, max_length)
    assert batch.truncated == [True, False]
    assert batch.token_lengths == [len(plain.encode(long_text).ids), len(plain.encode("hi").ids)]  # before truncation
    assert batch.token_lengths[0] > max_length


def test_token_length_before_truncation_matches_an_untruncated_tokenizer(bert, eval_csv):
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(bert.path / "tokenizer.json"))
    texts = [line for line in eval_csv.read_text().splitlines()[1:80]] + ["x " * 300]
    assert bert.encode(texts).token_lengths == [len(e.ids) for e in plain.encode_batch(texts)]


def test_feeds_only_the_inputs_the_graph_declares(distilbert_build, bert):
    distilbert = Predictor.load(distilbert_build.model_dir)
    assert "token_type_ids" not in distilbert.input_names
    assert "token_type_ids" in bert.input_names
    assert len(distilbert.classify(["works without token type ids"])[0]) == 2


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        ([], {}, "texts is empty"),
        ("a string", {}, "texts must be a list of strings"),
        (["ok", 3], {}, r"texts\[1\] is int, not a string"),
        (["ok"], {"top_k": 0}, "top_k must be a positive integer"),
        (["ok"], {"function_to_apply": "relu"}, "function_to_apply 'relu' is not one of softmax, sigmoid, none"),
    ],
)
def test_bad_inputs_are_clear_errors(bert, texts, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        bert.classify(texts, **kwargs)


def test_embedding_from_a_classifier_is_refused(bert):
    with pytest.raises(UnsupportedTaskError, match="is text-classification, not feature-extraction"):
        bert.embed(["x"])


def test_tampered_model_file_is_refused(model_copy):
    onnx_file = model_copy / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model.onnx: sha256 [0-9a-f]{12}\.\.\. differs from the manifest's"):
        Predictor.load(model_copy)


def test_missing_or_resized_file_is_refused(model_copy):
    with (model_copy / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(IntegrityError, match=r"tokenizer\.json: size \d+ bytes differs from the manifest"):
        Predictor.load(model_copy)
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(IntegrityError, match=r"tokenizer\.json: listed in the manifest but missing"):
        Predictor.load(model_copy)


def test_bad_manifests_are_refused(model_copy):
    path = model_copy / "manifest.json"
    good = json.loads(path.read_text())
    cases = [
        ("{not json", "not valid JSON"),
        (json.dumps({**good, "schema_version": 99}), "schema_version 99 is not supported"),
        (json.dumps({**good, "name": "Bad_Name"}), "does not match"),
        (json.dumps({**good, "name": "other"}), "manifest name 'other' differs from its folder 'tiny-bert'"),
        (json.dumps({**good, "task": "translation"}), "task 'translation' is not one of"),
        (json.dumps({**good, "labels": []}), "must list its labels"),
        (json.dumps({k: v for k, v in good.items() if k != "max_length"}), "missing field(s) max_length"),
        (json.dumps({**good, "files": {"../x": {"sha256": "0", "size": 1}}}), "must be a path inside"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Predictor.load(model_copy)
    path.unlink()
    with pytest.raises(ManifestError, match="no manifest"):
        Manifest.load(model_copy)


def test_unknown_and_invalid_model_names(bert_build):
    search = layer_models_dirs(bert_build.layer_dir.parent)
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'; available: tiny-bert"):
        resolve_model_dir("nope", search)
    with pytest.raises(ModelNotFoundError, match="is not valid"):
        resolve_model_dir("../etc", search)


def test_runtime_never_loads_torch_transformers_or_optimum(bert_build):
    probe = (
        "import sys\n"
        "from ferry.runtime import Predictor\n"
        f"p = Predictor.load({str(bert_build.layer_dir)!r})\n"
        "p.classify(['a fresh process'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
