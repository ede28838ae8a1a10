"""
client_trace_config: metrics of the requests an aiohttp.ClientSession sends.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import re
import socket
import sys

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from aiohttp import web
from aiohttp.abc import AbstractResolver
from prometheus_client import REGISTRY, CollectorRegistry

from docs_pages import code_blocks
from fixtures_servers import DEADLINE, free_loopback_port
from prom_async.aio import _exemplars
from prom_async.aio._http_client import client_trace_config
from prom_async.aio.web import start_http_server


DURATION = "http_client_request_duration_seconds"
RESPONSE = "http_client_response_duration_seconds"
ACTIVE = "http_client_active_requests"
OPENED = "http_client_connections_opened_total"
REUSED = "http_client_connections_reused_total"
CONNECT = "http_client_connect_duration_seconds"
DNS = "dns_lookup_duration_seconds"


class Upstream:
    """
    A server on loopback whose slow handlers the test steers.

    ``/hang/{id}`` and ``/stream/{id}`` tell that they arrived
    (``arrived(id)``) and wait until ``release(id)``: ``/hang`` before it
    answers, ``/stream`` after the headers and a first chunk.
    """

    def __init__(self) -> None:
        self.url = ""
        self._arrived: dict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        self._released: dict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        app = web.Application()
        app.router.add_route("*", "/", self._hello)
        app.router.add_route("*", "/{path:.*}/hello", self._hello)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/hang/{id}", self._hang)
        app.router.add_get("/stream/{id}", self._stream)
        app.router.add_get("/drop", self._drop)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/ws", self._websocket)
        self.runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None
        )

    def __call__(self, path: str) -> str:
        return f"{self.url}{path}"

    async def arrived(self, key: str) -> None:
        await asyncio.wait_for(self._arrived[key].wait(), DEADLINE)

    def release(self, key: str) -> None:
        self._released[key].set()

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def _hang(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        self._arrived[key].set()
        await self._released[key].wait()
        return web.Response(text="late")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["id"]
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        self._arrived[key].set()
        await self._released[key].wait()
        await response.write(b"rest")
        await response.write_eof()
        return response

    async def _drop(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        raise asyncio.CancelledError

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/status/404")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0)
    await site.start()
    port = server.runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        for event in server._released.values():
            event.set()
        await server.runner.cleanup()


@pytest.fixture
def closed_port() -> int:
    """
    A loopback port nothing listens on: connections are refused.
    """
    return free_loopback_port()


@asynccontextmanager
async def session(
    registry: CollectorRegistry, **options: Any
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = options.pop("connector", None)
    config = client_trace_config(registry=registry, **options)
    async with aiohttp.ClientSession(
        trace_configs=[config], connector=connector
    ) as client:
        yield client


def samples(
    registry: CollectorRegistry, name: str
) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name
    ]


def total(registry: CollectorRegistry, name: str, **match: str) -> float:
    """
    The sum of *name*'s samples whose labels include *match*.
    """
    return sum(
        value
        for labels, value in samples(registry, name)
        if match.items() <= labels.items()
    )


def label_sets(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [labels for labels, _ in samples(registry, name)]


def counted(
    registry: CollectorRegistry, name: str = DURATION
) -> dict[tuple[str, str], float]:
    """
    The observations of a request histogram by status and error type.
    """
    found: dict[tuple[str, str], float] = collections.Counter()
    for labels, value in samples(registry, f"{name}_count"):
        key = (labels["http_response_status_code"], labels["error_type"])
        found[key] += value
    return {key: value for key, value in found.items() if value}


def server_labels(upstream: Upstream) -> dict[str, str]:
    return {
        "server_address": "127.0.0.1",
        "server_port": upstream.url.rpartition(":")[2],
    }


class TestRequestDuration:
    async def test_success(self, registry, upstream):
        """A response is one observation with its method, server, status."""
        async with (
            session(registry) as client,
            client.get(upstream("/")) as response,
        ):
            assert "hello" == await response.text()

        assert [
            {
                "http_request_method": "GET",
                **server_labels(upstream),
                "url_template": "",
                "http_response_status_code": "200",
                "error_type": "",
            }
        ] == label_sets(registry, f"{DURATION}_count")
        assert 0 < total(registry, f"{DURATION}_sum")

    async def test_error_statuses(self, registry, upstream):
        """A 4xx or 5xx response has its status as error_type."""
        async with session(registry) as client:
            for code in (404, 500, 503):
                async with client.get(upstream(f"/status/{code}")):
                    pass

        assert {
            ("404", "404"): 1,
            ("500", "500"): 1,
            ("503", "503"): 1,
        } == counted(registry)

    async def test_raise_for_status_records_the_response(
        self, registry, upstream
    ):
        """raise_for_status=True records the status the server sent."""
        async with session(registry) as client:
            with pytest.raises(aiohttp.ClientResponseError):
                await client.get(
                    upstream("/status/502"), raise_for_status=True
                )

        assert {("502", "502"): 1} == counted(registry)

    async def test_raised_by_a_check_of_its_own(self, registry, upstream):
        """A raise_for_status callable's own exception is its error."""

        async def check(response: aiohttp.ClientResponse) -> None:
            raise aiohttp.ClientResponseError(
                response.request_info, (), status=1000
            )

        async with session(registry) as client:
            with pytest.raises(aiohttp.ClientResponseError):
                await client.get(upstream("/"), raise_for_status=check)

        assert {("", "ClientResponseError"): 1} == counted(registry)

    async def test_unparsable_response(self, registry):
        """A response aiohttp cannot parse is an error, not a status."""

        async def answer(reader, writer) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: no\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with session(registry) as client:
                with pytest.raises(aiohttp.ClientResponseError):
                    await client.get(f"http://127.0.0.1:{port}/")
        finally:
            server.close()
            await server.wait_closed()

        assert {("", "ClientResponseError"): 1} == counted(registry)

    async def test_refused(self, registry, closed_port):
        """A refused connection is an error without status."""
        async with session(registry) as client:
            with pytest.raises(aiohttp.ClientConnectorError):
                await client.get(f"http://127.0.0.1:{closed_port}/")

        assert [
            {
                "http_request_method": "GET",
                "server_address": "127.0.0.1",
                "server_port": str(closed_port),
                "url_template": "",
                "http_response_status_code": "",
                "error_type": "ClientConnectorError",
            }
        ] == label_sets(registry, f"{DURATION}_count")

    async def test_timeouts(self, registry, upstream):
        """A timeout is recorded with the class aiohttp raised."""
        async with session(registry) as client:
            with pytest.raises(asyncio.TimeoutError):
                await client.get(
                    upstream("/hang/total"),
                    timeout=aiohttp.ClientTimeout(total=0.05),
                )
            with pytest.raises(aiohttp.ServerTimeoutError) as read:
                await client.get(
                    upstream("/hang/read"),
                    timeout=aiohttp.ClientTimeout(sock_read=0.05),
                )

        assert {
            ("", "TimeoutError"): 1,
            ("", type(read.value).__name__): 1,
        } == counted(registry)

    async def test_cancelled(self, registry, upstream):
        """A request cancelled while it waits is a CancelledError."""
        async with session(registry) as client:
            task = asyncio.create_task(client.get(upstream("/hang/c")))
            await upstream.arrived("c")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        assert {("", "CancelledError"): 1} == counted(registry)

    async def test_disconnected(self, registry, upstream):
        """A server that hangs up is a ServerDisconnectedError."""
        async with session(registry) as client:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await client.get(upstream("/drop"))

        assert {("", "ServerDisconnectedError"): 1} == counted(registry)

    async def test_invalid_url(self, registry):
        """A URL aiohttp refuses after the start is an error, no server."""
        async with session(registry) as client:
            with pytest.raises(aiohttp.InvalidURL):
                await client.get("http:///no-host")

        [labels] = label_sets(registry, f"{DURATION}_count")
        assert ("", "InvalidUrlClientError") == (
            labels["server_address"],
            labels["error_type"],
        )

    async def test_redirects_are_one_request(self, registry, upstream):
        """A redirect followed is one request, with the last status."""
        async with (
            session(registry) as client,
            client.get(upstream("/redirect")) as response,
        ):
            assert 404 == response.status

        assert {("404", "404"): 1} == counted(registry)

    async def test_methods(self, registry, upstream):
        """Known methods are themselves, others _OTHER."""
        async with session(registry) as client:
            for method in ("GET", "post", "PROPFIND", "HEAD", "PURGE"):
                async with client.request(method, upstream("/")):
                    pass

        by_method: collections.Counter[str] = collections.Counter()
        for labels, value in samples(registry, f"{DURATION}_count"):
            by_method[labels["http_request_method"]] += int(value)
        assert {"GET": 1, "POST": 1, "HEAD": 1, "_OTHER": 2} == by_method

    async def test_known_methods(self, registry, upstream):
        """known_methods= replaces the list of methods kept as they are."""
        async with session(registry, known_methods={"propfind"}) as client:
            for method in ("PROPFIND", "GET"):
                async with client.request(method, upstream("/")):
                    pass

        assert {"PROPFIND", "_OTHER"} == {
            labels["http_request_method"]
            for labels in label_sets(registry, f"{DURATION}_count")
        }

    async def test_known_methods_from_the_environment(
        self, registry, upstream, monkeypatch
    ):
        """OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS is the default list."""
        monkeypatch.setenv(
            "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET, propfind,,"
        )
        async with session(registry) as client:
            for method in ("PROPFIND", "GET", "POST"):
                async with client.request(method, upstream("/")):
                    pass

        assert {"PROPFIND", "GET", "_OTHER"} == {
            labels["http_request_method"]
            for labels in label_sets(registry, f"{DURATION}_count")
        }

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"known_methods": "GET"}, "collection of methods"),
            ({"known_methods": ["GET", 1]}, "takes strings"),
            ({"buckets": "fast"}, "sequence of numbers"),
            ({"buckets": 5}, "sequence of numbers"),
        ],
    )
    def test_wrong_options(self, registry, options, message):
        """Options of the wrong type are refused when it is made."""
        with pytest.raises(TypeError, match=message):
            client_trace_config(registry=registry, **options)

    async def test_buckets_and_namespace(self, registry, upstream):
        """namespace= prefixes every name; buckets= sets the bounds."""
        async with (
            session(registry, namespace="app", buckets=(0.5, 1.0)) as client,
            client.get(upstream("/")),
        ):
            pass

        assert ["0.5", "1.0", "+Inf"] == [
            labels["le"]
            for labels in label_sets(registry, f"app_{DURATION}_bucket")
        ]
        assert 0.0 == total(registry, f"app_{ACTIVE}")
        assert 1.0 == total(registry, f"app_{OPENED}")

    async def test_websocket_handshake(self, registry, upstream):
        """ws_connect's handshake is a request with status 101."""
        async with (
            session(registry) as client,
            client.ws_connect(upstream("/ws")) as ws,
        ):
            await ws.send_str("hi")

        assert {("101", ""): 1} == counted(registry)


