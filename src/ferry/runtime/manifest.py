"""The manifest of a model folder: what the model is, and the sha256 of every file it is made of.

A model folder (``<models dir>/<name>/``) holds ``manifest.json``, ``model.onnx`` and ``tokenizer.json``.
The manifest is the root of trust: every other file is verified against the sha256 it records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.runtime.constants import (
    DEFAULT_MODELS_DIR,
    ENV_MODELS_DIR,
    MANIFEST_FILE,
    MANIFEST_SCHEMA_VERSION,
    MODEL_FILE,
    MODEL_NAME_RE,
    TASKS,
    TEXT_CLASSIFICATION,
    TOKENIZER_FILE,
)
from ferry.runtime.exceptions import IntegrityError, ManifestError, ModelNotFoundError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_valid_name(name: str) -> bool:
    return bool(MODEL_NAME_RE.fullmatch(name))


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """The fields the runtime relies on; everything else the build recorded stays in ``extra``."""

    name: str
    version: str
    task: str
    max_length: int
    files: Mapping[str, FileEntry]
    labels: tuple[str, ...] = ()
    problem_type: str | None = None
    normalize_default: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema_version")
        if schema != MANIFEST_SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {schema!r} is not supported (this runtime reads "
                f"{MANIFEST_SCHEMA_VERSION}); rebuild the layer with this version of ferry"
            )
        missing = [key for key in ("name", "version", "task", "max_length", "files") if key not in data]
        if missing:
            raise ManifestError(f"{source}: missing field(s) {', '.join(missing)}")
        name, task, max_length = data["name"], data["task"], data["max_length"]
        if not isinstance(name, str) or not is_valid_name(name):
            raise ManifestError(f"{source}: name {name!r} does not match {MODEL_NAME_RE.pattern}")
        if task not in TASKS:
            raise ManifestError(f"{source}: task {task!r} is not one of {', '.join(TASKS)}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ManifestError(f"{source}: max_length must be an integer >= 2, got {max_length!r}")
        labels = data.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ManifestError(f"{source}: labels must be a list of strings")
        if task == TEXT_CLASSIFICATION and not labels:
            raise ManifestError(f"{source}: a text-classification manifest must list its labels")
        return cls(
            name=name,
            version=str(data["version"]),
            task=task,
            max_length=max_length,
            files=_parse_files(data["files"], source),
            labels=tuple(labels),
            problem_type=data.get("problem_type"),
            normalize_default=bool(data.get("normalize_default", False)),
            extra={key: value for key, value in data.items() if key not in _KNOWN_KEYS},
        )

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        path = model_dir / MANIFEST_FILE
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
        """Refuse a model folder whose files are missing or differ from what the manifest recorded."""
        for required in (MODEL_FILE, TOKENIZER_FILE):
            if required not in self.files:
                raise ManifestError(f"{model_dir / MANIFEST_FILE}: files does not list {required}")
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

    def to_summary(self) -> dict[str, Any]:
        """What GET /v1/models shows of a model: small, no per-file detail."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "labels": list(self.labels),
            "max_length": self.max_length,
        }


_KNOWN_KEYS = frozenset(
    {"schema_version", "name", "version", "task", "max_length", "files", "labels", "problem_type",
     "normalize_default"}
)


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
        files[relative] = FileEntry(sha256=entry["sha256"], size=entry["size"])
    return files


def models_search_path(models_dir: str | os.PathLike[str] | Iterable[Path] | None = None) -> list[Path]:
    """The folders that hold model folders, in order: the argument, else FERRY_MODELS_DIR, else /opt/models.

    FERRY_MODELS_DIR may name several folders separated by os.pathsep, as Lambda merges every layer into /opt.
    """
    if models_dir is None:
        models_dir = os.environ.get(ENV_MODELS_DIR) or DEFAULT_MODELS_DIR
    if isinstance(models_dir, str | os.PathLike):
        return [Path(part) for part in os.fspath(models_dir).split(os.pathsep) if part]
    return [Path(part) for part in models_dir]


def layer_models_dirs(layers_dir: Path) -> list[Path]:
    """The ``models/`` folder of every layer folder under ``layers_dir`` (what Lambda would merge into /opt)."""
    if not layers_dir.is_dir():
        return []
    return sorted(path / "models" for path in layers_dir.iterdir() if (path / "models").is_dir())


def discover_models(search_path: Iterable[Path]) -> dict[str, Path]:
    """Every model folder in the search path, by name; the first folder wins when a name repeats."""
    found: dict[str, Path] = {}
    for root in search_path:
        if not root.is_dir():
            continue
        for candidate in sorted(root.iterdir()):
            if (candidate / MANIFEST_FILE).is_file() and is_valid_name(candidate.name):
                found.setdefault(candidate.name, candidate)
    return found


def resolve_model_dir(name: str, search_path: Iterable[Path]) -> Path:
    if not is_valid_name(name):
        raise ModelNotFoundError(f"model name {name!r} is not valid: it must match {MODEL_NAME_RE.pattern}")
    roots = list(search_path)
    for root in roots:
        candidate = root / name
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    known = ", ".join(sorted(discover_models(roots))) or "none"
    raise ModelNotFoundError(f"no model named {name!r}; available: {known}")


def as_model_dir(path: Path) -> Path:
    """Accept a model folder, or a layer folder holding exactly one model (``<layer>/models/<name>/``)."""
    if (path / MANIFEST_FILE).is_file():
        return path
    inner = discover_models([path / "models"])
    if len(inner) == 1:
        return next(iter(inner.values()))
    if len(inner) > 1:
        raise ManifestError(f"{path}: the layer holds several models ({', '.join(inner)}); name one folder")
    raise ManifestError(f"{path}: neither a model folder (no {MANIFEST_FILE}) nor a layer folder with models/<name>/")
