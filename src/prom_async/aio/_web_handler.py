"""
The aiohttp handlers that answer scrapes and the landing page.
"""

from __future__ import annotations

import asyncio
import html
import logging
import weakref

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from prometheus_client import REGISTRY, CollectorRegistry

from ._auth import Authenticator, Verdict
from ._collect import SCRAPE_TIMEOUT_HEADER, run_hooks, scrape_budget
from ._options import check_seconds
from ._render import (
    DEFAULT_RENDER_TIMEOUT,
    RegistryRenderer,
    RenderTimeoutError,
)
from ._web_body import CHUNK, DEFAULT_WRITE_TIMEOUT, SharedBody


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable


__all__ = [
    "DEFAULT_RENDER_TIMEOUT",
    "DEFAULT_WRITE_TIMEOUT",
    "MetricsEndpoint",
    "RequestLike",
    "add_metrics_route",
    "add_metrics_routes",
    "landing_page",
    "metrics_endpoint",
    "metrics_handler",
    "server_stats",
]

log = logging.getLogger(__name__)

_NAME_PARAMETER: Final = "name[]"
_VARY: Final = "Accept, Accept-Encoding"


class RequestLike(Protocol):
    """
    What the metrics handlers read of a request.

    An :class:`aiohttp.web.Request` is one, and so is any object with a
    ``headers`` mapping, like the stand-ins that unit tests pass to
    ``server_stats`` (``SimpleNamespace(headers=CIMultiDict())``). Header
    names match whatever their case. A ``query`` attribute, a multidict or
    a mapping, is read for ``name[]`` if there is one; none means all
    metrics. The method is not looked at: the handlers answer as for
    ``GET`` (aiohttp drops the body of a ``HEAD`` answer).

    The public functions are annotated with :class:`aiohttp.web.Request`,
    as prometheus-async's are, and say in their docstrings that they take
    these stand-ins.
    """

    @property
    def headers(self) -> Mapping[str, str]: ...


