"""Ferry's own endpoint server: a causal language model behind the HTTP contract of a SageMaker real-time
endpoint running AWS's LMI container (DJL Serving), on this machine's CPU.

Models too large for Lambda run on a GPU SageMaker endpoint; this package is its local twin, so that the generate
function, the clients and the tests exercise a real model over the same wire dialect without an AWS account:

- :mod:`ferry.endpoint.engine`: the model, one generation at a time (:class:`Engine`, :class:`Sampling`);
- :mod:`ferry.endpoint.dialect`: request bodies parsed and validated as LMI does, answers shaped as it answers;
- :mod:`ferry.endpoint.server`: the HTTP server, both as the container (``/ping``, ``/invocations``) and as the
  SageMaker runtime service that boto3 calls (``/endpoints/{name}/invocations``).

Importing this package imports neither torch nor transformers.
"""
