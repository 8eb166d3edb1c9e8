"""Generate function: POST /v1/models/{model}/generate and /v1/models/{model}/v1/chat/completions, answered by the
large model (FERRY_GENERATE_MODEL) on its SageMaker endpoint (FERRY_GENERATE_ENDPOINT).

Thin: this module declares the routes; Powertools parses and validates, ferry.runtime.generation translates the
Hugging Face and OpenAI dialects to the endpoint's (AWS LMI) and back, ferry.runtime.endpoint_client calls the
endpoint (one client per container, retries on throttling only) and maps its faults, ferry.runtime.generation_http
answers. Each generation is captured as a structured log record, as the predict function's predictions are.
Nothing here imports torch or transformers.
"""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import warnings
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Body

from ferry.runtime.api import parse_json_body
from ferry.runtime.generation import GenerationService, generation_models
from ferry.runtime.generation_http import GenerationHttpApi
from ferry.runtime.settings import Settings

SERVICE = "ferry-generate"
settings = Settings.from_env()
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, auto_patch=False)
metrics = Metrics(namespace=settings.metrics_namespace, service=SERVICE)
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
# The request models carry this container's limits (FERRY_MAX_INPUT_CHARS, FERRY_GENERATE_MAX_NEW_TOKENS).
models = generation_models(settings)
GenerateRequest, ChatRequest = models.generate, models.chat
# The endpoint's clients are made at the first request and kept for the container's life.
service = GenerationService(settings, logger=logger)
api = GenerationHttpApi(app, lambda: service, models, settings, name=SERVICE, logger=logger, metrics=metrics)
warnings.filterwarnings("ignore", message="No application metrics to publish", module="aws_lambda_powertools")


@app.post("/v1/models/<model>/generate")
def generate(model: str, request: Annotated[GenerateRequest, Body()]):  # no return annotation: Powertools checks it
    return api.generate(model, request)


@app.post("/v1/models/<model>/v1/chat/completions")
def chat_completions(model: str, request: Annotated[ChatRequest, Body()]):  # no return annotation: as above
    return api.chat(model, request)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)  # prompts and answers stay out of X-Ray
@metrics.log_metrics(capture_cold_start_metric=True)
@api.prechecked  # before Powertools parses the body: quota (429), content type (415), size (413), base64 (400)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