class TestActiveRequests:
    async def test_counts_requests_waiting_for_headers(
        self, registry, upstream
    ):
        """A request is active from its start until its headers arrive."""
        async with session(registry) as client:
            task = asyncio.create_task(client.get(upstream("/hang/a")))
            await upstream.arrived("a")

            assert 1.0 == total(registry, ACTIVE, http_request_method="GET")

            upstream.release("a")
            async with await task:
                assert 0.0 == total(registry, ACTIVE)

    async def test_balances_on_every_path(
        self, registry, upstream, closed_port
    ):
        """10,000 mixed requests: the gauge ends at exactly 0."""
        kinds = ["ok", "error", "refused", "timeout", "cancelled", "drop"]
        plan = [kinds[i % len(kinds)] for i in range(10_000)]
        random.Random(9).shuffle(plan)
        outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        limit = asyncio.Semaphore(100)
        short = aiohttp.ClientTimeout(total=0.05)

        async def send(client: aiohttp.ClientSession, i: int, kind: str):
            url = {
                "ok": upstream("/"),
                "error": upstream("/status/500"),
                "refused": f"http://127.0.0.1:{closed_port}/",
                "timeout": upstream(f"/hang/t{i}"),
                "cancelled": upstream(f"/hang/c{i}"),
                "drop": upstream("/drop"),
            }[kind]
            async with limit:
                request = asyncio.create_task(
                    client.get(
                        url, timeout=short if kind == "timeout" else None
                    )
                )
                if kind == "cancelled":
                    await upstream.arrived(f"c{i}")
                    request.cancel()
                try:
                    response = await request
                except asyncio.CancelledError:
                    outcomes["", "CancelledError"] += 1
                except Exception as error:
                    outcomes["", type(error).__name__] += 1
                else:
                    async with response:
                        status = str(response.status)
                        outcomes[
                            status, "" if status == "200" else status
                        ] += 1

        async with session(registry) as client:
            await asyncio.gather(
                *(send(client, i, kind) for i, kind in enumerate(plan))
            )

        assert {
            ("200", ""),
            ("500", "500"),
            ("", "ClientConnectorError"),
            ("", "TimeoutError"),
            ("", "CancelledError"),
            ("", "ServerDisconnectedError"),
        } == set(outcomes)
        assert dict(outcomes) == counted(registry)
        assert 10_000 == sum(counted(registry).values())
        assert {0.0} == {value for _, value in samples(registry, ACTIVE)}


