"""Tests for prom_async.aio.web: the aiohttp metrics exporter."""

from __future__ import annotations

import asyncio
import base64
import errno
import gzip
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, ClassVar

import aiohttp
import bcrypt
import pytest

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, MultiDict
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families,
)
from prometheus_client.parser import (
    text_string_to_metric_families as text_prometheus_families,
)

from fixtures_servers import PASSWORD, PROMETHEUS_2_42_ACCEPT, TLSContexts
from prom_async.aio import _web_handler, _web_server
from prom_async.aio import web as aio_web
from prom_async.aio.web import (
    MetricsHTTPServer,
    Socket,
    ThreadedMetricsHTTPServer,
    add_metrics_route,
    metrics_handler,
    server_stats,
    start_http_server,
    start_http_server_in_thread,
)


TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_FORMAT = (
    "application/openmetrics-text; version=1.0.0; charset=utf-8"
)
PLAIN = {"Accept-Encoding": "identity"}
TOKEN = "s3cr3t-t0ken"
LOOPBACK = "127.0.0.1"


@pytest.fixture
def populated(registry: CollectorRegistry) -> CollectorRegistry:
    """
    The per-test registry with a counter, a gauge and a histogram.
    """
    Counter("jobs", "Jobs done.", ["queue"], registry=registry).labels(
        "mail"
    ).inc(3)
    Gauge("temperature_celsius", "Temperature.", registry=registry).set(21.5)
    Histogram("latency_seconds", "Latency.", registry=registry).observe(0.2)
    return registry


