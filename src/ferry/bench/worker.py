"""One candidate in a fresh interpreter: ``python -m ferry.bench.worker SPEC.json`` (the parent writes the spec and
reads the result file it names). Each candidate runs alone in its own process, never interleaved with another
library: each library's idle threads spin and would slow the other.

In order: the process's start (the parent's clock at spawn to this module's first line), the candidate's imports,
its load, its first prediction, the peak RSS so far (the cold start); then, unless the spec says ``cold``, each
shape's untimed warm-up and timed calls, the peak RSS again, the predictions on the accuracy rows, and (the handler)
the capture lines of a request of one text and of eight. Heavy imports (torch, transformers, optimum) happen only
here, inside the candidate that needs them.
"""

from __future__ import annotations

import time

STARTED_WALL = time.time()  # first: the parent's spawn time is subtracted from it

import contextlib  # noqa: E402  (the clock above comes first)
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ferry.local.context import LambdaContext  # noqa: E402  (the standard library only)

HEAVY = ("torch", "transformers", "optimum", "onnxruntime", "tokenizers")
ACCURACY_BATCH = 8


def peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM), in MB (2**20 bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class TorchPipeline:
    """transformers' ``pipeline("text-classification")`` on PyTorch fp32: what a user starts from."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.max_length = spec["max_length"]

    def truncate_at(self, max_length: int) -> None:
        self.max_length = max_length

    def tokens(self, texts: list[str]) -> int:
        """Tokens per text of the batch the model computes (padded to the longest)."""
        encoded = self.pipe.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True)
        return len(encoded["input_ids"][0])

    def imports(self) -> None:
        import torch
        import transformers

        torch.set_num_threads(self.spec["threads"])
        transformers.logging.set_verbosity_error()

    def load(self) -> None:
        from transformers import pipeline

        self.pipe = pipeline("text-classification", model=self.spec["path"], tokenizer=self.spec["path"],
                             framework="pt", device="cpu")

    def prepare(self, texts: list[str]) -> Any:
        return texts

    def call(self, texts: Any) -> Any:
        # one forward pass for the batch (the default batch_size, 1, would run one per text)
        return self.pipe(texts, batch_size=len(texts), truncation=True, max_length=self.max_length)

    def labels(self, answer: Any) -> list[str]:
        return [item["label"] for item in answer]


class OptimumPipeline(TorchPipeline):
    """Optimum's ``ORTModelForSequenceClassification`` in its pipeline, on the fp32 ONNX export."""

    def imports(self) -> None:
        import onnxruntime  # noqa: F401
        import transformers
        from optimum.onnxruntime import ORTModelForSequenceClassification, pipeline  # noqa: F401

        transformers.logging.set_verbosity_error()

    def load(self) -> None:
        import onnxruntime
        from optimum.onnxruntime import ORTModelForSequenceClassification, pipeline
        from transformers import AutoTokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.spec["threads"]
        options.inter_op_num_threads = 1
        model = ORTModelForSequenceClassification.from_pretrained(
            self.spec["path"], session_options=options, provider="CPUExecutionProvider")
        self.pipe = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(
            self.spec["path"]))


class FerryPredictor:
    """ferry's :class:`~ferry.runtime.predictor.Predictor`: tokenize, run the session, rank the labels."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def truncate_at(self, max_length: int) -> None:
        self.predictor.tokenizer.enable_truncation(max_length=max_length)

    def tokens(self, texts: list[str]) -> int:
        return int(self.predictor.encode(texts).feeds["input_ids"].shape[1])

    def imports(self) -> None:
        import ferry.runtime.predictor  # noqa: F401

    def load(self) -> None:
        from ferry.runtime.predictor import Predictor

        self.predictor = Predictor.load(self.spec["path"], threads=self.spec["threads"], verify=self.spec["verify"])

    def prepare(self, texts: list[str]) -> Any:
        return texts

    def call(self, texts: Any) -> Any:
        return self.predictor.classify(texts, top_k=1)

    def labels(self, answer: Any) -> list[str]:
        return [ranked[0]["label"] for ranked in answer]


class PredictHandler:
    """The predict function's handler (functions/predict/app.py): an API Gateway v2 event in, the response out.
    Its environment (models, threads, tracing) is the one Lambda gives it, set by the parent."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def imports(self) -> None:
        folder = Path(self.spec["root"]) / "functions" / "predict"
        sys.path.insert(0, str(folder))
        module_spec = importlib.util.spec_from_file_location("app", folder / "app.py")
        assert module_spec is not None and module_spec.loader is not None
        self.app = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(self.app)  # starts loading the FERRY_PRELOAD models in the background

    def load(self) -> None:
        self.predictor = self.app.service.store.get(self.spec["model"])  # waits for the background load, if any

    def truncate_at(self, max_length: int) -> None:
        self.predictor.tokenizer.enable_truncation(max_length=max_length)

    def tokens(self, texts: list[str]) -> int:
        return int(self.predictor.encode(texts).feeds["input_ids"].shape[1])

    def prepare(self, texts: list[str]) -> Any:
        event = json.loads(json.dumps(self.spec["event"]))
        event["body"] = json.dumps({"inputs": texts, "parameters": {"top_k": 1}})
        return event

    def call(self, event: Any) -> Any:
        # a fresh top level and context, as Lambda hands over
        response = self.app.lambda_handler(dict(event), LambdaContext("ferry-predict"))
        if response.get("statusCode") != 200:
            raise RuntimeError(f"the handler answered {response.get('statusCode')}: {str(response.get('body'))[:300]}")
        return response

    def labels(self, answer: Any) -> list[str]:
        return [ranked[0]["label"] for ranked in json.loads(answer["body"])]