class TestURLTemplate:
    async def test_from_trace_request_ctx(self, registry, upstream):
        """trace_request_ctx={"url_template": ...} labels the request."""
        async with session(registry) as client:
            for user in ("alice", "bob"):
                async with client.get(
                    upstream(f"/users/{user}/hello"),
                    trace_request_ctx={"url_template": "/users/{id}/hello"},
                ):
                    pass

        assert {"/users/{id}/hello": 2.0} == {
            labels["url_template"]: value
            for labels, value in samples(registry, f"{DURATION}_count")
        }
        assert 0.0 == total(registry, ACTIVE, url_template="/users/{id}/hello")

    @pytest.mark.parametrize(
        ("request_ctx", "expected"),
        [
            (None, ""),
            ({"other": "value"}, ""),
            ({"url_template": ""}, ""),
            ({"url_template": 42}, "42"),
            (SimpleNamespace(url_template="/ignored"), ""),
        ],
    )
    async def test_other_contexts(
        self, registry, upstream, request_ctx, expected
    ):
        """Anything but a mapping with a template leaves the label empty."""
        async with (
            session(registry) as client,
            client.get(upstream("/"), trace_request_ctx=request_ctx),
        ):
            pass

        [labels] = label_sets(registry, f"{DURATION}_count")
        assert expected == labels["url_template"]


