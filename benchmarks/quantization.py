"""Which int8 model file and which session settings to ship: quality and speed of the candidates against the
choice before them, measured in one run on this machine.

Candidates (each from the same fp32 export):
  - before: dynamic int8 (U8S8, 7-bit per-channel weights), the export's graph as it is, every ONNX Runtime
    optimizer on at load: the choice until now;
  - fused (shipped): the same quantization after the fusions of ``ferry.layer.config.GRAPH`` are saved into the
    graph (Attention -> QAttention, exact Gelu, LayerNormalization), loaded as the Predictor loads it (its
    ``DISABLED_OPTIMIZERS`` off: SkipLayerNormalization and BiasGelu were measured slower than what they replace);
  - fused, full-range weights: the arm64 choice, on x86 (what 7-bit weights cost here, if anything);
  - static QDQ and static QOperator (fused), calibrated on 512 training tweets (MinMax, per-channel weights).
The two dynamic ones and full range go through the real `ferry build` (its parity gate included); the static ones
are made with ``onnxruntime.quantization.quantize_static`` (the build does not offer them).

Quality: with a fine-tuned classifier (``--classifier``, default ``build/models/sentiment`` when it exists), its
accuracy on the test split (``predictions/test.jsonl``) and agreement with the fp32 export, as the parity gate
measures them; for the packaged MiniLM (always), cosine to fp32 on the built-in sentences and on tweets and a
nearest-centroid sentiment classifier fitted on fp32 embeddings.

Speed: each candidate runs in a fresh process of its own (a block: ONNX Runtime's idle threads spin, so two
libraries or two sessions interleaved slow each other), 1 x 32 and 8 x 128 tokens, at 1 and 2 intra-op threads;
median session time and the whole path (tokenize, feeds, session, pooling or scores), as a ratio to `before`,
whose block runs first and again last (the spread of those two says how much this shared machine drifted).

``--sessions`` measures, on the shipped file, the session options (spinning, dynamic block base, the load-time
optimization level) and the tokenizer (encode_batch, encode_batch_fast, one text at a time), and the cold start
(import + load + first prediction in a fresh process) of `before` against the shipped file.

Run: .venv/bin/python benchmarks/quantization.py [--classifier build/models/sentiment] [--sessions] [--no-embedder]
     [--threads 2]
     (take the machine's benchmark lock first where it is shared: flock /tmp/ferry-bench.lock ...)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SHAPES = ((1, 32), (8, 128))
CALIBRATION_TEXTS = 512
BEFORE = "before: dynamic, unfused"
SHIPPED = "fused, dynamic (shipped)"


@dataclass
class Candidate:
    label: str
    file: Path
    size: int
    gate: dict[str, Any] | None = None  # the build's parity figures, when built through `ferry build`
    # ONNX Runtime optimizers turned off at load: the Predictor's (ferry.runtime.predictor.DISABLED_OPTIMIZERS), except
    # for `before`, measured as it was loaded until now (every optimizer on)
    disabled: tuple[str, ...] | None = None


# --- texts ---------------------------------------------------------------------------------------------------


def texts_of_length(tokenizer_file: Path, count: int, tokens: int, seed: int = 0) -> list[str]:
    """`count` texts of exactly `tokens` tokens with [CLS] and [SEP] (tweets joined, then cut at a word)."""
    import random

    from tokenizers import Tokenizer

    from ferry.data.corpus import load_corpus

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()

    def length(words: list[str]) -> int:
        return len(tokenizer.encode(" ".join(words)).ids)

    pool = [example.text for example in load_corpus().examples]
    random.Random(seed).shuffle(pool)
    source = iter(pool)
    found: list[str] = []
    while len(found) < count:
        words: list[str] = []
        while length(words) < tokens:
            words.extend(next(source).split())
        while length(words) > tokens:
            words.pop()
        if length(words) == tokens:
            found.append(" ".join(words))
    return found


def calibration_texts(count: int = CALIBRATION_TEXTS) -> list[str]:
    """Tweets of the training split (never the test split the accuracy is measured on)."""
    from ferry.data.dataset import load_dataset

    train = load_dataset("default").splits["train"]
    picked = np.random.default_rng(1).choice(len(train), size=min(count, len(train)), replace=False)
    return [train[index].text for index in picked]


def feeds_of(tokenizer: Any, texts: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(list(texts))
    arrays = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
              "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
              "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
    return {name: arrays[name] for name in names}


def runtime_tokenizer(tokenizer_file: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding()
    return tokenizer


# --- candidates ------------------------------------------------------------------------------------------------


def build_candidates(model: str, task: str, work: Path, eval_data: Path | None, max_length: int) -> list[Candidate]:
    """The dynamic candidates through `ferry build`, the static ones with quantize_static; the fp32 export too."""
    from ferry.layer import BuildConfig, GateThresholds, GraphSettings, QuantizationSettings, build_layer
    from ferry.layer import export as exporting
    from ferry.layer.source import resolve_source

    no_gate = GateThresholds(max_accuracy_drop=100.0, min_agreement=0.0, min_cosine=-1.0)  # measure, never refuse
    built = {
        BEFORE: BuildConfig(model=model, task=task, out=work / "layers", name="before", eval_data=eval_data,
                            gate=no_gate, graph_override=GraphSettings(fusions=())),
        SHIPPED: BuildConfig(model=model, task=task, out=work / "layers", name="shipped", eval_data=eval_data,
                             gate=no_gate),
        "fused, dynamic, full-range weights": BuildConfig(
            model=model, task=task, out=work / "layers", name="full-range", eval_data=eval_data, gate=no_gate,
            quantization_override=QuantizationSettings(reduce_range=False)),
    }
    candidates = []
    for label, config in built.items():
        result = build_layer(config)
        candidates.append(Candidate(label, result.model_dir / "model.onnx", result.int8_bytes, result.parity.to_dict(),
                                    disabled=() if label == BEFORE else None))
    fp32 = exporting.export_onnx(resolve_source(model, task).path, task, work / "fp32")
    exporting.write_tokenizer(work / "fp32" / "tokenizer.json", work / "tokenizer.json")
    fused, _ = exporting.optimize_graph(fp32, GraphSettings(), work / "fused-fp32")
    tokenizer = runtime_tokenizer(work / "tokenizer.json", max_length)
    texts = calibration_texts()
    for label, source, quant_format in (("static QDQ, calibrated", fp32, "QDQ"),
                                        ("fused, static QOperator, calibrated", fused, "QOperator")):
        target = work / f"{quant_format.lower()}.onnx"
        quantize_static_int8(source, target, quant_format, tokenizer, texts)
        candidates.append(Candidate(label, target, target.stat().st_size))
    candidates.append(Candidate("fp32 export", fp32, fp32.stat().st_size))
    return candidates


def quantize_static_int8(source: Path, target: Path, quant_format: str, tokenizer: Any, texts: Sequence[str]) -> None:
    """Static int8 (U8S8, per-channel 7-bit weights as the dynamic choice; MatMuls with constant weights and the
    embeddings), the activations' ranges calibrated (MinMax) on `texts`, 16 at a time."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # typed tensors everywhere (symbolic shape inference knows the fused contrib ops): the calibrator only
    # measures tensors whose type it knows, and the MatMuls after a fused op would otherwise have no range
    typed = target.with_name(f"{target.stem}-typed.onnx")
    quant_pre_process(str(source), str(typed), skip_optimization=True, auto_merge=True)
    source = typed
    names = [graph_input.name for graph_input in onnx.load(str(source), load_external_data=False).graph.input]
    batches = [feeds_of(tokenizer, texts[start:start + 16], names) for start in range(0, len(texts), 16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.left, None)

        def rewind(self) -> None:
            self.left = iter(batches)

    quantize_static(str(source), str(target), Reader(), quant_format=getattr(QuantFormat, quant_format),
                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather", "EmbedLayerNormalization"],
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": True,
                                   "DefaultTensorType": onnx.TensorProto.FLOAT})


