"""
prom_async.aio.http.server_middleware: how long a request lasts, how it
ended, WebSockets, body sizes, and failures of the measurement itself.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from fixtures_servers import eventually
from prom_async.aio import _http_server
from prom_async.aio.http import server_middleware
from test_http_server_support import (
    DURATION,
    active,
    app_with,
    clock,
    ok,
    recorded,
    requests,
    samples,
    serving,
)


__all__ = ["clock"]  # the fixture, imported for the tests below

WS_ACTIVE = "http_server_active_websocket_connections"
WS_DURATION = "http_server_websocket_connection_duration_seconds"


def duration_sum(registry, route="/", status=200, error_type=""):
    return registry.get_sample_value(
        f"{DURATION}_sum",
        {
            "http_request_method": "GET",
            "http_route": route,
            "http_response_status_code": str(status),
            "error_type": error_type,
        },
    )


async def raw_get(url: str, path: str = "/", method: str = "GET") -> bytes:
    """
    Send one request over a connection of its own; return every byte of
    the answer.
    """
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


class TestDurations:
    async def test_until_the_body_is_written(self, registry, http, clock):
        """A response is measured until its body has been written, after
        the handler returned: what on_response_prepare takes counts."""

        async def handler(request):
            clock.advance(1)
            return web.Response(text="ok")

        async def on_prepare(request, response):
            clock.advance(5)

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )
        app.on_response_prepare.append(on_prepare)

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        assert 6.0 == duration_sum(registry)

    async def test_until_write_eof_returns(self, registry, http, clock):
        """A response is measured until its write_eof has returned."""

        class SlowToFinish(web.Response):
            async def write_eof(self, data=b""):
                clock.advance(5)
                await super().write_eof(data)

        async def handler(request):
            clock.advance(1)
            return SlowToFinish(text="ok")

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )

        async with serving(app) as url, http.get(url) as got:
            assert "ok" == await got.text()

        assert 6.0 == duration_sum(registry)

    async def test_stream_until_eof(self, registry, http, clock):
        """A stream is measured until its end, whether the handler ends it
        or aiohttp does after the handler returned."""

        class Stream(web.StreamResponse):
            ended = False

            async def write_eof(self, data=b""):
                if not self.ended:  # the end takes 3 s
                    self.ended = True
                    clock.advance(3)
                await super().write_eof(data)

        async def ended_by_aiohttp(request):
            stream = Stream()
            await stream.prepare(request)
            await stream.write(b"part")
            clock.advance(1)
            return stream

        async def ended_by_handler(request):
            stream = Stream()
            await stream.prepare(request)
            await stream.write(b"part")
            await stream.write_eof()
            clock.advance(1)
            return stream

        app = app_with(
            server_middleware(registry=registry),
            routes={
                "/aiohttp": ended_by_aiohttp,
                "/handler": ended_by_handler,
            },
        )

        async with serving(app) as url:
            for path in ("/aiohttp", "/handler"):
                async with http.get(f"{url}{path}") as got:
                    assert b"part" == await got.read()

        assert 4.0 == duration_sum(registry, route="/aiohttp")
        assert 4.0 == duration_sum(registry, route="/handler")

    async def test_background_tasks_are_not_counted(
        self, registry, http, clock
    ):
        """Work the handler leaves to a task of its own is not part of the
        request."""
        go_on = asyncio.Event()
        tasks = []

        async def background():
            await go_on.wait()
            clock.advance(100)

        async def handler(request):
            tasks.append(asyncio.create_task(background()))
            clock.advance(1)
            return web.Response(text="ok")

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )

        async with serving(app) as url:
            async with http.get(url) as got:
                assert 200 == got.status
            recorded_before = recorded(registry)
            go_on.set()
            await tasks[0]

        assert {("GET", "/", "200", ""): 1.0} == recorded_before
        assert 1.0 == duration_sum(registry)

    async def test_a_client_that_does_not_read(self, registry):
        """While a client leaves a large body unread, the request is still
        in progress; it ends when the client has read it."""
        returned = asyncio.Event()

        async def handler(request):
            returned.set()
            return web.Response(body=b"x" * (32 * 1024 * 1024))

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )

        async with serving(app) as url:
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(
                host, int(port), limit=1024
            )
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await returned.wait()
            status_line = await reader.readline()
            in_progress = (active(registry), recorded(registry))
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(32 * 1024 * 1024)
            await eventually(
                lambda: recorded(registry), what="the request recorded"
            )
            writer.close()
            await writer.wait_closed()

        assert b"HTTP/1.1 200 OK\r\n" == status_line
        assert (1.0, {}) == in_progress
        assert {("GET", "/", "200", ""): 1.0} == recorded(registry)
        assert 0.0 == active(registry)


class TestOutcomes:
    @pytest.mark.parametrize(
        ("exception", "status", "error_type"),
        [
            (web.HTTPFound("/elsewhere"), 302, ""),
            (web.HTTPNotFound(), 404, ""),
            (web.HTTPServiceUnavailable(), 503, "503"),
        ],
    )
    async def test_http_exceptions_are_responses(
        self, registry, http, exception, status, error_type
    ):
        """An HTTPException a handler raises is recorded with its status,
        on the handler's route; a server error status is its error type."""

        async def handler(request):
            raise exception

        app = app_with(
            server_middleware(registry=registry),
            routes={"/users/{id}": handler},
        )

        async with (
            serving(app) as url,
            http.get(f"{url}/users/1", allow_redirects=False) as got,
        ):
            assert status == got.status

        assert {("GET", "/users/{id}", str(status), error_type): 1.0} == (
            recorded(registry)
        )

    async def test_server_error_status(self, registry, http):
        """A response with a 5xx status has that status as error type."""

        async def handler(request):
            return web.Response(status=502)

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )

        async with serving(app) as url, http.get(url) as got:
            assert 502 == got.status

        assert {("GET", "/", "502", "502"): 1.0} == recorded(registry)

    @pytest.mark.parametrize(
        ("exception", "status"),
        [
            (ValueError("no"), 500),
            (KeyError("x"), 500),
            (asyncio.TimeoutError(), 504),
        ],
    )
    async def test_exceptions(self, registry, http, exception, status):
        """Another exception is recorded as aiohttp answers it (500, or 504
        for a timeout) with its class name, and passes on unchanged."""
        seen = []

        @web.middleware
        async def catcher(request, handler):
            try:
                return await handler(request)
            except Exception as error:
                seen.append(error)
                raise

        async def handler(request):
            raise exception

        app = app_with(
            catcher,
            server_middleware(registry=registry),
            routes={"/": handler},
        )

        async with serving(app) as url, http.get(url) as got:
            assert status == got.status

        assert [exception] == seen
        assert seen[0].__traceback__.tb_next is not None
        assert {
            ("GET", "/", str(status), type(exception).__name__): 1.0
        } == recorded(registry)
        assert 0.0 == active(registry)

    async def test_placed_first_sees_the_final_status(self, registry, http):
        """Placed first, the middleware records what the others made of an
        error; placed after them, what the handler did."""

        @web.middleware
        async def error_page(request, handler):
            try:
                return await handler(request)
            except ValueError:
                return web.Response(status=422, text="sorry")

        async def handler(request):
            raise ValueError

        first = CollectorRegistry()
        later = CollectorRegistry()
        app = app_with(
            server_middleware(registry=first),
            error_page,
            server_middleware(registry=later),
            routes={"/": handler},
        )

        async with serving(app) as url, http.get(url) as got:
            assert 422 == got.status

        assert {("GET", "/", "422", ""): 1.0} == recorded(first)
        assert {("GET", "/", "500", "ValueError"): 1.0} == recorded(later)

    async def test_replaced_response(self, registry, http):
        """When an outer middleware answers with another response, the
        status recorded is the one the middleware saw, and the request
        ends."""

        @web.middleware
        async def replacer(request, handler):
            await handler(request)
            return web.Response(status=202)

        app = app_with(
            replacer, server_middleware(registry=registry), routes={"/": ok}
        )

        async with serving(app) as url, http.get(url) as got:
            assert 202 == got.status

        assert {("GET", "/", "200", ""): 1.0} == recorded(registry)
        assert 0.0 == active(registry)

    async def test_cancelled_handler(self, registry):
        """A handler cancelled because its client left is recorded as 499
        (with handler_cancellation=True)."""
        started = asyncio.Event()

        async def handler(request):
            started.set()
            await asyncio.Event().wait()

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )

        async with serving(app, handler_cancellation=True) as url:
            host, port = url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await started.wait()
            writer.close()
            await writer.wait_closed()
            await eventually(
                lambda: recorded(registry), what="the request recorded"
            )

        assert {("GET", "/", "499", ""): 1.0} == recorded(registry)
        assert 0.0 == active(registry)

    async def test_client_gone_before_the_body(self, registry):
        """A response that cannot be written because its client left is
        recorded as 499."""
        go_on = asyncio.Event()
        served = []

        async def handler(request):
            served.append(request)
            await go_on.wait()
            return web.Response(text="too late")

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )

        async with serving(app) as url:
            host, port = url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: served, what="the handler")
            writer.close()
            await writer.wait_closed()
            await eventually(
                lambda: (
                    served[0].transport is None
                    or served[0].transport.is_closing()
                ),
                what="the server to see the client leave",
            )
            go_on.set()
            await eventually(
                lambda: recorded(registry), what="the request recorded"
            )

        assert {("GET", "/", "499", ""): 1.0} == recorded(registry)
        assert 0.0 == active(registry)

    async def test_connection_errors(self, registry, http):
        """A ConnectionError a handler raises is a 499 if its own client
        left, a 500 otherwise (a backend's connection, say)."""

        async def backend_failed(request):
            raise ConnectionResetError

        async def client_left(request):
            request.transport.close()
            raise ConnectionResetError

        app = app_with(
            server_middleware(registry=registry),
            routes={"/backend": backend_failed, "/left": client_left},
        )

        async with serving(app) as url:
            backend = await raw_get(url, "/backend")
            left = await raw_get(url, "/left")
            await eventually(
                lambda: len(recorded(registry)) == 2, what="both recorded"
            )

        assert backend.startswith(b"HTTP/1.1 500 ")
        assert b"" == left

        assert {
            ("GET", "/backend", "500", "ConnectionResetError"): 1.0,
            ("GET", "/left", "499", ""): 1.0,
        } == recorded(registry)

    async def test_prepare_fails(self, registry, http):
        """A response whose prepare fails is recorded with the exception,
        or as 499 when it was a lost connection."""

        async def on_prepare(request, response):
            if request.path == "/left":
                request.transport.close()
                raise ConnectionResetError
            raise RuntimeError("signal")

        app = app_with(
            server_middleware(registry=registry),
            routes={"/left": ok, "/broken": ok},
        )
        app.on_response_prepare.append(on_prepare)

        async with serving(app) as url:
            answers = [
                await raw_get(url, path) for path in ("/left", "/broken")
            ]
            await eventually(
                lambda: len(recorded(registry)) == 2, what="both recorded"
            )

        assert [b"", b""] == answers

        assert {
            ("GET", "/left", "499", ""): 1.0,
            ("GET", "/broken", "500", "RuntimeError"): 1.0,
        } == recorded(registry)
        assert 0.0 == active(registry)

    async def test_not_a_response(self, registry, http):
        """A handler that returns no response is recorded as a 500 (what
        aiohttp answers; before 3.14, it closes the connection)."""

        async def forgetful(request):
            return None

        app = app_with(
            server_middleware(registry=registry), routes={"/": forgetful}
        )

        async with serving(app) as url:
            answer = await raw_get(url)
            await eventually(lambda: recorded(registry), what="recorded")

        assert answer.startswith(b"HTTP/1.1 500 ") or b"" == answer
        assert {("GET", "/", "500", "500"): 1.0} == recorded(registry)
        assert 0.0 == active(registry)

    def test_closed_without_a_loop(self, registry):
        """A middleware coroutine closed with no event loop running (one
        collected as a program exits) records its request as ended."""
        app = app_with(routes={"/": ok})
        request = make_mocked_request("GET", "/", app=app)
        request._match_info = asyncio.run(app.router.resolve(request))
        loop = asyncio.new_event_loop()
        never = loop.create_future()

        async def stuck(request):
            await never

        coroutine = server_middleware(registry=registry)(request, stuck)
        coroutine.send(None)
        coroutine.close()
        loop.close()

        assert {("GET", "/", "500", "GeneratorExit"): 1.0} == recorded(
            registry
        )
        assert 0.0 == active(registry)

    async def test_outside_a_task(self, registry):
        """Called outside an asyncio task (a unit test driving it), the
        middleware records when the response is written."""
        app = app_with(routes={"/": ok})
        request = make_mocked_request("GET", "/", app=app)
        request._match_info = await app.router.resolve(request)
        middleware = server_middleware(registry=registry)
        loop = asyncio.get_running_loop()
        answered = loop.create_future()

        def drive():
            coroutine = middleware(request, ok)
            try:
                coroutine.send(None)
            except StopIteration as stop:
                answered.set_result(stop.value)

        loop.call_soon(drive)
        response = await answered
        await response.prepare(request)
        await response.write_eof()

        assert {("GET", "/", "200", ""): 1.0} == recorded(registry)


