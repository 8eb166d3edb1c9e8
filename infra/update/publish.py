"""What `make deploy` does around `sam deploy` for the update loop (run with the project's venv: boto3).

``parameters``, before the deploy: the model layer parameters to pass on, so that a deploy keeps the versions the
update loop promoted (the stack's SentimentLayerArn and MinilmLayerArn; with ``--promoted reset``, the layers built
here serve instead). Prints ``Name=value`` pairs for ``sam deploy --parameter-overrides``; nothing before the first
deploy.

``large-model DIR``, once the stack exists: uploads the model.tar.gz of a text-generation build
(``build/endpoints/<name>``) to the RegistryBucket (``endpoints/<name>/<version>/model.tar.gz``; skipped when that key
holds it already) and prints the ``LargeModelName``, ``LargeModelData`` and ``LargeModelVersion`` overrides of the
deploy that serves it.

``upload``, after it: to the stack's RegistryBucket, the ferry wheel (``artifacts/<wheel>``), the training job's
source tarball (``artifacts/update-entry.tar.gz``: this folder and the wheel) and each built model's fp32 weights
(``models/<name>/<version>/model.tar.gz``, the version its built layer's manifest names): the first update of a
model warm-starts from them.

The stack is ``--stack``, else ``$STACK``, else the stack_name `sam deploy --guided` saved in samconfig.toml.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LAYER_PARAMETERS = ("SentimentLayerArn", "MinilmLayerArn")
# Passed on from the stack by every deploy, whatever --promoted says: a deploy that named no large model would
# otherwise take the template's defaults (none) and delete the endpoint.
LARGE_MODEL_PARAMETERS = ("LargeModelName", "LargeModelData", "LargeModelVersion")
ENTRY_KEY = "artifacts/update-entry.tar.gz"  # as ferry.runtime.update_task.ENTRY_KEY


def stack_name(given: str | None, samconfig: Path = Path("samconfig.toml")) -> str | None:
    if given:
        return given
    if os.environ.get("STACK"):
        return os.environ["STACK"]
    if not samconfig.is_file():
        return None
    config = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    name = config.get("default", {}).get("deploy", {}).get("parameters", {}).get("stack_name")
    return str(name) if name else None


def describe(cloudformation: Any, stack: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(cloudformation.describe_stacks(StackName=stack)["Stacks"][0])
    except ClientError as exc:  # DescribeStacks answers a stack that does not exist with a ValidationError
        if exc.response.get("Error", {}).get("Code") == "ValidationError":
            return None
        raise


def parameters(stack: dict[str, Any] | None, promoted: str) -> list[str]:
    """``Name=value`` overrides of the layer parameters (the stack's promoted ones kept, or all reset) and of the
    large model's (the stack's kept)."""
    values = {item["ParameterKey"]: item.get("ParameterValue", "") for item in (stack or {}).get("Parameters", [])}
    large = [f"{name}={values[name]}" for name in LARGE_MODEL_PARAMETERS if values.get(name)]
    if promoted == "reset":
        return [f'{name}=""' for name in LAYER_PARAMETERS] + large
    return [f"{name}={values[name]}" for name in LAYER_PARAMETERS if values.get(name)] + large


def upload_large_model(s3: Any, bucket: str, build: Path) -> list[str]:
    """The overrides that serve the text-generation build in `build` (its model.tar.gz uploaded first)."""
    manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
    name, version = manifest["name"], manifest["version"]
    key = f"endpoints/{name}/{version}/model.tar.gz"
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)  # the key names the version: what is there is this build
    except ClientError:
        s3.upload_file(str(build / "model.tar.gz"), bucket, key)  # multipart: the archive is hundreds of MB
    return [f"LargeModelName={name}", f"LargeModelData=s3://{bucket}/{key}", f"LargeModelVersion={version}"]


def entry_tarball(wheel: Path) -> bytes:
    """The training job's source: this folder's Python files and the wheel, at the tarball's top."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(HERE.glob("*.py")):
            archive.add(path, arcname=path.name)
        archive.add(wheel, arcname=wheel.name)
    return buffer.getvalue()


def model_tarball(model: Path) -> bytes:
    """A trained model folder as ``model/`` in a tar.gz (the layout of a training job's output)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(model, arcname="model")
    return buffer.getvalue()


def built_version(layers: Path, name: str) -> str:
    manifest = layers / name / "models" / name / "manifest.json"
    return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])


def upload(s3: Any, bucket: str, wheel_dir: Path, models: Sequence[Path], layers: Path) -> list[str]:
    wheels = sorted(wheel_dir.glob("ferry-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"{wheel_dir}: expected one ferry wheel, found {len(wheels)}")
    sent = []
    s3.upload_file(str(wheels[0]), bucket, f"artifacts/{wheels[0].name}")
    sent.append(f"artifacts/{wheels[0].name}")
    s3.put_object(Bucket=bucket, Key=ENTRY_KEY, Body=entry_tarball(wheels[0]))
    sent.append(ENTRY_KEY)
    for model in models:
        if not (model / "config.json").is_file():
            print(f"publish: {model}: no trained model there, not uploaded", file=sys.stderr)
            continue
        key = f"models/{model.name}/{built_version(layers, model.name)}/model.tar.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=model_tarball(model))
        sent.append(key)
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("parameters", "upload", "large-model"))
    parser.add_argument("build", type=Path, nargs="?", default=Path("build/endpoints/smollm2"),
                        help="large-model: a text-generation build folder (default %(default)s)")
    parser.add_argument("--stack", default=None)
    parser.add_argument("--promoted", choices=("keep", "reset"), default="keep")
    parser.add_argument("--wheel-dir", type=Path, default=Path("build/dist"))
    parser.add_argument("--model", type=Path, action="append", default=[], help="a trained model folder to upload")
    parser.add_argument("--layers-dir", type=Path, default=Path("layers/model"))
    args = parser.parse_args(argv)
    import boto3

    name = stack_name(args.stack)
    if args.command == "parameters":
        stack = describe(boto3.client("cloudformation"), name) if name else None
        print(" ".join(parameters(stack, args.promoted)))
        return 0
    stack = describe(boto3.client("cloudformation"), name) if name else None
    outputs = {item["OutputKey"]: item["OutputValue"] for item in (stack or {}).get("Outputs", [])}
    if "RegistryBucketName" not in outputs:
        raise SystemExit(f"publish: stack {name!r} has no RegistryBucketName output (deploy it first, or --stack)")
    if args.command == "large-model":
        if not (args.build / "manifest.json").is_file():
            raise SystemExit(f"publish: {args.build} holds no text-generation build (make llm)")
        print(" ".join(upload_large_model(boto3.client("s3"), outputs["RegistryBucketName"], args.build)))
        return 0
    for key in upload(boto3.client("s3"), outputs["RegistryBucketName"], args.wheel_dir, args.model, args.layers_dir):
        print(f"publish: s3://{outputs['RegistryBucketName']}/{key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
