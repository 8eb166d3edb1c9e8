"""What the predict and embed endpoints do, independent of Lambda and HTTP: limits, models, capture records.

A handler parses its event, calls :class:`PredictionService`, and shapes the answer; everything here is
testable without an event.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOP_SCORE_DECIMALS
from ferry.runtime.exceptions import FerryRuntimeError, InvalidInputError, UnsupportedTaskError
from ferry.runtime.manifest import Manifest, discover_models, resolve_model_dir
from ferry.runtime.predictor import Predictor, l2_normalize
from ferry.runtime.settings import Settings

log = logging.getLogger(__name__)
_SURROGATE = re.compile("[\ud800-\udfff]")  # what JSON's \ud800-style escapes leave when one comes unpaired


def lone_surrogate(text: str) -> str | None:
    """Why `text` cannot be given to a model when it holds a lone surrogate (no UTF-8 encodes one); else None."""
    found = None if text.isascii() else _SURROGATE.search(text)
    if found is None:
        return None
    return (f"holds a lone surrogate (\\u{ord(found.group()):04x}) at character {found.start()}: texts must be "
            "valid Unicode")


CHANNEL_API = "api"  # a capture record's "channel": the prediction was asked through the HTTP API
CHANNEL_BATCH = "batch"  # ... or made by the batch function for a file in S3


class PayloadTooLargeError(FerryRuntimeError):
    """A request over one of the configured limits (texts per request, characters per text, body size)."""


@dataclass(frozen=True)
class Answer:
    """The result of one request: the payload to return, one id per input, and what to capture."""

    payload: Any
    prediction_ids: list[str]
    captures: list[dict[str, Any]]
    model: str
    version: str
    latency_ms: float


class ModelStore:
    """Loads each model once per process, on first use or in the background at start, and keeps it.

    Safe to share between threads: a request for a model that is still loading waits for that load (each model
    has its own lock), never for another model's.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._loaded: dict[str, Predictor] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str) -> Predictor:
        predictor = self._loaded.get(name)
        if predictor is not None:
            return predictor
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._loaded:
                model_dir = resolve_model_dir(name, self.settings.models_path)
                self._loaded[name] = Predictor.load(model_dir, threads=self.settings.ort_threads)
            return self._loaded[name]

    def preload(self, names: Sequence[str]) -> threading.Thread | None:
        """Start loading `names` in order (``("*",)``: every model found, by name) in one background thread.

        ONNX Runtime and tokenizers release the GIL while they load, so a function that calls this before its
        heavier imports pays for the slower of the two at a cold start, not for both. One model at a time: on
        two cores, loading them all at once slowed every one of them (the first listed is ready soonest). A
        request for a model the thread has not reached yet loads that model itself, at once. A model that fails
        to load here is only logged: the request that asks for it loads it again and answers with the error.
        """
        if not names:
            return None
        wanted = sorted(discover_models(self.settings.models_path)) if "*" in names else list(names)
        # Not a daemon: a short-lived process that ends while ONNX Runtime is loading aborts (SIGABRT, seen);
        # exiting waits for the load instead. In Lambda the process never ends this way.
        thread = threading.Thread(target=self._preload, args=(wanted,), name="ferry-preload")
        thread.start()
        return thread

    def _preload(self, names: list[str]) -> None:
        for name in names:
            try:
                self.get(name)
            except FerryRuntimeError as error:
                log.warning("preloading model %r failed: %s", name, error)
            except Exception:  # a background thread has no caller to tell; the request that needs the model will
                log.exception("preloading model %r failed", name)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def names(self) -> list[str]:
        """Every model in the search path, by name: folders listed, nothing read."""
        return sorted(discover_models(self.settings.models_path))

    def status(self, name: str) -> str:
        """"loaded", "loading" (a load is under way, in the background or for a request) or "available"."""
        if name in self._loaded:
            return "loaded"
        lock = self._locks.get(name)
        return "loading" if lock is not None and lock.locked() else "available"

    def available(self) -> dict[str, Manifest]:
        """Every model in the search path with its manifest (read, not loaded)."""
        return {name: Manifest.load(path) for name, path in discover_models(self.settings.models_path).items()}