# --- quality ---------------------------------------------------------------------------------------------------


def session(file: Path, threads: int = 2) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def outputs(file: Path, tokenizer: Any, texts: Sequence[str], pooled: bool, batch: int = 64) -> np.ndarray:
    """Logits, or unit-length mean-pooled vectors, of `texts` through the model file."""
    from ferry.runtime.predictor import l2_normalize, mean_pool

    running = session(file)
    names = [graph_input.name for graph_input in running.get_inputs()]
    found = []
    for start in range(0, len(texts), batch):
        feeds = feeds_of(tokenizer, texts[start:start + batch], [*names, "attention_mask"])
        output = running.run(None, {name: feeds[name] for name in names})[0]
        found.append(l2_normalize(mean_pool(output, feeds["attention_mask"])) if pooled else output)
    return np.concatenate(found)


def classifier_quality(candidates: Sequence[Candidate], tokenizer: Any, texts: Sequence[str],
                       truth: np.ndarray) -> dict[str, dict[str, float]]:
    reference = outputs(candidates[-1].file, tokenizer, texts, pooled=False).argmax(axis=-1)
    figures = {"fp32 export": {"accuracy": float(np.mean(reference == truth)), "agreement": 1.0}}
    for candidate in candidates[:-1]:
        predicted = outputs(candidate.file, tokenizer, texts, pooled=False).argmax(axis=-1)
        figures[candidate.label] = {"accuracy": float(np.mean(predicted == truth)),
                                    "agreement": float(np.mean(predicted == reference))}
    return figures


