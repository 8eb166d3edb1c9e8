"""`ferry predict` and `ferry models` as a user runs them."""

from __future__ import annotations

import json

from conftest import run_ferry


def test_predict_prints_ranked_labels(bert_build):
    layers = str(bert_build.layer_dir.parent)
    result = run_ferry("predict", "tiny-bert", "--layers-dir", layers, "--json", "--top-k", "1", "what a great day")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == "tiny-bert" and answer["version"] == bert_build.version
    assert len(answer["predictions"]) == 1 and len(answer["predictions"][0]) == 1
    assert answer["predictions"][0][0]["label"] in {"negative", "positive"}


def test_predict_reads_stdin_and_accepts_a_layer_path(bert_build):
    result = run_ferry("predict", str(bert_build.layer_dir), "-", stdin="first text\n\nsecond text\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "'first text'" in lines[0] and "'second text'" in lines[1]


def test_predict_errors_are_clear(bert_build, tmp_path):
    layers = str(bert_build.layer_dir.parent)
    unknown = run_ferry("predict", "nope", "--layers-dir", layers, "x")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "ferry: error: no model named 'nope'; available: tiny-bert"
    empty = run_ferry("predict", "tiny-bert", "--layers-dir", layers, "-", stdin="\n")
    assert empty.returncode == 2 and "no texts" in empty.stderr
    missing = run_ferry("predict", "tiny-bert", "--layers-dir", layers)
    assert missing.returncode == 2 and "the following arguments are required: texts" in missing.stderr
    nothing = run_ferry("models", "--layers-dir", str(tmp_path))
    assert nothing.returncode == 1 and "no built models" in nothing.stderr


def test_models_lists_name_version_task_and_int8_accuracy(bert_build):
    result = run_ferry("models", "--layers-dir", str(bert_build.layer_dir.parent))
    assert result.returncode == 0
    assert result.stdout.split()[:3] == ["tiny-bert", bert_build.version, "text-classification"]
    parity = bert_build.manifest["parity"]
    assert f"int8 accuracy {parity['accuracy_int8']:.4f} on {parity['texts']} texts" in result.stdout
