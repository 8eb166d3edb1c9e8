"""What each Lambda handler's import pulls in: the authorizer and the capture function must stay light (their
cold start pays for every module), the feedback and monitor functions load no model runtime (they read manifests),
the predict function must load its runtime (it preloads models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ferry.local import template as tpl

from helpers import ROOT

HEAVY = ("numpy", "onnxruntime", "tokenizers", "pydantic", "torch", "transformers", "optimum")

# Imports a handler file the way src/ferry/local/functions.py does, and prints the heavy packages it loaded.
PROBE = """
import importlib.util, json, sys
heavy, path = json.loads(sys.argv[1]), sys.argv[2]
before = {name.partition(".")[0] for name in sys.modules}
spec = importlib.util.spec_from_file_location("ferry_probe_handler", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
loaded = {name.partition(".")[0] for name in sys.modules}
print(json.dumps({"already": sorted(before & set(heavy)), "loaded": sorted((loaded - before) & set(heavy))}))
"""


def _value(value: Any, template: dict[str, Any]) -> str:
    """A template value as a deployed stack has it: a resource's Ref is its name, a parameter's its default."""
    if isinstance(value, dict) and "Ref" in value:
        parameter = template.get("Parameters", {}).get(value["Ref"])
        return str(parameter.get("Default", "")) if parameter else value["Ref"]
    return str(value)


def lambda_environment(logical_id: str, models_dir: Path) -> tuple[Path, dict[str, str]]:
    """The handler file of a template function and the environment Lambda gives it."""
    template = tpl.load_template(ROOT / "template.yaml")
    function = tpl.functions(template, ROOT)[logical_id]
    shared = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    variables = {name: _value(value, template) for name, value in {**shared, **function.environment}.items()}
    env = {name: value for name, value in os.environ.items() if not name.startswith(("FERRY_", "POWERTOOLS_"))}
    env.update(variables, AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="x",
               AWS_SECRET_ACCESS_KEY="x", AWS_LAMBDA_FUNCTION_NAME=logical_id, LAMBDA_TASK_ROOT=str(function.code_uri),
               FERRY_MODELS_DIR=str(models_dir), PYTHONDONTWRITEBYTECODE="1")
    module = function.handler.rpartition(".")[0]
    return function.code_uri / f"{module}.py", env


def heavy_modules_of(logical_id: str, models_dir: Path) -> dict[str, list[str]]:
    path, env = lambda_environment(logical_id, models_dir)
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), str(path)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("function", ["AuthorizerFunction", "CaptureFunction"])
def test_the_authorizer_and_capture_functions_import_no_model_runtime(function, tmp_path):
    found = heavy_modules_of(function, tmp_path)
    assert found == {"already": [], "loaded": []}


@pytest.mark.parametrize("function", ["FeedbackFunction", "MonitorFunction"])
def test_the_feedback_and_monitor_functions_load_no_model(function, tmp_path):
    """They read manifests, never a model: no onnxruntime, no tokenizers (the monitor's statistics need numpy;
    the feedback function's pydantic models, pydantic)."""
    found = heavy_modules_of(function, tmp_path)
    assert found["already"] == []
    assert not {"onnxruntime", "tokenizers", "torch", "transformers", "optimum"} & set(found["loaded"])
    assert ("numpy" in found["loaded"]) == (function == "MonitorFunction")


def test_the_predict_function_loads_its_runtime_at_import(tmp_path):
    found = heavy_modules_of("PredictFunction", tmp_path)
    assert found["already"] == []
    assert {"numpy", "onnxruntime", "tokenizers"} <= set(found["loaded"])
    assert not {"torch", "transformers", "optimum"} & set(found["loaded"])


def test_the_light_runtime_modules_and_the_package_import_no_model_runtime():
    light = ["ferry.runtime", "ferry.runtime.keys", "ferry.runtime.capture", "ferry.runtime.settings",
             "ferry.runtime.manifest", "ferry.runtime.constants", "ferry.runtime.exceptions", "ferry.runtime.emf"]
    code = (f"import importlib, json, sys\nfor name in {light!r}: importlib.import_module(name)\n"
            f"print(json.dumps(sorted({{m.partition('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))\n"
            "from ferry.runtime import Predictor\n"
            "print(json.dumps([Predictor.__module__, 'numpy' in sys.modules, 'onnxruntime' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = (json.loads(line) for line in result.stdout.splitlines())
    assert before == []
    assert after == ["ferry.runtime.predictor", True, True]  # the re-exported names still work, loaded on use