def embedder_quality(candidates: Sequence[Candidate], tokenizer: Any) -> dict[str, dict[str, float]]:
    from ferry.data.corpus import load_corpus
    from ferry.layer.evalset import builtin_eval_set

    examples = load_corpus().examples
    picked = np.random.default_rng(0).choice(len(examples), size=1500, replace=False)
    tweets = [examples[index].text for index in picked]
    labels = np.array([examples[index].label == "positive" for index in picked], dtype=int)
    half = len(tweets) // 2
    sentences = builtin_eval_set().texts
    fp32 = candidates[-1].file
    ref_sentences, ref_tweets = outputs(fp32, tokenizer, sentences, True), outputs(fp32, tokenizer, tweets, True)
    centroids = np.stack([ref_tweets[:half][labels[:half] == label].mean(axis=0) for label in (0, 1)])
    reference = np.argmax(ref_tweets[half:] @ centroids.T, axis=-1)
    figures = {"fp32 export": {"accuracy": float(np.mean(reference == labels[half:])), "agreement": 1.0}}
    for candidate in candidates[:-1]:
        cos_sentences = np.sum(outputs(candidate.file, tokenizer, sentences, True) * ref_sentences, axis=-1)
        vectors = outputs(candidate.file, tokenizer, tweets, True)
        cos_tweets = np.sum(vectors * ref_tweets, axis=-1)
        predicted = np.argmax(vectors[half:] @ centroids.T, axis=-1)
        figures[candidate.label] = {"cos_min_sentences": float(cos_sentences.min()),
                                    "cos_mean_sentences": float(cos_sentences.mean()),
                                    "cos_min_tweets": float(cos_tweets.min()),
                                    "accuracy": float(np.mean(predicted == labels[half:])),
                                    "agreement": float(np.mean(predicted == reference))}
    return figures


# --- speed: one block per process ------------------------------------------------------------------------------

_WORKER_FLAG = "--worker"