CANDIDATES = {"pytorch": TorchPipeline, "optimum": OptimumPipeline, "predictor": FerryPredictor,
              "handler": PredictHandler}


@contextlib.contextmanager
def stdout_to(stream: Any) -> Iterator[Any]:
    """sys.stdout replaced for the duration: the handler writes its capture lines there, as in Lambda."""
    real, sys.stdout = sys.stdout, stream
    try:
        yield stream
    finally:
        sys.stdout = real


def timed(candidate: Any, batches: Sequence[list[str]], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each timed call, after `warmup` untimed ones; call i gets batch i modulo their number."""
    payloads = [candidate.prepare(batch) for batch in batches]
    for index in range(warmup):
        candidate.call(payloads[index % len(payloads)])
    spent = []
    for index in range(repeats):
        payload = payloads[index % len(payloads)]
        started = time.perf_counter()
        candidate.call(payload)
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def cold_start(candidate: Any, spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    candidate.imports()
    imported = time.perf_counter()
    candidate.load()
    loaded = time.perf_counter()
    first = candidate.labels(candidate.call(candidate.prepare([spec["first_text"]])))
    answered = time.perf_counter()
    return {"process_s": max(0.0, STARTED_WALL - spec["spawned_at"]), "import_s": imported - started,
            "load_s": loaded - imported, "first_s": answered - loaded, "peak_rss_mb": peak_rss_mb(),
            "first_label": first[0]}


def predictions(candidate: Any, texts: Sequence[str]) -> list[str]:
    labels: list[str] = []
    for start in range(0, len(texts), ACCURACY_BATCH):
        labels.extend(candidate.labels(candidate.call(candidate.prepare(list(texts[start:start + ACCURACY_BATCH])))))
    return labels


def capture_probe(candidate: PredictHandler, spec: dict[str, Any]) -> dict[str, list[str]]:
    """What the handler writes to its log for a request of one text and one of eight: its capture lines."""
    found = {}
    for name, batch in (("one_text", [spec["first_text"]]), ("eight_texts", spec["shapes"]["8x32"][0])):
        with stdout_to(io.StringIO()) as written:
            candidate.call(candidate.prepare(batch))
        found[name] = [line for line in written.getvalue().splitlines() if line.strip()]
    return found


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    candidate = CANDIDATES[spec["candidate"]](spec)
    with stdout_to(open(os.devnull, "w")) as sink:
        try:
            result: dict[str, Any] = {"cold": cold_start(candidate, spec)}
            if spec["mode"] == "full":
                candidate.truncate_at(spec["shape_max_length"])  # every candidate computes every token of a shape
                result["tokens_computed"] = {name: [candidate.tokens(batch) for batch in batches]
                                             for name, batches in spec["shapes"].items()}
                result["latency_ms"] = {name: timed(candidate, batches, spec["warmup"], spec["repeats"])
                                        for name, batches in spec["shapes"].items()}
                result["peak_rss_mb"] = peak_rss_mb()
                candidate.truncate_at(spec["max_length"])  # the accuracy as served
                result["predictions"] = predictions(candidate, spec["accuracy_texts"])
                if isinstance(candidate, PredictHandler):
                    result["capture_lines"] = capture_probe(candidate, spec)
        finally:
            sink.close()
    result["modules"] = sorted(name for name in HEAVY if name in sys.modules)
    return result


def export(spec: dict[str, Any]) -> dict[str, Any]:
    """The fp32 ONNX export of the source, with Optimum, as `ferry build` exports it."""
    from ferry.layer.export import export_onnx

    started = time.perf_counter()
    export_onnx(Path(spec["source"]), spec["task"], Path(spec["output"]))
    return {"export_s": time.perf_counter() - started}


def main(argv: Sequence[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = export(spec) if spec["mode"] == "export" else measure(spec)
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
