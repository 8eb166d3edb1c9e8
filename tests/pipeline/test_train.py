"""`ferry train` on a small slice: it learns, it is reproducible, its report is honest, bad data is refused."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import pytest

from ferry.layer import BuildConfig, GateThresholds, ModelSourceError, build_layer
from ferry.metrics import classification_metrics
from ferry.runtime import Manifest
from ferry.train import PREDICTIONS_DIR, REPORT_FILE, InvalidTrainConfigError, TrainConfig, TrainingReport, train

from helpers import run_ferry

QUICK = {"steps": 40, "batch_size": 16, "max_length": 48, "max_train_texts": 600, "max_eval_texts": 200,
         "frozen_layers": 1, "train_eval_texts": 200,
         "max_validation_texts": 200, "validations": 2, "learning_rate": 3e-3, "warmup_steps": 5}


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "sentiment"
    return train(TrainConfig(base=str(tiny_bert), data="default", out=out, **QUICK)), out


def test_short_run_learns_well_above_the_majority_class(trained):
    result, _ = trained
    test = result.training_report.splits["test"]
    majority = max(m.support for m in test.per_class.values()) / test.n
    assert test.accuracy > majority + 0.1
    assert result.training_report.steps == 40 and len(result.training_report.history) == 2


def test_model_folder_has_labels_in_its_config_and_a_tokenizer(trained):
    _, out = trained
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_report_figures_match_a_recount_of_the_saved_predictions(trained):
    result, out = trained
    for split in ("validation", "test"):
        rows = [json.loads(line) for line in (out / PREDICTIONS_DIR / f"{split}.jsonl").read_text().splitlines()]
        labels = ["negative", "positive"]
        recount = classification_metrics([labels.index(r["label"]) for r in rows],
                                         [labels.index(r["predicted"]) for r in rows], labels)
        assert recount == result.training_report.splits[split]
        assert recount.to_dict() == result.training_report.to_dict()["splits"][split]
        assert Counter(r["label"] for r in rows) == Counter(
            {label: m.support for label, m in recount.per_class.items()})
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["splits"]["test"]["confusion"] == result.training_report.splits["test"].to_dict()["confusion"]
    assert saved["schema_version"] == 1
    assert TrainingReport.load(out) == result.training_report  # the file reads back into what train returned


def test_same_seed_same_model(trained, tiny_bert, tmp_path):
    first, _ = trained
    again = train(TrainConfig(base=str(tiny_bert), data="default", out=tmp_path / "again", **QUICK))
    assert again.training_report.splits["test"] == first.training_report.splits["test"]
    assert again.training_report.history[-1].loss == first.training_report.history[-1].loss


def test_budget_plans_fewer_steps_and_still_finishes(tiny_bert, tmp_path):
    result = train(TrainConfig(base=str(tiny_bert), data="default", out=tmp_path / "m",
                               **{**QUICK, "steps": 100000}, max_minutes=0.5))
    assert result.training_report.stopped_early.startswith("max_minutes 0.5: planned")
    assert result.training_report.steps < 100000 and result.training_report.wall_seconds < 30 + 15
    assert len(result.training_report.history) <= QUICK["validations"] + 1  # replanning never loops on validations


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{missing}"], "--data {missing}: no such file (or use 'default', the bundled tweets)"),
        (["--data", "{onelabel}"], "needs at least two labels"),
        (["--data", "{ragged}"], "ragged.csv:3: ragged row: 3 fields, the header has 2"),
        (["--data", "{latin1}"], "latin1.csv:2: not valid UTF-8"),
        (["--data", "{nolabel}"], "nolabel.csv:1: no column 'text'"),
        (["--data", "{unknown}", "--labels", "negative,positive"], "unknown label 'angry'"),
        (["--data", "default", "--steps", "0", "--warn-below", "0.9"], "--steps must be positive"),
        (["--data", "default", "--warn-below", "90"], "--warn-below 90 must be an accuracy between 0 and 1"),
        (["--data", "default", "--base", "{missing}"], "--base {missing}: no such folder"),
    ],
)
def test_bad_training_input_is_a_clear_error(args, message, tiny_bert, tmp_path):
    files = {"onelabel": "text,label\na,x\nb,x\n", "ragged": "text,label\na,x\nb,y,z\n", "nolabel": "body,label\na,x\n",
             "unknown": "text,label\nso mad,angry\nnice,positive\n"}
    paths = {"missing": str(tmp_path / "nowhere.csv")}
    for name, content in files.items():
        (tmp_path / f"{name}.csv").write_text(content)
        paths[name] = str(tmp_path / f"{name}.csv")
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9,x\n".encode("latin-1"))
    paths["latin1"] = str(tmp_path / "latin1.csv")
    argv = ["train", "--base", str(tiny_bert), "--out", str(tmp_path / "out"), *[a.format(**paths) for a in args]]
    result = run_ferry(*argv)
    assert result.returncode == 2, result.stderr
    assert message.format(**paths) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_accuracy_under_the_floor_is_a_warning_that_says_what_to_do(trained):
    from ferry.commands.train import accuracy_warning

    result, out = trained
    report = result.training_report
    accuracy = report.splits["test"].accuracy
    assert accuracy_warning(report, out, None) is None
    assert accuracy_warning(report, out, accuracy - 0.01) is None
    warning = accuracy_warning(report, out, accuracy + 0.01)
    assert warning and f"test accuracy {accuracy:.4f} is under" in warning
    assert "40 steps" in warning and str(out) in warning and "TRAIN_MINUTES" in warning


def test_the_build_records_the_training_reports_headline(trained, tmp_path):
    result, out = trained
    lenient = GateThresholds(max_accuracy_drop=100.0, min_agreement=0.0)  # the gate is not what is tested here
    built = build_layer(BuildConfig(model=str(out), task="text-classification", out=tmp_path / "layers",
                                    name="sentiment", gate=lenient))
    training = Manifest.load(built.model_dir).training
    assert training == result.training_report.summary()
    test = result.training_report.splits["test"]
    assert training.base == result.training_report.base and training.steps == 40
    assert training.test_accuracy == round(test.accuracy, 4)
    assert training.test_recall == {label: round(m.recall, 4) for label, m in test.per_class.items()}


def test_a_malformed_training_report_fails_the_build_before_any_export(trained, tmp_path):
    _, out = trained
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    report = json.loads((broken / REPORT_FILE).read_text())
    report["splits"]["test"]["macro_f1"] = None
    (broken / REPORT_FILE).write_text(json.dumps(report))
    with pytest.raises(ModelSourceError, match=r"training_report\.json: splits\.test\.macro_f1 must be a number"):
        build_layer(BuildConfig(model=str(broken), task="text-classification", out=tmp_path / "layers"))
    assert not (tmp_path / "layers").exists()


def test_feedback_is_mixed_in_class_balanced_and_its_held_out_rows_are_never_trained_on(trained, tweets, tmp_path):
    """An update's training: from the trained model's weights (warm start), feedback half of each batch."""
    from ferry.data.dataset import normalize_text, split_of

    _, base = trained
    feedback = tmp_path / "feedback.jsonl"
    rows = [(e.text, str(e.label)) for e in tweets[1::7][:300]]
    feedback.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    out = tmp_path / "candidate"
    result = train(TrainConfig(base=str(base), data="default", out=out, feedback_data=str(feedback),
                               feedback_share=0.5, select="last", **{**QUICK, "steps": 10}))
    report = result.training_report
    used = report.dataset["feedback"]
    held_out = [r for r in rows if split_of(normalize_text(r[0])) != "train"]
    assert used["held_out"] == len({normalize_text(t) for t, _ in held_out})
    assert used["train_rows_used"] == sum(used["counts"]["train"].values()) > 0
    saved = [json.loads(line) for line in (out / PREDICTIONS_DIR / "feedback.jsonl").read_text().splitlines()]
    assert saved and all(split_of(normalize_text(row["text"])) != "train" for row in saved)
    assert report.splits["feedback"].n == len(saved) and report.best_step == 10  # "last": the final step kept


def test_a_warm_start_from_a_classifier_with_other_labels_is_refused(trained, tmp_path):
    _, base = trained
    other = tmp_path / "other"
    shutil.copytree(base, other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}  # the same names in another order: each class renamed
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidTrainConfigError, match=re.escape("labels (positive, negative) are not the data's")):
        train(TrainConfig(base=str(other), data="default", out=tmp_path / "out", **{**QUICK, "steps": 2}))
