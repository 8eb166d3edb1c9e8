"""The manifest of a model folder: what the model is, and the sha256 of every file it is made of.

A model folder (see :mod:`ferry.runtime.layout`) holds ``manifest.json``, ``model.onnx`` and ``tokenizer.json``.
The manifest is the root of trust: every other file is verified against the sha256 it records.

:class:`Manifest` is the one contract of that file: `ferry build` constructs one and writes ``to_dict()``; the
runtime, the CLI and (later) the registry and the monitor read it back with ``from_dict``/``load``, which
validate every field they know and name the field when one is wrong. Keys this version does not know (a newer
writer's) are kept in ``unknown`` and written back unchanged. Schema version 1 is the only one: new fields are
added as optional ones, so that every layer already built keeps loading.

This module is shipped in the runtime layer: it imports nothing heavy (no numpy).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ferry.runtime import layout
from ferry.runtime.constants import (
    DEFAULT_MODELS_DIR,
    MANIFEST_FILE,
    MANIFEST_SCHEMA_VERSION,
    MODEL_FILE,
    MODEL_NAME_RE,
    TASKS,
    TEXT_CLASSIFICATION,
    TOKENIZER_FILE,
)
from ferry.runtime.exceptions import IntegrityError, ManifestError, ModelNotFoundError
from ferry.runtime.fields import JsonFields
from ferry.runtime.layout import layer_models_dirs

__all__ = [
    "Bins",
    "FileEntry",
    "LoadTimings",
    "Manifest",
    "ParityRecord",
    "ReferenceDistributions",
    "ReferenceSample",
    "TrainingSummary",
    "as_model_dir",
    "discover_models",
    "is_valid_name",
    "layer_models_dirs",
    "models_search_path",
    "resolve_model_dir",
    "sha256_file",
]

_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_valid_name(name: str) -> bool:
    return bool(MODEL_NAME_RE.fullmatch(name))


def _fields(data: Any, source: str, where: str = "") -> JsonFields:
    """A JSON object of a manifest, read with checks whose errors are ManifestErrors naming the field."""
    return JsonFields(data, source, where, error=ManifestError)


# --- the parts of a manifest that readers look inside ---------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of the model folder, as the build hashed it."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class TrainingSummary:
    """The headline figures of `ferry train`'s report, when `ferry train` made the model (the registry shows
    them; the full report stays beside the trained model)."""

    base: str
    data: str
    steps: int | None = None
    wall_seconds: float | None = None
    validation_accuracy: float | None = None
    validation_macro_f1: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    test_recall: Mapping[str, float] = field(default_factory=dict)
    unknown: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str = "training") -> TrainingSummary:
        fields = _fields(data, source, where)
        fields.require("base", "data")
        return cls(
            base=fields.required_text("base"),
            data=fields.required_text("data"),
            steps=fields.integer("steps"),
            wall_seconds=fields.number("wall_seconds"),
            validation_accuracy=fields.number("validation_accuracy"),
            validation_macro_f1=fields.number("validation_macro_f1"),
            test_accuracy=fields.number("test_accuracy"),
            test_macro_f1=fields.number("test_macro_f1"),
            test_recall=fields.number_map("test_recall") or {},
            unknown=fields.unknown(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "data": self.data,
            "steps": self.steps,
            "wall_seconds": self.wall_seconds,
            "validation_accuracy": self.validation_accuracy,
            "validation_macro_f1": self.validation_macro_f1,
            "test_accuracy": self.test_accuracy,
            "test_macro_f1": self.test_macro_f1,
            "test_recall": dict(self.test_recall),
            **self.unknown,
        }


# The figures the parity gate measures, by task, in the order the manifest lists them.
CLASSIFICATION_FIGURES = ("agreement", "max_abs_logit_diff", "mean_abs_logit_diff", "accuracy_fp32", "accuracy_int8",
                          "accuracy_drop_points")
EMBEDDING_FIGURES = ("min_cosine", "mean_cosine")


@dataclass(frozen=True)
class ParityRecord:
    """What the parity gate measured, int8 ONNX against fp32 PyTorch, and whether the build passed it.

    A classifier has the label figures (agreement, logit differences, and accuracies when the evaluation texts
    were labelled); an embedder has the cosine figures. ``thresholds`` are the gate's, as given to the build.
    """

    task: str
    texts: int
    passed: bool
    failures: tuple[str, ...] = ()
    agreement: float | None = None
    max_abs_logit_diff: float | None = None
    mean_abs_logit_diff: float | None = None
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    accuracy_drop_points: float | None = None
    min_cosine: float | None = None
    mean_cosine: float | None = None
    eval_data: str | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    unknown: Mapping[str, Any] = field(default_factory=dict)

    @property
    def figures(self) -> dict[str, float | None]:
        """The figures of this task, by name (None where not measured)."""
        names = CLASSIFICATION_FIGURES if self.task == TEXT_CLASSIFICATION else EMBEDDING_FIGURES
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str = "parity") -> ParityRecord:
        fields = _fields(data, source, where)
        fields.require("task", "texts", "passed")
        task, texts, passed = fields.raw("task"), fields.required_integer("texts"), fields.raw("passed")
        if task not in TASKS:
            raise fields.error("task", f"one of {', '.join(TASKS)}")
        if not isinstance(passed, bool):
            raise fields.error("passed", "true or false")
        figures = {name: fields.number(name) for name in (*CLASSIFICATION_FIGURES, *EMBEDDING_FIGURES)}
        return cls(
            task=task,
            texts=texts,
            passed=passed,
            failures=fields.texts("failures"),
            **figures,
            eval_data=fields.text("eval_data"),
            thresholds=fields.number_map("thresholds") or {},
            unknown=fields.unknown(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "texts": self.texts,
            **self.figures,
            "passed": self.passed,
            "failures": list(self.failures),
            "eval_data": self.eval_data,
            "thresholds": dict(self.thresholds),
            **self.unknown,
        }


@dataclass(frozen=True)
class Bins:
    """A distribution as quantile bins: ``edges`` (one more than ``counts``), the count in each bin, the number
    of values and their mean. The monitor compares live traffic with it."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    n: int
    mean: float | None = None

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str) -> Bins:
        fields = _fields(data, source, where)
        fields.require("edges", "counts", "n")
        edges, counts, n = fields.numbers("edges"), fields.counts("counts"), fields.required_integer("n")
        if len(edges) != len(counts) + 1:
            raise fields.fail(f"{len(edges)} edges for {len(counts)} counts; a bin lies between two edges")
        return cls(edges=edges, counts=counts, n=n, mean=fields.number("mean"))

    def to_dict(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts), "n": self.n, "mean": self.mean}


