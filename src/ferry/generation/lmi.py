"""AWS's Large Model Inference container (DJL Serving with vLLM): the default container of a text-generation
endpoint, and the ``serving.properties`` that tells it how to serve the artifact.

SageMaker unpacks model.tar.gz into /opt/ml/model; LMI reads ``serving.properties`` at its root and, with no
``option.model_id``, serves the Hugging Face files beside it. Where each setting comes from (djl-serving's docs,
serving/docs/lmi/):

- ``engine=Python``, ``option.async_mode=true``, ``option.rolling_batch=disable``,
  ``option.entryPoint=djl_python.lmi_vllm.vllm_async_service``: the vLLM user guide's "Async Mode
  Configurations" (user_guides/vllm_user_guide.md), the recommended mode since LMI v15 and the default since v17
  (release notes). The async handler takes the LMI/TGI body (``inputs``, ``parameters``), an OpenAI completion
  (``prompt``) and an OpenAI chat completion (``messages``): lmi_vllm/vllm_async_service.py.
- ``option.tensor_parallel_degree``: deployment_guide/configurations.md, "the number of GPUs to shard the model
  across"; 1 for a one-GPU instance (``max`` would shard across every GPU of a larger one).
- ``option.dtype``: configurations.md (``fp32``, ``fp16``, ``bf16``; bf16 "only on G5/P4/P5 or newer"); LMI maps
  it to vLLM's dtype (properties_manager/vllm_rb_properties.py, DTYPE_MAPPER).
- ``option.max_model_len``: the vLLM guide's pass-through engine argument, "the maximum length (input+output)
  vLLM should preserve memory for"; set from the model's config so that the endpoint and the artifact agree.
- ``option.max_rolling_batch_size``: configurations.md, the most sequences served at once (vLLM's max_num_seqs),
  default 256; the vLLM quick start's 64 for one GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SERVING_PROPERTIES = "serving.properties"
IMAGE_REPOSITORY = "djl-inference"
# LMI V18 (DJL Serving 0.36.0, vLLM 0.12.0, CUDA 12.8): template.yaml's LargeModelImage default, so that the
# manifest names the image the stack runs. Async mode is the vLLM handler's default since V17 (0.35.0).
IMAGE_TAG = "0.36.0-lmi18.0.0-cu128"
# 763104351884 is the AWS Deep Learning Containers account of most regions (a few regions use another).
IMAGE_URI_TEMPLATE = "763104351884.dkr.ecr.{region}.amazonaws.com/" + f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
SOURCES = (
    "https://github.com/deepjavalibrary/djl-serving/blob/master/serving/docs/lmi/deployment_guide/configurations.md",
    "https://github.com/deepjavalibrary/djl-serving/blob/master/serving/docs/lmi/user_guides/vllm_user_guide.md",
    "https://github.com/deepjavalibrary/djl-serving/blob/master/serving/docs/lmi/release_notes.md",
)
# torch's dtype names -> LMI's option.dtype values
LMI_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def serving_properties(dtype: str, max_model_len: int, max_rolling_batch_size: int,
                       tensor_parallel_degree: int = 1) -> dict[str, str]:
    """The settings of LMI's vLLM backend for this artifact on a one-GPU instance, in file order."""
    return {
        "engine": "Python",
        "option.async_mode": "true",
        "option.rolling_batch": "disable",
        "option.entryPoint": "djl_python.lmi_vllm.vllm_async_service",
        "option.tensor_parallel_degree": str(tensor_parallel_degree),
        "option.dtype": LMI_DTYPES[dtype],
        "option.max_model_len": str(max_model_len),
        "option.max_rolling_batch_size": str(max_rolling_batch_size),
    }


def render(properties: Mapping[str, str]) -> str:
    """``serving.properties`` as LMI reads it (Java properties: one ``key=value`` a line); the same settings always
    give the same bytes, so that a rebuild's archive is identical."""
    lines = ["# LMI (DJL Serving + vLLM) settings written by `ferry build --task text-generation`;",
             "# manifest.json's \"container\" says where each comes from.",
             *(f"{key}={value}" for key, value in properties.items())]
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, str]:
    """The settings of a ``serving.properties`` (comments and blank lines skipped), in file order."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!")):
            continue
        key, _, value = stripped.partition("=")
        settings[key.strip()] = value.strip()
    return settings


def container_record(properties: Mapping[str, str]) -> dict[str, Any]:
    """What the manifest says of the container the artifact targets."""
    return {
        "name": "lmi",
        "backend": "vllm",
        "image_repository": IMAGE_REPOSITORY,
        "image_tag": IMAGE_TAG,
        "image_uri_template": IMAGE_URI_TEMPLATE,
        "serving_properties": dict(properties),
        "sources": list(SOURCES),
    }
