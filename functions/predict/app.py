"""Predict function: POST /v1/models/{model}/predict and /embed, GET /v1/models[/{model}], GET /healthz.

GET /v1/models also lists the large model (FERRY_GENERATE_MODEL) that the generate function serves.

Thin: this module declares the routes; Powertools parses and validates, ferry.runtime.http answers (the request
precheck, the service's predictions, the errors in the API's shape). Each prediction is captured as a structured
log record (off the request path: a CloudWatch Logs subscription delivers them to the capture function).
"""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import warnings
from typing import Annotated, Any

import ferry.runtime.predictor  # noqa: F401  onnxruntime and tokenizers, in the init phase (the service loads them lazily)
from ferry.runtime.service import PredictionService
from ferry.runtime.settings import Settings

# Models load on first use and stay for the container's life; those FERRY_PRELOAD names start loading now, in
# a background thread, so that they load while Powertools and pydantic import below (the load releases the GIL).
settings = Settings.from_env()
service = PredictionService(settings)
service.store.preload(settings.preload)

# E402 (imports after code) is allowed in this file for the lines below; see above.
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Body

from ferry.runtime.api import parse_json_body, request_models
from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from ferry.runtime.generation import GenerationCatalog
from ferry.runtime.http import HttpApi

SERVICE = "ferry-predict"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, auto_patch=False)  # no AWS calls here: patching boto and requests costs 0.1 s
metrics = Metrics(namespace=settings.metrics_namespace, service=SERVICE)
# Bodies are parsed by parse_json_body: json.loads, refusing what would otherwise raise past Powertools (nesting
# past the recursion limit, integers of more than 4,300 digits) with a 400.
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
# The request models carry this container's limits (FERRY_MAX_INPUTS, FERRY_MAX_INPUT_CHARS).
models = request_models(settings)
PredictRequest, EmbedRequest = models.predict, models.embed
# The large model (FERRY_GENERATE_MODEL), served by the generate function: listed here with its endpoint's status
# (DescribeEndpoint, its client made at the first listing and the status cached), refused by /predict and /embed.
generation = GenerationCatalog(settings)
api = HttpApi(app, lambda: service, models, settings, name=SERVICE, logger=logger, metrics=metrics,
              generation=generation)
# A successful request's metrics travel in its capture lines; Metrics only has something for cold starts and errors.
warnings.filterwarnings("ignore", message="No application metrics to publish", module="aws_lambda_powertools")


@app.post("/v1/models/<model>/predict")
def predict(model: str, request: Annotated[PredictRequest, Body()]):  # no return annotation: Powertools checks it
    return api.predict(model, request, TEXT_CLASSIFICATION)


@app.post("/v1/models/<model>/embed")
def embed(model: str, request: Annotated[EmbedRequest, Body()]):  # no return annotation: Powertools checks it
    return api.predict(model, request, FEATURE_EXTRACTION)


@app.get("/v1/models")
def list_models():  # no return annotation: Powertools checks it
    return api.list_models()


@app.get("/v1/models/<model>")
def describe_model(model: str):  # no return annotation: Powertools checks it
    return api.describe_model(model)


@app.get("/healthz")
def healthz():  # no return annotation: Powertools checks it
    """Liveness, public and cheap: the models found and whether each is loaded; it loads, reads and hashes
    nothing (GET /v1/models/{model}, behind auth, loads a model and says whether it is ready)."""
    return api.healthz()


@app.get("/openapi.json")
def openapi():  # no return annotation: Powertools checks it
    return api.openapi()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)  # embeddings are large; X-Ray caps a segment at 64 KB
@metrics.log_metrics(capture_cold_start_metric=True)
@api.prechecked  # before Powertools parses the body: quota (429), content type (415), size (413), base64 (400)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
