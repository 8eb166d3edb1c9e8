"""bench.md: the README's table (one row per candidate: its figure, and in brackets its ratio to the PyTorch
pipeline), the floors as PASS/FAIL lines, the load test, and the cost of a million predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferry.bench.machine import cpu_line

MB = 2**20


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "" if value is None else f" ({value:.1f}x)" if value >= 1 else f" ({value:.2f}x)"


def _money(value: float) -> str:
    return f"${value:.3f}" if value < 10 else f"${value:,.2f}"


def _price(value: float) -> str:
    return f"{value:.10f}".rstrip("0").rstrip(".")


def _count(value: float | None) -> str:
    if value is None:
        return "never"
    return f"{value / 1e6:,.1f} M" if value >= 1e6 else f"{value:,.0f}"


def table(document: dict[str, Any], threads: str) -> list[str]:
    lines = ["| candidate | p50 1x32 | p50 8x128 | cold start | peak RSS | size | accuracy |",
             "|---|---|---|---|---|---|---|"]
    for item in document["candidates"]:
        figures, ratio = item["threads"][threads], item["ratios"]
        at = ratio["by_threads"].get(threads, {})
        latency = figures["latency_ms"]
        accuracy = "n/a" if item["accuracy"] is None else f"{item['accuracy'] * 100:.2f}%"
        if ratio["accuracy_points"] is not None and item["id"] != "pytorch":
            accuracy += f" ({ratio['accuracy_points']:+.2f} pt)"
        lines.append(
            f"| {item['label']} | {_ms(latency['1x32']['p50'])} ms{_x(at.get('speedup_1x32'))} "
            f"| {_ms(latency['8x128']['p50'])} ms{_x(at.get('speedup_8x128'))} "
            f"| {item['cold_start']['total_s']:.2f} s{_x(ratio['cold_start_speedup'])} "
            f"| {figures['peak_rss_mb']:.0f} MB{_x(at.get('rss_fraction'))} "
            f"| {item['artifact_bytes'] / MB:.1f} MB{_x(ratio['size_fraction'])} | {accuracy} |")
    return lines


def latency_table(document: dict[str, Any], threads: str) -> list[str]:
    shapes = list(document["texts"]["shapes"])
    lines = [f"| candidate ({threads} thread{'s' if threads != '1' else ''}) | "
             + " | ".join(f"p50 / p95 {shape}" for shape in shapes) + " |",
             "|---" * (len(shapes) + 1) + "|"]
    for item in document["candidates"]:
        latency = item["threads"][threads]["latency_ms"]
        at = item["ratios"]["by_threads"].get(threads, {})
        cells = [f"{_ms(latency[s]['p50'])} / {_ms(latency[s]['p95'])} ms{_x(at.get('speedup_' + s))}" for s in shapes]
        lines.append(f"| {item['label']} | " + " | ".join(cells) + " |")
    return lines


def floor_lines(document: dict[str, Any]) -> list[str]:
    found = []
    for check in document["floors"]:
        value = "n/a" if check["value"] is None else f"{check['value']:.2f}"
        verdict = "PASS" if check["passed"] else "FAIL"
        found.append(f"{verdict} int8 Predictor {check['name']}: {value} ({check['op']} {check['floor']:g}, "
                     f"{check['threads']} threads)")
    if not document["machine"]["vnni"]:
        found.append("(this CPU has no VNNI: the floors are set for one with it, and are reported here, not binding)")
    return found


def load_lines(load: dict[str, Any]) -> list[str]:
    latency = load["latency_ms"]
    p50 = "n/a" if latency["p50"] is None else f"{latency['p50']:.1f}"
    p99 = "n/a" if latency["p99"] is None else f"{latency['p99']:.1f}"
    return [f"Local HTTP API, {load['clients']} concurrent clients, {load['function_processes']} processes per "
            "function "
            f"({load['ort_threads']} ONNX Runtime thread each), limits {load['limits']['requests']} requests or "
            f"{load['limits']['seconds']:g} s (stopped by {load['stopped_by']}): {load['ok']} answered in "
            f"{load['seconds']:.1f} s, {load['throughput_rps']:.1f} requests/s, p50 {p50} ms, p99 {p99} ms, "
            f"{load['errors']} errors; {load['captures_written']} captures written (the "
            f"{load['warmup_ok']} warm-up requests' included)."]


def cost_lines(document: dict[str, Any]) -> list[str]:
    cost, prices = document["cost"], document["prices"]
    month = cost["endpoint"]
    lines = ["| memory | texts a request | threads | billed ms | API Gateway | Lambda | logs | capture fn | DynamoDB "
             "| total per million | crosses the endpoint at |", "|---" * 11 + "|"]
    for row in cost["rows"]:
        parts = row["per_million"]
        lambda_cost = parts["lambda_requests"] + parts["lambda_compute"]
        logs = parts["platform_logs"] + parts["capture_logs"]
        fits = "" if row["fits"] else " (under the handler's peak RSS)"
        lines.append(f"| {row['memory_mb']} MB{fits} | {row['texts_per_request']} | {row['threads']} | "
                     f"{row['billed_ms']} | {_money(parts['api_gateway'])} | {_money(lambda_cost)} | {_money(logs)} | "
                     f"{_money(parts['capture_function'])} | {_money(parts['capture_dynamodb'])} | "
                     f"{_money(row['total_per_million'])} | {_count(row['crosses_endpoint_at'])} a month |")
    lines += ["", f"Always-on endpoint: {month['instance']} at ${month['per_hour']}/h = {_money(month['per_month'])} a "
              f"month; one instance serves up to {_count(month['predictions_per_month_one_instance'])} single-text "
              "requests a month at the handler's 2-thread latency.", ""]
    lines += capture_lines(cost)
    lines += ["", f"Prices ({prices['region']}, as of {prices['as_of']}; sources in bench.json): Lambda "
              f"${_price(prices['lambda_gb_second_x86'])}/GB-s x86 (${_price(prices['lambda_gb_second_arm'])} Arm), "
              f"${prices['lambda_per_million_requests']}/M requests; HTTP API "
              f"${prices['api_gateway_http_per_million']}/M; logs ${prices['logs_ingestion_per_gb']}/GB; "
              f"DynamoDB ${prices['dynamodb_per_million_wru']}/M WRU."]
    return lines


def capture_lines(cost: dict[str, Any]) -> list[str]:
    assumptions = cost["assumptions"]
    inference = min(row["inference_per_million"] for row in cost["rows"] if row["texts_per_request"] == 1)
    lines = [f"Capture paths (per million predictions, one text a request; {assumptions['events_per_delivery']} log "
             "events per delivery assumed; lines, item and function measured; DynamoDB includes the captures' "
             f"storage for their {assumptions['capture_ttl_days']} days):", ""]
    for name, parts in cost["capture_paths"].items():
        lines.append(f"- {name}: {_money(parts['total_per_million'])} (logs {_money(parts['logs'])}, capture function "
                     f"{_money(parts['function'])}, DynamoDB {_money(parts['dynamodb'])})")
    if cost["capture_exceeds_inference"]:
        cheapest = min(cost["capture_paths"].items(), key=lambda item: item[1]["total_per_million"])
        lines += ["", f"Capture costs more than inference (the function's requests and compute, "
                  f"{_money(inference)} per million at its cheapest memory here); the cheapest capture path measured "
                  f"is {cheapest[0]}: {_money(cheapest[1]['total_per_million'])} per million."]
    return lines


def markdown(document: dict[str, Any]) -> str:
    settings, texts, model = document["settings"], document["texts"], document["model"]
    threads = str(settings["table_threads"])
    lines = [f"# ferry bench: {model['name']} ({model['version']})", "",
             f"CPU: {cpu_line(document['machine'])}; load average at the start "
             f"{document['machine']['load_average_at_start']}.", "",
             f"Texts: {texts['method']}. Accuracy on {texts['accuracy_sample']} of {texts['test_split']}, "
             f"{texts['accuracy_rows']} rows. Latency: {settings['repeats']} timed calls per shape after "
             f"{settings['warmup']} untimed, each candidate alone in its own process, in {settings['rounds']} "
             "round(s) through every candidate, pooled. Cold start: a fresh interpreter "
             "to the first answer (process start, imports, load, first prediction), median of "
             f"{document['candidates'][0]['cold_start']['runs']}. Peak RSS: the process's VmHWM after every shape. "
             f"In brackets: the ratio to the PyTorch pipeline in this run ({threads} threads).", ""]
    lines += [*table(document, threads), ""]
    for count in sorted(document["candidates"][0]["threads"], key=int):
        lines += [*latency_table(document, count), ""]
    lines += [*floor_lines(document), "", *load_lines(document["load_test"]), ""]
    lines += ["## Cost of a million predictions on Lambda (the whole request)", "", *cost_lines(document)]
    return "\n".join(lines) + "\n"


def summary_lines(document: dict[str, Any]) -> Sequence[str]:
    """What the command prints: the machine, the table, the floors, the load test, capture against inference."""
    threads = str(document["settings"]["table_threads"])
    lines = [f"CPU: {cpu_line(document['machine'])}", *table(document, threads), *floor_lines(document),
             *load_lines(document["load_test"])]
    cost = document["cost"]
    if cost["capture_exceeds_inference"]:
        lines += capture_lines(cost)[-1:]
    return lines
