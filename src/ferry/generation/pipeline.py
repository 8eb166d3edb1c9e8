"""`ferry build --task text-generation`: a causal LM -> the artifact of a SageMaker GPU endpoint, checked.

    OUT/NAME/model/          what model.tar.gz holds, at its root: config.json, *.safetensors (in the chosen dtype),
                             the tokenizer files and chat template, generation_config.json, serving.properties
                             (the container's settings) and the package's manifest.json
    OUT/NAME/model.tar.gz    the same files, reproducibly archived (SageMaker's ModelDataUrl)
    OUT/NAME/manifest.json   the package's manifest and the build record (archive sha256, smoke, parity)

Everything is written in a hidden staging folder of OUT and renamed to OUT/NAME only once the smoke and parity
checks passed: a failed build leaves nothing, and an older artifact of the same name is replaced whole.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ferry import __version__
from ferry.generation import archive, lmi
from ferry.generation.checks import (
    ParityResult,
    SmokeResult,
    compare_next_tokens,
    load_endpoint_engine,
    smoke_test,
    teacher_forced_logits,
    token_ids,
)
from ferry.generation.config import DTYPE_REASONS, GenerationBuildConfig
from ferry.generation.exceptions import SmokeFailedError
from ferry.generation.manifest import EndpointManifest, content_version, file_entries
from ferry.generation.source import CausalLMSource, resolve_causal_lm
from ferry.layer.exceptions import BuildError, GateFailedError, InvalidBuildConfigError, ModelSourceError
from ferry.layer.packaging import install_folder, write_json_atomic
from ferry.runtime.constants import MANIFEST_FILE, MODEL_NAME_RE
from ferry.runtime.manifest import FileEntry, sha256_file

Progress = Callable[[str], None]
MODEL_FOLDER = "model"


def _silent(_: str) -> None:
    return None


@dataclass
class GenerationBuildResult:
    name: str
    version: str
    artifact_dir: Path  # OUT/NAME
    model_dir: Path  # OUT/NAME/model
    archive: Path  # OUT/NAME/model.tar.gz
    manifest: EndpointManifest  # OUT/NAME/manifest.json, as written
    smoke: SmokeResult
    parity: ParityResult
    model_bytes: int
    archive_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)


def default_name(reference: str) -> str:
    """A model name from what the user named: the last part of a hub id or path, without ``.gguf``."""
    stem = reference.rstrip("/").split("/")[-1]
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    slug = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:63]
    if not MODEL_NAME_RE.fullmatch(slug):
        raise InvalidBuildConfigError(f"is needed: no model name can be derived from {reference!r}", field="name")
    return slug


def cast_weights(model: Any, dtype: str) -> None:
    """Convert the model's weights, in place, to the artifact's dtype."""
    import torch

    model.to(getattr(torch, dtype))


def build_endpoint_model(config: GenerationBuildConfig, progress: Progress = _silent,
                         load_engine: Callable[[Path], Any] = load_endpoint_engine) -> GenerationBuildResult:
    """Package, check and install ``<out>/<name>/``; raise a BuildError (and leave nothing) otherwise.

    `load_engine` loads ``model/`` for the smoke generation: the endpoint's engine unless a caller states another.
    """
    source = resolve_causal_lm(config.model, config.converted_dir, progress)
    name = config.name or default_name(source.reference)
    max_model_len = config.max_model_len or source.context_length
    if max_model_len > source.context_length:
        raise InvalidBuildConfigError(f"{max_model_len} is over the model's context length ({source.context_length} "
                                      "tokens, config.json)", field="max_model_len")
    with _staging(config.out, name) as staging:
        try:
            return _build_in(staging, config, source, name, max_model_len, progress, load_engine)
        except OSError as exc:  # a full disk, a folder that cannot be written: the build's environment, said so
            raise BuildError(f"cannot write the artifact in {config.out} ({exc.__class__.__name__}: {exc})") from None


@contextmanager
def _staging(out: Path, name: str) -> Iterator[Path]:
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".ferry-build-{name}-", dir=out))
    staging.chmod(0o755)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(time.perf_counter() - started, 3)


def _build_in(staging: Path, config: GenerationBuildConfig, source: CausalLMSource, name: str, max_model_len: int,
              progress: Progress, load_engine: Callable[[Path], Any]) -> GenerationBuildResult:
    from ferry.layer.evalset import builtin_eval_set

    seconds: dict[str, float] = {}
    model_dir = staging / MODEL_FOLDER
    progress(f"loading {source.reference} in float32 ({source.path})")
    with _timed(seconds, "load"):
        model, tokenizer = _load_source(source)
    chat = bool(getattr(tokenizer, "chat_template", None))  # as the endpoint's tokenizer will have it
    texts = builtin_eval_set().texts[: config.parity_texts]
    ids = token_ids(tokenizer, texts)
    progress(f"fp32 reference: next-token logits on {len(ids)} built-in sentences")
    with _timed(seconds, "reference"):
        reference = teacher_forced_logits(model, ids)
    parameters = sum(parameter.numel() for parameter in model.parameters())

    progress(f"writing {config.dtype} weights, the tokenizer and LMI's serving.properties")
    with _timed(seconds, "write"):
        cast_weights(model, config.dtype)
        model.save_pretrained(model_dir, safe_serialization=True)
        tokenizer.save_pretrained(model_dir)
        if not (model_dir / "generation_config.json").is_file():
            model.generation_config.save_pretrained(model_dir)
        del model
        properties = lmi.serving_properties(config.dtype, max_model_len, config.max_rolling_batch_size)
        (model_dir / lmi.SERVING_PROPERTIES).write_text(lmi.render(properties), encoding="utf-8")
        files = file_entries(model_dir)
        package = EndpointManifest(
            name=name, version=content_version(files), files=files, parameters=parameters, dtype=config.dtype,
            dtype_reason=DTYPE_REASONS[config.dtype], context_length=source.context_length,
            max_model_len=max_model_len, architecture=source.architecture, chat_template=chat,
            container=lmi.container_record(properties), source=source.source_record(),
            built_by=f"ferry {__version__}")
        write_json_atomic(model_dir / MANIFEST_FILE, package.to_dict())

    progress("smoke test: loading model/ as the endpoint does, one greedy "
             + ("chat answer" if chat else "continuation (no chat template)"))
    with _timed(seconds, "smoke"):
        smoke = smoke_test(model_dir, chat, config.smoke_tokens, load_engine)
    if not smoke.passed:
        raise SmokeFailedError(
            f"smoke test failed: the packaged model generated {smoke.generated_tokens} token(s) and "
            f"{'no text' if not smoke.text.strip() else repr(smoke.text)} ({smoke.mode}, finish "
            f"{smoke.finish_reason}); its files do not make a working model", smoke.to_dict())

    progress(f"parity: {config.dtype} files as loaded for serving vs the fp32 source, next token on "
             f"{len(ids)} sentences")
    with _timed(seconds, "parity"):
        parity = compare_next_tokens(reference, teacher_forced_logits(_load_packaged(model_dir), ids),
                                     config.min_agreement, f"{config.dtype} files loaded in float32")
    if not parity.passed:
        raise GateFailedError("parity check failed: " + "; ".join(parity.failures), parity.to_dict())

    progress(f"archiving model/ into {archive.ARCHIVE_FILE}")
    target = staging / archive.ARCHIVE_FILE
    with _timed(seconds, "archive"):
        members = archive.write_archive(model_dir, target)
        archive_entry = _entry(target)
    every_file = {**files, MANIFEST_FILE: _entry(model_dir / MANIFEST_FILE)}
    manifest = replace(
        package,
        files=dict(sorted(every_file.items())),
        archive={"file": archive.ARCHIVE_FILE, **archive_entry.to_dict(), "members": len(members),
                 "unpacked_size": sum(entry.size for entry in every_file.values()),
                 "compression": f"gzip level {archive.COMPRESS_LEVEL}", "reproducible": True},
        smoke=smoke.to_dict(),
        parity=parity.to_dict(),
        seconds=seconds,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    write_json_atomic(staging / MANIFEST_FILE, manifest.to_dict())

    installed = config.out / name
    install_folder(staging, installed)
    return GenerationBuildResult(
        name=name, version=manifest.version, artifact_dir=installed, model_dir=installed / MODEL_FOLDER,
        archive=installed / archive.ARCHIVE_FILE, manifest=manifest, smoke=smoke, parity=parity,
        model_bytes=sum(entry.size for entry in every_file.values()), archive_bytes=archive_entry.size,
        seconds=seconds)


def _entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), size=path.stat().st_size)


def _load_source(source: CausalLMSource) -> tuple[Any, Any]:
    """The source model in float32 on the CPU, and its tokenizer; files that transformers cannot load are the
    source's fault, said as such."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"{source.reference}: transformers cannot load it ({exc.__class__.__name__}: "
                               f"{str(exc)[:300]})", field="model") from None
    return model.eval(), tokenizer


def _load_packaged(model_dir: Path) -> Any:
    """The packaged weights as the endpoint's CPU engine loads them: float32 whatever the files' dtype."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BuildError(f"the packaged model does not load ({exc.__class__.__name__}: {str(exc)[:300]})") from None
