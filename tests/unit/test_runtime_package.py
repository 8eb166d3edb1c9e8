"""ferry.runtime re-exports its names lazily (tests/integration/test_imports.py: what each import loads, measured
in a fresh interpreter)."""

from __future__ import annotations

import pytest


def test_an_unknown_name_of_the_package_is_an_attribute_error():
    import ferry.runtime

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ferry.runtime.nope  # noqa: B018
    assert {"Predictor", "Manifest", "discover_models"} <= set(dir(ferry.runtime))
