"""`ferry build` end to end on tiny trained models: what the layer holds, what the gate refuses, and that a
failed build leaves nothing behind."""

from __future__ import annotations

import json
import shutil

import onnxruntime
import pytest

from ferry.layer import BuildConfig, GateFailedError, GateThresholds, SizeLimitError, build_layer
from ferry.runtime import Manifest, sha256_file
from ferry.runtime.manifest import ParityRecord

from helpers import TINY_GATE, run_ferry
from tiny_models import corrupt_for_int8


def test_manifest_records_everything_the_runtime_and_monitor_need(bert_build, eval_csv):
    manifest = json.loads((bert_build.model_dir / "manifest.json").read_text())
    onnx_sha = sha256_file(bert_build.model_dir / "model.onnx")
    assert manifest["name"] == "tiny-bert"
    assert manifest["version"] == onnx_sha[:12]
    assert manifest["task"] == "text-classification"
    assert manifest["labels"] == ["negative", "positive"]
    assert manifest["max_length"] == 128
    assert manifest["files"]["model.onnx"] == {"sha256": onnx_sha, "size": bert_build.int8_bytes}
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert manifest["onnx"]["opset"] >= 14
    assert manifest["onnx"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["onnxruntime_version"] == onnxruntime.__version__  # the one that built and checked it
    assert manifest["quantization"]["per_channel"] is True
    assert manifest["quantization"]["reduce_range"] is True  # x86_64: safe without VNNI
    # attention fused before quantizing: per layer one QAttention (q, k, v) and the output and FFN MatMuls
    quantized = manifest["quantization"]["quantized_nodes"]
    assert quantized["QAttention"] == 2 and quantized["MatMulInteger"] >= 6  # 2 layers x (attention output, FFN x2)
    graph = manifest["graph"]
    assert graph["saved"] == "transformer fusions" and graph["model_type"] == "bert" and graph["opt_level"] == 1
    assert graph["fusions"] == ["Attention", "Gelu", "LayerNormalization"]
    assert graph["fused_nodes"]["Attention"] == 2 and "SkipLayerNormalization" not in graph["fused_nodes"]
    assert graph["gelu_approximation"] is False
    assert graph["at_load"] == {"level": "ORT_ENABLE_ALL",
                                "disabled_optimizers": ["SkipLayerNormFusion", "BiasGeluFusion"]}
    assert manifest["source"]["model_type"] == "bert"
    assert manifest["created_at"].endswith("+00:00")
    parity = manifest["parity"]
    assert parity["passed"] and parity["texts"] == 300 and parity["eval_data"] == str(eval_csv)
    assert 0.95 <= parity["agreement"] <= 1.0
    assert parity["accuracy_fp32"] > 0.6 and parity["accuracy_int8"] > 0.6  # the tiny model learned something
    ref = manifest["reference"]
    assert sum(ref["token_length"]["counts"]) == 300
    assert len(ref["token_length"]["edges"]) == len(ref["token_length"]["counts"]) + 1
    assert sum(ref["top_score"]["counts"]) == 300
    assert 0.5 <= ref["top_score"]["edges"][0] <= ref["top_score"]["edges"][-1] <= 1.0
    assert set(ref["label_share"]) == {"negative", "positive"}
    sample = ref["sample"]  # no --reference-data: the evaluation texts, row by row, for the monitor
    assert sample["source"] == str(eval_csv) and sample["n"] == 300
    assert len(sample["confidence"]) == len(sample["predicted"]) == len(sample["correct"]) == 300
    assert sample["accuracy"] == round(sum(sample["correct"]) / 300, 6) == round(parity["accuracy_int8"], 6)
    calibration = ref["calibration"]
    assert calibration["method"] == "isotonic" and calibration["rows"] == 300
    assert calibration["values"] == sorted(calibration["values"])  # isotonic: more confident, never less right
    assert manifest["load"]["heavy_modules"] == []
    loaded = Manifest.load(bert_build.model_dir)
    loaded.verify(bert_build.model_dir)
    assert loaded == bert_build.manifest  # the result carries the manifest as written
    assert loaded.to_dict() == manifest and list(loaded.to_dict()) == list(manifest)  # read back unchanged


def test_int8_is_smaller_and_distilbert_builds_without_token_type_ids(bert_build, distilbert_build):
    assert bert_build.int8_bytes < 0.5 * bert_build.fp32_bytes
    manifest = distilbert_build.manifest
    assert manifest.onnx["inputs"] == ["input_ids", "attention_mask"]
    assert manifest.source["model_type"] == "distilbert"
    assert manifest.graph["saved"] == "transformer fusions" and manifest.graph["fused_nodes"]["Attention"] == 2
    assert manifest.parity.passed


def test_a_build_without_fusions_quantizes_the_export_as_it_is(tiny_bert, eval_csv, bert_build, tmp_path):
    """The fusions are a choice the manifest records: off, the graph is the export's, quantized MatMul by MatMul,
    and it predicts as the fused one does (the parity gate holds both to the same fp32 model)."""
    from ferry.layer import GraphSettings
    from ferry.layer.evalset import load_eval_set
    from ferry.runtime import Predictor

    result = build_layer(BuildConfig(model=str(tiny_bert), task="text-classification", out=tmp_path, name="unfused",
                                     eval_data=eval_csv, gate=GateThresholds(**TINY_GATE),
                                     graph_override=GraphSettings(fusions=())))
    manifest = result.manifest
    assert manifest.graph["saved"] == "none" and manifest.graph["fused_nodes"] == {}
    assert "QAttention" not in manifest.quantization["quantized_nodes"]
    assert manifest.quantization["quantized_nodes"]["MatMulInteger"] >= 12  # 2 layers x (q, k, v, o, ffn x2)
    texts = load_eval_set(eval_csv).texts
    fused = [row[0]["label"] for row in Predictor.load(bert_build.model_dir).classify(texts, top_k=1)]
    unfused = [row[0]["label"] for row in Predictor.load(result.model_dir).classify(texts, top_k=1)]
    assert sum(a == b for a, b in zip(fused, unfused, strict=True)) >= 0.95 * len(texts)


def test_built_in_sentences_are_the_default_eval_set_and_arm64_uses_full_range(tiny_distilbert, tmp_path):
    result = build_layer(BuildConfig(model=str(tiny_distilbert), task="text-classification", out=tmp_path,
                                     name="no-eval", arch="arm64", gate=GateThresholds(**TINY_GATE)))
    assert result.manifest.arch == "arm64"
    assert result.manifest.quantization["reduce_range"] is False
    parity = result.manifest.parity
    assert parity.eval_data == "built-in sentences" and parity.texts == 81
    assert parity.accuracy_fp32 is None  # no labels, so agreement and logits only
    assert parity.agreement >= 0.95


def test_gate_fails_a_model_int8_cannot_represent(tiny_bert, eval_csv, tmp_path):
    broken = corrupt_for_int8(tiny_bert, tmp_path / "broken")
    out = tmp_path / "layers"
    with pytest.raises(GateFailedError, match=r"parity gate failed: label agreement 0\.\d{4} is under") as caught:
        build_layer(BuildConfig(model=str(broken), task="text-classification", out=out, name="broken",
                                eval_data=eval_csv))
    parity = caught.value.parity
    assert parity["agreement"] < 0.9
    assert parity["accuracy_fp32"] > 0.6  # fp32 still works: the damage is what int8 does to it
    assert parity["accuracy_drop_points"] > 5
    assert "points under fp32" in str(caught.value)
    assert not out.exists()  # created for the build, removed with it


def test_gate_fails_an_embedder_whose_int8_vectors_miss_the_minimum_cosine(tiny_bert, tmp_path):
    """No int8 model matches fp32 exactly: a min_cosine of 1.0 must fail, on the worst text's cosine."""
    out = tmp_path / "layers"
    with pytest.raises(GateFailedError, match=r"parity gate failed: minimum cosine 0\.\d{4} is under min_cosine 1\.0 "
                                              r"\(mean 0\.\d{4}\)") as caught:
        build_layer(BuildConfig(model=str(tiny_bert), task="feature-extraction", out=out, name="embedder",
                                gate=GateThresholds(min_cosine=1.0)))
    parity = ParityRecord.from_dict(caught.value.parity, "the gate")
    assert parity.task == "feature-extraction" and parity.texts == 81 and not parity.passed
    assert parity.min_cosine < 1.0 and parity.min_cosine <= parity.mean_cosine
    assert parity.mean_cosine > 0.9  # close, as int8 is: the strict bound, not a broken export, fails it
    assert not out.exists()


def test_gate_failure_through_the_cli_exits_1_and_leaves_out_untouched(tiny_distilbert, eval_csv, tmp_path):
    broken = corrupt_for_int8(tiny_distilbert, tmp_path / "broken")
    out = tmp_path / "layers"
    (out / "keep").mkdir(parents=True)
    result = run_ferry("build", "--model", str(broken), "--task", "text-classification", "--out", str(out),
                       "--eval-data", str(eval_csv))
    assert result.returncode == 1
    assert "parity gate failed" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep"]


def test_size_check_counts_every_layer_the_function_carries(tiny_distilbert, tmp_path):
    out = tmp_path / "layers"
    big = out / "huge" / "models" / "huge"
    big.mkdir(parents=True)
    with (big / "model.onnx").open("wb") as handle:  # sparse: 240 MB apparent, no disk used
        handle.truncate(240 * 1024 * 1024)
    with pytest.raises(SizeLimitError) as caught:
        build_layer(BuildConfig(model=str(tiny_distilbert), task="text-classification", out=out, name="small",
                                gate=GateThresholds(**TINY_GATE)))
    message = str(caught.value)
    assert "over Lambda's limit of 262.1 MB" in message
    assert "model layer huge" in message and "model layer small (new)" in message and "runtime layer" in message
    assert sorted(p.name for p in out.iterdir()) == ["huge"]


def test_rebuild_replaces_the_layer_whole(distilbert_build, tiny_distilbert, tmp_path):
    out = tmp_path / "layers"
    shutil.copytree(distilbert_build.layer_dir, out / "tiny-distilbert")
    stale = out / "tiny-distilbert" / "models" / "tiny-distilbert" / "stale.txt"
    stale.write_text("left over")
    result = build_layer(BuildConfig(model=str(tiny_distilbert), task="text-classification", out=out,
                                     name="tiny-distilbert", max_length=32, gate=GateThresholds(**TINY_GATE)))
    assert result.manifest.max_length == 32
    assert not stale.exists()
    assert [p.name for p in out.iterdir()] == ["tiny-distilbert"]


ERRORS = [
    (["--model", "{missing}", "--task", "text-classification"], 1, "--model {missing}: no such folder"),
    (["--model", "{model}", "--task", "summarization"], 2, "invalid choice: 'summarization'"),
    (["--model", "{model}", "--task", "text-classification", "--arch", "ppc64"], 2, "invalid choice: 'ppc64'"),
    (["--model", "{model}", "--task", "text-classification", "--name", "Bad_Name"], 2, "bad name 'Bad_Name'"),
    (["--model", "{model}", "--task", "text-classification", "--eval-data", "{folder}"], 2,
     "--eval-data {folder}: is a folder, not a file"),
    (["--model", "{model}", "--task", "text-classification", "--eval-data", "{latin1}"], 2,
     "--eval-data {latin1}:2: not valid UTF-8"),
    (["--model", "{model}", "--task", "text-classification", "--eval-data", "{missing}"], 2,
     "--eval-data {missing}: no such file"),
    (["--model", "{model}", "--task", "text-classification", "--eval-data", "{empty}"], 2,
     "--eval-data {empty}: is empty"),
    (["--model", "{model}", "--task", "text-classification", "--eval-data", "{wrong_labels}"], 2,
     "label(s) 'angry' are not labels of the model (negative, positive)"),
    (["--model", "{model}", "--task", "text-classification", "--min-agreement", "2"], 2,
     "--min-agreement must be a fraction"),
    (["--model", "{model}/config.json", "--task", "text-classification"], 1, "is a file; give the folder"),
    (["--model", "{nolabels}", "--task", "text-classification"], 1, "config.json has no id2label"),
    (["--model", "{notamodel}", "--task", "feature-extraction"], 1, "has no config.json"),
    (["--model", "nobody/no-such-model", "--task", "feature-extraction"], 1,
     "--model nobody/no-such-model: not a local folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)"),
]


@pytest.mark.parametrize(("args", "code", "message"), ERRORS)
def test_bad_arguments_are_clear_errors_and_leave_nothing(args, code, message, tiny_bert, tmp_path):
    paths = {"model": tiny_bert, "missing": tmp_path / "nowhere", "empty": tmp_path / "empty.csv",
             "folder": tmp_path / "folder.csv", "latin1": tmp_path / "latin1.csv",
             "wrong_labels": tmp_path / "wrong.csv",
             "nolabels": tmp_path / "nolabels", "notamodel": tmp_path / "notamodel"}
    paths["empty"].write_text("")
    paths["folder"].mkdir()
    paths["latin1"].write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    paths["wrong_labels"].write_text("text,label\nso mad,angry\n")
    shutil.copytree(tiny_bert, paths["nolabels"])
    config = json.loads((paths["nolabels"] / "config.json").read_text())
    config.pop("id2label")
    config.pop("label2id")
    (paths["nolabels"] / "config.json").write_text(json.dumps(config))
    paths["notamodel"].mkdir()
    fill = {key: str(value) for key, value in paths.items()}
    out = tmp_path / "out"
    result = run_ferry("build", *[arg.format(**fill) for arg in args], "--out", str(out))
    assert result.returncode == code, result.stderr
    assert message.format(**fill) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