class TestCardinality:
    async def test_paths_queries_and_methods_never_become_labels(
        self, registry, upstream
    ):
        """10,000 random paths, queries and methods: a few series."""
        rng = random.Random(7)
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "MKCOL", "PURGE"]
        async with session(registry) as client:
            for i in range(10_000):
                path = "/".join(str(rng.random()) for _ in range(3))
                async with client.request(
                    rng.choice(methods),
                    upstream(f"/{path}/hello"),
                    params={f"q{i}": str(rng.random())},
                ):
                    pass

        assert 6 == len(label_sets(registry, f"{DURATION}_count"))
        assert 6 == len(label_sets(registry, ACTIVE))

    async def test_servers_beyond_the_limit(self, registry, upstream, caplog):
        """Servers past max_label_values= are _OTHER, with one warning."""
        ports = [free_loopback_port() for _ in range(4)]
        async with session(registry, max_label_values=2) as client:
            for port in ports:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await client.get(f"http://127.0.0.1:{port}/")

        assert [str(ports[0]), str(ports[1]), "_OTHER"] == [
            labels["server_port"]
            for labels in label_sets(registry, f"{DURATION}_count")
        ]
        assert 2.0 == total(
            registry, f"{DURATION}_count", server_address="_OTHER"
        )
        assert 1 == caplog.text.count("more than 2 distinct server_address")

    async def test_templates_beyond_the_limit(self, registry, upstream):
        """URL templates past max_label_values= are _OTHER."""
        async with session(registry, max_label_values=1) as client:
            for template in ("/a", "/b", "/c"):
                async with client.get(
                    upstream("/"), trace_request_ctx={"url_template": template}
                ):
                    pass

        assert {"/a": 1.0, "_OTHER": 2.0} == {
            labels["url_template"]: value
            for labels, value in samples(registry, f"{DURATION}_count")
        }

    def test_limit_is_checked(self, registry):
        """max_label_values= takes an int of 0 or more."""
        with pytest.raises(ValueError, match="max_label_values"):
            client_trace_config(registry=registry, max_label_values=-1)
        for wrong in ("3", True):
            with pytest.raises(TypeError, match="max_label_values"):
                client_trace_config(registry=registry, max_label_values=wrong)