@dataclass(frozen=True)
class ReferenceSample:
    """The int8 model's outputs on a held-out split, row by row: what the monitor draws its null distributions
    from (drift thresholds from the spread between chunks of it) and calibrates confidences on.

    Per row: ``confidence`` (the top label's probability under the model's default function), ``predicted`` (the
    top label's index in the manifest's labels), ``token_length`` (before truncation) and, when the split was
    labelled, ``correct`` (1 or 0). ``accuracy`` is the share correct; ``source`` names the split's file. An
    embedder's sample has token lengths and ``norm`` (each pooled vector's length before normalizing). Kept to a
    few thousand rows (`ferry build` samples larger splits).
    """

    source: str
    token_length: tuple[int, ...]
    confidence: tuple[float, ...] = ()
    predicted: tuple[int, ...] = ()
    correct: tuple[int, ...] | None = None
    accuracy: float | None = None
    norm: tuple[float, ...] = ()  # an embedder's: each pooled vector's length before normalizing
    unknown: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.token_length)

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str = "reference.sample") -> ReferenceSample:
        fields = _fields(data, source, where)
        fields.require("source", "token_length")
        present = {name: fields.raw(name) is not None for name in ("confidence", "predicted", "correct", "norm")}
        rows_written = fields.integer("n")  # read before unknown(): written by to_dict, not a newer writer's key
        sample = cls(
            source=fields.required_text("source"),
            token_length=fields.counts("token_length"),
            confidence=fields.numbers("confidence") if present["confidence"] else (),
            predicted=fields.counts("predicted") if present["predicted"] else (),
            correct=fields.counts("correct") if present["correct"] else None,
            accuracy=fields.number("accuracy"),
            norm=fields.numbers("norm") if present["norm"] else (),
            unknown=fields.unknown(),
        )
        rows = sample.n
        if rows_written not in (None, rows):
            raise fields.error("n", f"the number of rows ({rows})")
        for name in ("confidence", "predicted", "correct", "norm"):
            values = getattr(sample, name)
            if values and len(values) != rows:
                raise fields.fail(f"{name} has {len(values)} values for {rows} rows (token lengths); one per row")
        if sample.correct is not None and any(value not in (0, 1) for value in sample.correct):
            raise fields.error("correct", "0 or 1 per row")
        return sample

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source, "n": self.n, "accuracy": self.accuracy,
                                "token_length": list(self.token_length)}
        if self.confidence:
            data["confidence"] = list(self.confidence)
            data["predicted"] = list(self.predicted)
        if self.correct is not None:
            data["correct"] = list(self.correct)
        if self.norm:
            data["norm"] = list(self.norm)
        return {**data, **{key: value for key, value in self.unknown.items() if key not in data}}


