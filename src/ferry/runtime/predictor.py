"""Predictor: a built model folder loaded with onnxruntime and tokenizers, and nothing heavier.

One ONNX Runtime session per model per process; texts are truncated to the manifest's ``max_length`` and
padded to the longest text of the batch, never to a fixed length.

Pure inference: encode, forward, scores, pooling. No request limits and no configuration read here (the
service applies the limits; its Settings give the threads); :meth:`Predictor.classify` and
:meth:`Predictor.embed` compose the steps for callers that hold a Predictor (evaluation, benchmarks), and
serving goes through :class:`ferry.runtime.service.PredictionService`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from ferry.runtime.constants import (
    FEATURE_EXTRACTION,
    FUNCTIONS_TO_APPLY,
    MODEL_FILE,
    TEXT_CLASSIFICATION,
    TOKENIZER_FILE,
)
from ferry.runtime.exceptions import InvalidInputError, ManifestError, UnsupportedTaskError
from ferry.runtime.manifest import Manifest, as_model_dir
from ferry.runtime.texts import check_shape

_FEEDS = ("input_ids", "attention_mask", "token_type_ids")

# How a session is optimized at load, on the CPU that runs it (hardware-specific, so never saved in the file): every
# level, less the optimizers whose fused kernels were measured slower on CPU than the ops they replace (ONNX Runtime
# 1.32; docs/build.md): SkipLayerNormalization took 5-7x the time of the Add and LayerNormalization it stands for,
# and both it and BiasGelu take the bias add away from the int8 MatMul before them, which would fold it in for free.
# Turning SkipLayerNormFusion off made the unfused MiniLM 0.85x as slow at 8 x 128 tokens.
GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion", "BiasGeluFusion")


def load_optimizations() -> dict[str, Any]:
    """What :meth:`Predictor.load` does to the graph at load, as the manifest records it beside the saved fusions."""
    return {"level": GRAPH_OPTIMIZATION, "disabled_optimizers": list(DISABLED_OPTIMIZERS)}


@dataclass(frozen=True)
class Batch:
    """Tokenized texts: the arrays the graph takes and each text's length in tokens before truncation."""

    feeds: dict[str, np.ndarray]
    token_lengths: list[int]
    truncated: list[bool]

    @property
    def attention_mask(self) -> np.ndarray:
        return self.feeds["attention_mask"]


def _untruncated_length(encoding: Encoding) -> int:
    """Tokens the text had before truncation: content tokens of every overflow piece plus the specials once."""
    specials = sum(
        1 for special, attended in zip(encoding.special_tokens_mask, encoding.attention_mask, strict=True)
        if special and attended
    )
    content = sum(1 for special in encoding.special_tokens_mask if not special)
    content += sum(
        sum(1 for special in piece.special_tokens_mask if not special) for piece in encoding.overflowing
    )
    return content + specials


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-logits)))


def _apply(function: str, row: list[float]) -> list[float]:
    """softmax, sigmoid or none over one row of logits, in Python floats (overflow-safe)."""
    if function == "softmax":
        top = max(row)
        exps = [math.exp(value - top) for value in row]
        total = sum(exps)
        return [value / total for value in exps]
    if function == "sigmoid":
        return [1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))
                for value in row]
    return row


