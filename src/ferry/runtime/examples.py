"""The labelled examples an update learns from: each label of the feedback table with the text it labels.

A label names a prediction; the text is the label's own (``text`` sent with the feedback) or the capture's (kept
only when the stack runs with ``CaptureText`` on). A label with neither cannot be learned from: it is counted,
never guessed at. The examples are copied out of both tables (whose items expire) into a JSONL file that the
update keeps with the candidate (:func:`write_examples`), so that a version's training set outlives the tables'
time to live.

Runs in Lambda too (the update's first step): boto3 and the standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.runtime.aws import batch_get
from ferry.runtime.monitor import query_range

__all__ = ["MIN_LABELS", "MIN_PER_LABEL", "Example", "ExampleSet", "labelled_examples", "read_examples_file",
           "too_few", "write_examples"]

_FOREVER_MS = 2**62
# An update trains on the feedback and holds some out for its gate: at detection there may be 150 labels, too few
# for both. It waits for this many labelled examples since the windows that fired, and this many of each label.
MIN_LABELS = 600
MIN_PER_LABEL = 40


@dataclass(frozen=True)
class Example:
    """One labelled text: what the trainer reads (``text``, ``label``) and where it came from."""

    text: str
    label: str
    prediction_id: str
    version: str
    epoch_ms: int
    sampled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "prediction_id": self.prediction_id,
                "version": self.version, "epoch_ms": self.epoch_ms, "sampled": self.sampled}


@dataclass
class ExampleSet:
    """The examples of one model, oldest first, and what was left out and why."""

    model: str
    examples: list[Example] = field(default_factory=list)
    labels_read: int = 0
    without_text: int = 0  # labels whose text neither the feedback nor a capture kept

    def by_label(self) -> dict[str, int]:
        return dict(Counter(example.label for example in self.examples))

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "labels_read": self.labels_read, "examples": len(self.examples),
                "without_text": self.without_text, "by_label": self.by_label()}


def labelled_examples(feedback: Any, captures: Any, model: str, versions: Iterable[str], *,
                      since_ms: int = 0, until_ms: int = _FOREVER_MS) -> ExampleSet:
    """Every label of `model`'s `versions` given after `since_ms` (up to `until_ms`), with its text.

    `feedback` and `captures` are boto3 Table resources of the feedback and capture tables; each version's labels
    are read from the feedback table's index by model and time (no scan)."""
    found = ExampleSet(model)
    items: list[dict[str, Any]] = []
    for version in dict.fromkeys(versions):
        items.extend(query_range(feedback, f"{model}#{version}", since_ms, until_ms))
    items.sort(key=lambda item: (int(item["epoch_ms"]), str(item["prediction_id"])))
    found.labels_read = len(items)
    texts = _capture_texts(captures, [str(item["prediction_id"]) for item in items if not item.get("text")])
    for item in items:
        prediction_id = str(item["prediction_id"])
        text = item.get("text") or texts.get(prediction_id)
        if not text:
            found.without_text += 1
            continue
        found.examples.append(Example(text=str(text), label=str(item["label"]), prediction_id=prediction_id,
                                      version=str(item["version"]), epoch_ms=int(item["epoch_ms"]),
                                      sampled=bool(item.get("sampled"))))
    return found


def _capture_texts(captures: Any, ids: Sequence[str]) -> dict[str, str]:
    """The captured text of each of `ids` that has one (a capture without text: CaptureText was off)."""
    if not ids:
        return {}
    keys = [{"prediction_id": prediction_id} for prediction_id in dict.fromkeys(ids)]
    items, left = batch_get(captures.meta.client, captures.name, keys, projection="prediction_id, #text",
                            names={"#text": "text"})
    if left:
        raise RuntimeError(f"the capture table did not serve {left} of {len(keys)} keys after retries; run again")
    return {str(item["prediction_id"]): str(item["text"]) for item in items if item.get("text")}


def write_examples(examples: Sequence[Example], path: Path) -> Path:
    """The examples as JSONL (one object a line, what `ferry train --feedback-data` reads), written whole: a
    temporary file in the same folder, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for example in examples:
                out.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_examples_file(path: Path) -> list[Example]:
    """The examples :func:`write_examples` wrote."""
    examples = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            value: Mapping[str, Any] = json.loads(line)
            examples.append(Example(text=str(value["text"]), label=str(value["label"]),
                                    prediction_id=str(value["prediction_id"]), version=str(value["version"]),
                                    epoch_ms=int(value["epoch_ms"]), sampled=bool(value.get("sampled"))))
    return examples


def too_few(found: ExampleSet, recent: Sequence[Any], labels: Sequence[str], min_labels: int = MIN_LABELS,
            min_per_label: int = MIN_PER_LABEL) -> str | None:
    """Why the examples cannot make an update yet, or None when they can: no example at all; fewer than
    `min_labels` `recent` ones (since the trigger); fewer than `min_per_label` of one of the model's `labels`.
    The one rule of the local update (:mod:`ferry.update.steps`) and the cloud's (:mod:`ferry.runtime.update_task`)."""
    if not found.examples:
        return (f"no labelled feedback with its text ({found.labels_read} labels read, {found.without_text} "
                "without text: send the text with each label or deploy with CaptureText on)")
    if len(recent) < min_labels:
        return f"{len(recent)} labelled examples since the trigger, fewer than the {min_labels} an update needs"
    counts = found.by_label()
    short = [f"{label} {counts.get(label, 0)}" for label in labels if counts.get(label, 0) < min_per_label]
    if short:
        return f"too few examples of {', '.join(short)} (at least {min_per_label} each)"
    return None
