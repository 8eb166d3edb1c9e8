"""Shared fixtures: the tweets, tiny trained models, and layers built from them (once per session). Fixtures only:
the plain helpers are in helpers.py (`from helpers import ...`)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from helpers import build_tiny_layer, run_ferry
from tiny_models import balanced_slice, build_tiny_model


@pytest.fixture(scope="session", autouse=True)
def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tweets():
    from ferry.data.corpus import load_corpus

    return load_corpus().examples


@pytest.fixture(scope="session")
def eval_csv(tweets, tmp_path_factory) -> Path:
    """300 labelled tweets (balanced) none of which the tiny models trained on."""
    held_out = balanced_slice(tweets[1::2], 150, seed=1)
    path = tmp_path_factory.mktemp("eval") / "eval.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([example.text, example.label] for example in held_out)
    return path


@pytest.fixture(scope="session")
def train_slice(tweets):
    return balanced_slice(tweets[::2], 600)


@pytest.fixture(scope="session")
def tiny_bert(train_slice, tmp_path_factory) -> Path:
    return build_tiny_model("bert", train_slice, tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_distilbert(train_slice, tmp_path_factory) -> Path:
    return build_tiny_model("distilbert", train_slice, tmp_path_factory.mktemp("models") / "tiny-distilbert")


@pytest.fixture(scope="session")
def bert_build(tiny_bert, eval_csv, tmp_path_factory):
    return build_tiny_layer(tiny_bert, tmp_path_factory.mktemp("layers"), "tiny-bert", eval_csv)


@pytest.fixture(scope="session")
def distilbert_build(tiny_distilbert, eval_csv, tmp_path_factory):
    return build_tiny_layer(tiny_distilbert, tmp_path_factory.mktemp("layers"), "tiny-distilbert", eval_csv)


@pytest.fixture()
def model_copy(bert_build, tmp_path) -> Path:
    """A private copy of the tiny BERT model folder, for tests that alter files."""
    import shutil

    target = tmp_path / "models" / bert_build.name
    shutil.copytree(bert_build.model_dir, target)
    return target


@pytest.fixture(scope="session")
def minilm_build(tmp_path_factory):
    """The real MiniLM built once through the CLI: (layer folder, the command's summary)."""
    out = tmp_path_factory.mktemp("minilm")
    result = run_ferry("build", "--model", "sentence-transformers/all-MiniLM-L6-v2", "--task", "feature-extraction",
                       "--name", "minilm", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "minilm", result.stdout


@pytest.fixture(scope="session")
def serving_layers(bert_build, minilm_build, tmp_path_factory) -> Path:
    """A layers folder as `ferry serve` reads it: a tiny classifier and the real MiniLM embedder."""
    import shutil

    layers = tmp_path_factory.mktemp("serving") / "layers"
    shutil.copytree(bert_build.layer_dir, layers / "tiny-bert")
    shutil.copytree(minilm_build[0], layers / "minilm")
    return layers


# -- the end of the run ----------------------------------------------------------------------------------------------

_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """End the test process with pytest's own status once everything is reported, skipping the interpreter's
    teardown of torch's and onnxruntime's native state: one CI run (1,649 passed) then died in that teardown with
    "terminate called without an active exception" (a C++ thread destroyed while joinable), and make failed a green
    suite. Not reproduced in four runs of the same modules; this hook only skips that teardown, so every test result
    and the summary stand as reported, and a process the tests start (ferry serve, the workers) still exits on its own.
    """
    if _EXIT_STATUS and os.environ.get("FERRY_TEST_FULL_TEARDOWN") != "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[0])
