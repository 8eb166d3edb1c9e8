"""The training report: what `ferry train` did and how well the model it wrote classifies, as one typed contract.

The trainer builds a :class:`TrainingReport` and writes ``to_dict()`` beside the model
(``training_report.json``); the build reads it back (``load``) to record its headline figures in the layer's
manifest, and the registry will keep it whole. Reading validates every field it knows and names the field when
one is wrong. Reports written before the contract had a version hold no ``schema_version`` and read as
version 1, which they are. Keys this version does not know are kept in ``unknown`` and written back.

Imports nothing heavy: the build and the registry read reports without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ferry.metrics import ClassificationMetrics
from ferry.runtime.fields import JsonFields
from ferry.runtime.manifest import TrainingSummary
from ferry.train.exceptions import TrainingReportError

TRAINING_REPORT_FILE = "training_report.json"  # written beside the trained model
TRAINING_REPORT_SCHEMA_VERSION = 1
SPLITS = ("train", "validation", "test")
REQUIRED_SPLITS = ("validation", "test")  # the figures the manifest records; `train` is a sample, optional
_DIGITS = 4  # the manifest's figures are rounded to this many decimals


def report_path(model_dir: Path) -> Path:
    """Where the report of a model trained by `ferry train` sits: beside its weights."""
    return model_dir / TRAINING_REPORT_FILE


@dataclass(frozen=True)
class ValidationPoint:
    """One validation pass during training: the step, the mean training loss since the last pass, and the
    accuracy and macro-F1 on the validation sample."""

    step: int
    loss: float
    validation_accuracy: float
    validation_macro_f1: float
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self.loss, "validation_accuracy": self.validation_accuracy,
                "validation_macro_f1": self.validation_macro_f1, "elapsed_s": self.elapsed_s}

    @classmethod
    def from_fields(cls, fields: JsonFields) -> ValidationPoint:
        fields.require("step", "loss", "validation_accuracy", "validation_macro_f1")
        return cls(
            step=fields.required_integer("step"),
            loss=fields.required_number("loss"),
            validation_accuracy=fields.required_number("validation_accuracy"),
            validation_macro_f1=fields.required_number("validation_macro_f1"),
            elapsed_s=fields.number("elapsed_s") or 0.0,
        )


@dataclass(frozen=True)
class TrainingReport:
    """What one `ferry train` run did and measured.

    ``splits`` holds the final model's figures on each split: ``validation`` and ``test`` whole (or capped by
    ``max_eval_texts``), ``train`` on a sample (``train_split_note`` says how many). ``stopped_early`` says why
    the run planned fewer steps than asked, or is None.
    """

    base: str
    data: str
    labels: tuple[str, ...]
    steps: int
    best_step: int
    wall_seconds: float
    splits: Mapping[str, ClassificationMetrics]
    stopped_early: str | None = None
    dataset: Mapping[str, Any] = field(default_factory=dict)  # stats, counts per split, train rows used
    config: Mapping[str, Any] = field(default_factory=dict)  # the TrainConfig, as JSON values
    history: tuple[ValidationPoint, ...] = ()
    prior_correction: Mapping[str, Any] = field(default_factory=dict)
    train_split_note: str | None = None
    threads: int | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)  # keys of a newer writer, kept for the round trip

    schema_version: ClassVar[int] = TRAINING_REPORT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The report as `ferry train` writes it (and as ``from_dict`` reads it back, unchanged)."""
        data = {
            "schema_version": TRAINING_REPORT_SCHEMA_VERSION,
            "base": self.base,
            "data": self.data,
            "labels": list(self.labels),
            "dataset": dict(self.dataset),
            "config": dict(self.config),
            "steps": self.steps,
            "best_step": self.best_step,
            "stopped_early": self.stopped_early,
            "history": [point.to_dict() for point in self.history],
            "prior_correction": dict(self.prior_correction),
            "splits": {name: metrics.to_dict() for name, metrics in self.splits.items()},
            "train_split_note": self.train_split_note,
            "wall_seconds": self.wall_seconds,
            "threads": self.threads,
        }
        return {**data, **{key: value for key, value in self.unknown.items() if key not in data}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "training report") -> TrainingReport:
        """Validate a report as read from JSON; every error is a TrainingReportError naming ``source`` and the
        field."""
        fields = JsonFields(data, source, error=TrainingReportError)
        version = fields.raw("schema_version")
        if version is not None and version != TRAINING_REPORT_SCHEMA_VERSION:
            raise TrainingReportError(
                f"{source}: schema_version {version!r} is not supported (this version of ferry reads "
                f"{TRAINING_REPORT_SCHEMA_VERSION}); read it with the version of ferry that wrote it"
            )
        fields.require("base", "data", "labels", "steps", "wall_seconds", "splits")
        labels = fields.texts("labels")
        if len(labels) < 2:
            raise fields.error("labels", "a list of at least two labels")
        splits_fields = fields.nested("splits")
        missing = [name for name in REQUIRED_SPLITS if name not in splits_fields.data]
        if missing:
            raise splits_fields.fail(f"no figures for the {' and '.join(missing)} split(s)")
        splits = {
            name: ClassificationMetrics.from_dict(value, source, splits_fields.path(name), error=TrainingReportError)
            for name, value in splits_fields.data.items()
        }
        history = fields.raw("history") or []
        if not isinstance(history, list):
            raise fields.error("history", "a list of validation passes")
        steps = fields.required_integer("steps")
        return cls(
            base=fields.required_text("base"),
            data=fields.required_text("data"),
            labels=labels,
            steps=steps,
            best_step=fields.integer("best_step") or 0,
            wall_seconds=fields.required_number("wall_seconds"),
            splits=splits,
            stopped_early=fields.text("stopped_early"),
            dataset=fields.obj("dataset") or {},
            config=fields.obj("config") or {},
            history=tuple(
                ValidationPoint.from_fields(JsonFields(point, source, f"history[{index}]", error=TrainingReportError))
                for index, point in enumerate(history)
            ),
            prior_correction=fields.obj("prior_correction") or {},
            train_split_note=fields.text("train_split_note"),
            threads=fields.integer("threads", minimum=1),
            unknown=fields.unknown(),
        )

    @classmethod
    def load(cls, model_dir: Path) -> TrainingReport:
        """The report beside a trained model; a TrainingReportError when it is missing or malformed."""
        path = report_path(model_dir)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TrainingReportError(f"{path}: no training report; was {model_dir} trained by ferry?") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TrainingReportError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrainingReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        return cls.from_dict(data, source=str(path))

    def save(self, model_dir: Path) -> Path:
        path = report_path(model_dir)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def summary(self) -> TrainingSummary:
        """The headline figures the layer's manifest records (rounded: they are for people and the registry)."""
        validation, test = self.splits["validation"], self.splits["test"]
        return TrainingSummary(
            base=self.base,
            data=self.data,
            steps=self.steps,
            wall_seconds=self.wall_seconds,
            validation_accuracy=round(validation.accuracy, _DIGITS),
            validation_macro_f1=round(validation.macro_f1, _DIGITS),
            test_accuracy=round(test.accuracy, _DIGITS),
            test_macro_f1=round(test.macro_f1, _DIGITS),
            test_recall={label: round(recall, _DIGITS) for label, recall in test.recall().items()},
        )
