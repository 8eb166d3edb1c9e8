"""Every environment variable the runtime reads, and the fixed facts it relies on.

An explicit argument always beats the environment variable of the same meaning.
"""

from __future__ import annotations

import re

# Environment variables
ENV_MODELS_DIR = "FERRY_MODELS_DIR"  # one folder, or several separated by os.pathsep
ENV_ORT_THREADS = "FERRY_ORT_THREADS"  # intra-op threads of the ONNX Runtime session; 0 = ORT decides
ENV_MAX_INPUTS = "FERRY_MAX_INPUTS"  # texts per request
ENV_MAX_INPUT_CHARS = "FERRY_MAX_INPUT_CHARS"  # characters per text
ENV_MAX_BODY_BYTES = "FERRY_MAX_BODY_BYTES"  # request body
ENV_CAPTURE_TEXT = "FERRY_CAPTURE_TEXT"  # "true": capture records carry the raw text, not only its HMAC
ENV_CAPTURE_TABLE = "FERRY_CAPTURE_TABLE"  # DynamoDB table the capture function writes
ENV_CAPTURE_TTL_DAYS = "FERRY_CAPTURE_TTL_DAYS"
ENV_PRELOAD = "FERRY_PRELOAD"  # models to load while the function initializes: "all", names "a,b", or "" (none)
ENV_OUTPUT_MODE = "FERRY_OUTPUT_MODE"  # "full" (every label, exact scores) or "top" (top label, rounded score)
ENV_STACK_SECRET = "FERRY_STACK_SECRET"  # per-stack secret: keys the captured text hash (HMAC-SHA256)
ENV_KEYS_TABLE = "FERRY_KEYS_TABLE"  # DynamoDB table of API keys (salted hashes), read by the authorizer
ENV_USAGE_TABLE = "FERRY_USAGE_TABLE"  # DynamoDB table of daily prediction counts per API key
ENV_BATCH_CHUNK_BYTES = "FERRY_BATCH_CHUNK_BYTES"  # a batch file larger than this is predicted in chunks
ENV_BATCH_STATE_MACHINE = "FERRY_BATCH_STATE_MACHINE"  # runs the chunks in AWS; unset: in process, in order
ENV_DAILY_QUOTA = "FERRY_DAILY_QUOTA"  # predictions a key may make a day when the key sets none; 0 = no quota
ENV_MONITOR_TABLE = "FERRY_MONITOR_TABLE"  # DynamoDB table of the monitor's cursors, episodes and run history
ENV_EVENT_BUS = "FERRY_EVENT_BUS"  # the EventBridge bus the monitor sends ModelDegraded to ("default")
ENV_MONITOR_WINDOW_MINUTES = "FERRY_MONITOR_WINDOW_MINUTES"  # the span of the monitor's figures
ENV_MONITOR_SETTLE_SECONDS = "FERRY_MONITOR_SETTLE_SECONDS"  # the monitor reads what is older than this
ENV_FEEDBACK_TABLE = "FERRY_FEEDBACK_TABLE"  # DynamoDB table of labels for predictions (ferry.runtime.feedback)
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"  # Powertools' own variable: the functions' metrics namespace
# The large model (text generation on a SageMaker real-time endpoint: ferry.runtime.generation)
ENV_GENERATE_MODEL = "FERRY_GENERATE_MODEL"  # its API name ("smollm2"); unset or empty: no large model is served
ENV_GENERATE_ENDPOINT = "FERRY_GENERATE_ENDPOINT"  # the SageMaker endpoint that serves it
ENV_GENERATE_VERSION = "FERRY_GENERATE_VERSION"  # 12 hex digits (its build manifest's); unset: from the names
ENV_GENERATE_MAX_NEW_TOKENS = "FERRY_GENERATE_MAX_NEW_TOKENS"  # the most new tokens a request may ask for
ENV_GENERATE_TIMEOUT_S = "FERRY_GENERATE_TIMEOUT_S"  # the read timeout of one endpoint call (seconds)

DEFAULT_MONITOR_WINDOW_MINUTES = 60
DEFAULT_MONITOR_SETTLE_SECONDS = 60  # captures reach the table through a log subscription: seconds, not minutes
DEFAULT_MAX_INPUTS = 64
# An answer must come back within API Gateway's 30 s: raise it only for a model measured to decode faster
DEFAULT_GENERATE_MAX_NEW_TOKENS = 512
DEFAULT_GENERATE_TIMEOUT_S = 25  # under the generate function's 29 s timeout, itself under API Gateway's 30 s
DEFAULT_MAX_INPUT_CHARS = 10_000
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # API Gateway and Lambda's synchronous payload limit
DEFAULT_CAPTURE_TTL_DAYS = 90
DEFAULT_DAILY_QUOTA = 0  # no quota
# About 80,000 tweet-sized records: under five minutes for MiniLM on one Lambda vCPU, well inside 15
DEFAULT_BATCH_CHUNK_BYTES = 8 * 1024 * 1024
OUTPUT_MODES = ("full", "top")
TOP_SCORE_DECIMALS = 2  # OutputMode=top rounds the one score it returns to this many decimals
FEEDBACK_PATH = "/v1/feedback"  # the route that takes labels for predictions
MAX_FEEDBACK_ITEMS = 64  # labels in one feedback request (a list); more is a 413
CAPTURE_KEY = "capture"  # the key of a capture record in a structured log line
METRICS_NAMESPACE = "Ferry"  # CloudWatch namespace of every metric, unless POWERTOOLS_METRICS_NAMESPACE says otherwise

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
# The HTTP API's endpoint for each task: POST /v1/models/{model}/predict or /embed.
TASK_ENDPOINTS = {TEXT_CLASSIFICATION: "/predict", FEATURE_EXTRACTION: "/embed"}

FUNCTIONS_TO_APPLY = ("softmax", "sigmoid", "none")

# The large model's task and routes (not in TASKS: no layer holds such a model; a SageMaker endpoint serves it).
TEXT_GENERATION = "text-generation"
GENERATE_PATH = "/generate"  # POST /v1/models/{model}/generate: the Hugging Face text-generation payload
CHAT_PATH = "/v1/chat/completions"  # POST /v1/models/{model}/v1/chat/completions: an OpenAI chat body
# The routes that make predictions (the "predict" scope, the daily quota): every task's, and the large model's.
PREDICTION_PATHS = (*TASK_ENDPOINTS.values(), GENERATE_PATH, CHAT_PATH)
