"""
Protocols for the objects that prom_async works with.

Any object with the right methods works: prometheus_client's metrics, their
bound children (``metric.labels(...)``) and objects of your own.

Every name that prometheus-async's ``prometheus_async.types`` exports is here
too, with the same meaning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeAlias


if TYPE_CHECKING:
    from .aio.web import MetricsHTTPServer


__all__ = [
    "Deregisterer",
    "ExceptionTypes",
    "ExemplarSource",
    "IncDecrementer",
    "Incrementer",
    "LabelValues",
    "Labelled",
    "LabelsFromCall",
    "LabelsFromException",
    "Observer",
    "ParamSpec",
    "ServiceDiscovery",
]


class Observer(Protocol):
    """
    Something that records a value, like a
    :class:`~prometheus_client.Histogram` or a
    :class:`~prometheus_client.Summary`.

    What :func:`~prom_async.aio.time` needs.
    """

    def observe(self, value: float, /) -> None:
        """
        Record *value*: for :func:`~prom_async.aio.time`, a duration in
        seconds.
        """


class Incrementer(Protocol):
    """
    Something that counts, like a :class:`~prometheus_client.Counter`.

    What :func:`~prom_async.aio.count_exceptions` needs.
    """

    def inc(self, amount: float = 1, /) -> None:
        """
        Add *amount*; prom_async calls it without arguments, adding 1.
        """


class IncDecrementer(Protocol):
    """
    Something that goes up and down, like a
    :class:`~prometheus_client.Gauge`.

    What :func:`~prom_async.aio.track_inprogress` needs.
    """

    def inc(self, amount: float = 1, /) -> None:
        """
        Add *amount*; prom_async calls it without arguments when something
        starts.
        """

    def dec(self, amount: float = 1, /) -> None:
        """
        Subtract *amount*; prom_async calls it without arguments when that
        thing ends.
        """


class Labelled(Protocol):
    """
    A metric with label names, whose ``labels()`` returns a bound child.

    What the instruments need when they choose label values per call
    (``labels=``, ``exc_labels=``); the child then needs the methods above.
    """

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any:
        """
        Return the child for these label values, given by position (in the
        order of the label names) or by name, as prometheus_client's metrics
        take them.
        """


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

ExemplarSource: TypeAlias = Callable[[], Mapping[str, str] | None]
"""
Called for each observation; returns the labels of its exemplar (such as
``{"trace_id": ..., "span_id": ...}``), or :data:`None` for none.

.. versionadded:: 0.2.0
"""

ExceptionTypes: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...]
)
"""
An exception class or a tuple of them, as in an ``except`` clause.
"""

Deregisterer: TypeAlias = Callable[[], Awaitable[None]]
"""
An async callable without arguments that removes a registration again, as
returned by :meth:`ServiceDiscovery.register`.
"""


class ServiceDiscovery(Protocol):
    """
    Something that announces a metrics server to a discovery system.

    What the exporters' ``service_discovery=`` takes
    (:func:`~prom_async.aio.web.start_http_server`,
    :func:`~prom_async.aio.web.start_http_server_in_thread`), such as
    :class:`prom_async.aio.sd.ConsulAgent`.
    """

    async def register(
        self, metrics_server: MetricsHTTPServer
    ) -> Deregisterer | None:
        """
        Announce *metrics_server*, once it listens.

        The server awaits the returned :data:`Deregisterer` when it closes,
        before it stops serving; ``None`` means there is nothing to undo.
        If the returned object has an ``is_registered`` attribute, the
        server's ``is_registered`` reports it. An :class:`Exception` raised
        here is logged, and the server serves unregistered.
        """
