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
6. The update runs by itself (`ferry serve`'s controller receives ModelDegraded): Coachella traffic keeps coming,
   labelled with its text, until the update has the labels it needs since the windows that fired; it trains from
   the live weights, builds, gates (gate.json), registers and promotes the candidate through a canary while the
   traffic goes on.
7. It prints Coachella macro-F1 and negative recall before the shift, during it and after the update, in-domain
   macro-F1 before and after, and the floor: on the Coachella test slice (never trained on) and the in-domain test
   split, the new model against the old on the same texts, with bootstrap 95% intervals of the differences.

Output under build/drift/ (the model is trained and built once; every run serves a fresh copy of its layer).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
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
ORIGINAL = OUT / "original-layers"  # the model as trained and built, kept: each run serves a copy of it
LAYERS = OUT / "layers"  # what `ferry serve` serves; an update promotes into it
FERRY = [sys.executable, "-m", "ferry.cli"]
REQUEST_TEXTS = 16
IN_DOMAIN_ROWS = 900
MONITOR_EVERY_ROWS = 150
MAX_SHIFT_ROWS = 1500
CANARY_SECONDS = 30
MIN_LABELS = 2000  # labelled Coachella examples since the windows that fired: ~400 held out for the gate
UPDATE_TIMEOUT_S = 1200


def say(text: str) -> None:
    print(f"drift-demo: {text}", flush=True)


def run(*args: str) -> None:
    subprocess.run([*FERRY, *args], cwd=ROOT, check=True)


def ensure_model() -> None:
    if not (MODEL / "config.json").exists():
        say("training MiniLM on the tweets without Coachella (about 5 minutes)")
        run("train", "--base", "sentence-transformers/all-MiniLM-L6-v2", "--data", "default", "--exclude-topic",
            "coachella", "--steps", "600", "--out", str(MODEL))
    if not (ORIGINAL / "sentiment" / "models" / "sentiment" / "manifest.json").exists():
        say("building its int8 layer with the reference sample and calibration")
        run("build", "--model", str(MODEL), "--task", "text-classification", "--name", "sentiment",
            "--eval-data", str(MODEL / "predictions" / "test.jsonl"),
            "--reference-data", str(MODEL / "predictions" / "validation.jsonl"), "--out", str(ORIGINAL))
    shutil.rmtree(LAYERS, ignore_errors=True)  # an earlier run's update promoted into it: start from the original
    shutil.copytree(ORIGINAL, LAYERS)


class Serve:
    """`ferry serve` on the demo's layer, the monitor every 30 s, until stopped."""

    def __init__(self) -> None:
        env = {**os.environ, "FERRY_MONITOR_SETTLE_SECONDS": "1"}
        self.process = subprocess.Popen([*FERRY, "serve", "--port", "0", "--layers-dir", str(LAYERS),
                                         "--monitor-every", "30", "--canary-seconds", str(CANARY_SECONDS),
                                         "--min-labels", str(MIN_LABELS)],
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
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


SEEN: dict[str, list[tuple[str, str]]] = {"in_domain": [], "coachella": [], "canary": []}  # (truth, predicted)


def send(server: Serve, rows: list[tuple[str, str]], seen: str = "coachella", labelled: bool = True) -> int:
    """Predict the texts, then label each prediction with its true label and its text (an audit sample: the local
    stack captures no text); the labels accepted. What the serving model answered is kept in SEEN."""
    accepted = 0
    for start in range(0, len(rows), REQUEST_TEXTS):
        chunk = rows[start:start + REQUEST_TEXTS]
        status, headers, answer = server.post("/v1/models/sentiment/predict", {"inputs": [text for text, _ in chunk]})
        assert status == 200, status
        SEEN[seen].extend((label, scores[0]["label"]) for (_, label), scores in zip(chunk, answer, strict=True))
        if not labelled:
            continue
        ids = headers["x-ferry-prediction-ids"].split(",")
        items = [{"prediction_id": pid, "label": label, "sampled": True, "text": text}
                 for pid, (text, label) in zip(ids, chunk, strict=True)]
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


def update_phase(server: Serve, stack: Any, shifted: list[tuple[str, str]], sent: int) -> Any:
    """Coachella traffic goes on, labelled, until the update has started training; then unlabelled, while it trains,
    builds, gates and bakes its canary; returns the update's record once it is over (None if it never ran)."""
    from ferry.runtime.registry import Registry
    from ferry.update.local import tables_of

    say("phase 3: the update runs by itself; Coachella traffic goes on, labelled, until it has the labels it needs")
    registry = Registry(tables_of(stack).registry)
    started = time.monotonic()
    announced = set()
    while time.monotonic() - started < UPDATE_TIMEOUT_S:
        record = registry.running_update("sentiment") or next(iter(registry.updates("sentiment")), None)
        steps = record.steps if record is not None else {}
        for step, result in steps.items():
            if step not in announced:
                announced.add(step)
                from ferry.update.steps import brief

                say(f"  {step} ({result.get('seconds', 0):.0f} s): {brief(result)}")
        if record is not None and record.state != "running":
            seconds = {step: float(result.get("seconds", 0)) for step, result in steps.items()}
            parts = ", ".join(f"{step} {value:.0f} s" for step, value in seconds.items())
            say(f"update {record.update_id}: {record.state} after {sum(seconds.values()):.0f} s of steps ({parts})")
            return record
        if "assemble" not in steps:  # labelled traffic until the update has what it needs
            batch = shifted[sent % len(shifted):sent % len(shifted) + 50]
            send(server, batch)
            sent += len(batch)
            time.sleep(1)
        elif "register" in steps:  # the canary: single-text requests, as users send them, a few a second
            for _ in range(8):
                row = shifted[sent % len(shifted)]
                send(server, [row], seen="canary", labelled=False)
                sent += 1
            time.sleep(0.5)
        else:  # in AWS the candidate trains on SageMaker, not beside the API; here both share two cores: quiet
            time.sleep(2)
    say(f"the update did not finish within {UPDATE_TIMEOUT_S} s")
    return None


def figures(pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """Macro-F1 and negative recall of (truth, predicted) pairs."""
    from ferry.metrics import classification_metrics

    labels = ["negative", "positive"]
    metrics = classification_metrics([labels.index(t) for t, _ in pairs], [labels.index(p) for _, p in pairs],
                                     labels)
    return metrics.macro_f1, metrics.per_class["negative"].recall


def floor_holds(stack: Any, record: Any) -> bool:
    """The figures before, during and after, and the floor, on texts never trained on, old and new model paired."""
    from ferry.data.dataset import normalize_text, split_of
    from ferry.runtime import layout
    from ferry.runtime.gate import Check, GateConfig, SliceData, evaluate
    from ferry.runtime.predictor import Predictor
    from ferry.runtime.registry import Registry
    from ferry.update.local import tables_of
    from ferry.update.promotion import layer_path

    if record.state != "done":
        say(f"no new model went live ({record.state}); the floor cannot hold")
        return False
    registry = Registry(tables_of(stack).registry)
    new = registry.live("sentiment")
    old = registry.get("sentiment", record.steps["assemble"]["live_version"])
    models = {entry.version: Predictor.load(layout.model_dir_in_layer(layer_path(entry), "sentiment"))
              for entry in (old, new)}
    coachella = [row for row in topic_rows() if split_of(normalize_text(row[0])) == "test"]
    in_domain = split_rows(MODEL, "test")
    labels = ("negative", "positive")

    def predicted(model: Any, rows: list[tuple[str, str]]) -> list[int]:
        out: list[int] = []
        for start in range(0, len(rows), 64):
            out.extend(int(v) for v in model.forward(model.encode([t for t, _ in rows[start:start + 64]])).argmax(-1))
        return out

    slices = {name: SliceData(name, labels, [labels.index(label) for _, label in rows],
                              predicted(models[old.version], rows), predicted(models[new.version], rows))
              for name, rows in (("coachella", coachella), ("in_domain", in_domain))}
    floor = GateConfig(checks=(Check("coachella", "macro_f1", direction="higher"),
                               Check("in_domain", "macro_f1", direction="not_worse", max_drop=0.02)))
    result = evaluate(floor, slices)
    by_slice = result.slices
    during = figures(SEEN["coachella"])
    before = figures(SEEN["in_domain"])

    def recall(name: str, side: str) -> float:
        return float(by_slice[name][side]["per_class"]["negative"]["recall"])

    say("the model, before the shift, during it and after the update:")
    say(f"  before the shift (live {old.version}, in-domain traffic, labelled): in-domain macro-F1 {before[0]:.3f}")
    say(f"  during the shift (live {old.version}, Coachella traffic, labelled): Coachella macro-F1 {during[0]:.3f}, "
        f"negative recall {during[1]:.3f}")
    for side, entry in (("live", old), ("candidate", new)):
        label = "before the update" if side == "live" else "after the update "
        say(f"  {label} ({entry.version}, held-out test texts): Coachella macro-F1 "
            f"{by_slice['coachella'][side]['macro_f1']:.3f}, negative recall {recall('coachella', side):.3f} "
            f"(n={by_slice['coachella']['rows']}); in-domain macro-F1 {by_slice['in_domain'][side]['macro_f1']:.3f} "
            f"(n={by_slice['in_domain']['rows']})")
    say("the floor (new against old on the same texts, paired bootstrap 95% intervals):")
    for line in result.summary().splitlines():
        say(f"  {line}")
    return result.passed


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
            send(server, in_domain[start:start + MONITOR_EVERY_ROWS], seen="in_domain")
            time.sleep(2)  # captures land through the log subscription
            for health in monitor_once(stack):
                false_alarms.extend(health.firings)
        say(f"  in-domain: {len(false_alarms)} tests fired, {len(bus.drain())} events (expected 0)")
        events, first = shift_phase(server, stack, shifted, bus, monitor_once)
        if not events:
            return 1
        path, runs = draw_report(stack, OUT / "report.png", model="sentiment", hours=1)
        say(f"report: {path} ({runs} monitor runs)")
        detected = not false_alarms and len(events) == 1 and bool(first)
        sent = len(SEEN["coachella"])
        record = update_phase(server, stack, shifted, sent)
        return 0 if detected and record is not None and floor_holds(stack, record) else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
