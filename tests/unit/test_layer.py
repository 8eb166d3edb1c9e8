from __future__ import annotations

import itertools

import pytest

from ferry.layer import SizeLimitError
from ferry.layer.packaging import LAMBDA_UNZIPPED_LIMIT, SizedPart, check_function_size, quantile_bins


def test_quantile_bins_have_strictly_increasing_edges_and_count_everything():
    values = [5, 10, 11, 12, 13, 14, 14, 14, 14, 14, 15, 16, 262]
    bins = quantile_bins(values)
    edges = bins["edges"]
    assert all(a < b for a, b in itertools.pairwise(edges))
    assert sum(bins["counts"]) == len(values) == bins["n"]
    assert edges[0] == 5 and edges[-1] == 262


def test_quantile_bins_of_a_constant():
    assert quantile_bins([7, 7, 7]) == {"edges": [6.5, 7.5], "counts": [3], "n": 3, "mean": 7.0}


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
    assert sum(bins["counts"]) == len(scores)
    assert bins["edges"][-1] == max(scores)