@dataclass(frozen=True)
class ReferenceDistributions:
    """What the evaluation texts looked like to the int8 model: token lengths, and for a classifier the top
    score and the share of each predicted label (the test split's, reported). ``sample`` and ``calibration``
    (a held-out split's rows, and the confidence -> P(correct) map fitted on them: ``ferry.runtime.stats``) are what
    the monitor tests live traffic against; absent from models built before the monitor existed."""

    token_length: Bins
    top_score: Bins | None = None
    label_share: Mapping[str, float] | None = None
    sample: ReferenceSample | None = None
    calibration: Mapping[str, Any] | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str = "reference") -> ReferenceDistributions:
        fields = _fields(data, source, where)
        fields.require("token_length")
        top_score = fields.raw("top_score")
        return cls(
            token_length=Bins.from_dict(fields.raw("token_length"), source, fields.path("token_length")),
            top_score=None if top_score is None else Bins.from_dict(top_score, source, fields.path("top_score")),
            label_share=fields.number_map("label_share"),
            sample=_optional(fields, "sample", ReferenceSample.from_dict),
            calibration=fields.obj("calibration"),
            unknown=fields.unknown(),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"token_length": self.token_length.to_dict()}
        if self.top_score is not None:
            data["top_score"] = self.top_score.to_dict()
        if self.label_share is not None:
            data["label_share"] = dict(self.label_share)
        if self.sample is not None:
            data["sample"] = self.sample.to_dict()
        if self.calibration is not None:
            data["calibration"] = dict(self.calibration)
        return {**data, **self.unknown}


