"""`ferry bench --quick` on the tiny BERT (its int8 layer and its fp32 source), as a user runs it: every candidate
measured, every ratio computed, the CPU stated, the cost priced and the three files written. Structure only: speed
is the bench's to report (its floors are PASS/FAIL lines), never a test's to assert."""

from __future__ import annotations

import json

import pytest

from helpers import run_ferry

MODEL = "tiny-bert"
CANDIDATES = {"pytorch", "optimum-fp32", "predictor-fp32", "predictor-int8", "handler-int8"}
SHAPES = {"1x32", "1x128", "8x32", "8x128"}
LIGHT = {"predictor-fp32", "predictor-int8", "handler-int8"}  # what runs in Lambda: no torch, transformers, optimum


@pytest.fixture(scope="module")
def bench(tiny_bert, bert_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = run_ferry("bench", "--model", MODEL, "--layers-dir", str(bert_build.layer_dir.parent), "--source",
                       str(tiny_bert), "--out", str(out), "--quick", "--memory-mb", "1024,2048", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, out, json.loads((out / "bench.json").read_text())


def test_every_candidate_is_measured_at_each_thread_count(bench):
    _, _, document = bench
    found = {item["id"]: item for item in document["candidates"]}
    assert set(found) == CANDIDATES
    for item in found.values():
        assert set(item["threads"]) == {"1", "2"}
        for figures in item["threads"].values():
            assert set(figures["latency_ms"]) == SHAPES
            assert all(stats["p50"] > 0 and stats["p95"] >= stats["p50"] and stats["n"] == 5
                       for stats in figures["latency_ms"].values())
            assert figures["peak_rss_mb"] > 0 and figures["rounds"] == 1 and len(figures["load_average"]) == 1
        cold = item["cold_start"]
        assert cold["total_s"] == pytest.approx(cold["process_s"] + cold["import_s"] + cold["load_s"] + cold["first_s"])
        assert item["artifact_bytes"] > 0
        assert 0 <= item["accuracy"] <= 1
        assert len(item["predictions"]) == document["texts"]["accuracy_rows"] == 32
    computed = {name: item["threads"]["2"]["tokens_computed"] for name, item in found.items()}
    assert all(tokens == computed["pytorch"] for tokens in computed.values()), computed  # the same work for each
    shapes = document["texts"]["shapes"]
    assert computed["pytorch"]["8x128"] == [max(shapes["8x128"]["token_lengths"])]
    assert computed["pytorch"]["1x32"] == shapes["1x32"]["token_lengths"]
    for name in LIGHT:
        assert not {"torch", "transformers", "optimum"} & set(found[name]["threads"]["2"]["modules"]), name
    assert "torch" in found["pytorch"]["threads"]["2"]["modules"]


def test_ratios_are_against_the_pytorch_pipeline_of_the_same_run(bench):
    _, _, document = bench
    found = {item["id"]: item for item in document["candidates"]}
    baseline = found["pytorch"]["ratios"]
    assert baseline["cold_start_speedup"] == pytest.approx(1.0)
    assert baseline["by_threads"]["2"]["speedup_1x32"] == pytest.approx(1.0)
    for item in found.values():
        ratio = item["ratios"]
        assert set(ratio["by_threads"]) == {"1", "2"}
        assert all(value > 0 for figures in ratio["by_threads"].values() for value in figures.values())
        assert ratio["size_fraction"] > 0 and ratio["cold_start_speedup"] > 0
        assert ratio["accuracy_points"] is not None and 0 <= ratio["agreement_with_pytorch"] <= 1
    assert [check["name"] for check in document["floors"]][:2] == ["p50 1x32 speed-up", "p50 8x128 speed-up"]


def test_the_texts_have_the_shapes_they_claim(bench):
    _, _, document = bench
    shapes = document["texts"]["shapes"]
    assert set(shapes) == SHAPES
    for name, shape in shapes.items():
        assert len(shape["texts"]) == 8 and len(shape["token_lengths"]) == 8
        assert max(shape["token_lengths"]) <= shape["target_tokens"]
        assert shape["batch"] == int(name.split("x")[0])
    assert min(shapes["8x128"]["token_lengths"]) > 100  # joined texts, not short tweets


def test_the_cpu_is_stated(bench):
    result, out, document = bench
    machine = document["machine"]
    assert machine["model"] and machine["cores"] >= 1 and isinstance(machine["vnni"], bool)
    assert machine["versions"]["onnxruntime"] and machine["versions"]["torch"]
    for text in (result.stdout, (out / "bench.md").read_text()):
        assert "CPU: " in text and "VNNI " in text


def test_the_cost_is_priced_from_documented_inputs(bench):
    _, _, document = bench
    cost = document["cost"]
    assert {(row["memory_mb"], row["texts_per_request"]) for row in cost["rows"]} == {
        (1024, 1), (1024, 8), (2048, 1), (2048, 8)}
    for row in cost["rows"]:
        assert row["total_per_million"] > 0 and row["billed_ms"] >= 1
        assert set(row["per_million"]) >= {"api_gateway", "lambda_requests", "lambda_compute", "capture_logs",
                                           "capture_function", "capture_dynamodb"}
    assert len(cost["capture_paths"]) == 3
    assert cost["endpoint"]["per_month"] > 0
    capture = document["capture"]
    assert capture["item"]["wru_per_capture"] >= 2  # the table and its index
    assert capture["lines"]["capture_line_bytes"] > capture["lines"]["line_without_record_bytes"] > 0
    assert all(document["prices"]["sources"][name].startswith("https://") for name in document["prices"]["sources"])


def test_the_load_test_is_bounded_and_answered(bench):
    _, _, document = bench
    load = document["load_test"]
    assert 0 < load["requests"] <= 16
    assert load["ok"] + load["errors"] == load["requests"] and load["ok"] > 0
    assert load["throughput_rps"] > 0 and load["latency_ms"]["p99"] >= load["latency_ms"]["p50"]
    assert load["captures_written"] == load["ok"] + load["warmup_ok"]  # every answered request captured, once


def test_the_files_are_written(bench):
    result, out, _ = bench
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "bench.md").read_text()
    assert "| candidate | p50 1x32 | p50 8x128 | cold start | peak RSS | size | accuracy |" in table
    assert table.count("PASS ") + table.count("FAIL ") == 5
    assert result.stdout.count("PASS ") + result.stdout.count("FAIL ") == 5
    assert "bench.json" in result.stdout


@pytest.mark.parametrize(("arguments", "message"), [
    (["--model", "no-such-model"], "--model 'no-such-model' is not a model layer"),
    (["--source", "/nonexistent/source"], "--source /nonexistent/source: not the fp32 Hugging Face folder"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--rounds", "-1"], "--rounds must be at least 1"),
    (["--threads", "0"], "--threads must be thread counts of at least 1"),
])
def test_bad_input_is_a_clear_message_and_exit_2(bert_build, tiny_bert, tmp_path, arguments, message):
    base = {"--model": MODEL, "--source": str(tiny_bert)}
    base.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    flat = [part for pair in base.items() for part in pair]
    result = run_ferry("bench", "--layers-dir", str(bert_build.layer_dir.parent), "--out", str(tmp_path), *flat)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- the pure parts, without a run ----------------------------------------------------------------------------------

def test_lambda_duration_follows_the_cpu_that_memory_buys():
    from ferry.bench.cost import lambda_duration_ms

    measured = {1: 10.0, 2: 6.0}
    assert lambda_duration_ms(measured, 1769, 1769.0) == (10.0, 1)  # one vCPU: two threads would take 12 ms
    assert lambda_duration_ms(measured, 3538, 1769.0) == (6.0, 2)  # two vCPUs: two threads at full speed
    duration, threads = lambda_duration_ms(measured, 1024, 1769.0)
    assert threads == 1 and duration == pytest.approx(10.0 * 1769 / 1024)


def test_item_size_follows_dynamodbs_rules():
    from decimal import Decimal

    from ferry.bench.capture import item_bytes

    # names count; a string its UTF-8 bytes; a number 1 byte per two significant digits plus 1; a boolean 1
    assert item_bytes({"id": "abc"}) == 2 + 3
    assert item_bytes({"n": Decimal("12345")}) == 1 + 3 + 1
    assert item_bytes({"n": Decimal("0.500")}) == 1 + 1 + 1
    assert item_bytes({"ok": True, "é": "é"}) == 2 + 1 + 2 + 2


def test_the_cpu_facts_come_from_cpuinfo():
    from ferry.bench.machine import cpu_facts

    facts = cpu_facts("model name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8\n")
    assert facts == {"model": "Some CPU", "flags": ["avx2", "avx512f", "avx512_vnni", "amx_int8"], "vnni": True,
                     "amx": True}
    assert cpu_facts("model name\t: Old CPU\nflags\t\t: fpu avx2\n")["vnni"] is False


def test_prices_can_be_changed_by_a_file_and_refuse_unknown_ones(tmp_path):
    from ferry.bench import InvalidBenchConfigError, Prices

    path = tmp_path / "prices.json"
    path.write_text('{"sagemaker_per_hour": 0.2, "region": "eu-west-1"}')
    prices = Prices.from_file(path)
    assert (prices.sagemaker_per_hour, prices.region, prices.lambda_per_million_requests) == (0.2, "eu-west-1", 0.2)
    path.write_text('{"lambda_per_gb": 1}')
    with pytest.raises(InvalidBenchConfigError, match="unknown prices"):
        Prices.from_file(path)
    path.write_text('{"sagemaker_per_hour": -1}')
    with pytest.raises(InvalidBenchConfigError, match="0 or more"):
        Prices.from_file(path)
