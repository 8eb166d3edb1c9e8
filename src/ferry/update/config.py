"""Settings of an update (:mod:`ferry.update`): when it may run, how the candidate trains, how the canary is judged.

Defaults are the recipe measured on the real drift (../shared/DRIFT.md, docs/updates.md): a warm start from the
live model, 150 steps at a lower learning rate, half of each batch feedback with its classes drawn uniformly, the
rest a replay of the live model's own training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ferry.runtime.examples import MIN_LABELS, MIN_PER_LABEL
from ferry.update.exceptions import InvalidUpdateConfigError


@dataclass(frozen=True)
class UpdateConfig:
    # when: an update needs enough labelled feedback to train on and to hold out from (the gate's feedback slice)
    min_labels: int = MIN_LABELS
    min_per_label: int = MIN_PER_LABEL  # each label of the model, among the feedback's examples
    # the candidate's training (ferry.train.TrainConfig's fields of the same names)
    steps: int = 150
    learning_rate: float = 5e-5
    warmup_steps: int = 20
    feedback_share: float = 0.5
    replay_texts: int | None = None
    max_minutes: float | None = None
    seed: int = 0
    # the gate's file (ferry.runtime.gate); None: the project's gate.json when there is one, else the default
    gate: Path | None = None
    # the parity gate of the candidate's build (ferry.layer.GateThresholds' fields; empty: the build's defaults)
    parity: Mapping[str, float] = field(default_factory=dict)
    # the canary: its share of traffic, how long it bakes, how many of its requests the judge wants at least
    canary_weight: float = 0.1
    canary_seconds: float = 120.0
    canary_min_requests: int = 20
    poll_seconds: float = 2.0
    # the update lock's lease: renewed while the update runs, so a killed update blocks the next for this long
    lease_seconds: float = 120.0
    work: Path = Path("build/updates")  # each update's files: build/updates/<model>/<update id>/
    store: Path = Path("build/registry")  # each registered version's layer and fp32 model: <store>/<model>/<version>/

    def __post_init__(self) -> None:
        positive = {"min_labels": self.min_labels, "steps": self.steps, "canary_min_requests": self.canary_min_requests}
        for name, value in positive.items():
            if value < 1:
                raise InvalidUpdateConfigError(f"must be positive, got {value}", field=name)
        if self.min_per_label < 0:
            raise InvalidUpdateConfigError(f"must be >= 0, got {self.min_per_label}", field="min_per_label")
        if not 0 < self.canary_weight < 1:
            raise InvalidUpdateConfigError(f"must be in (0, 1), got {self.canary_weight}", field="canary_weight")
        for name, seconds in {"canary_seconds": self.canary_seconds, "poll_seconds": self.poll_seconds,
                              "lease_seconds": self.lease_seconds}.items():
            if seconds <= 0:
                raise InvalidUpdateConfigError(f"must be positive, got {seconds}", field=name)
        if self.gate is not None and not self.gate.is_file():
            raise InvalidUpdateConfigError(f"{self.gate}: no such file", field="gate")