@dataclass(frozen=True)
class LoadTimings:
    """Import and load time of the built model in a fresh process, measured by the build (seconds)."""

    import_s: float | None = None
    load_s: float | None = None
    first_prediction_s: float | None = None
    import_and_load_s: float | None = None
    heavy_modules: tuple[str, ...] = ()  # torch, transformers or optimum if the runtime pulled them in: none
    unknown: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str = "load") -> LoadTimings:
        fields = _fields(data, source, where)
        return cls(
            import_s=fields.number("import_s"),
            load_s=fields.number("load_s"),
            first_prediction_s=fields.number("first_prediction_s"),
            import_and_load_s=fields.number("import_and_load_s"),
            heavy_modules=fields.texts("heavy_modules"),
            unknown=fields.unknown(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "import_s": self.import_s,
            "load_s": self.load_s,
            "first_prediction_s": self.first_prediction_s,
            "heavy_modules": list(self.heavy_modules),
            "import_and_load_s": self.import_and_load_s,
            **self.unknown,
        }


# --- the manifest --------------------------------------------------------------------------------------------

# What GET /v1/models/{model} shows beyond the summary.
DESCRIBED = ("quantization", "graph", "parity", "training", "source", "arch", "created_at", "onnxruntime_version")


@dataclass(frozen=True)
class Manifest:
    """Everything `ferry build` records about a model; the runtime serves from the first fields.

    ``files`` is the root of trust (``verify``); ``parity``, ``reference`` and ``load_timings`` arrive as the
    build measures them (absent from a manifest written before the gate ran).
    """

    name: str
    version: str
    task: str
    max_length: int
    files: Mapping[str, FileEntry]
    labels: tuple[str, ...] = ()
    problem_type: str | None = None
    pooling: str | None = None  # "mean" for an embedder
    normalize_default: bool = False
    source: Mapping[str, Any] | None = None  # model, model_type, architectures, default_labels
    onnx: Mapping[str, Any] | None = None  # opset, inputs, outputs
    onnxruntime_version: str | None = None  # the version that built and checked the int8 model
    arch: str | None = None  # x86_64 or arm64: the quantization was chosen for it
    quantization: Mapping[str, Any] | None = None
    # the graph optimizations saved into model.onnx before quantization (hardware-neutral fusions), and what is
    # left to the session's load; absent from layers built before they were saved
    graph: Mapping[str, Any] | None = None
    training: TrainingSummary | None = None
    built_by: str | None = None
    created_at: str | None = None  # ISO 8601, UTC
    parity: ParityRecord | None = None
    reference: ReferenceDistributions | None = None
    load_timings: LoadTimings | None = None  # the manifest's "load"
    unknown: Mapping[str, Any] = field(default_factory=dict)  # keys of a newer writer, kept for the round trip

    schema_version: ClassVar[int] = MANIFEST_SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        """Validate a manifest as read from JSON; every error names ``source`` and the field."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object, got {type(data).__name__}")
        fields = _fields(data, source)
        schema = fields.raw("schema_version")
        if schema != MANIFEST_SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {schema!r} is not supported (this runtime reads "
                f"{MANIFEST_SCHEMA_VERSION}); rebuild the layer with this version of ferry"
            )
        fields.require("name", "version", "task", "max_length", "files")
        name, task, max_length = fields.raw("name"), fields.raw("task"), fields.raw("max_length")
        if not isinstance(name, str) or not is_valid_name(name):
            raise ManifestError(f"{source}: name {name!r} does not match {MODEL_NAME_RE.pattern}")
        if task not in TASKS:
            raise ManifestError(f"{source}: task {task!r} is not one of {', '.join(TASKS)}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ManifestError(f"{source}: max_length must be an integer >= 2, got {max_length!r}")
        version = fields.required_text("version")
        labels = fields.raw("labels") or []
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ManifestError(f"{source}: labels must be a list of strings")
        if task == TEXT_CLASSIFICATION and not labels:
            raise ManifestError(f"{source}: a text-classification manifest must list its labels")
        return cls(
            name=name,
            version=version,
            task=task,
            max_length=max_length,
            files=_parse_files(fields.raw("files"), source),
            labels=tuple(labels),
            problem_type=fields.text("problem_type"),
            pooling=fields.text("pooling"),
            normalize_default=fields.flag("normalize_default", False),
            source=fields.obj("source"),
            onnx=fields.obj("onnx"),
            onnxruntime_version=fields.text("onnxruntime_version"),
            arch=fields.text("arch"),
            quantization=fields.obj("quantization"),
            graph=fields.obj("graph"),
            training=_optional(fields, "training", TrainingSummary.from_dict),
            built_by=fields.text("built_by"),
            created_at=fields.text("created_at"),
            parity=_optional(fields, "parity", ParityRecord.from_dict),
            reference=_optional(fields, "reference", ReferenceDistributions.from_dict),
            load_timings=_optional(fields, "load", LoadTimings.from_dict),
            unknown=fields.unknown(),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as `ferry build` writes it (and as ``from_dict`` reads it back, unchanged)."""
        data: dict[str, Any] = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "labels": list(self.labels),
            "problem_type": self.problem_type,
            "max_length": self.max_length,
            "pooling": self.pooling,
            "normalize_default": self.normalize_default,
            "source": _plain(self.source),
            "files": {relative: entry.to_dict() for relative, entry in self.files.items()},
            "onnx": _plain(self.onnx),
            "onnxruntime_version": self.onnxruntime_version,
            "arch": self.arch,
            "quantization": _plain(self.quantization),
            **({} if self.graph is None else {"graph": dict(self.graph)}),  # a layer built before has none
            "training": None if self.training is None else self.training.to_dict(),
            "built_by": self.built_by,
            "created_at": self.created_at,
        }
        if self.parity is not None:
            data["parity"] = self.parity.to_dict()
        if self.reference is not None:
            data["reference"] = self.reference.to_dict()
        if self.load_timings is not None:
            data["load"] = self.load_timings.to_dict()
        return {**data, **{key: value for key, value in self.unknown.items() if key not in data}}

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        path = layout.manifest_path(model_dir)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: no manifest; is {model_dir} a model folder built by `ferry build`?") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        manifest = cls.from_dict(data, source=str(path))
        if manifest.name != model_dir.name:
            raise ManifestError(f"{path}: manifest name {manifest.name!r} differs from its folder {model_dir.name!r}")
        return manifest

    def verify(self, model_dir: Path) -> None:
        """Refuse a model folder whose files are missing or differ from what the manifest recorded.

        Every listed file is hashed, not only the model: a tokenizer.json altered at the same size would
        otherwise change every prediction unnoticed.
        """
        for required in REQUIRED_FILES:
            if required not in self.files:
                raise ManifestError(f"{layout.manifest_path(model_dir)}: files does not list {required}")
        for relative, entry in self.files.items():
            path = model_dir / relative
            if not path.is_file():
                raise IntegrityError(f"{path}: listed in the manifest but missing; rebuild or redeploy the layer")
            size = path.stat().st_size
            if size != entry.size:
                raise IntegrityError(
                    f"{path}: size {size} bytes differs from the manifest's {entry.size}; the file was altered"
                )
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise IntegrityError(
                    f"{path}: sha256 {actual[:12]}... differs from the manifest's {entry.sha256[:12]}...; "
                    "the file was altered"
                )

    def summary(self) -> dict[str, Any]:
        """What GET /v1/models shows of a model: small, no per-file detail."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "labels": list(self.labels),
            "max_length": self.max_length,
        }

    def describe(self) -> dict[str, Any]:
        """What GET /v1/models/{model} shows of a model: the summary, and how it was built and checked."""
        written = self.to_dict()
        return {**self.summary(), **{key: written.get(key) for key in DESCRIBED}}


_Part = TypeVar("_Part")


def _optional(fields: JsonFields, key: str, parse: Callable[[Any, str, str], _Part]) -> _Part | None:
    """A part of the manifest that may be absent (null, or not written yet), parsed when present."""
    value = fields.raw(key)
    return None if value is None else parse(value, fields.source, fields.path(key))


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def _parse_files(raw: Any, source: str) -> dict[str, FileEntry]:
    if not isinstance(raw, dict) or not raw:
        raise ManifestError(f"{source}: files must be a non-empty object of name -> {{sha256, size}}")
    files: dict[str, FileEntry] = {}
    for relative, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(
            entry.get("size"), int
        ):
            raise ManifestError(f"{source}: files[{relative!r}] needs a sha256 string and an integer size")
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ManifestError(f"{source}: files[{relative!r}] must be a path inside the model folder")
        if not _SHA256.fullmatch(entry["sha256"]):
            raise ManifestError(f"{source}: files[{relative!r}].sha256 must be 64 lowercase hex digits")
        if isinstance(entry["size"], bool) or entry["size"] < 0:
            raise ManifestError(f"{source}: files[{relative!r}].size must be an integer >= 0")
        files[relative] = FileEntry(sha256=entry["sha256"], size=entry["size"])
    for required in REQUIRED_FILES:
        if required not in files:
            raise ManifestError(f"{source}: files does not list {required}; every model folder holds it")
    return files


# --- finding model folders ------------------------------------------------------------------------------------


def models_search_path(models_dir: str | os.PathLike[str] | Iterable[Path] | None = None) -> list[Path]:
    """The folders that hold model folders, in order: the argument, else /opt/models (where Lambda unpacks them).

    A string may name several folders separated by os.pathsep, as Lambda merges every layer into /opt. This
    reads no environment variable: the runtime's Settings reads FERRY_MODELS_DIR and passes its value here.
    """
    if models_dir is None:
        models_dir = DEFAULT_MODELS_DIR
    if isinstance(models_dir, str | os.PathLike):
        return [Path(part) for part in os.fspath(models_dir).split(os.pathsep) if part]
    return [Path(part) for part in models_dir]


def discover_models(search_path: Iterable[Path]) -> dict[str, Path]:
    """Every model folder in the search path, by name; the first folder wins when a name repeats."""
    found: dict[str, Path] = {}
    for root in search_path:
        if not root.is_dir():
            continue
        for candidate in sorted(root.iterdir()):
            if is_valid_name(candidate.name) and layout.is_model_dir(candidate):
                found.setdefault(candidate.name, candidate)
    return found


def resolve_model_dir(name: str, search_path: Iterable[Path]) -> Path:
    if not is_valid_name(name):
        raise ModelNotFoundError(f"model name {name!r} is not valid: it must match {MODEL_NAME_RE.pattern}")
    roots = list(search_path)
    for root in roots:
        candidate = layout.model_dir(root, name)
        if layout.is_model_dir(candidate):
            return candidate
    known = ", ".join(sorted(discover_models(roots))) or "none"
    raise ModelNotFoundError(f"no model named {name!r}; available: {known}")


def as_model_dir(path: Path) -> Path:
    """Accept a model folder, or a layer folder holding exactly one model (``<layer>/models/<name>/``)."""
    if layout.is_model_dir(path):
        return path
    inner = discover_models([layout.layer_models_dir(path)])
    if len(inner) == 1:
        return next(iter(inner.values()))
    if len(inner) > 1:
        raise ManifestError(f"{path}: the layer holds several models ({', '.join(inner)}); name one folder")
    raise ManifestError(
        f"{path}: neither a model folder (no {MANIFEST_FILE}) nor a layer folder with "
        f"{layout.MODELS_FOLDER}/<name>/"
    )
