"""The predict handler's cost over the model's own: warm latency ratio and a fresh-process cold start.

Warm: one 32-token text through the whole handler (an API Gateway v2 event in, the response out: validation,
tokenization, the session, capture log line, metrics) against the Predictor's own tokenize + session run for
the same text, both measured in this run, interleaved; the ratio of medians over all repeats, and its range
over five blocks of them (this machine is shared: the range says how much to trust the first figure).
Cold: a new interpreter with the environment Lambda gives a function with active tracing imports the handler
(which starts loading the FERRY_PRELOAD models in the background), waits until the model is ready and answers
the first request; the time of each step.

Run: .venv/bin/python benchmarks/serving.py [--layers-dir layers/model] [--model sentiment]

`ferry bench` (ferry.bench, docs/bench.md) measures the handler beside the PyTorch and Optimum pipelines, each in a
process of its own; this script keeps the one figure that needs both in one process: the handler's overhead over
the Predictor, interleaved call by call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ferry.bench.handler import LAMBDA_ENV as LAMBDA

ROOT = Path(__file__).resolve().parent.parent
TEXT = ("Honestly, the new update is a huge improvement: the app feels much faster and the battery lasts all day "
        "now, so I am really happy with it")  # 32 tokens with [CLS] and [SEP] for the MiniLM vocabulary
# What Lambda sets for a function with active tracing (ferry.bench.handler says why), and the template's preload.
LAMBDA_ENV = {**LAMBDA, "FERRY_PRELOAD": "sentiment,minilm", "LAMBDA_TASK_ROOT": str(ROOT / "functions/predict")}

_COLD = """
import json, sys, time, io, contextlib
started = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import importlib.util
spec = importlib.util.spec_from_file_location("app", sys.argv[1] + "/app.py")
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
imported = time.perf_counter()
app.service.store.get(sys.argv[2])  # waits for the background load if it is still running
loaded = time.perf_counter()
event = json.loads(sys.argv[3])
class Context:
    function_name = "ferry-predict"; memory_limit_in_mb = 2048; aws_request_id = "cold"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:ferry-predict"
    def get_remaining_time_in_millis(self): return 29000
with contextlib.redirect_stdout(io.StringIO()):
    response = app.lambda_handler(event, Context())
answered = time.perf_counter()
assert response["statusCode"] == 200, response
heavy = sorted(m for m in ("torch", "transformers", "optimum") if m in sys.modules)
print(json.dumps({"import_s": imported - started, "wait_s": loaded - imported, "first_request_s": answered - loaded,
                  "total_s": answered - started, "heavy_modules": heavy, "tracer": "aws_xray_sdk" in sys.modules}))
"""


def event(model: str, route: str = "predict") -> dict:
    """The API Gateway v2 event of POST /v1/models/{model}/<route> with the benchmark text."""
    path = f"/v1/models/{model}/{route}"
    return {
        "version": "2.0", "routeKey": f"POST /v1/models/{{model}}/{route}", "rawPath": path,
        "rawQueryString": "", "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": path, "sourceIp": "127.0.0.1",
                                    "protocol": "HTTP/1.1", "userAgent": "bench"},
                           "requestId": "bench", "routeKey": f"POST /v1/models/{{model}}/{route}", "stage": "$default",
                           "accountId": "0", "apiId": "bench", "timeEpoch": 0},
        "pathParameters": {"model": model}, "body": json.dumps({"inputs": TEXT}), "isBase64Encoded": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers-dir", type=Path, default=ROOT / "layers/model")
    parser.add_argument("--model", default="sentiment")
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preload", default=LAMBDA_ENV["FERRY_PRELOAD"],
                        help="FERRY_PRELOAD for the cold starts (default: the template's)")
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args()

    from ferry.runtime import Manifest, layer_models_dirs, resolve_model_dir

    models_path = layer_models_dirs(args.layers_dir.resolve())
    models_dir = os.pathsep.join(str(p) for p in models_path)
    task = Manifest.load(resolve_model_dir(args.model, models_path)).task
    route = "embed" if task == "feature-extraction" else "predict"
    env = {**os.environ, **LAMBDA_ENV, "FERRY_MODELS_DIR": models_dir, "FERRY_ORT_THREADS": str(args.threads)}
    env["FERRY_PRELOAD"] = args.preload
    cold_runs = []
    for _ in range(args.cold_runs):
        command = [sys.executable, "-c", _COLD, str(ROOT / "functions/predict"), args.model,
                   json.dumps(event(args.model, route))]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        cold_runs.append(json.loads(done.stdout.strip().splitlines()[-1]))

    os.environ.update({**LAMBDA_ENV, "FERRY_MODELS_DIR": models_dir, "FERRY_ORT_THREADS": str(args.threads),
                       "POWERTOOLS_TRACE_DISABLED": "true"})
    import importlib.util

    spec = importlib.util.spec_from_file_location("app", ROOT / "functions/predict/app.py")
    assert spec and spec.loader
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    predictor = app.service.store.get(args.model)
    tokens = predictor.encode([TEXT]).token_lengths[0]

    from ferry.local.context import LambdaContext

    request = event(args.model, route)
    handler_ms, predictor_ms = [], []
    # The handler writes its capture lines and EMF to stdout, as in Lambda; here they go to /dev/null (a write
    # per request, like Lambda's log pipe), and this script's own output waits until the loop is done.
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115
    try:
        for _ in range(20):  # warm both paths
            app.lambda_handler(dict(request), LambdaContext("ferry-predict"))
            predictor.forward(predictor.encode([TEXT]))
        for _ in range(args.repeats):
            started = time.perf_counter()
            predictor.forward(predictor.encode([TEXT]))
            predictor_ms.append((time.perf_counter() - started) * 1000)
            # what the Lambda runtime hands over, not the handler's
            this_event, context = dict(request), LambdaContext("ferry-predict")
            started = time.perf_counter()
            response = app.lambda_handler(this_event, context)
            handler_ms.append((time.perf_counter() - started) * 1000)
            assert response["statusCode"] == 200
    finally:
        sys.stdout.close()
        sys.stdout = real_stdout
    handler, own = statistics.median(handler_ms), statistics.median(predictor_ms)
    size = args.repeats // 5
    blocks = [statistics.median(handler_ms[i:i + size]) / statistics.median(predictor_ms[i:i + size])
              for i in range(0, size * 5, size)]
    print(f"model {args.model} ({predictor.version}), one text of {tokens} tokens, {args.threads} threads, "
          f"{args.repeats} repeats")
    print(f"warm: handler {handler:.2f} ms vs Predictor (tokenize + session) {own:.2f} ms: ratio {handler / own:.2f}x "
          f"(five blocks: {min(blocks):.2f}x to {max(blocks):.2f}x; target <= 1.25x)")
    for run in cold_runs:
        print(f"cold: import {run['import_s']:.2f} s (the model loading alongside) + wait for the model "
              f"{run['wait_s']:.2f} s + first request {run['first_request_s'] * 1000:.0f} ms = {run['total_s']:.2f} s "
              f"(target < 1.0 s); tracer {'on' if run['tracer'] else 'off'}; "
              f"heavy modules {run['heavy_modules'] or 'none'}")


if __name__ == "__main__":
    main()
