"""The gate (ferry.runtime.gate): paired significance per slice and metric, so that noise can neither bless nor
reject. Slices are built from exact counts, so every figure asserted here can be checked by hand."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest

from ferry.metrics import classification_metrics
from ferry.runtime.gate import (
    DEFAULT_GATE,
    DIRECTIONS,
    METRICS,
    Check,
    CheckResult,
    GateConfig,
    GateConfigError,
    GateResult,
    GateResultError,
    SliceData,
    evaluate,
    mcnemar_exact,
    metric_values,
    min_discordant,
)

from helpers import ROOT

BINARY = ("negative", "positive")
NEG, POS = 0, 1


def slice_of(name: str, triples: dict[tuple[int, int, int], int], labels: tuple[str, ...] = BINARY) -> SliceData:
    """A slice from counts of (truth, live, candidate) rows."""
    rows = [triple for triple, count in triples.items() for _ in range(count)]
    truth, live, candidate = (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [])
    return SliceData(name, labels, truth, live, candidate)


def same_predictions(name: str, rows: int, seed: int = 0, accuracy: float = 0.9) -> SliceData:
    """A slice on which the candidate predicts exactly what live predicts."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, rows)
    live = np.where(rng.random(rows) < accuracy, truth, 1 - truth)
    return SliceData(name, BINARY, truth.tolist(), live.tolist(), live.tolist())


def drift_feedback() -> SliceData:
    """DRIFT.md's Coachella feedback: 277 texts, 55 negative. Live gets 33 of the negatives right (recall 0.60)
    and 184 of the positives; the candidate learned the topic's prior: 8 negatives right (a subset of live's) and
    210 positives (a superset): one text more right in all, a minority class nearly given up."""
    return slice_of("feedback", {
        (NEG, NEG, NEG): 8, (NEG, NEG, POS): 25, (NEG, POS, POS): 22,
        (POS, POS, POS): 184, (POS, NEG, POS): 26, (POS, NEG, NEG): 12,
    })


def one(check: Check, data: SliceData, **config: int | float) -> CheckResult:
    result = evaluate(GateConfig(checks=(check,), **config), {data.name: data})  # type: ignore[arg-type]
    assert len(result.checks) == 1
    return result.checks[0]


# ------------------------------------------------------------------------------------------------- decisions


def test_a_candidate_identical_to_live_is_not_worse_but_not_higher():
    data = same_predictions("feedback", 300)
    for metric in (*METRICS, "recall:negative"):
        not_worse = one(Check("feedback", metric, direction="not_worse"), data)
        higher = one(Check("feedback", metric, direction="higher"), data)
        assert not_worse.passed and not higher.passed, metric
        assert higher.delta == 0.0 and higher.interval == (0.0, 0.0)  # every resample: the same predictions
        assert "not significantly higher" in higher.reason


def test_a_candidate_that_fixes_40_of_300_errors_is_higher():
    # 300 rows, 150 a class; live is wrong on 30 of each, the candidate fixes 20 of each and breaks nothing
    data = slice_of("feedback", {(NEG, NEG, NEG): 120, (NEG, POS, NEG): 20, (NEG, POS, POS): 10,
                                 (POS, POS, POS): 120, (POS, NEG, POS): 20, (POS, NEG, NEG): 10})
    for metric in (*METRICS, "recall:negative", "recall:positive"):
        result = one(Check("feedback", metric, direction="higher"), data)
        assert result.passed, result.reason
        assert result.interval is not None and result.interval[0] > 0
    accuracy = one(Check("feedback", "accuracy", direction="higher"), data)
    assert accuracy.live == pytest.approx(240 / 300) and accuracy.candidate == pytest.approx(280 / 300)
    assert accuracy.p_value == mcnemar_exact(0, 40) == 2 * 0.5**40
    assert accuracy.reason.startswith("accuracy on feedback: 0.933 vs live 0.800 (+0.133, 95% CI +0.")
    assert accuracy.reason.endswith("): significantly higher")
    # a demand beyond what the data show: 40 fixes of 300 are +0.133, not surely more than +0.15
    assert not one(Check("feedback", "accuracy", direction="higher", min_delta=0.15), data).passed