def basic(user: str, password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", **PLAIN}


async def get(
    http: aiohttp.ClientSession,
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, bytes]:
    async with http.request(
        method,
        url,
        headers=PLAIN if headers is None else headers,
        allow_redirects=False,
        **kwargs,
    ) as response:
        return response.status, response.headers, await response.read()


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """
    Serve *app* on loopback; yield its root URL.
    """
    server = TestServer(app, host=LOOPBACK)
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


class FakeDiscovery:
    """
    A service discovery that records what happens, as seen by the server.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        fail: bool = False,
        handle: Callable[[], Awaitable[None]] | None = None,
        deregister_fails: bool = False,
    ) -> None:
        self.http = http
        self.fail = fail
        self.handle = handle
        self.deregister_fails = deregister_fails
        self.events: list[tuple[str, int]] = []
        self.registered: MetricsHTTPServer | None = None

    async def register(
        self, metrics_server: MetricsHTTPServer
    ) -> Callable[[], Awaitable[None]] | None:
        status, _, _ = await get(self.http, metrics_server.url)
        self.events.append(("register", status))
        self.registered = metrics_server
        if self.fail:
            raise RuntimeError("the agent is down")
        if self.handle is not None:
            return self.handle

        async def deregister() -> None:
            assert self.registered is not None
            status, _, _ = await get(self.http, self.registered.url)
            self.events.append(("deregister", status))
            if self.deregister_fails:
                raise RuntimeError("the agent went away")

        return deregister


class TestStartHTTPServer:
    async def test_serves_the_registry(self, populated, http):
        """GET /metrics answers the registry in the text format."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            status, headers, body = await get(http, server.metrics_url)

        assert 200 == status
        assert TEXT_FORMAT == headers["Content-Type"]
        assert 'jobs_total{queue="mail"} 3.0' in body.decode()
        assert "temperature_celsius 21.5" in body.decode()

    async def test_attributes(self, registry):
        """socket, url and metrics_url describe where it listens."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            port = server.socket.port

            assert isinstance(server, MetricsHTTPServer)
            assert Socket(LOOPBACK, port) == server.socket
            assert 0 != port
            assert f"http://{LOOPBACK}:{port}/" == server.url
            assert "/metrics" == server.metrics_path
            assert f"http://{LOOPBACK}:{port}/metrics" == server.metrics_url
            assert f"<MetricsHTTPServer {server.url}>" == repr(server)
            assert (False, False, False) == (
                server.https,
                server.requires_auth,
                server.is_registered,
            )

    async def test_given_port(self, registry, http):
        """A given port is the one it listens on."""
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
        async with await start_http_server(
            addr=LOOPBACK, port=port, registry=registry
        ) as server:
            status, _, _ = await get(http, server.metrics_url)

        assert (port, 200) == (server.socket.port, status)

    async def test_ipv6_url_is_bracketed(self, registry, http):
        """An IPv6 address appears bracketed in the URL, which works."""
        async with await start_http_server(
            addr="::1", registry=registry
        ) as server:
            status, _, _ = await get(http, server.metrics_url)

        assert f"http://[::1]:{server.socket.port}/" == server.url
        assert 200 == status

    async def test_wildcard_address_gives_a_loopback_url(self, registry, http):
        """Listening on all interfaces gives one port and a URL that works."""
        async with await start_http_server(registry=registry) as server:
            status, _, _ = await get(http, server.metrics_url)
            ports = {bound.port for bound in server.sockets}

        assert f"http://127.0.0.1:{server.socket.port}/" == server.url
        assert 200 == status
        assert {server.socket.port} == ports

    async def test_metrics_with_and_without_slash(self, populated, http):
        """/metrics and /metrics/ both answer 200, without a redirect."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            bare = await get(http, server.metrics_url)
            slash = await get(http, server.metrics_url + "/")

        assert (200, 200) == (bare[0], slash[0])
        assert bare[2] == slash[2]

    async def test_landing_page(self, registry, http):
        """/ answers a small HTML page that links to /metrics."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            status, headers, body = await get(http, server.url)

        assert 200 == status
        assert headers["Content-Type"].startswith("text/html")
        assert 'href="/metrics"' in body.decode()

    async def test_unknown_path_is_404(self, registry, http):
        """Paths other than /, /metrics and /metrics/ are not found."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            status, _, _ = await get(http, server.url + "metricsz")

        assert 404 == status

    async def test_head(self, populated, http):
        """HEAD answers the headers of GET without a body."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            _, got_headers, got_body = await get(http, server.metrics_url)
            status, headers, body = await get(
                http, server.metrics_url, method="HEAD"
            )

        assert (200, b"") == (status, body)
        assert got_headers["Content-Type"] == headers["Content-Type"]
        assert str(len(got_body)) == headers["Content-Length"]

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    async def test_other_methods_are_405(self, registry, http, method):
        """Methods other than GET and HEAD get 405 with Allow."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            status, headers, _ = await get(
                http, server.metrics_url, method=method
            )

        assert 405 == status
        assert {"GET", "HEAD"} == set(headers["Allow"].split(","))

    async def test_openmetrics(self, populated, http):
        """Accept: OpenMetrics gets OpenMetrics, which parses strictly."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            status, headers, body = await get(
                http,
                server.metrics_url,
                headers={
                    "Accept": "application/openmetrics-text",
                    **PLAIN,
                },
            )

        families = {
            family.name: family
            for family in text_string_to_metric_families(body.decode())
        }
        assert (200, OPENMETRICS_FORMAT) == (status, headers["Content-Type"])
        assert 3.0 == families["jobs"].samples[0].value

    async def test_prometheus_2_42_accept_header(self, populated, http):
        """The exact Accept header of Prometheus 2.42 gets OpenMetrics."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            _, headers, body = await get(
                http,
                server.metrics_url,
                headers={"Accept": PROMETHEUS_2_42_ACCEPT, **PLAIN},
            )

        assert (
            choose_encoder(PROMETHEUS_2_42_ACCEPT)[1]
            == (headers["Content-Type"])
        )
        assert headers["Content-Type"].startswith(OPENMETRICS_FORMAT)
        assert body.endswith(b"# EOF\n")

    async def test_gzip(self, populated, http):
        """A client that accepts gzip gets the same body, compressed."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            _, plain_headers, plain = await get(http, server.metrics_url)
            _, headers, compressed = await get(
                http,
                server.metrics_url,
                headers={"Accept-Encoding": "gzip"},
            )

        assert "Content-Encoding" not in plain_headers
        assert "gzip" == headers["Content-Encoding"]
        assert "Accept-Encoding" in headers["Vary"]
        assert _without_created(plain) == _without_created(
            gzip.decompress(compressed)
        )

    async def test_name_filter(self, populated, http):
        """name[] parameters restrict the answer to those series."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            _, _, body = await get(
                http,
                server.metrics_url,
                params=[
                    ("name[]", "temperature_celsius"),
                    ("name[]", "jobs_total"),
                ],
            )

        assert {"temperature_celsius", "jobs_total"} == series_names(body)

    async def test_global_registry_by_default(self, http):
        """Without registry=, the global registry is served."""
        async with await start_http_server(addr=LOOPBACK) as server:
            _, _, body = await get(http, server.metrics_url)

        assert b"python_info" in body

    async def test_multiprocess_registry(self, registry, http, tmp_path):
        """A registry with a multiprocess collector serves every process."""
        for value in (2, 3):
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    (
                        "from prometheus_client import Counter;"
                        f"Counter('forks', 'Forks.').inc({value})"
                    ),
                ],
                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
                check=True,
            )
        MultiProcessCollector(registry, path=str(tmp_path))

        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            _, _, body = await get(http, server.metrics_url)

        assert "forks_total 5.0" in body.decode()

    async def test_collector_error_is_500(self, registry, http, caplog):
        """A collector that raises gets 500 and a logged traceback."""

        class Broken:
            def collect(self) -> list[Any]:
                raise RuntimeError("sensor unplugged")

        registry.register(Broken())  # type: ignore[arg-type]
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            status, _, _ = await get(http, server.metrics_url)

        assert 500 == status
        assert "sensor unplugged" in caplog.text

    async def test_tls(self, populated, http, tls: TLSContexts):
        """With ssl_ctx it serves HTTPS and says so."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated, ssl_ctx=tls.server
        ) as server:
            status, _, body = await get(
                http, server.metrics_url, ssl=tls.client
            )

        assert server.https
        assert server.url.startswith("https://127.0.0.1:")
        assert 200 == status
        assert b"temperature_celsius 21.5" in body

    async def test_port_in_use(self, registry):
        """A port that is taken raises OSError."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            with pytest.raises(OSError, match="in use"):
                await start_http_server(
                    addr=LOOPBACK, port=server.socket.port, registry=registry
                )

    async def test_ephemeral_port_taken_elsewhere_is_retried(
        self, registry, monkeypatch
    ):
        """When a later address cannot have the first one's ephemeral port,
        binding starts over, and gives up after a few attempts."""
        attempts = []
        bind_all = _web_server._bind_all

        async def counting(*args: Any) -> Any:
            attempts.append(args[1])
            return await bind_all(*args)

        async def twice(addr: str, port: int) -> list[str]:
            return [LOOPBACK, LOOPBACK]

        monkeypatch.setattr(_web_server, "_listen_addresses", twice)
        monkeypatch.setattr(_web_server, "_bind_all", counting)

        with pytest.raises(OSError, match="in use"):
            await start_http_server(registry=registry)

        assert 5 == len(attempts)

    async def test_unavailable_address_is_skipped(
        self, registry, http, monkeypatch, caplog
    ):
        """An address of the name that this host cannot listen on (here
        TEST-NET-1, not assigned) is skipped once one address listens."""

        async def with_a_foreign_address(addr: str, port: int) -> list[str]:
            return [LOOPBACK, "192.0.2.1"]

        monkeypatch.setattr(
            _web_server, "_listen_addresses", with_a_foreign_address
        )
        caplog.set_level(logging.DEBUG, logger="prom_async.aio.web")

        async with await start_http_server(registry=registry) as server:
            status, _, _ = await get(http, server.metrics_url)

        assert (Socket(LOOPBACK, server.socket.port),) == server.sockets
        assert 200 == status
        ((skipped, error),) = [
            record.args
            for record in caplog.records
            if record.name == "prom_async.aio.web"
            and record.msg == "not listening on %s: %s"
        ]
        assert ("192.0.2.1", errno.EADDRNOTAVAIL) == (skipped, error.errno)

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"addr": 127}, TypeError, "addr must be a string, not int"),
            ({"port": "80"}, TypeError, "port must be an integer, not str"),
            ({"port": True}, TypeError, "port must be an integer, not bool"),
            ({"port": 65536}, ValueError, "port must be in 0..65535, not"),
            ({"port": -1}, ValueError, "port must be in 0..65535, not -1"),
            ({"ssl_ctx": "cert.pem"}, TypeError, "ssl_ctx must be an ssl"),
            (
                {"service_discovery": object()},
                TypeError,
                "service_discovery must have an async register",
            ),
            ({"registry": {}}, TypeError, "registry must be a prometheus"),
            ({"bearer_token": ""}, ValueError, "bearer_token must be non-"),
            ({"bearer_token": 42}, TypeError, "bearer_token must be a str"),
            (
                {"basic_auth_users": {"admin": "plain"}},
                ValueError,
                "must be a bcrypt hash",
            ),
        ],
    )
    async def test_bad_options(self, options, error, message):
        """Options of the wrong type or value are refused at once, saying
        which."""
        with pytest.raises(error, match=re.escape(message)):
            await start_http_server(**{"addr": LOOPBACK, **options})

    async def test_client_tls_context_is_refused(self):
        """A client-side TLS context is refused with a clear message."""
        client = ssl.create_default_context()

        with pytest.raises(ValueError, match="client context"):
            await start_http_server(addr=LOOPBACK, ssl_ctx=client)

    async def test_close_stops_serving(self, registry, http):
        """After close(), the port refuses connections; closing again is a
        no-op."""
        server = await start_http_server(addr=LOOPBACK, registry=registry)
        await server.close()
        await server.close()

        with pytest.raises(aiohttp.ClientConnectionError):
            await get(http, server.metrics_url)

    async def test_concurrent_scrapes(self, populated, http):
        """Many scrapes at once all get the whole registry."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated
        ) as server:
            answers = await asyncio.gather(
                *(get(http, server.metrics_url) for _ in range(32))
            )

        assert {200} == {status for status, _, _ in answers}
        assert all(b"# HELP jobs_total" in body for _, _, body in answers)


def series_names(body: bytes | None) -> set[str]:
    """
    The names of the samples in a text exposition.
    """
    assert body is not None
    return {
        line.split("{")[0].split(" ")[0]
        for line in body.decode().splitlines()
        if not line.startswith("#")
    }


def _without_created(body: bytes) -> list[bytes]:
    """
    The lines of *body* minus _created samples, which carry timestamps.
    """
    return [line for line in body.splitlines() if b"_created" not in line]


class TestServiceDiscovery:
    async def test_registers_after_listening(self, registry, http):
        """register() gets the server, which already answers."""
        discovery = FakeDiscovery(http)
        async with await start_http_server(
            addr=LOOPBACK, registry=registry, service_discovery=discovery
        ) as server:
            assert server is discovery.registered
            assert server.is_registered

        assert [("register", 200), ("deregister", 200)] == discovery.events
        assert not server.is_registered

    async def test_register_failure_serves_anyway(
        self, registry, http, caplog
    ):
        """A failing register() is logged; the server serves anyway."""
        discovery = FakeDiscovery(http, fail=True)
        async with await start_http_server(
            addr=LOOPBACK, registry=registry, service_discovery=discovery
        ) as server:
            status, _, _ = await get(http, server.metrics_url)

            assert not server.is_registered

        assert 200 == status
        assert "the agent is down" in caplog.text

    async def test_no_handle_is_not_registered(self, registry, http):
        """A register() that returns None leaves is_registered False."""

        class Declining:
            async def register(self, metrics_server: Any) -> None:
                return None

        async with await start_http_server(
            addr=LOOPBACK, registry=registry, service_discovery=Declining()
        ) as server:
            assert not server.is_registered

    async def test_handle_tells_is_registered(self, registry, http):
        """A handle's own is_registered attribute is what is reported."""

        class Retrying:
            is_registered = False

            async def __call__(self) -> None:
                return None

        handle = Retrying()
        async with await start_http_server(
            addr=LOOPBACK,
            registry=registry,
            service_discovery=FakeDiscovery(http, handle=handle),
        ) as server:
            before = server.is_registered
            handle.is_registered = True

            assert (False, True) == (before, server.is_registered)

    async def test_deregister_failure_still_closes(
        self, registry, http, caplog
    ):
        """A failing deregistration is logged and the server still stops."""
        discovery = FakeDiscovery(http, deregister_fails=True)
        server = await start_http_server(
            addr=LOOPBACK, registry=registry, service_discovery=discovery
        )
        await server.close()

        assert "the agent went away" in caplog.text
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(http, server.url)

    async def test_cancelled_registration_stops_the_server(
        self, registry, http
    ):
        """A start cancelled while registering leaves nothing listening."""
        registering = asyncio.Event()
        seen: list[MetricsHTTPServer] = []

        class Hanging:
            async def register(
                self, metrics_server: MetricsHTTPServer
            ) -> None:
                seen.append(metrics_server)
                registering.set()
                await asyncio.Event().wait()

        starting = asyncio.ensure_future(
            start_http_server(
                addr=LOOPBACK, registry=registry, service_discovery=Hanging()
            )
        )
        await registering.wait()
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

        with pytest.raises(aiohttp.ClientConnectionError):
            await get(http, seen[0].url)


