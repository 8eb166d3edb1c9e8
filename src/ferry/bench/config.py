"""What one `ferry bench` run measures, validated before anything runs, with two presets: the full run and
``quick`` (a few repeats, a small accuracy sample, a tiny load test) that the tests use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ferry.bench.exceptions import InvalidBenchConfigError
from ferry.bench.prices import Prices

DEFAULT_MODEL = "sentiment"
DEFAULT_LAYERS_DIR = Path("layers/model")
DEFAULT_SOURCES_DIR = Path("build/models")  # the fp32 source of model NAME: build/models/NAME (`ferry train`'s --out)
DEFAULT_OUT = Path("build/bench")
DEFAULT_THREADS = (1, 2)  # Lambda gives about one vCPU per 1,769 MB: one thread below that, two above
DEFAULT_MEMORY_MB = (1024, 1769, 2048, 3008)
LAMBDA_MEMORY_MB = (128, 10240)  # what Lambda accepts


@dataclass(frozen=True)
class Preset:
    """The counts a run uses unless given: how many timed calls per shape, rounds of every candidate's latency
    processes (their timings pooled: a machine that is shared slows one process at a time), fresh processes for the
    cold start, test rows for the accuracy (0: all of them) and the load test's bounds."""

    repeats: int
    rounds: int
    cold_runs: int
    accuracy_rows: int
    load_requests: int
    load_seconds: float
    load_clients: int


FULL = Preset(repeats=100, rounds=2, cold_runs=3, accuracy_rows=0, load_requests=2000, load_seconds=30.0,
              load_clients=2)
QUICK = Preset(repeats=5, rounds=1, cold_runs=0, accuracy_rows=32, load_requests=16, load_seconds=10.0,
               load_clients=2)


@dataclass(frozen=True)
class BenchConfig:
    """One run of the bench. Counts left None take the preset's (:data:`FULL`, or :data:`QUICK` with `quick`).

    `source` is the fp32 Hugging Face folder the layer was built from (default ``build/models/<model>``); `data`
    the labelled test split (default: the source's ``predictions/test.jsonl``, else the bundled tweets' test
    split); `root` the project folder (its ``template.yaml`` and ``functions/``: the handler and the local stack).
    """

    model: str = DEFAULT_MODEL
    layers_dir: Path = DEFAULT_LAYERS_DIR
    source: Path | None = None
    out: Path = DEFAULT_OUT
    data: Path | None = None
    root: Path = Path(".")
    quick: bool = False
    repeats: int | None = None
    rounds: int | None = None
    cold_runs: int | None = None
    accuracy_rows: int | None = None
    threads: tuple[int, ...] = DEFAULT_THREADS
    load_requests: int | None = None
    load_seconds: float | None = None
    load_clients: int | None = None
    memory_mb: tuple[int, ...] = DEFAULT_MEMORY_MB
    prices: Prices = field(default_factory=Prices)

    def __post_init__(self) -> None:
        positive = {"repeats": self.repeats, "rounds": self.rounds, "load_requests": self.load_requests,
                    "load_clients": self.load_clients,
                    "load_seconds": self.load_seconds}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise InvalidBenchConfigError(f"must be at least 1, got {value}", field=name)
        for name, value in {"cold_runs": self.cold_runs, "accuracy_rows": self.accuracy_rows}.items():
            if value is not None and value < 0:
                raise InvalidBenchConfigError(f"must be 0 or more, got {value}", field=name)
        if not self.threads or any(count < 1 for count in self.threads):
            raise InvalidBenchConfigError(f"must be thread counts of at least 1, got {self.threads}", field="threads")
        low, high = LAMBDA_MEMORY_MB
        if not self.memory_mb or any(not low <= size <= high for size in self.memory_mb):
            raise InvalidBenchConfigError(f"must be Lambda memory sizes from {low} to {high} MB, got {self.memory_mb}",
                                          field="memory_mb")

    @property
    def preset(self) -> Preset:
        return QUICK if self.quick else FULL

    def count(self, name: str) -> int:
        """A count of the run: the one given, else the preset's."""
        value = getattr(self, name)
        return int(getattr(self.preset, name) if value is None else value)

    @property
    def warmup(self) -> int:
        """Untimed calls before each shape's timed ones."""
        return max(2, self.count("repeats") // 10)

    @property
    def seconds(self) -> float:
        return float(self.preset.load_seconds if self.load_seconds is None else self.load_seconds)

    @property
    def source_dir(self) -> Path:
        return self.source if self.source is not None else DEFAULT_SOURCES_DIR / self.model