class TestResponseDuration:
    async def test_ends_when_the_body_was_read(self, registry, upstream):
        """A streamed body: observed when its end has been read."""
        async with session(
            registry, response_duration=True, exemplar=False
        ) as client:
            async with client.get(upstream("/stream/s")) as response:
                await upstream.arrived("s")
                assert 1.0 == total(registry, f"{DURATION}_count")
                assert 0.0 == total(registry, f"{RESPONSE}_count")

                upstream.release("s")
                assert b"firstrest" == await response.read()

            assert {("200", ""): 1} == counted(registry, RESPONSE)
            assert total(registry, f"{DURATION}_sum") < total(
                registry, f"{RESPONSE}_sum"
            )

    @pytest.mark.parametrize("end", ["release", "close"])
    async def test_ends_when_released_or_closed(self, registry, upstream, end):
        """A response released or closed before its end is observed."""
        async with session(registry, response_duration=True) as client:
            response = await client.get(upstream("/stream/early"))
            await upstream.arrived("early")
            assert 0.0 == total(registry, f"{RESPONSE}_count")

            getattr(response, end)()

            assert 1.0 == total(registry, f"{RESPONSE}_count")

    async def test_complete_with_the_headers(self, registry, upstream):
        """A body that came with the headers is observed with them."""
        async with session(registry, response_duration=True) as client:
            async with client.get(upstream("/")):
                assert {("200", ""): 1} == counted(registry, RESPONSE)
            async with client.ws_connect(upstream("/ws")):
                assert 2.0 == total(registry, f"{RESPONSE}_count")

        assert total(registry, f"{DURATION}_sum") == total(
            registry, f"{RESPONSE}_sum"
        )

    async def test_failed_requests(self, registry, closed_port):
        """A failed request is observed when it fails."""
        async with session(registry, response_duration=True) as client:
            with pytest.raises(aiohttp.ClientConnectorError):
                await client.get(f"http://127.0.0.1:{closed_port}/")

        assert {("", "ClientConnectorError"): 1} == counted(registry, RESPONSE)

    async def test_off_by_default(self, registry, upstream):
        """Without response_duration=True there is no such histogram."""
        async with session(registry) as client, client.get(upstream("/")):
            pass

        assert [] == samples(registry, f"{RESPONSE}_count")


class LoopbackResolver(AbstractResolver):
    """
    Resolves ``localhost`` to 127.0.0.1 and fails every other name,
    without asking any DNS server.
    """

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[dict[str, Any]]:
        if host != "localhost":
            raise OSError(f"no such host: {host}")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


