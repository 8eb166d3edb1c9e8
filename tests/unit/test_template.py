"""template.yaml: what the local stack reads from it, and what SAM CLI makes of it (test_deploy.py: what deploys)."""

from __future__ import annotations

import os
import subprocess

from ferry.local import template as tpl

from conftest import ROOT


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
    public = {route.path for route in tpl.routes(template) if not route.authorized}
    assert public == {"/healthz", "/openapi.json"}
    assert tpl.lambda_authorizer(template) == "AuthorizerFunction"
    assert tpl.buckets(template)["BatchBucket"].startswith("ferry-batch-")
    for function in functions.values():
        assert (function.code_uri / "app.py").is_file()


SAM = ROOT / ".venv-sam" / "bin" / "sam"
SAM_ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0"}


def test_sam_validate_lint():
    assert SAM.exists(), "aws-sam-cli is installed by `make test` into .venv-sam"
    command = [str(SAM), "validate", "--lint", "--region", "us-east-1", "-t", str(ROOT / "template.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=SAM_ENV, check=False)
    assert result.returncode == 0 and "is a valid SAM Template" in result.stdout + result.stderr, result.stderr


def test_sam_build_packages_every_function(tmp_path):
    import shutil

    assert SAM.exists(), "aws-sam-cli is installed by `make test` into .venv-sam"
    if shutil.which("python3.12") is None:
        raise AssertionError("sam build needs python3.12 on PATH (make test puts pyenv's there)")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "template.yaml", project / "template.yaml")
    shutil.copytree(ROOT / "functions", project / "functions")
    for layer in ("build/layers/runtime-x86_64/python", "build/layers/runtime-arm64/python",
                  "layers/model/sentiment/models/sentiment",
                  "layers/model/minilm/models/minilm"):  # stand-ins: sam build only references layer folders
        (project / layer).mkdir(parents=True)
        (project / layer / "README").write_text("fixture\n")
    result = subprocess.run([str(SAM), "build", "--build-dir", str(project / ".aws-sam" / "build")], cwd=project,
                            capture_output=True, text=True, timeout=300, env=SAM_ENV, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    built = project / ".aws-sam" / "build"
    for function in ("PredictFunction", "CaptureFunction", "BatchFunction", "AuthorizerFunction"):
        assert (built / function / "app.py").is_file()