def test_a_candidate_that_learned_the_prior_is_rejected_although_more_accurate():
    feedback = drift_feedback()
    live = classification_metrics(feedback.truth, feedback.live, feedback.labels)
    candidate = classification_metrics(feedback.truth, feedback.candidate, feedback.labels)
    # the trap, as DRIFT.md measured it: accuracy up, the topic's macro-F1 and negative recall down
    assert (live.accuracy, candidate.accuracy) == (pytest.approx(217 / 277), pytest.approx(218 / 277))
    assert candidate.accuracy > live.accuracy
    assert live.macro_f1 == pytest.approx(0.692, abs=5e-4) and candidate.macro_f1 == pytest.approx(0.545, abs=5e-4)
    assert (live.per_class["negative"].recall, candidate.per_class["negative"].recall) == (
        pytest.approx(0.60), pytest.approx(8 / 55))

    accuracy_gate = GateConfig(checks=(Check("feedback", "accuracy", direction="not_worse", max_drop=0.02),))
    assert evaluate(accuracy_gate, {"feedback": feedback}).passed  # an accuracy gate blesses it

    reference = same_predictions("reference", 2000)
    result = evaluate(DEFAULT_GATE, {"feedback": feedback, "reference": reference})
    assert not result.passed
    verdicts = {(check.slice, check.metric): check for check in result.checks}
    macro_f1 = verdicts["feedback", "macro_f1"]
    assert not macro_f1.passed and macro_f1.delta == pytest.approx(candidate.macro_f1 - live.macro_f1)
    assert macro_f1.interval is not None and macro_f1.interval[1] < 0  # significantly worse, not merely not higher
    assert macro_f1.reason.endswith("): significantly lower (the interval lies below 0)")
    assert not verdicts["feedback", "balanced_accuracy"].passed
    assert "significantly worse" in verdicts["feedback", "balanced_accuracy"].reason
    assert verdicts["reference", "macro_f1"].passed and verdicts["reference", "accuracy"].passed
    recall = one(Check("feedback", "recall:negative", direction="not_worse"), feedback)
    assert not recall.passed and recall.interval is not None and recall.interval[1] < 0
    assert result.slices["feedback"]["mcnemar"] == {"live_only_right": 25, "candidate_only_right": 26,
                                                    "p_value": mcnemar_exact(25, 26)}


def test_random_predictions_are_rejected():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 1000)
    live = np.where(rng.random(1000) < 0.9, truth, 1 - truth)
    shuffled = rng.integers(0, 2, 1000)  # a candidate trained on shuffled labels: chance
    slices = {name: SliceData(name, BINARY, truth.tolist(), live.tolist(), shuffled.tolist())
              for name in ("feedback", "reference")}
    result = evaluate(DEFAULT_GATE, slices)
    assert not result.passed
    assert not any(check.passed for check in result.checks)
    assert all("significantly worse" in check.reason for check in result.checks if check.slice == "reference")


def test_a_slice_with_too_few_rows_fails_every_check_on_it():
    small = same_predictions("feedback", 37)
    result = evaluate(GateConfig(checks=(Check("feedback", "accuracy", direction="not_worse"),
                                         Check("feedback", "macro_f1", min_value=0.0))), {"feedback": small})
    assert not result.passed
    for check in result.checks:
        assert not check.passed and check.interval is None
        assert check.reason.endswith("too few rows: 37 < 100")
    assert result.slices["feedback"]["rows"] == 37
    assert one(Check("feedback", "accuracy", direction="not_worse"), small, min_rows=37).passed
    empty = one(Check("feedback", "balanced_accuracy", direction="not_worse"), slice_of("feedback", {}))
    assert empty.reason == "balanced_accuracy on feedback: too few rows: 0 < 100" and empty.live is None


def test_a_check_on_a_missing_slice_fails_and_a_gate_without_results_never_passes():
    result = evaluate(DEFAULT_GATE, {"reference": same_predictions("reference", 500)})
    missing = [check for check in result.checks if check.slice == "feedback"]
    assert len(missing) == 2 and not any(check.passed for check in missing)
    assert all("no such slice: 'feedback'" in check.reason and check.live is None for check in missing)
    assert not result.passed
    assert evaluate(DEFAULT_GATE, {}).slices == {}


def test_min_value_is_an_absolute_threshold_on_the_candidate():
    data = same_predictions("reference", 400, accuracy=0.85)
    value = classification_metrics(data.truth, data.candidate, data.labels).accuracy
    low = one(Check("reference", "accuracy", min_value=round(value - 0.01, 3)), data)
    high = one(Check("reference", "accuracy", min_value=round(value + 0.01, 3)), data)
    assert low.passed and not high.passed
    assert f"below the minimum {value + 0.01:.3f}" in high.reason
    both = one(Check("reference", "accuracy", min_value=round(value + 0.01, 3), direction="not_worse"), data)
    assert not both.passed and "not significantly worse" not in both.reason  # the reason says what failed


