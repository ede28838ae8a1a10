"""
One exporter per prefork worker, started and stopped with the worker's
aiohttp application.
"""

from __future__ import annotations

import logging
import os
import ssl

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from ..types import ServiceDiscovery
from ._client_internals import values_are_local
from ._prefork_hooks import in_gunicorn, worker_slot
from ._prefork_options import ExporterOptions
from ._web_connections import DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT
from ._web_handler import DEFAULT_RENDER_TIMEOUT, DEFAULT_WRITE_TIMEOUT
from ._web_server import MetricsHTTPServer


__all__ = ["EXPORTER_KEY", "worker_exporter"]

log = logging.getLogger("prom_async.aio.prefork")

#: Where worker_exporter() keeps the worker's running exporter in the
#: application (documented in docs/prefork.rst).
EXPORTER_KEY: Final = web.AppKey("prom_async_exporter", MetricsHTTPServer)


def worker_exporter(
    *,
    base_port: int | None = None,
    addr: str = "",
    ssl_ctx: ssl.SSLContext | None = None,
    service_discovery: ServiceDiscovery | None = None,
    registry: CollectorRegistry = REGISTRY,
    basic_auth_users: Mapping[str, str] | None = None,
    bearer_token: str | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    render_timeout: float = DEFAULT_RENDER_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """
    An exporter of its own for each worker process that runs the
    application: append the result to the application's ``cleanup_ctx``.

    When the application starts (in each worker, after gunicorn forked it),
    :func:`~prom_async.aio.web.start_http_server` serves *registry* from the
    worker's event loop and announces it to *service_discovery*; when the
    application stops (the worker is shut down or restarted), the exporter
    deregisters and closes. The running server is ``app[EXPORTER_KEY]``.

    Args:
        base_port: ``None`` (the default) listens on a free port, different
            in each worker and after each restart: use it with service
            discovery. A port listens on ``base_port + worker_slot()``, the
            same for a worker and its replacement: use it with static
            scrape targets; it needs :class:`WorkerSlots` in the gunicorn
            configuration (outside gunicorn the slot is 0).
        addr: See :func:`~prom_async.aio.web.start_http_server`.
        ssl_ctx: See :func:`~prom_async.aio.web.start_http_server`.
        service_discovery: See
            :func:`~prom_async.aio.web.start_http_server`. With
            :class:`~prom_async.aio.sd.ConsulAgent`'s default service ID
            (``<name>-<hostname>-<port>``) each worker has an ID of its
            own.
        registry: The registry to serve: each worker serves its own copy.
        basic_auth_users: See
            :func:`~prom_async.aio.web.start_http_server`.
        bearer_token: See :func:`~prom_async.aio.web.start_http_server`.
        idle_timeout: See :func:`~prom_async.aio.web.start_http_server`.
        header_timeout: See :func:`~prom_async.aio.web.start_http_server`.
        render_timeout: See :func:`~prom_async.aio.web.start_http_server`.
        write_timeout: See :func:`~prom_async.aio.web.start_http_server`.

    Returns:
        A cleanup context, for ``app.cleanup_ctx.append(...)``. Starting it
        raises what
        :func:`~prom_async.aio.web.start_http_server` raises, and
        :exc:`RuntimeError` for a *base_port* in a gunicorn without
        :class:`WorkerSlots`.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option has a wrong value.

    .. versionadded:: 0.2.0
    """
    given: object = base_port
    if given is not None and (
        not isinstance(given, int) or isinstance(given, bool)
    ):
        raise TypeError(
            f"base_port must be an integer or None, not {type(given).__name__}"
        )
    if base_port is not None and not 1 <= base_port <= 65535:  # noqa: PLR2004 -- the TCP port range
        raise ValueError(f"base_port must be in 1..65535, not {base_port}")
    options = ExporterOptions(
        addr=addr,
        ssl_ctx=ssl_ctx,
        service_discovery=service_discovery,
        basic_auth_users=basic_auth_users,
        bearer_token=bearer_token,
        idle_timeout=idle_timeout,
        header_timeout=header_timeout,
        render_timeout=render_timeout,
        write_timeout=write_timeout,
    )
    options.check(base_port or 0, registry)

    async def exporter(app: web.Application) -> AsyncIterator[None]:
        port = 0 if base_port is None else base_port + _slot()
        if not values_are_local():
            log.warning(
                "PROMETHEUS_MULTIPROC_DIR is set: this worker's values are "
                "kept in its files and its exemplars are dropped; unset it "
                "for one exporter per worker"
            )
        server = await options.start(port, registry)
        app[EXPORTER_KEY] = server
        log.info(
            "worker %d serves its metrics at %s",
            os.getpid(),
            server.metrics_url,
        )
        try:
            yield
        finally:
            await server.close()

    return exporter


def _slot() -> int:
    slot = worker_slot()
    if slot is not None:
        return slot
    if in_gunicorn():
        raise RuntimeError(
            "worker_exporter(base_port=...) in a gunicorn worker needs the "
            "worker's slot: install WorkerSlots in the gunicorn "
            "configuration (WorkerSlots().install(globals()))"
        )
    return 0