def worker(argv: Sequence[str]) -> None:
    """One block: load `file` with the given session settings, then time it at every shape. Prints JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spinning", type=int, default=1)
    parser.add_argument("--block-base", type=int, default=0)
    parser.add_argument("--level", default="ALL")
    parser.add_argument("--disable", default=None,
                        help="ONNX Runtime optimizers not to run at load, comma-separated (default: the Predictor's)")
    parser.add_argument("--pooled", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--texts", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import onnxruntime as ort

    from ferry.runtime.predictor import mean_pool

    imported = time.perf_counter()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{args.level}")
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", str(args.spinning))
    if args.block_base:
        options.add_session_config_entry("session.dynamic_block_base", str(args.block_base))
    from ferry.runtime.predictor import DISABLED_OPTIMIZERS

    disabled = list(DISABLED_OPTIMIZERS) if args.disable is None else [name for name in args.disable.split(",") if name]
    running = ort.InferenceSession(str(args.file), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled or None)
    loaded = time.perf_counter()
    tokenizer = runtime_tokenizer(args.tokenizer, 512)
    names = [graph_input.name for graph_input in running.get_inputs()]
    texts = json.loads(args.texts.read_text())
    figures: dict[str, Any] = {"import_s": imported - started, "load_s": loaded - imported}
    for count, tokens in SHAPES:
        batch = texts[f"{count}x{tokens}"]
        feeds = feeds_of(tokenizer, batch, [*names, "attention_mask"])
        graph_feeds = {name: feeds[name] for name in names}

        def whole(batch: list[str] = batch) -> None:
            new = feeds_of(tokenizer, batch, [*names, "attention_mask"])
            output = running.run(None, {name: new[name] for name in names})[0]
            if args.pooled:
                mean_pool(output, new["attention_mask"])

        repeats = args.repeats if tokens <= 32 else max(30, args.repeats // 6)
        figures[f"{count}x{tokens}"] = {"run_ms": median_ms(lambda f=graph_feeds: running.run(None, f), repeats),
                                        "whole_ms": median_ms(whole, repeats)}
    print(json.dumps(figures))


def median_ms(call: Callable[[], Any], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def block(file: Path, tokenizer: Path, texts: Path, *, threads: int, pooled: bool, repeats: int,
          **options: int | str) -> dict[str, Any]:
    extra = [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]
    completed = subprocess.run(
        [sys.executable, __file__, _WORKER_FLAG, str(file), str(tokenizer), "--threads", str(threads),
         "--pooled", str(int(pooled)), "--repeats", str(repeats), "--texts", str(texts), *extra],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def speed(candidates: Sequence[Candidate], tokenizer: Path, texts: Path, pooled: bool, repeats: int,
          threads: Sequence[int]) -> dict[tuple[str, int], dict[str, Any]]:
    """Every candidate's block at each thread count; `before` first and again last (its figures: the mean)."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for count in threads:
        order = [*candidates, candidates[0]]
        runs = [(candidate.label, block(candidate.file, tokenizer, texts, threads=count, pooled=pooled,
                                        repeats=repeats, **_load_options(candidate))) for candidate in order]
        first, last = runs[0][1], runs[-1][1]
        for label, figures in runs[1:-1]:
            found[(label, count)] = figures
        shapes = [f"{n}x{t}" for n, t in SHAPES]
        found[(candidates[0].label, count)] = {
            **first, **{shape: {key: (first[shape][key] + last[shape][key]) / 2 for key in first[shape]}
                        for shape in shapes},
            "drift": {shape: round(last[shape]["run_ms"] / first[shape]["run_ms"], 3) for shape in shapes},
        }
    return found


def _load_options(candidate: Candidate) -> dict[str, str]:
    return {} if candidate.disabled is None else {"disable": ",".join(candidate.disabled)}


# --- report ----------------------------------------------------------------------------------------------------