def test_not_worse_fails_a_drop_beyond_max_drop_even_when_not_significant():
    # 120 rows, 10 won and 14 lost: -0.033, well within noise (McNemar p = 0.54), but more than 0.02
    data = slice_of("reference", {(NEG, NEG, NEG): 40, (POS, POS, POS): 56, (POS, NEG, POS): 10,
                                  (POS, POS, NEG): 14})
    strict = one(Check("reference", "accuracy", direction="not_worse", max_drop=0.02), data)
    assert strict.interval is not None and strict.interval[1] > 0
    assert not strict.passed and strict.reason.endswith("dropped 0.033, more than the 0.020 allowed")
    loose = one(Check("reference", "accuracy", direction="not_worse", max_drop=0.05), data)
    assert loose.passed and loose.reason.endswith("not significantly worse, and within the 0.050 drop allowed")


def test_a_resample_without_the_checked_class_is_left_out_of_its_recall_interval():
    # 3 negatives of 100, live wrong on all, the candidate right on all: +1.0 in every resample that holds one;
    # 5% of resamples hold none (0.97^100), and counting them as 0 - 0 would drag the interval down to 0
    data = slice_of("feedback", {(NEG, POS, NEG): 3, (POS, POS, POS): 97})
    result = one(Check("feedback", "recall:negative", direction="not_worse"), data)
    assert (result.live, result.candidate, result.interval) == (0.0, 1.0, (1.0, 1.0))


def test_recall_of_a_label_the_slice_lacks_is_a_config_error_and_one_without_rows_fails():
    data = same_predictions("feedback", 200)
    with pytest.raises(GateConfigError, match=r"checks\[0\]\.metric names label 'neutral'"):
        evaluate(GateConfig(checks=(Check("feedback", "recall:neutral", direction="higher"),)), {"feedback": data})
    no_negatives = slice_of("feedback", {(POS, POS, POS): 150, (POS, NEG, POS): 10})
    result = one(Check("feedback", "recall:negative", direction="not_worse"), no_negatives)
    assert not result.passed and "no rows labelled 'negative'" in result.reason


def test_the_same_seed_decides_the_same_way_and_another_moves_the_interval_only_a_little():
    feedback = drift_feedback()
    first = evaluate(DEFAULT_GATE, {"feedback": feedback})
    again = evaluate(DEFAULT_GATE, {"feedback": feedback})
    assert first == again and first.to_dict() == again.to_dict()
    other = evaluate(GateConfig(checks=DEFAULT_GATE.checks, seed=1), {"feedback": feedback})
    assert other.checks[0].interval != first.checks[0].interval
    assert other.checks[0].interval == pytest.approx(first.checks[0].interval, abs=0.01)


def test_2000_draws_of_3000_rows_take_well_under_a_second():
    rng = np.random.default_rng(0)
    labels = ("negative", "neutral", "positive")
    truth = rng.integers(0, 3, 3000)
    live = np.where(rng.random(3000) < 0.9, truth, rng.integers(0, 3, 3000))
    candidate = np.where(rng.random(3000) < 0.9, truth, rng.integers(0, 3, 3000))
    data = SliceData("reference", labels, truth.tolist(), live.tolist(), candidate.tolist())
    config = GateConfig(checks=tuple(Check("reference", metric, direction="not_worse")
                                     for metric in (*METRICS, "recall:neutral")), draws=2000)
    start = time.perf_counter()
    evaluate(config, {"reference": data})
    assert time.perf_counter() - start < 0.5


# ------------------------------------------------------------------------------------- noise cannot bless