class TestAuthentication:
    async def test_bearer_token(self, populated, http):
        """Only the right bearer token gets the metrics."""
        async with await start_http_server(
            addr=LOOPBACK, registry=populated, bearer_token=TOKEN
        ) as server:
            missing = await get(http, server.metrics_url)
            wrong = await get(
                http,
                server.metrics_url,
                headers={"Authorization": "Bearer nope", **PLAIN},
            )
            right = await get(
                http,
                server.metrics_url,
                headers={"Authorization": f"Bearer {TOKEN}", **PLAIN},
            )

        assert server.requires_auth
        assert (401, 401, 200) == (missing[0], wrong[0], right[0])
        assert 'Bearer realm="metrics"' == missing[1]["WWW-Authenticate"]
        assert b"temperature_celsius" in right[2]
        assert b"temperature_celsius" not in wrong[2]

    async def test_basic_auth(self, populated, http, password_hash):
        """Only a known user with the right password gets the metrics."""
        async with await start_http_server(
            addr=LOOPBACK,
            registry=populated,
            basic_auth_users={"prometheus": password_hash},
        ) as server:
            statuses = [
                (await get(http, server.metrics_url, headers=headers))[0]
                for headers in (
                    PLAIN,
                    basic("prometheus", "wrong"),
                    basic("stranger", PASSWORD),
                    {"Authorization": "Basic !!!not-base64", **PLAIN},
                    {"Authorization": "Basic " + "bm9jb2xvbg==", **PLAIN},
                    basic("prometheus", PASSWORD),
                    basic("prometheus", PASSWORD),
                )
            ]
            _, headers, _ = await get(http, server.metrics_url)

        assert [401, 401, 401, 401, 401, 200, 200] == statuses
        assert (
            'Basic realm="metrics", charset="UTF-8"'
            == headers["WWW-Authenticate"]
        )

    async def test_either_credential(self, populated, http, password_hash):
        """With both configured, either credential works; 401 offers both."""
        async with await start_http_server(
            addr=LOOPBACK,
            registry=populated,
            basic_auth_users={"prometheus": password_hash},
            bearer_token=TOKEN,
        ) as server:
            by_token = await get(
                http,
                server.metrics_url,
                headers={"Authorization": f"Bearer {TOKEN}", **PLAIN},
            )
            by_password = await get(
                http, server.metrics_url, headers=basic("prometheus", PASSWORD)
            )
            refused = await get(http, server.metrics_url)

        assert (200, 200, 401) == (by_token[0], by_password[0], refused[0])
        assert ["Basic", "Bearer"] == [
            challenge.split(" ")[0]
            for challenge in refused[1].getall("WWW-Authenticate")
        ]

    async def test_landing_page_needs_no_credential(self, registry, http):
        """/ answers without a credential, so health checks work."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry, bearer_token=TOKEN
        ) as server:
            status, _, _ = await get(http, server.url)

        assert 200 == status

    async def test_credentials_are_never_logged(
        self, registry, http, password_hash, caplog
    ):
        """Neither passwords nor tokens appear in any log record."""
        caplog.set_level(logging.DEBUG)
        async with await start_http_server(
            addr=LOOPBACK,
            registry=registry,
            basic_auth_users={"prometheus": password_hash},
            bearer_token=TOKEN,
        ) as server:
            for headers in (
                basic("prometheus", PASSWORD),
                basic("prometheus", "guess-" + PASSWORD),
                {"Authorization": f"Bearer {TOKEN}"},
                {"Authorization": f"Bearer x{TOKEN}"},
            ):
                await get(http, server.metrics_url, headers=headers)

        assert PASSWORD not in caplog.text
        assert TOKEN not in caplog.text
        assert password_hash not in caplog.text

    async def test_malformed_hash_is_refused(self, registry):
        """A hash bcrypt cannot read is refused at the start, naming the
        user only."""
        malformed = "$2b$04$" + 53 * "!"
        with pytest.raises(
            ValueError, match=r"basic_auth_users\['prometheus'\] must be"
        ) as raised:
            await start_http_server(
                addr=LOOPBACK,
                registry=registry,
                basic_auth_users={"prometheus": malformed},
            )

        assert malformed not in str(raised.value)

    async def test_long_password(self, registry, caplog):
        """A password longer than bcrypt's 72 bytes is checked on those 72,
        as exporter-toolkit does: it matches a hash of them, and a wrong one
        is refused without an error logged."""
        long_password = "p" * 72 + "beyond bcrypt"
        handler = metrics_handler(
            registry=registry,
            basic_auth_users={
                "prometheus": bcrypt.hashpw(
                    long_password[:72].encode(), bcrypt.gensalt(rounds=4)
                ).decode()
            },
        )

        statuses = [
            (
                await handler(
                    SimpleNamespace(headers=basic("prometheus", password))
                )
            ).status
            for password in (long_password, "q" + long_password)
        ]

        assert [200, 401] == statuses
        assert [] == [
            record
            for record in caplog.records
            if record.levelno >= logging.ERROR
        ]

    @pytest.mark.parametrize(
        ("users", "error"),
        [
            (["prometheus"], TypeError),
            ({}, ValueError),
            ({"": "$2b$04$" + 53 * "a"}, ValueError),
            ({"a:b": "$2b$04$" + 53 * "a"}, ValueError),
            ({"prometheus": "hunter2"}, ValueError),
            ({"prometheus": b"$2b$04$" + 53 * b"a"}, ValueError),
        ],
    )
    def test_bad_basic_auth_users(self, users, error):
        """Users must map non-empty names to bcrypt hashes."""
        with pytest.raises(error):
            metrics_handler(basic_auth_users=users)

    def test_plain_password_is_not_echoed(self):
        """The error for a plain password does not repeat it."""
        with pytest.raises(ValueError, match="bcrypt") as raised:
            metrics_handler(basic_auth_users={"prometheus": "hunter2"})

        assert "hunter2" not in str(raised.value)

    def test_missing_bcrypt(self, monkeypatch, password_hash):
        """Without bcrypt, basic auth says what to install."""
        monkeypatch.setitem(sys.modules, "bcrypt", None)

        with pytest.raises(ImportError, match=r"auth extra.*'bcrypt>=4'"):
            metrics_handler(basic_auth_users={"prometheus": password_hash})

    async def test_undecodable_credential_is_401(self, registry):
        """An Authorization header that is not UTF-8 is refused, not a 500."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry, bearer_token=TOKEN
        ) as server:
            reader, writer = await asyncio.open_connection(
                LOOPBACK, server.socket.port
            )
            writer.write(
                b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n"
                b"Authorization: Bearer \xff\xfe\r\n"
                b"Connection: close\r\n\r\n"
            )
            response = await reader.read()
            writer.close()
            await writer.wait_closed()

        assert b"HTTP/1.1 401 " == response[:13]

    @pytest.mark.parametrize(
        ("configured", "authorization"),
        [
            ("bearer", f"Basic {TOKEN}"),
            ("bearer", f"Digest {TOKEN}"),
            ("basic", f"Bearer {TOKEN}"),
        ],
        ids=["basic-for-bearer", "unknown-scheme", "bearer-for-basic"],
    )
    async def test_other_scheme_is_401(
        self, registry, password_hash, configured, authorization
    ):
        """A credential of a scheme that is not configured is refused."""
        options = {
            "bearer": {"bearer_token": TOKEN},
            "basic": {"basic_auth_users": {"prometheus": password_hash}},
        }[configured]
        handler = metrics_handler(registry=registry, **options)

        response = await handler(
            SimpleNamespace(headers={"Authorization": authorization})
        )

        assert 401 == response.status

    async def test_remembered_checks(
        self, registry, password_hash, monkeypatch
    ):
        """A successful check is remembered for each user: scrapes of three
        users cost three bcrypt checks."""
        checks = []
        checkpw = bcrypt.checkpw

        def counting(password: bytes, hashed: bytes) -> bool:
            checks.append(password)
            return checkpw(password, hashed)

        monkeypatch.setattr(bcrypt, "checkpw", counting)
        users = ("a", "b", "c")
        handler = metrics_handler(
            registry=registry,
            basic_auth_users=dict.fromkeys(users, password_hash),
        )

        statuses = [
            (
                await handler(SimpleNamespace(headers=basic(user, PASSWORD)))
            ).status
            for user in ("a", "a", "b", "c", "c", "a")
        ]

        assert [200] * 6 == statuses
        assert 3 == len(checks)

    def test_serves_from_a_named_daemon_thread(self, populated):
        """It serves a blocking client from its own daemon thread."""
        with start_http_server_in_thread(
            addr=LOOPBACK, registry=populated
        ) as server:
            with urllib.request.urlopen(server.metrics_url) as response:
                body = response.read().decode()

            assert isinstance(server, ThreadedMetricsHTTPServer)
            assert server.thread.daemon
            assert "prom_async-metrics-exporter" == server.thread.name
            assert server.thread.is_alive()

        assert "temperature_celsius 21.5" in body

    def test_attributes(self, registry):
        """It has the attributes of the in-loop server."""
        with start_http_server_in_thread(
            addr="::1", registry=registry, bearer_token=TOKEN
        ) as server:
            port = server.socket.port

            assert Socket("::1", port) == server.socket
            assert (Socket("::1", port),) == server.sockets
            assert f"http://[::1]:{port}/" == server.url
            assert f"http://[::1]:{port}/metrics" == server.metrics_url
            assert f"<ThreadedMetricsHTTPServer {server.url}>" == repr(server)
            assert "/metrics" == server.metrics_path
            assert (False, True, False) == (
                server.https,
                server.requires_auth,
                server.is_registered,
            )

    def test_close_ends_everything(self, registry):
        """close() stops the server, closes the loop, joins the thread;
        twice is fine."""
        server = start_http_server_in_thread(addr=LOOPBACK, registry=registry)
        server.close()
        server.close()

        assert not server.thread.is_alive()
        assert server._loop.is_closed()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(server.url, timeout=5)

    def test_concurrent_close(self, registry):
        """close() from several threads at once closes once."""
        server = start_http_server_in_thread(addr=LOOPBACK, registry=registry)
        closers = [threading.Thread(target=server.close) for _ in range(4)]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

        assert not server.thread.is_alive()

    def test_port_in_use_raises_in_caller(self, registry):
        """A port that is taken raises OSError in the calling thread."""
        with start_http_server_in_thread(
            addr=LOOPBACK, registry=registry
        ) as server:
            threads_before = set(threading.enumerate())
            with pytest.raises(OSError, match="in use"):
                start_http_server_in_thread(
                    addr=LOOPBACK, port=server.socket.port, registry=registry
                )

            assert threads_before == set(threading.enumerate())

    def test_bad_tls_context_raises_in_caller(self, registry):
        """A client TLS context raises ValueError in the calling thread."""
        with pytest.raises(ValueError, match="client context"):
            start_http_server_in_thread(
                addr=LOOPBACK, ssl_ctx=ssl.create_default_context()
            )

    def test_tls(self, populated, tls: TLSContexts):
        """With ssl_ctx it serves HTTPS."""
        with (
            start_http_server_in_thread(
                addr=LOOPBACK, registry=populated, ssl_ctx=tls.server
            ) as server,
            urllib.request.urlopen(
                server.metrics_url, context=tls.client
            ) as response,
        ):
            body = response.read()

        assert server.https
        assert b"temperature_celsius 21.5" in body

    def test_service_discovery(self, registry):
        """It registers in its own loop and deregisters on close()."""
        events: list[str] = []

        class Recording:
            async def register(
                self, metrics_server: MetricsHTTPServer
            ) -> Callable[[], Awaitable[None]]:
                events.append(f"register {metrics_server.socket.port}")

                async def deregister() -> None:
                    events.append("deregister")

                return deregister

        with start_http_server_in_thread(
            addr=LOOPBACK, registry=registry, service_discovery=Recording()
        ) as server:
            registered = server.is_registered

        assert registered
        assert [f"register {server.socket.port}", "deregister"] == events
        assert not server.is_registered

    def test_close_from_own_thread_is_refused(self, registry):
        """close() from the server's own loop raises RuntimeError."""
        with start_http_server_in_thread(
            addr=LOOPBACK, registry=registry
        ) as server:
            attempt = asyncio.run_coroutine_threadsafe(
                _close_in_loop(server), server._loop
            )

            with pytest.raises(RuntimeError, match="own thread"):
                attempt.result(timeout=30)

    def test_interrupted_start_stops_the_thread(self, registry):
        """Ctrl-C during the start: the server closes once up, thread ends."""
        discovery = SlowDiscovery()

        still_running = start_interrupted(registry, discovery)

        assert [] == still_running
        assert discovery.ports == discovery.closed

    def test_interrupted_start_that_fails(self, registry):
        """Ctrl-C during a start that then fails: the failed start cleans up
        after itself, and the thread ends."""
        discovery = SlowDiscovery(abort=True)

        still_running = start_interrupted(registry, discovery)

        assert [] == still_running
        assert [] == discovery.closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, discovery.ports[0]), 5).close()


