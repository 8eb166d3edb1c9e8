"""One bench run, in order: check the inputs, state the machine, pick the texts, export the fp32 ONNX (once, kept
in the out folder), run each candidate in processes of its own (each thread count, then the fresh-process cold
starts), measure what capture costs, load the local API, price it all, and write bench.json, bench.md and bench.png.

Nothing heavy is imported here: torch, transformers and optimum load only in the candidates' own processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.bench import capture as capture_cost
from ferry.bench import texts as bench_texts
from ferry.bench.config import BenchConfig
from ferry.bench.exceptions import BenchError, CandidateFailedError, InvalidBenchConfigError
from ferry.bench.handler import PREDICT_EVENT, PREDICT_FUNCTION, lambda_environment, predict_event
from ferry.bench.machine import describe_machine
from ferry.runtime.constants import MODEL_FILE, TEXT_CLASSIFICATION, TOKENIZER_FILE
from ferry.runtime.manifest import Manifest

Progress = Callable[[str], None]
WORKER_TIMEOUT_S = 3600
FP32_DIR = "onnx-fp32"  # in the out folder: Optimum's export of the source, and the Predictor's fp32 model folder


def _silent(_: str) -> None:
    pass


@dataclass(frozen=True)
class Target:
    """The model benchmarked: its int8 layer, its model folder in it, its manifest, its fp32 source, the project."""

    layer: Path
    model_dir: Path
    manifest: Manifest
    source: Path
    root: Path


@dataclass(frozen=True)
class Candidate:
    id: str
    label: str
    short: str  # for the chart
    kind: str  # the worker's candidate (ferry.bench.worker.CANDIDATES)
    path: Path  # what it loads
    files: list[Path] = field(default_factory=list)  # its artifact on disk
    verify: bool = True


def locate(config: BenchConfig) -> Target:
    """The inputs, checked before anything runs; each problem is one clear message (exit status 2)."""
    from ferry.runtime.layout import layer_dir, model_dir_in_layer

    layers = config.layers_dir
    if not layers.is_dir():
        raise InvalidBenchConfigError(f"{layers}: no such folder of layers; build the models first (make models)",
                                      field="layers_dir")
    layer = layer_dir(layers, config.model)
    model_dir = model_dir_in_layer(layer, config.model)
    if not (model_dir / "manifest.json").is_file():
        known = sorted(path.name for path in layers.iterdir() if (path / "models").is_dir())
        raise InvalidBenchConfigError(f"{config.model!r} is not a model layer of {layers} (found: "
                                      f"{', '.join(known) or 'none'}); build it first (make models)", field="model")
    manifest = Manifest.load(model_dir)
    if manifest.task != TEXT_CLASSIFICATION:
        raise InvalidBenchConfigError(f"{config.model!r} is {manifest.task}: the bench compares text-classification "
                                      "models with the transformers pipeline", field="model")
    source = config.source_dir
    if not (source / "config.json").is_file():
        raise InvalidBenchConfigError(f"{source}: not the fp32 Hugging Face folder of {config.model!r} (no "
                                      "config.json); name it, e.g. build/models/NAME", field="source")
    root = config.root
    for needed in (PREDICT_FUNCTION / "app.py", PREDICT_EVENT, Path("template.yaml")):
        if not (root / needed).is_file():
            raise InvalidBenchConfigError(f"{root.resolve()} has no {needed}: run from the project folder")
    return Target(layer.resolve(), model_dir.resolve(), manifest, source.resolve(), root.resolve())


def token_counter(model_dir: Path) -> bench_texts.Counter:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda texts: [len(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))]


def files_size(paths: Sequence[Path]) -> int:
    return sum(path.stat().st_size for path in paths if path.is_file())


# -- the candidates' processes ------------------------------------------------------------------------------------

class Workers:
    """Runs :mod:`ferry.bench.worker` processes one at a time, each with its spec and result file under `work`."""

    def __init__(self, work: Path, progress: Progress):
        self.work = work
        self.progress = progress
        self.count = 0

    def run(self, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        self.count += 1
        stem = f"{self.count:02d}-{spec.get('candidate_id', spec['mode'])}"
        spec_file, result_file = self.work / f"{stem}.spec.json", self.work / f"{stem}.result.json"
        result_file.unlink(missing_ok=True)
        load_before = _load()
        spec = {**spec, "result": str(result_file), "spawned_at": time.time()}
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        try:
            done = subprocess.run([sys.executable, "-m", "ferry.bench.worker", str(spec_file)], env=env,
                                  capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise CandidateFailedError(f"{stem}: no result in {WORKER_TIMEOUT_S} s") from None
        if done.returncode != 0 or not result_file.is_file():
            tail = " | ".join(done.stderr.strip().splitlines()[-6:])
            raise CandidateFailedError(f"{stem} failed (exit {done.returncode}): {tail}")
        result: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
        result["load_average"] = [load_before, _load()]  # 1-minute, before and after: a disturbed run shows
        return result


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def worker_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Every thread pool a library may start capped at `threads`: OpenMP and MKL (torch), rayon (tokenizers)."""
    env = dict(os.environ if base is None else base)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), RAYON_NUM_THREADS=str(threads))
    return env


