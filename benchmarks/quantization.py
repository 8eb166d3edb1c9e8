"""Which int8 settings to ship: accuracy, agreement and speed of the candidates on the packaged MiniLM.

Each candidate goes through the real `ferry build` (Optimum export, ORT dynamic quantization), then is
compared with the fp32 ONNX export of the same model in the same run:
  - cosine of its embeddings to fp32 on the built-in sentences and on tweets (min / mean);
  - a downstream task: a nearest-centroid sentiment classifier fitted on fp32 embeddings of tweets,
    evaluated on held-out tweets with the candidate's embeddings (accuracy, agreement with fp32);
  - speed: median latency at 1 x ~32 and 8 x ~32 tokens, as a ratio to fp32 ONNX (2 threads).

Run: .venv/bin/python benchmarks/quantization.py [--tweets 1500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import onnxruntime as ort

from ferry.data.corpus import load_corpus
from ferry.layer import BuildConfig, GateThresholds, QuantizationSettings, build_layer
from ferry.layer.evalset import builtin_eval_set
from ferry.layer.export import export_onnx
from ferry.layer.source import resolve_source
from ferry.runtime import Predictor

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CANDIDATES = {
    "U8S8 full range (avx512_vnni preset)": QuantizationSettings(reduce_range=False),
    "U8S8 7-bit weights (reduce_range)": QuantizationSettings(reduce_range=True),
    "U8U8 (avx2 preset)": QuantizationSettings(weights="uint8", reduce_range=False),
}


def embed(predictor: Predictor, texts: list[str], batch: int = 64) -> np.ndarray:
    return np.concatenate([predictor.embed(texts[i : i + batch], normalize=True) for i in range(0, len(texts), batch)])


def latency_ms(predictor: Predictor, texts: list[str], repeats: int) -> float:
    batch = predictor.encode(texts)
    predictor.forward(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.forward(batch)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def cpu_description() -> str:
    """The CPU model and the int8-relevant instruction sets: the saturation question depends on them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return f"{model}; {', '.join(flag for flag in wanted if flag in flags) or 'no AVX2'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tweets", type=int, default=1500, help="tweets to embed (half fit, half evaluate)")
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()

    corpus = load_corpus()
    rng = np.random.default_rng(0)
    picked = rng.choice(len(corpus.examples), size=args.tweets, replace=False)
    tweets = [corpus.examples[i].text for i in picked]
    labels = np.array([corpus.examples[i].label == "positive" for i in picked], dtype=int)
    half = len(tweets) // 2
    sentences = builtin_eval_set().texts
    short = [t for t in tweets if 25 <= len(t.split()) <= 30][:8] or tweets[:8]

    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    fp32_file = export_onnx(resolve_source(MODEL, "feature-extraction").path, "feature-extraction", work / "fp32")
    results = {}
    for label, settings in CANDIDATES.items():
        config = BuildConfig(model=MODEL, task="feature-extraction", out=work / "layers", name="minilm",
                             gate=GateThresholds(min_cosine=-1.0), quantization_override=settings)
        built = build_layer(config)
        results[label] = (Predictor.load(built.layer_dir, threads=2), built.int8_bytes)
        (work / label.replace(" ", "_")).mkdir()
        built.layer_dir.rename(work / label.replace(" ", "_") / "layer")

    int8_any = next(iter(results.values()))[0]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    fp32 = Predictor(int8_any.manifest, ort.InferenceSession(str(fp32_file), options), int8_any.tokenizer,
                     fp32_file.parent)
    ref_sent, ref_tweets = embed(fp32, sentences), embed(fp32, tweets)
    centroids = np.stack([ref_tweets[:half][labels[:half] == c].mean(axis=0) for c in (0, 1)])

    def classify(vectors: np.ndarray) -> np.ndarray:
        return np.argmax(vectors @ centroids.T, axis=-1)

    ref_pred = classify(ref_tweets[half:])
    base_1, base_8 = latency_ms(fp32, short[:1], args.repeats), latency_ms(fp32, short, args.repeats)
    fp32_mb = fp32_file.stat().st_size / 1e6
    print(f"CPU: {cpu_description()}")
    print(f"MiniLM (all-MiniLM-L6-v2), {len(sentences)} built-in sentences + {len(tweets) - half} held-out tweets;"
          f" fp32 ONNX {fp32_mb:.1f} MB; accuracy fp32 (nearest centroid) {np.mean(ref_pred == labels[half:]):.4f}")
    print("| candidate | size MB | cos min (sent) | cos mean (sent) | cos min (tweets) | accuracy | agreement "
          "| 1x32 vs fp32 | 8x32 vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, (predictor, size) in results.items():
        cos_sent = np.sum(embed(predictor, sentences) * ref_sent, axis=-1)
        cand_tweets = embed(predictor, tweets)
        cos_tweets = np.sum(cand_tweets * ref_tweets, axis=-1)
        pred = classify(cand_tweets[half:])
        one, eight = latency_ms(predictor, short[:1], args.repeats), latency_ms(predictor, short, args.repeats)
        print(f"| {label} | {size / 1e6:.1f} | {cos_sent.min():.4f} | {cos_sent.mean():.4f} | {cos_tweets.min():.4f} "
              f"| {np.mean(pred == labels[half:]):.4f} | {np.mean(pred == ref_pred):.4f} "
              f"| {one / base_1:.2f}x ({one:.1f} ms) | {eight / base_8:.2f}x ({eight:.1f} ms) |")
    print(f"fp32 ONNX baseline: 1x32 {base_1:.1f} ms, 8x32 {base_8:.1f} ms")


if __name__ == "__main__":
    main()
