"""The parity gate: the int8 ONNX model against the PyTorch fp32 original, on the same token ids.

Both models see the ids that the runtime's tokenizer produces, so the gate measures the model and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferry.layer.config import GateThresholds
from ferry.runtime import Batch
from ferry.runtime.constants import TEXT_CLASSIFICATION
from ferry.runtime.predictor import l2_normalize, mean_pool

_EPSILON = 1e-9


@dataclass
class ParityReport:
    task: str
    texts: int
    figures: dict[str, float | None]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "texts": self.texts, **self.figures, "passed": self.passed,
                "failures": list(self.failures)}


def reference_outputs(model_path: Path, task: str, batches: Sequence[Batch]) -> np.ndarray:
    """fp32 PyTorch outputs for the batches: logits, or mean-pooled last hidden states."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    model_class = AutoModelForSequenceClassification if task == TEXT_CLASSIFICATION else AutoModel
    model = model_class.from_pretrained(str(model_path), local_files_only=True, torch_dtype=torch.float32)
    model.eval()
    outputs = []
    with torch.inference_mode():
        for batch in batches:
            result = model(**{name: torch.from_numpy(array) for name, array in batch.feeds.items()})
            if task == TEXT_CLASSIFICATION:
                outputs.append(result.logits.float().numpy())
            else:
                outputs.append(mean_pool(result.last_hidden_state.float().numpy(), batch.attention_mask))
    return np.concatenate(outputs, axis=0)


def compare_classification(
    reference: np.ndarray,
    candidate: np.ndarray,
    thresholds: GateThresholds,
    true_labels: Sequence[int] | None = None,
) -> ParityReport:
    """Label agreement, logit differences and, given the true labels, accuracy of both models."""
    ref_top, cand_top = reference.argmax(axis=-1), candidate.argmax(axis=-1)
    diff = np.abs(reference - candidate)
    figures: dict[str, float | None] = {
        "agreement": float(np.mean(ref_top == cand_top)),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "accuracy_fp32": None,
        "accuracy_int8": None,
        "accuracy_drop_points": None,
    }
    report = ParityReport(task=TEXT_CLASSIFICATION, texts=len(reference), figures=figures)
    agreement = figures["agreement"]
    assert agreement is not None
    if agreement < thresholds.min_agreement:
        report.failures.append(
            f"label agreement {agreement:.4f} is under min_agreement {thresholds.min_agreement}"
        )
    if true_labels is not None:
        truth = np.asarray(true_labels)
        accuracy_fp32 = float(np.mean(ref_top == truth))
        accuracy_int8 = float(np.mean(cand_top == truth))
        drop = (accuracy_fp32 - accuracy_int8) * 100.0
        figures.update(accuracy_fp32=accuracy_fp32, accuracy_int8=accuracy_int8, accuracy_drop_points=drop)
        if drop > thresholds.max_accuracy_drop + _EPSILON:  # 99/100 vs 100/100 is 1.0000000000000009 points
            report.failures.append(
                f"int8 accuracy {accuracy_int8:.4f} is {drop:.2f} points under fp32 {accuracy_fp32:.4f} "
                f"(max_accuracy_drop {thresholds.max_accuracy_drop})"
            )
    return report


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray, thresholds: GateThresholds) -> ParityReport:
    """Cosine between each text's fp32 and int8 vectors: the worst and the mean."""
    cosine = np.sum(l2_normalize(reference) * l2_normalize(candidate), axis=-1)
    figures: dict[str, float | None] = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}
    report = ParityReport(task="feature-extraction", texts=len(reference), figures=figures)
    if float(cosine.min()) < thresholds.min_cosine:
        report.failures.append(
            f"minimum cosine {float(cosine.min()):.4f} is under min_cosine {thresholds.min_cosine} "
            f"(mean {float(cosine.mean()):.4f})"
        )
    return report
