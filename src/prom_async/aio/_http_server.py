"""
The server side of :mod:`prom_async.aio.http`: a middleware that measures
every request an aiohttp application serves, under the names of
OpenTelemetry's HTTP semantic conventions.

Where a request ends: aiohttp writes a handler's response only after the
whole middleware chain has returned (``RequestHandler.finish_response``
calls ``prepare`` and then ``write_eof``). The middleware therefore puts a
wrapper around the ``write_eof`` of the response it sees and records when
that returns. The request task's done callback records whatever never gets
there: an exception (aiohttp then writes its own 500), a cancellation, a
response that an outer middleware replaced, a ``prepare`` that failed.
Whichever comes first records; the other does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from aiohttp import hdrs, web
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram

from . import _exemplars
from ._families import family
from ._web_handler import MetricsEndpoint, server_stats


if TYPE_CHECKING:
    from aiohttp.typedefs import Handler, Middleware
    from aiohttp.web_urldispatcher import AbstractRoute

    from ..types import ExemplarSource


__all__ = [
    "DEFAULT_EXCLUDE_PATHS",
    "DEFAULT_KNOWN_METHODS",
    "RequestLabels",
    "instrument_app",
    "server_middleware",
]

log = logging.getLogger(__name__)

DEFAULT_KNOWN_METHODS: Final = frozenset(
    {
        "CONNECT",
        "DELETE",
        "GET",
        "HEAD",
        "OPTIONS",
        "PATCH",
        "POST",
        "PUT",
        "QUERY",
        "TRACE",
    }
)
"""
The request methods that keep their name in ``http_request_method``: those
of RFC 9110, ``PATCH`` and ``QUERY``, as OpenTelemetry's semantic
conventions define them. Any other method is recorded as ``_OTHER``.

.. versionadded:: 0.2.0
"""

DEFAULT_EXCLUDE_PATHS: Final[tuple[str | re.Pattern[str], ...]] = ("/metrics",)
"""
The request paths :func:`server_middleware` leaves out unless told
otherwise: ``/metrics``, where Prometheus scrapes.

.. versionadded:: 0.2.0
"""

RequestLabels: TypeAlias = Mapping[str, Callable[[web.Request], str]]
"""
Label names mapped to callables that take the request and return that
label's value, as :func:`server_middleware`'s ``labels=`` takes them.

