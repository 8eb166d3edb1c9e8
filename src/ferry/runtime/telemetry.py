"""What the library asks of a function's logger and metrics: the calls Powertools' Logger and Metrics answer.

The functions' logic lives in the library and reports through the Logger and Metrics its function made (their
service name, the Lambda context they carry, the namespace of Settings); these protocols say which calls it
makes, so that a standard ``logging.Logger`` or a test double serves as well. Light: no import of Powertools.
"""

from __future__ import annotations

from typing import Any, Protocol

COUNT = "Count"  # the unit of every metric the library counts


class Log(Protocol):
    def info(self, msg: Any, *args: Any, **kwargs: Any) -> Any: ...

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> Any: ...

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> Any: ...


class MetricSink(Protocol):
    def add_metric(self, name: str, unit: Any, value: float, *args: Any, **kwargs: Any) -> Any: ...

    def add_dimension(self, name: str, value: str) -> Any: ...


def add_count(metrics: MetricSink, name: str, value: float = 1) -> None:
    metrics.add_metric(name=name, unit=COUNT, value=value)