def source_stamp(source: Path) -> str:
    """What the export depends on: the source's weights and config (sizes, mtimes) and the ferry version."""
    from ferry import __version__

    parts = [__version__] + [f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
                             for path in sorted(source.iterdir()) if path.is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def fp32_export(target: Target, out: Path, workers: Workers, progress: Progress) -> Path:
    """Optimum's fp32 ONNX export of the source in ``out/onnx-fp32`` (reused while the source is unchanged), with
    the layer's manifest and tokenizer beside it so that the Predictor loads it too."""
    folder = out / FP32_DIR
    stamp = folder / ".source-stamp"
    wanted = source_stamp(target.source)
    if not (stamp.is_file() and stamp.read_text() == wanted and (folder / MODEL_FILE).is_file()):
        progress(f"exporting {target.source} to fp32 ONNX with Optimum")
        shutil.rmtree(folder, ignore_errors=True)
        workers.run({"mode": "export", "source": str(target.source), "task": TEXT_CLASSIFICATION,
                     "output": str(folder)}, worker_env(2))
        stamp.write_text(wanted)
    predictor_dir = out / "predictor-fp32" / target.manifest.name
    shutil.rmtree(predictor_dir.parent, ignore_errors=True)
    predictor_dir.mkdir(parents=True)
    _link(folder / MODEL_FILE, predictor_dir / MODEL_FILE)
    shutil.copyfile(target.model_dir / TOKENIZER_FILE, predictor_dir / TOKENIZER_FILE)
    shutil.copyfile(target.model_dir / "manifest.json", predictor_dir / "manifest.json")
    return folder


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def candidates(target: Target, fp32: Path, out: Path) -> list[Candidate]:
    predictor_fp32 = out / "predictor-fp32" / target.manifest.name
    layer_files = sorted(path for path in target.model_dir.iterdir() if path.is_file())
    return [
        Candidate("pytorch", "transformers pipeline, PyTorch fp32", "PyTorch\npipeline", "pytorch", target.source,
                  sorted(path for path in target.source.iterdir() if path.is_file())),
        Candidate("optimum-fp32", "Optimum ORTModel pipeline, ONNX fp32", "Optimum ORT\nfp32", "optimum", fp32,
                  sorted(path for path in fp32.iterdir() if path.is_file() and not path.name.startswith("."))),
        Candidate("predictor-fp32", "ferry Predictor, ONNX fp32", "Predictor\nfp32", "predictor", predictor_fp32,
                  [predictor_fp32 / MODEL_FILE, predictor_fp32 / TOKENIZER_FILE, predictor_fp32 / "manifest.json"],
                  verify=False),
        Candidate("predictor-int8", "ferry Predictor, int8 layer", "Predictor\nint8", "predictor", target.model_dir,
                  layer_files),
        Candidate("handler-int8", "ferry predict handler (API Gateway event), int8 layer", "handler\nint8", "handler",
                  target.model_dir, layer_files),
    ]


@dataclass
class Inputs:
    """What every candidate's process is given."""

    shapes: dict[str, bench_texts.Shape]
    accuracy: list[bench_texts.Row]
    event: dict[str, Any]


def candidate_spec(candidate: Candidate, target: Target, inputs: Inputs, config: BenchConfig, threads: int,
                   mode: str, accuracy: bool = False) -> dict[str, Any]:
    """The worker's spec; the accuracy rows go to one run only (`accuracy`: the same answers every time)."""
    return {"mode": mode, "candidate": candidate.kind, "candidate_id": candidate.id, "path": str(candidate.path),
            "verify": candidate.verify, "threads": threads, "max_length": target.manifest.max_length,
            "shape_max_length": max(target.manifest.max_length,
                                    *(max(shape.token_lengths) for shape in inputs.shapes.values())),
            "model": target.manifest.name, "root": str(target.root), "event": inputs.event,
            "first_text": inputs.shapes["1x32"].batches[0][0],
            "shapes": {name: shape.batches for name, shape in inputs.shapes.items()},
            "warmup": config.warmup, "repeats": config.count("repeats"),
            "accuracy_texts": [row.text for row in inputs.accuracy] if accuracy else []}


def candidate_env(candidate: Candidate, target: Target, threads: int) -> dict[str, str]:
    if candidate.kind == "handler":
        return worker_env(threads, lambda_environment(target.root, target.layer / "models", target.manifest.name,
                                                      threads))
    return worker_env(threads)


def measure_candidates(cands: Sequence[Candidate], target: Target, inputs: Inputs, config: BenchConfig,
                       workers: Workers, progress: Progress) -> dict[str, dict[str, Any]]:
    """Each candidate in turn, alone: a full run per thread count, then (first round) its fresh-process cold starts;
    the rounds go through every candidate again, and each shape's timings of every round are pooled."""
    found: dict[str, dict[str, Any]] = {candidate.id: {"runs": {}, "cold_runs": []} for candidate in cands}
    most, rounds = max(config.threads), config.count("rounds")
    for round_index in range(rounds):
        for candidate in cands:
            runs = found[candidate.id]["runs"]
            for threads in config.threads:
                progress(f"{candidate.label}: {threads} thread(s), round {round_index + 1} of {rounds}")
                spec = candidate_spec(candidate, target, inputs, config, threads, "full",
                                      accuracy=round_index == 0 and threads == most)
                pooled(runs, str(threads), workers.run(spec, candidate_env(candidate, target, threads)))
            if round_index == 0:
                found[candidate.id]["cold_runs"] = cold_starts(candidate, target, inputs, config, workers, progress)
    for candidate in cands:
        colds = found[candidate.id]["cold_runs"]
        found[candidate.id]["cold_from"] = "fresh cold-start processes" if colds else "the full run's process"
        found[candidate.id]["cold_runs"] = colds or [found[candidate.id]["runs"][str(most)]["cold"]]
    return found


def cold_starts(candidate: Candidate, target: Target, inputs: Inputs, config: BenchConfig, workers: Workers,
                progress: Progress) -> list[dict[str, Any]]:
    most, count = max(config.threads), config.count("cold_runs")
    colds = []
    for index in range(count):
        progress(f"{candidate.label}: cold start {index + 1} of {count}")
        colds.append(workers.run(candidate_spec(candidate, target, inputs, config, most, "cold"),
                                 candidate_env(candidate, target, most))["cold"])
    return colds


def pooled(runs: dict[str, Any], threads: str, result: dict[str, Any]) -> None:
    """A round's run added to the earlier rounds' of the same thread count: timings pooled, the highest peak RSS,
    the first round's cold start, predictions and capture lines, every round's load average."""
    earlier = runs.get(threads)
    if earlier is None:
        runs[threads] = {**result, "rounds": 1, "load_average": [result["load_average"]]}
        return
    for shape, times in result["latency_ms"].items():
        earlier["latency_ms"][shape].extend(times)
    earlier["peak_rss_mb"] = max(earlier["peak_rss_mb"], result["peak_rss_mb"])
    earlier["rounds"] += 1
    earlier["load_average"].append(result["load_average"])


# -- the whole run --------------------------------------------------------------------------------------------------

def run_bench(config: BenchConfig, progress: Progress = _silent) -> dict[str, Any]:
    """Run the bench; write bench.json, bench.md and bench.png into ``config.out``; return the bench document."""
    from ferry.bench import report
    from ferry.runtime.keys import key_id, new_key

    started = time.perf_counter()
    target = locate(config)
    out = config.out.resolve()
    work = out / "work"  # the candidates' spec and result files, the load test's layers: this run's only
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    machine = describe_machine()
    progress(f"machine: {machine['model']}, VNNI {'yes' if machine['vnni'] else 'no'}, {machine['cores']} cores")
    split = bench_texts.load_test_split(config.data, target.source, target.manifest.labels)
    counter = token_counter(target.model_dir)
    inputs = Inputs(bench_texts.shapes(split, counter),
                    bench_texts.accuracy_rows(split, config.count("accuracy_rows")),
                    predict_event(target.root, target.manifest.name, key_id(new_key())))
    workers = Workers(work, progress)
    fp32 = fp32_export(target, out, workers, progress)
    cands = candidates(target, fp32, out)
    measured = measure_candidates(cands, target, inputs, config, workers, progress)
    progress("capture: log lines, DynamoDB item, capture function per delivery")
    capture = measure_capture(measured["handler-int8"], target)
    progress(f"load test: {config.count('load_requests')} requests or {config.seconds:g} s, "
             f"{config.count('load_clients')} clients")
    load = load_test(config, target, inputs, work)
    document = report.document(config, target, machine, split, inputs, cands, measured, capture, load)
    document["seconds"] = time.perf_counter() - started
    report.write(document, out)
    return document


def measure_capture(handler: dict[str, Any], target: Target) -> dict[str, Any]:
    run = next(iter(handler["runs"].values()))
    probe = run.get("capture_lines")
    if not probe:
        raise BenchError("the handler's run brought back no capture lines")
    facts = capture_cost.template_facts(target.root / "template.yaml")
    record = capture_cost.record_of(probe)
    figures = {"lines": capture_cost.line_figures(probe),
               "item": capture_cost.item_figures(record, facts["capture_ttl_days"], facts["capture_indexes"]),
               "function": capture_cost.function_figures(record, facts["template"], facts["capture_ttl_days"]),
               "record": record}
    figures["template"] = {key: value for key, value in facts.items() if key != "template"}
    return figures


def load_test(config: BenchConfig, target: Target, inputs: Inputs, work: Path) -> dict[str, Any]:
    from ferry.bench.loadtest import LoadPlan, run_load_test

    plan = LoadPlan(config.count("load_requests"), config.seconds, config.count("load_clients"))
    texts = [batch[0] for batch in inputs.shapes["1x32"].batches]
    return run_load_test(target.root, target.layer, target.manifest.name, texts, plan, work)
