"""The manifest contract on model folders written by hand (no model needed): what it reads, what it refuses, and
that every file it lists is verified, not only the model."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest

from ferry.runtime import IntegrityError, Manifest, ManifestError, discover_models, models_search_path
from ferry.runtime.manifest import FileEntry, ParityRecord, as_model_dir, resolve_model_dir

# A manifest as `ferry build` wrote them before the manifest had a type (schema version 1): every layer built
# since must keep loading, and read back into the same JSON.
CLASSIFIER_V1 = {
    "schema_version": 1,
    "name": "demo",
    "version": "(set by write_model)",
    "task": "text-classification",
    "labels": ["negative", "positive"],
    "problem_type": "single_label_classification",
    "max_length": 128,
    "pooling": None,
    "normalize_default": False,
    "source": {"model": "/models/sentiment", "model_type": "bert", "architectures": ["BertForSequenceClassification"],
               "default_labels": False},
    "files": {},
    "onnx": {"opset": 17, "inputs": ["input_ids", "attention_mask", "token_type_ids"], "outputs": ["logits"]},
    "onnxruntime_version": "1.22.1",
    "arch": "x86_64",
    "quantization": {"mode": "dynamic", "format": "QOperator", "activations": "uint8", "weights": "int8",
                     "per_channel": True, "reduce_range": True,
                     "operators": ["MatMul", "Gather", "Attention", "EmbedLayerNormalization"],
                     "why": "U8S8 with 7-bit weights", "quantized_nodes": {"MatMulInteger": 12},
                     "int8_initializers": 16},
    "training": {"base": "sentence-transformers/all-MiniLM-L6-v2", "data": "bundled tweets (corpus.csv)",
                 "steps": 880, "wall_seconds": 1234.5, "validation_accuracy": 0.8123, "validation_macro_f1": 0.7988,
                 "test_accuracy": 0.8101, "test_macro_f1": 0.7954, "test_recall": {"negative": 0.9, "positive": 0.66}},
    "built_by": "ferry 0.1.0",
    "created_at": "2025-06-01T12:00:00+00:00",
    "parity": {"task": "text-classification", "texts": 300, "agreement": 0.9967, "max_abs_logit_diff": 0.0812,
               "mean_abs_logit_diff": 0.0113, "accuracy_fp32": 0.72, "accuracy_int8": 0.7233,
               "accuracy_drop_points": -0.3333, "passed": True, "failures": [], "eval_data": "/data/eval.csv",
               "thresholds": {"max_accuracy_drop": 2.0, "min_agreement": 0.95, "min_cosine": 0.95}},
    "reference": {"token_length": {"edges": [3.0, 12.0, 25.0, 61.0], "counts": [110, 140, 50], "n": 300,
                                   "mean": 15.2},
                  "top_score": {"edges": [0.51, 0.8, 0.99], "counts": [120, 180], "n": 300, "mean": 0.83},
                  "label_share": {"negative": 0.52, "positive": 0.48}},
    "load": {"import_s": 0.2104, "load_s": 0.0513, "first_prediction_s": 0.0031, "heavy_modules": [],
             "import_and_load_s": 0.2617},
}

EMBEDDER_V1 = {
    **CLASSIFIER_V1,
    "task": "feature-extraction",
    "labels": [],
    "problem_type": None,
    "max_length": 256,
    "pooling": "mean",
    "normalize_default": True,
    "training": None,
    "parity": {"task": "feature-extraction", "texts": 81, "min_cosine": 0.9812, "mean_cosine": 0.9951,
               "passed": True, "failures": [], "eval_data": "built-in sentences",
               "thresholds": {"max_accuracy_drop": 0.5, "min_agreement": 0.98, "min_cosine": 0.95}},
    "reference": {"token_length": {"edges": [4.0, 9.0, 30.0], "counts": [40, 41], "n": 81, "mean": 11.0}},
}


def _entry(path: Path) -> dict[str, object]:
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": path.stat().st_size}


def write_model(models_dir: Path, name: str = "demo", manifest: dict | None = None, **changes: object) -> Path:
    """A model folder written by hand: stand-in model and tokenizer files, and a manifest listing them."""
    folder = models_dir / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(bytes(range(256)) * 8)
    (folder / "tokenizer.json").write_text('{"model": {"vocab": {"[PAD]": 0, "good": 1, "bad": 2}}}')
    files = {relative: _entry(folder / relative) for relative in ("model.onnx", "tokenizer.json")}
    data = {**copy.deepcopy(manifest or CLASSIFIER_V1), "name": name, "files": files,
            "version": files["model.onnx"]["sha256"][:12], **changes}
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))
    return folder


def rewrite(folder: Path, change) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


# --- reading what the build wrote ----------------------------------------------------------------------------


@pytest.mark.parametrize("built", [CLASSIFIER_V1, EMBEDDER_V1], ids=["classifier", "embedder"])
def test_a_schema_1_manifest_loads_and_reads_back_into_the_same_json(built, tmp_path):
    folder = write_model(tmp_path, manifest=built)
    written = json.loads((folder / "manifest.json").read_text())
    manifest = Manifest.load(folder)
    manifest.verify(folder)
    assert manifest.to_dict() == written
    assert list(manifest.to_dict()) == list(written)  # the same order too: a rewrite diffs cleanly
    assert manifest.files["model.onnx"] == FileEntry(**written["files"]["model.onnx"])
    assert manifest.parity is not None and manifest.parity.passed
    assert manifest.parity.texts == written["parity"]["texts"]
    assert manifest.reference is not None and manifest.reference.token_length.n == written["parity"]["texts"]
    assert manifest.load_timings is not None and manifest.load_timings.heavy_modules == ()


def test_the_typed_parts_hold_what_the_monitor_and_the_registry_read(tmp_path):
    manifest = Manifest.load(write_model(tmp_path))
    assert manifest.parity.accuracy_int8 == 0.7233 and manifest.parity.thresholds["min_agreement"] == 0.95
    assert manifest.parity.figures["agreement"] == 0.9967 and "min_cosine" not in manifest.parity.figures
    assert manifest.reference.top_score.edges == (0.51, 0.8, 0.99)
    assert manifest.reference.label_share == {"negative": 0.52, "positive": 0.48}
    assert manifest.training.test_accuracy == 0.8101 and manifest.training.test_recall["positive"] == 0.66
    assert manifest.load_timings.import_and_load_s == 0.2617
    embedder = Manifest.load(write_model(tmp_path / "other", manifest=EMBEDDER_V1))
    assert embedder.training is None and embedder.reference.top_score is None and embedder.pooling == "mean"
    assert embedder.parity.figures == {"min_cosine": 0.9812, "mean_cosine": 0.9951}


def test_a_manifest_written_before_the_gate_ran_loads(tmp_path):
    """The build loads its model through the manifest before parity, reference and load times exist; a layer
    built by an older ferry may lack every optional field."""
    folder = write_model(tmp_path)
    rewrite(folder, lambda data: [data.pop(key) for key in list(data) if key not in
                                  ("schema_version", "name", "version", "task", "labels", "max_length", "files")])
    manifest = Manifest.load(folder)
    manifest.verify(folder)
    assert (manifest.parity, manifest.reference, manifest.load_timings, manifest.training) == (None, None, None, None)
    assert "parity" not in manifest.to_dict()


def test_fields_of_a_newer_writer_survive_a_round_trip(tmp_path):
    folder = write_model(tmp_path, drift_baseline={"window": "7d"})
    rewrite(folder, lambda data: data["parity"].update(calibration_error=0.02))
    manifest = Manifest.load(folder)
    assert manifest.unknown == {"drift_baseline": {"window": "7d"}}
    assert manifest.parity.unknown == {"calibration_error": 0.02}
    assert manifest.to_dict() == json.loads((folder / "manifest.json").read_text())
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_summary_and_describe(tmp_path):
    manifest = Manifest.load(write_model(tmp_path))
    summary = {"name": "demo", "version": manifest.version, "task": "text-classification",
               "labels": ["negative", "positive"], "max_length": 128}
    assert manifest.summary() == summary
    described = manifest.describe()
    assert described == {**summary, "graph": None, **{key: CLASSIFIER_V1[key] for key in (
        "quantization", "parity", "training", "source", "arch", "created_at", "onnxruntime_version")}}


def test_the_saved_graph_optimizations_read_back_after_the_quantization(tmp_path):
    """A layer built before the fusions has no ``graph`` and writes none back; one built after reads it back."""
    graph = {"saved": "transformer fusions", "optimizer": "onnxruntime.transformers.optimizer", "opt_level": 1,
             "attention_mask": "raw", "gelu_approximation": False, "at_load": "ORT_ENABLE_ALL", "why": "fewer kernels",
             "model_type": "bert", "fused_nodes": {"Attention": 6, "SkipLayerNormalization": 12}}
    assert "graph" not in Manifest.load(write_model(tmp_path / "old")).to_dict()
    manifest = Manifest.load(write_model(tmp_path / "new", graph=graph))
    written = manifest.to_dict()
    assert manifest.graph == graph and written["graph"] == graph
    assert list(written).index("graph") == list(written).index("quantization") + 1
    assert manifest.describe()["graph"] == graph


# --- what is refused -----------------------------------------------------------------------------------------


def test_a_manifest_whose_files_leave_out_the_model_is_refused(tmp_path):
    folder = write_model(tmp_path)
    rewrite(folder, lambda data: data["files"].pop("model.onnx"))
    with pytest.raises(ManifestError, match=r"manifest\.json: files does not list model\.onnx"):
        Manifest.load(folder)


@pytest.mark.parametrize("left_out", ["model.onnx", "tokenizer.json"])
def test_verify_refuses_a_manifest_that_does_not_list_a_required_file(left_out, tmp_path):
    """A manifest made in code (not read) is held to the same rule when a folder is verified against it."""
    folder = write_model(tmp_path)
    manifest = Manifest.load(folder)
    files = {relative: entry for relative, entry in manifest.files.items() if relative != left_out}
    with pytest.raises(ManifestError, match=f"files does not list {left_out}"):
        Manifest(**{**vars(manifest), "files": files}).verify(folder)


@pytest.mark.parametrize("altered", ["tokenizer.json", "model.onnx"])
def test_a_file_altered_at_the_same_size_is_refused(altered, tmp_path):
    folder = write_model(tmp_path)
    manifest = Manifest.load(folder)
    path = folder / altered
    original = path.read_bytes()
    if altered == "tokenizer.json":
        changed = original.replace(b"good", b"evil")  # another token, the same bytes long
    else:
        changed = bytes([original[0] ^ 1]) + original[1:]
    assert changed != original and len(changed) == len(original)
    path.write_bytes(changed)
    with pytest.raises(IntegrityError, match=rf"{altered}: sha256 [0-9a-f]{{12}}\.\.\. differs from the manifest's"):
        manifest.verify(folder)


def test_every_listed_file_is_verified_not_only_the_required_ones(tmp_path):
    folder = write_model(tmp_path)
    (folder / "vocab.txt").write_text("good\nbad\n")
    rewrite(folder, lambda data: data["files"].update({"vocab.txt": _entry(folder / "vocab.txt")}))
    manifest = Manifest.load(folder)
    manifest.verify(folder)
    (folder / "vocab.txt").write_text("evil\nbad\n")
    with pytest.raises(IntegrityError, match=r"vocab\.txt: sha256"):
        manifest.verify(folder)
    (folder / "vocab.txt").unlink()
    with pytest.raises(IntegrityError, match=r"vocab\.txt: listed in the manifest but missing"):
        manifest.verify(folder)


MALFORMED = [
    (lambda d: d.update(version=12), "version must be a non-empty string, got 12"),
    (lambda d: d.update(normalize_default="yes"), "normalize_default must be true or false, got 'yes'"),
    (lambda d: d.update(source=["bert"]), "source must be a JSON object, got ['bert']"),
    (lambda d: d["files"]["model.onnx"].update(sha256="abc"), "files['model.onnx'].sha256 must be 64 lowercase hex"),
    (lambda d: d["files"]["model.onnx"].update(size=-1), "files['model.onnx'].size must be an integer >= 0"),
    (lambda d: d["parity"].update(texts="300"), "parity.texts must be an integer >= 0, got '300'"),
    (lambda d: d["parity"].pop("passed"), "missing field(s) of parity passed"),
    (lambda d: d["parity"].update(task="translation"), "parity.task must be one of"),
    (lambda d: d["parity"].update(accuracy_int8="high"), "parity.accuracy_int8 must be a number, got 'high'"),
    (lambda d: d["reference"]["token_length"].update(counts=[1, 2]),
     "reference.token_length: 4 edges for 2 counts; a bin lies between two edges"),
    (lambda d: d["reference"].update(label_share={"negative": "half"}),
     "reference.label_share must be an object of name -> number"),
    (lambda d: d["training"].pop("base"), "missing field(s) of training base"),
    (lambda d: d["training"].update(test_recall=[0.9]), "training.test_recall must be an object of name -> number"),
    (lambda d: d["load"].update(heavy_modules="torch"), "load.heavy_modules must be a list of strings"),
    (lambda d: d.update(reference=[1]), "reference must be a JSON object, got list"),
]


@pytest.mark.parametrize(("change", "message"), MALFORMED)
def test_a_malformed_field_is_refused_with_its_name(change, message, tmp_path):
    folder = write_model(tmp_path)
    rewrite(folder, change)
    with pytest.raises(ManifestError) as caught:
        Manifest.load(folder)
    assert str(caught.value).startswith(f"{folder / 'manifest.json'}: ")
    assert message in str(caught.value)


def test_a_newer_schema_is_refused_and_an_absent_one_too(tmp_path):
    folder = write_model(tmp_path, schema_version=2)
    with pytest.raises(ManifestError, match="schema_version 2 is not supported"):
        Manifest.load(folder)
    rewrite(folder, lambda data: data.pop("schema_version"))
    with pytest.raises(ManifestError, match="schema_version None is not supported"):
        Manifest.load(folder)


def test_parity_record_reads_the_build_report_form():
    record = ParityRecord.from_dict({"task": "feature-extraction", "texts": 3, "min_cosine": 0.5, "mean_cosine": 0.9,
                                     "passed": False, "failures": ["minimum cosine 0.5000 is under min_cosine 0.95"]},
                                    "gate")
    assert record.failures == ("minimum cosine 0.5000 is under min_cosine 0.95",) and record.eval_data is None


# --- finding model folders -----------------------------------------------------------------------------------


def test_the_search_path_is_given_not_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FERRY_MODELS_DIR", str(tmp_path))
    assert models_search_path(None) == [Path("/opt/models")]
    assert models_search_path() == [Path("/opt/models")]
    assert models_search_path(f"{tmp_path / 'a'}:{tmp_path / 'b'}") == [tmp_path / "a", tmp_path / "b"]
    assert models_search_path([tmp_path]) == [tmp_path]


def test_models_are_found_in_layers_and_model_folders(tmp_path):
    layers = tmp_path / "layers"
    for name in ("beta", "alpha"):
        write_model(layers / name / "models", name)
    write_model(layers / ".ferry-build-alpha-x1" / "models", "alpha")  # a build still writing
    (layers / "beta" / "models" / "Not_A_Name").mkdir()
    from ferry.runtime import layer_models_dirs

    search = layer_models_dirs(layers)
    assert discover_models(search) == {"alpha": layers / "alpha" / "models" / "alpha",
                                       "beta": layers / "beta" / "models" / "beta"}
    assert resolve_model_dir("beta", search) == layers / "beta" / "models" / "beta"
    assert as_model_dir(layers / "alpha") == layers / "alpha" / "models" / "alpha"
    assert as_model_dir(layers / "alpha" / "models" / "alpha") == layers / "alpha" / "models" / "alpha"
    with pytest.raises(ManifestError, match="neither a model folder"):
        as_model_dir(layers)


def test_the_reference_sample_reads_back_as_written_and_refuses_rows_that_do_not_line_up():
    from ferry.runtime.manifest import ReferenceSample

    sample = ReferenceSample(source="validation.jsonl", token_length=(5, 9, 12), confidence=(0.9, 0.6, 0.99),
                             predicted=(1, 0, 1), correct=(1, 0, 1), accuracy=0.666667)
    written = json.loads(json.dumps(sample.to_dict()))
    assert written["n"] == 3 and ReferenceSample.from_dict(written, "m") == sample
    embedder = ReferenceSample(source="built-in sentences", token_length=(4, 8))
    assert ReferenceSample.from_dict(json.loads(json.dumps(embedder.to_dict())), "m") == embedder
    for change, message in ((dict(confidence=[0.9]), "confidence has 1 values for 3 rows (token lengths)"),
                            (dict(correct=[1, 2, 0]), "reference.sample.correct must be 0 or 1 per row"),
                            (dict(n=4), "reference.sample.n must be the number of rows (3), got 4"),
                            (dict(token_length=[1.5, 2, 3]), "reference.sample.token_length must be a list of counts")):
        with pytest.raises(ManifestError, match=re.escape(message)):
            ReferenceSample.from_dict({**written, **change}, "m")
