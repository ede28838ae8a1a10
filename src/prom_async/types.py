"""
Protocols for the objects that prom_async works with.

Any object with the right methods works: prometheus_client's metrics, their
bound children (``metric.labels(...)``) and objects of your own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias


if TYPE_CHECKING:
    from .aio.web import MetricsHTTPServer


__all__ = [
    "Deregisterer",
    "ExceptionTypes",
    "IncDecrementer",
    "Incrementer",
    "LabelValues",
    "Labelled",
    "LabelsFromCall",
    "LabelsFromException",
    "Observer",
    "ServiceDiscovery",
]


class Observer(Protocol):
    """
    Something that records a value, like a Histogram or a Summary.
    """

    def observe(self, value: float, /) -> None: ...


class Incrementer(Protocol):
    """
    Something that counts, like a Counter.
    """

    def inc(self, amount: float = 1, /) -> None: ...


class IncDecrementer(Protocol):
    """
    Something that goes up and down, like a Gauge.
    """

    def inc(self, amount: float = 1, /) -> None: ...

    def dec(self, amount: float = 1, /) -> None: ...


class Labelled(Protocol):
    """
    A metric with label names, whose ``labels()`` returns a bound child.
    """

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any: ...


LabelValues: TypeAlias = Sequence[str] | Mapping[str, str]
"""
Label values for a labelled metric, by position (a sequence in the order of
the metric's label names, or one string) or by name (a mapping).
"""

LabelsFromCall: TypeAlias = Callable[..., LabelValues]
"""
Takes the arguments of a call and returns its :data:`LabelValues`.
"""

LabelsFromException: TypeAlias = Callable[[BaseException], LabelValues]
"""
Takes an exception and returns its :data:`LabelValues`.
"""

ExceptionTypes: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...]
)
"""
An exception class or a tuple of them, as in an ``except`` clause.
"""

Deregisterer: TypeAlias = Callable[[], Awaitable[None]]
"""
What :meth:`ServiceDiscovery.register` returns: called (and awaited) to
remove the registration again.
"""


class ServiceDiscovery(Protocol):
    """
    Something that announces a metrics server to a discovery system.
    """

    async def register(
        self, metrics_server: MetricsHTTPServer
    ) -> Deregisterer | None: ...