def same_process(seed: int, rows: int, agreement: float) -> SliceData:
    """Two models of the same quality: per class, the same chance of being right (0.85 and 0.65, 30% of rows in
    the second class); each row's luck shared with probability ``agreement``."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(rows) < 0.3).astype(np.int64)
    chance = np.where(truth == 1, 0.65, 0.85)
    luck = rng.random(rows)
    other = np.where(rng.random(rows) < agreement, luck, rng.random(rows))
    live = np.where(luck < chance, truth, 1 - truth)
    candidate = np.where(other < chance, truth, 1 - truth)
    return SliceData("feedback", BINARY, truth.tolist(), live.tolist(), candidate.tolist())


@pytest.mark.parametrize("agreement", [0.0, 0.6], ids=["independent", "about-15-rows-apart"])
def test_noise_cannot_bless_a_candidate_no_better_than_live(agreement):
    """300 slices of 120 rows, the candidate as good as live. A 95% interval's lower bound clears 0 by chance in
    about 2.5% of them; over 2,000 slices this gate measured 3.2% (macro-F1) and 1.7% (accuracy, McNemar too).
    The bound leaves room for the 300 slices' own sampling error (one standard deviation: 1%)."""
    checks = (Check("feedback", "macro_f1", direction="higher"), Check("feedback", "accuracy", direction="higher"),
              Check("feedback", "balanced_accuracy", direction="not_worse"))
    passed = np.zeros(3)
    for seed in range(300):
        data = same_process(seed, 120, agreement)
        passed += [check.passed for check in evaluate(GateConfig(checks=checks, draws=500, seed=seed),
                                                      {"feedback": data}).checks]
    higher_macro_f1, higher_accuracy, not_worse = passed / 300
    assert higher_macro_f1 <= 0.06 and higher_accuracy <= 0.06
    assert not_worse >= 0.93  # ... and noise cannot reject either: about 97.5% expected


def test_a_better_candidate_is_found_higher_on_120_rows():
    """The other half of the bargain: the test has power. Both classes' chance of being right up by 0.1."""
    rng = np.random.default_rng(11)
    found = 0
    for seed in range(50):
        truth = (rng.random(120) < 0.3).astype(np.int64)
        luck = rng.random(120)
        live = np.where(luck < np.where(truth == 1, 0.65, 0.85), truth, 1 - truth)
        candidate = np.where(luck < np.where(truth == 1, 0.75, 0.95), truth, 1 - truth)  # right wherever live is
        data = SliceData("feedback", BINARY, truth.tolist(), live.tolist(), candidate.tolist())
        found += one(Check("feedback", "macro_f1", direction="higher"), data, seed=seed).passed
    assert found >= 40


def test_a_few_rows_all_won_are_not_enough():
    # 4 discordant rows, all won: every resample holding one of them is higher, yet McNemar's p is 0.125
    four = slice_of("feedback", {(NEG, NEG, NEG): 100, (POS, POS, POS): 196, (POS, NEG, POS): 4})
    result = one(Check("feedback", "macro_f1", direction="higher"), four)
    assert result.interval is not None and result.interval[0] > 0  # what a percentile bootstrap alone says
    assert not result.passed and "differ on 4 rows, fewer than the 6" in result.reason
    # 6 of 6: McNemar's p = 2 x 0.5^6 = 0.031, the fewest that can be significant at 0.95
    six = slice_of("feedback", {(NEG, NEG, NEG): 100, (POS, POS, POS): 194, (POS, NEG, POS): 6})
    assert one(Check("feedback", "accuracy", direction="higher"), six).passed
    assert one(Check("feedback", "accuracy", direction="higher"), six).p_value == pytest.approx(0.03125)
    assert not one(Check("feedback", "accuracy", direction="higher"), six, confidence=0.99).passed
    assert (min_discordant(0.95), min_discordant(0.99), min_discordant(0.9)) == (6, 8, 5)


def test_accuracy_higher_needs_mcnemar_too():
    # 11 won, 3 lost of 14: the bootstrap's lower bound clears 0, McNemar's exact p = 0.057 does not
    data = slice_of("feedback", {(NEG, NEG, NEG): 100, (POS, POS, POS): 186, (POS, NEG, POS): 11, (POS, POS, NEG): 3})
    result = one(Check("feedback", "accuracy", direction="higher"), data)
    assert result.p_value == pytest.approx(mcnemar_exact(3, 11)) and result.p_value > 0.05
    assert not result.passed and "McNemar p=0.0574" in result.reason


# --------------------------------------------------------------------------------------------------- McNemar


