"""The manifest contract to the letter: every refusal with its exact message, the typed parts as they are read
(not only as they round-trip: a field dropped by the reader would come back through ``unknown``), and the folder
layout the runtime finds models in."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ferry.runtime import layout
from ferry.runtime.constants import MODEL_NAME_RE
from ferry.runtime.exceptions import IntegrityError, ManifestError, ModelNotFoundError
from ferry.runtime.manifest import (
    Bins,
    LoadTimings,
    Manifest,
    ParityRecord,
    ReferenceDistributions,
    TrainingSummary,
    as_model_dir,
    discover_models,
    resolve_model_dir,
    sha256_file,
)

MODEL_BYTES = bytes(range(256)) * 8
TOKENIZER = b'{"model": {"vocab": {"[PAD]": 0}}}'
NAME = MODEL_NAME_RE.pattern


def _entry(data: bytes) -> dict[str, object]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def minimal(**changes: object) -> dict[str, object]:
    """The fields a manifest cannot do without."""
    return {"schema_version": 1, "name": "demo", "version": "0123456789ab", "task": "text-classification",
            "labels": ["negative", "positive"], "max_length": 128,
            "files": {"model.onnx": _entry(MODEL_BYTES), "tokenizer.json": _entry(TOKENIZER)}, **changes}


def write_model(models_dir: Path, name: str = "demo", **changes: object) -> Path:
    folder = models_dir / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(MODEL_BYTES)
    (folder / "tokenizer.json").write_bytes(TOKENIZER)
    (folder / "manifest.json").write_text(json.dumps(minimal(name=name, **changes)), encoding="utf-8")
    return folder


def refused(call, message: str, kind: type[Exception] = ManifestError) -> None:
    with pytest.raises(kind) as caught:
        call()
    assert str(caught.value) == message


# -- Manifest.from_dict ---------------------------------------------------------------------------------------

def test_the_source_is_manifest_unless_named_and_a_non_object_is_refused_by_its_type():
    refused(lambda: Manifest.from_dict([1]), "manifest: expected a JSON object, got list")
    refused(lambda: Manifest.from_dict("x", "m.json"), "m.json: expected a JSON object, got str")
    refused(lambda: Manifest.from_dict(minimal(task="translation")),
            "manifest: task 'translation' is not one of text-classification, feature-extraction")


@pytest.mark.parametrize("missing", ["name", "version", "task", "max_length", "files"])
def test_each_required_field_is_named_when_missing(missing):
    data = minimal()
    del data[missing]
    refused(lambda: Manifest.from_dict(data, "m.json"), f"m.json: missing field(s) {missing}")


MALFORMED = [
    ({"name": 5}, f"m.json: name 5 does not match {NAME}"),
    ({"name": "Bad_Name"}, f"m.json: name 'Bad_Name' does not match {NAME}"),
    ({"max_length": True}, "m.json: max_length must be an integer >= 2, got True"),
    ({"max_length": 1}, "m.json: max_length must be an integer >= 2, got 1"),
    ({"max_length": "128"}, "m.json: max_length must be an integer >= 2, got '128'"),
    ({"max_length": 2.0}, "m.json: max_length must be an integer >= 2, got 2.0"),
    ({"labels": "ab"}, "m.json: labels must be a list of strings"),
    ({"labels": ["a", 1]}, "m.json: labels must be a list of strings"),
    ({"labels": []}, "m.json: a text-classification manifest must list its labels"),
    ({"files": {}}, "m.json: files must be a non-empty object of name -> {sha256, size}"),
    ({"files": "model.onnx"}, "m.json: files must be a non-empty object of name -> {sha256, size}"),
    ({"files": {"model.onnx": {"sha256": 1, "size": 1}}},
     "m.json: files['model.onnx'] needs a sha256 string and an integer size"),
    ({"files": {"model.onnx": {"sha256": "a" * 64, "size": "1"}}},
     "m.json: files['model.onnx'] needs a sha256 string and an integer size"),
    ({"files": {"model.onnx": ["a" * 64, 1]}}, "m.json: files['model.onnx'] needs a sha256 string and an integer size"),
    ({"files": {"/etc/model.onnx": {"sha256": "a" * 64, "size": 1}}},
     "m.json: files['/etc/model.onnx'] must be a path inside the model folder"),
    ({"files": {"../model.onnx": {"sha256": "a" * 64, "size": 1}}},
     "m.json: files['../model.onnx'] must be a path inside the model folder"),
    ({"files": {"model.onnx": {"sha256": "A" * 64, "size": 1}}},
     "m.json: files['model.onnx'].sha256 must be 64 lowercase hex digits"),
    ({"files": {"model.onnx": {"sha256": "a" * 64, "size": -1}}},
     "m.json: files['model.onnx'].size must be an integer >= 0"),
    ({"files": {"model.onnx": {"sha256": "a" * 64, "size": False}}},
     "m.json: files['model.onnx'].size must be an integer >= 0"),
    ({"files": {"model.onnx": {"sha256": "a" * 64, "size": 1}}},
     "m.json: files does not list tokenizer.json; every model folder holds it"),
]


@pytest.mark.parametrize(("changes", "message"), MALFORMED)
def test_a_malformed_manifest_is_refused_in_these_words(changes, message):
    refused(lambda: Manifest.from_dict(minimal(**changes), "m.json"), message)


def test_what_a_manifest_may_hold_at_the_bounds():
    empty = {"sha256": hashlib.sha256(b"").hexdigest(), "size": 0}
    files = {**minimal()["files"], "extra/empty.txt": empty}
    manifest = Manifest.from_dict(minimal(max_length=2, files=files, task="feature-extraction", labels=None))
    assert manifest.max_length == 2 and manifest.labels == ()
    assert manifest.files["extra/empty.txt"].size == 0
    assert manifest.normalize_default is False  # absent: False, not None
    assert Manifest.from_dict(minimal(normalize_default=True)).normalize_default is True


# -- the typed parts --------------------------------------------------------------------------------------------

TRAINING = {"base": "minilm", "data": "tweets", "steps": 880, "wall_seconds": 1234.5, "validation_accuracy": 0.81,
            "validation_macro_f1": 0.79, "test_accuracy": 0.8, "test_macro_f1": 0.78, "test_recall": {"neg": 0.9}}


def test_the_training_summary_is_read_field_by_field():
    summary = TrainingSummary.from_dict({**TRAINING, "seed": 7}, "r.json")
    assert summary == TrainingSummary(base="minilm", data="tweets", steps=880, wall_seconds=1234.5,
                                      validation_accuracy=0.81, validation_macro_f1=0.79, test_accuracy=0.8,
                                      test_macro_f1=0.78, test_recall={"neg": 0.9}, unknown={"seed": 7})
    assert summary.to_dict() == {**TRAINING, "seed": 7}
    minimal_summary = TrainingSummary.from_dict({"base": "b", "data": "d"}, "r.json")
    assert minimal_summary.steps is None and minimal_summary.test_recall == {} and minimal_summary.unknown == {}
    refused(lambda: TrainingSummary.from_dict({"base": "b"}, "r.json"), "r.json: missing field(s) of training data")
    refused(lambda: TrainingSummary.from_dict({**TRAINING, "steps": -1}, "r.json"),
            "r.json: training.steps must be an integer >= 0, got -1")
    for key in ("wall_seconds", "validation_accuracy", "validation_macro_f1", "test_accuracy", "test_macro_f1"):
        refused(lambda key=key: TrainingSummary.from_dict({**TRAINING, key: "x"}, "r.json"),
                f"r.json: training.{key} must be a number, got 'x'")


def test_load_timings_are_read_field_by_field():
    data = {"import_s": 0.2, "load_s": 0.05, "first_prediction_s": 0.003, "import_and_load_s": 0.25,
            "heavy_modules": ["torch"], "rss_mb": 180}
    timings = LoadTimings.from_dict(data, "m.json")
    assert timings == LoadTimings(import_s=0.2, load_s=0.05, first_prediction_s=0.003, import_and_load_s=0.25,
                                  heavy_modules=("torch",), unknown={"rss_mb": 180})
    for key in ("import_s", "load_s", "first_prediction_s", "import_and_load_s"):
        refused(lambda key=key: LoadTimings.from_dict({key: "slow"}, "m.json"),
                f"m.json: load.{key} must be a number, got 'slow'")


PARITY = {"task": "feature-extraction", "texts": 3, "passed": True, "min_cosine": 0.97, "mean_cosine": 0.99}


def test_the_parity_record_is_read_and_refused_by_its_path():
    record = ParityRecord.from_dict({**PARITY, "calibration": 0.1}, "m.json")
    assert (record.task, record.texts, record.passed, record.min_cosine) == ("feature-extraction", 3, True, 0.97)
    assert record.unknown == {"calibration": 0.1} and record.thresholds == {}
    for key in ("task", "texts", "passed"):
        data = {name: value for name, value in PARITY.items() if name != key}
        refused(lambda data=data: ParityRecord.from_dict(data, "m.json"), f"m.json: missing field(s) of parity {key}")
    refused(lambda: ParityRecord.from_dict({**PARITY, "task": "x"}, "m.json"),
            "m.json: parity.task must be one of text-classification, feature-extraction, got 'x'")
    refused(lambda: ParityRecord.from_dict({**PARITY, "passed": "yes"}, "m.json"),
            "m.json: parity.passed must be true or false, got 'yes'")
    refused(lambda: ParityRecord.from_dict({**PARITY, "passed": 1}, "m.json"),
            "m.json: parity.passed must be true or false, got 1")


BINS = {"edges": [1.0, 2.0, 3.0], "counts": [4, 5], "n": 9}


def test_reference_distributions_and_their_bins():
    reference = ReferenceDistributions.from_dict({"token_length": BINS, "top_score": {**BINS, "mean": 1.5},
                                                  "drift": "kept"}, "m.json")
    assert reference.token_length == Bins(edges=(1.0, 2.0, 3.0), counts=(4, 5), n=9)
    assert reference.top_score == Bins(edges=(1.0, 2.0, 3.0), counts=(4, 5), n=9, mean=1.5)
    assert reference.unknown == {"drift": "kept"} and reference.label_share is None
    refused(lambda: ReferenceDistributions.from_dict({"token_length": BINS, "top_score": {**BINS, "counts": [1]}},
                                                     "m.json"),
            "m.json: reference.top_score: 3 edges for 1 counts; a bin lies between two edges")
    refused(lambda: ReferenceDistributions.from_dict({}, "m.json"),
            "m.json: missing field(s) of reference token_length")
    for key in ("edges", "counts", "n"):
        data = {name: value for name, value in BINS.items() if name != key}
        refused(lambda data=data: Bins.from_dict(data, "m.json", "bins"), f"m.json: missing field(s) of bins {key}")


# -- reading a folder ---------------------------------------------------------------------------------------------

def test_a_manifest_file_that_cannot_be_read_is_named_with_why(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    path = folder / "manifest.json"
    refused(lambda: Manifest.load(folder),
            f"{path}: no manifest; is {folder} a model folder built by `ferry build`?")
    path.mkdir()
    refused(lambda: Manifest.load(folder), f"{path}: cannot be read (IsADirectoryError)")
    path.rmdir()
    path.write_bytes(b'{"name": "d\xe9mo"}')
    refused(lambda: Manifest.load(folder), f"{path}: cannot be read (UnicodeDecodeError)")
    path.write_text('{"name": "demo",\n  oops}', encoding="utf-8")
    refused(lambda: Manifest.load(folder), f"{path}: not valid JSON (line 2, column 3)")


def test_a_manifest_is_read_as_utf8_and_must_carry_its_folder_s_name(tmp_path):
    folder = write_model(tmp_path, labels=["négatif", "positif ✓"])
    assert Manifest.load(folder).labels == ("négatif", "positif ✓")
    other = write_model(tmp_path / "x", "other")
    (other.parent / "renamed").mkdir()
    for item in other.iterdir():
        item.rename(other.parent / "renamed" / item.name)
    refused(lambda: Manifest.load(other.parent / "renamed"),
            f"{other.parent / 'renamed' / 'manifest.json'}: manifest name 'other' differs from its folder 'renamed'")


def test_verify_names_the_altered_file_its_sizes_and_digests(tmp_path):
    folder = write_model(tmp_path)
    manifest = Manifest.load(folder)
    manifest.verify(folder)
    (folder / "tokenizer.json").write_bytes(TOKENIZER + b" ")
    refused(lambda: manifest.verify(folder),
            f"{folder / 'tokenizer.json'}: size {len(TOKENIZER) + 1} bytes differs from the manifest's "
            f"{len(TOKENIZER)}; the file was altered", IntegrityError)
    altered = TOKENIZER.replace(b"PAD", b"pad")
    (folder / "tokenizer.json").write_bytes(altered)
    refused(lambda: manifest.verify(folder),
            f"{folder / 'tokenizer.json'}: sha256 {hashlib.sha256(altered).hexdigest()[:12]}... differs from the "
            f"manifest's {hashlib.sha256(TOKENIZER).hexdigest()[:12]}...; the file was altered", IntegrityError)
    (folder / "tokenizer.json").unlink()
    refused(lambda: manifest.verify(folder),
            f"{folder / 'tokenizer.json'}: listed in the manifest but missing; rebuild or redeploy the layer",
            IntegrityError)


def test_sha256_of_a_file_larger_than_a_read(tmp_path):
    path = tmp_path / "big.bin"
    data = b"0123456789abcdef" * 100_000  # 1.6 MB: two reads of 1 MiB
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# -- finding model folders ------------------------------------------------------------------------------------------

def test_discovery_skips_missing_roots_bad_names_and_folders_without_a_manifest(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_model(second, "beta")
    write_model(second, "alpha")
    write_model(first, "beta")  # the first root wins
    (second / "no-manifest").mkdir()
    bad = second / "Bad_Name"
    bad.mkdir()
    (bad / "manifest.json").write_text("{}")
    found = discover_models([tmp_path / "missing", first, second])
    assert found == {"beta": first / "beta", "alpha": second / "alpha"}


def test_resolving_a_name_says_what_is_available(tmp_path):
    write_model(tmp_path, "beta")
    write_model(tmp_path, "alpha")
    assert resolve_model_dir("beta", [tmp_path / "missing", tmp_path]) == tmp_path / "beta"
    refused(lambda: resolve_model_dir("gamma", [tmp_path]), "no model named 'gamma'; available: alpha, beta",
            ModelNotFoundError)
    refused(lambda: resolve_model_dir("gamma", [tmp_path / "missing"]), "no model named 'gamma'; available: none",
            ModelNotFoundError)
    refused(lambda: resolve_model_dir("Gamma!", [tmp_path]),
            f"model name 'Gamma!' is not valid: it must match {NAME}", ModelNotFoundError)


def test_a_layer_of_two_models_must_be_named_down_to_one(tmp_path):
    layer = tmp_path / "layer"
    write_model(layout.layer_models_dir(layer), "alpha")
    write_model(layout.layer_models_dir(layer), "beta")
    refused(lambda: as_model_dir(layer), f"{layer}: the layer holds several models (alpha, beta); name one folder")
    refused(lambda: as_model_dir(tmp_path), f"{tmp_path}: neither a model folder (no manifest.json) nor a layer "
                                            "folder with models/<name>/")


def test_the_layout_of_layers_and_model_folders(tmp_path):
    assert layout.layer_dir(tmp_path, "demo") == tmp_path / "demo"
    assert layout.model_dir_in_layer(tmp_path / "demo", "demo") == tmp_path / "demo" / "models" / "demo"
    model = tmp_path / "m"
    assert (layout.manifest_path(model), layout.model_file(model), layout.tokenizer_file(model)) == (
        model / "manifest.json", model / "model.onnx", model / "tokenizer.json")
