"""The one way to predict, independent of Lambda and HTTP: limits, models, task dispatch, capture records.

:meth:`PredictionService.predict` takes a model's name, texts and :class:`Options`, checks the texts against the
limits of its :class:`Settings`, loads the model once (:class:`ModelStore`), does what the model's task does
(labels or vectors) and returns an :class:`Answer` with one capture record per text. The predict function's
routes, the batch function and the CLI all call it; none of them branches on a task.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.runtime.constants import FEATURE_EXTRACTION, TASK_ENDPOINTS, TEXT_CLASSIFICATION, TOP_SCORE_DECIMALS
from ferry.runtime.exceptions import FerryRuntimeError, NoModelsError
from ferry.runtime.exceptions import PayloadTooLargeError as PayloadTooLargeError  # importable from here as before
from ferry.runtime.ids import PredictionIds
from ferry.runtime.manifest import Manifest, discover_models, resolve_model_dir
from ferry.runtime.settings import Settings
from ferry.runtime.texts import check_inputs, too_many_tokens

if TYPE_CHECKING:  # imported when a model loads: a function that predicts nothing (feedback) never pays for it
    from ferry.runtime.predictor import Batch, Predictor

log = logging.getLogger(__name__)

CHANNEL_API = "api"  # a capture record's "channel": the prediction was asked through the HTTP API
CHANNEL_BATCH = "batch"  # ... or made by the batch function for a file in S3
CAPTURE_DECIMALS = 6  # a capture record's score and confidence


@dataclass(frozen=True)
class Options:
    """How to predict. Each task reads its own options and ignores the others': a classifier `top_k` (labels
    to return, best first; None: all) and `function_to_apply` (None: the model's default); an embedder
    `normalize` (None: the model's default) and `truncate` (False: a text over the model's max_length is an
    error rather than cut)."""

    top_k: int | None = None
    function_to_apply: str | None = None
    normalize: bool | None = None
    truncate: bool = True


@dataclass(frozen=True)
class Answer:
    """The result of one request: the payload to return, one id per input, and what to capture. `payload` holds
    one item per text: a list of ``{label, score}`` (text-classification) or a vector (feature-extraction), as
    `task` says."""

    payload: Any
    prediction_ids: list[str]
    captures: list[dict[str, Any]]
    model: str
    version: str
    latency_ms: float
    task: str


@dataclass(frozen=True)
class _Outputs:
    """What a task's model call gives back: the payload, and per text its best label and score, and the
    confidence in that label (classifiers; None for an embedder)."""

    batch: Batch
    payload: Any
    best: Sequence[tuple[str | None, float | None]]
    confidence: Sequence[float | None]
    norm: Sequence[float | None] | None = None  # an embedder's: each pooled vector's length before normalizing


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
                from ferry.runtime.predictor import Predictor  # onnxruntime and tokenizers: 0.4 s, on first load

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
    """Predictions with `settings`' limits, output mode and capture options, from the models of its store."""

    def __init__(self, settings: Settings, store: ModelStore | None = None):
        self.settings = settings
        self.store = store or ModelStore(settings)
        self._secret = settings.stack_secret.encode("utf-8") if settings.stack_secret else None
        self.ids = PredictionIds(self._secret)  # ferry.runtime.ids: verifiable by the feedback function
        self._tasks: dict[str, Callable[[Predictor, list[str], Options], _Outputs]] = {
            TEXT_CLASSIFICATION: self._classify, FEATURE_EXTRACTION: self._embed}

    @classmethod
    def for_models(cls, models_path: Iterable[Path | str]) -> PredictionService:
        """A service for a process that uses the models of `models_path` itself (the CLI): no limits, no stack
        secret, no text captured (:meth:`Settings.for_models`)."""
        return cls(Settings.for_models(models_path))

    def check_inputs(self, inputs: str | Sequence[str]) -> list[str]:
        """The texts of a request, or a precise error: empty, not strings, too many, too long."""
        return check_inputs(inputs, self.settings.max_inputs, self.settings.max_input_chars)

    def predict(
        self, model: str, inputs: str | Sequence[str], options: Options | None = None, *, task: str | None = None,
        key_id: str | None = None, prediction_ids: Sequence[str] | None = None, channel: str = CHANNEL_API,
    ) -> Answer:
        """What the model `model` does for `inputs` (one text or a list), by its task: labels with scores, best
        first, or vectors. `task`, when given, is the task the caller asks for (an endpoint's): a model of
        another task is an error naming the endpoint to use.

        `key_id` names the API key that asked; `prediction_ids` (one per text) replace the ones issued here with
        random nonces (the batch function issues them from nonces derived from the file, so that a rerun
        captures nothing twice: :meth:`ferry.runtime.batch.BatchObject.prediction_id`); `channel` is recorded in
        each capture record."""
        texts = self.check_inputs(inputs)
        predictor = self.store.get(model)
        if task is not None:
            predictor.require(task, endpoints=TASK_ENDPOINTS)
        started = time.perf_counter()
        outputs = self._tasks[predictor.task](predictor, texts, options or Options())
        latency_ms = (time.perf_counter() - started) * 1000
        return self._answer(predictor, texts, outputs, latency_ms, key_id, prediction_ids, channel)

    def classify(
        self, model: str, inputs: str | Sequence[str], *, top_k: int | None = None,
        function_to_apply: str | None = None, key_id: str | None = None,
        prediction_ids: Sequence[str] | None = None, channel: str = CHANNEL_API,
    ) -> Answer:
        """:meth:`predict` with a classifier (the /predict endpoint)."""
        return self.predict(model, inputs, Options(top_k=top_k, function_to_apply=function_to_apply),
                            task=TEXT_CLASSIFICATION, key_id=key_id, prediction_ids=prediction_ids, channel=channel)

    def embed(self, model: str, inputs: str | Sequence[str], *, normalize: bool | None = None,
              truncate: bool = True, key_id: str | None = None, prediction_ids: Sequence[str] | None = None,
              channel: str = CHANNEL_API) -> Answer:
        """:meth:`predict` with an embedder (the /embed endpoint)."""
        return self.predict(model, inputs, Options(normalize=normalize, truncate=truncate), task=FEATURE_EXTRACTION,
                            key_id=key_id, prediction_ids=prediction_ids, channel=channel)

    def _classify(self, predictor: Predictor, texts: list[str], options: Options) -> _Outputs:
        """Labels with scores, best first; with output_mode "top" only the best label, its score rounded to
        TOP_SCORE_DECIMALS, whatever top_k asks (captures keep the exact score).

        The confidence captured is the best label's probability under the model's own function (softmax, or
        sigmoid for a multi-label or single-output model), whatever `function_to_apply` the client chose: with
        "none" a score is a logit, with the other function a number on another scale, and the monitor compares
        confidences with the build's reference. The three functions rank a row's labels alike, so the label is
        the same; the second ranking is made only when the client's function is not the model's."""
        top_only = self.settings.output_mode == "top"
        batch = predictor.encode(texts)
        logits = predictor.forward(batch)
        ranked = predictor.ranked(logits, function_to_apply=options.function_to_apply,
                                  top_k=1 if top_only else options.top_k)
        best = [(row[0]["label"], row[0]["score"]) for row in ranked]  # best first, whatever top_k
        default = predictor.default_function()
        if (options.function_to_apply or default) == default:
            confidence: list[float | None] = [score for _, score in best]
        else:
            confidence = [row[0]["score"] for row in predictor.ranked(logits, function_to_apply=default, top_k=1)]
        payload = ([[{"label": label, "score": round(score, TOP_SCORE_DECIMALS)}] for label, score in best]
                   if top_only else ranked)
        return _Outputs(batch, payload, best, confidence)

    def _embed(self, predictor: Predictor, texts: list[str], options: Options) -> _Outputs:
        """Vectors, normalized as `options` or else the model says."""
        batch = predictor.encode(texts)
        if not options.truncate and any(batch.truncated):
            index = batch.truncated.index(True)
            raise PayloadTooLargeError(too_many_tokens(f"inputs[{index}]", batch.token_lengths[index],
                                                       predictor.manifest.max_length))
        pooled = predictor.forward(batch)
        vectors = predictor.normalized(pooled, options.normalize)
        return _Outputs(batch, vectors.astype(float).tolist(), [(None, None)] * len(texts), [None] * len(texts),
                        [float(norm) for norm in ((pooled * pooled).sum(axis=-1) ** 0.5)])

    def _answer(self, predictor: Predictor, texts: list[str], outputs: _Outputs, latency_ms: float,
                key_id: str | None = None, prediction_ids: Sequence[str] | None = None,
                channel: str = CHANNEL_API) -> Answer:
        now = datetime.now(UTC)
        if prediction_ids is None:
            issue, name, version = self.ids.issue, predictor.name, predictor.version
            ids = [issue(name, version) for _ in texts]
        elif len(prediction_ids) == len(texts):
            ids = list(prediction_ids)
        else:
            raise ValueError(f"{len(prediction_ids)} prediction ids for {len(texts)} texts")
        batch = outputs.batch
        captures = [
            capture_record(
                prediction_id=prediction_id, model=predictor.name, version=predictor.version, time=now,
                label=label, score=score, latency_ms=latency_ms, batch_size=len(texts), token_length=length,
                truncated=cut, text=text, keep_text=self.settings.capture_text, secret=self._secret, key_id=key_id,
                channel=channel, confidence=confidence, norm=norm,
            )
            for prediction_id, text, length, cut, (label, score), confidence, norm in zip(
                ids, texts, batch.token_lengths, batch.truncated, outputs.best, outputs.confidence,
                outputs.norm or [None] * len(texts), strict=True)
        ]
        return Answer(payload=outputs.payload, prediction_ids=ids, captures=captures, model=predictor.name,
                      version=predictor.version, latency_ms=latency_ms, task=predictor.task)

    # -- what GET /v1/models, /v1/models/{model} and /healthz show -------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Every model in the search path: its manifest's summary (read, not loaded) and its status."""
        return [{**manifest.summary(), "status": self.store.status(name)}
                for name, manifest in sorted(self.store.available().items())]

    def describe(self, model: str) -> dict[str, Any]:
        """One model, loaded (a model that cannot load is an error): its summary, ``"status": "loaded"`` and
        what its build recorded (quantization, parity, training, source...)."""
        manifest = self.store.get(model).manifest
        return {**manifest.summary(), "status": "loaded", **manifest.describe()}  # the status after the summary

    def health(self) -> dict[str, Any]:
        """Liveness, cheap: the models found and whether each is loaded; it loads, reads and hashes nothing. No
        model at all is an error (:class:`NoModelsError`)."""
        names = self.store.names()
        if not names:
            raise NoModelsError("no models found in the models path")
        return {"status": "ok", "models": {name: self.store.status(name) for name in names}}

    def tasks(self) -> dict[str, str]:
        """Each model's task, by name, from the manifests (nothing loaded)."""
        return {name: manifest.task for name, manifest in self.store.available().items()}


def capture_record(
    *, prediction_id: str, model: str, version: str, time: datetime, label: str | None, score: float | None,
    latency_ms: float, batch_size: int, token_length: int, truncated: bool, text: str, keep_text: bool,
    secret: bytes | None = None, key_id: str | None = None, channel: str = CHANNEL_API,
    confidence: float | None = None, norm: float | None = None,
) -> dict[str, Any]:
    """One prediction as the capture function stores it: never the text itself unless configured.

    ``text_hmac`` is HMAC-SHA256 of the text under the stack's secret: it tells equal texts apart from different
    ones without letting anyone who reads the captures confirm a guessed text (an unsalted hash of a short text
    would). No secret, no field: never an unkeyed hash. ``key_id`` names the API key that asked, if any;
    ``channel`` says how the prediction was asked (:data:`CHANNEL_API`, :data:`CHANNEL_BATCH`). A classifier's
    record has its best ``label``, that label's ``score`` as the client got it (under its ``function_to_apply``)
    and its ``confidence``: the label's probability under the model's own function, which the monitor reads
    (:meth:`PredictionService._classify`); both to CAPTURE_DECIMALS. An embedder's record has the ``norm`` of
    the pooled vector before any normalizing (its drift is the monitor's signal for an embedder).
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
        record["score"] = round(float(score or 0.0), CAPTURE_DECIMALS)
        if confidence is not None:
            record["confidence"] = round(float(confidence), CAPTURE_DECIMALS)
    if norm is not None:
        record["norm"] = round(float(norm), CAPTURE_DECIMALS)
    if keep_text:
        record["text"] = text
    return record