class TestConnections:
    async def test_opened_and_reused(self, registry, upstream):
        """A keep-alive session opens one connection and reuses it."""
        async with session(registry) as client:
            for _ in range(3):
                async with client.get(upstream("/")) as response:
                    await response.read()

        assert [(server_labels(upstream), 1.0)] == samples(registry, OPENED)
        assert [(server_labels(upstream), 2.0)] == samples(registry, REUSED)
        assert [] == samples(registry, f"{CONNECT}_count")
        assert [] == samples(registry, f"{DNS}_count")

    async def test_connect_duration(self, registry, upstream, closed_port):
        """connect_duration=True times each new connection, failed too."""
        async with session(registry, connect_duration=True) as client:
            for _ in range(2):
                async with client.get(upstream("/")) as response:
                    await response.read()
            with pytest.raises(aiohttp.ClientConnectorError):
                await client.get(f"http://127.0.0.1:{closed_port}/")

        assert [
            ({**server_labels(upstream), "error_type": ""}, 1.0),
            (
                {
                    "server_address": "127.0.0.1",
                    "server_port": str(closed_port),
                    "error_type": "ClientConnectorError",
                },
                1.0,
            ),
        ] == samples(registry, f"{CONNECT}_count")

    async def test_dns_duration(self, registry, upstream):
        """dns_duration=True times the lookups the cache did not answer."""
        port = upstream.url.rpartition(":")[2]
        connector = aiohttp.TCPConnector(resolver=LoopbackResolver())
        async with session(
            registry, dns_duration=True, connector=connector
        ) as client:
            for _ in range(2):
                async with client.get(f"http://localhost:{port}/") as response:
                    await response.read()
            with pytest.raises(aiohttp.ClientConnectorError) as failed:
                await client.get("http://unknown.test/")

        assert [
            ({"dns_question_name": "localhost", "error_type": ""}, 1.0),
            (
                {
                    "dns_question_name": "unknown.test",
                    "error_type": type(failed.value).__name__,
                },
                1.0,
            ),
        ] == samples(registry, f"{DNS}_count")

    async def test_server_labels(self, registry, upstream):
        """The host as sent (IDNA-encoded) and the port, default or not."""
        port = upstream.url.rpartition(":")[2]
        connector = aiohttp.TCPConnector(resolver=LoopbackResolver())
        async with session(registry, connector=connector) as client:
            async with client.get(f"http://LocalHost:{port}/"):
                pass
            for url in ("http://bücher.test/", "https://unknown.test/"):
                with pytest.raises(aiohttp.ClientConnectorError):
                    await client.get(url)

        assert [
            ("localhost", port),
            ("xn--bcher-kva.test", "80"),
            ("unknown.test", "443"),
        ] == [
            (labels["server_address"], labels["server_port"])
            for labels in label_sets(registry, f"{DURATION}_count")
        ]

    async def test_dns_end_without_start(self, registry):
        """A lookup's end without its start records nothing."""
        config = client_trace_config(registry=registry, dns_duration=True)
        [end] = config.on_dns_resolvehost_end

        await end(None, config.trace_config_ctx(), None)

        assert [] == samples(registry, f"{DNS}_count")


class TestFamilies:
    async def test_shared_per_registry(self, registry, upstream):
        """Two trace configs on one registry record into one family."""
        first = client_trace_config(registry=registry)
        second = client_trace_config(registry=registry)
        for config in (first, second):
            async with (
                aiohttp.ClientSession(trace_configs=[config]) as client,
                client.get(upstream("/")),
            ):
                pass

        assert {("200", ""): 2} == counted(registry)

    def test_other_buckets_is_a_clear_error(self, registry):
        """The same registry and namespace with other buckets is refused."""
        client_trace_config(registry=registry, buckets=(1, 2))
        client_trace_config(registry=registry, buckets=[1.0, 2.0, math.inf])

        with pytest.raises(ValueError, match="another namespace"):
            client_trace_config(registry=registry, buckets=(1.0,))
        client_trace_config(registry=registry, namespace="b", buckets=(1.0,))

    def test_global_registry_by_default(self):
        """Without registry= the metrics go to the global registry."""
        client_trace_config()

        assert {DURATION, ACTIVE} <= {
            metric.name for metric in REGISTRY.collect()
        }


@pytest.fixture
def tracer() -> Any:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    sampling = pytest.importorskip("opentelemetry.sdk.trace.sampling")
    provider = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_ON)
    return provider.get_tracer("tests")