class StartAbortedError(BaseException):
    """
    Ends a start the way only a BaseException can (not logged and served
    on, like an Exception from register()).
    """


class SlowDiscovery:
    """
    A discovery whose register() waits until released, then returns a
    deregisterer or, with *abort*, raises StartAbortedError.
    """

    def __init__(self, *, abort: bool = False) -> None:
        self.abort = abort
        self.registering = threading.Event()
        self.release = threading.Event()
        self.ports: list[int] = []
        self.closed: list[int] = []

    async def register(self, server: MetricsHTTPServer) -> Any:
        self.ports.append(server.socket.port)
        self.registering.set()
        await asyncio.to_thread(self.release.wait)
        if self.abort:
            raise StartAbortedError

        async def deregister() -> None:
            self.closed.append(server.socket.port)

        return deregister


def start_interrupted(
    registry: CollectorRegistry, discovery: SlowDiscovery
) -> list[threading.Thread]:
    """
    Start a threaded exporter, press Ctrl-C while *discovery* registers it,
    then let the registration finish; the exporter threads still alive
    after a while.
    """

    def interrupt_main_thread():
        discovery.registering.wait(timeout=30)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_main_thread)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            start_http_server_in_thread(
                addr=LOOPBACK, registry=registry, service_discovery=discovery
            )
    finally:
        discovery.release.set()
        interrupter.join()

    exporter_threads = [
        thread
        for thread in threading.enumerate()
        if thread.name == "prom_async-metrics-exporter"
    ]
    for thread in exporter_threads:
        thread.join(timeout=30)
    return [thread for thread in exporter_threads if thread.is_alive()]


