"""Where a model's files sit on disk: the one place that knows the folder layout of layers and model folders.

A model layer is a folder ``<layers dir>/<name>/`` holding ``models/<name>/``. SAM zips the layer folder and
Lambda unpacks every layer of a function into /opt, so their ``models/`` folders merge into ``/opt/models/``,
where the runtime finds ``/opt/models/<name>/``. A model folder holds ``manifest.json`` (the root of trust),
``model.onnx`` and ``tokenizer.json``.

The build writes this layout and the runtime, the local stack and the CLI read it; each asks here rather than
joining path parts of its own, so that the layout can change in one place. This module imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

from ferry.runtime.constants import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE

MODELS_FOLDER = "models"  # inside a layer folder: what Lambda merges into /opt/models


def layer_dir(layers_dir: Path, name: str) -> Path:
    """The layer folder of model ``name`` among built layers: ``<layers dir>/<name>/``."""
    return layers_dir / name


def layer_models_dir(layer: Path) -> Path:
    """The ``models/`` folder of one layer folder: its share of /opt/models once Lambda unpacks it."""
    return layer / MODELS_FOLDER


def model_dir(models_dir: Path, name: str) -> Path:
    """The model folder of ``name`` in a folder of model folders (``/opt/models``, or a layer's ``models/``)."""
    return models_dir / name


def model_dir_in_layer(layer: Path, name: str) -> Path:
    """Where a model's files sit inside its layer folder: ``<layer>/models/<name>/``."""
    return model_dir(layer_models_dir(layer), name)


def manifest_path(model: Path) -> Path:
    return model / MANIFEST_FILE


def model_file(model: Path) -> Path:
    return model / MODEL_FILE


def tokenizer_file(model: Path) -> Path:
    return model / TOKENIZER_FILE


def is_model_dir(path: Path) -> bool:
    """A folder is a model folder when it holds a manifest (the manifest then says what else it must hold)."""
    return manifest_path(path).is_file()


def is_layer_dir(path: Path) -> bool:
    """A folder is a model layer folder when it holds a ``models/`` folder."""
    return layer_models_dir(path).is_dir()


def is_hidden(path: Path) -> bool:
    """A folder the build is still writing (``.ferry-build-*``) or replacing (``.<name>.old-*``): not a layer."""
    return path.name.startswith(".")


def layer_models_dirs(layers_dir: Path) -> list[Path]:
    """The ``models/`` folder of every layer folder under ``layers_dir`` (what Lambda would merge into /opt).

    Hidden folders are skipped: a build stages its layer in one, and a half-built model must not be served
    (it would even win over the installed one of the same name, as ``.`` sorts first).
    """
    if not layers_dir.is_dir():
        return []
    return sorted(
        layer_models_dir(path) for path in layers_dir.iterdir() if not is_hidden(path) and is_layer_dir(path)
    )
