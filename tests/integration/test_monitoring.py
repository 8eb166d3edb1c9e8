"""Ground truth and the monitor over real HTTP on the local stack (`ferry serve`): feedback with its refusals,
`ferry feedback FILE`, the monitor run by its schedule and by `ferry monitor`, its metrics in the embedded
CloudWatch, one ModelDegraded event on the bus, `ferry status` and `ferry report`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.local import running
from ferry.runtime.monitor import history

from helpers import ROOT, Server, offline_env, run_ferry, wait_for

MODEL = "tiny-bert"
LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def server(serving_layers: Path) -> Iterator[Server]:
    # --no-updates: the wrong labels below would start an update of the tiny model (tests/e2e has the loop)
    served = Server(serving_layers, "--monitor-every", "2", "--no-updates", env={"FERRY_MONITOR_SETTLE_SECONDS": "0"})
    try:
        yield served
    finally:
        served.stop()


def predict(server: Server, texts: list[str]) -> list[tuple[str, str]]:
    """(prediction id, predicted label) per text."""
    status, headers, body = server.request("POST", f"/v1/models/{MODEL}/predict", {"inputs": texts})
    assert status == 200, body
    ids = {name.lower(): value for name, value in headers.items()}["x-ferry-prediction-ids"].split(",")
    return [(pid, answer[0]["label"]) for pid, answer in zip(ids, body, strict=True)]


def other(label: str) -> str:
    return LABELS[1 - LABELS.index(label)]


def forged(prediction_id: str) -> str:
    return prediction_id[:-1] + ("0" if prediction_id[-1] != "0" else "1")


def test_feedback_counts_once_refuses_what_it_must_and_answers_lists_per_item(server: Server, tweets) -> None:
    (first, label), (second, _), (third, _) = predict(server, [e.text for e in tweets[:3]])
    status, _, body = server.request("POST", "/v1/feedback", {"prediction_id": first, "label": label})
    assert (status, body["status"], body["duplicate"]) == (202, "accepted", False)
    status, _, body = server.request("POST", "/v1/feedback", {"prediction_id": first, "label": label})
    assert (status, body["duplicate"]) == (202, True)  # the same label twice counts once
    status, _, body = server.request("POST", "/v1/feedback", {"prediction_id": first, "label": other(label)})
    assert status == 409 and body["error"]["code"] == "label_conflict" and label in body["error"]["message"]
    status, _, body = server.request("POST", "/v1/feedback",
                                     {"prediction_id": first, "label": other(label), "correct": True})
    assert (status, body["status"]) == (202, "corrected")
    status, _, body = server.request("POST", "/v1/feedback", {"prediction_id": forged(first), "label": label})
    assert status == 404 and body["error"]["code"] == "prediction_not_found"
    status, _, body = server.request("POST", "/v1/feedback", {"prediction_id": second, "label": "sideways"})
    assert status == 400 and body["error"]["code"] == "invalid_label" and "negative" in body["error"]["message"]
    status, _, body = server.request("POST", "/v1/feedback", [
        {"prediction_id": third, "label": "positive"}, {"prediction_id": forged(third), "label": "positive"},
        {"prediction_id": second, "label": "sideways"}])
    assert status == 207 and (body["accepted"], body["refused"]) == (1, 2)
    assert [result["status"] for result in body["results"]] == [202, 404, 400]
    status, _, body = server.request("POST", "/v1/feedback", [{"prediction_id": second, "label": "negative"},
                                                              {"prediction_id": second, "label": 3}])
    assert status == 400 and body["error"]["message"].startswith("[1]: ")  # malformed: the whole list, nothing kept
    status, _, body = server.request("POST", "/v1/feedback", [{"prediction_id": third, "label": "positive"}] * 65)
    assert status == 413
    status, _, body = server.request("POST", "/v1/feedback", {"prediction_id": third, "label": "x", "extra": 1})
    assert status == 400 and "'extra'" in body["error"]["message"]
    status, _, body = server.request("POST", "/v1/feedback", raw=b"{not json")
    assert status == 400


def test_ferry_feedback_sends_a_file_and_tells_each_refused_row_by_its_line(server: Server, tweets,
                                                                            tmp_path: Path) -> None:
    predicted = predict(server, [e.text for e in tweets[3:6]])
    path = tmp_path / "labels.csv"
    rows = [f"{pid},{label}" for pid, label in predicted]
    rows.insert(1, f"{forged(predicted[0][0])},negative")  # line 3
    path.write_bytes(("prediction_id,label\n" + "\n".join(rows) + "\n").encode() + b"\xff,negative\n")  # line 6
    result = run_ferry("feedback", str(path), "--sampled")
    assert result.returncode == 1, result.stderr
    assert "6 rows, 4 accepted" in result.stdout or "5 rows, 3 accepted" in result.stdout, result.stdout
    assert "line 3: 404 prediction_not_found" in result.stderr
    assert "line 6" in result.stderr
    again = run_ferry("feedback", str(path))
    assert "already there" in again.stdout and "0 new" in again.stdout


def test_wrong_labels_raise_one_model_degraded_with_metrics_status_and_a_report(server: Server, tweets,
                                                                               tmp_path: Path) -> None:
    stack = running.find(ROOT)
    assert stack.url == server.url
    bus = running.EventQueue(stack, "watch-monitor", {"source": ["ferry.monitor"]})
    texts = [e.text for e in tweets[100:420]]
    predicted = [pair for start in range(0, len(texts), 8) for pair in predict(server, texts[start:start + 8])]
    # every label says the model was wrong: an accuracy of 0 against the reference's
    for start in range(0, len(predicted), 64):
        chunk = [{"prediction_id": pid, "label": other(label), "sampled": True}
                 for pid, label in predicted[start:start + 64]]
        status, _, body = server.request("POST", "/v1/feedback", chunk)
        assert status == 202, body
    captures = stack.table("CaptureTable")
    wanted = {pid for pid, _ in predicted}
    landed = wait_for(lambda: sum(bool(captures.get_item(Key={"prediction_id": pid}).get("Item"))
                                  for pid in sorted(wanted)[:20]), lambda count: count == 20, timeout=30)
    assert landed == 20
    result = run_ferry("monitor", "--json", env=offline_env(FERRY_MONITOR_SETTLE_SECONDS="0"))
    assert result.returncode == 0, result.stderr
    health = next(item for item in json.loads(result.stdout) if item["model"] == MODEL)
    assert health["status"] == "degraded" and "accuracy" in health["episode"]["tests"]
    # the schedule (every 2 s) runs the monitor function too: between them, one event for the episode
    runs = wait_for(lambda: len(history(stack.table("MonitorStateTable"), MODEL)), lambda count: count >= 3,
                    timeout=60)
    assert runs >= 3
    events = [event for event in bus.drain() if event["detail-type"] == "ModelDegraded"]
    assert len(events) == 1, events
    [event] = events
    assert event["detail"]["model"] == MODEL
    evidence = {item["test"]: item for item in event["detail"]["evidence"]}
    # (the labels of the tests above, most of them right, share the stream)
    assert evidence["accuracy"]["statistic"] < 0.1 and evidence["accuracy"]["labels"] >= 100
    assert evidence["accuracy"]["population"] == "audit sample"
    cloudwatch = stack.client("cloudwatch")

    def degraded_metric() -> float:
        import datetime as dt

        now = dt.datetime.now(dt.UTC)
        points = cloudwatch.get_metric_statistics(
            Namespace="Ferry", MetricName="AccuracyDropDetected", Dimensions=[{"Name": "model", "Value": MODEL}],
            StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=1), Period=60,
            Statistics=["Sum"])["Datapoints"]
        return sum(point["Sum"] for point in points)

    assert wait_for(degraded_metric, lambda total: total >= 1, timeout=30) >= 1
    status = run_ferry("status")
    assert status.returncode == 0 and f"{MODEL}" in status.stdout and "DEGRADED" in status.stdout, status.stdout
    picture = tmp_path / "report.png"
    report = run_ferry("report", "--model", MODEL, "--out", str(picture))
    assert report.returncode == 0, report.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000


def test_the_monitor_commands_say_clearly_when_no_stack_serves(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    result = run_ferry("status", "--template", str(tmp_path / "template.yaml"))
    assert result.returncode != 0 and "no `ferry serve` is running" in result.stderr
    assert "Traceback" not in result.stderr
