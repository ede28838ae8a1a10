"""
The exporter's scrape path against hostile clients and broken collectors:
Accept headers no library reads, collectors that hang or raise
``SystemExit``, and clients that never read their body.  Each test attacks
over loopback and asserts the bound it protects.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import socket
import threading

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from fixtures_servers import Serve, bad_timeouts, eventually
from prom_async.aio import _render, _render_lines, _web_handler
from prom_async.aio._auth import Authenticator, Verdict
from prom_async.aio._render_negotiation import negotiate
from prom_async.aio._web_body import CHUNK, SharedBody
from prom_async.aio._workers import RENDERS
from prom_async.aio.web import add_metrics_route, metrics_handler


LOOPBACK = "127.0.0.1"
PLAIN = {"Accept-Encoding": "identity"}
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
#: A guard against hangs: no answer here takes nearly as long.
GUARD = aiohttp.ClientTimeout(total=10)


class HungCollector:
    """
    A collector whose collect() waits until released, counting its calls.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        self.entered.set()
        self.release.wait(60)
        yield GaugeMetricFamily("hung", "Was hung.", value=self.calls)


class ExitingCollector:
    """
    A collector that raises *error* once, then works.
    """

    def __init__(self, error: BaseException) -> None:
        self.error: BaseException | None = error

    def collect(self) -> Iterator[Metric]:
        error, self.error = self.error, None
        if error is not None:
            raise error
        yield GaugeMetricFamily("survived", "Survived.", value=1)


