"""The pieces of a text-generation artifact that need no model: LMI's serving.properties, the reproducible
model.tar.gz, and the endpoint manifest (its hashes, its version, its round trip)."""

from __future__ import annotations

import gzip
import json
import os
import tarfile

import pytest

from ferry.generation import lmi
from ferry.generation.archive import FIXED_MTIME, archive_members, write_archive
from ferry.generation.config import GenerationBuildConfig
from ferry.generation.manifest import EndpointManifest, content_version, file_entries
from ferry.layer.exceptions import InvalidBuildConfigError
from ferry.runtime.exceptions import IntegrityError, ManifestError
from ferry.runtime.manifest import FileEntry

# --- serving.properties ------------------------------------------------------------------------------------------


def test_serving_properties_select_lmis_async_vllm_backend_for_one_gpu():
    properties = lmi.serving_properties("bfloat16", max_model_len=8192, max_rolling_batch_size=64)
    assert properties == {
        "engine": "Python",
        "option.async_mode": "true",
        "option.rolling_batch": "disable",
        "option.entryPoint": "djl_python.lmi_vllm.vllm_async_service",
        "option.tensor_parallel_degree": "1",
        "option.dtype": "bf16",
        "option.max_model_len": "8192",
        "option.max_rolling_batch_size": "64",
    }
    assert "option.model_id" not in properties  # LMI serves the files beside serving.properties


@pytest.mark.parametrize(("dtype", "lmi_dtype"), [("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32")])
def test_every_build_dtype_has_lmis_name(dtype, lmi_dtype):
    assert lmi.serving_properties(dtype, 256, 8)["option.dtype"] == lmi_dtype


def test_rendered_properties_read_back_and_are_the_same_bytes_each_time():
    properties = lmi.serving_properties("float16", 2048, 32)
    text = lmi.render(properties)
    assert text == lmi.render(dict(properties))
    assert text.endswith("\n") and text.startswith("#")
    assert lmi.parse(text) == properties
    assert list(lmi.parse(text)) == list(properties)  # file order kept


def test_container_record_names_the_image_and_where_the_settings_come_from():
    record = lmi.container_record(lmi.serving_properties("bfloat16", 256, 8))
    assert record["name"] == "lmi" and record["backend"] == "vllm"
    assert record["image_repository"] == "djl-inference"
    assert record["image_uri_template"].endswith(f"/djl-inference:{record['image_tag']}")
    assert "{region}" in record["image_uri_template"]
    assert record["serving_properties"]["option.dtype"] == "bf16"
    assert all(source.startswith("https://github.com/deepjavalibrary/djl-serving/") for source in record["sources"])


# --- model.tar.gz ------------------------------------------------------------------------------------------------


@pytest.fixture()
def model_folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "serving.properties").write_text("engine=Python\n")
    (folder / "sub" / "extra.txt").write_text("nested")
    return folder


def test_archive_holds_the_files_at_its_root_in_sorted_order(model_folder, tmp_path):
    target = tmp_path / "model.tar.gz"
    names = write_archive(model_folder, target)
    assert names == ["config.json", "model.safetensors", "serving.properties", "sub/extra.txt"]
    assert archive_members(target) == names
    with tarfile.open(target, "r:gz") as tar:
        for member in tar.getmembers():
            assert member.isfile() and not member.name.startswith(("/", "./", "model/"))
            assert ".." not in member.name.split("/")
            assert (member.mtime, member.mode, member.uid, member.gid) == (FIXED_MTIME, 0o644, 0, 0)
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == (model_folder / member.name).read_bytes()


def test_archive_is_the_same_bytes_whatever_the_files_times(model_folder, tmp_path):
    first, second = tmp_path / "first.tar.gz", tmp_path / "second.tar.gz"
    write_archive(model_folder, first)
    for path in model_folder.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    write_archive(model_folder, second)
    assert first.read_bytes() == second.read_bytes()
    header = first.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\x00\x00\x00\x00"  # gzip, no mtime
    assert header[3] & 0x08 == 0  # no file name in the gzip header
    with gzip.open(first) as unzipped:
        assert unzipped.read(1)  # a valid gzip stream


# --- the manifest ------------------------------------------------------------------------------------------------