class PredictionService:
    def __init__(self, settings: Settings, store: ModelStore | None = None):
        self.settings = settings
        self.store = store or ModelStore(settings)
        self._secret = settings.stack_secret.encode("utf-8") if settings.stack_secret else None

    def check_inputs(self, inputs: str | Sequence[str]) -> list[str]:
        """The texts of a request, or a precise error: empty, not strings, too many, too long."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise InvalidInputError("inputs is empty: give a string or a non-empty list of strings")
        if len(texts) > self.settings.max_inputs:
            raise PayloadTooLargeError(
                f"inputs has {len(texts)} texts; at most {self.settings.max_inputs} are accepted per request"
            )
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"inputs[{index}] is {type(text).__name__}, not a string")
            if not text.strip():
                raise InvalidInputError(f"inputs[{index}] is empty")
            surrogate = lone_surrogate(text)
            if surrogate is not None:
                raise InvalidInputError(f"inputs[{index}] {surrogate}")
            if len(text) > self.settings.max_input_chars:
                raise PayloadTooLargeError(
                    f"inputs[{index}] has {len(text)} characters; at most {self.settings.max_input_chars} "
                    "are accepted per text"
                )
        return texts

    def _prepare(self, model: str, inputs: str | Sequence[str], task: str) -> tuple[list[str], Predictor]:
        """The checked texts and the loaded model, which must do `task` (the endpoint's)."""
        texts = self.check_inputs(inputs)
        predictor = self.store.get(model)
        if predictor.task != task:
            wanted, other = ("/predict", "/embed") if task == TEXT_CLASSIFICATION else ("/embed", "/predict")
            raise UnsupportedTaskError(f"model {model!r} is {predictor.task}: use {other}, not {wanted}")
        return texts, predictor

    def classify(
        self, model: str, inputs: str | Sequence[str], *, top_k: int | None = None,
        function_to_apply: str | None = None, key_id: str | None = None,
        prediction_ids: Sequence[str] | None = None, channel: str = CHANNEL_API,
    ) -> Answer:
        """Labels with scores, best first; with output_mode "top" only the best label, its score rounded to
        TOP_SCORE_DECIMALS, whatever top_k asks (captures keep the exact score).

        `prediction_ids` (one per text) replace the random ones: the batch function derives them from the file,
        so that a rerun captures nothing twice. `channel` is recorded in each capture record."""
        texts, predictor = self._prepare(model, inputs, TEXT_CLASSIFICATION)
        top_only = self.settings.output_mode == "top"
        started = time.perf_counter()
        batch = predictor.encode(texts)
        ranked = predictor.ranked(predictor.forward(batch), function_to_apply=function_to_apply,
                                  top_k=1 if top_only else top_k)
        latency_ms = (time.perf_counter() - started) * 1000
        best = [(row[0]["label"], row[0]["score"]) for row in ranked]  # best first, whatever top_k
        payload = ([[{"label": label, "score": round(score, TOP_SCORE_DECIMALS)}] for label, score in best]
                   if top_only else ranked)
        return self._answer(predictor, texts, batch.token_lengths, batch.truncated, best, payload, latency_ms,
                            key_id, prediction_ids, channel)

    def embed(self, model: str, inputs: str | Sequence[str], *, normalize: bool | None = None,
              truncate: bool = True, key_id: str | None = None, prediction_ids: Sequence[str] | None = None,
              channel: str = CHANNEL_API) -> Answer:
        """Vectors, normalized as the manifest says unless `normalize`; `prediction_ids` and `channel` as for
        :meth:`classify`."""
        texts, predictor = self._prepare(model, inputs, FEATURE_EXTRACTION)
        started = time.perf_counter()
        batch = predictor.encode(texts)
        if not truncate and any(batch.truncated):
            index = batch.truncated.index(True)
            raise PayloadTooLargeError(
                f"inputs[{index}] has {batch.token_lengths[index]} tokens, over the model's "
                f"{predictor.manifest.max_length}; send shorter text or truncate=true"
            )
        vectors = predictor.forward(batch)
        if predictor.manifest.normalize_default if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        latency_ms = (time.perf_counter() - started) * 1000
        payload = vectors.astype(float).tolist()
        none: list[tuple[str | None, float | None]] = [(None, None)] * len(texts)
        return self._answer(predictor, texts, batch.token_lengths, batch.truncated, none, payload, latency_ms,
                            key_id, prediction_ids, channel)

    def _answer(self, predictor: Predictor, texts: list[str], lengths: list[int], truncated: list[bool],
                best: Sequence[tuple[str | None, float | None]], payload: Any, latency_ms: float,
                key_id: str | None = None, prediction_ids: Sequence[str] | None = None,
                channel: str = CHANNEL_API) -> Answer:
        now = datetime.now(UTC)
        if prediction_ids is None:
            # 128 random bits as 32 hex digits: uuid4().hex without the version bits, at a fifth of the cost
            ids = [os.urandom(16).hex() for _ in texts]
        elif len(prediction_ids) == len(texts):
            ids = list(prediction_ids)
        else:
            raise ValueError(f"{len(prediction_ids)} prediction ids for {len(texts)} texts")
        captures = [
            capture_record(
                prediction_id=prediction_id, model=predictor.name, version=predictor.version, time=now,
                label=label, score=score, latency_ms=latency_ms, batch_size=len(texts), token_length=length,
                truncated=cut, text=text, keep_text=self.settings.capture_text, secret=self._secret, key_id=key_id,
                channel=channel,
            )
            for prediction_id, text, length, cut, (label, score) in zip(ids, texts, lengths, truncated, best,
                                                                         strict=True)
        ]
        return Answer(payload=payload, prediction_ids=ids, captures=captures, model=predictor.name,
                      version=predictor.version, latency_ms=latency_ms)


def capture_record(
    *, prediction_id: str, model: str, version: str, time: datetime, label: str | None, score: float | None,
    latency_ms: float, batch_size: int, token_length: int, truncated: bool, text: str, keep_text: bool,
    secret: bytes | None = None, key_id: str | None = None, channel: str = CHANNEL_API,
) -> dict[str, Any]:
    """One prediction as the capture function stores it: never the text itself unless configured.

    ``text_hmac`` is HMAC-SHA256 of the text under the stack's secret: it tells equal texts apart from different
    ones without letting anyone who reads the captures confirm a guessed text (an unsalted hash of a short text
    would). No secret, no field: never an unkeyed hash. ``key_id`` names the API key that asked, if any;
    ``channel`` says how the prediction was asked (:data:`CHANNEL_API`, :data:`CHANNEL_BATCH`).
    """
    record: dict[str, Any] = {
        "prediction_id": prediction_id,
        "model": model,
        "version": version,
        "time": time.isoformat(timespec="milliseconds"),
        "epoch_ms": int(time.timestamp() * 1000),
        "latency_ms": round(latency_ms, 3),
        "batch_size": batch_size,
        "token_length": token_length,
        "truncated": truncated,
        "channel": channel,
    }
    if secret is not None:
        record["text_hmac"] = hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()
    if key_id is not None:
        record["key_id"] = key_id
    if label is not None:
        record["label"] = label
        record["score"] = round(float(score or 0.0), 6)
    if keep_text:
        record["text"] = text
    return record