class TestWebSockets:
    async def test_a_connection(self, registry, http):
        """A WebSocket is counted while open and measured until closed,
        apart from the requests."""
        during = []

        async def echo(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            during.append(
                registry.get_sample_value(WS_ACTIVE, {"http_route": "/ws"})
            )
            async for message in ws:
                await ws.send_str(message.data)
            return ws

        app = app_with(
            server_middleware(registry=registry), routes={"/ws": echo}
        )

        async with serving(app) as url:
            async with http.ws_connect(f"{url}/ws") as ws:
                await ws.send_str("hello")
                assert "hello" == await ws.receive_str()
            await eventually(
                lambda: samples(registry, f"{WS_DURATION}_count"),
                what="the connection recorded",
            )

        assert [1.0] == during
        assert {
            frozenset({("http_route", "/ws"), ("error_type", "")}): 1.0
        } == samples(registry, f"{WS_DURATION}_count")
        assert 0.0 == registry.get_sample_value(
            WS_ACTIVE, {"http_route": "/ws"}
        )
        assert {} == recorded(registry)
        assert None is active(registry)

    async def test_a_refused_upgrade(self, registry, http):
        """An upgrade the handler refuses is a request like any other."""

        async def refuse(request):
            return web.Response(status=403)

        app = app_with(
            server_middleware(registry=registry), routes={"/ws": refuse}
        )

        async with serving(app) as url:
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(f"{url}/ws")

        assert {("GET", "/ws", "403", ""): 1.0} == recorded(registry)
        assert {} == samples(registry, f"{WS_DURATION}_count")
        assert 0.0 == registry.get_sample_value(
            WS_ACTIVE, {"http_route": "/ws"}
        )

    async def test_a_failing_connection(self, registry, http):
        """A WebSocket handler that raises after the upgrade is recorded
        with the exception's class."""

        async def failing(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.receive()
            raise RuntimeError("broken")

        app = app_with(
            server_middleware(registry=registry), routes={"/ws": failing}
        )

        async with serving(app) as url:
            async with http.ws_connect(f"{url}/ws") as ws:
                await ws.send_str("hello")
                await ws.receive()
            await eventually(
                lambda: samples(registry, f"{WS_DURATION}_count"),
                what="the connection recorded",
            )

        assert {
            frozenset(
                {("http_route", "/ws"), ("error_type", "RuntimeError")}
            ): (1.0)
        } == samples(registry, f"{WS_DURATION}_count")
        assert {} == recorded(registry)

    async def test_client_gone(self, registry, http):
        """A WebSocket whose handler is cancelled when the client leaves is
        recorded as a connection that ended."""
        opened = asyncio.Event()

        async def waiting(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            opened.set()
            await asyncio.Event().wait()

        app = app_with(
            server_middleware(registry=registry), routes={"/ws": waiting}
        )

        async with serving(app, handler_cancellation=True) as url:
            ws = await http.ws_connect(f"{url}/ws")
            await opened.wait()
            ws._response.connection.transport.abort()
            await eventually(
                lambda: samples(registry, f"{WS_DURATION}_count"),
                what="the connection recorded",
            )
            await ws.close()

        assert {
            frozenset({("http_route", "/ws"), ("error_type", "")}): 1.0
        } == samples(registry, f"{WS_DURATION}_count")
        assert 0.0 == registry.get_sample_value(
            WS_ACTIVE, {"http_route": "/ws"}
        )


def body_size(registry, which, route, status=200, method="GET"):
    return registry.get_sample_value(
        f"http_server_{which}_body_size_bytes_sum",
        {
            "http_request_method": method,
            "http_route": route,
            "http_response_status_code": str(status),
            "error_type": "",
        },
    )


class TestBodySizes:
    async def test_request_bodies(self, registry, http):
        """A request's body size is its Content-Length, or the bytes
        received when it is chunked."""

        async def read(request):
            await request.read()
            return web.Response()

        async def chunks():
            yield b"abc"
            yield b"defg"

        app = web.Application(
            middlewares=[server_middleware(registry=registry, body_sizes=True)]
        )
        app.router.add_post("/", read)

        async with serving(app) as url:
            async with http.post(url, data=b"x" * 1000) as got:
                assert 200 == got.status
            async with http.post(url, data=chunks()) as got:
                assert 200 == got.status
            async with http.get(url) as got:
                assert 405 == got.status

        assert 1007.0 == body_size(registry, "request", "/", method="POST")
        assert 0.0 == body_size(registry, "request", "", 405)

    @pytest.mark.parametrize("path", ["/plain", "/stream", "/gzip", "/named"])
    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    async def test_response_bodies(self, registry, path, method):
        """A response's body size is what is written after its headers:
        the body, compressed or in chunks (for HEAD, whatever aiohttp
        still writes)."""

        async def plain(request):
            return web.Response(text="hello")

        async def stream(request):
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"hello")
            await response.write(b"world!")
            return response

        async def gzip(request):
            response = web.Response(text="squeeze " * 100)
            response.enable_compression()
            return response

        async def named(request):
            return web.Response(text="hi", headers={"X-Name": "café"})

        app = web.Application(
            middlewares=[server_middleware(registry=registry, body_sizes=True)]
        )
        for route, handler in {
            "/plain": plain,
            "/stream": stream,
            "/gzip": gzip,
            "/named": named,
        }.items():
            app.router.add_get(route, handler)

        async with serving(app) as url:
            answer = await raw_get(url, path, method)

        _, _, body = answer.partition(b"\r\n\r\n")
        assert len(body) == body_size(
            registry, "response", path, method=method
        )

    async def test_not_written(self, registry, http):
        """A response that was not written has no body size."""

        async def on_prepare(request, response):
            request.transport.close()
            raise ConnectionResetError

        app = app_with(
            server_middleware(registry=registry, body_sizes=True),
            routes={"/": ok},
        )
        app.on_response_prepare.append(on_prepare)

        async with serving(app) as url:
            assert b"" == await raw_get(url)
            await eventually(
                lambda: recorded(registry), what="the request recorded"
            )

        assert 0.0 == body_size(registry, "request", "/", 499)
        assert None is body_size(registry, "response", "/", 499)


class Failing:
    """
    Stands for a metric whose methods raise.
    """

    def __init__(self, *, fail_inc: bool = False) -> None:
        self.fail_inc = fail_inc

    def __getitem__(self, values):
        if self.fail_inc:
            raise RuntimeError("labels")
        return self

    def observe(self, value):
        raise RuntimeError("observe")

    def inc(self):
        pass

    def dec(self):
        raise RuntimeError("dec")


class TestOwnFailures:
    async def test_recording_fails(self, registry, http, caplog):
        """When recording fails, the request is served; the first failure
        is logged as an error, the others at debug level."""
        middleware = server_middleware(registry=registry)
        middleware._durations = Failing()
        middleware._active = Failing()
        app = app_with(middleware, routes={"/": ok})

        with caplog.at_level(logging.DEBUG, logger=_http_server.__name__):
            async with serving(app) as url:
                for _ in range(2):
                    async with http.get(url) as got:
                        assert "ok" == await got.text()

        assert [
            ("ERROR", "recording a request"),
            ("DEBUG", "counting the request as finished"),
            ("DEBUG", "recording a request"),
            ("DEBUG", "counting the request as finished"),
        ] == [(r.levelname, r.args[0]) for r in caplog.records]

    async def test_starting_fails(self, registry, http, caplog):
        """When starting to measure fails, the request is served
        unmeasured."""
        middleware = server_middleware(registry=registry)
        middleware._active = Failing(fail_inc=True)
        app = app_with(middleware, routes={"/": ok})

        async with serving(app) as url, http.get(url) as got:
            assert "ok" == await got.text()

        assert {} == recorded(registry)
        assert "starting to measure a request" in caplog.text

    async def test_a_response_that_cannot_be_watched(
        self, registry, http, caplog
    ):
        """A response whose write_eof cannot be replaced is recorded when
        the request's task is done."""

        class Sealed(web.Response):
            @property
            def write_eof(self):
                return super().write_eof

        async def handler(request):
            return Sealed(text="sealed")

        app = app_with(
            server_middleware(registry=registry), routes={"/": handler}
        )

        async with serving(app) as url, http.get(url) as got:
            assert "sealed" == await got.text()
        await eventually(lambda: recorded(registry), what="recorded")

        assert {("GET", "/", "200", ""): 1.0} == recorded(registry)
        assert "watching the response" in caplog.text

    async def test_a_failing_exemplar_source(self, registry, http, caplog):
        """An exemplar source that raises leaves the exemplar out."""

        def source():
            raise LookupError

        app = app_with(
            server_middleware(registry=registry, exemplar=source),
            routes={"/": ok},
        )

        with caplog.at_level(logging.DEBUG, logger=_http_server.__name__):
            async with serving(app) as url, http.get(url) as got:
                assert 200 == got.status

        assert 1.0 == requests(registry, route="/", status=200)
        assert "exemplar source" in caplog.text