async def _close_in_loop(server: ThreadedMetricsHTTPServer) -> None:
    server.close()


class TestAddMetricsRoute:
    async def test_mounts_any_registry(self, populated, http):
        """The registry is served at the path, with and without slash."""
        app = web.Application()
        add_metrics_route(app, "/internal/metrics", registry=populated)

        async with serving(app) as root:
            bare = await get(http, root + "internal/metrics")
            slash = await get(http, root + "internal/metrics/")
            posted = await get(http, root + "internal/metrics", method="POST")

        assert (200, 200, 405) == (bare[0], slash[0], posted[0])
        assert b"temperature_celsius 21.5" in bare[2]

    async def test_path_given_with_slash(self, populated, http):
        """A path given with a trailing slash serves both forms too."""
        app = web.Application()
        add_metrics_route(app, "/metrics/", registry=populated)

        async with serving(app) as root:
            bare = await get(http, root + "metrics")
            slash = await get(http, root + "metrics/")

        assert (200, 200) == (bare[0], slash[0])

    async def test_with_credentials(self, populated, http):
        """Credentials configured on the route are required."""
        app = web.Application()
        add_metrics_route(app, registry=populated, bearer_token=TOKEN)

        async with serving(app) as root:
            refused = await get(http, root + "metrics")
            allowed = await get(
                http,
                root + "metrics",
                headers={"Authorization": f"Bearer {TOKEN}", **PLAIN},
            )

        assert (401, 200) == (refused[0], allowed[0])

    @pytest.mark.parametrize("path", ["metrics", "/", "//", ""])
    def test_bad_path(self, path):
        """A path that is not below / is refused."""
        with pytest.raises(ValueError, match="path"):
            add_metrics_route(web.Application(), path)

    def test_path_not_a_string(self):
        """A path that is not a string is a TypeError."""
        with pytest.raises(TypeError, match="path"):
            add_metrics_route(web.Application(), b"/metrics")  # type: ignore[arg-type]


