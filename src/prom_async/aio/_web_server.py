"""
The standalone metrics HTTP server: in the running loop or in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import socket
import ssl
import threading

from typing import TYPE_CHECKING, Final, NamedTuple

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from ._options import check_seconds
from ._web_connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    ConnectionLimits,
    ExporterServer,
)
from ._web_handler import (
    DEFAULT_RENDER_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    metrics_endpoint,
)
from ._web_routes import ExporterRoutes


if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from typing_extensions import Self

    from prom_async.types import Deregisterer, ServiceDiscovery


__all__ = [
    "MetricsHTTPServer",
    "Socket",
    "ThreadedMetricsHTTPServer",
    "start_http_server",
    "start_http_server_in_thread",
]

log = logging.getLogger("prom_async.aio.web")

METRICS_PATH: Final = "/metrics"
# Seconds a request being answered is given when the server closes, then
# as many for its handler to end once cancelled.
_SHUTDOWN_TIMEOUT: Final = 1.0
_THREAD_NAME: Final = "prom_async-metrics-exporter"
# Binding one more address of a name can fail on hosts without IPv6.
_UNAVAILABLE_ADDRESS_ERRORS: Final = frozenset(
    {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}
)
_EPHEMERAL_BIND_ATTEMPTS: Final = 5
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


class Socket(NamedTuple):
    """
    The address and port a metrics server listens on.
    """

    addr: str
    """
    The IP address, like ``"127.0.0.1"`` or ``"::1"`` (never a host name,
    never bracketed); ``"0.0.0.0"`` or ``"::"`` when listening on every
    interface.
    """
    port: int
    """
    The TCP port, the one picked when the server was started with
    ``port=0``.
    """


class MetricsHTTPServer:
    """
    A running metrics HTTP server; made by :func:`start_http_server`.

    It serves a landing page at ``/`` (no credentials needed: a cheap
    health check) and the metrics at ``/metrics`` and ``/metrics/``.
    Use it as an async context manager, or call :meth:`close`.

    Attributes:
        socket (Socket): The first address and port it listens on: the
            first of :attr:`sockets`.
        sockets (tuple[Socket, ...]): Every address and port it listens on,
            IPv4 first, all on the same port: ``addr=""`` listens on
            ``0.0.0.0`` and ``::``, a host name on each of its addresses.
        https (bool): Whether it serves TLS.
        metrics_path (str): The path of the metrics: ``"/metrics"``.
        requires_auth (bool): Whether ``/metrics`` asks for a credential.
    """

    def __init__(
        self,
        *,
        runner: web.BaseRunner,
        sockets: tuple[Socket, ...],
        https: bool,
        requires_auth: bool,
    ) -> None:
        self._runner = runner
        self.sockets = sockets
        self.socket = sockets[0]
        self.https = https
        self.metrics_path = METRICS_PATH
        self.requires_auth = requires_auth
        self._deregister: Deregisterer | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<MetricsHTTPServer {self.url}>"

    @property
    def url(self) -> str:
        """
        The root URL, like ``http://127.0.0.1:8000/``.

        IPv6 hosts are bracketed; a wildcard address (``""``, ``0.0.0.0``,
        ``::``) gives the loopback address, which reaches it from here.
        """
        scheme = "https" if self.https else "http"
        return f"{scheme}://{_url_host(self.socket.addr)}:{self.socket.port}/"

    @property
    def metrics_url(self) -> str:
        """
        The URL of the metrics, like ``http://127.0.0.1:8000/metrics``.
        """
        return self.url[:-1] + self.metrics_path

    @property
    def is_registered(self) -> bool:
        """
        Whether service discovery holds a registration for this server.
        """
        deregister = self._deregister
        return bool(
            getattr(deregister, "is_registered", deregister is not None)
        )

    async def close(self) -> None:
        """
        Deregister from service discovery, then stop serving.

        Idle connections are closed at once; a request still being answered
        gets a second to finish, then is cancelled (a render stuck in a
        collector goes on in its thread, which does not keep the program
        from exiting). So this takes two seconds at most, once deregistered.
        Closing twice does nothing the second time.
        """
        if self._closed:
            return
        self._closed = True
        deregister, self._deregister = self._deregister, None
        try:
            if deregister is not None:
                try:
                    await deregister()
                except Exception:
                    log.exception("deregistering %r failed", self)
        finally:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _url_host(addr: str) -> str:
    addr = _WILDCARDS.get(addr, addr)
    if ":" in addr:
        return "[" + addr.replace("%", "%25") + "]"
    return addr


def _validate(
    addr: object,
    port: object,
    ssl_ctx: object,
    service_discovery: object,
    registry: object,
    *,
    idle_timeout: object = DEFAULT_IDLE_TIMEOUT,
    header_timeout: object = DEFAULT_HEADER_TIMEOUT,
    render_timeout: object = DEFAULT_RENDER_TIMEOUT,
    write_timeout: object = DEFAULT_WRITE_TIMEOUT,
) -> None:
    if not isinstance(addr, str):
        raise TypeError(f"addr must be a string, not {type(addr).__name__}")
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an integer, not {type(port).__name__}")
    if not 0 <= port <= 65535:  # noqa: PLR2004 -- the TCP port range
        raise ValueError(f"port must be in 0..65535, not {port}")
    if ssl_ctx is not None:
        if not isinstance(ssl_ctx, ssl.SSLContext):
            raise TypeError(
                "ssl_ctx must be an ssl.SSLContext, not "
                f"{type(ssl_ctx).__name__}"
            )
        if ssl_ctx.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError(
                "ssl_ctx is a client context (PROTOCOL_TLS_CLIENT); a "
                "server needs ssl.create_default_context("
                "ssl.Purpose.CLIENT_AUTH) or PROTOCOL_TLS_SERVER"
            )
    if service_discovery is not None and not callable(
        getattr(service_discovery, "register", None)
    ):
        raise TypeError(
            "service_discovery must have an async register(server) method"
        )
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry, not "
            f"{type(registry).__name__}"
        )
    check_seconds("idle_timeout", idle_timeout)
    check_seconds("header_timeout", header_timeout)
    check_seconds("render_timeout", render_timeout)
    check_seconds("write_timeout", write_timeout)


async def _listen_addresses(addr: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        addr or None,
        port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    ipv4 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET]
    others = [str(info[4][0]) for info in infos if info[0] != socket.AF_INET]
    return list(dict.fromkeys(ipv4 + others))


async def _bind(
    runner: web.BaseRunner,
    addr: str,
    port: int,
    ssl_ctx: ssl.SSLContext | None,
) -> tuple[Socket, ...]:
    hosts = await _listen_addresses(addr, port)
    for attempt in range(1, _EPHEMERAL_BIND_ATTEMPTS + 1):
        try:
            return await _bind_all(runner, hosts, port, ssl_ctx)
        except _PortTakenOnAnotherAddressError as taken:  # noqa: PERF203 -- a few tries at start-up
            # The ephemeral port of the first address is used on another
            # one: start over with a new port.
            for site in taken.sites:
                await site.stop()
            if attempt == _EPHEMERAL_BIND_ATTEMPTS:
                raise taken.error from None
    raise AssertionError  # pragma: no cover -- the loop returns or raises


class _PortTakenOnAnotherAddressError(Exception):
    def __init__(self, error: OSError, sites: list[web.TCPSite]) -> None:
        super().__init__(error)
        self.error = error
        self.sites = sites


async def _bind_all(
    runner: web.BaseRunner,
    hosts: list[str],
    port: int,
    ssl_ctx: ssl.SSLContext | None,
) -> tuple[Socket, ...]:
    # Every address of the name gets the same port, also when the first
    # one was given an ephemeral port.
    sockets: list[Socket] = []
    sites: list[web.TCPSite] = []
    for host in hosts:
        site = web.TCPSite(
            runner,
            host,
            sockets[0].port if sockets else port,
            ssl_context=ssl_ctx,
        )
        try:
            await site.start()
        except OSError as error:
            if sockets and error.errno in _UNAVAILABLE_ADDRESS_ERRORS:
                log.debug("not listening on %s: %s", host, error)
                continue
            if sockets and port == 0 and error.errno == errno.EADDRINUSE:
                raise _PortTakenOnAnotherAddressError(error, sites) from None
            raise
        sites.append(site)
        bound = runner.addresses[-1]
        sockets.append(Socket(str(bound[0]), int(bound[1])))
    # Never empty: getaddrinfo() raises rather than resolve to nothing, and
    # the first address either listens or raises.
    return tuple(sockets)


async def start_http_server(
    *,
    addr: str = "",
    port: int = 0,
    ssl_ctx: ssl.SSLContext | None = None,
    service_discovery: ServiceDiscovery | None = None,
    registry: CollectorRegistry = REGISTRY,
    basic_auth_users: Mapping[str, str] | None = None,
    bearer_token: str | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    render_timeout: float = DEFAULT_RENDER_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> MetricsHTTPServer:
    """
    Serve *registry* over HTTP(S) from the running event loop.

    The metrics are rendered off the event loop, so scrapes of even a large
    registry do not stall the application. Whatever a client sends, its
    connection costs a bounded buffer for a bounded time: a request with a
    body gets ``413`` and its connection is closed, and one that has sent
    more than 1 MiB that no request has consumed yet (pipelined requests,
    say) is aborted. A request the HTTP parser refuses gets ``400`` and is
    logged as one line at INFO, without a byte of it (at most one such
    line every 10 seconds, which counts those left out).

    Args:
        addr: The interface to listen on; ``""`` listens on all of them,
            IPv4 and IPv6. A name listens on all its addresses.
        port: The port; ``0`` picks a free one (see
            :attr:`MetricsHTTPServer.socket`).
        ssl_ctx: Serve HTTPS with this server-side context.
        service_discovery: Announce the server, e.g. a
            :class:`prom_async.aio.sd.ConsulAgent`. A registration that
            fails is logged and the server serves anyway.
        registry: The registry to serve.
        basic_auth_users: Require HTTP basic auth on ``/metrics``: user
            names mapped to bcrypt password hashes (needs the ``auth``
            extra).
        bearer_token: Require ``Authorization: Bearer <bearer_token>`` on
            ``/metrics``.
        idle_timeout: Close a connection that sends nothing for this many
            seconds, before its first request or between two. Prometheus
            keeps its connection open between scrapes; one that is closed
            is opened again at the next scrape.
        header_timeout: Close a connection whose request head (the request
            line and the headers) has not all arrived this many seconds
            after its first byte did.
        render_timeout: Seconds a scrape may take for its scrape hooks and
            its render together, less when the scraper sends a shorter
            timeout; past it the scrape gets ``503`` (see
            :func:`metrics_handler`).
        write_timeout: Seconds a client may take to read each chunk of a
            large answer, or anything of an answer it has stopped reading;
            past it the connection is aborted (see :func:`metrics_handler`).

    Returns:
        The running server.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option has a wrong value.
        OSError: The address cannot be listened on (e.g. port in use).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       *idle_timeout*, *header_timeout*, *render_timeout* and
       *write_timeout*; requests with a body refused.
    """
    _validate(
        addr,
        port,
        ssl_ctx,
        service_discovery,
        registry,
        idle_timeout=idle_timeout,
        header_timeout=header_timeout,
        render_timeout=render_timeout,
        write_timeout=write_timeout,
    )
    endpoint = metrics_endpoint(
        registry=registry,
        basic_auth_users=basic_auth_users,
        bearer_token=bearer_token,
        render_timeout=render_timeout,
        write_timeout=write_timeout,
    )
    web_server = ExporterServer(
        ExporterRoutes(endpoint, METRICS_PATH).answer,
        ConnectionLimits(
            idle_timeout=float(idle_timeout),
            header_timeout=float(header_timeout),
            write_timeout=float(write_timeout),
        ),
        log,
    )
    runner = web.ServerRunner(web_server, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        sockets = await _bind(runner, addr, port, ssl_ctx)
    except BaseException:
        await runner.cleanup()
        raise
    server = MetricsHTTPServer(
        runner=runner,
        sockets=sockets,
        https=ssl_ctx is not None,
        requires_auth=endpoint.requires_auth,
    )
    if service_discovery is not None:
        try:
            server._deregister = await service_discovery.register(server)  # noqa: SLF001
        except Exception:
            log.exception(
                "registering %r with service discovery failed; "
                "serving without registration",
                server,
            )
        except BaseException:
            await runner.cleanup()
            raise
    return server


class ThreadedMetricsHTTPServer:
    """
    A metrics server running its own event loop in a daemon thread.

    Made by :func:`start_http_server_in_thread`; it has the attributes of
    :class:`MetricsHTTPServer`, a blocking :meth:`close`, and works as a
    (synchronous) context manager.
    """

    def __init__(
        self,
        server: MetricsHTTPServer,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
    ) -> None:
        self._server = server
        self._loop = loop
        self._thread = thread
        self._close_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<ThreadedMetricsHTTPServer {self.url}>"

    @property
    def socket(self) -> Socket:
        """
        The first address and port the server listens on.
        """
        return self._server.socket

    @property
    def sockets(self) -> tuple[Socket, ...]:
        """
        Every address and port the server listens on.
        """
        return self._server.sockets

    @property
    def https(self) -> bool:
        """
        Whether the server serves TLS.
        """
        return self._server.https

    @property
    def url(self) -> str:
        """
        The root URL; see :attr:`MetricsHTTPServer.url`.
        """
        return self._server.url

    @property
    def metrics_path(self) -> str:
        """
        Where the metrics are served, ``"/metrics"``.
        """
        return self._server.metrics_path

    @property
    def metrics_url(self) -> str:
        """
        The URL of the metrics.
        """
        return self._server.metrics_url

    @property
    def requires_auth(self) -> bool:
        """
        Whether ``/metrics`` asks for a credential.
        """
        return self._server.requires_auth

    @property
    def is_registered(self) -> bool:
        """
        Whether service discovery holds a registration for this server.
        """
        return self._server.is_registered

    @property
    def thread(self) -> threading.Thread:
        """
        The daemon thread that runs the server's event loop.
        """
        return self._thread

    def close(self) -> None:
        """
        Deregister, stop the server, close its loop and join its thread.

        Blocks until all of that is done, as long as
        :meth:`MetricsHTTPServer.close` takes and a second more at most for
        what the application runs in the loop's default executor (a job
        that hangs there is not waited for); closing twice does nothing the
        second time.

        Raises:
            RuntimeError: Called from the server's own thread.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "close() was called from the server's own thread"
            )
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                asyncio.run_coroutine_threadsafe(
                    self._server.close(), self._loop
                ).result()
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def start_http_server_in_thread(
    *,
    addr: str = "",
    port: int = 0,
    ssl_ctx: ssl.SSLContext | None = None,
    service_discovery: ServiceDiscovery | None = None,
    registry: CollectorRegistry = REGISTRY,
    basic_auth_users: Mapping[str, str] | None = None,
    bearer_token: str | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    render_timeout: float = DEFAULT_RENDER_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> ThreadedMetricsHTTPServer:
    """
    Start :func:`start_http_server` in a new event loop in a daemon thread.

    For programs without an event loop of their own (Flask, scripts,
    workers). The options are those of :func:`start_http_server`. Returns
    once the server listens (and registration was attempted).

    Returns:
        The running server; call :meth:`~ThreadedMetricsHTTPServer.close`
        to stop it.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option has a wrong value.
        OSError: The address cannot be listened on (e.g. port in use).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       *idle_timeout*, *header_timeout*, *render_timeout* and
       *write_timeout*.
    """
    _validate(
        addr,
        port,
        ssl_ctx,
        service_discovery,
        registry,
        idle_timeout=idle_timeout,
        header_timeout=header_timeout,
        render_timeout=render_timeout,
        write_timeout=write_timeout,
    )
    started: concurrent.futures.Future[MetricsHTTPServer] = (
        concurrent.futures.Future()
    )
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(
        thread_name_prefix=f"{_THREAD_NAME}-executor"
    )
    loop.set_default_executor(executor)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                server = loop.run_until_complete(
                    start_http_server(
                        addr=addr,
                        port=port,
                        ssl_ctx=ssl_ctx,
                        service_discovery=service_discovery,
                        registry=registry,
                        basic_auth_users=basic_auth_users,
                        bearer_token=bearer_token,
                        idle_timeout=idle_timeout,
                        header_timeout=header_timeout,
                        render_timeout=render_timeout,
                        write_timeout=write_timeout,
                    )
                )
            except BaseException as error:  # noqa: BLE001 -- handed over
                started.set_exception(error)
                return
            started.set_result(server)
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                _shut_down(executor)

    thread = threading.Thread(target=run, name=_THREAD_NAME, daemon=True)
    thread.start()
    try:
        server = started.result()
    except BaseException:
        if started.done() and started.exception() is not None:
            thread.join()  # the start failed: the thread is ending
        else:
            # Interrupted while the server starts (Ctrl-C): let it come up,
            # then close it, so that its thread ends instead of serving on.
            started.add_done_callback(
                lambda done: _close_once_started(done, loop)
            )
        raise
    return ThreadedMetricsHTTPServer(server, loop, thread)


def _shut_down(executor: concurrent.futures.Executor) -> None:
    # Waits for the jobs of the loop's default executor, as the loop's
    # shutdown_default_executor() does, but not for one that hangs.
    waiting = threading.Thread(
        target=executor.shutdown,
        kwargs={"cancel_futures": True},
        name=f"{_THREAD_NAME}-closing",
        daemon=True,
    )
    waiting.start()
    waiting.join(_SHUTDOWN_TIMEOUT)


def _close_once_started(
    started: concurrent.futures.Future[MetricsHTTPServer],
    loop: asyncio.AbstractEventLoop,
) -> None:
    if started.exception() is not None:
        return

    async def close_and_stop() -> None:
        try:
            await started.result().close()
        finally:
            loop.stop()

    asyncio.run_coroutine_threadsafe(close_and_stop(), loop)