class LargeCollector:
    """
    About *size* bytes of exposition that gzip does not shrink much.
    """

    def __init__(self, size: int) -> None:
        pieces = size // CHUNK + 1
        self.helps = [os.urandom(CHUNK // 2).hex() for _ in range(pieces)]

    def collect(self) -> Iterator[Metric]:
        for number, help_text in enumerate(self.helps):
            yield GaugeMetricFamily(f"large_{number}", help_text, value=1)


@pytest.fixture
def hung(registry: CollectorRegistry) -> Iterator[HungCollector]:
    """
    A `HungCollector` in the registry, released when the test ends, so
    that no thread is left waiting.
    """
    collector = HungCollector()
    registry.register(collector)  # type: ignore[arg-type]
    yield collector
    collector.release.set()


@pytest.fixture
def large(registry: CollectorRegistry) -> CollectorRegistry:
    """
    The registry, with 4 MB of exposition in it.
    """
    registry.register(LargeCollector(4 << 20))  # type: ignore[arg-type]
    return registry


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """
    Serve *app* on loopback as aiohttp does by default (handlers are not
    cancelled when their client leaves, unlike in aiohttp's TestServer);
    yield its root URL.
    """
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOOPBACK, 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


async def get(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    **kwargs: Any,
) -> tuple[int, Any, bytes]:
    async with http.request(
        method, url, headers={**PLAIN, **(headers or {})}, **kwargs
    ) as response:
        return response.status, response.headers, await response.read()


def told(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """
    What prom_async logged at WARNING or above.
    """
    return [
        record
        for record in caplog.records
        if record.name.startswith("prom_async")
        and record.levelno >= logging.WARNING
    ]


async def read_until_closed(client: socket.socket) -> tuple[int, bool]:
    """
    Read what *client* (non-blocking) gets until its peer has closed: the
    number of bytes, and whether the peer reset the connection.
    """
    loop = asyncio.get_running_loop()
    received = 0
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(client, 1 << 16), 10)
        except ConnectionResetError:
            return received, True
        if not data:
            return received, False
        received += len(data)


class TestHungCollector:
    async def test_scrape_gets_503_by_the_scrapers_deadline(
        self,
        serve: Serve,
        registry: CollectorRegistry,
        hung: HungCollector,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A scrape of a hung collector gets 503 by the scraper's timeout,
        with one warning naming the collector, no traceback; another
        registry and the application's to_thread() still answer."""
        hung_server = await serve(registry=registry)
        healthy = CollectorRegistry()
        Gauge("healthy", "Healthy.", registry=healthy).set(1)
        healthy_server = await serve(registry=healthy)

        status, _, body = await get(
            http,
            hung_server.metrics_url,
            {"X-Prometheus-Scrape-Timeout-Seconds": "0.5"},
            timeout=GUARD,
        )
        healthy_status, _, healthy_body = await get(
            http, healthy_server.metrics_url, timeout=GUARD
        )
        answered = await asyncio.wait_for(asyncio.to_thread(lambda: 1), 5)

        (warning,) = told(caplog)
        assert (503, b"Rendering the metrics took too long") == (
            status,
            body.split(b";")[0],
        )
        assert (200, b"healthy 1.0") == (
            healthy_status,
            healthy_body.splitlines()[2],
        )
        assert 1 == answered
        assert "test_hostile_scrapes.HungCollector" in warning.getMessage()
        assert object.__repr__(registry) in warning.getMessage()
        assert (logging.WARNING, None) == (warning.levelno, warning.exc_info)

    async def test_one_worker_however_the_scrapes_differ(
        self,
        registry: CollectorRegistry,
        hung: HungCollector,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Past its render timeout, a hung render is not repeated: scrapes
        of any format, encoding, name[] or version get 503 at once, one
        warning in all; one worker is taken; renders resume once it
        returns."""
        # Renders of earlier tests, released at their end, may be returning.
        await eventually(lambda: not RENDERS.busy, what="no render running")
        app = web.Application()
        add_metrics_route(app, registry=registry, render_timeout=0.2)
        async with serving(app) as root:
            url = root + "metrics"
            first, _, _ = await get(http, url, timeout=GUARD)
            stall = _render._stalls[registry]
            await eventually(lambda: stall.overdue, what="an overdue render")
            statuses = [first]
            for headers, query in (
                ({}, ""),
                ({"Accept-Encoding": "gzip"}, ""),
                ({}, "?name[]=hung"),
                ({"Accept": "application/openmetrics-text"}, ""),
                (
                    {"Accept": "application/openmetrics-text;version=1.0.0.7"},
                    "",
                ),
                ({"Accept": "text/plain;version=1.0.0"}, ""),
            ):
                status, _, _ = await get(http, url + query, headers)
                statuses.append(status)
            taken = RENDERS.busy
            hung.release.set()
            await eventually(lambda: not stall.overdue, what="it to return")
            after, _, body = await get(http, url, timeout=GUARD)

        assert [503] * 7 == statuses
        assert (1, 1) == (taken, len(told(caplog)))
        assert (200, b"hung 2.0") == (after, body.splitlines()[2])

    async def test_close_returns_with_a_render_stuck(
        self, serve: Serve, registry: CollectorRegistry, hung: HungCollector
    ) -> None:
        """A server closes while one of its renders is stuck."""
        server = await serve(registry=registry)
        async with aiohttp.ClientSession() as http:
            status, _, _ = await get(
                http,
                server.metrics_url,
                {"X-Prometheus-Scrape-Timeout-Seconds": "0.5"},
                timeout=GUARD,
            )

        await asyncio.wait_for(server.close(), 10)

        assert (503, True) == (status, hung.entered.is_set())


class TestRaisingCollector:
    @pytest.mark.parametrize(
        "error",
        [SystemExit(3), KeyboardInterrupt(), GeneratorExit()],
        ids=type,
    )
    async def test_base_exception_is_a_500_and_the_loop_lives(
        self,
        serve: Serve,
        registry: CollectorRegistry,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
        error: BaseException,
    ) -> None:
        """A collector raising SystemExit, KeyboardInterrupt or
        GeneratorExit gets a 500 and one logged error; the server's loop
        goes on and the next scrape is served."""
        registry.register(ExitingCollector(error))  # type: ignore[arg-type]
        server = await serve(registry=registry)

        first, _, _ = await get(http, server.metrics_url, timeout=GUARD)
        second, _, body = await get(http, server.metrics_url, timeout=GUARD)

        (logged,) = told(caplog)
        assert (500, 200, b"survived 1.0") == (
            first,
            second,
            body.splitlines()[2],
        )
        assert "collecting the metrics failed" == logged.getMessage()
        assert logged.exc_info is not None
        assert type(error) is type(logged.exc_info[1].__cause__)

    async def test_500_logs_the_collector_not_the_request(
        self,
        registry: CollectorRegistry,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A failing collector is one ERROR with its traceback, in which
        nothing the request carried appears."""
        registry.register(
            ExitingCollector(RuntimeError("sensor unplugged"))  # type: ignore[arg-type]
        )
        secrets = {
            "Authorization": "Bearer hunter2-token",
            "Cookie": "session=cookie-secret",
            "Accept": "application/openmetrics-text; version=1.0.x-secret",
            "X-Prometheus-Scrape-Timeout-Seconds": "9.5",
        }
        caplog.set_level(logging.DEBUG, logger="prom_async")
        app = web.Application()
        add_metrics_route(app, registry=registry)
        async with serving(app) as root:
            status, _, body = await get(
                http, root + "metrics?token=query-secret", secrets
            )

        (logged,) = told(caplog)
        handler = logging.Handler()
        handler.setFormatter(logging.Formatter())
        text = "\n".join(
            handler.format(record)
            for record in caplog.records
            if record.name.startswith("prom_async")
        )
        assert 500 == status
        assert b"Collecting the metrics failed; see the server's log.\n" == (
            body
        )
        assert (logging.ERROR, "collecting the metrics failed") == (
            logged.levelno,
            logged.getMessage(),
        )
        assert "RuntimeError: sensor unplugged" in text
        assert [] == [
            secret
            for secret in (
                "hunter2",
                "cookie-secret",
                "x-secret",
                "9.5",
                "query-secret",
            )
            if secret in text
        ]


class TestSlowReader:
    async def test_cut_off_after_the_write_timeout(
        self,
        large: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A client that reads nothing of a 4 MB body is cut off with a
        reset after the write timeout; the server buffers at most its
        transport's high-water mark and a chunk for it, and never writes
        more than a chunk at a time."""
        caplog.set_level(logging.DEBUG)
        transports: list[asyncio.Transport] = []
        tasks: list[asyncio.Task[None]] = []
        writes: list[int] = []
        buffered: list[int] = []

        @web.middleware
        async def spy(request: web.Request, handler: Any) -> Any:
            transport = request.transport
            assert isinstance(transport, asyncio.Transport)
            transports.append(transport)
            tasks.append(request.task)
            # What the kernel buffers is not the server's: kept small, so
            # that what the client got tells when it was cut off.
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16
            )
            write, writelines = transport.write, transport.writelines

            def recording_write(data: Any) -> None:
                writes.append(len(data))
                write(data)
                buffered.append(transport.get_write_buffer_size())

            def recording_writelines(chunks: Any) -> None:
                chunks = list(chunks)
                writes.append(sum(len(chunk) for chunk in chunks))
                writelines(chunks)
                buffered.append(transport.get_write_buffer_size())

            transport.write = recording_write  # type: ignore[method-assign]
            transport.writelines = recording_writelines  # type: ignore[method-assign]
            return await handler(request)

        app = web.Application(middlewares=[spy])
        add_metrics_route(app, registry=large, write_timeout=0.5)
        loop = asyncio.get_running_loop()
        async with serving(app) as root:
            port = int(root.rsplit(":", 1)[1].rstrip("/"))
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.setblocking(False)
                await loop.sock_connect(client, (LOOPBACK, port))
                await loop.sock_sendall(
                    client,
                    b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n"
                    b"Accept-Encoding: identity\r\n\r\n",
                )
                await eventually(lambda: transports, what="the request")
                await eventually(
                    transports[0].is_closing,
                    what="the connection to be cut off",
                    timeout=10,
                )
                await eventually(tasks[0].done, what="the handler to end")
                received, reset = await read_until_closed(client)

        _, high_water = transports[0].get_write_buffer_limits()
        body_size = len(generate_latest(large))
        assert body_size > 4 << 20
        assert received < body_size // 2
        # A reset: the kernel drops what it still held to send.
        assert reset
        assert max(writes) <= CHUNK + 1024
        assert max(buffered) <= high_water + CHUNK + 1024
        assert [] == told(caplog)
        assert [] == [
            record
            for record in caplog.records
            if record.levelno > logging.DEBUG
            and record.name != "aiohttp.access"
        ]

    async def test_reader_gets_the_whole_body(
        self, large: CollectorRegistry, http: aiohttp.ClientSession
    ) -> None:
        """A client that reads gets every byte, its Content-Length, also
        gzipped; HEAD gets the length and no body."""
        expected = generate_latest(large)
        app = web.Application()
        add_metrics_route(app, registry=large, write_timeout=5)
        async with serving(app) as root:
            url = root + "metrics"
            status, headers, body = await get(http, url, timeout=GUARD)
            _, zipped_headers, zipped = await get(
                http, url, {"Accept-Encoding": "gzip"}, timeout=GUARD
            )
            _, head_headers, head_body = await get(
                http, url, method="HEAD", timeout=GUARD
            )

        assert (200, expected, str(len(expected))) == (
            status,
            body,
            headers["Content-Length"],
        )
        assert (TEXT_FORMAT, "gzip", str(len(zipped))) == (
            zipped_headers["Content-Type"],
            zipped_headers["Content-Encoding"],
            zipped_headers["Content-Length"],
        )
        assert len(zipped) > CHUNK
        assert expected == gzip.decompress(zipped)
        assert (b"", str(len(expected))) == (
            head_body,
            head_headers["Content-Length"],
        )

    async def test_stand_in_gets_bytes(self, large: CollectorRegistry) -> None:
        """A stand-in for a request gets the large body as bytes, and an
        aiohttp request a payload that reads as the same text."""
        handler = metrics_handler(registry=large)

        stand_in = await handler(SimpleNamespace(headers=PLAIN))  # type: ignore[arg-type]
        real = await handler(
            make_mocked_request("GET", "/metrics", headers=PLAIN)
        )

        assert isinstance(stand_in.body, bytes)
        assert isinstance(real.body, SharedBody)
        assert stand_in.body.decode() == real.text


class TestAcceptVersions:
    async def test_distinct_versions_keep_nothing_more(
        self,
        registry: CollectorRegistry,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """2,000 scrapes with distinct OpenMetrics versions are all
        OpenMetrics 1.0.0, probe one layout, and leave nothing behind."""
        monkeypatch.setattr(_render_lines, "_probed", {})
        Gauge("depth", "Depth.", registry=registry).set(3)
        endpoint = _web_handler.metrics_endpoint(
            registry=registry, basic_auth_users=None, bearer_token=None
        )
        app = web.Application()
        _web_handler.add_metrics_routes(app, "/metrics", endpoint)
        async with serving(app) as root:
            url = root + "metrics"
            types = set()
            for number in range(2000):
                status, headers, _ = await get(
                    http,
                    url,
                    {
                        "Accept": "application/openmetrics-text; "
                        f"version=1.0.0.{number}"
                    },
                )
                types.add((status, headers["Content-Type"].split(";")[1]))

        renderer = endpoint._renderer
        assert {(200, " version=1.0.0")} == types
        # None where the line encoder is off (prometheus_client 0.20).
        assert len(_render_lines._probed) <= 1
        assert ({}, None) == (renderer._waiting, renderer._running)
        assert len(renderer._lines._told) <= 1
        assert [] == told(caplog)

    def test_every_header_probes_few_layouts(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Whatever versions and escapings are asked for, the line encoder
        probes no more layouts than it keeps outcomes of."""
        monkeypatch.setattr(_render_lines, "_probed", {})
        lines = _render_lines.LineEncoder()
        escapings = ["allow-utf-8", "underscores", "dots", "values", "x"]
        versions = ["", "0.0.4", "1.0.0", "1.0.0.9", "1.9", "2.0.0", "3.1"]
        for media_type in ("application/openmetrics-text", "text/plain"):
            for version in versions:
                for escaping in escapings:
                    lines.layout(
                        negotiate(
                            f"{media_type}; version={version}; "
                            f"escaping={escaping}"
                        ).encoder
                    )

        assert len(_render_lines._probed) <= 12 < _render_lines._KEPT_LAYOUTS

    @pytest.mark.parametrize(
        "accept",
        [
            "application/openmetrics-text; version=1.0.x",
            "text/plain; version=abc",
            "application/openmetrics-text; version=" + "1" * 4400,
            "text/plain; version=" + "9" * 4400,
        ],
        ids=["1.0.x", "abc", "4400-digits", "text-4400-digits"],
    )
    async def test_unreadable_version_gets_text(
        self,
        registry: CollectorRegistry,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
        accept: str,
    ) -> None:
        """A version the library cannot read gets text 0.0.4 (before 0.24,
        it reads none and answers OpenMetrics), and no error."""
        Gauge("depth", "Depth.", registry=registry).set(3)
        try:
            encoder, content_type = choose_encoder(accept)
        except (TypeError, ValueError):
            encoder, content_type = generate_latest, TEXT_FORMAT
        app = web.Application()
        add_metrics_route(app, registry=registry)
        async with serving(app) as root:
            status, headers, body = await get(
                http, root + "metrics", {"Accept": accept}, timeout=GUARD
            )

        assert (200, content_type, encoder(registry)) == (
            status,
            headers["Content-Type"],
            body,
        )
        assert [] == told(caplog)

    async def test_readable_second_range_is_negotiated(
        self, registry: CollectorRegistry, http: aiohttp.ClientSession
    ) -> None:
        """A malformed first media range does not hide a readable second."""
        app = web.Application()
        add_metrics_route(app, registry=registry)
        async with serving(app) as root:
            _, headers, _ = await get(
                http,
                root + "metrics",
                {
                    "Accept": "application/openmetrics-text; version=1.0.x, "
                    "application/openmetrics-text; version=1.0.0"
                },
                timeout=GUARD,
            )

        assert headers["Content-Type"].startswith(
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        )


class TestCredentialVerdicts:
    @pytest.mark.parametrize(
        "refusal",
        [(Verdict.DENIED, 401, None), (Verdict.BUSY, 429, "1")],
        ids=["denied", "busy"],
    )
    async def test_refusals(
        self,
        registry: CollectorRegistry,
        http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch,
        refusal: tuple[Verdict, int, str | None],
    ) -> None:
        """A wrong credential gets 401; one the checks have no room for
        gets 429 with Retry-After: 1; both with the challenges."""
        verdict, status, retry_after = refusal

        async def deciding(_self: Authenticator, _header: object) -> Verdict:
            return verdict

        monkeypatch.setattr(Authenticator, "verdict", deciding)
        app = web.Application()
        add_metrics_route(app, registry=registry, bearer_token="s3cr3t")
        async with serving(app) as root:
            answered, headers, _ = await get(
                http,
                root + "metrics",
                {"Authorization": "Bearer guess"},
                timeout=GUARD,
            )

        assert (status, retry_after, ['Bearer realm="metrics"']) == (
            answered,
            headers.get("Retry-After"),
            headers.getall("WWW-Authenticate"),
        )


class TestRenderDeadline:
    @pytest.mark.parametrize(
        ("hooks_took", "header", "expected"),
        [
            (0.0, None, 10.0),
            (0.0, "bogus", 10.0),
            (0.0, "6", 5.75),
            (5.75, "6", 6.0),
            (3.0, "6", 5.75),
            (0.0, "0.2", 0.1),
            (0.1, "0.2", 0.2),
            (0.0, "30", 10.0),
            (9.9, "30", 10.0),
        ],
    )
    def test_rule(
        self, hooks_took: float, header: str | None, expected: float
    ) -> None:
        """The render ends by the render timeout, and by the scraper's
        timeout less its offset, as the hooks do; but after hooks that took
        that long, it still has the offset's share of the scraper's
        timeout."""
        started = 100.0

        deadline = _web_handler._render_deadline(
            started, started + hooks_took, header, 10.0
        )

        assert expected == pytest.approx(deadline - started)


class TestTimeoutOptions:
    def test_defaults(self) -> None:
        """The defaults are exported for the servers to share."""
        assert (10.0, 10.0) == (
            _web_handler.DEFAULT_RENDER_TIMEOUT,
            _web_handler.DEFAULT_WRITE_TIMEOUT,
        )

    @bad_timeouts("render_timeout", "write_timeout")
    def test_bad_values(
        self, options: dict[str, object], error: type[Exception], message: str
    ) -> None:
        """A timeout is a positive, finite number of seconds; the error
        names the option."""
        with pytest.raises(error) as by_handler:
            metrics_handler(**options)  # type: ignore[arg-type]
        with pytest.raises(error) as by_route:
            add_metrics_route(web.Application(), **options)  # type: ignore[arg-type]

        assert [message, message] == [
            str(by_handler.value),
            str(by_route.value),
        ]
