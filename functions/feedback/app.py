"""Feedback function: POST /v1/feedback (labels for predictions), and S3 notifications of files under labels/.

Thin: ferry.runtime.feedback checks and records each label (ids verified without a lookup, labels against the
served models' manifests, one conditional write each) and reads label files; ferry.runtime.http answers the
route as the predict function answers its own (the same precheck: scope 403, content type 415, size 413,
base64 400; the same error shape). The function gets the same model layers as the predict function, and its
FERRY_STACK_SECRET, so that it recognises the ids that function issues.

Handlers: ``lambda_handler`` takes either event (an S3 notification goes to the labels files, anything else to
the HTTP API); ``http_handler`` and ``labels_handler`` each take one, for a template that gives the route and
the bucket notification functions of their own (a labels file may need minutes, a request needs seconds).
"""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from ferry.runtime import aws
from ferry.runtime.api import parse_json_body, request_models
from ferry.runtime.constants import FEEDBACK_PATH
from ferry.runtime.feedback import FeedbackService, handle_label_event, is_label_event
from ferry.runtime.http import HttpApi
from ferry.runtime.service import PredictionService
from ferry.runtime.settings import Settings

SERVICE = "ferry-feedback"
settings = Settings.from_env()
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=settings.metrics_namespace, service=SERVICE)
feedback = FeedbackService.from_settings(settings, lambda: aws.table(settings.required("feedback_table")))
# Bodies are parsed by parse_json_body, as the predict function's (by HttpApi.feedback: one label or a list of
# them, checked label by label by ferry.runtime.feedback).
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
service = PredictionService(settings)  # loads nothing: HttpApi's error handlers and limits take it
api = HttpApi(app, lambda: service, request_models(settings), settings, name=SERVICE, logger=logger, metrics=metrics)
# Labels are counted in EMF lines of their own (by model); Metrics only has something for errors.
warnings.filterwarnings("ignore", message="No application metrics to publish", module="aws_lambda_powertools")


@app.post(FEEDBACK_PATH)
def post_feedback():  # no body parameter (HttpApi.feedback says why); no return annotation: Powertools checks it
    return api.feedback(feedback)


def s3() -> Any:
    return aws.client("s3")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@api.prechecked  # before Powertools parses the body: scope (403), content type (415), size (413), base64 (400)
def http_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def labels_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle_label_event(event, s3(), feedback, logger=logger, metrics=metrics,
                              namespace=settings.metrics_namespace,
                              remaining_ms=getattr(context, "get_remaining_time_in_millis", None))


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if is_label_event(event):
        return labels_handler(event, context)
    return http_handler(event, context)
