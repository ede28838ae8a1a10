"""
Fixtures around the Consul agent double.

- ``consul_double``: a started `consul_double.ConsulDouble` with default
  options (ACLs off, ``dc1``), stopped after the test.
- ``consul_double_factory``: ``await consul_double_factory(**options)``
  starts a double with `ConsulDouble` options (``acl_token=``,
  ``check_time_scale=``, ``reap_interval=``, ...); all are stopped after the
  test.
- ``fast_double``: a started double whose checks run 100 times faster than
  registered (``check_time_scale=0.01``).
- ``consul_env_cleared``: removes the ``CONSUL_HTTP_*`` variables that
  py-consul (and other Consul clients) would read instead of their
  arguments, so tests do not depend on the environment.
- ``py_consul_factory``: ``py_consul_factory(double, token=None)`` returns a
  py-consul asyncio client (`consul.aio.Consul`) pointed at *double*;
  every client is closed after the test.
- ``victoria_metrics_factory``: ``await victoria_metrics_factory(config)``
  starts Debian's VictoriaMetrics with *config* as its
  ``-promscrape.config`` (see `victoria_metrics.VictoriaMetrics`); all are
  stopped after the test.
- ``StubServer`` (with ``Bound``): the attributes of a metrics server that
  ``ConsulAgent`` reads, for registering without serving.
"""

from __future__ import annotations

import logging
import warnings

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import consul.aio
import pytest

from consul_double import ConsulDouble
from victoria_metrics import VictoriaMetrics


__all__ = [
    "CONSUL_ENVIRONMENT",
    "Bound",
    "ConsulDoubleFactory",
    "PyConsulFactory",
    "StubServer",
    "VictoriaMetricsFactory",
    "consul_double",
    "consul_double_factory",
    "consul_env_cleared",
    "fast_double",
    "py_consul_factory",
    "victoria_metrics_factory",
]

CONSUL_ENVIRONMENT = (
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_HTTP_AUTH",
    "CONSUL_CACERT",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
)


class Bound(NamedTuple):
    addr: str
    port: int


@dataclass
class StubServer:
    """
    The attributes of a metrics server that ConsulAgent reads.
    """

    socket: Bound = field(default_factory=lambda: Bound("127.0.0.1", 9100))
    https: bool = False
    metrics_path: str = "/metrics"
    requires_auth: bool = False


class ConsulDoubleFactory(Protocol):
    """
    Starts a `ConsulDouble` with the given constructor options.
    """

    def __call__(self, **options: Any) -> Awaitable[ConsulDouble]: ...


class PyConsulFactory(Protocol):
    """
    Makes a py-consul asyncio client for a double.
    """

    def __call__(
        self, double: ConsulDouble, token: str | None = None
    ) -> consul.aio.Consul: ...


class VictoriaMetricsFactory(Protocol):
    """
    Starts VictoriaMetrics with a ``-promscrape.config`` text.
    """

    def __call__(
        self, scrape_config: str, *extra_flags: str
    ) -> Awaitable[VictoriaMetrics]: ...


@pytest.fixture
async def consul_double_factory() -> AsyncIterator[ConsulDoubleFactory]:
    """
    Start Consul doubles with options; stop them all after the test.
    """
    started: list[ConsulDouble] = []

    async def start(**options: Any) -> ConsulDouble:
        double = ConsulDouble(**options)
        await double.start()
        started.append(double)
        return double

    yield start
    for double in reversed(started):
        await double.stop()


@pytest.fixture
async def consul_double(
    consul_double_factory: ConsulDoubleFactory,
) -> ConsulDouble:
    """
    A started Consul double with default options.
    """
    return await consul_double_factory()


@pytest.fixture
async def fast_double(
    consul_double_factory: ConsulDoubleFactory,
) -> ConsulDouble:
    """
    A double whose checks run 100 times faster than registered.
    """
    return await consul_double_factory(check_time_scale=0.01)


@pytest.fixture
def consul_env_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Remove the ``CONSUL_HTTP_*`` environment variables for this test.
    """
    for name in CONSUL_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def py_consul_factory(
    consul_env_cleared: None,
) -> AsyncIterator[PyConsulFactory]:
    """
    py-consul asyncio clients for doubles, closed after the test.
    """
    clients: list[consul.aio.Consul] = []

    def connect(
        double: ConsulDouble, token: str | None = None
    ) -> consul.aio.Consul:
        with warnings.catch_warnings():
            # py-consul 1.8 builds its aiohttp connector with the deprecated
            # ssl_context/verify_ssl arguments; that is not ours to fix.
            warnings.filterwarnings(
                "ignore",
                message="(ssl_context|verify_ssl) is deprecated",
                category=DeprecationWarning,
            )
            client = consul.aio.Consul(
                host=double.host, port=double.port, token=token
            )
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
async def victoria_metrics_factory(
    tmp_path: Path,
) -> AsyncIterator[VictoriaMetricsFactory]:
    """
    Start VictoriaMetrics processes; stop them all after the test.
    """
    started: list[VictoriaMetrics] = []

    async def start(scrape_config: str, *extra_flags: str) -> VictoriaMetrics:
        directory = tmp_path / f"victoria-metrics-{len(started)}"
        server = VictoriaMetrics(scrape_config, directory, extra_flags)
        started.append(server)
        await server.start()
        return server

    yield start
    for server in reversed(started):
        await server.stop()


def sd_log_records(
    caplog: pytest.LogCaptureFixture, level: int
) -> list[logging.LogRecord]:
    """
    What prom_async.aio.sd logged at *level*.
    """
    return [
        record
        for record in caplog.records
        if record.name == "prom_async.aio.sd" and record.levelno == level
    ]
