"""`ferry train` on a small slice: it learns, it is reproducible, its report is honest, bad data is refused."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ferry.runtime.metrics import classification_metrics
from ferry.train import PREDICTIONS_DIR, REPORT_FILE, TrainConfig, train

from conftest import run_ferry

QUICK = {"steps": 40, "batch_size": 16, "max_length": 48, "max_train_texts": 600, "max_eval_texts": 200,
         "frozen_layers": 1, "train_eval_texts": 200,
         "max_validation_texts": 200, "validations": 2, "learning_rate": 3e-3, "warmup_steps": 5}


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "sentiment"
    return train(TrainConfig(base=str(tiny_bert), data="default", out=out, **QUICK)), out


def test_short_run_learns_well_above_the_majority_class(trained):
    result, _ = trained
    test = result.report["splits"]["test"]
    majority = max(m["support"] for m in test["per_class"].values()) / test["n"]
    assert test["accuracy"] > majority + 0.1
    assert result.report["steps"] == 40 and len(result.report["history"]) == 2


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
        assert recount == result.report["splits"][split]
        assert Counter(r["label"] for r in rows) == Counter(
            {label: m["support"] for label, m in recount["per_class"].items()})
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["splits"]["test"]["confusion"] == result.report["splits"]["test"]["confusion"]


def test_same_seed_same_model(trained, tiny_bert, tmp_path):
    first, _ = trained
    again = train(TrainConfig(base=str(tiny_bert), data="default", out=tmp_path / "again", **QUICK))
    assert again.report["splits"]["test"] == first.report["splits"]["test"]
    assert again.report["history"][-1]["loss"] == first.report["history"][-1]["loss"]


def test_budget_plans_fewer_steps_and_still_finishes(tiny_bert, tmp_path):
    result = train(TrainConfig(base=str(tiny_bert), data="default", out=tmp_path / "m",
                               **{**QUICK, "steps": 100000}, max_minutes=0.5))
    assert result.report["stopped_early"].startswith("--max-minutes 0.5: planned")
    assert result.report["steps"] < 100000 and result.report["wall_seconds"] < 30 + 15
    assert len(result.report["history"]) <= QUICK["validations"] + 1  # replanning never loops on validations


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{missing}"], "--data {missing}: no such file (or use --data default)"),
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
    from ferry.cli import accuracy_warning

    result, out = trained
    accuracy = result.report["splits"]["test"]["accuracy"]
    assert accuracy_warning(result.report, out, None) is None
    assert accuracy_warning(result.report, out, accuracy - 0.01) is None
    warning = accuracy_warning(result.report, out, accuracy + 0.01)
    assert warning and f"test accuracy {accuracy:.4f} is under" in warning
    assert "40 steps" in warning and str(out) in warning and "TRAIN_MINUTES" in warning