class TestMetricsHandler:
    async def test_is_an_aiohttp_handler(self, populated, http):
        """The handler serves its registry under any route."""
        app = web.Application()
        handler = metrics_handler(registry=populated)
        app.router.add_get("/stats", handler)

        async with serving(app) as root:
            status, headers, body = await get(
                http, root + "stats", headers={"Accept-Encoding": "gzip"}
            )

        assert (200, "gzip") == (status, headers["Content-Encoding"])
        assert b"temperature_celsius 21.5" in gzip.decompress(body)

    def test_bad_registry(self):
        """A registry that is not a CollectorRegistry is refused."""
        with pytest.raises(TypeError, match="CollectorRegistry"):
            metrics_handler(registry=object())  # type: ignore[arg-type]

    async def test_stand_in_headers_match_any_case(self, populated):
        """A stand-in's plain dict of headers is read case-insensitively."""
        handler = metrics_handler(registry=populated)

        response = await handler(
            SimpleNamespace(
                headers={
                    "accept": "application/openmetrics-text; version=1.0.0",
                    "ACCEPT-ENCODING": "gzip",
                }
            )
        )

        assert response.body is not None
        assert (
            200,
            "application/openmetrics-text",
            "gzip",
        ) == (
            response.status,
            response.headers["Content-Type"].split(";")[0],
            response.headers["Content-Encoding"],
        )
        assert gzip.decompress(response.body).endswith(b"# EOF\n")

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (
                MultiDict(
                    [
                        ("name[]", "jobs_total"),
                        ("name[]", "temperature_celsius"),
                    ]
                ),
                {"jobs_total", "temperature_celsius"},
            ),
            ({"name[]": "jobs_total"}, {"jobs_total"}),
            (
                {"name[]": ["jobs_total", "temperature_celsius"]},
                {"jobs_total", "temperature_celsius"},
            ),
            ({}, None),
            (None, None),
            (object(), None),
        ],
        ids=["multidict", "str", "list", "empty", "none", "not-a-mapping"],
    )
    async def test_stand_in_query(self, populated, query, expected):
        """A stand-in's query, a multidict or a mapping, picks the series;
        no query, or one that is not a mapping, means all of them."""
        handler = metrics_handler(registry=populated)
        everything = series_names(
            (await handler(SimpleNamespace(headers={}))).body
        )

        response = await handler(SimpleNamespace(headers={}, query=query))

        assert (expected or everything) == series_names(response.body)

    async def test_stand_in_credentials(self, populated):
        """A stand-in's Authorization header is checked like a request's."""
        handler = metrics_handler(registry=populated, bearer_token=TOKEN)

        refused = await handler(SimpleNamespace(headers={}))
        allowed = await handler(
            SimpleNamespace(headers={"authorization": f"Bearer {TOKEN}"})
        )

        assert (401, 'Bearer realm="metrics"', 200) == (
            refused.status,
            refused.headers["WWW-Authenticate"],
            allowed.status,
        )

    async def test_headers_not_a_mapping(self, populated):
        """A stand-in whose headers are not a mapping is a TypeError that
        says so."""
        handler = metrics_handler(registry=populated)

        with pytest.raises(
            TypeError,
            match=r"^request\.headers must be a mapping of header names to "
            r"values, not list$",
        ):
            await handler(SimpleNamespace(headers=["Accept: text/plain"]))