def cpu_description() -> str:
    """The CPU model and the int8-relevant instruction sets: the saturation question depends on them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    lines = info.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return f"{model}; {', '.join(flag for flag in wanted if flag in flags) or 'no AVX2'}; {os.cpu_count()} CPUs"


def speed_table(candidates: Sequence[Candidate], timings: dict[tuple[str, int], dict[str, Any]],
                threads: Sequence[int]) -> list[str]:
    lines = ["| candidate | size MB | " + " | ".join(f"{n}x{t} {c}T session (whole path)" for c in threads
                                                   for n, t in SHAPES) + " | load ms |",
             "|---|---|" + "---|" * (len(threads) * len(SHAPES) + 1)]
    for candidate in candidates:
        cells = []
        for count in threads:
            base, mine = timings[(candidates[0].label, count)], timings[(candidate.label, count)]
            for n, t in SHAPES:
                shape = f"{n}x{t}"
                cells.append(f"{mine[shape]['run_ms'] / base[shape]['run_ms']:.2f}x ({mine[shape]['run_ms']:.2f} ms; "
                             f"{mine[shape]['whole_ms'] / base[shape]['whole_ms']:.2f}x)")
        load = timings[(candidate.label, threads[-1])]["load_s"] * 1000
        lines.append(f"| {candidate.label} | {candidate.size / 1e6:.1f} | {' | '.join(cells)} | {load:.0f} |")
    drift = {count: timings[(candidates[0].label, count)]["drift"] for count in threads}
    lines.append(f"`before` ran first and last; last/first session time: {json.dumps(drift)}")
    return lines


def quality_table(figures: dict[str, dict[str, float]]) -> list[str]:
    keys = list(next(iter(figures.values())).keys() | set().union(*(set(row) for row in figures.values())))
    keys.sort(key=["accuracy", "agreement", "cos_min_sentences", "cos_mean_sentences", "cos_min_tweets"].index)
    lines = ["| candidate | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for label, row in figures.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[key]:.4f}" if key in row else "" for key in keys) + " |")
    return lines


# --- session settings, tokenizer and cold start (--sessions) -----------------------------------------------------


def sessions(shipped: Path, tokenizer: Path, texts: Path, pooled: bool, repeats: int) -> list[str]:
    settings = [("2 threads, spinning (ONNX Runtime's default)", {"threads": 2}),
                ("2 threads, no spinning", {"threads": 2, "spinning": 0}),
                ("2 threads, dynamic block base 4", {"threads": 2, "block_base": 4}),
                ("2 threads, optimized at load to EXTENDED only", {"threads": 2, "level": "EXTENDED"}),
                ("1 thread, spinning", {"threads": 1}),
                ("1 thread, no spinning", {"threads": 1, "spinning": 0})]
    runs = [(label, block(shipped, tokenizer, texts, pooled=pooled, repeats=repeats, **options))  # type: ignore[arg-type]
            for label, options in [*settings, settings[0]]]
    base = runs[0][1]
    lines = ["| session settings (shipped file) | " + " | ".join(f"{n}x{t}" for n, t in SHAPES) + " | load ms |",
             "|---|" + "---|" * (len(SHAPES) + 1)]
    for label, figures in runs[:-1]:
        cells = [f"{figures[f'{n}x{t}']['run_ms'] / base[f'{n}x{t}']['run_ms']:.2f}x "
                 f"({figures[f'{n}x{t}']['run_ms']:.2f} ms)" for n, t in SHAPES]
        lines.append(f"| {label} | {' | '.join(cells)} | {figures['load_s'] * 1000:.0f} |")
    last = runs[-1][1]
    lines.append("default settings ran first and last; last/first: " + ", ".join(
        f"{n}x{t} {last[f'{n}x{t}']['run_ms'] / base[f'{n}x{t}']['run_ms']:.2f}" for n, t in SHAPES))
    return [*lines, "", *tokenizer_table(tokenizer, texts, repeats)]


def tokenizer_table(tokenizer_file: Path, texts_file: Path, repeats: int) -> list[str]:
    tokenizer = runtime_tokenizer(tokenizer_file, 512)
    texts = json.loads(texts_file.read_text())
    lines = ["| tokenizer (ms) | " + " | ".join(f"{n}x{t}" for n, t in SHAPES) + " |",
             "|---|" + "---|" * len(SHAPES)]
    ways: dict[str, Callable[[list[str]], Any]] = {
        "encode_batch": tokenizer.encode_batch,
        "encode_batch_fast (no offsets)": tokenizer.encode_batch_fast,
        "encode, one text at a time": lambda batch: [tokenizer.encode(text) for text in batch],
    }
    for label, encode in ways.items():
        cells = [f"{median_ms(lambda b=texts[f'{n}x{t}'], e=encode: e(b), repeats):.3f}" for n, t in SHAPES]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def cold_starts(layers: dict[str, Path], rounds: int = 5) -> list[str]:
    """Import + load + first prediction of each layer in fresh processes, alternating, median of `rounds`."""
    from ferry.layer.packaging import measure_fresh_load  # the build's own probe

    steps = ("import_s", "load_s", "first_prediction_s")
    found: dict[str, list[dict[str, float]]] = {label: [] for label in layers}
    for _ in range(rounds):
        for label, model_dir in layers.items():
            found[label].append(measure_fresh_load(model_dir))
    lines = [f"| cold start, fresh process (median of {rounds}) | import s | load s | first prediction ms | total s |",
             "|---|---|---|---|---|"]
    for label, runs in found.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in steps}
        lines.append(f"| {label} | {medians['import_s']:.3f} | {medians['load_s']:.3f} | "
                     f"{medians['first_prediction_s'] * 1000:.1f} | {sum(medians.values()):.3f} |")
    return lines


# --- main ------------------------------------------------------------------------------------------------------


def run_model(model: str, task: str, work: Path, eval_data: Path | None, args: argparse.Namespace) -> list[str]:
    from ferry.layer.evalset import label_ids, load_eval_set
    from ferry.layer.source import resolve_source

    source = resolve_source(model, task)
    max_length = source.default_max_length()
    candidates = build_candidates(model, task, work, eval_data, max_length)
    tokenizer_file = work / "tokenizer.json"
    tokenizer = runtime_tokenizer(tokenizer_file, max_length)
    lines = [f"## {model} ({task}, max_length {max_length})", ""]
    if task == "text-classification":
        evaluation = load_eval_set(eval_data)
        truth = np.asarray(label_ids(evaluation, source.labels()))
        quality = classifier_quality(candidates, tokenizer, evaluation.texts, truth)
        lines.append(f"Accuracy on {len(truth)} texts of {eval_data}; agreement with the fp32 export:")
    else:
        quality = embedder_quality(candidates, tokenizer)
        lines.append("Cosine to the fp32 export (built-in sentences, 750 held-out tweets); a nearest-centroid "
                     "sentiment classifier fitted on fp32 embeddings:")
    lines += ["", *quality_table(quality), ""]
    for candidate in candidates:
        if candidate.gate is not None:
            figures = {key: value for key, value in candidate.gate.items() if isinstance(value, float)}
            lines.append(f"- gate of `ferry build`, {candidate.label}: " + ", ".join(
                f"{key} {value:.4f}" for key, value in figures.items()))
    texts = work / "texts.json"
    texts.write_text(json.dumps({f"{n}x{t}": texts_of_length(tokenizer_file, n, t) for n, t in SHAPES}))
    timed = [candidate for candidate in candidates if candidate.label != "fp32 export"]
    timings = speed(timed, tokenizer_file, texts, task != "text-classification", args.repeats, args.threads)
    lines += ["", "Speed, median, as a ratio to `before` (session run; in brackets the whole path's ratio):", "",
              *speed_table(timed, timings, args.threads)]
    if args.sessions:
        lines += ["", *sessions(timed[1].file, tokenizer_file, texts,
                                task != "text-classification", args.repeats), ""]
        lines += cold_starts({BEFORE: timed[0].file.parent, SHIPPED: timed[1].file.parent})
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == _WORKER_FLAG:
        worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_classifier = ROOT / "build/models/sentiment"
    parser.add_argument("--classifier", type=Path,
                        default=default_classifier if (default_classifier / "config.json").is_file() else None,
                        help="a fine-tuned classifier with predictions/test.jsonl (default build/models/sentiment)")
    parser.add_argument("--no-embedder", dest="embedder", action="store_false", help="skip the packaged MiniLM")
    parser.add_argument("--no-classifier", dest="classifier", action="store_const", const=None,
                        help="skip the fine-tuned classifier")
    parser.add_argument("--sessions", action="store_true", help="session settings, tokenizer and cold start too")
    parser.add_argument("--repeats", type=int, default=300, help="runs at 1 x 32 tokens (8 x 128: a sixth)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="keep the candidates' files in this folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-quant-")) if args.keep is None else args.keep
    lines = [f"CPU: {cpu_description()}", f"onnxruntime {__import__('onnxruntime').__version__}", ""]
    try:
        if args.classifier is not None:
            test_split = args.classifier / "predictions" / "test.jsonl"
            found = run_model(str(args.classifier), "text-classification", work / "classifier", test_split, args)
            lines += [*found, ""]
        if args.embedder:
            lines += run_model(MINILM, "feature-extraction", work / "embedder", None, args)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