class MetricsEndpoint:
    """
    Serves one registry; :meth:`handle` is the aiohttp handler.
    """

    __slots__ = (
        "_authenticator",
        "_render_timeout",
        "_renderer",
        "_write_timeout",
        "registry",
    )

    def __init__(
        self,
        registry: CollectorRegistry,
        authenticator: Authenticator,
        *,
        render_timeout: float = DEFAULT_RENDER_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        self.registry = registry
        self._renderer = RegistryRenderer(
            registry, render_timeout=render_timeout
        )
        self._authenticator = authenticator
        self._render_timeout = render_timeout
        self._write_timeout = write_timeout

    @property
    def requires_auth(self) -> bool:
        """
        Whether scrapes must carry a credential.
        """
        return self._authenticator.required

    async def handle(self, request: RequestLike) -> web.Response:
        """
        Answer one scrape, within the deadline of :func:`_render_deadline`.
        """
        started = asyncio.get_running_loop().time()
        asked = _headers(request)
        verdict = await self._authenticator.verdict(
            asked.get(hdrs.AUTHORIZATION)
        )
        if verdict is not Verdict.GRANTED:
            return _refused(self._authenticator, verdict)
        scrape_timeout = asked.get(SCRAPE_TIMEOUT_HEADER)
        await run_hooks(self.registry, scrape_timeout)
        deadline = _render_deadline(
            started,
            asyncio.get_running_loop().time(),
            scrape_timeout,
            self._render_timeout,
        )
        try:
            exposition = await self._renderer.render(
                accept=asked.get(hdrs.ACCEPT),
                accept_encoding=asked.get(hdrs.ACCEPT_ENCODING),
                names=_names(request),
                deadline=deadline,
            )
        except RenderTimeoutError:
            # The renderer logs once per stall, not once per scrape.
            return web.Response(
                status=503,
                text="Rendering the metrics took too long; see the server's "
                "log.\n",
            )
        except Exception:
            # The collector's own traceback; nothing of the request.
            log.exception("collecting the metrics failed")
            return web.Response(
                status=500,
                text="Collecting the metrics failed; see the server's log.\n",
            )
        headers = CIMultiDict(
            {hdrs.CONTENT_TYPE: exposition.content_type, hdrs.VARY: _VARY}
        )
        if exposition.content_encoding is not None:
            headers[hdrs.CONTENT_ENCODING] = exposition.content_encoding
        body: bytes | SharedBody = exposition.body
        # A stand-in for a request gets bytes, as from prometheus-async.
        if isinstance(request, web.BaseRequest) and (
            len(exposition.body) > CHUNK
        ):
            body = SharedBody(
                exposition.body,
                content_type=exposition.content_type,
                request=request,
                write_timeout=self._write_timeout,
            )
        return web.Response(body=body, headers=headers)


def _render_deadline(
    started: float,
    hooked: float,
    scrape_timeout: str | None,
    render_timeout: float,
) -> float:
    """
    When a scrape that *started* and whose hooks were done at *hooked*
    (loop times) stops waiting for its render.

    Within *render_timeout* of the start, always.  With a scraper's
    timeout, by that timeout less its offset
    (:func:`~._collect.scrape_budget`, which the hooks have too), but never
    with less than the offset's share left after the hooks: a hung hook
    leaves the render that share, and the scrape still fits the scraper's
    timeout.
    """
    latest = started + render_timeout
    budget = scrape_budget(scrape_timeout)
    if scrape_timeout is None or budget is None:
        return latest
    share = float(scrape_timeout) - budget
    return min(latest, max(started + budget, hooked + share))


def _headers(request: RequestLike) -> Mapping[str, str]:
    headers = request.headers
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return headers
    given: object = headers
    if not isinstance(given, Mapping):
        raise TypeError(
            "request.headers must be a mapping of header names to values, "
            f"not {type(given).__name__}"
        )
    return CIMultiDict(headers)


def _names(request: RequestLike) -> frozenset[str] | None:
    """
    The ``name[]`` values of *request*'s query, or None for all metrics.
    """
    query = getattr(request, "query", None)
    names: Iterable[str]
    if isinstance(query, MultiMapping):
        names = query.getall(_NAME_PARAMETER, ())
    elif isinstance(query, Mapping):
        value = query.get(_NAME_PARAMETER, ())
        names = (value,) if isinstance(value, str) else value
    else:
        return None
    return frozenset(names) or None


def _refused(authenticator: Authenticator, verdict: Verdict) -> web.Response:
    """
    401 for a credential that is missing or wrong; 429 when too many
    credential checks wait already (the client may retry in a second).
    """
    headers: CIMultiDict[str] = CIMultiDict()
    for challenge in authenticator.challenges:
        headers.add(hdrs.WWW_AUTHENTICATE, challenge)
    if verdict is Verdict.BUSY:
        headers[hdrs.RETRY_AFTER] = "1"
        return web.Response(
            status=429,
            text="429: too many credential checks at once; retry later\n",
            headers=headers,
        )
    return web.Response(
        status=401, text="401: credentials required\n", headers=headers
    )


def metrics_handler(
    *,
    registry: CollectorRegistry = REGISTRY,
    basic_auth_users: Mapping[str, str] | None = None,
    bearer_token: str | None = None,
    render_timeout: float = DEFAULT_RENDER_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """
    Build an aiohttp handler that serves *registry*.

    Add it to your own :class:`aiohttp.web.Application` under any path, or
    let :func:`add_metrics_route` do it. The handler negotiates the format
    (text 0.0.4 or OpenMetrics) from ``Accept``, compresses with gzip when
    ``Accept-Encoding`` allows, honours ``name[]`` query parameters, and
    renders off the event loop, once the registry's scrape hooks
    (:func:`prom_async.aio.collect.on_scrape`) are done.

    Args:
        registry: The registry to serve: the global one, a custom
            :class:`~prometheus_client.CollectorRegistry`, or one that holds
            a multiprocess collector.
        basic_auth_users: Require HTTP basic auth: user names mapped to
            bcrypt password hashes, as in the ``basic_auth_users`` of
            Prometheus' exporter-toolkit web configuration. Needs the
            ``auth`` extra (the ``bcrypt`` package).
        bearer_token: Require ``Authorization: Bearer <bearer_token>``.
            With both options, either credential is accepted.
        render_timeout: Seconds a scrape may take for its scrape hooks and
            its render together (default 10). A scraper's
            ``X-Prometheus-Scrape-Timeout-Seconds`` shortens it to that
            timeout less
            :data:`~prom_async.aio.collect.SCRAPE_TIMEOUT_OFFSET`, as for
            the hooks, but leaves the render the offset's share after hooks
            that took their whole time. A scrape past it gets ``503``, and
            so does every scrape of the registry at once while a render
            runs longer than this (a hung collector holds one thread, not
            one per scrape), with one warning logged per stall, naming the
            collector being collected.
        write_timeout: Seconds the client may take to read each chunk
            (16 KiB) of a larger body (default 10); past it the connection
            is aborted.

    Returns:
        The handler; scrapes without a valid credential (when one is
        configured) get ``401`` with ``WWW-Authenticate``, and ``429``
        with ``Retry-After: 1`` when too many credential checks are
        waiting already. A collector that
        raises (``SystemExit`` included) gets ``500`` and its traceback
        logged. Like :func:`server_stats`, it also takes a stand-in for the
        request.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option is empty, a timeout is not positive and
            finite, or a password is not a bcrypt hash.
        ImportError: *basic_auth_users* is given and bcrypt is missing.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       *render_timeout* and *write_timeout*.
    """
    return metrics_endpoint(
        registry=registry,
        basic_auth_users=basic_auth_users,
        bearer_token=bearer_token,
        render_timeout=render_timeout,
        write_timeout=write_timeout,
    ).handle


def metrics_endpoint(
    *,
    registry: CollectorRegistry,
    basic_auth_users: Mapping[str, str] | None,
    bearer_token: str | None,
    render_timeout: float = DEFAULT_RENDER_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> MetricsEndpoint:
    """
    Check the options and build the endpoint for :func:`metrics_handler`.
    """
    given: object = registry
    if not isinstance(given, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry, not "
            f"{type(given).__name__}"
        )
    render_timeout = check_seconds("render_timeout", render_timeout)
    write_timeout = check_seconds("write_timeout", write_timeout)
    return MetricsEndpoint(
        registry,
        Authenticator(
            basic_auth_users=basic_auth_users, bearer_token=bearer_token
        ),
        render_timeout=render_timeout,
        write_timeout=write_timeout,
    )


def add_metrics_route(
    app: web.Application,
    path: str = "/metrics",
    *,
    registry: CollectorRegistry = REGISTRY,
    basic_auth_users: Mapping[str, str] | None = None,
    bearer_token: str | None = None,
    render_timeout: float = DEFAULT_RENDER_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> None:
    """
    Serve *registry* under *path* in an existing application.

    Both ``path`` and ``path/`` answer ``GET`` and ``HEAD`` directly (no
    redirect); other methods get ``405``. The options are those of
    :func:`metrics_handler`.

    Args:
        app: The application to add the routes to (before it starts).
        path: Where to serve the metrics; must start with ``/``.
        registry: The registry to serve.
        basic_auth_users: See :func:`metrics_handler`.
        bearer_token: See :func:`metrics_handler`.
        render_timeout: See :func:`metrics_handler`.
        write_timeout: See :func:`metrics_handler`.

    Raises:
        ValueError: *path* is not an absolute path below ``/``, or an
            option's value is refused (see :func:`metrics_handler`).
        TypeError: *path* is not a string, or an option has the wrong type
            (see :func:`metrics_handler`).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       *render_timeout* and *write_timeout*.
    """
    add_metrics_routes(
        app,
        path,
        metrics_endpoint(
            registry=registry,
            basic_auth_users=basic_auth_users,
            bearer_token=bearer_token,
            render_timeout=render_timeout,
            write_timeout=write_timeout,
        ),
    )


def add_metrics_routes(
    app: web.Application, path: str, endpoint: MetricsEndpoint
) -> None:
    """
    Route ``GET`` and ``HEAD`` of *path*, with and without ``/``, to
    *endpoint*.
    """
    given: object = path
    if not isinstance(given, str):
        raise TypeError(f"path must be a string, not {type(given).__name__}")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', not {path!r}")
    bare = path.rstrip("/")
    if not bare:
        raise ValueError(
            "path must name a resource below '/', like '/metrics'"
        )
    app.router.add_get(bare, endpoint.handle)
    app.router.add_get(bare + "/", endpoint.handle)


def landing_page(metrics_path: str) -> bytes:
    """
    The small HTML page at ``/`` that links to *metrics_path*.
    """
    href = html.escape(metrics_path, quote=True)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>Metrics exporter</title></head>\n<body>"
        "<h1>Metrics exporter</h1>\n"
        f'<p><a href="{href}">Metrics</a></p>\n'
        "</body></html>\n"
    ).encode()


_server_stats_endpoints: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, MetricsEndpoint
] = weakref.WeakKeyDictionary()


async def server_stats(request: web.Request) -> web.Response:
    """
    An aiohttp handler that serves the global registry.

    A drop-in for ``prometheus_async.aio.web.server_stats``: add it to your
    application's router. For another registry or for credentials, use
    :func:`metrics_handler` or :func:`add_metrics_route`.

    Unit tests may call it with a stand-in for the request, as they call
    prometheus-async's (``SimpleNamespace(headers=CIMultiDict())``): any
    object with a ``headers`` mapping works, whose names match in any case.
    Its ``query``, a multidict or a mapping, is read for ``name[]`` if it
    has one (none means all metrics); its method is not looked at.

    .. versionadded:: 0.1.0
    """
    loop = asyncio.get_running_loop()
    endpoint = _server_stats_endpoints.get(loop)
    if endpoint is None:
        endpoint = _server_stats_endpoints[loop] = metrics_endpoint(
            registry=REGISTRY, basic_auth_users=None, bearer_token=None
        )
    return await endpoint.handle(request)
