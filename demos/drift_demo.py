"""`make drift-demo`: a real drift, noticed by the monitor, over the local stack (minutes; not part of make test).

1. MiniLM fine-tuned on the bundled tweets without the Coachella topic (`ferry train --exclude-topic coachella`,
   600 steps, about 5 minutes here), built into an int8 layer with its reference sample and calibration.
2. `ferry serve` on it (a real HTTP API on 127.0.0.1, the embedded AWS), the monitor scheduled every 30 s.
3. In-domain traffic: the model's test split, each prediction labelled through POST /v1/feedback as an audit
   sample. The monitor runs after every 150 rows; nothing may fire.
4. Coachella traffic with its true labels, the same way, until the monitor raises ModelDegraded. The event is read
   off the embedded EventBridge bus (through an SQS target, as moto delivers events).
5. It prints how many Coachella rows and labels it took, which tests fired with their evidence, and writes the
   monitor's history as a PNG (`ferry report`).

Output under build/drift/ (kept between runs: the model is trained and built once).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))
from drift_data import split_rows, topic_rows  # noqa: E402

OUT = ROOT / "build" / "drift"
MODEL = OUT / "model"
LAYERS = OUT / "layers"
FERRY = [sys.executable, "-m", "ferry.cli"]
REQUEST_TEXTS = 16
IN_DOMAIN_ROWS = 900
MONITOR_EVERY_ROWS = 150
MAX_SHIFT_ROWS = 1500


def say(text: str) -> None:
    print(f"drift-demo: {text}", flush=True)


def run(*args: str) -> None:
    subprocess.run([*FERRY, *args], cwd=ROOT, check=True)


def ensure_model() -> None:
    if not (MODEL / "config.json").exists():
        say("training MiniLM on the tweets without Coachella (about 5 minutes)")
        run("train", "--base", "sentence-transformers/all-MiniLM-L6-v2", "--data", "default", "--exclude-topic",
            "coachella", "--steps", "600", "--out", str(MODEL))
    if not (LAYERS / "sentiment" / "models" / "sentiment" / "manifest.json").exists():
        say("building its int8 layer with the reference sample and calibration")
        run("build", "--model", str(MODEL), "--task", "text-classification", "--name", "sentiment",
            "--eval-data", str(MODEL / "predictions" / "test.jsonl"),
            "--reference-data", str(MODEL / "predictions" / "validation.jsonl"), "--out", str(LAYERS))


class Serve:
    """`ferry serve` on the demo's layer, the monitor every 30 s, until stopped."""

    def __init__(self) -> None:
        env = {**os.environ, "FERRY_MONITOR_SETTLE_SECONDS": "1"}
        self.process = subprocess.Popen([*FERRY, "serve", "--port", "0", "--layers-dir", str(LAYERS),
                                         "--monitor-every", "30"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        for _ in range(400):
            line = self.process.stdout.readline() if self.process.stdout else ""
            match = re.search(r"at (http://\S+) \(embedded AWS", line)
            if match or not line:
                break
        if not match:
            raise SystemExit("drift-demo: ferry serve did not start")
        self.url = match.group(1)
        threading.Thread(target=lambda: [None for _ in self.process.stdout or []], daemon=True).start()

    def post(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)


def send(server: Serve, rows: list[tuple[str, str]]) -> int:
    """Predict the texts, then label each prediction with its true label (an audit sample); the labels accepted."""
    accepted = 0
    for start in range(0, len(rows), REQUEST_TEXTS):
        chunk = rows[start:start + REQUEST_TEXTS]
        status, headers, _ = server.post("/v1/models/sentiment/predict", {"inputs": [text for text, _ in chunk]})
        assert status == 200, status
        ids = headers["x-ferry-prediction-ids"].split(",")
        items = [{"prediction_id": pid, "label": label, "sampled": True}
                 for pid, (_, label) in zip(ids, chunk, strict=True)]
        status, _, answer = server.post("/v1/feedback", items)
        assert status == 202, (status, answer)
        accepted += len(items)
    return accepted


def shift_phase(server: Serve, stack: Any, shifted: list[tuple[str, str]], bus: Any,
                monitor_once: Any) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, tuple[int, Any]]]:
    """Coachella traffic, labelled, until ModelDegraded and until the accuracy and confidence tests have each fired:
    the events seen (with the rows sent by then) and each test's first firing (likewise)."""
    say("phase 2: Coachella predictions with their true labels, until the monitor says ModelDegraded and "
        "until each test has fired once")
    sent, events, first = 0, [], {}
    wanted = {"accuracy", "confidence_psi"}
    while sent < MAX_SHIFT_ROWS and not (events and wanted <= set(first)):
        send(server, shifted[sent:sent + 50])
        sent += 50
        time.sleep(2)
        for health in monitor_once(stack):
            for firing in health.firings:
                first.setdefault(firing.test, (sent, firing))
        events.extend((sent, event) for event in bus.drain() if event["detail-type"] == "ModelDegraded")
    if not events:
        say(f"no ModelDegraded after {sent} Coachella rows")
        return events, first
    at, event = events[0]
    say(f"ModelDegraded after {at} Coachella predictions, each labelled; its evidence:")
    for item in event["detail"]["evidence"]:
        comparison = "<" if item.get("direction") == "below" else ">"
        extra = f" ({item['labels']} labels, p={item['p_value']:.2g})" if "p_value" in item else ""
        say(f"  {item['test']}: {item['statistic']:.4f} {comparison} {item['threshold']:.4f} over a window of "
            f"{item['window']['rows']}{extra}")
    for name, (rows, firing) in sorted(first.items(), key=lambda item: item[1][0]):
        comparison = "<" if firing.detail.get("direction") == "below" else ">"
        say(f"  {name} first fired with {rows} Coachella rows sent: {firing.statistic:.4f} {comparison} "
            f"{firing.threshold:.4f} over a window of {firing.window['rows']}")
    say(f"  ModelDegraded events in the episode: {len(events)} (one per episode)")
    return events, first


def main() -> int:
    ensure_model()
    os.environ["FERRY_MONITOR_SETTLE_SECONDS"] = "1"
    from ferry.local import running
    from ferry.local.report import draw_report, monitor_once

    in_domain = split_rows(MODEL, "test")
    random.Random(0).shuffle(in_domain)
    shifted = topic_rows()
    random.Random(1).shuffle(shifted)
    say(f"serving the model (in-domain test split {len(in_domain)} texts, Coachella {len(shifted)} texts)")
    server = Serve()
    try:
        stack = running.find(ROOT)
        bus = running.EventQueue(stack, "drift-demo", {"source": ["ferry.monitor"]})
        false_alarms = []
        say(f"phase 1: {IN_DOMAIN_ROWS} in-domain predictions, each labelled")
        for start in range(0, IN_DOMAIN_ROWS, MONITOR_EVERY_ROWS):
            send(server, in_domain[start:start + MONITOR_EVERY_ROWS])
            time.sleep(2)  # captures land through the log subscription
            for health in monitor_once(stack):
                false_alarms.extend(health.firings)
        say(f"  in-domain: {len(false_alarms)} tests fired, {len(bus.drain())} events (expected 0)")
        events, first = shift_phase(server, stack, shifted, bus, monitor_once)
        if not events:
            return 1
        path, runs = draw_report(stack, OUT / "report.png", model="sentiment", hours=1)
        say(f"report: {path} ({runs} monitor runs)")
        return 0 if not false_alarms and len(events) == 1 and first else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
