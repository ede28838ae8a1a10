"""
Metrics of the requests an :class:`aiohttp.ClientSession` sends, from
aiohttp's tracing signals.

Names and labels follow OpenTelemetry's HTTP client semantic conventions as
Prometheus sees them (``http.client.request.duration`` becomes
``http_client_request_duration_seconds``, ``server.address`` becomes
``server_address``). Every label value comes from a bounded set: the method
from the known methods, the status from the response, the error type from an
exception's class, and the server and URL template from the first few
distinct values (the rest become ``_OTHER``). A URL's path or query never
becomes a label.

The tracer's bookkeeping never fails a request: an error in it is logged
once, and that request goes on unmeasured.
"""

from __future__ import annotations

import contextvars
import logging

from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from time import perf_counter
from types import SimpleNamespace
from typing import Any, Generic, TypeVar, cast

import aiohttp

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from ..types import ExemplarSource
from . import _exemplars, _http_client_options
from ._client_internals import child
from ._families import family


__all__ = ["client_trace_config"]

log = logging.getLogger(__name__)

# The key of ``trace_request_ctx`` whose value is the request's
# ``url_template`` label.
_URL_TEMPLATE = "url_template"

_OTHER = "_OTHER"
_NO_ERROR = ""

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")
_P = TypeVar("_P")

_Labels = tuple[str, str, str, str]
_Outcome = tuple[str, str]

_REQUEST_LABELS = (
    "http_request_method",
    "server_address",
    "server_port",
    "url_template",
)
_OUTCOME_LABELS = ("http_response_status_code", "error_type")
_SERVER_LABELS = ("server_address", "server_port")


class _Request(SimpleNamespace):
    """
    What the tracer keeps about one request between its signals: aiohttp
    makes one per request and trace config, and passes it to each signal.
    """

    __slots__ = (
        "active",
        "connect_start",
        "dns_name",
        "dns_start",
        "labels",
        "server",
        "start",
        "trace_request_ctx",
    )

    trace_request_ctx: Any
    #: Method, server address and port, URL template; None before the
    #: request started and once it ended.
    labels: _Labels | None
    #: Server address and port.
    server: tuple[str, str]
    #: The gauge child incremented for it, until it is decremented.
    active: Any
    start: float
    connect_start: float | None
    dns_start: float | None
    dns_name: str

    def __init__(self, trace_request_ctx: Any = None) -> None:
        self.trace_request_ctx = trace_request_ctx
        self.labels = None
        self.server = ("", "")
        self.active = None
        self.start = 0.0
        self.connect_start = None
        self.dns_start = None
        self.dns_name = ""


class _Bounded(Generic[_K, _V]):
    """
    The label values of the first *limit* distinct keys; any later key gets
    *other*, with one warning.
    """

    __slots__ = ("_limit", "_make", "_other", "_seen", "_warned", "_what")

    def __init__(
        self, what: str, limit: int, make: Callable[[_K], _V], other: _V
    ) -> None:
        self._what = what
        self._limit = limit
        self._make = make
        self._other = other
        self._seen: dict[_K, _V] = {}
        self._warned = False

    def __call__(self, key: _K) -> _V:
        found = self._seen.get(key)
        if found is not None:
            return found
        if len(self._seen) < self._limit:
            found = self._seen[key] = self._make(key)
            return found
        if not self._warned:
            self._warned = True
            log.warning(
                "more than %d distinct %s values: %r and any later new one "
                "are recorded as %s (client_trace_config(max_label_values=) "
                "sets the limit)",
                self._limit,
                self._what,
                key,
                _OTHER,
            )
        return self._other


def _server(key: tuple[str | None, int | None]) -> tuple[str, str]:
    host, port = key
    return (host or "", "" if port is None else str(port))


def _same(value: str) -> str:
    return value


# Responses' statuses are three digits (aiohttp's parsers refuse others):
# at most a thousand entries.
_status_outcomes: dict[int, _Outcome] = {}


def _status_outcome(status: int) -> _Outcome:
    found = _status_outcomes.get(status)
    if found is None:
        code = str(status)
        found = _status_outcomes[status] = (
            code,
            code if status >= 400 else _NO_ERROR,  # noqa: PLR2004
        )
    return found


def _error_outcome(error: BaseException) -> _Outcome:
    if (
        type(error) is aiohttp.ClientResponseError
        and error.__cause__ is None  # not a response aiohttp failed to parse
        and 400 <= error.status <= 999  # noqa: PLR2004
    ):
        # raise_for_status: the response arrived, and is recorded as one.
        return _status_outcome(error.status)
    return ("", type(error).__name__)