.. versionadded:: 0.2.0
"""

_OTHER_METHOD: Final = "_OTHER"
_GET: Final = hdrs.METH_GET
_UPGRADE: Final = hdrs.UPGRADE
_KNOWN_METHODS_ENV: Final = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"
_CLIENT_CLOSED: Final = 499
_SERVER_ERROR: Final = 500
_GATEWAY_TIMEOUT: Final = 504
_SWITCHING_PROTOCOLS: Final = 101

_METHOD: Final = "http_request_method"
_ROUTE: Final = "http_route"
_STATUS: Final = "http_response_status_code"
_ERROR: Final = "error_type"
_OWN_LABELS: Final = frozenset({_METHOD, _ROUTE, _STATUS, _ERROR})

_BODY_SIZE_BUCKETS: Final = (0, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
_WEBSOCKET_BUCKETS: Final = (0.1, 1, 10, 60, 300, 1800, 3600, 14400, 86400)

#: The most bound children each cache keeps; beyond it (only user labels
#: that are not bounded get there) children are looked up every time.
_CACHE_LIMIT = 10_000

_clock = time.perf_counter


def server_middleware(
    *,
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "",
    buckets: Sequence[float] | None = None,
    labels: RequestLabels | None = None,
    exclude_paths: Iterable[str | re.Pattern[str]] = DEFAULT_EXCLUDE_PATHS,
    known_methods: Iterable[str] | None = None,
    unmatched_route: str = "",
    body_sizes: bool = False,
    body_size_buckets: Sequence[float] | None = None,
    websocket_buckets: Sequence[float] | None = None,
    exemplar: bool | ExemplarSource | None = True,
) -> Middleware:
    """
    Build an aiohttp middleware that measures every request the
    application serves.

    Put it first: ``web.Application(middlewares=[server_middleware(),
    ...])``, or let :func:`instrument_app` do it. Placed first, it sees the
    status that the other middlewares settle on; placed after one, it sees
    what that one was given, not what it made of it.

    It records:

    - ``http_server_request_duration_seconds``, a histogram labelled
      ``http_request_method``, ``http_route``,
      ``http_response_status_code`` and ``error_type``: from the moment the
      middleware is called (headers read, route resolved) until the response
      body has been written, for a stream until its end;
    - ``http_server_active_requests``, a gauge labelled
      ``http_request_method``;
    - ``http_server_active_websocket_connections`` (gauge, ``http_route``)
      and ``http_server_websocket_connection_duration_seconds`` (histogram,
      ``http_route`` and ``error_type``): WebSocket connections are kept out
      of the request metrics;
    - with ``body_sizes=True``, ``http_server_request_body_size_bytes`` and
      ``http_server_response_body_size_bytes``, histograms with the labels
      of the duration.

    ``http_route`` is the template of the matched resource
    (``/users/{id}``, with a sub-application's prefix), never the path the
    client sent; a request that matches no route gets *unmatched_route*,
    and its status (404 or 405) tells why. An exception a handler raises is
    recorded as a 500 (a 504 for :class:`asyncio.TimeoutError`, as aiohttp
    answers) with its class name as ``error_type`` and passes through
    unchanged; an :class:`~aiohttp.web.HTTPException` is a response and is
    recorded with its status; a handler cancelled because its client left
    (``handler_cancellation=True``), or a response that could not be
    written because its client left, is recorded as 499. A failure of the
    measurement itself is logged once and the request is served.

    Calling it again with the same *registry* and *namespace* (an
    application built per test, two applications in one process) shares
    the metrics.

    Args:
        registry: Where the metrics are registered.
        namespace: A prefix for every metric's name: ``shop`` gives
            ``shop_http_server_request_duration_seconds``.
        buckets: The duration histogram's buckets, in seconds; by default
            prometheus_client's, which are those OpenTelemetry advises.
        labels: More labels, for every metric: each name mapped to a
            callable that takes the request and returns the value. Their
            values must come from a small set (a tenant, not a user ID):
            every value is one more series of each metric.
        exclude_paths: Requests for these paths are not measured: strings
            equal to the whole path, or compiled regular expressions that
            match the whole path (:meth:`re.Pattern.fullmatch`), the path as
            the client sent it (percent-encoded, without the query string).
            Requests
            that a prom_async metrics handler answers
            (:func:`~prom_async.aio.web.add_metrics_route` and the like) are
            never measured, wherever it is mounted.
        known_methods: The methods that keep their name in
            ``http_request_method`` (others become ``_OTHER``); by default
            those of ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` when it is
            set (comma-separated), otherwise :data:`DEFAULT_KNOWN_METHODS`.
        unmatched_route: The ``http_route`` of requests that match no
            route. The default, the empty string, is what Prometheus shows
            for a label that is absent, as OpenTelemetry leaves it.
        body_sizes: Also record the sizes of request and response bodies:
            for a request, its ``Content-Length`` or else the bytes
            received; for a response, the bytes written after its headers.
        body_size_buckets: The body size histograms' buckets, in bytes; by
            default 0, 100, 1e3, ... 1e8.
        websocket_buckets: The WebSocket duration histogram's buckets, in
            seconds; by default 0.1, 1, 10, 60, 300, 1800, 3600, 14400 and
            86400.
        exemplar: What the duration histograms' exemplars come from: True
            (the default) for the OpenTelemetry span that is current when
            the middleware is called, when the OpenTelemetry API is
            installed and the span is sampled; a callable that returns
            exemplar labels; False or None for none.

    Returns:
        The middleware.

    Raises:
        ValueError: A metric of the same name already exists in *registry*
            with other labels or buckets, or a name in *labels* is one of
            the middleware's own.
        TypeError: An option has the wrong type.

    .. versionadded:: 0.2.0
    """
    return _ServerMiddleware(
        registry=registry,
        namespace=namespace,
        buckets=buckets,
        labels=labels,
        exclude_paths=exclude_paths,
        known_methods=known_methods,
        unmatched_route=unmatched_route,
        body_sizes=body_sizes,
        body_size_buckets=body_size_buckets,
        websocket_buckets=websocket_buckets,
        exemplar=exemplar,
    )


def instrument_app(
    app: web.Application,
    *,
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "",
    buckets: Sequence[float] | None = None,
    labels: RequestLabels | None = None,
    exclude_paths: Iterable[str | re.Pattern[str]] = DEFAULT_EXCLUDE_PATHS,
    known_methods: Iterable[str] | None = None,
    unmatched_route: str = "",
    body_sizes: bool = False,
    body_size_buckets: Sequence[float] | None = None,
    websocket_buckets: Sequence[float] | None = None,
    exemplar: bool | ExemplarSource | None = True,
) -> Middleware:
    """
    Measure every request *app* serves: put a :func:`server_middleware`
    with these options first among its middlewares.

    Args:
        app: The application, before it starts.
        registry: See :func:`server_middleware`.
        namespace: See :func:`server_middleware`.
        buckets: See :func:`server_middleware`.
        labels: See :func:`server_middleware`.
        exclude_paths: See :func:`server_middleware`.
        known_methods: See :func:`server_middleware`.
        unmatched_route: See :func:`server_middleware`.
        body_sizes: See :func:`server_middleware`.
        body_size_buckets: See :func:`server_middleware`.
        websocket_buckets: See :func:`server_middleware`.
        exemplar: See :func:`server_middleware`.

    Returns:
        The middleware it added.

    Raises:
        RuntimeError: *app* has started (its middlewares are frozen).
        ValueError: *app* already has a prom_async server middleware, or
            see :func:`server_middleware`.
        TypeError: See :func:`server_middleware`.

    .. versionadded:: 0.2.0
    """
    if app.frozen:
        raise RuntimeError(
            "instrument_app(app) must be called before the application "
            "starts: its middlewares are frozen"
        )
    if any(isinstance(m, _ServerMiddleware) for m in app.middlewares):
        raise ValueError(
            "this application already has a prom_async server middleware: "
            "a second one would count every request twice"
        )
    middleware = server_middleware(
        registry=registry,
        namespace=namespace,
        buckets=buckets,
        labels=labels,
        exclude_paths=exclude_paths,
        known_methods=known_methods,
        unmatched_route=unmatched_route,
        body_sizes=body_sizes,
        body_size_buckets=body_size_buckets,
        websocket_buckets=websocket_buckets,
        exemplar=exemplar,
    )
    app.middlewares.insert(0, middleware)
    return middleware


class _ServerMiddleware:
    """
    The middleware :func:`server_middleware` returns: the metric families,
    the options, and caches of what repeats from request to request.
    """

    __middleware_version__: Final = 1  # aiohttp's mark of a new-style one

    __slots__ = (
        "_active",
        "_durations",
        "_excluded",
        "_excluded_patterns",
        "_known_methods",
        "_labels",
        "_request_sizes",
        "_response_sizes",
        "_routes",
        "_source",
        "_troubled",
        "_unmatched",
        "_websocket_durations",
        "_websockets",
    )

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        namespace: str,
        buckets: Sequence[float] | None,
        labels: RequestLabels | None,
        exclude_paths: Iterable[str | re.Pattern[str]],
        known_methods: Iterable[str] | None,
        unmatched_route: str,
        body_sizes: bool,
        body_size_buckets: Sequence[float] | None,
        websocket_buckets: Sequence[float] | None,
        exemplar: bool | ExemplarSource | None,
    ) -> None:
        self._labels = _label_getters(labels)
        self._excluded, self._excluded_patterns = _exclusions(exclude_paths)
        self._known_methods = _methods(known_methods)
        given: object = unmatched_route
        if not isinstance(given, str):
            raise TypeError(
                f"unmatched_route must be a string, not {type(given).__name__}"
            )
        self._unmatched = unmatched_route
        self._source = _source(exemplar)
        extra = tuple(name for name, _ in self._labels)

        def histogram(
            name: str,
            documentation: str,
            labelnames: Sequence[str],
            bounds: Sequence[float] | None,
            default: Sequence[float],
        ) -> _Children:
            return _Children(
                family(
                    Histogram,
                    name,
                    documentation,
                    (*labelnames, *extra),
                    registry=registry,
                    namespace=namespace,
                    buckets=_buckets(default if bounds is None else bounds),
                )
            )

        def gauge(name: str, documentation: str, label: str) -> _Children:
            return _Children(
                family(
                    Gauge,
                    name,
                    documentation,
                    (label, *extra),
                    registry=registry,
                    namespace=namespace,
                    multiprocess_mode="livesum",
                )
            )

        request_labels = (_METHOD, _ROUTE, _STATUS, _ERROR)
        self._durations = histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            request_labels,
            buckets,
            Histogram.DEFAULT_BUCKETS,
        )
        self._active = gauge(
            "http_server_active_requests",
            "Number of active HTTP server requests.",
            _METHOD,
        )
        self._websockets = gauge(
            "http_server_active_websocket_connections",
            "Number of open WebSocket connections.",
            _ROUTE,
        )
        self._websocket_durations = histogram(
            "http_server_websocket_connection_duration_seconds",
            "Duration of WebSocket connections, from the upgrade request "
            "until closed.",
            (_ROUTE, _ERROR),
            websocket_buckets,
            _WEBSOCKET_BUCKETS,
        )
        self._request_sizes: _Children | None = None
        self._response_sizes: _Children | None = None
        if body_sizes:
            self._request_sizes = histogram(
                "http_server_request_body_size_bytes",
                "Size of HTTP server request bodies.",
                request_labels,
                body_size_buckets,
                _BODY_SIZE_BUCKETS,
            )
            self._response_sizes = histogram(
                "http_server_response_body_size_bytes",
                "Size of HTTP server response bodies.",
                request_labels,
                body_size_buckets,
                _BODY_SIZE_BUCKETS,
            )
        self._routes: dict[AbstractRoute, str | None] = {}
        self._troubled = False

    async def __call__(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        try:
            exchange = self._begin(request)
        except Exception as error:  # noqa: BLE001 -- never into the request
            self.failed("starting to measure a request", error)
            exchange = None
        if exchange is None:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as raised:
            exchange.watch(raised)  # aiohttp writes it as the response
            raise
        except asyncio.CancelledError:
            exchange.end_with(_CLIENT_CLOSED, "")
            raise
        except BaseException as error:
            exchange.end_with(*_failure(error, request))
            raise
        exchange.watch(response)
        return response

    def _begin(self, request: web.Request) -> _Exchange | None:  # noqa: C901 -- one frame on the hot path
        """
        Start measuring *request*; None when it is not measured.
        """
        path = request.rel_url.raw_path  # the router made it: no new work
        if path in self._excluded:
            return None
        for pattern in self._excluded_patterns:
            if pattern.fullmatch(path):
                return None
        route = request.match_info.route
        template: str | None
        if route.resource is None:  # a 404 or a 405 from the router
            template = self._unmatched
        else:
            try:
                template = self._routes[route]
            except KeyError:
                template = self._routes[route] = _template(route)
            if template is None:
                return None
        method = request.method
        if method not in self._known_methods:
            method = _OTHER_METHOD
        extra = (
            tuple(
                self._label_value(n, get, request) for n, get in self._labels
            )
            if self._labels
            else ()
        )
        if (
            method == _GET
            and request.headers.get(_UPGRADE, "").lower() == "websocket"
        ):
            websocket = True
            gauge = self._websockets[(template, *extra)]
        else:
            websocket = False
            gauge = self._active[(method, *extra)]
        gauge.inc()
        trace = None
        source = self._source
        if source is not None:
            try:
                trace = source()
            except Exception:
                log.debug(
                    "the exemplar source %r raised", source, exc_info=True
                )
        return _Exchange(
            self, request, method, template, extra, websocket, gauge, trace
        )

    def _label_value(
        self, name: str, get: Callable[[web.Request], str], request: Any
    ) -> str:
        try:
            return str(get(request))
        except Exception as error:  # noqa: BLE001 -- the user's code
            self.failed(f"the labels= callable for {name!r}", error)
            return ""

    def record(
        self,
        exchange: _Exchange,
        status: int,
        error_type: str,
        duration: float,
        response: web.StreamResponse | None,
    ) -> None:
        """
        Record the end of *exchange*; *response* when it has been written.
        """
        if exchange.websocket and exchange.upgraded(response):
            key = (exchange.route, error_type, *exchange.extra)
            histogram = self._websocket_durations[key]
        else:
            key = (exchange.method, exchange.route, str(status), error_type)
            if exchange.extra:
                key += exchange.extra
            histogram = self._durations[key]
            if self._request_sizes is not None:
                self._request_sizes[key].observe(
                    _request_body_bytes(exchange.request)
                )
            if self._response_sizes is not None and response is not None:
                self._response_sizes[key].observe(
                    _response_body_bytes(response, exchange.request)
                )
        if exchange.trace is None:
            histogram.observe(duration)
        else:
            _exemplars.observe(histogram, duration, exchange.exemplar)

    def failed(self, what: str, error: Exception) -> None:
        """
        Log *error*, which stopped *what*: the first one with its traceback
        at error level, the others at debug level.
        """
        if self._troubled:
            log.debug("measuring a request failed: %s", what, exc_info=error)
            return
        self._troubled = True
        log.error(
            "prom_async could not measure a request (%s); requests are "
            "served all the same, and further failures are logged at DEBUG "
            "level",
            what,
            exc_info=error,
        )


class _Children(dict[tuple[str, ...], Any]):
    """
    A metric's bound children by their label values, each looked up in the
    metric once: ``children[values]`` is ``metric.labels(*values)``.

    prometheus_client's ``labels()`` checks and converts its arguments on
    every call; the values here are strings already, and repeat.
    """

    __slots__ = ("metric",)

    def __init__(self, metric: Histogram | Gauge) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, values: tuple[str, ...]) -> Any:
        found = self.metric.labels(*values)
        if len(self) < _CACHE_LIMIT:
            self[values] = found
        return found


class _Exchange:
    """
    One request being measured, until its response has been written.
    """

    __slots__ = (
        "_gauge",
        "_outcome",
        "_owner",
        "_response",
        "_start",
        "_task",
        "_write_eof",
        "extra",
        "method",
        "request",
        "route",
        "trace",
        "websocket",
    )

    def __init__(  # noqa: PLR0917 -- once per request: positional is cheaper
        self,
        owner: _ServerMiddleware,
        request: web.Request,
        method: str,
        route: str,
        extra: tuple[str, ...],
        websocket: bool,
        gauge: Any,
        trace: Mapping[str, str] | None,
    ) -> None:
        self._owner = owner
        self.request = request
        self.method = method
        self.route = route
        self.extra = extra
        self.websocket = websocket
        self._gauge = gauge
        self.trace = trace
        self._outcome: tuple[int, str] | None = (_SERVER_ERROR, "")
        self._response: web.StreamResponse | None = None
        self._write_eof: Callable[..., Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._start = _clock()

    def watch(self, response: web.StreamResponse) -> None:
        """
        Record when *response* has been written.
        """
        given: object = response
        if not isinstance(given, web.StreamResponse):
            # A handler's mistake: aiohttp logs it and answers 500.
            self.end_with(_SERVER_ERROR, str(_SERVER_ERROR))
            return
        self._outcome = None
        self._response = response
        try:
            self._write_eof = response.write_eof
            response.write_eof = self._written  # type: ignore[method-assign]
        except Exception as error:  # noqa: BLE001 -- never into the request
            self._owner.failed("watching the response", error)
        self._follow_task()

    def end_with(self, status: int, error_type: str) -> None:
        """
        The request ends with *status* and *error_type*, whatever is
        written; recorded when its task is done.
        """
        self._outcome = (status, error_type)
        self._follow_task()

    def _follow_task(self) -> None:
        """
        Record when the request's task is done, if nothing did before.
        """
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop: a coroutine closed as it is collected
            task = None
        if task is not None:
            self._task = task
            task.add_done_callback(self._task_done)
        elif self._outcome is not None:
            self._finish(*self._outcome, None)  # nothing else will come

    async def _written(self, *args: Any, **kwargs: Any) -> None:
        write_eof = self._write_eof
        assert write_eof is not None  # noqa: S101 -- set with the wrapper
        try:
            await write_eof(*args, **kwargs)
        except ConnectionError:
            self._finish(_CLIENT_CLOSED, "", None)
            raise
        response = self._response
        assert response is not None  # noqa: S101 -- set with the wrapper
        status = response.status
        self._finish(
            status, str(status) if status >= _SERVER_ERROR else "", response
        )

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._finish(_CLIENT_CLOSED, "", None)
            return
        if self._outcome is not None:
            self._finish(*self._outcome, None)
            return
        error = task.exception()
        if error is not None:
            self._finish(*_failure(error, self.request), None)
            return
        # The response was not written through its write_eof: an outer
        # middleware replaced it, or writing it failed before.
        response = self._response
        assert response is not None  # noqa: S101 -- no outcome: a response
        if _client_gone(self.request):
            self._finish(_CLIENT_CLOSED, "", None)
            return
        status = response.status
        self._finish(status, _status_error(status), None)

    def _finish(
        self,
        status: int,
        error_type: str,
        written: web.StreamResponse | None,
    ) -> None:
        duration = _clock() - self._start
        owner = self._owner
        try:
            owner.record(self, status, error_type, duration, written)
        except Exception as error:  # noqa: BLE001 -- never into the request
            owner.failed("recording a request", error)
        try:
            self._gauge.dec()
        except Exception as error:  # noqa: BLE001 -- never into the request
            owner.failed("counting the request as finished", error)
        # No cycle left: the response gets its own write_eof back, and the
        # task (when this is not its callback) no callback to run.
        if self._write_eof is not None:
            self._write_eof = None
            try:  # noqa: SIM105 -- contextlib.suppress costs 5 times more
                del self._response.write_eof  # type: ignore[union-attr]
            except AttributeError:
                pass
        self._response = None
        task = self._task
        if task is not None:
            self._task = None
            task.remove_done_callback(self._task_done)

    def upgraded(self, response: web.StreamResponse | None) -> bool:
        """
        Whether the request became a WebSocket connection.
        """
        if response is None:
            return self.request.writer.output_size > 0
        return (
            isinstance(response, web.WebSocketResponse)
            and response.status == _SWITCHING_PROTOCOLS
        )

    def exemplar(self) -> Mapping[str, str] | None:
        """
        The exemplar labels taken when the request started.
        """
        return self.trace


def _failure(error: BaseException, request: web.Request) -> tuple[int, str]:
    """
    The status and error type a request that raised *error* ends with.
    """
    if isinstance(error, ConnectionError) and _client_gone(request):
        return _CLIENT_CLOSED, ""
    status = (
        _GATEWAY_TIMEOUT
        if isinstance(error, asyncio.TimeoutError)
        else _SERVER_ERROR
    )
    return status, type(error).__name__


def _status_error(status: int) -> str:
    """
    The ``error_type`` of a response: its status if that is a server error,
    as OpenTelemetry's conventions say.
    """
    return str(status) if status >= _SERVER_ERROR else ""


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _template(route: AbstractRoute) -> str | None:
    """
    The ``http_route`` of a matched *route*; None if it serves metrics.
    """
    handler: Any = route.handler
    if handler is server_stats or isinstance(
        getattr(handler, "__self__", None), MetricsEndpoint
    ):
        return None
    resource = route.resource
    assert resource is not None  # noqa: S101 -- checked by the caller
    canonical = str(resource.canonical)
    if isinstance(resource, web.StaticResource):
        return f"{canonical.rstrip('/')}/{{filename}}"
    return canonical


def _request_body_bytes(request: web.Request) -> int:
    declared = request.content_length
    if declared is not None:
        return declared
    return int(getattr(request.content, "total_bytes", 0))


def _response_body_bytes(
    response: web.StreamResponse, request: web.Request
) -> int:
    """
    The bytes written after *response*'s headers: ``body_length`` counts
    both, and the header block takes what aiohttp writes: the status line,
    ``name: value`` lines, each ended by CRLF, and an empty line.
    """
    version = request.version
    status_line = (
        f"HTTP/{version[0]}.{version[1]} {response.status} {response.reason}"
    )
    head = len(status_line.encode()) + 4
    for name, value in response.headers.items():
        if value.isascii() and name.isascii():
            head += len(name) + len(value) + 4
        else:
            head += len(name.encode()) + len(value.encode()) + 4
    return max(0, response.body_length - head)


def _label_getters(
    labels: RequestLabels | None,
) -> tuple[tuple[str, Callable[[web.Request], str]], ...]:
    if labels is None:
        return ()
    given: object = labels
    if not isinstance(given, Mapping):
        raise TypeError(
            "labels must map label names to callables that take the "
            f"request, not be a {type(given).__name__}"
        )
    getters = tuple(labels.items())
    for name, get in getters:
        if name in _OWN_LABELS:
            raise ValueError(
                f"labels={{{name!r}: ...}}: {name} is one of the "
                "middleware's own labels"
            )
        if not callable(get):
            raise TypeError(
                f"labels={{{name!r}: ...}} must be a callable that takes "
                f"the request, not {type(get).__name__}"
            )
    return getters


def _exclusions(
    paths: Iterable[str | re.Pattern[str]],
) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    given: object = paths
    if isinstance(given, str | re.Pattern):
        raise TypeError(
            "exclude_paths must be a collection of paths and patterns, "
            f"like ({given!r},)"
        )
    exact: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for path in paths:
        entry: object = path
        if isinstance(entry, str):
            exact.add(entry)
        elif isinstance(entry, re.Pattern) and isinstance(entry.pattern, str):
            patterns.append(entry)
        else:
            raise TypeError(
                "exclude_paths takes strings and compiled str patterns, "
                f"not {path!r}"
            )
    return frozenset(exact), tuple(patterns)


def _methods(known_methods: Iterable[str] | None) -> frozenset[str]:
    if known_methods is None:
        configured = os.environ.get(_KNOWN_METHODS_ENV)
        if configured is None:
            return DEFAULT_KNOWN_METHODS
        known_methods = [m.strip() for m in configured.split(",")]
        return frozenset(m for m in known_methods if m)
    given: object = known_methods
    if isinstance(given, str):
        raise TypeError(
            f"known_methods must be a collection of methods, like ({given!r},)"
        )
    methods: frozenset[object] = frozenset(known_methods)
    wrong = [m for m in methods if not isinstance(m, str)]
    if wrong:
        raise TypeError(f"known_methods takes strings, not {wrong[0]!r}")
    return frozenset(known_methods)


def _buckets(bounds: Sequence[float]) -> tuple[float, ...]:
    """
    *bounds* as prometheus_client keeps them, so equal buckets given in
    another form share a family.
    """
    given: object = bounds
    if isinstance(given, str) or not isinstance(given, Iterable):
        raise TypeError(
            f"buckets must be a sequence of numbers, not {given!r}"
        )
    floats = tuple(float(bound) for bound in bounds)
    if not floats or floats[-1] != math.inf:
        floats = (*floats, math.inf)
    return floats


def _source(exemplar: bool | ExemplarSource | None) -> ExemplarSource | None:
    """
    What ``exemplar=`` means here. True asks OpenTelemetry only when its API
    is installed, and asks for the span only when its context holds
    anything: a request without tracing pays one call.
    """
    if exemplar is not True:
        return _exemplars.exemplar_source(exemplar)
    try:
        from opentelemetry import context  # noqa: PLC0415 -- optional extra
    except ImportError:
        return None
    get_current = context.get_current

    def current_trace() -> Mapping[str, str] | None:
        if not get_current():
            return None
        return _exemplars.current_trace()

    return current_trace
