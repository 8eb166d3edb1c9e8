"""The local twin of the stack's SageMaker endpoint: Ferry's endpoint server (:mod:`ferry.endpoint.server`) in a
process of its own (``python -m ferry.local.endpoint``), and the endpoint as the control plane sees it.

The generate function talks to two services, as in AWS: ``sagemaker`` (``DescribeEndpoint``: is it in service?)
goes to the embedded AWS like every other call, where the stack creates the model, endpoint configuration and
endpoint (moto puts it in service at once); ``sagemaker-runtime`` (``InvokeEndpoint``) goes to this server, which
runs the real model on the CPU, through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``. The global ``AWS_ENDPOINT_URL``
alone would send the invocations to moto, which answers canned bodies.

A process of its own, because torch would otherwise load into the process that serves the API, and the model's
generation would hold the same GIL as the gateway.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.local.child import FAILED, READY, ChildProcess, live_until_parent_goes, report
from ferry.local.exceptions import LocalError
from ferry.local.signals import ignore_sigint

READY_TIMEOUT_S = 180.0  # torch's import and the model's load, on a busy 2-core machine
ENV_RUNTIME_ENDPOINT = "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"  # boto3's endpoint for sagemaker-runtime alone
LOCAL_IMAGE = "ferry/local-endpoint:cpu"  # what the local model's description names as its container
LOCAL_ROLE = "arn:aws:iam::000000000000:role/ferry-local-endpoint"
VARIANT = "AllTraffic"
LOCAL_ARTIFACTS = "s3://ferry-local-endpoints"  # the LargeModelData the local stack deploys with: nothing reads it


@dataclass(frozen=True)
class LargeModel:
    """A text-generation model the local stack serves: its API name and the folder ``ferry serve-endpoint --model``
    takes (``build/endpoints/<name>``, or a Hugging Face folder)."""

    name: str
    folder: Path

    def parameters(self) -> dict[str, str]:
        """The template's parameters of a deploy with this model (name and data: the template's condition needs
        both), with the version its build manifest names when it has one."""
        found = {"LargeModelName": self.name, "LargeModelData": f"{LOCAL_ARTIFACTS}/{self.name}/model.tar.gz"}
        manifest = self.folder / "manifest.json"
        if manifest.is_file():
            version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
            if isinstance(version, str):
                found["LargeModelVersion"] = version
        return found


class LocalEndpointError(LocalError):
    """The local endpoint server did not start (no model in the folder, torch missing, a failed load)."""

    code = "endpoint_failed"


class LocalEndpoint(ChildProcess):
    """The parent's handle on the endpoint server's process, serving `model` (a folder that ``ferry serve-endpoint
    --model`` takes) under the endpoint name `name`."""

    what = "the local endpoint"
    error = LocalEndpointError

    def __init__(self, model: Path, name: str, environment: Mapping[str, str]):
        super().__init__("ferry.local.endpoint", [str(model), name], environment)
        self.model = model
        self.name = name

    def start(self, timeout: float = READY_TIMEOUT_S) -> LocalEndpoint:
        super().start(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, cancelled: Any = None) -> None:
        super().wait_ready(timeout, cancelled)


def create_endpoint(sagemaker: Any, name: str, model_data: str) -> None:
    """The endpoint `name` in the embedded AWS, as the template's model, configuration and endpoint make it."""
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=LOCAL_ROLE,
                           PrimaryContainer={"Image": LOCAL_IMAGE, "ModelDataUrl": model_data})
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": VARIANT, "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)


def main(argv: list[str] | None = None) -> None:
    ignore_sigint()  # ferry.local.signals: it came blocked
    arguments = sys.argv[1:] if argv is None else argv
    model, name, fd = Path(arguments[-3]), arguments[-2], int(arguments[-1])  # [--parent PID] MODEL NAME FD
    from ferry.endpoint.server import serve

    try:
        server = serve(model, host="127.0.0.1", port=0, endpoint_name=name)
    except Exception as exc:  # a folder with no model: the parent says why
        report(fd, f"{FAILED}{exc}")
        os._exit(1)
    report(fd, str(server.server_address[1]))
    live_until_parent_goes()
    try:
        server.wait_ready()
    except Exception as exc:  # the load failed: the parent says why
        report(fd, f"{FAILED}{exc}")
        os._exit(1)
    report(fd, READY)
    os.close(fd)
    threading.Event().wait()  # the server runs in its thread until the lifeline ends the process


if __name__ == "__main__":
    main()
