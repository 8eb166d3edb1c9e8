"""`ferry build`: Hugging Face model -> ONNX (Optimum) -> fused (hardware-neutral) -> dynamic int8 -> parity gate ->
Lambda layer.

The layer is staged in a hidden folder of the output folder (``BuildConfig.out``) and moved into place only
when complete: a build that fails leaves nothing behind. The manifest is a :class:`~ferry.runtime.Manifest`
from the first write to the last; the JSON is only ever its ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferry import __version__
from ferry.layer import export, packaging
from ferry.layer.config import BuildConfig
from ferry.layer.evalset import EvalSet, label_ids, load_eval_set
from ferry.layer.exceptions import GateFailedError, InvalidBuildConfigError
from ferry.layer.parity import ParityReport, compare_classification, compare_embeddings, reference_outputs
from ferry.layer.source import ModelSource, resolve_source
from ferry.runtime import Batch, Predictor, layout
from ferry.runtime.constants import MODEL_FILE, MODEL_NAME_RE, TEXT_CLASSIFICATION, TOKENIZER_FILE, VERSION_HEX_DIGITS
from ferry.runtime.manifest import (
    LoadTimings,
    Manifest,
    ParityRecord,
    ReferenceDistributions,
    ReferenceSample,
    TrainingSummary,
)
from ferry.runtime.predictor import load_optimizations

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    return None


@dataclass
class BuildResult:
    name: str
    version: str
    layer_dir: Path
    model_dir: Path
    manifest: Manifest  # as written in the layer
    fp32_bytes: int
    int8_bytes: int
    parity: ParityReport
    load: dict[str, Any]
    size_parts: list[packaging.SizedPart]
    function_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)


def default_name(source: ModelSource) -> str:
    stem = source.reference.rstrip("/").split("/")[-1]
    slug = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:63]
    if not MODEL_NAME_RE.fullmatch(slug):
        raise InvalidBuildConfigError(f"is needed: no model name can be derived from {source.reference!r}",
                                      field="name")
    return slug


def build_layer(config: BuildConfig, progress: Progress = _silent) -> BuildResult:
    """Build, verify and install the layer ``<out>/<name>/``; raise a BuildError (and leave nothing) otherwise."""
    eval_set = load_eval_set(config.eval_data, text_column=config.text_column, label_column=config.label_column)
    source = resolve_source(config.model, config.task, offline=config.environment.hub_offline)
    name = config.name or default_name(source)
    labels = source.labels() if config.task == TEXT_CLASSIFICATION else []
    truth = label_ids(eval_set, labels) if config.task == TEXT_CLASSIFICATION else None
    report = source.training_report()  # read before the export: a malformed one fails the build at once
    training = None if report is None else report.summary()
    with _staging(config.out, name) as staging:
        return _build_in(staging, config, source, name, labels, training, eval_set, truth, progress)


@contextmanager
def _staging(out: Path, name: str) -> Iterator[Path]:
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".ferry-build-{name}-", dir=out))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _build_in(
    staging: Path,
    config: BuildConfig,
    source: ModelSource,
    name: str,
    labels: list[str],
    training: TrainingSummary | None,
    eval_set: EvalSet,
    truth: list[int] | None,
    progress: Progress,
) -> BuildResult:
    seconds: dict[str, float] = {}
    model_dir = layout.model_dir_in_layer(staging, name)
    model_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="ferry-build-") as work_root:
        work = Path(work_root)
        progress(f"exporting {source.reference} to ONNX with Optimum ({config.task})")
        with _timed(seconds, "export"):
            fp32_file = export.export_onnx(source.path, config.task, work / "fp32")
        fp32_bytes = sum(path.stat().st_size for path in (work / "fp32").glob("model.onnx*"))
        progress("saving the hardware-neutral graph optimizations (transformer fusions)")
        with _timed(seconds, "optimize"):
            fused_file, graph = export.optimize_graph(fp32_file, config.graph, work / "fused")
        settings = config.quantization
        progress(f"quantizing to int8 for {config.arch} ({settings.why})")
        with _timed(seconds, "quantize"):
            int8_file = export.quantize_int8(fused_file, settings, work / "int8")
        export.copy_file(int8_file, layout.model_file(model_dir))
        export.write_tokenizer(work / "fp32" / TOKENIZER_FILE, layout.tokenizer_file(model_dir))

    progress("checking Lambda's size limits")
    parts = [packaging.runtime_layer_part(config.runtime_layer), packaging.powertools_part(config.environment),
             *packaging.model_layer_parts(config.out, name, staging)]
    function_bytes = packaging.check_function_size(parts)

    # The manifest is written as soon as the files are hashed (the predictor loads through it), then again
    # as each measurement arrives; each write is whole (write_manifest), never a mix of two.
    manifest = _manifest(config, source, name, labels, training, model_dir, graph)
    packaging.write_manifest(model_dir, manifest)
    predictor = Predictor.load(model_dir)

    progress(f"parity gate: fp32 PyTorch vs int8 ONNX on {len(eval_set.texts)} texts ({eval_set.source})")
    with _timed(seconds, "parity"):
        batches = [
            predictor.encode(eval_set.texts[start : start + config.batch_size])
            for start in range(0, len(eval_set.texts), config.batch_size)
        ]
        candidate = np.concatenate([predictor.forward(batch) for batch in batches], axis=0)
        reference = reference_outputs(source.path, config.task, batches)
        if config.task == TEXT_CLASSIFICATION:
            report = compare_classification(reference, candidate, config.gate, truth)
        else:
            report = compare_embeddings(reference, candidate, config.gate)
    if not report.passed:
        raise GateFailedError("parity gate failed: " + "; ".join(report.failures), report.to_dict())
    progress("recording the monitor's reference sample and calibration")
    with _timed(seconds, "reference"):
        reference = _with_sample(_reference_distributions(predictor, batches, candidate),
                                 _reference_sample(predictor, config, eval_set, batches, candidate))
    manifest = dataclasses.replace(
        manifest,
        parity=ParityRecord.from_dict(
            {**report.to_dict(), "eval_data": eval_set.source, "thresholds": vars(config.gate)}, "the parity gate"
        ),
        reference=reference,
    )
    packaging.write_manifest(model_dir, manifest)

    progress("measuring import + load time in a fresh process")
    with _timed(seconds, "fresh_load"):
        load = packaging.measure_fresh_load(model_dir)
    manifest = dataclasses.replace(manifest, load_timings=_load_timings(load))
    packaging.write_manifest(model_dir, manifest)

    target = layout.layer_dir(config.out, name)
    packaging.install_folder(staging, target)
    installed = layout.model_dir_in_layer(target, name)
    return BuildResult(
        name=name,
        version=manifest.version,
        layer_dir=target,
        model_dir=installed,
        manifest=manifest,
        fp32_bytes=fp32_bytes,
        int8_bytes=layout.model_file(installed).stat().st_size,
        parity=report,
        load=load,
        size_parts=parts,
        function_bytes=function_bytes,
        seconds=seconds,
    )


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(time.perf_counter() - started, 3)


def _manifest(
    config: BuildConfig,
    source: ModelSource,
    name: str,
    labels: list[str],
    training: TrainingSummary | None,
    model_dir: Path,
    graph: dict[str, Any],
) -> Manifest:
    """The manifest of the exported files, before any measurement: what the runtime needs to load them."""
    import onnxruntime

    files = packaging.file_entries(model_dir)
    facts = export.onnx_facts(layout.model_file(model_dir))
    return Manifest(
        name=name,
        version=files[MODEL_FILE].sha256[:VERSION_HEX_DIGITS],
        task=config.task,
        labels=tuple(labels),
        problem_type=source.config.get("problem_type"),
        max_length=config.max_length or source.default_max_length(),
        pooling="mean" if config.task != TEXT_CLASSIFICATION else None,
        normalize_default=source.normalize_default(),
        source={
            "model": source.reference,
            "model_type": source.model_type,
            "architectures": source.config.get("architectures"),
            "default_labels": source.has_default_labels() if labels else None,
        },
        files=files,
        onnx={"opset": facts["opset"], "inputs": facts["inputs"], "outputs": facts["outputs"]},
        onnxruntime_version=onnxruntime.__version__,
        arch=config.arch,
        quantization={
            **config.quantization.to_dict(),
            "quantized_nodes": facts["quantized_nodes"],
            "int8_initializers": facts["int8_initializers"],
        },
        graph={**graph, "at_load": load_optimizations()},
        training=training,
        built_by=f"ferry {__version__}",
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _load_timings(load: dict[str, Any]) -> LoadTimings:
    """The fresh-process figures as the manifest keeps them (seconds, to 0.1 ms)."""
    return LoadTimings.from_dict(
        {key: round(value, 4) if isinstance(value, float) else value for key, value in load.items()},
        "the fresh-process load",
    )


def _reference_distributions(predictor: Predictor, batches: list[Batch], outputs: np.ndarray) -> ReferenceDistributions:
    """What the evaluation set looked like to the int8 model; the monitor compares live traffic with it."""
    lengths = [length for batch in batches for length in batch.token_lengths]
    if predictor.task != TEXT_CLASSIFICATION:
        return ReferenceDistributions(token_length=packaging.quantile_bins(lengths))
    scores = predictor.scores(outputs)
    top = scores.argmax(axis=-1)
    return ReferenceDistributions(
        token_length=packaging.quantile_bins(lengths),
        top_score=packaging.quantile_bins(scores.max(axis=-1).tolist()),
        label_share={
            label: round(float(np.mean(top == index)), 6) for index, label in enumerate(predictor.manifest.labels)
        },
    )


def _reference_sample(predictor: Predictor, config: BuildConfig, eval_set: EvalSet, eval_batches: list[Batch],
                      eval_outputs: np.ndarray) -> ReferenceSample:
    """The int8 model's outputs, row by row, on the held-out split (``--reference-data``; else the evaluation
    texts, already predicted): what the monitor draws its null distributions from and calibrates confidences on.
    A split larger than ``reference_rows`` is sampled with a fixed seed."""
    if config.reference_data is None:
        texts, labels, source = eval_set.texts, eval_set.labels, eval_set.source
        batches, outputs = eval_batches, eval_outputs
    else:
        held_out = load_eval_set(config.reference_data, text_column=config.text_column,
                                 label_column=config.label_column, field="reference_data")
        texts, labels, source = held_out.texts, held_out.labels, held_out.source
        keep = np.arange(len(texts))
        if len(texts) > config.reference_rows:
            keep = np.sort(np.random.default_rng(0).choice(len(texts), config.reference_rows, replace=False))
        texts = [texts[index] for index in keep]
        labels = None if labels is None else [labels[index] for index in keep]
        batches = [predictor.encode(texts[start : start + config.batch_size])
                   for start in range(0, len(texts), config.batch_size)]
        outputs = np.concatenate([predictor.forward(batch) for batch in batches], axis=0)
    lengths = tuple(length for batch in batches for length in batch.token_lengths)
    if predictor.task != TEXT_CLASSIFICATION:
        norms = np.linalg.norm(outputs, axis=-1)  # the pooled vectors, before any normalizing: as captured
        return ReferenceSample(source=source, token_length=lengths,
                               norm=tuple(round(float(value), 6) for value in norms))
    probabilities = predictor.scores(outputs)  # the model's default function: what captures record as confidence
    predicted = probabilities.argmax(axis=-1)
    correct = None
    if labels is not None:
        truth = label_ids(EvalSet(texts=texts, labels=labels, source=source), list(predictor.manifest.labels),
                          field="reference_data")
        assert truth is not None
        correct = tuple(int(value) for value in (predicted == np.asarray(truth)))
    return ReferenceSample(
        source=source,
        token_length=lengths,
        confidence=tuple(round(float(value), 6) for value in probabilities.max(axis=-1)),
        predicted=tuple(int(value) for value in predicted),
        correct=correct,
        accuracy=None if correct is None else round(sum(correct) / len(correct), 6),
    )


def _with_sample(reference: ReferenceDistributions, sample: ReferenceSample) -> ReferenceDistributions:
    """The reference distributions with the sample and, when the sample is labelled, the calibration of its
    confidences (isotonic: confidence -> P(correct)), which the monitor's estimated accuracy applies."""
    from ferry.runtime.stats import Calibration

    calibration = None
    if sample.correct is not None and sample.confidence:
        fitted = Calibration.fit(np.asarray(sample.confidence), np.asarray(sample.correct))
        # as JSON holds it (lists, not tuples), so that the manifest in memory equals the manifest read back
        calibration = json.loads(json.dumps(
            {"method": "isotonic", "fitted_on": sample.source, "rows": sample.n, **fitted.to_dict()}))
    return dataclasses.replace(reference, sample=sample, calibration=calibration)
