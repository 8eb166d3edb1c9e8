"""The local CloudWatch Logs: routing a function's stdout, subscription filter patterns, EMF to metric data."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ferry.local.logs import FilterPattern, LogDelivery, LogStream, Subscription, emf_metric_data
from ferry.runtime.capture import (
    capture_line,
    capture_lines,
    capture_records,
    decode_subscription_event,
    encode_subscription_event,
)
from ferry.runtime.emf import prediction_metrics

RECORD = {"prediction_id": "ab" * 16, "model": "sentiment", "version": "c1d74b9fe759",
          "time": "2026-11-29T18:00:00.000+00:00", "epoch_ms": 1795975200000, "latency_ms": 6.2, "batch_size": 1,
          "token_length": 32, "truncated": False, "text_hmac": "0" * 64, "label": "positive", "score": 0.98}


@pytest.mark.parametrize(("pattern", "line", "expected"), [
    ('{ $.capture.prediction_id = "*" }', {"capture": {"prediction_id": "x"}}, True),
    ('{ $.capture.prediction_id = "*" }', {"capture": {}}, False),
    ('{ $.capture.prediction_id = "*" }', {"message": "hello"}, False),
    ('{ $.level = "ERR*" }', {"level": "ERROR"}, True),
    ('{ $.level != "INFO" }', {"level": "INFO"}, False),
    ('{ $.status = 500 && $.level = "ERROR" }', {"status": 500, "level": "ERROR"}, True),
    ('{ $.status = 500 && $.level = "ERROR" }', {"status": 404, "level": "ERROR"}, False),
    ('{ $.status = 500 }', {"status": "500"}, False),
])
def test_filter_patterns_match_as_cloudwatch_does(pattern, line, expected):
    assert FilterPattern.parse(pattern).matches(json.dumps(line)) is expected


def test_filter_patterns_skip_text_and_find_json_after_a_prefix():
    pattern = FilterPattern.parse('{ $.capture.prediction_id = "*" }')
    assert not pattern.matches("START RequestId: 1 Version: $LATEST")
    assert pattern.matches('2026-11-29T18:00:00Z\tINFO\t{"capture": {"prediction_id": "x"}}')


@pytest.mark.parametrize("pattern", ["ERROR", "{ $.a > 3 }", '{ ($.a = "x") || ($.b = "y") }', ""])
def test_a_pattern_the_local_stack_cannot_read_is_refused_by_name(pattern):
    with pytest.raises(ValueError, match="filter pattern"):
        FilterPattern.parse(pattern)


def test_the_capture_line_is_a_capture_record_and_an_emf_count_by_label():
    line = capture_line(RECORD, service="ferry-predict", request_id="req-1")
    document = json.loads(line)
    assert document["capture"] == RECORD and document["function_request_id"] == "req-1"
    data = emf_metric_data(line)
    assert [(namespace, datum["MetricName"], datum["Value"], datum["Unit"]) for namespace, datum in data] == [
        ("Ferry", "Predictions", 1.0, "Count")]
    assert data[0][1]["Dimensions"] == [{"Name": "model", "Value": "sentiment"},
                                         {"Name": "version", "Value": "c1d74b9fe759"},
                                         {"Name": "label", "Value": "positive"}]
    assert int(data[0][1]["Timestamp"].timestamp() * 1000) == RECORD["epoch_ms"]
    # the capture function finds exactly this record in a subscription event made of such lines
    event = encode_subscription_event("/aws/lambda/predict", "local", [(RECORD["epoch_ms"], line)])
    assert list(capture_records(decode_subscription_event(event))) == [RECORD]


def test_an_embedding_counts_without_a_label_dimension():
    record = {key: value for key, value in RECORD.items() if key not in {"label", "score"}}
    fields = prediction_metrics(record)
    assert fields["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["model", "version"]]
    assert "label" not in fields


def test_the_first_line_of_a_request_carries_its_latency_and_batch_size():
    records = [RECORD, {**RECORD, "prediction_id": "cd" * 16, "label": "negative"},
               {**RECORD, "prediction_id": "ef" * 16}]
    text = capture_lines(records, service="ferry-predict", request_id="r", latency_ms=12.3456)
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 4  # newline-terminated, one line per prediction
    metrics = [[(datum["MetricName"], datum["Value"], [d["Value"] for d in datum["Dimensions"]])
                for _, datum in emf_metric_data(line)] for line in lines[:3]]
    assert metrics[0] == [("Predictions", 1.0, ["sentiment", "c1d74b9fe759", "positive"]),
                          ("Latency", 12.346, ["sentiment", "c1d74b9fe759"]),
                          ("BatchSize", 3.0, ["sentiment", "c1d74b9fe759"])]
    assert metrics[1] == [("Predictions", 1.0, ["sentiment", "c1d74b9fe759", "negative"])]
    assert metrics[2] == [("Predictions", 1.0, ["sentiment", "c1d74b9fe759", "positive"])]


def test_powertools_emf_with_several_values_and_dimension_sets():
    document = {"_aws": {"Timestamp": 1795975200000, "CloudWatchMetrics": [
        {"Namespace": "Ferry", "Dimensions": [["service"], ["service", "model"]],
         "Metrics": [{"Name": "Latency", "Unit": "Milliseconds"}, {"Name": "Missing", "Unit": "Count"}]}]},
        "service": "ferry-predict", "model": "sentiment", "Latency": [6.5, 7.5]}
    data = emf_metric_data(json.dumps(document))
    assert [[d["Value"] for d in datum["Dimensions"]] for _, datum in data] == [["ferry-predict"],
                                                                               ["ferry-predict", "sentiment"]]
    assert all(datum["Values"] == [6.5, 7.5] and datum["Counts"] == [1.0, 1.0] for _, datum in data)


@pytest.mark.parametrize("line", ["plain text", '{"no": "metrics"}', '{"_aws": {"CloudWatchMetrics": "x"}}',
                                  '{"_aws": {"CloudWatchMetrics": [{"Namespace": "F", "Dimensions": [["model"]],'
                                  ' "Metrics": [{"Name": "M"}]}]}, "model": 3, "M": 1}'])
def test_lines_that_are_not_valid_emf_give_no_metrics(line):
    assert emf_metric_data(line) == []


MARKER = "\x1emarker "


def stream_of(chunks: list[bytes]):
    """A pipe's read end, with `chunks` written into it (and then closed) from another thread."""
    read, write = os.pipe()

    def writer() -> None:
        with os.fdopen(write, "wb", buffering=0) as sink:
            for chunk in chunks:
                sink.write(chunk)
                time.sleep(0.001)

    threading.Thread(target=writer, daemon=True).start()
    return os.fdopen(read, "rb")


