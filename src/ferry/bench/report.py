"""The bench's figures from its raw measurements, and its three outputs: bench.json (everything), bench.md (the
table for the README, the floors, the load test and the cost) and bench.png (latency ratios, cold start and peak RSS
side by side). Every ratio is against the PyTorch pipeline measured in the same run, at the same thread count."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.bench.cost import CaptureInputs, cost_table
from ferry.bench.machine import cpu_line
from ferry.bench.stats import summary

if TYPE_CHECKING:
    from ferry.bench.config import BenchConfig
    from ferry.bench.run import Candidate, Inputs, Target
    from ferry.bench.texts import TestSplit

BASELINE = "pytorch"
FLOORED = "predictor-int8"
MB = 2**20
COLD_STEPS = ("process_s", "import_s", "load_s", "first_s")
TABLE_SHAPES = ("1x32", "8x128")


def cold_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each step over the fresh processes, their total, and the peak RSS after the first answer."""
    steps = {step: statistics.median(run[step] for run in runs) for step in COLD_STEPS}
    totals = [sum(run[step] for step in COLD_STEPS) for run in runs]
    return {**steps, "total_s": statistics.median(totals), "total_s_each": totals,
            "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in runs), "runs": len(runs)}


def accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float | None:
    if not predicted:
        return None
    return sum(guess == label for guess, label in zip(predicted, truth, strict=True)) / len(truth)


def candidate_figures(candidate: Candidate, measured: dict[str, Any], truth: Sequence[str]) -> dict[str, Any]:
    threads: dict[str, Any] = {}
    predictions: list[str] = []
    for count, run in measured["runs"].items():
        threads[count] = {"latency_ms": {shape: summary(times) for shape, times in run["latency_ms"].items()},
                          "peak_rss_mb": run["peak_rss_mb"], "cold": run["cold"], "modules": run["modules"],
                          "tokens_computed": run["tokens_computed"], "rounds": run["rounds"],
                          "load_average": run["load_average"]}
        predictions = run.get("predictions") or predictions
    return {"id": candidate.id, "label": candidate.label, "short": candidate.short,
            "artifact_bytes": sum(path.stat().st_size for path in candidate.files),
            "artifact_files": [str(path) for path in candidate.files], "threads": threads,
            "cold_start": {**cold_summary(measured["cold_runs"]), "from": measured["cold_from"]},
            "accuracy": accuracy(predictions, truth), "predictions": predictions}


def ratios(candidate: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups (baseline / candidate: above 1 is faster), RSS and size as fractions of the baseline's, and the
    accuracy difference in points, per thread count."""
    found: dict[str, Any] = {}
    for count, figures in candidate["threads"].items():
        base = baseline["threads"].get(count)
        if base is None:
            continue
        found[count] = {f"speedup_{shape}": base["latency_ms"][shape]["p50"] / stats["p50"]
                        for shape, stats in figures["latency_ms"].items()}
        found[count]["rss_fraction"] = figures["peak_rss_mb"] / base["peak_rss_mb"]
    shared = {"cold_start_speedup": baseline["cold_start"]["total_s"] / candidate["cold_start"]["total_s"],
              "size_fraction": candidate["artifact_bytes"] / baseline["artifact_bytes"],
              "accuracy_points": None, "agreement_with_pytorch": None}
    if candidate["accuracy"] is not None and baseline["accuracy"] is not None:
        shared["accuracy_points"] = (candidate["accuracy"] - baseline["accuracy"]) * 100
        shared["agreement_with_pytorch"] = accuracy(candidate["predictions"], baseline["predictions"])
    return {"by_threads": found, **shared}


def floors(candidate: dict[str, Any], threads: str, vnni: bool) -> list[dict[str, Any]]:
    """The issue's floors for the int8 Predictor against PyTorch (2 cores with VNNI; elsewhere they are reported)."""
    ratio = candidate["ratios"]
    at = ratio["by_threads"].get(threads, {})
    checks = [
        ("p50 1x32 speed-up", at.get("speedup_1x32"), ">=", 5.0),
        ("p50 8x128 speed-up", at.get("speedup_8x128"), ">=", 3.0),
        ("cold start speed-up (aim 20x)", ratio["cold_start_speedup"], ">=", 10.0),
        ("peak RSS fraction", at.get("rss_fraction"), "<=", 0.3),
        ("accuracy difference, points (aim 0.3)",
         None if ratio["accuracy_points"] is None else abs(ratio["accuracy_points"]), "<=", 0.5),
    ]
    return [{"name": name, "value": value, "op": op, "floor": floor, "threads": int(threads), "binding": vnni,
             "passed": value is not None and (value >= floor if op == ">=" else value <= floor)}
            for name, value, op, floor in checks]


def capture_inputs(capture: dict[str, Any]) -> CaptureInputs:
    lines, item, function, template = capture["lines"], capture["item"], capture["function"], capture["template"]
    return CaptureInputs(
        log_bytes_per_prediction={1: lines["bytes_one_text_request"], 8: lines["bytes_eight_text_request"] / 8},
        record_bytes=lines["capture_line_bytes"] - lines["line_without_record_bytes"],
        platform_bytes_per_invocation=lines["platform_bytes_per_invocation"],
        wru_per_capture=item["wru_per_capture"], item_bytes=item["item_bytes"], indexes=item["indexes"],
        function_ms=function["as_built_ms"], batched_function_ms=function["batched_ms"],
        capture_memory_mb=template["capture_memory_mb"], capture_ttl_days=template["capture_ttl_days"])


def cost(config: BenchConfig, handler: dict[str, Any], capture: dict[str, Any]) -> dict[str, Any]:
    latency = {shape: {int(count): figures["latency_ms"][shape]["mean"]
                       for count, figures in handler["threads"].items()} for shape in ("1x32", "8x32")}
    rss = max(figures["peak_rss_mb"] for figures in handler["threads"].values())
    table = cost_table(latency, capture_inputs(capture), config.memory_mb, rss, config.prices)
    table["latency_ms_used"] = {shape: {str(k): v for k, v in by.items()} for shape, by in latency.items()}
    return table


def document(config: BenchConfig, target: Target, machine: dict[str, Any], split: TestSplit, inputs: Inputs,
             cands: Sequence[Candidate], measured: dict[str, Any], capture: dict[str, Any],
             load: dict[str, Any]) -> dict[str, Any]:
    truth = [row.label for row in inputs.accuracy]
    figures = [candidate_figures(candidate, measured[candidate.id], truth) for candidate in cands]
    baseline = next(item for item in figures if item["id"] == BASELINE)
    for item in figures:
        item["ratios"] = ratios(item, baseline)
    table_threads = str(max(config.threads))
    floored = next(item for item in figures if item["id"] == FLOORED)
    rows = len(inputs.accuracy)
    return {
        "schema": 1,
        "model": {"name": target.manifest.name, "version": target.manifest.version, "labels": target.manifest.labels,
                  "max_length": target.manifest.max_length, "layer": str(target.layer), "source": str(target.source),
                  "quantization": target.manifest.quantization},
        "machine": machine,
        "settings": {"quick": config.quick, "repeats": config.count("repeats"), "rounds": config.count("rounds"),
                     "warmup": config.warmup,
                     "threads": list(config.threads), "table_threads": int(table_threads),
                     "cold_runs": config.count("cold_runs"), "memory_mb": list(config.memory_mb)},
        "texts": {"test_split": split.source, "test_rows": len(split.rows),
                  "accuracy_rows": rows, "accuracy_sample": "all rows" if rows == len(split.rows)
                  else f"{rows} rows evenly spaced over the file (the same for every candidate)",
                  "shapes": {name: shape.to_dict() for name, shape in inputs.shapes.items()},
                  "method": "32-token texts: test tweets picked by token count; 128-token texts: test tweets joined "
                            "word by word up to 128 tokens (the model's tokenizer, specials included); for these "
                            "every candidate's truncation is lifted to the longest text, so each computes the same "
                            f"tokens (the model serves {target.manifest.max_length} tokens at most: its accuracy is "
                            "measured truncated there, as served)"},
        "candidates": figures,
        "floors": floors(floored, table_threads, bool(machine["vnni"])),
        "load_test": load,
        "capture": capture,
        "cost": cost(config, next(item for item in figures if item["id"] == "handler-int8"), capture),
        "prices": config.prices.to_dict(),
    }


def write(document: dict[str, Any], out: Path) -> list[Path]:
    from ferry.bench.markdown import markdown

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json", out / "bench.md"]
    written[0].write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    written[1].write_text(markdown(document), encoding="utf-8")
    from ferry.bench.chart import chart

    picture = chart(document, out / "bench.png")
    if picture is not None:
        written.append(picture)
    document["files"] = [str(path) for path in written]
    return written


def cpu_of(document: dict[str, Any]) -> str:
    return cpu_line(document["machine"])