def test_mcnemar_against_known_values():
    assert mcnemar_exact(0, 10) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact(10, 0) == mcnemar_exact(0, 10)
    assert mcnemar_exact(7, 7) == 1.0 and mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 4) == 1.0
    for b, c in [(1, 9), (3, 11), (12, 30), (40, 61)]:
        exact = 2 * sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c)
        assert mcnemar_exact(b, c) == pytest.approx(exact, rel=1e-9) == mcnemar_exact(c, b)
    assert mcnemar_exact(3, 11) == pytest.approx(0.0574, abs=1e-4)
    assert mcnemar_exact(100, 100) == 1.0 and mcnemar_exact(0, 2000) < 1e-300
    with pytest.raises(ValueError, match="live_only_right"):
        mcnemar_exact(-1, 3)
    with pytest.raises(ValueError, match="candidate_only_right"):
        mcnemar_exact(1, 2.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- metrics


def test_metric_values_agree_with_ferry_metrics():
    rng = np.random.default_rng(4)
    labels = ("negative", "neutral", "positive", "never")  # "never": no rows and never predicted
    truth = rng.integers(0, 3, 250)
    predicted = np.where(rng.random(250) < 0.7, truth, rng.integers(0, 3, 250))
    expected = classification_metrics(truth.tolist(), predicted.tolist(), labels)
    confusion = np.array(expected.matrix)
    assert float(metric_values(confusion, "accuracy")) == pytest.approx(expected.accuracy)
    assert float(metric_values(confusion, "macro_f1")) == pytest.approx(expected.macro_f1)  # "never" counts as 0
    for index, label in enumerate(labels[:3]):
        assert float(metric_values(confusion, f"recall:{label}", index)) == pytest.approx(expected.recall()[label])
    assert math.isnan(float(metric_values(confusion, "recall:never", 3)))
    recalls = [expected.recall()[label] for label in labels[:3]]  # balanced: the classes that have rows
    assert float(metric_values(confusion, "balanced_accuracy")) == pytest.approx(sum(recalls) / 3)
    stacked = np.stack([confusion, np.zeros_like(confusion)])
    assert metric_values(stacked, "accuracy").tolist() == [pytest.approx(expected.accuracy), 0.0]


# ---------------------------------------------------------------------------------------------- configuration


def test_the_repository_gate_file_is_the_documented_default():
    loaded = GateConfig.load(ROOT / "gate.json")
    assert loaded == DEFAULT_GATE
    assert json.loads((ROOT / "gate.json").read_text()) == DEFAULT_GATE.to_dict()


def test_gate_config_round_trips():
    custom = GateConfig(checks=(Check("feedback", "recall:negative", min_value=0.5, direction="higher",
                                      min_delta=-0.01),
                                Check("reference", "balanced_accuracy", min_value=0.8)),
                        min_rows=150, confidence=0.9, draws=500, seed=7)
    for config in (DEFAULT_GATE, custom):
        data = json.loads(json.dumps(config.to_dict()))
        assert GateConfig.from_dict(data) == config
    assert GateConfig.from_dict({"checks": [{"slice": "s", "metric": "accuracy", "min_value": 1}]}).checks[0] == \
        Check("s", "accuracy", min_value=1.0)


def test_gate_result_round_trips_through_json():
    result = evaluate(DEFAULT_GATE, {"feedback": drift_feedback(), "reference": same_predictions("reference", 300),
                                     "unused": same_predictions("unused", 20)})
    stored = json.loads(json.dumps(result.to_dict()))
    assert GateResult.from_dict(stored) == result
    assert set(stored["slices"]) == {"feedback", "reference", "unused"}
    assert stored["slices"]["feedback"]["live"]["per_class"]["negative"]["recall"] == pytest.approx(0.6)
    assert stored["config"] == DEFAULT_GATE.to_dict()
    lines = result.summary().splitlines()
    assert len(lines) == 4 and lines[0].startswith("FAIL macro_f1 on feedback: 0.545 vs live 0.692 (-0.147, 95% CI")
    assert lines[2].startswith("PASS macro_f1 on reference")
    stored["passed"] = True
    with pytest.raises(GateResultError, match="passed is True"):
        GateResult.from_dict(stored)
    stored["passed"] = False
    stored["checks"][1]["interval"] = [0.1]
    with pytest.raises(GateResultError, match=r"checks\[1\]\.interval must be two numbers"):
        GateResult.from_dict(stored)
    with pytest.raises(GateResultError, match="config"):
        GateResult.from_dict({**result.to_dict(), "config": {"checks": []}})


@pytest.mark.parametrize(("document", "message"), [
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5}], "alpha": 0.05},
     r"^gate\.json: unknown field\(s\) 'alpha' \(known: checks, "),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5, "treshold": 1}]},
     r"^gate\.json: checks\[0\]: unknown field\(s\) 'treshold'"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5},
                 {"slice": "f", "metric": "accuracy", "direction": "lower"}]},
     r"^gate\.json: checks\[1\]\.direction must be one of higher, not_worse, got 'lower'$"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5}, {"slice": "f", "metric": "f1",
                                                                       "direction": "higher"}]},
     r"^gate\.json: checks\[1\]\.metric must be one of macro_f1, balanced_accuracy, accuracy or recall:<label>, "
     r"got 'f1'$"),
    ({"checks": [{"slice": "f", "metric": "recall:", "direction": "higher"}]}, r"checks\[0\]\.metric must be"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5}], "draws": -5},
     r"^gate\.json: draws must be an integer from 100 to 100000, got -5$"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5}], "draws": True}, r"draws must be"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5}], "confidence": 1.0},
     r"^gate\.json: confidence must be a number in \(0, 1\), got 1\.0$"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5}], "confidence": 0},
     r"confidence must be a number in \(0, 1\), got 0$"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 0.5}], "min_rows": 0}, r"min_rows must be"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "min_value": 1.5}]}, r"checks\[0\]\.min_value must be"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "direction": "not_worse", "min_delta": 0.01}]},
     r"checks\[0\]\.min_delta applies to direction 'higher' only"),
    ({"checks": [{"slice": "f", "metric": "accuracy", "direction": "higher", "max_drop": 0.01}]},
     r"checks\[0\]\.max_drop applies to direction 'not_worse' only"),
    ({"checks": [{"slice": "f", "metric": "accuracy"}]}, r"^gate\.json: checks\[0\] checks nothing"),
    ({"checks": [{"metric": "accuracy", "min_value": 0.5}]}, r"checks\[0\]: missing field\(s\) slice"),
    ({"checks": [{"slice": "", "metric": "accuracy", "min_value": 0.5}]}, r"checks\[0\]\.slice must be"),
    ({"checks": []}, r"^gate\.json: checks must be a non-empty list"),
    ({"checks": ["accuracy"]}, r"^gate\.json: checks\[0\] must be a JSON object, got str"),
    ([], r"^gate\.json: the gate must be a JSON object, got list"),
])
def test_a_bad_gate_names_the_file_and_the_field(document, message):
    with pytest.raises(GateConfigError, match=message):
        GateConfig.from_dict(document, source="gate.json")