def test_a_stream_files_each_line_under_its_group_and_echoes_it():
    seen: list[tuple[str, int, str]] = []
    echoed: list[str] = []
    chunks = [b"first li", b"ne\nsecond line\n\n   \n", "caf\u00e9 \u2615\n".encode(), b"\xff not utf-8\n",
              b"no newline at the end"]
    stream = LogStream(stream_of(chunks), "/aws/lambda/f", seen.append, MARKER, echoed.append).start()
    stream.join(timeout=10)
    assert [message for _, _, message in seen] == ["first line", "second line", "caf\u00e9 \u2615",
                                                   "\ufffd not utf-8", "no newline at the end"]  # blank lines: none
    assert {group for group, _, _ in seen} == {"/aws/lambda/f"} and all(stamp > 0 for _, stamp, _ in seen)
    assert echoed == [message for _, _, message in seen]
    assert list(stream.tail) == echoed


def test_a_marker_says_how_far_the_stream_has_been_filed_and_is_no_log_line():
    seen: list[tuple[str, int, str]] = []
    read, write = os.pipe()
    stream = LogStream(os.fdopen(read, "rb"), "/g", seen.append, MARKER).start()
    os.write(write, b"one\n" + f"{MARKER}1\n".encode())
    assert stream.wait_flushed(1, timeout=10) and [message for _, _, message in seen] == ["one"]
    os.write(write, b"two\n")
    assert not stream.wait_flushed(2, timeout=0.05)  # marker 2 has not come
    os.write(write, f"{MARKER}x\n".encode())  # not a marker: a line like any other
    os.close(write)
    assert stream.wait_flushed(2, timeout=10)  # the stream ended: nothing more can come
    assert [message for _, _, message in seen] == ["one", "two", f"{MARKER}x"]


