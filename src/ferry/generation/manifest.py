"""The manifest of a text-generation artifact: what the endpoint serves, and how the build checked it.

It is written twice, from one :class:`EndpointManifest`:

- ``model/manifest.json``, inside model.tar.gz: the package alone (files, model facts, container settings,
  source). It holds nothing that changes from one build to the next (no time, no measurement), so that the
  archive of the same model is the same bytes every time;
- ``manifest.json`` beside ``model/``: the same, plus the archive's own sha256 and size, the smoke generation and
  the parity figures, the build's timings and when it ran. Its ``files`` list ``manifest.json`` too: every
  member of the archive.

Not the layer manifest (:class:`ferry.runtime.Manifest`): a text-generation artifact has no ONNX model, no labels
and no Lambda; it shares that manifest's hashing (:func:`~ferry.runtime.manifest.sha256_file`, FileEntry) and
its version rule (a short content hash).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ferry.generation.config import TEXT_GENERATION
from ferry.runtime.constants import MANIFEST_FILE, MODEL_NAME_RE, VERSION_HEX_DIGITS
from ferry.runtime.exceptions import IntegrityError, ManifestError
from ferry.runtime.fields import JsonFields
from ferry.runtime.manifest import FileEntry, sha256_file

SCHEMA_VERSION = 1


def file_entries(folder: Path) -> dict[str, FileEntry]:
    """Every file under `folder` but its manifest, hashed, by path relative to it (sorted)."""
    return {
        path.relative_to(folder).as_posix(): FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST_FILE
    }


def content_version(files: Mapping[str, FileEntry]) -> str:
    """The artifact's version: the first hex digits of a sha256 over every file's path and sha256. Any changed
    file (weights, tokenizer, serving settings) makes a new version; the same files, the same version."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{files[name].sha256}  {name}\n".encode())
    return digest.hexdigest()[:VERSION_HEX_DIGITS]


@dataclass(frozen=True)
class EndpointManifest:
    """One text-generation artifact. The build record (``archive`` to ``seconds``) is None in the package's own
    manifest (see the module's docstring)."""

    name: str
    version: str
    files: Mapping[str, FileEntry]
    parameters: int
    dtype: str
    dtype_reason: str
    context_length: int  # what the model was built for (config.json)
    max_model_len: int  # what the endpoint serves (serving.properties)
    architecture: str
    chat_template: bool  # without one, the endpoint refuses chat requests and serves plain prompts
    container: Mapping[str, Any]
    source: Mapping[str, Any]
    built_by: str
    archive: Mapping[str, Any] | None = None
    smoke: Mapping[str, Any] | None = None
    parity: Mapping[str, Any] | None = None
    seconds: Mapping[str, float] | None = None
    created_at: str | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)

    task: ClassVar[str] = TEXT_GENERATION
    schema_version: ClassVar[int] = SCHEMA_VERSION

    def package_part(self) -> EndpointManifest:
        """The manifest as the archive holds it: no build record."""
        return replace(self, archive=None, smoke=None, parity=None, seconds=None, created_at=None)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "task": self.task,
            "version": self.version,
            "parameters": self.parameters,
            "dtype": self.dtype,
            "dtype_reason": self.dtype_reason,
            "context_length": self.context_length,
            "max_model_len": self.max_model_len,
            "architecture": self.architecture,
            "chat_template": self.chat_template,
            "container": dict(self.container),
            "source": dict(self.source),
            "files": {name: entry.to_dict() for name, entry in self.files.items()},
            "built_by": self.built_by,
        }
        record = {"archive": self.archive, "smoke": self.smoke, "parity": self.parity, "seconds": self.seconds,
                  "created_at": self.created_at}
        data.update({key: dict(value) if isinstance(value, Mapping) else value
                     for key, value in record.items() if value is not None})
        return {**data, **{key: value for key, value in self.unknown.items() if key not in data}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> EndpointManifest:
        """Validate a manifest as read from JSON; every error names ``source`` and the field."""
        fields = JsonFields(data, source, error=ManifestError)
        if fields.raw("schema_version") != SCHEMA_VERSION:
            raise fields.error("schema_version", str(SCHEMA_VERSION))
        if fields.raw("task") != TEXT_GENERATION:
            raise fields.error("task", repr(TEXT_GENERATION))
        fields.require("name", "version", "files", "parameters", "dtype", "context_length", "max_model_len",
                       "architecture", "chat_template", "container", "source")
        name = fields.required_text("name")
        if not MODEL_NAME_RE.fullmatch(name):
            raise fields.error("name", f"a model name ({MODEL_NAME_RE.pattern})")
        chat = fields.raw("chat_template")
        if not isinstance(chat, bool):
            raise fields.error("chat_template", "true or false")
        return cls(
            name=name,
            version=fields.required_text("version"),
            files=_files(fields),
            parameters=fields.required_integer("parameters", minimum=1),
            dtype=fields.required_text("dtype"),
            dtype_reason=fields.text("dtype_reason") or "",
            context_length=fields.required_integer("context_length", minimum=1),
            max_model_len=fields.required_integer("max_model_len", minimum=1),
            architecture=fields.required_text("architecture"),
            chat_template=chat,
            container=fields.obj("container") or {},
            source=fields.obj("source") or {},
            built_by=fields.text("built_by") or "",
            archive=fields.obj("archive"),
            smoke=fields.obj("smoke"),
            parity=fields.obj("parity"),
            seconds=fields.number_map("seconds"),
            created_at=fields.text("created_at"),
            unknown=fields.unknown(),
        )

    @classmethod
    def load(cls, path: Path) -> EndpointManifest:
        """Read ``manifest.json`` from `path` (the artifact's folder, its ``model/`` folder, or the file)."""
        path = path / MANIFEST_FILE if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: no manifest; was it built by `ferry build --task text-generation`?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
        return cls.from_dict(data, source=str(path))

    def verify(self, model_dir: Path) -> None:
        """Refuse a ``model/`` folder whose files are missing or differ from what the manifest recorded."""
        for relative, entry in self.files.items():
            path = model_dir / relative
            if not path.is_file():
                raise IntegrityError(f"{path}: listed in the manifest but missing")
            if path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
                raise IntegrityError(f"{path}: differs from the sha256 and size the manifest recorded; the file was "
                                     "altered")


def _files(fields: JsonFields) -> dict[str, FileEntry]:
    raw = fields.obj("files")
    if not raw:
        raise fields.error("files", "a non-empty object of path -> {sha256, size}")
    files: dict[str, FileEntry] = {}
    for relative, entry in raw.items():
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise fields.fail(f"files[{relative!r}] must be a path inside the model folder")
        one = JsonFields(entry, fields.source, f"files[{relative!r}]", error=ManifestError)
        one.require("sha256", "size")
        files[relative] = FileEntry(sha256=one.required_text("sha256"), size=one.required_integer("size"))
    return files