def _manifest(files, **record) -> EndpointManifest:
    return EndpointManifest(
        name="tiny", version=content_version(files), files=files, parameters=1234, dtype="bfloat16",
        dtype_reason="why", context_length=256, max_model_len=128, architecture="LlamaForCausalLM",
        chat_template=True, container={"name": "lmi"}, source={"model": "x", "gguf": None}, built_by="ferry test",
        **record)


def test_file_entries_hash_every_file_but_the_manifest(model_folder):
    (model_folder / "manifest.json").write_text("{}")
    files = file_entries(model_folder)
    assert list(files) == ["config.json", "model.safetensors", "serving.properties", "sub/extra.txt"]
    assert files["sub/extra.txt"].size == len("nested")


def test_version_is_a_short_hash_of_every_file_and_changes_with_any_of_them(model_folder):
    files = file_entries(model_folder)
    version = content_version(files)
    assert len(version) == 12 and int(version, 16) >= 0
    assert content_version(dict(reversed(list(files.items())))) == version  # order does not matter
    (model_folder / "serving.properties").write_text("engine=MPI\n")
    assert content_version(file_entries(model_folder)) != version


def test_manifest_round_trips_and_its_package_part_has_no_build_record(model_folder):
    manifest = _manifest(file_entries(model_folder), archive={"file": "model.tar.gz", "sha256": "0" * 64, "size": 1},
                         smoke={"text": "Paris"}, parity={"agreement": 1.0}, seconds={"smoke": 1.5},
                         created_at="2026-01-01T00:00:00+00:00")
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["task"] == "text-generation" and data["schema_version"] == 1
    assert EndpointManifest.from_dict(data) == manifest
    package = manifest.package_part().to_dict()
    assert not {"archive", "smoke", "parity", "seconds", "created_at"} & set(package)
    assert EndpointManifest.from_dict({**data, "newer_key": 1}).to_dict()["newer_key"] == 1  # kept


@pytest.mark.parametrize(("change", "message"), [
    ({"task": "text-classification"}, "task must be 'text-generation'"),
    ({"name": "Bad_Name"}, "name must be a model name"),
    ({"files": {"../escape": {"sha256": "0" * 64, "size": 1}}}, "must be a path inside the model folder"),
    ({"chat_template": "yes"}, "chat_template must be true or false"),
    ({"schema_version": 2}, "schema_version must be 1"),
])
def test_manifest_errors_name_the_field(model_folder, change, message):
    data = {**_manifest(file_entries(model_folder)).to_dict(), **change}
    with pytest.raises(ManifestError, match=message):
        EndpointManifest.from_dict(data, source="m.json")


def test_manifest_missing_fields_are_named(model_folder):
    data = _manifest(file_entries(model_folder)).to_dict()
    del data["max_model_len"]
    with pytest.raises(ManifestError, match=r"missing field.*max_model_len"):
        EndpointManifest.from_dict(data)


def test_verify_refuses_an_altered_or_missing_file(model_folder, tmp_path):
    manifest = _manifest(file_entries(model_folder))
    manifest.verify(model_folder)
    (model_folder / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(IntegrityError, match=r"config\.json: differs"):
        manifest.verify(model_folder)
    (model_folder / "config.json").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        manifest.verify(model_folder)


def test_load_reads_a_folder_or_a_file_and_says_what_is_missing(model_folder, tmp_path):
    manifest = _manifest({"config.json": FileEntry(sha256="a" * 64, size=3)})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest.to_dict()))
    assert EndpointManifest.load(tmp_path) == EndpointManifest.load(tmp_path / "manifest.json") == manifest
    with pytest.raises(ManifestError, match="no manifest"):
        EndpointManifest.load(model_folder)


# --- the build's settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "Bad_Name"}, "bad name 'Bad_Name'"),
    ({"dtype": "int8"}, "dtype must be one of bfloat16, float16, float32, got 'int8'"),
    ({"container": "tgi"}, "container must be one of lmi, got 'tgi'"),
    ({"min_agreement": 1.5}, "min_agreement must be a fraction"),
    ({"max_model_len": 8}, "max_model_len must be at least 16"),
])
def test_build_settings_are_checked_once(change, message):
    with pytest.raises(InvalidBuildConfigError, match=message):
        GenerationBuildConfig(model="m", **change)


def test_default_output_is_not_the_layers_folder():
    config = GenerationBuildConfig(model="m")
    assert config.out.as_posix() == "build/endpoints" and config.dtype == "bfloat16" and config.container == "lmi"
