"""Every environment variable the runtime reads, and the fixed facts it relies on.

An explicit argument always beats the environment variable of the same meaning.
"""

from __future__ import annotations

import re

# Environment variables
ENV_MODELS_DIR = "FERRY_MODELS_DIR"  # one folder, or several separated by os.pathsep
ENV_ORT_THREADS = "FERRY_ORT_THREADS"  # intra-op threads of the ONNX Runtime session; 0 = ORT decides

DEFAULT_MODELS_DIR = "/opt/models"  # where Lambda unpacks model layers (each layer holds models/<name>/)

# Files of a model folder
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_SCHEMA_VERSION = 1

# A model's name: its folder, its manifest's `name` and the {model} segment of the URL.
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION_HEX_DIGITS = 12

TEXT_CLASSIFICATION = "text-classification"
FEATURE_EXTRACTION = "feature-extraction"
TASKS = (TEXT_CLASSIFICATION, FEATURE_EXTRACTION)

FUNCTIONS_TO_APPLY = ("softmax", "sigmoid", "none")