def test_a_missing_or_unparsable_gate_file_names_its_path(tmp_path):
    missing = tmp_path / "gate.json"
    with pytest.raises(GateConfigError, match=f"^{re.escape(str(missing))}: cannot read the gate file: No such file"):
        GateConfig.load(missing)
    missing.write_text('{"checks": [}')
    with pytest.raises(GateConfigError, match=f"^{re.escape(str(missing))}: not valid JSON: .* at line 1 column 13"):
        GateConfig.load(missing)
    missing.write_text('{"checks": [{"slice": "f", "metric": "accuracy", "min_value": NaN}]}')
    nan = rf"^{re.escape(str(missing))}: checks\[0\]\.min_value must be a number in \[0, 1\], got nan$"
    with pytest.raises(GateConfigError, match=nan):
        GateConfig.load(missing)
    error = GateConfigError("x")
    assert (error.code, error.exit_status) == ("invalid_gate", 2)


def test_constructing_a_bad_config_directly_names_the_field():
    with pytest.raises(GateConfigError, match=r"^direction must be one of"):
        Check("f", "accuracy", direction="up")
    with pytest.raises(GateConfigError, match=r"^checks must hold at least one check"):
        GateConfig(checks=())
    with pytest.raises(GateConfigError, match=r"^checks\[0\] must be a Check"):
        GateConfig(checks=({"slice": "f"},))  # type: ignore[arg-type]
    assert DIRECTIONS == ("higher", "not_worse")


def test_slice_data_refuses_what_cannot_be_paired():
    with pytest.raises(ValueError, match="differ in length"):
        SliceData("f", BINARY, [0, 1], [0, 1], [0])
    with pytest.raises(ValueError, match="candidate must hold class indexes from 0 to 1"):
        SliceData("f", BINARY, [0, 1], [0, 1], [0, 2])
    with pytest.raises(ValueError, match="labels must be distinct"):
        SliceData("f", ("a", "a"), [0], [0], [0])
    with pytest.raises(ValueError, match="given under the name"):
        evaluate(DEFAULT_GATE, {"feedback": same_predictions("reference", 10)})