class Predictor:
    """A loaded model. Build one with :meth:`Predictor.load`; reuse it for every request of the process."""

    def __init__(self, manifest: Manifest, session: ort.InferenceSession, tokenizer: Tokenizer, path: Path):
        self.manifest = manifest
        self.session = session
        self.tokenizer = tokenizer
        self.path = path
        self.input_names = [graph_input.name for graph_input in session.get_inputs()]
        unknown = [name for name in self.input_names if name not in _FEEDS]
        if unknown:
            raise ManifestError(f"{path / MODEL_FILE}: graph inputs {unknown} are not text inputs ferry can feed")
        self.load_seconds = 0.0
        # tokenizers >= 0.21; the same encodings as encode_batch without the offsets
        self._encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    @classmethod
    def load(cls, path: Path | str, *, threads: int | None = None, verify: bool = True) -> Predictor:
        """Load a model folder (or a layer folder with one model), verifying every file against the manifest.

        `threads`: intra-op threads of the session (Settings.ort_threads); None or 0 lets ONNX Runtime decide."""
        started = time.perf_counter()
        model_dir = as_model_dir(Path(path))
        manifest = Manifest.load(model_dir)
        if verify:
            manifest.verify(model_dir)
        options = ort.SessionOptions()
        # Hardware-specific fusions happen here, on the CPU that will run them, not at build time.
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION)
        options.intra_op_num_threads = max(threads or 0, 0)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(model_dir / MODEL_FILE), sess_options=options, providers=["CPUExecutionProvider"],
            disabled_optimizers=list(DISABLED_OPTIMIZERS),
        )
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        tokenizer.enable_truncation(max_length=manifest.max_length)
        pad_token = tokenizer.padding["pad_token"] if tokenizer.padding else "[PAD]"
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            pad_token, pad_id = _find_pad_token(tokenizer)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest text of the batch
        predictor = cls(manifest, session, tokenizer, model_dir)
        predictor.load_seconds = time.perf_counter() - started
        return predictor

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def task(self) -> str:
        return self.manifest.task

    def encode(self, texts: Sequence[str]) -> Batch:
        """Token ids, attention mask (and token types, when the graph takes them) of a batch, padded to its longest
        text; each text's length in tokens before truncation.

        ``encode_batch_fast``: the same ids, masks and overflow as ``encode_batch``, without the character offsets
        nobody here reads (15% of the tokenizer's time). A text that was not truncated is as long as its attention
        mask; only a truncated one has its overflow counted."""
        encodings = self._encode_batch(check_shape(texts))
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64), "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        truncated = [bool(e.overflowing) for e in encodings]
        attended = mask.sum(axis=1).tolist()
        return Batch(
            feeds=feeds,
            token_lengths=[_untruncated_length(e) if cut else int(length)
                           for e, cut, length in zip(encodings, truncated, attended, strict=True)],
            truncated=truncated,
        )

    def forward(self, batch: Batch) -> np.ndarray:
        """Raw model output for a batch: logits (classification) or mean-pooled vectors (feature extraction)."""
        feeds = {name: batch.feeds[name] for name in self.input_names}
        output = self.session.run(None, feeds)[0]
        if self.task == TEXT_CLASSIFICATION:
            return np.asarray(output, dtype=np.float32)
        return mean_pool(np.asarray(output, dtype=np.float32), batch.attention_mask)

    def classify(
        self,
        texts: Sequence[str],
        *,
        top_k: int | None = None,
        function_to_apply: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """One list of ``{label, score}`` per text, best first, as the Hugging Face Inference API answers."""
        self.require(TEXT_CLASSIFICATION)
        return self.ranked(self.forward(self.encode(texts)), function_to_apply=function_to_apply, top_k=top_k)

    def scores(self, logits: np.ndarray, function_to_apply: str | None = None) -> np.ndarray:
        """Scores for a whole array of logits at once (evaluation); requests use :meth:`ranked`."""
        function = self._function(function_to_apply)
        if function == "softmax":
            return softmax(logits)
        if function == "sigmoid":
            return sigmoid(logits)
        return logits

    def ranked(self, logits: np.ndarray, *, function_to_apply: str | None = None,
               top_k: int | None = None) -> list[list[dict[str, Any]]]:
        """One list of ``{label, score}`` per row of logits, best first (ties keep the labels' order).

        Plain Python, not numpy: a request has a few logits per text, and numpy's cost per call, paid with caches
        the session has just flushed, is several times the arithmetic (0.18 ms against 0.04 ms, measured here).
        """
        function = self._function(function_to_apply)
        labels = self.manifest.labels
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer, got {top_k!r}")
        keep = len(labels) if top_k is None else min(top_k, len(labels))
        answer = []
        for row in np.asarray(logits, dtype=np.float64).tolist():
            scores = _apply(function, row)
            order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:keep]  # stable
            answer.append([{"label": labels[index], "score": scores[index]} for index in order])
        return answer

    def _function(self, function_to_apply: str | None) -> str:
        self.require(TEXT_CLASSIFICATION)
        function = function_to_apply or self.default_function()
        if function not in FUNCTIONS_TO_APPLY:
            raise InvalidInputError(
                f"function_to_apply {function!r} is not one of {', '.join(FUNCTIONS_TO_APPLY)}"
            )
        return function

    def default_function(self) -> str:
        """As the transformers pipeline decides: sigmoid for multi-label or a single output, else softmax."""
        if self.manifest.problem_type == "multi_label_classification" or len(self.manifest.labels) == 1:
            return "sigmoid"
        return "softmax"

    def embed(self, texts: Sequence[str], *, normalize: bool | None = None) -> np.ndarray:
        """One mean-pooled vector per text; unit length when ``normalize`` (default: the manifest's choice)."""
        self.require(FEATURE_EXTRACTION)
        return self.normalized(self.forward(self.encode(texts)), normalize)

    def normalized(self, vectors: np.ndarray, normalize: bool | None = None) -> np.ndarray:
        """Pooled vectors made unit length when `normalize` says so, or, when it says nothing, when the model's
        manifest does (``normalize_default``: the sentence-transformers pipeline ends with Normalize)."""
        if self.manifest.normalize_default if normalize is None else normalize:
            return l2_normalize(vectors)
        return vectors

    def require(self, task: str, *, endpoints: Mapping[str, str] | None = None) -> None:
        """Refuse to use this model for `task` unless it is the model's task. With `endpoints` (each task's
        HTTP endpoint), the message says which endpoint to use instead."""
        if self.task == task:
            return
        if endpoints is not None:
            raise UnsupportedTaskError(
                f"model {self.name!r} is {self.task}: use {endpoints[self.task]}, not {endpoints[task]}")
        raise UnsupportedTaskError(f"model {self.name!r} is {self.task}, not {task}")


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The mean of each text's attended token vectors: one (1 x tokens) @ (tokens x hidden) product per text, with
    no masked copy of the hidden states (which is batch x tokens x hidden floats)."""
    mask = attention_mask.astype(hidden.dtype)
    summed = np.matmul(mask[:, None, :], hidden)[:, 0, :]
    counts = np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
    return np.asarray(summed / counts, dtype=np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)


def _find_pad_token(tokenizer: Tokenizer) -> tuple[str, int]:
    vocab: Mapping[str, int] = tokenizer.get_vocab()
    for candidate in ("[PAD]", "<pad>", "<|pad|>", "[pad]"):
        if candidate in vocab:
            return candidate, vocab[candidate]
    raise ManifestError("the tokenizer has no padding token ([PAD] or <pad>); rebuild with a tokenizer that has one")
