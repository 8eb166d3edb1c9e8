"""The `ferry` command line: `ferry predict` and `ferry models` as a user runs them, and what every command
shares (errors in one line, in the command's flags; the library's defaults; a light `ferry --help`)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from ferry.cli import main, make_parser
from ferry.commands._common import given, message_of
from ferry.layer import BuildConfig, GateThresholds, InvalidBuildConfigError
from ferry.train import TrainConfig
from ferry.train.exceptions import InvalidTrainConfigError

from helpers import ROOT, offline_env, run_ferry


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


def test_predict_looks_in_ferry_models_dir_when_no_layers_dir_is_given(bert_build):
    env = offline_env(FERRY_MODELS_DIR=str(bert_build.model_dir.parent))
    result = run_ferry("predict", "tiny-bert", "a fine day", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tiny-bert {bert_build.version}  'a fine day'  ->  ")


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
    parity = bert_build.manifest.parity
    assert f"int8 accuracy {parity.accuracy_int8:.4f} on {parity.texts} texts" in result.stdout


# -- what every command shares ------------------------------------------------------------------------------------

def _parsed(*argv: str) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def test_options_the_library_has_a_default_for_fall_through_to_it(capsys):
    build = _parsed("build", "--model", "m", "--task", "text-classification", "--min-cosine", "0.9")
    assert given(build, GateThresholds) == {"min_cosine": 0.9}
    assert set(given(build, BuildConfig)) == {"model", "task", "out"}  # --out: the command's folder of layers
    train = _parsed("train", "--base", "b", "--data", "default", "--out", "o", "--labels", "a, b", "--neutral")
    assert given(train, TrainConfig) == {"base": "b", "data": "default", "out": train.out, "labels": ("a", "b"),
                                         "neutral": True}
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"--steps STEPS         (default {TrainConfig.steps})" in capsys.readouterr().out  # the library's


def test_library_errors_are_told_with_the_flags_that_gave_the_argument():
    build = _parsed("build", "--model", "m", "--task", "text-classification")
    with pytest.raises(InvalidBuildConfigError) as caught:
        GateThresholds(max_accuracy_drop=-1)
    assert message_of(caught.value, build).startswith("--max-accuracy-drop must be between 0 and 100")
    gate = InvalidBuildConfigError("parity gate failed: label agreement 0.9000 is under min_agreement 0.98; int8 "
                                   "accuracy 0.8 is 2.00 points under fp32 0.82 (max_accuracy_drop 0.5)")
    assert message_of(gate, build) == ("parity gate failed: label agreement 0.9000 is under --min-agreement 0.98; "
                                       "int8 accuracy 0.8 is 2.00 points under fp32 0.82 (--max-accuracy-drop 0.5)")
    assert message_of(InvalidBuildConfigError("is needed", field="name"), build) == "--name is needed"
    train = _parsed("train", "--base", "b", "--data", "default", "--out", "o")
    assert message_of(InvalidTrainConfigError("cannot find the encoder layers of X; train with frozen_layers 0"),
                      train).endswith("train with --frozen-layers 0")
    assert message_of(InvalidTrainConfigError("must be positive, got 0", field="validations"), train) == (
        "validations must be positive, got 0")  # no flag gives it: the library's own words
    path = InvalidBuildConfigError("/data/min_agreement/x.csv: is empty", field="eval_data")
    assert message_of(path, build) == "--eval-data /data/min_agreement/x.csv: is empty"  # names in paths stay


def test_any_ferry_error_is_one_line_with_its_exit_status(tmp_path, capsys):
    assert main(["build", "--model", str(tmp_path / "none"), "--task", "text-classification",
                 "--min-agreement", "2", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "ferry: error: --min-agreement must be a fraction in [0, 1], got 2.0\n"
    assert main(["models", "--layers-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "ferry: error: no built models; run `ferry build` (or `make up`)\n"


def test_help_imports_no_model_runtime_and_no_aws_sdk():
    probe = ("import sys\nfrom ferry.cli import make_parser\nmake_parser().format_help()\n"
             "print(sorted({name.partition('.')[0] for name in sys.modules} & {'numpy', 'onnxruntime', 'tokenizers', "
             "'torch', 'transformers', 'boto3', 'botocore', 'yaml', 'moto'}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=offline_env(), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
