"""`ferry build --task text-generation` as a command, up to the library call: which options each kind of build
takes, where the artifact goes by default, and the exit status of each refusal (in process; tests/pipeline runs
the command itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ferry.generation
from ferry.cli import main


class Called(Exception):
    """Raised by the stand-in library call, carrying the config the command built."""


@pytest.fixture()
def library_call(monkeypatch):
    calls = []

    def build_endpoint_model(config, progress):
        calls.append(config)
        raise Called()

    monkeypatch.setattr(ferry.generation, "build_endpoint_model", build_endpoint_model)
    return calls


def test_text_generation_goes_to_build_endpoints_unless_told_otherwise(library_call):
    with pytest.raises(Called):
        main(["build", "--model", "m", "--task", "text-generation"])
    with pytest.raises(Called):
        main(["build", "--model", "m", "--task", "text-generation", "--out", "elsewhere", "--dtype", "float16",
              "--min-agreement", "0.95", "--max-model-len", "2048", "--name", "llm"])
    default, told = library_call
    assert default.out == Path("build/endpoints") and default.dtype == "bfloat16" and default.min_agreement == 0.9
    assert default.name is None and default.max_model_len is None and default.container == "lmi"
    assert (told.out, told.dtype, told.min_agreement, told.max_model_len, told.name) == (
        Path("elsewhere"), "float16", 0.95, 2048, "llm")


@pytest.mark.parametrize(("extra", "message"), [
    (["--arch", "arm64"], "--arch applies to the Lambda layer builds (text-classification, feature-extraction), "
                          "not to text-generation"),
    (["--eval-data", "x.csv", "--min-cosine", "0.9"], "--eval-data, --min-cosine apply to the Lambda layer builds"),
    (["--runtime-layer", "build/layers/runtime-x86_64"], "--runtime-layer applies to the Lambda layer builds"),
    (["--max-length", "64"], "--max-length applies to the Lambda layer builds"),
    (["--out", "layers/model"], "--out layers/model: that is the folder of Lambda layers"),
])
def test_options_of_the_layer_builds_are_refused_with_exit_2(extra, message, library_call, capsys):
    assert main(["build", "--model", "m", "--task", "text-generation", *extra]) == 2
    assert message in capsys.readouterr().err
    assert library_call == []


@pytest.mark.parametrize("extra", [["--dtype", "float16"], ["--container", "lmi"], ["--max-model-len", "512"]])
def test_options_of_text_generation_are_refused_for_a_layer(extra, capsys):
    assert main(["build", "--model", "m", "--task", "feature-extraction", *extra]) == 2
    assert f"{extra[0]} applies to text-generation, not to feature-extraction" in capsys.readouterr().err


def test_a_bad_setting_is_a_usage_error_naming_its_flag(capsys):
    assert main(["build", "--model", "m", "--task", "text-generation", "--min-agreement", "2"]) == 2
    assert "--min-agreement must be a fraction in [0, 1], got 2.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["build", "--model", "m", "--task", "text-generation", "--container", "tgi"])
    assert caught.value.code == 2


def test_a_missing_model_is_a_failure_naming_the_flag(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["build", "--model", str(missing), "--task", "text-generation", "--out", str(tmp_path / "out")]) == 1
    assert f"ferry: error: --model {missing}: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
def test_a_causal_lm_given_to_a_layer_build_is_a_task_mismatch(task, tmp_path, capsys):
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    gguf = tmp_path / "tiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    assert main(["build", "--model", str(llm), "--task", task, "--out", str(tmp_path / "out")]) == 2
    assert (f"--model {llm}: a causal language model (LlamaForCausalLM), not a {task} model; build it with --task "
            "text-generation") in capsys.readouterr().err
    assert main(["build", "--model", str(gguf), "--task", task, "--out", str(tmp_path / "out")]) == 2
    assert "a causal language model (a GGUF file)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