def test_an_echo_that_fails_does_not_stop_the_filing():
    seen: list[tuple[str, int, str]] = []

    def broken(line: str) -> None:
        raise BrokenPipeError("the terminal is gone")

    LogStream(stream_of([b"a\nb\n"]), "/g", seen.append, MARKER, broken).start().join(timeout=10)
    assert [message for _, _, message in seen] == ["a", "b"]


def lines_of(event: dict) -> list[tuple[int, str]]:
    """The (timestamp, message) pairs of a subscription event, as the capture function decodes them."""
    payload = decode_subscription_event(event)
    return [(log_event["timestamp"], log_event["message"]) for log_event in payload["logEvents"]]


def test_delivery_applies_subscriptions_and_publishes_emf_off_the_caller():
    delivered: list[tuple[str, list[tuple[int, str]]]] = []
    published: list[dict] = []
    subscription = Subscription("/aws/lambda/predict", FilterPattern.parse('{ $.capture.prediction_id = "*" }'),
                                lambda event: delivered.append((decode_subscription_event(event)["logGroup"],
                                                                lines_of(event))))
    delivery = LogDelivery([subscription], lambda **call: published.append(call)).start()
    line = capture_line(RECORD, service="ferry-predict", request_id="r")
    delivery.put(("/aws/lambda/predict", 1, line))
    delivery.put(("/aws/lambda/predict", 2, '{"level": "INFO", "message": "not a capture"}'))
    delivery.put(("/aws/lambda/other", 3, line))  # another function's log group: not subscribed
    delivery.stop()
    assert delivered == [("/aws/lambda/predict", [(1, line)])] and delivery.delivered == 1
    assert [call["Namespace"] for call in published] == ["Ferry"]
    assert len(published[0]["MetricData"]) == 2 and delivery.metrics_published == 2  # EMF from every group


SUBSCRIBED = ("/g", FilterPattern.parse('{ $.a = "*" }'))


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_a_failed_delivery_is_retried_twice_then_dead_lettered_with_its_event():
    calls: list[dict] = []
    dead: list[tuple[dict, Exception]] = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("captures not written")

    delivery = LogDelivery([Subscription(*SUBSCRIBED, broken, lambda event, error: dead.append((event, error)))],
                           None, retry_delays=(0.01, 0.01)).start()
    delivery.put(("/g", 1, '{"a": "x"}'))
    delivery.put(("/g", 2, '{"a": "y"}'))
    delivery.stop()
    assert len(calls) == 3 and all(event == calls[0] for event in calls)  # the same event each time, as Lambda
    assert [(event, str(error)) for event, error in dead] == [(calls[0], "captures not written")]
    assert lines_of(dead[0][0]) == [(1, '{"a": "x"}'), (2, '{"a": "y"}')]
    assert (delivery.delivered, delivery.dead_lettered, delivery.lost) == (0, 2, 0)


def test_a_destination_that_fails_once_gets_its_event_on_the_retry():
    calls: list[dict] = []

    def flaky(event):
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("throttled")

    delivery = LogDelivery([Subscription(*SUBSCRIBED, flaky, lambda *_: pytest.fail("dead-lettered"))], None,
                           retry_delays=(0.01, 0.01)).start()
    delivery.put(("/g", 1, '{"a": "x"}'))
    delivery.stop()
    assert len(calls) == 2 and (delivery.delivered, delivery.dead_lettered, delivery.lost) == (1, 0, 0)