def exemplars(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [
        sample.exemplar.labels
        for metric in registry.collect()
        for sample in metric.samples
        if sample.exemplar is not None and sample.name == name
    ]


class TestExemplars:
    async def test_current_trace(self, registry, upstream, tracer):
        """By default observations link to the request's span, also when
        the response is released outside it."""
        async with session(registry, response_duration=True) as client:
            # The connection's callbacks run in the context it was opened
            # in: outside the span.
            async with client.get(upstream("/")) as response:
                await response.read()
            with tracer.start_as_current_span("call") as span:
                trace_id = f"{span.get_span_context().trace_id:032x}"
                async with client.get(upstream("/stream/x")) as response:
                    await upstream.arrived("x")
                    upstream.release("x")
                    await response.read()

        assert [trace_id] == [
            e["trace_id"] for e in exemplars(registry, f"{DURATION}_bucket")
        ]
        assert [trace_id] == [
            e["trace_id"] for e in exemplars(registry, f"{RESPONSE}_bucket")
        ]

    async def test_callable(self, registry, upstream, closed_port):
        """exemplar= a callable: its labels, on every histogram."""
        async with session(
            registry,
            exemplar=lambda: {"trace_id": "abc"},
            response_duration=True,
            connect_duration=True,
        ) as client:
            async with client.get(upstream("/")):
                pass
            with pytest.raises(aiohttp.ClientConnectorError):
                await client.get(f"http://127.0.0.1:{closed_port}/")

        for name in (DURATION, RESPONSE, CONNECT):
            assert 2 == len(exemplars(registry, f"{name}_bucket")), name

    async def test_without_opentelemetry(
        self, registry, upstream, monkeypatch
    ):
        """Without the OpenTelemetry API, exemplar=True asks nothing."""
        monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)

        asked = []
        monkeypatch.setattr(
            _exemplars, "current_trace", lambda: asked.append(1)
        )
        async with session(registry) as client, client.get(upstream("/")):
            pass

        assert 1.0 == total(registry, f"{DURATION}_count")
        assert [] == asked

    def test_wrong_option(self, registry):
        """exemplar= takes True, a callable or None."""
        with pytest.raises(TypeError, match="exemplar="):
            client_trace_config(registry=registry, exemplar="trace")


class FailingMapping(dict):
    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("cannot read the template")


class TestBookkeepingFailures:
    async def test_never_fail_a_request(self, registry, upstream, caplog):
        """A failure in the tracer is logged once; requests go on."""
        async with session(registry) as client:
            for _ in range(2):
                async with client.get(
                    upstream("/"), trace_request_ctx=FailingMapping()
                ) as response:
                    assert 200 == response.status
            with pytest.raises(aiohttp.ClientConnectorError):
                await client.get(
                    f"http://127.0.0.1:{free_loopback_port()}/",
                    trace_request_ctx=FailingMapping(),
                )

        assert {} == counted(registry)
        assert [] == samples(registry, OPENED)
        assert 1 == caplog.text.count("client tracer failed")
        assert "cannot read the template" in caplog.text

    async def test_failure_when_released(
        self, registry, upstream, caplog, monkeypatch
    ):
        """A failure recording a release is logged, never raised."""

        def broken(metric: Any, value: float, source: Any) -> None:
            raise RuntimeError("broken observe")

        async with (
            session(
                registry, exemplar=lambda: None, response_duration=True
            ) as client,
            client.get(upstream("/stream/f")) as response,
        ):
            await upstream.arrived("f")
            monkeypatch.setattr(_exemplars, "observe", broken)
            upstream.release("f")
            assert b"firstrest" == await response.read()

        assert "broken observe" in caplog.text

    async def test_listed_after_a_config_that_fails_the_start(
        self, registry, upstream
    ):
        """After a trace config that fails the request's start: unseen."""

        async def fail(session, context, params) -> None:
            raise RuntimeError("another tracer failed")

        failing = aiohttp.TraceConfig()
        failing.on_request_start.append(fail)
        config = client_trace_config(registry=registry)
        async with aiohttp.ClientSession(
            trace_configs=[failing, config]
        ) as client:
            with pytest.raises(RuntimeError, match="another tracer"):
                await client.get(upstream("/"))

        assert {} == counted(registry)
        assert 0.0 == total(registry, ACTIVE)

    async def test_ended_twice(self, registry, upstream):
        """A request that ends and then fails is recorded once."""

        async def fail(session, context, params) -> None:
            raise RuntimeError("another tracer failed")

        failing = aiohttp.TraceConfig()
        failing.on_request_end.append(fail)
        config = client_trace_config(registry=registry)
        async with aiohttp.ClientSession(
            trace_configs=[config, failing]
        ) as client:
            with pytest.raises(RuntimeError, match="another tracer"):
                await client.get(upstream("/"))

        assert {("200", ""): 1} == counted(registry)
        assert 0.0 == total(registry, ACTIVE)