class _ClientMetrics:
    """
    The metric families of one trace config and the signal handlers that
    record into them.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        namespace: str,
        buckets: Sequence[float] | None,
        exemplar: bool | ExemplarSource | None,
        response_duration: bool,
        connect_duration: bool,
        dns_duration: bool,
        known_methods: Iterable[str] | None,
        max_label_values: int,
    ) -> None:
        max_label_values = _http_client_options.label_limit(max_label_values)
        bounds = _http_client_options.buckets(buckets)
        self._exemplar = _http_client_options.exemplar_source(exemplar)
        self._methods = _http_client_options.known_methods(known_methods)
        self._servers: _Bounded[
            tuple[str | None, int | None], tuple[str, str]
        ] = _Bounded(
            "server_address", max_label_values, _server, (_OTHER, _OTHER)
        )
        self._templates = _Bounded(
            _URL_TEMPLATE, max_label_values, _same, _OTHER
        )
        self._dns_names = _Bounded(
            "dns_question_name", max_label_values, _same, _OTHER
        )
        self._failure_logged = False

        def histogram(
            name: str, documentation: str, labels: Sequence[str]
        ) -> Histogram:
            return family(
                Histogram,
                name,
                documentation,
                labels,
                registry=registry,
                namespace=namespace,
                buckets=bounds,
            )

        def counter(name: str, documentation: str) -> Counter:
            return family(
                Counter,
                name,
                documentation,
                _SERVER_LABELS,
                registry=registry,
                namespace=namespace,
            )

        self._duration = histogram(
            "http_client_request_duration_seconds",
            "Duration of HTTP client requests: from the start until the "
            "response's headers arrived or the request failed.",
            _REQUEST_LABELS + _OUTCOME_LABELS,
        )
        self._active = family(
            Gauge,
            "http_client_active_requests",
            "Number of HTTP client requests started whose response's "
            "headers have not arrived yet.",
            _REQUEST_LABELS,
            registry=registry,
            namespace=namespace,
        )
        self._opened = counter(
            "http_client_connections_opened",
            "Connections opened for HTTP client requests.",
        )
        self._reused = counter(
            "http_client_connections_reused",
            "HTTP client requests sent on a pooled keep-alive connection.",
        )
        self._response_duration = (
            histogram(
                "http_client_response_duration_seconds",
                "Duration of HTTP client requests until the response was "
                "released: its body read to the end, or the response "
                "released or closed.",
                _REQUEST_LABELS + _OUTCOME_LABELS,
            )
            if response_duration
            else None
        )
        self._connect_duration = (
            histogram(
                "http_client_connect_duration_seconds",
                "Time to open a connection for an HTTP client request: DNS "
                "lookup, TCP connect, TLS and proxy handshakes.",
                (*_SERVER_LABELS, "error_type"),
            )
            if connect_duration
            else None
        )
        self._dns_duration = (
            histogram(
                "dns_lookup_duration_seconds",
                "Duration of the DNS lookups of HTTP client requests that "
                "the DNS cache did not answer.",
                ("dns_question_name", "error_type"),
            )
            if dns_duration
            else None
        )

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig(trace_config_ctx_factory=_Request)
        guard = self._guard
        config.on_request_start.append(guard(self._request_start))
        config.on_request_end.append(guard(self._request_end))
        config.on_request_exception.append(guard(self._request_exception))
        config.on_connection_create_end.append(guard(self._connection_opened))
        config.on_connection_reuseconn.append(guard(self._connection_reused))
        if self._connect_duration is not None:
            config.on_connection_create_start.append(
                guard(self._connection_create_start)
            )
        if self._dns_duration is not None:
            config.on_dns_resolvehost_start.append(guard(self._dns_start))
            config.on_dns_resolvehost_end.append(guard(self._dns_end))
        return config

    def _guard(
        self, record: Callable[[_Request, _P], None]
    ) -> Callable[
        [aiohttp.ClientSession, SimpleNamespace, _P], Awaitable[None]
    ]:
        """
        A signal handler that records with *record*, and never raises into
        the request.
        """

        async def handler(
            _session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: _P,
        ) -> None:
            try:
                record(cast("_Request", context), params)
            except Exception as error:  # noqa: BLE001 -- never into the request
                self._failed(error)

        return handler

    def _failed(self, error: Exception) -> None:
        if not self._failure_logged:
            self._failure_logged = True
            log.error(
                "prom_async's client tracer failed to record a request; the "
                "request goes on unmeasured (later failures are not logged)",
                exc_info=error,
            )

    def _observe(self, child: Any, value: float) -> None:
        if self._exemplar is None:
            child.observe(value)
        else:
            _exemplars.observe(child, value, self._exemplar)

    def _template(self, request_ctx: Any) -> str:
        if request_ctx is None or not isinstance(request_ctx, Mapping):
            return ""
        template = request_ctx.get(_URL_TEMPLATE)
        if not template:
            return ""
        return self._templates(str(template))

    def _finish(self, request: _Request) -> _Labels | None:
        """
        Take the request out of the active gauge, once; its labels, or
        None if it was not measured or has been finished already.
        """
        active, request.active = request.active, None
        if active is not None:
            active.dec()
        labels, request.labels = request.labels, None
        return labels

    def _request_start(
        self, request: _Request, params: aiohttp.TraceRequestStartParams
    ) -> None:
        method = params.method
        if method not in self._methods:
            # aiohttp sends it upper-cased; older versions signal it as
            # given.
            upper = method.upper()
            method = upper if upper in self._methods else _OTHER
        url = params.url
        server = self._servers((url.raw_host, url.port))
        labels = (
            method,
            *server,
            self._template(request.trace_request_ctx),
        )
        active = child(self._active, labels)
        active.inc()
        request.active = active
        request.server = server
        request.labels = labels
        request.start = perf_counter()

    def _request_end(
        self, request: _Request, params: aiohttp.TraceRequestEndParams
    ) -> None:
        end = perf_counter()
        labels = self._finish(request)
        if labels is None:
            return
        response = params.response
        outcome = _status_outcome(response.status)
        elapsed = end - request.start
        key = labels + outcome
        self._observe(child(self._duration, key), elapsed)
        if self._response_duration is not None:
            self._until_released(
                child(self._response_duration, key),
                response,
                request.start,
                elapsed,
            )

    def _until_released(
        self,
        child: Any,
        response: aiohttp.ClientResponse,
        start: float,
        elapsed: float,
    ) -> None:
        connection = response.connection
        if connection is None or response.status == 101:  # noqa: PLR2004
            # The body was complete with the headers (or there is none), or
            # a WebSocket took the connection over.
            self._observe(child, elapsed)
            return
        context = (
            None if self._exemplar is None else contextvars.copy_context()
        )

        def released() -> None:
            value = perf_counter() - start
            try:
                if context is None:
                    child.observe(value)
                else:
                    # Called back from aiohttp's protocol: the exemplar is
                    # the request's trace, not the callback's.
                    context.run(self._observe, child, value)
            except Exception as error:  # noqa: BLE001 -- aiohttp would hide it
                self._failed(error)

        connection.add_callback(released)

    def _request_exception(
        self, request: _Request, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        end = perf_counter()
        labels = self._finish(request)
        if labels is None:
            return
        error = params.exception
        outcome = _error_outcome(error)
        elapsed = end - request.start
        key = labels + outcome
        self._observe(child(self._duration, key), elapsed)
        if self._response_duration is not None:
            self._observe(child(self._response_duration, key), elapsed)
        error_type = type(error).__name__
        connect_start = request.connect_start
        if connect_start is not None and self._connect_duration is not None:
            request.connect_start = None
            self._observe(
                child(self._connect_duration, (*request.server, error_type)),
                end - connect_start,
            )
        dns_start = request.dns_start
        if dns_start is not None and self._dns_duration is not None:
            request.dns_start = None
            self._observe(
                child(self._dns_duration, (request.dns_name, error_type)),
                end - dns_start,
            )

    def _connection_create_start(
        self,
        request: _Request,
        _params: aiohttp.TraceConnectionCreateStartParams,
    ) -> None:
        request.connect_start = perf_counter()

    def _connection_opened(
        self,
        request: _Request,
        _params: aiohttp.TraceConnectionCreateEndParams,
    ) -> None:
        end = perf_counter()
        if request.labels is None:
            return
        child(self._opened, request.server).inc()
        start = request.connect_start
        if start is not None and self._connect_duration is not None:
            request.connect_start = None
            self._observe(
                child(self._connect_duration, (*request.server, _NO_ERROR)),
                end - start,
            )

    def _connection_reused(
        self,
        request: _Request,
        _params: aiohttp.TraceConnectionReuseconnParams,
    ) -> None:
        if request.labels is not None:
            child(self._reused, request.server).inc()

    def _dns_start(
        self,
        request: _Request,
        params: aiohttp.TraceDnsResolveHostStartParams,
    ) -> None:
        request.dns_name = self._dns_names(params.host)
        request.dns_start = perf_counter()

    def _dns_end(
        self,
        request: _Request,
        _params: aiohttp.TraceDnsResolveHostEndParams,
    ) -> None:
        end = perf_counter()
        start = request.dns_start
        if start is None or self._dns_duration is None:
            return
        request.dns_start = None
        self._observe(
            child(self._dns_duration, (request.dns_name, _NO_ERROR)),
            end - start,
        )


def client_trace_config(
    *,
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "",
    buckets: Sequence[float] | None = None,
    exemplar: bool | ExemplarSource | None = True,
    response_duration: bool = False,
    connect_duration: bool = False,
    dns_duration: bool = False,
    known_methods: Iterable[str] | None = None,
    max_label_values: int = 100,
) -> aiohttp.TraceConfig:
    """
    Build an :class:`aiohttp.TraceConfig` that measures the requests of
    the sessions it is given to:
    ``aiohttp.ClientSession(trace_configs=[client_trace_config()])``.

    It records, under OpenTelemetry's names as Prometheus sees them:

    - ``http_client_request_duration_seconds``, a histogram labelled
      ``http_request_method``, ``server_address``, ``server_port``,
      ``url_template``, ``http_response_status_code`` and ``error_type``:
      from the request's start until its response's headers arrived
      (aiohttp's ``on_request_end`` signal: the body may still be on its
      way), or until it failed;
    - ``http_client_active_requests``, a gauge with the first four labels:
      the requests started whose response's headers have not arrived, and
      that have not failed;
    - ``http_client_connections_opened_total`` and
      ``http_client_connections_reused_total``, counters labelled
      ``server_address`` and ``server_port``: the connections opened for
      requests, and the requests sent on a pooled keep-alive connection.

    A response with a 4xx or 5xx status has the status as ``error_type``
    (also when ``raise_for_status`` turns it into an exception); a request
    that failed without a response has the exception's class name, such as
    ``ClientConnectorError``, ``TimeoutError`` or ``CancelledError``, and
    an empty status. A request that follows redirects is one request,
    labelled with the server it was sent to and the last status.

    ``server_address`` is the URL's host as sent (an internationalised name
    in its ``xn--`` form) and ``server_port`` its port, the scheme's
    default included. ``url_template`` is empty unless the request names
    one: ``session.get(url, trace_request_ctx={"url_template":
    "/users/{id}"})``; keeping it bounded is the caller's part (a template,
    never the path itself). A URL's path and query never become labels.

    Args:
        registry: Where the metrics are registered. Trace configs made
            with the same registry and *namespace* share the metric
            families.
        namespace: A prefix for every metric's name, joined with ``_``.
        buckets: The histograms' buckets, in seconds; by default
            prometheus_client's, which are the semantic conventions'
            advisory buckets.
        exemplar: What the histograms' exemplars come from: True (the
            default) for the OpenTelemetry span current when the request is
            made, when the OpenTelemetry API is installed and the span is
            sampled; a callable that returns exemplar labels; False or None
            for none.
        response_duration: Also record
            ``http_client_response_duration_seconds``, a histogram with the
            request duration's labels: from the request's start until its
            response was released, that is its body was read to the end (or
            came whole with the headers), or the response was released or
            closed. A failed request is recorded when it failed, a
            WebSocket handshake when its headers arrived.
        connect_duration: Also record
            ``http_client_connect_duration_seconds``, a histogram labelled
            ``server_address``, ``server_port`` and ``error_type``: the time
            to open each new connection (DNS lookup, TCP connect, TLS and
            proxy handshakes), failed ones included.
        dns_duration: Also record ``dns_lookup_duration_seconds``, a
            histogram labelled ``dns_question_name`` and ``error_type``:
            the DNS lookups that aiohttp's DNS cache did not answer, failed
            ones included.
        known_methods: The methods that keep their name in
            ``http_request_method`` (others become ``_OTHER``), in any case;
            by default those of ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS``
            when it is set (comma-separated), otherwise
            :data:`DEFAULT_KNOWN_METHODS`.
        max_label_values: How many distinct values ``server_address`` (with
            its port), ``url_template`` and ``dns_question_name`` each take
            in this trace config; later new ones are recorded as
            ``_OTHER``, with a warning.

    Returns:
        The trace config; any number of sessions can share it.

    Raises:
        ValueError: A metric of the same name already exists in *registry*
            with other labels or buckets, or *max_label_values* is
            negative.
        TypeError: An option has the wrong type.

    Recording never fails a request: if the bookkeeping fails, the error is
    logged once and that request goes unmeasured.

    .. versionadded:: 0.2.0
    """
    return _ClientMetrics(
        registry=registry,
        namespace=namespace,
        buckets=buckets,
        exemplar=exemplar,
        response_duration=response_duration,
        connect_duration=connect_duration,
        dns_duration=dns_duration,
        known_methods=known_methods,
        max_label_values=max_label_values,
    ).trace_config()
