"""The canary's judge: server errors, latency and the label-free estimate against the incumbent's, over the same
minutes; an alarm decides at once, no alarm waits for the canary's time to be up."""

from __future__ import annotations

import pytest

from ferry.runtime.canary import Estimate, Traffic, judge

STEADY = Traffic(requests=900, errors_5xx=1, latencies_ms=tuple([20.0] * 900))


def canary(requests: int = 100, errors: int = 0, latency: float = 21.0) -> Traffic:
    return Traffic(requests=requests, errors_5xx=errors, latencies_ms=tuple([latency] * requests))


def test_a_quiet_canary_keeps_baking_and_goes_live_when_its_time_is_up():
    assert judge(STEADY, canary(), final=False).passed and not judge(STEADY, canary(), final=False).final
    verdict = judge(STEADY, canary(), final=True)
    assert (verdict.passed, verdict.alarm, verdict.final) == (True, False, True)
    assert "held" in verdict.why and verdict.figures["canary"]["requests"] == 100


@pytest.mark.parametrize(("errors", "fires"), [(0, False), (1, False), (2, True), (10, True)])
def test_the_error_alarm_needs_two_failures_and_a_rate_over_the_incumbents(errors, fires):
    verdict = judge(STEADY, canary(requests=50, errors=errors))
    assert verdict.alarm is fires and verdict.passed is not fires
    if fires:
        assert "error alarm" in verdict.why and verdict.final  # decided now, not at the end


def test_a_canary_failing_barely_more_often_than_the_incumbent_is_no_alarm():
    assert not judge(STEADY, canary(requests=200, errors=4)).alarm  # 2% against 0.1%: within the 2-point gap


def test_an_incumbent_as_bad_as_the_canary_is_no_alarm():
    flaky = Traffic(requests=900, errors_5xx=90, latencies_ms=tuple([20.0] * 900))
    assert not judge(flaky, canary(errors=10)).alarm


def test_the_latency_alarm_waits_for_enough_requests_then_compares_p95():
    slow = canary(requests=10, latency=500.0)
    assert not judge(STEADY, slow, min_requests=20).alarm  # ten requests are not a p95
    verdict = judge(STEADY, canary(requests=40, latency=500.0), min_requests=20)
    assert verdict.alarm and "latency alarm" in verdict.why
    assert not judge(STEADY, canary(requests=40, latency=80.0), min_requests=20).alarm  # under 2 x 20 + 50


def test_a_canary_estimated_much_less_accurate_than_the_incumbent_is_rolled_back():
    worse = {"primary": Estimate(0.90, 300), "canary": Estimate(0.80, 40)}
    verdict = judge(STEADY, canary(), estimates=worse)
    assert verdict.alarm and "estimated-accuracy alarm" in verdict.why
    assert verdict.figures["canary"]["estimated_accuracy"] == 0.8
    assert not judge(STEADY, canary(), estimates={"primary": Estimate(0.90, 300),
                                                  "canary": Estimate(0.87, 40)}).alarm  # within 0.05
    assert not judge(STEADY, canary(), estimates={"primary": Estimate(0.90, 300),
                                                  "canary": Estimate(0.50, 5)}).alarm  # five rows say nothing


def test_no_traffic_at_all_is_no_alarm_and_says_so():
    verdict = judge(Traffic(), Traffic(), final=True)
    assert verdict.passed and "0 requests" in verdict.why