def documented_queries() -> list[str]:
    return code_blocks("aiohttp-service/client.rst", "promql")


class TestDocumentedPromQL:
    def test_a_query_for_each_metric(self):
        """The docs give PromQL for each metric the trace config records."""
        queries = documented_queries()

        assert [] == [
            name
            for name in (
                *(DURATION, ACTIVE, OPENED, REUSED),
                *(RESPONSE, CONNECT, DNS),
            )
            if not any(name in query for query in queries)
        ]

    async def test_queries_answer(
        self, registry, upstream, closed_port, prometheus
    ):
        """Prometheus scrapes the metrics of requests made meanwhile, and
        each query of the docs answers by the labels it groups by."""
        port = upstream.url.rpartition(":")[2]
        requests = [
            f"http://localhost:{port}/",
            f"http://localhost:{port}/status/500",
            f"http://127.0.0.1:{closed_port}/",
        ]
        options = {
            "registry": registry,
            "response_duration": True,
            "connect_duration": True,
            "dns_duration": True,
        }

        async def keep_sending(client: aiohttp.ClientSession) -> None:
            while True:
                for url in requests:
                    try:
                        async with client.get(url) as response:
                            await response.read()
                    except aiohttp.ClientConnectorError:
                        pass
                # Traffic between scrapes, not a wait for a state.
                await asyncio.sleep(0.02)

        def connector(**options: Any) -> aiohttp.TCPConnector:
            return aiohttp.TCPConnector(
                resolver=LoopbackResolver(), use_dns_cache=False, **options
            )

        async def answered() -> dict[str, list[dict[str, str]]]:
            found = {}
            for query in queries:
                data = await asyncio.to_thread(
                    scraper.api, "query", query=query
                )
                found[query] = [series["metric"] for series in data["result"]]
            return found

        queries = documented_queries()
        async with (
            await start_http_server(
                addr="127.0.0.1", registry=registry
            ) as server,
            aiohttp.ClientSession(
                trace_configs=[client_trace_config(**options)],
                connector=connector(),
            ) as keep_alive,
            aiohttp.ClientSession(
                trace_configs=[client_trace_config(**options)],
                connector=connector(force_close=True),
            ) as one_off,
        ):
            senders = [
                asyncio.create_task(keep_sending(client))
                for client in (keep_alive, one_off)
            ]
            try:
                target = f"127.0.0.1:{server.socket.port}"
                scraper = await asyncio.to_thread(prometheus, [target])
                deadline = asyncio.get_running_loop().time() + DEADLINE
                answers = await answered()
                while not all(answers.values()):
                    assert asyncio.get_running_loop().time() < deadline, (
                        answers
                    )
                    await asyncio.sleep(0.2)
                    answers = await answered()
            finally:
                for sender in senders:
                    sender.cancel()
                await asyncio.gather(*senders, return_exceptions=True)

        produced = {
            "server_address": {"localhost", "127.0.0.1"},
            "http_response_status_code": {"200", "500", ""},
            "error_type": {"500", "ClientConnectorError"},
            "dns_question_name": {"localhost"},
        }
        for query, series in answers.items():
            grouped = re.search(r"by \(([^)]*)\)", query)
            assert grouped is not None, query
            names = {name.strip() for name in grouped.group(1).split(",")} - {
                "le"
            }
            # Prometheus leaves out a label whose value is empty.
            assert names == {name for labels in series for name in labels}
            for labels in series:
                for name, value in labels.items():
                    assert value in produced[name], (query, labels)
