"""
The standalone exporter's connections, attacked as a client would: raw
sockets on loopback that send slowly, nothing, too much, bodies, malformed
requests with credentials, and scrapes of a collector that hangs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import logging
import socket
import threading

from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple

import pytest

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from prometheus_client import CollectorRegistry, Gauge

from fixtures_servers import (
    PASSWORD,
    RunningServer,
    Serve,
    bad_timeouts,
    eventually,
)
from prom_async.aio import _web_connections, _web_routes
from prom_async.aio._web_body import reset
from prom_async.aio._web_connections import (
    MAX_UNHANDLED_BYTES,
    ConnectionLimits,
    ExporterServer,
    ParserErrorLog,
    _ConnectionGuard,
)
from prom_async.aio.web import start_http_server, start_http_server_in_thread


LOOPBACK = "127.0.0.1"
TOKEN = "t0ken-of-the-hostile-tests"
#: Seconds within which a connection must be closed when the timeouts are
#: a fraction of a second: a guard against hangs, not a speed claim.
CLOSED_WITHIN = 10.0
#: Seconds close() may take with a render stuck.
CLOSE_DEADLINE = 5.0
SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n"


class Answer(NamedTuple):
    """
    One HTTP response as read off the socket; header names lower-cased.
    """

    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """
    One raw connection to an exporter.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection(LOOPBACK, port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        head = await asyncio.wait_for(
            self.reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN
        )
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(
            int(headers.get("content-length", "0"))
        )
        return Answer(int(status_line.split(" ")[1]), headers, body)

    async def closed_by_server(self, timeout: float = CLOSED_WITHIN) -> bool:
        """
        Whether the server closes the connection within *timeout*; what it
        still sends is read and dropped.
        """
        try:
            await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """
    The raw connections a test opens; all closed at teardown.
    """
    opened: list[Client] = []
    try:
        yield opened
    finally:
        for client in opened:
            await client.close()


async def connect(clients: list[Client], port: int) -> Client:
    client = await Client.connect(port)
    clients.append(client)
    return client


def connections(server: RunningServer) -> int:
    """
    How many connections an in-loop server holds (each has a task).
    """
    assert not server.threaded
    return len(server.server._runner.server.connections)


def basic(password: str) -> bytes:
    return base64.b64encode(f"prometheus:{password}".encode())


class TestIdleTimeout:
    async def test_silent_connection_is_closed(self, serve, registry, clients):
        """A connection that never sends a byte is closed after
        idle_timeout (aiohttp 3.10 never closes it)."""
        server = await serve(registry=registry, idle_timeout=0.2)
        client = await connect(clients, server.port)

        assert await client.closed_by_server()

    async def test_idle_after_a_scrape_is_closed(
        self, serve, registry, clients
    ):
        """A keep-alive connection that stops sending after a scrape is
        closed after idle_timeout."""
        server = await serve(registry=registry, idle_timeout=0.2)
        client = await connect(clients, server.port)
        await client.send(SCRAPE)
        answer = await client.answer()

        assert 200 == answer.status
        assert await client.closed_by_server()

    async def test_scraping_connection_stays_open(
        self, serve, registry, clients
    ):
        """A connection that scrapes more often than idle_timeout keeps
        being served, for longer than idle_timeout in all."""
        server = await serve(registry=registry, idle_timeout=1.0)
        client = await connect(clients, server.port)

        statuses = []
        for _ in range(12):
            await client.send(SCRAPE)
            statuses.append((await client.answer()).status)
            await asyncio.sleep(0.1)  # the scrape interval, not a wait

        assert [200] * 12 == statuses
        assert not client.reader.at_eof()


class TestHeaderTimeout:
    async def test_slowloris_connections_are_closed(
        self, serve, registry, clients
    ):
        """200 connections that send a request head a byte at a time, more
        often than idle_timeout, are all closed once header_timeout has
        passed since their first byte."""
        server = await serve(
            registry=registry, header_timeout=0.3, idle_timeout=60
        )
        head = b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nX-Slow: " + (
            b"a" * 200
        )

        async def trickle(client: Client) -> bool:
            for byte in head:
                if client.reader.at_eof():
                    return True
                try:
                    await client.send(bytes([byte]))
                except ConnectionError:
                    return True
                await asyncio.sleep(0.05)  # the attack's pace
            return await client.closed_by_server(timeout=0.1)

        attackers = [await connect(clients, server.port) for _ in range(200)]
        closed = await asyncio.gather(*map(trickle, attackers))

        assert [True] * 200 == closed
        if not server.threaded:
            await eventually(
                lambda: connections(server) == 0, what="no connection left"
            )

    async def test_head_in_pieces_is_answered(self, registry, clients):
        """A head that arrives in pieces within header_timeout, its end
        split between them, is answered."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry, header_timeout=30
        ) as server:
            client = await connect(clients, server.socket.port)
            for piece in (
                b"\r\nGET /metrics HTTP/1.1\r\nHost: metrics\r",
                b"\n\r",
                b"\n",
            ):
                await client.send(piece)
                await asyncio.sleep(0.05)  # a slow client's pace
            answer = await client.answer()

        assert 200 == answer.status


class TestUnhandledBytes:
    async def test_pipelined_requests_are_answered_in_order(
        self, registry, clients
    ):
        """Requests sent at once on one connection are answered in turn."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            await client.send(
                b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"
                + SCRAPE
                + b"GET /nowhere HTTP/1.1\r\nHost: m\r\n\r\n"
                + b"GET /metrics/ HTTP/1.1\r\nHost: m\n\n"
            )
            answers = [await client.answer() for _ in range(3)]
            refused = await client.answer()

        assert [200, 200, 404, 400] == [
            answer.status for answer in (*answers, refused)
        ]
        assert answers[0].headers["content-type"].startswith("text/html")

    async def test_pipelined_flood_is_aborted(self, registry, clients):
        """A client that sends pipelined requests faster than they are
        answered, past 1 MiB, is cut off."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            request = b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"
            flood = request * (2 * MAX_UNHANDLED_BYTES // len(request))

            async def send_flood() -> None:
                with contextlib.suppress(ConnectionError):
                    await client.send(flood)

            sending = asyncio.ensure_future(send_flood())
            closed = await client.closed_by_server()
            await asyncio.wait_for(sending, CLOSED_WITHIN)

            assert closed
            await eventually(
                lambda: server._runner.server.connections == [],
                what="the connection gone",
            )

    @pytest.mark.parametrize(
        "head",
        [
            b"A" * 100_000,
            b"GET /metrics HTTP/1.1\r\nHost: m\r\nX-Long: "
            + b"a" * 8200
            + b"\r\n\r\n",
        ],
        ids=["no-line-end", "long-header"],
    )
    async def test_oversized_lines_are_refused(self, registry, clients, head):
        """A line past aiohttp's bounds, given explicitly, gets 400 and the
        connection is closed."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            with contextlib.suppress(ConnectionError):
                await client.send(head)
            answer = await client.answer()

            assert 400 == answer.status
            assert await client.closed_by_server()

    async def test_endless_head_is_cut_off(self, registry, clients):
        """A head of ever more short headers is cut off: at MAX_HEADERS
        headers by aiohttp 3.14, at 1 MiB by the exporter (aiohttp 3.10
        does not enforce its max_headers)."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            line = b"X-More: a\r\n"
            head = b"GET /metrics HTTP/1.1\r\nHost: m\r\n" + line * (
                2 * MAX_UNHANDLED_BYTES // len(line)
            )

            async def send_head() -> None:
                with contextlib.suppress(ConnectionError):
                    await client.send(head)

            sending = asyncio.ensure_future(send_head())
            closed = await client.closed_by_server()
            await asyncio.wait_for(sending, CLOSED_WITHIN)

        assert closed


class TestRequestBody:
    async def test_chunked_get_is_refused_and_closed(self, registry, clients):
        """A chunked GET that sends no body is answered 413 and closed at
        once, leaving no task behind."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            await client.send(
                b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            answer = await client.answer()

            assert (413, "close") == (
                answer.status,
                answer.headers["connection"],
            )
            assert await client.closed_by_server()
            await eventually(
                lambda: server._runner.server.connections == [],
                what="the connection gone",
                timeout=CLOSE_DEADLINE,
            )

    async def test_client_that_leaves_leaves_nothing(self, registry, clients):
        """A client that leaves once answered, after the head of a chunked
        GET, leaves no connection or task behind (aiohttp lingered 10 s for
        the body)."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await Client.connect(server.socket.port)
            await client.send(
                b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            await client.answer()
            await client.close()

            await eventually(
                lambda: server._runner.server.connections == [],
                what="the connection gone",
                timeout=CLOSE_DEADLINE,
            )

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [("GET", "/metrics", 413), ("POST", "/metrics", 405)],
    )
    async def test_body_is_refused(
        self, registry, clients, method, path, status
    ):
        """A request with a Content-Length body is refused and closed."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            await client.send(
                f"{method} {path} HTTP/1.1\r\nHost: metrics\r\n".encode()
                + b"Content-Length: 5\r\n\r\nhello"
            )
            answer = await client.answer()

            assert (status, "close") == (
                answer.status,
                answer.headers["connection"],
            )
            assert await client.closed_by_server()

    async def test_empty_body_is_fine(self, registry, clients):
        """Content-Length: 0 is no body: answered, connection kept."""
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            empty = (
                b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
            await client.send(empty)
            first = await client.answer()
            await client.send(empty)
            second = await client.answer()

        assert (200, 200) == (first.status, second.status)


def credential_records(
    records: list[logging.LogRecord], secrets: list[str]
) -> list[logging.LogRecord]:
    """
    The records that carry one of *secrets* anywhere: message, arguments
    or traceback.
    """
    return [
        record
        for record in records
        if any(
            secret in text
            for secret in secrets
            for text in (
                record.getMessage(),
                repr(record.args),
                record.exc_text or "",
                repr(record.exc_info),
            )
        )
    ]


def rejections(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [
        record
        for record in records
        if record.getMessage().startswith("rejected a malformed request")
    ]


class TestParserErrors:
    async def test_malformed_requests_log_no_credential(
        self, serve, registry, clients, password_hash, caplog
    ):
        """50 requests that aiohttp's parser refuses (bare LF line ends,
        control characters in the URL), with valid credentials, get 400;
        the credentials are in no log record, and one line tells of them,
        at INFO, without a traceback."""
        caplog.set_level(logging.DEBUG)
        server = await serve(
            registry=registry,
            basic_auth_users={"prometheus": password_hash},
            bearer_token=TOKEN,
        )
        malformed = [
            b"GET /metrics HTTP/1.1\nHost: m\nAuthorization: Basic "
            + basic(PASSWORD)
            + b"\n\n",
            b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\nHost: m\r\n\r\n",
            b"GET /metrics\x01?" + TOKEN.encode() + b" HTTP/1.1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
        ]

        statuses = []
        for number in range(50):
            client = await connect(clients, server.port)
            await client.send(malformed[number % len(malformed)])
            statuses.append((await client.answer()).status)

        assert [400] * 50 == statuses
        secrets = [PASSWORD, basic(PASSWORD).decode(), TOKEN]
        assert [] == credential_records(caplog.records, secrets)
        (told,) = rejections(caplog.records)
        assert (logging.INFO, None) == (told.levelno, told.exc_info)
        assert told.getMessage().startswith(
            "rejected a malformed request from a client: 400 Bad"
        )
        assert [] == [
            record
            for record in caplog.records
            if record.name.startswith("aiohttp")
        ]

    @pytest.mark.parametrize(
        "target",
        [b"http://[::1/metrics", b"http://metrics:99999999/metrics"],
        ids=["unclosed-ipv6", "port-out-of-range"],
    )
    async def test_unreadable_urls(self, registry, clients, caplog, target):
        """URLs that aiohttp 3.10's parser lets through but yarl refuses
        get 400 and one line, not asyncio's tracebacks."""
        caplog.set_level(logging.INFO)
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            await client.send(
                b"GET " + target + b" HTTP/1.1\r\nHost: m\r\n\r\n"
            )
            answer = await client.answer()

            assert 400 == answer.status
            assert await client.closed_by_server()
        (told,) = [
            record
            for record in caplog.records
            if record.levelno >= logging.INFO
        ]
        assert told.getMessage().startswith(
            "rejected a malformed request from a client: 400 "
        )

    async def test_request_that_cannot_be_made(
        self, registry, clients, caplog, monkeypatch
    ):
        """A request aiohttp cannot make a request object of gets 400 and
        its connection is closed."""

        class Refusing(web.BaseRequest):
            def __init__(self, message: Any, *args: Any) -> None:
                if message.path == "/refused":
                    raise ValueError(TOKEN)
                super().__init__(message, *args)

        monkeypatch.setattr(_web_connections.web, "BaseRequest", Refusing)
        caplog.set_level(logging.INFO)
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            await client.send(b"GET /refused HTTP/1.1\r\nHost: m\r\n\r\n")
            answer = await client.answer()

            assert (400, "close") == (
                answer.status,
                answer.headers["connection"],
            )
            assert await client.closed_by_server()
        assert [
            "rejected a malformed request from a client: 400 ValueError"
        ] == [record.getMessage() for record in caplog.records]

    async def test_left_out_lines_are_counted(
        self, registry, clients, caplog, monkeypatch
    ):
        """Rejections within 10 s of a line are left out of the log; the
        next line says how many were."""
        now = [1000.0]
        monkeypatch.setattr(_web_connections, "monotonic", lambda: now[0])
        caplog.set_level(logging.INFO, logger="prom_async.aio.web")
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            for step in (0.0, 1.0, 8.0, 1.0):
                now[0] += step
                client = await connect(clients, server.socket.port)
                await client.send(b"GET / HTTP/1.1\n\n")
                await client.answer()

        assert [
            "rejected a malformed request from a client: 400 BadStatusLine",
            (
                "rejected a malformed request from a client: 400 "
                "BadStatusLine (2 more left out of the log)"
            ),
        ] == [record.getMessage() for record in rejections(caplog.records)]

    async def test_access_log_is_off(self, registry, clients, caplog):
        """Scrapes log nothing: no access log, nothing of ours above DEBUG
        (where an old prometheus_client is told of once)."""
        caplog.set_level(logging.DEBUG)
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            client = await connect(clients, server.socket.port)
            await client.send(SCRAPE)
            await client.answer()

        assert [] == [
            record
            for record in caplog.records
            if record.name.startswith("aiohttp")
            or (
                record.name.startswith("prom_async")
                and record.levelno > logging.DEBUG
            )
        ]

    async def test_a_failing_handler_keeps_its_traceback(
        self, registry, clients, caplog, monkeypatch
    ):
        """An error in answering (not the client's) is a 500 and an ERROR
        line with its traceback, also rate-limited."""

        async def broken(self: Any, request: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(_web_routes.ExporterRoutes, "answer", broken)
        async with await start_http_server(
            addr=LOOPBACK, registry=registry
        ) as server:
            statuses = []
            for _ in range(2):
                client = await connect(clients, server.socket.port)
                await client.send(SCRAPE)
                statuses.append((await client.answer()).status)

        (told,) = [
            record
            for record in caplog.records
            if record.name == "prom_async.aio.web"
        ]
        assert [500, 500] == statuses
        assert "answering a request failed: RuntimeError" == told.getMessage()
        assert logging.ERROR == told.levelno
        assert "a bug" in caplog.text


def refuse() -> None:
    raise BadHttpMessage(TOKEN)


class TestParserErrorLog:
    def test_message_without_exception(self, caplog):
        """A message aiohttp logs without an exception is told without its
        arguments."""
        ParserErrorLog(logging.getLogger("prom_async.aio.web")).warning(
            "Failed with %r", {"secret": TOKEN}
        )

        assert ["aiohttp: Failed with %r"] == [
            record.getMessage() for record in caplog.records
        ]

    @pytest.mark.parametrize("given", ["tuple", "current"])
    def test_exception_given_otherwise(self, caplog, given):
        """The exception comes as an exc_info tuple or as the one being
        handled; a rejection is told at INFO whatever aiohttp's level."""
        caplog.set_level(logging.DEBUG)
        quiet = ParserErrorLog(logging.getLogger("prom_async.aio.web"))
        try:
            refuse()
        except BadHttpMessage as error:
            if given == "tuple":
                quiet.debug("Error", exc_info=(type(error), error, None))
            else:
                quiet.exception("Error handling request")

        ((level, message),) = [
            (record.levelno, record.getMessage()) for record in caplog.records
        ]
        assert logging.INFO == level
        assert TOKEN not in message

    def test_other_levels(self, caplog):
        """info(), error() and critical() are told at their level."""
        caplog.set_level(logging.DEBUG)
        for level in ("info", "error", "critical"):
            quiet = ParserErrorLog(logging.getLogger("prom_async.aio.web"))
            getattr(quiet, level)("a problem")

        assert [logging.INFO, logging.ERROR, logging.CRITICAL] == [
            record.levelno for record in caplog.records
        ]


class RecordingHandler:
    """
    Stands in for aiohttp's protocol behind a guard: records what reaches
    it.
    """

    def __init__(self) -> None:
        self.received = b""
        self.calls: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.calls.append("connection_made")

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> None:
        self.calls.append("eof_received")

    def connection_lost(self, exc: Any) -> None:
        self.calls.append("connection_lost")

    def pause_writing(self) -> None:
        self.calls.append("pause_writing")

    def resume_writing(self) -> None:
        self.calls.append("resume_writing")

    def force_close(self) -> None:
        self.calls.append("force_close")


class FakeTransport:
    def __init__(self, sock: object = None) -> None:
        self.aborted = False
        self.closed = False
        self.written = b""
        self.socket = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.socket if name == "socket" else default

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


@pytest.fixture
async def guarded() -> AsyncIterator[
    tuple[_ConnectionGuard, RecordingHandler, FakeTransport]
]:
    """
    A guard in front of a recording handler, connected to a fake transport.
    """

    async def answer(request: Any) -> Any:
        raise AssertionError

    server = ExporterServer(
        answer,
        ConnectionLimits(idle_timeout=60, header_timeout=60, write_timeout=60),
        logging.getLogger("prom_async.aio.web"),
    )
    handler = RecordingHandler()
    guard = _ConnectionGuard(handler, server)  # type: ignore[arg-type]
    transport = FakeTransport()
    guard.connection_made(transport)  # type: ignore[arg-type]
    yield guard, handler, transport
    guard.connection_lost(None)


class TestConnectionGuard:
    async def test_one_head_at_a_time(self, guarded):
        """What follows a head waits until its request is answered; then
        the next head is handed on."""
        guard, handler, _ = guarded
        first = b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"
        second = b"GET /metrics HTTP/1.1\n\n"

        guard.data_received(first + second + b"GET")
        held = handler.received
        guard.request_started()
        guard.data_received(b" / HTTP/1.1")
        guard.request_finished(keep_alive=True)

        assert (first, first + second) == (held, handler.received)

    async def test_nothing_more_after_a_closing_answer(self, guarded):
        """What follows a request answered with Connection: close is
        dropped."""
        guard, handler, _ = guarded
        guard.data_received(SCRAPE + SCRAPE)
        guard.request_started()
        guard.request_finished(keep_alive=False)

        assert SCRAPE == handler.received

    async def test_blank_lines_before_a_request(self, guarded):
        """Empty lines before a request line are handed on; they end no
        head."""
        guard, handler, _ = guarded
        guard.data_received(b"\r\n")
        guard.data_received(b"\r\n" + SCRAPE + b"GET")

        assert b"\r\n\r\n" + SCRAPE == handler.received

    async def test_past_the_bound_is_aborted(self, guarded):
        """Past MAX_UNHANDLED_BYTES held, the connection is aborted and
        what it sends next is ignored."""
        guard, handler, transport = guarded
        guard.data_received(SCRAPE)
        guard.request_started()
        guard.data_received(b"x" * MAX_UNHANDLED_BYTES)
        before = transport.aborted
        guard.data_received(b"x")
        guard.data_received(b"y")

        assert (False, True) == (before, transport.aborted)
        assert SCRAPE == handler.received

    async def test_head_past_the_bound_is_aborted(self, guarded):
        """A head still arriving past MAX_UNHANDLED_BYTES is aborted, the
        bytes past the bound not handed on."""
        guard, handler, transport = guarded
        start = b"GET / HTTP/1.1\r\n"
        guard.data_received(start + b"x" * (MAX_UNHANDLED_BYTES - len(start)))
        before = transport.aborted
        guard.data_received(b"x")

        assert (False, True) == (before, transport.aborted)
        assert MAX_UNHANDLED_BYTES == len(handler.received)

    async def test_parser_that_raises(self, guarded, caplog):
        """An error out of aiohttp's parser that is not its own is a 400,
        a closed connection and one line without a traceback."""
        caplog.set_level(logging.INFO)
        guard, handler, transport = guarded

        def raising(data: bytes) -> None:
            raise ValueError(TOKEN)

        handler.data_received = raising  # type: ignore[method-assign]
        guard.data_received(SCRAPE)
        guard.data_received(SCRAPE)

        assert transport.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert (True, False) == (transport.closed, transport.aborted)
        assert [
            (
                logging.INFO,
                None,
                "rejected a malformed request from a client: 400 ValueError",
            )
        ] == [
            (record.levelno, record.exc_info, record.getMessage())
            for record in caplog.records
        ]

    async def test_delegates(self, guarded):
        """The protocol's other events reach aiohttp's protocol."""
        guard, handler, _ = guarded
        guard.pause_writing()
        guard.resume_writing()
        guard.eof_received()

        assert [
            "connection_made",
            "pause_writing",
            "resume_writing",
            "eof_received",
        ] == handler.calls

    async def test_stalled_write_is_aborted(self, guarded):
        """A client that reads nothing for write_timeout is aborted."""
        guard, _, transport = guarded
        guard._limits = ConnectionLimits(write_timeout=0.01)
        guard.pause_writing()

        await eventually(lambda: transport.aborted, what="the abort")


class HungCollector:
    """
    A collector whose collect() blocks until released.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> list[Any]:
        self.entered.set()
        self.release.wait(timeout=60)
        return []


@pytest.fixture
def hung(registry: CollectorRegistry) -> Iterator[HungCollector]:
    """
    A hung collector in the test's registry, released at teardown.
    """
    collector = HungCollector()
    registry.register(collector)  # type: ignore[arg-type]
    try:
        yield collector
    finally:
        collector.release.set()


class TestBoundedClose:
    async def test_close_with_a_hung_collector(
        self, serve: Serve, registry, clients, hung
    ):
        """close() returns within a few seconds while a scrape waits for a
        collector that hangs, its client still connected."""
        server = await serve(registry=registry, render_timeout=60)
        client = await connect(clients, server.port)
        await client.send(SCRAPE)
        await eventually(hung.entered.is_set, what="the render to start")

        await asyncio.wait_for(server.close(), CLOSE_DEADLINE)

        assert await client.closed_by_server()

    def test_threaded_close_with_a_hung_executor_job(self, registry):
        """The threaded server's close() does not wait for a job in its
        loop's default executor that hangs."""
        release = threading.Event()
        server = start_http_server_in_thread(addr=LOOPBACK, registry=registry)
        try:
            submitted = threading.Event()

            def submit() -> None:
                server._loop.run_in_executor(None, release.wait, 60)
                submitted.set()

            server._loop.call_soon_threadsafe(submit)
            assert submitted.wait(timeout=CLOSE_DEADLINE)
            closing = threading.Thread(target=server.close)
            closing.start()
            closing.join(timeout=CLOSE_DEADLINE)

            assert not closing.is_alive()
        finally:
            release.set()
            server.close()


class TestPassedOn:
    async def test_render_timeout(self, serve, registry, clients, hung):
        """render_timeout reaches the metrics: a render past it gets 503."""
        server = await serve(registry=registry, render_timeout=0.2)
        client = await connect(clients, server.port)
        await client.send(SCRAPE)

        assert 503 == (await client.answer()).status

    async def test_write_timeout(self, registry, clients):
        """write_timeout reaches the connections: a client that stops
        reading a large answer is cut off."""
        gauge = Gauge("wide", "Many series.", ["series"], registry=registry)
        for number in range(20_000):
            gauge.labels(f"{number:0>40}").set(number)
        async with await start_http_server(
            addr=LOOPBACK, registry=registry, write_timeout=0.2
        ) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(
                sock, (LOOPBACK, server.socket.port)
            )
            client = Client(*await asyncio.open_connection(sock=sock))
            clients.append(client)
            (connection,) = await eventually(
                lambda: server._runner.server.connections,
                what="the connection",
            )
            # What the kernel buffers for the client is not the server's:
            # kept small, so that the server sees that it does not read.
            connection.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16
            )
            await client.send(
                b"GET /metrics HTTP/1.1\r\nHost: m\r\n"
                b"Accept-Encoding: identity\r\n\r\n"
            )
            client.writer.transport.pause_reading()

            await eventually(
                lambda: server._runner.server.connections == [],
                what="the connection cut off",
                timeout=CLOSE_DEADLINE,
            )


class TestConnectionOptions:
    @bad_timeouts()
    @pytest.mark.parametrize("threaded", [False, True])
    async def test_bad_options(self, options, error, message, threaded):
        """Timeouts that are not positive finite numbers are refused at
        once, in the caller's thread, naming the option."""
        with pytest.raises(error) as raised:
            if threaded:
                start_http_server_in_thread(addr=LOOPBACK, **options)
            else:
                await start_http_server(addr=LOOPBACK, **options)

        assert message == str(raised.value)


class RefusingSocket:
    def setsockopt(self, *_: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")


class TestReset:
    @pytest.mark.parametrize(
        "sock", [None, RefusingSocket()], ids=["no socket", "refusing"]
    )
    def test_aborted_whatever_the_socket(self, sock: object):
        """A transport without a socket, or whose socket refuses
        SO_LINGER (shut down already), is aborted all the same."""
        transport = FakeTransport(sock)

        reset(transport)  # type: ignore[arg-type]

        assert transport.aborted
