from __future__ import annotations

import itertools

import pytest

from ferry.layer import BuildConfig, InvalidBuildConfigError, SizeLimitError
from ferry.layer.config import BuildEnvironment
from ferry.layer.packaging import (
    LAMBDA_UNZIPPED_LIMIT,
    POWERTOOLS_LAYER_BYTES,
    SizedPart,
    check_function_size,
    model_layer_parts,
    powertools_part,
    quantile_bins,
)
from ferry.runtime import layout


def test_quantile_bins_have_strictly_increasing_edges_and_count_everything():
    values = [5, 10, 11, 12, 13, 14, 14, 14, 14, 14, 15, 16, 262]
    bins = quantile_bins(values)
    edges = bins.edges
    assert all(a < b for a, b in itertools.pairwise(edges))
    assert sum(bins.counts) == len(values) == bins.n
    assert edges[0] == 5 and edges[-1] == 262


def test_quantile_bins_of_a_constant():
    assert quantile_bins([7, 7, 7]).to_dict() == {"edges": [6.5, 7.5], "counts": [3], "n": 3, "mean": 7.0}


def test_size_check_passes_under_the_limit_and_names_every_part_over_it():
    parts = [SizedPart("runtime layer", 150_000_000, True), SizedPart("model layer a", 30_000_000, True)]
    assert check_function_size(parts) == 181_000_000  # with 1 MB of function code
    parts.append(SizedPart("model layer b", 90_000_000, True))
    with pytest.raises(SizeLimitError) as caught:
        check_function_size(parts)
    message = str(caught.value)
    assert f"over Lambda's limit of {LAMBDA_UNZIPPED_LIMIT / 1e6:.1f} MB" in message
    for line in ("150.0 MB  runtime layer", "30.0 MB  model layer a", "90.0 MB  model layer b"):
        assert line in message


def test_size_check_counts_layers():
    parts = [SizedPart(f"layer {i}", 1_000_000, True) for i in range(6)]
    with pytest.raises(SizeLimitError, match="would carry 6 layers; Lambda allows 5"):
        check_function_size(parts)


def test_quantile_bins_count_values_just_under_one():
    scores = [0.5 + i * 0.0049 for i in range(100)] + [0.99999987, 0.9999999]
    bins = quantile_bins(scores)
    assert sum(bins.counts) == len(scores)
    assert bins.edges[-1] == max(scores)


def test_the_environment_is_read_in_one_place():
    assert BuildEnvironment.from_env({}) == BuildEnvironment(hub_offline=False, powertools_layer_mb=None)
    read = BuildEnvironment.from_env({"HF_HUB_OFFLINE": " True ", "FERRY_POWERTOOLS_LAYER_MB": "18.7"})
    assert read == BuildEnvironment(hub_offline=True, powertools_layer_mb=18.7)
    assert not BuildEnvironment.from_env({"HF_HUB_OFFLINE": "0"}).hub_offline
    for bad in ("many", "-3", "nan"):
        with pytest.raises(InvalidBuildConfigError, match=f"FERRY_POWERTOOLS_LAYER_MB={bad!r} is not a number of MB"):
            BuildEnvironment.from_env({"FERRY_POWERTOOLS_LAYER_MB": bad})


def test_a_build_config_takes_the_environment_unless_given_one(monkeypatch, tmp_path):
    monkeypatch.setenv("FERRY_POWERTOOLS_LAYER_MB", "20")
    assert BuildConfig(model="m", task="feature-extraction", out=tmp_path).environment.powertools_layer_mb == 20.0
    given = BuildConfig(model="m", task="feature-extraction", out=tmp_path, environment=BuildEnvironment())
    assert given.environment.powertools_layer_mb is None


def test_powertools_layer_is_measured_or_budgeted():
    measured = powertools_part(BuildEnvironment(powertools_layer_mb=18.7))
    assert measured == SizedPart("Powertools layer", 18_700_000, measured=True)
    budget = powertools_part(BuildEnvironment())
    assert budget.bytes == POWERTOOLS_LAYER_BYTES and not budget.measured


def test_the_layout_is_one_set_of_paths(tmp_path):
    layer = layout.layer_dir(tmp_path, "tiny")
    assert layer == tmp_path / "tiny"
    assert layout.model_dir_in_layer(layer, "tiny") == tmp_path / "tiny" / "models" / "tiny"
    assert layout.model_dir(layout.layer_models_dir(layer), "tiny") == layout.model_dir_in_layer(layer, "tiny")
    model = layout.model_dir_in_layer(layer, "tiny")
    assert [layout.manifest_path(model).name, layout.model_file(model).name, layout.tokenizer_file(model).name] == [
        "manifest.json", "model.onnx", "tokenizer.json"]


def test_staging_and_retired_folders_are_not_layers(tmp_path):
    for name in ("b-model", "a-model", ".ferry-build-a-model-x1y2", ".a-model.old-123"):
        (tmp_path / name / "models" / name.strip(".")).mkdir(parents=True)
    (tmp_path / "not-a-layer").mkdir()
    assert layout.layer_models_dirs(tmp_path) == [tmp_path / "a-model" / "models", tmp_path / "b-model" / "models"]
    assert layout.layer_models_dirs(tmp_path / "missing") == []
    parts = model_layer_parts(tmp_path, "new", tmp_path / ".ferry-build-a-model-x1y2")
    assert [part.what for part in parts] == ["model layer new (new)", "model layer a-model", "model layer b-model"]


def test_only_hardware_neutral_graph_optimizations_are_saved(tmp_path):
    """ONNX Runtime's levels 2 and 99 depend on the CPU that optimizes: they stay at load, never in the file."""
    from ferry.layer import GraphSettings
    from ferry.layer.config import GRAPH

    assert GRAPH.fuse and GRAPH.opt_level == 1 and GRAPH.to_dict()["gelu_approximation"] is False
    assert "Attention" in GRAPH.fusions and "SkipLayerNormalization" not in GRAPH.fusions  # measured slower
    for level in (2, 99):
        with pytest.raises(InvalidBuildConfigError, match=r"graph\.opt_level must be 0 or 1"):
            GraphSettings(opt_level=level)
    with pytest.raises(InvalidBuildConfigError, match=r"graph\.fusions \['FastGelu'\] are not among Attention"):
        GraphSettings(fusions=("Attention", "FastGelu"))
    assert BuildConfig(model="m", task="feature-extraction", out=tmp_path).graph == GRAPH
    unfused = GraphSettings(fusions=())
    assert BuildConfig(model="m", task="feature-extraction", out=tmp_path, graph_override=unfused).graph == unfused


@pytest.mark.parametrize(("model_type", "settings", "why"), [
    ("gpt2", None, "no transformer fusions for model type 'gpt2'"),
    ("bert", "unfused", ""),
])
def test_a_graph_with_nothing_to_fuse_is_quantized_as_exported(model_type, settings, why, tmp_path):
    from ferry.layer import GraphSettings
    from ferry.layer.config import GRAPH
    from ferry.layer.export import optimize_graph

    export = tmp_path / "fp32"
    export.mkdir()
    (export / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    (export / "model.onnx").write_bytes(b"not read")
    chosen = GraphSettings(fusions=()) if settings == "unfused" else GRAPH
    fused, record = optimize_graph(export / "model.onnx", chosen, tmp_path / "fused")
    assert fused == export / "model.onnx" and not (tmp_path / "fused").exists()
    assert record["saved"] == "none" and record["fused_nodes"] == {} and record["model_type"] == model_type
    assert record["why"] == (why or chosen.why)