@pytest.fixture
def global_gauge() -> Iterator[str]:
    """
    A gauge set to 7 in the global registry, for this test only; its name.
    """
    name = "prom_async_test_server_stats"
    gauge = Gauge(name, "Set by a test.", registry=None)
    gauge.set(7)
    REGISTRY.register(gauge)
    try:
        yield name
    finally:
        REGISTRY.unregister(gauge)


def parsed_family(body: bytes, content_type: str, name: str) -> Metric:
    """
    The family *name* in *body*, parsed as its content type says.
    """
    text = body.decode()
    if content_type.startswith("application/openmetrics-text"):
        families = text_string_to_metric_families(text)
    else:
        families = text_prometheus_families(text)
    (family,) = (family for family in families if family.name == name)
    return family


class TestServerStats:
    async def test_serves_the_global_registry(self, http, global_gauge):
        """server_stats serves the global registry where it is mounted."""
        app = web.Application()
        app.router.add_get("/metrics", server_stats)
        async with serving(app) as root:
            status, _, body = await get(http, root + "metrics")

        assert 200 == status
        assert f"{global_gauge} 7.0".encode() in body

    async def test_stand_in_with_only_headers(self, global_gauge):
        """Called with an object that has only headers, as users' unit
        tests do, it answers like a GET without a query."""

        class StandIn:
            headers: ClassVar = {}

        response = await server_stats(StandIn())

        assert (200, TEXT_FORMAT) == (
            response.status,
            response.headers["Content-Type"],
        )
        assert response.body is not None
        assert f"{global_gauge} 7.0" in response.body.decode()

    @pytest.mark.parametrize(
        "accept",
        [
            None,
            "application/openmetrics-text; version=1.0.0",
            PROMETHEUS_2_42_ACCEPT,
        ],
        ids=["no-accept", "openmetrics-1.0.0", "prometheus-2.42"],
    )
    async def test_like_prometheus_async(self, global_gauge, accept):
        """With prometheus-async's own stand-in (SimpleNamespace with a
        CIMultiDict), it answers in the format prometheus-async answers
        in, with the same samples."""
        theirs_web = pytest.importorskip("prometheus_async.aio.web")
        headers = (
            CIMultiDict() if accept is None else CIMultiDict(Accept=accept)
        )

        answers = [
            await handler(SimpleNamespace(headers=headers))
            for handler in (server_stats, theirs_web.server_stats)
        ]

        media_types = [
            answer.headers["Content-Type"].split(";")[0] for answer in answers
        ]
        ours, theirs = (
            parsed_family(
                answer.body, answer.headers["Content-Type"], global_gauge
            )
            for answer in answers
        )
        assert [200, 200] == [answer.status for answer in answers]
        assert media_types[1] == media_types[0]
        assert (theirs.type, theirs.documentation, theirs.samples) == (
            ours.type,
            ours.documentation,
            ours.samples,
        )

    async def test_one_endpoint_per_event_loop(self, global_gauge):
        """Calls in one event loop share one endpoint (and its caches); each
        loop has its own."""
        stand_in = SimpleNamespace(headers={})

        async def endpoint_used() -> object:
            await server_stats(stand_in)
            return _web_handler._server_stats_endpoints[
                asyncio.get_running_loop()
            ]

        first = await endpoint_used()
        second = await endpoint_used()
        other_loop = await asyncio.to_thread(asyncio.run, endpoint_used())

        assert first is second
        assert other_loop is not first


class TestExports:
    def test_all_is_complete(self):
        """__all__ lists exactly the public names of the module."""
        public = {
            name
            for name, value in vars(aio_web).items()
            if not name.startswith("_") and not isinstance(value, type(os))
        }

        assert public == set(aio_web.__all__)
