"""The texts of the drift scenario (../shared/DRIFT.md): a classifier trained on the bundled tweets without the
Coachella topic, then served that topic.

`python demos/drift_data.py fixture MODEL_LAYER OUT` writes the suite's fixture: the int8 model's recorded outputs
(confidence, predicted label, token length, correct) on its validation split (the reference), its test split (in
domain) and the Coachella tweets (the shift). Numbers only, no weights: the statistics tests run on the real
scenario without training a model.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ferry.data.corpus import BINARY, load_corpus
from ferry.data.dataset import normalize_text
from ferry.data.readers import read_examples
from ferry.data.topics import topic_of

SHIFT_TOPIC = "coachella"


def split_rows(model_dir: Path, split: str) -> list[tuple[str, str]]:
    """(text, label) of a split the trainer wrote (predictions/<split>.jsonl), in its order."""
    return [(e.text, str(e.label)) for e in read_examples(model_dir / "predictions" / f"{split}.jsonl")]


def topic_rows(topic: str = SHIFT_TOPIC, labels: tuple[str, ...] = BINARY) -> list[tuple[str, str]]:
    """(text, label) of every tweet of `topic`, near-copies merged (first one kept), in corpus order."""
    corpus = load_corpus(labels=labels)
    seen: set[str] = set()
    rows = []
    for example in corpus.examples:
        key = normalize_text(example.text)
        if topic_of(example.text) == topic and key not in seen:
            seen.add(key)
            rows.append((example.text, str(example.label)))
    return rows


def outputs(predictor: Any, rows: list[tuple[str, str]]) -> dict[str, list[Any]]:
    """What the served model records for each row: confidence, predicted label index, token length, correct."""
    labels = list(predictor.manifest.labels)
    confidence: list[float] = []
    predicted: list[int] = []
    lengths: list[int] = []
    for start in range(0, len(rows), 64):
        batch = predictor.encode([text for text, _ in rows[start:start + 64]])
        probabilities = predictor.scores(predictor.forward(batch))
        confidence.extend(round(float(value), 5) for value in probabilities.max(axis=-1))
        predicted.extend(int(value) for value in probabilities.argmax(axis=-1))
        lengths.extend(batch.token_lengths)
    correct = [int(labels[guess] == label) for guess, (_, label) in zip(predicted, rows, strict=True)]
    return {"confidence": confidence, "predicted": predicted, "token_length": lengths, "correct": correct}


def write_fixture(layer: Path, model_dir: Path, out: Path) -> dict[str, float]:
    from ferry.runtime import Predictor

    predictor = Predictor.load(layer)
    parts = {"reference": split_rows(model_dir, "validation"), "in_domain": split_rows(model_dir, "test"),
             "shifted": topic_rows()}
    document: dict[str, Any] = {"labels": list(predictor.manifest.labels), "model_version": predictor.version,
                                "note": "MiniLM fine-tuned 600 steps on the bundled tweets without Coachella "
                                        "(demos/drift_data.py); int8 outputs"}
    accuracy = {}
    for name, rows in parts.items():
        document[name] = outputs(predictor, rows)
        accuracy[name] = float(np.mean(document[name]["correct"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as handle:
        json.dump(document, handle, separators=(",", ":"))
    return accuracy


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "fixture":
        sys.exit("usage: python demos/drift_data.py fixture MODEL_LAYER TRAINED_MODEL_DIR OUT.json.gz")
    print(write_fixture(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
