"""The one real model: the packaged all-MiniLM-L6-v2 through `ferry build` as a feature-extraction layer."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ferry.runtime import Predictor

from helpers import run_ferry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(minilm_build):
    return minilm_build


def test_minilm_int8_is_a_quarter_of_fp32_and_passes_the_gate(minilm):
    layer_dir, summary = minilm
    sizes = re.search(r"fp32 ([\d.]+) MB -> int8 ([\d.]+) MB \(([\d.]+)%\)", summary)
    assert sizes, summary
    assert float(sizes.group(3)) <= 26.0
    manifest = json.loads((layer_dir / "models" / "minilm" / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["size"] <= 0.26 * float(sizes.group(1)) * 1e6
    assert manifest["parity"]["passed"] and manifest["parity"]["min_cosine"] >= 0.95
    assert manifest["parity"]["mean_cosine"] >= 0.98
    assert manifest["max_length"] == 256  # sentence-transformers' max_seq_length, not tokenizer.json's 128
    assert manifest["normalize_default"] is True  # its pipeline ends with Normalize
    assert manifest["source"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_summary_shows_parity_sizes_and_fresh_process_load_time(minilm):
    _, summary = minilm
    assert "parity     cosine to fp32 min 0.9" in summary and ": PASS" in summary
    load = re.search(r"fresh process: import ([\d.]+) s \+ load ([\d.]+) s = ([\d.]+) s", summary)
    assert load, summary
    assert "runtime layer" in summary and "Powertools layer" in summary and "model layer minilm (new)" in summary


def test_minilm_embeddings_mean_what_they_should(minilm):
    layer_dir, _ = minilm
    predictor = Predictor.load(layer_dir)
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]
    vectors = predictor.embed(texts)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.6 > similarity[0, 2] + 0.3
    raw = predictor.embed(texts, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    # the tokenizer.json ships fixed padding to 128; the layer pads to the longest text instead
    assert predictor.encode(texts).feeds["input_ids"].shape[1] < 16


def test_predict_command_on_the_built_layer(minilm):
    layer_dir, _ = minilm
    result = run_ferry("predict", "minilm", "--layers-dir", str(layer_dir.parent), "--json", "hello world")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == "minilm" and len(answer["predictions"][0]) == 384
