"""
The exporter options both prefork ways take, checked where they are given.
"""

from __future__ import annotations

import ssl

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from ..types import ServiceDiscovery
from ._auth import Authenticator
from ._web_server import MetricsHTTPServer, _validate, start_http_server


__all__ = ["ExporterOptions"]


@dataclass(frozen=True)
class ExporterOptions:
    """
    The options of :func:`~prom_async.aio.web.start_http_server` but the
    port and the registry, which each prefork way chooses.
    """

    addr: str
    ssl_ctx: ssl.SSLContext | None
    service_discovery: ServiceDiscovery | None
    basic_auth_users: Mapping[str, str] | None
    bearer_token: str | None
    idle_timeout: float
    header_timeout: float
    render_timeout: float
    write_timeout: float

    def check(self, port: int, registry: CollectorRegistry) -> None:
        """
        Raise what :func:`~prom_async.aio.web.start_http_server` would raise
        for these options, without starting anything.
        """
        _validate(
            self.addr,
            port,
            self.ssl_ctx,
            self.service_discovery,
            registry,
            idle_timeout=self.idle_timeout,
            header_timeout=self.header_timeout,
            render_timeout=self.render_timeout,
            write_timeout=self.write_timeout,
        )
        Authenticator(
            basic_auth_users=self.basic_auth_users,
            bearer_token=self.bearer_token,
        )

    async def start(
        self, port: int, registry: CollectorRegistry
    ) -> MetricsHTTPServer:
        """
        Start the exporter in the running loop.
        """
        return await start_http_server(
            addr=self.addr,
            port=port,
            ssl_ctx=self.ssl_ctx,
            service_discovery=self.service_discovery,
            registry=registry,
            basic_auth_users=self.basic_auth_users,
            bearer_token=self.bearer_token,
            idle_timeout=self.idle_timeout,
            header_timeout=self.header_timeout,
            render_timeout=self.render_timeout,
            write_timeout=self.write_timeout,
        )