def test_delivery_goes_on_after_a_destination_and_its_dead_letter_queue_both_fail():
    """Lines after a failure must still arrive: this fails if the delivery thread dies on the first one."""
    seen: list[list[tuple[int, str]]] = []

    def destination(event):
        lines = lines_of(event)
        if lines[0][1] == '{"a": "poison"}':
            raise RuntimeError("destination down")
        seen.append(lines)

    def dead_letter(event, error):
        raise ConnectionError("the queue is down too")

    delivery = LogDelivery([Subscription(*SUBSCRIBED, destination, dead_letter)], None,
                           retry_delays=(0.01, 0.01)).start()
    delivery.put(("/g", 1, '{"a": "poison"}'))
    wait_until(lambda: delivery.lost == 1)  # its own burst, failed for good
    delivery.put(("/g", 2, '{"a": "later"}'))
    wait_until(lambda: delivery.delivered == 1)
    assert delivery.alive
    delivery.stop()
    assert seen == [[(2, '{"a": "later"}')]] and (delivery.dead_lettered, delivery.lost) == (0, 1)


def test_without_a_dead_letter_queue_a_failed_delivery_is_counted_lost():
    def broken(event):
        raise RuntimeError("destination down")

    delivery = LogDelivery([Subscription(*SUBSCRIBED, broken)], None, retry_delays=()).start()
    delivery.put(("/g", 1, '{"a": "x"}'))
    delivery.stop()
    assert (delivery.delivered, delivery.dead_lettered, delivery.lost) == (0, 0, 1) and delivery.lines.empty()


@pytest.mark.parametrize("line", [
    '{"_aws": {"CloudWatchMetrics": ["not a directive"]}}',
    '{"_aws": {"CloudWatchMetrics": [{"Namespace": "F", "Metrics": ["not a metric"]}]}}',
    '{"_aws": {"CloudWatchMetrics": [{"Namespace": "F", "Dimensions": "model", "Metrics": [{"Name": "M"}]}]}, "M": 1}',
    '{"_aws": {"Timestamp": "x", "CloudWatchMetrics": [{"Namespace": "F", "Metrics": [{"Name": "M"}]}]}, "M": 1}',
    '{"_aws": {"Timestamp": 1e300, "CloudWatchMetrics": [{"Namespace": "F", "Metrics": [{"Name": "M"}]}]}, "M": 1}',
])
def test_a_malformed_emf_line_does_not_stop_delivery(line):
    """A function may print anything: a broken EMF document costs its own metrics, not the lines after it."""
    seen: list[list[tuple[int, str]]] = []
    published: list[dict] = []
    delivery = LogDelivery([Subscription(*SUBSCRIBED, lambda event: seen.append(lines_of(event)))],
                           lambda **call: published.append(call)).start()
    delivery.put(("/other", 1, line))
    wait_until(delivery.lines.empty)
    time.sleep(0.2)  # the burst of the malformed line is handled
    delivery.put(("/g", 2, '{"a": "later"}'))
    wait_until(lambda: delivery.delivered == 1)
    assert delivery.alive
    delivery.stop()
    assert seen == [[(2, '{"a": "later"}')]]


def test_abandoned_delivery_counts_what_is_left_lost_without_retrying_or_dead_lettering():
    """The stack going away: its destinations fail because they are stopping, and its queues go with it."""
    entered, release = threading.Event(), threading.Event()
    calls: list[dict] = []

    def stopping(event):
        calls.append(event)
        entered.set()
        release.wait(10)
        raise RuntimeError("the function is stopped")

    delivery = LogDelivery([Subscription(*SUBSCRIBED, stopping, lambda *_: pytest.fail("dead-lettered"))], None,
                           retry_delays=(5, 5)).start()
    delivery.put(("/g", 1, '{"a": "in flight"}'))
    assert entered.wait(10)
    delivery.put(("/g", 2, '{"a": "queued"}'))
    delivery.abandon()
    release.set()
    delivery.join(timeout=10)
    assert not delivery.alive and len(calls) == 1  # no retry
    assert (delivery.delivered, delivery.dead_lettered, delivery.lost) == (0, 0, 2)
