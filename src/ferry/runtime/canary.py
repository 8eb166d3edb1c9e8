"""The canary's judge: a new version serving a share of the traffic, compared with the incumbent beside it.

A canary gets few labels in minutes, so it is judged by what every request tells: its server errors and its
latency against the incumbent's over the same minutes, as the alarms CodeDeploy watches in AWS do (the API's 5xx
share, its p95 latency). An alarm ends the canary at once (rolled back); without one, it goes live when its time
is up, as CodeDeploy's canary deployment does.

- **errors**: an alarm when the canary's 5xx share exceeds the incumbent's by more than ``max_error_gap`` and at
  least two of its requests failed (one failure in ten requests is not a rate);
- **latency**: an alarm when its p95 exceeds ``latency_factor`` times the incumbent's plus ``latency_slack_ms``
  (judged once it has ``min_requests``);
- **estimated accuracy** (label-free: each version's calibration applied to its captured confidences, as the
  monitor estimates it): an alarm when the canary's is under the incumbent's by more than ``max_estimate_drop``,
  both on ``min_requests`` captured predictions at least. The two see the same traffic (a random split).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_ERROR_GAP = 0.02
LATENCY_FACTOR = 2.0
LATENCY_SLACK_MS = 50.0
MAX_ESTIMATE_DROP = 0.05


@dataclass(frozen=True)
class Traffic:
    """What one version answered since the canary started."""

    requests: int = 0
    errors_5xx: int = 0
    errors_4xx: int = 0
    latencies_ms: Sequence[float] = field(default_factory=tuple)

    @property
    def error_rate(self) -> float:
        return self.errors_5xx / self.requests if self.requests else 0.0

    @property
    def p50_ms(self) -> float | None:
        return self.percentile(50)

    @property
    def p95_ms(self) -> float | None:
        return self.percentile(95)

    def percentile(self, q: float) -> float | None:
        """The `q`th percentile (0..100) of the latencies, interpolated between the two nearest; None without any."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))

    def to_dict(self) -> dict[str, Any]:
        p95 = self.p95_ms
        return {"requests": self.requests, "errors_5xx": self.errors_5xx, "errors_4xx": self.errors_4xx,
                "error_rate": round(self.error_rate, 4), "p95_ms": None if p95 is None else round(p95, 1)}


@dataclass(frozen=True)
class CanaryVerdict:
    passed: bool  # go live (when final) / keep baking; False: roll back
    alarm: bool  # an alarm fired: decided now, whatever the time
    final: bool  # the canary's time is up (or an alarm ended it)
    why: str
    figures: dict[str, Any]


@dataclass(frozen=True)
class Estimate:
    """A version's estimated accuracy over its captured predictions since the canary started."""

    accuracy: float
    rows: int


def judge(primary: Traffic, canary: Traffic, *, min_requests: int = 20, final: bool = False,
          estimates: Mapping[str, Estimate] | None = None, max_error_gap: float = MAX_ERROR_GAP,
          latency_factor: float = LATENCY_FACTOR, latency_slack_ms: float = LATENCY_SLACK_MS,
          max_estimate_drop: float = MAX_ESTIMATE_DROP) -> CanaryVerdict:
    """The verdict on the canary's traffic so far (`final`: its time is up); `estimates` by "primary" and
    "canary", when the captures give them."""
    figures: dict[str, Any] = {"primary": primary.to_dict(), "canary": canary.to_dict()}
    estimates = estimates or {}
    for side, estimate in estimates.items():
        figures[side]["estimated_accuracy"] = round(estimate.accuracy, 4)
        figures[side]["estimated_rows"] = estimate.rows
    if canary.errors_5xx >= 2 and canary.error_rate > primary.error_rate + max_error_gap:
        return CanaryVerdict(False, True, True, f"error alarm: the canary answered {canary.errors_5xx} of "
                             f"{canary.requests} requests with a 5xx ({canary.error_rate:.1%}) against "
                             f"{primary.error_rate:.1%} for the incumbent", figures)
    canary_p95, primary_p95 = canary.p95_ms, primary.p95_ms
    if canary.requests >= min_requests and canary_p95 is not None and primary_p95 is not None:
        limit = latency_factor * primary_p95 + latency_slack_ms
        if canary_p95 > limit:
            return CanaryVerdict(False, True, True, f"latency alarm: the canary's p95 {canary_p95:.0f} ms is over "
                                 f"{limit:.0f} ms ({latency_factor:g} x the incumbent's {primary_p95:.0f} ms + "
                                 f"{latency_slack_ms:g})", figures)
    old, new = estimates.get("primary"), estimates.get("canary")
    if old is not None and new is not None and min(old.rows, new.rows) >= min_requests \
            and new.accuracy < old.accuracy - max_estimate_drop:
        return CanaryVerdict(False, True, True, f"estimated-accuracy alarm: the canary's {new.accuracy:.3f} over "
                             f"{new.rows} predictions is under the incumbent's {old.accuracy:.3f} by more than "
                             f"{max_estimate_drop:g}", figures)
    if not final:
        return CanaryVerdict(True, False, False, f"baking: {canary.requests} canary requests so far", figures)
    return CanaryVerdict(True, False, True, f"the canary held: {canary.requests} requests, {canary.errors_5xx} "
                         f"server errors, p95 {_ms(canary_p95)} against the incumbent's {_ms(primary_p95)}", figures)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"
