"""template.yaml: valid CloudFormation (cfn-lint, offline), and what the local stack reads from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ferry.local import template as tpl

from conftest import ROOT


def test_cfn_lint_passes_on_the_template():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(ROOT / "template.yaml")], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_routes_tables_and_functions_come_from_the_template():
    template = tpl.load_template(ROOT / "template.yaml")
    routes = {(route.method, route.path): route.function for route in tpl.routes(template)}
    assert routes[("POST", "/v1/models/{model}/predict")] == "PredictFunction"
    assert routes[("POST", "/v1/models/{model}/embed")] == "PredictFunction"
    assert ("GET", "/healthz") in routes
    predict = next(r for r in tpl.routes(template) if r.path == "/v1/models/{model}/predict")
    assert predict.match("POST", "/v1/models/sentiment/predict") == {"model": "sentiment"}
    assert predict.match("GET", "/v1/models/sentiment/predict") is None
    assert predict.match("POST", "/v1/models/a/b/predict") is None
    table = tpl.tables(template)["CaptureTable"]
    assert table["KeySchema"] == [{"AttributeName": "prediction_id", "KeyType": "HASH"}]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "by-model-time"
    functions = tpl.functions(template, ROOT)
    assert set(functions) >= {"PredictFunction", "CaptureFunction"}
    for function in functions.values():
        assert (function.code_uri / "app.py").is_file()
