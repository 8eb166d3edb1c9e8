"""Settings of a fine-tuning run, validated once. Defaults are the recipe measured on the tweets (STACK.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ferry.data.dataset import BUNDLED, DEFAULT_FRACTIONS
from ferry.data.topics import check_topics
from ferry.train.exceptions import InvalidTrainConfigError, TrainError

# the errors too: their former home
__all__ = ["SAMPLINGS", "SELECTIONS", "InvalidTrainConfigError", "TrainConfig", "TrainError"]

SAMPLINGS = ("natural", "balanced")  # shuffled epochs, or classes drawn uniformly (the prior corrected at the end)
SELECTIONS = ("best", "last")  # the checkpoint kept: the best validation accuracy, or the last step's


@dataclass(frozen=True)
class TrainConfig:
    base: str  # a local Hugging Face folder or a packaged hub id
    data: str  # "default" (BUNDLED: the bundled tweets) or a CSV/JSONL file
    out: Path
    neutral: bool = False  # bundled tweets: three classes instead of negative/positive
    labels: tuple[str, ...] | None = None  # a user file: the closed set of labels, in this order
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = 64  # tweets: median 33 tokens, p99 60
    steps: int = 880
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_grad_norm: float = 1.0
    min_confidence: float | None = 0.6  # training rows below it are dropped (rows without one are kept)
    validations: int = 3  # validation passes during training (the last one at the final step)
    freeze_embeddings: bool = True  # the word embedding table: half of MiniLM's weights, and its optimizer cost
    sampling: str = "natural"  # "natural" (shuffled epochs) or "balanced" (classes drawn uniformly)
    frozen_layers: int = 2  # the lowest encoder layers stay as pre-trained: a quarter less work a step
    train_eval_texts: int = 300  # the train split's figures are measured on this many of its texts
    max_train_texts: int | None = None  # a slice, for quick runs
    max_validation_texts: int | None = 800  # validation passes during training use a sample this large
    max_eval_texts: int | None = None  # cap on test texts (and the final validation), for quick runs
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    exclude_topics: tuple[str, ...] = ()  # topics of ferry.data.topics left out of every split (the drift demo)
    # An update (ferry.update): labelled feedback (a CSV/JSONL of text and label) split by the data's hash rule;
    # its train split is mixed into every batch, `feedback_share` of it, classes drawn uniformly (the feedback's
    # own label mix is the new topic's prior, which a model must not learn); its other splits are held out.
    feedback_data: str | None = None
    feedback_share: float = 0.5
    replay_texts: int | None = None  # a seeded random sample of the data's train split (the replay), or all
    select: str = "best"  # "last" keeps the final step (an update: validation is the old domain's alone)

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "max_length": self.max_length,
                    "validations": self.validations}
        for name, value in positive.items():
            if value < 1:
                raise InvalidTrainConfigError(f"must be positive, got {value}", field=name)
        if not 0 < self.learning_rate < 1:
            raise InvalidTrainConfigError(f"must be in (0, 1), got {self.learning_rate}", field="learning_rate")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InvalidTrainConfigError(f"must be positive, got {self.max_minutes}", field="max_minutes")
        if self.sampling not in SAMPLINGS:
            raise InvalidTrainConfigError(f"must be {' or '.join(SAMPLINGS)}, got {self.sampling!r}", field="sampling")
        if self.frozen_layers < 0:
            raise InvalidTrainConfigError(f"must be >= 0, got {self.frozen_layers}", field="frozen_layers")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise InvalidTrainConfigError(f"must be in [0, 1], got {self.min_confidence}", field="min_confidence")
        self._check_update()
        object.__setattr__(self, "exclude_topics", _topics(self.exclude_topics))
        if self.out.exists() and not self.out.is_dir():
            raise InvalidTrainConfigError(f"{self.out} exists and is not a folder", field="out")
        if self.data != BUNDLED and not Path(self.data).exists():
            raise InvalidTrainConfigError(
                f"{self.data}: no such file (or use {BUNDLED!r}, the bundled tweets)", field="data"
            )

    def _check_update(self) -> None:
        """The settings of an update's training (feedback, replay, the checkpoint kept)."""
        if not 0 < self.feedback_share < 1:
            raise InvalidTrainConfigError(f"must be in (0, 1), got {self.feedback_share}", field="feedback_share")
        if self.select not in SELECTIONS:
            raise InvalidTrainConfigError(f"must be {' or '.join(SELECTIONS)}, got {self.select!r}", field="select")
        if self.replay_texts is not None and self.replay_texts < 1:
            raise InvalidTrainConfigError(f"must be positive, got {self.replay_texts}", field="replay_texts")
        if self.feedback_data is not None and not Path(self.feedback_data).is_file():
            raise InvalidTrainConfigError(f"{self.feedback_data}: no such file", field="feedback_data")


def _topics(names: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return check_topics(names)
    except ValueError as exc:
        raise InvalidTrainConfigError(str(exc), field="exclude_topics") from None
