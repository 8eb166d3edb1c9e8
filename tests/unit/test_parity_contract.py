"""The parity gate at its bounds, its report as the manifest records it, and the fp32 reference it measures against
(torch and transformers stood in for: what is checked is what the gate asks of them, not the model)."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from ferry.layer import GateThresholds
from ferry.layer.parity import ParityReport, compare_classification, compare_embeddings, reference_outputs
from ferry.runtime.predictor import Batch

CLASSIFICATION_KEYS = ["agreement", "max_abs_logit_diff", "mean_abs_logit_diff", "accuracy_fp32", "accuracy_int8",
                       "accuracy_drop_points"]


def test_a_classification_report_without_labels_names_every_figure():
    reference = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    candidate = np.array([[1.5, 0.0, 1.0], [0.0, 1.5, 1.0]])  # the same top labels
    report = compare_classification(reference, candidate, GateThresholds(min_agreement=0.5))
    assert (report.task, report.texts, report.failures, report.passed) == ("text-classification", 2, [], True)
    assert list(report.figures) == CLASSIFICATION_KEYS
    assert report.figures == {"agreement": 1.0, "max_abs_logit_diff": 1.5, "mean_abs_logit_diff": pytest.approx(2 / 6),
                              "accuracy_fp32": None, "accuracy_int8": None, "accuracy_drop_points": None}
    assert report.to_dict() == {"task": "text-classification", "texts": 2, **report.figures, "passed": True,
                                "failures": []}
    assert list(report.to_dict()) == ["task", "texts", *CLASSIFICATION_KEYS, "passed", "failures"]


def test_agreement_exactly_at_the_minimum_passes():
    reference = np.array([[1.0, 0.0]] * 20)
    candidate = reference.copy()
    candidate[0] = [0.0, 1.0]  # 19 of 20 agree: 0.95
    assert compare_classification(reference, candidate, GateThresholds(min_agreement=0.95)).passed
    assert not compare_classification(reference, candidate, GateThresholds(min_agreement=0.951)).passed


def test_an_accuracy_drop_exactly_at_the_maximum_passes():
    reference = np.array([[0.0, 1.0]] * 2)
    candidate = np.array([[0.0, 1.0], [1.0, 0.0]])  # fp32 2/2 right, int8 1/2: 50 points
    truth = [1, 1]
    at_limit = compare_classification(reference, candidate, GateThresholds(max_accuracy_drop=50.0 - 1e-9,
                                                                           min_agreement=0.5), truth)
    assert at_limit.figures["accuracy_drop_points"] == 50.0 and at_limit.passed
    over = compare_classification(reference, candidate, GateThresholds(max_accuracy_drop=49.99, min_agreement=0.5),
                                  truth)
    assert over.failures == ["int8 accuracy 0.5000 is 50.00 points under fp32 1.0000 (max_accuracy_drop 49.99)"]
    assert over.to_dict()["passed"] is False and over.to_dict()["failures"] == over.failures


def test_an_embedding_report_and_a_cosine_exactly_at_the_minimum():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    report = compare_embeddings(reference, reference * 3, GateThresholds(min_cosine=1.0))
    assert (report.task, report.texts, report.passed) == ("feature-extraction", 2, True)
    assert report.figures == {"min_cosine": 1.0, "mean_cosine": 1.0}
    assert report.to_dict() == {"task": "feature-extraction", "texts": 2, "min_cosine": 1.0, "mean_cosine": 1.0,
                                "passed": True, "failures": []}


def test_a_report_passes_exactly_when_it_has_no_failure():
    report = ParityReport(task="feature-extraction", texts=1, figures={"min_cosine": 0.2})
    assert report.passed and report.to_dict()["passed"] is True
    report.failures.append("minimum cosine 0.2000 is under min_cosine 0.95 (mean 0.2000)")
    assert not report.passed
    assert report.to_dict() == {"task": "feature-extraction", "texts": 1, "min_cosine": 0.2, "passed": False,
                                "failures": ["minimum cosine 0.2000 is under min_cosine 0.95 (mean 0.2000)"]}
    assert report.to_dict()["failures"] is not report.failures  # a copy: the written report does not move


# -- the fp32 reference ----------------------------------------------------------------------------------------

class _Tensor:
    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)

    def float(self) -> _Tensor:
        return _Tensor(self.array.astype(np.float32))

    def numpy(self) -> np.ndarray:
        return self.array


class _Torch(types.ModuleType):
    """What reference_outputs uses of torch; it records whether gradients were off when the model ran."""

    float32 = "torch.float32"

    def __init__(self) -> None:
        super().__init__("torch")
        self.inference = False

    @staticmethod
    def from_numpy(array: np.ndarray) -> _Tensor:
        assert isinstance(array, np.ndarray)
        return _Tensor(array)

    @contextmanager
    def inference_mode(self):
        self.inference = True
        try:
            yield
        finally:
            self.inference = False


class _Model:
    """A stand-in model: logits and hidden states computed from the ids, so the expected outputs are known."""

    loaded: ClassVar[list[tuple[str, str, dict]]] = []
    torch: _Torch

    def __init__(self, kind: str):
        self.kind, self.evaluating = kind, False

    def eval(self) -> None:
        self.evaluating = True

    def __call__(self, **feeds: _Tensor) -> types.SimpleNamespace:
        assert self.evaluating and self.torch.inference, "the reference runs in eval mode, without gradients"
        assert set(feeds) == {"input_ids", "attention_mask"}
        ids = feeds["input_ids"].array.astype(np.float64)
        if self.kind == "classifier":
            return types.SimpleNamespace(logits=_Tensor(np.stack([ids.sum(axis=1), -ids.sum(axis=1)], axis=1)))
        return types.SimpleNamespace(last_hidden_state=_Tensor(np.stack([ids, 2 * ids], axis=-1)))


def _model_class(kind: str) -> type:
    class Loader:
        @staticmethod
        def from_pretrained(path: str, **kwargs: object) -> _Model:
            _Model.loaded.append((kind, path, kwargs))
            return _Model(kind)

    return Loader


@pytest.fixture()
def stand_ins(monkeypatch):
    torch = _Torch()
    transformers = types.ModuleType("transformers")
    transformers.AutoModelForSequenceClassification = _model_class("classifier")
    transformers.AutoModel = _model_class("encoder")
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    monkeypatch.setattr(_Model, "torch", torch, raising=False)
    monkeypatch.setattr(_Model, "loaded", [])
    return torch


def _batch(ids: list[list[int]], mask: list[list[int]]) -> Batch:
    feeds = {"input_ids": np.array(ids, dtype=np.int64), "attention_mask": np.array(mask, dtype=np.int64)}
    return Batch(feeds=feeds, token_lengths=[sum(row) for row in mask], truncated=[False] * len(ids))


BATCHES = [_batch([[1, 2, 9], [3, 4, 5]], [[1, 1, 0], [1, 1, 1]]), _batch([[7, 0, 0]], [[1, 0, 0]])]


def test_the_classifier_reference_is_the_fp32_logits_of_every_batch_in_order(stand_ins, tmp_path):
    logits = reference_outputs(tmp_path, "text-classification", BATCHES)
    np.testing.assert_array_equal(logits, [[12, -12], [12, -12], [7, -7]])
    assert logits.dtype == np.float32
    assert _Model.loaded == [("classifier", str(tmp_path), {"local_files_only": True, "torch_dtype": "torch.float32"})]
    assert not stand_ins.inference  # the context is left


def test_the_embedder_reference_is_the_mean_of_the_attended_tokens(stand_ins, tmp_path):
    vectors = reference_outputs(Path(tmp_path), "feature-extraction", BATCHES)
    # the padded 9 of the first text is not averaged in
    np.testing.assert_allclose(vectors, [[1.5, 3.0], [4.0, 8.0], [7.0, 14.0]])
    assert vectors.shape == (3, 2)
    assert _Model.loaded == [("encoder", str(tmp_path), {"local_files_only": True, "torch_dtype": "torch.float32"})]
