"""
The standalone exporter's connections: what a client may hold, and for how
long, whatever it sends.

aiohttp's low-level server parses the requests.  Each of its connection
protocols is wrapped in a :class:`_ConnectionGuard` that owns the timers
aiohttp lacks or starts late (a connection that sends nothing, a request
head that arrives a byte at a time, a client that stops reading) and hands
aiohttp one request head at a time: what a client sends past a head waits in
the guard until that request is answered, so a flood of pipelined requests
costs a bounded buffer, not a queue of parsed requests.  The exporter's
requests have no body; one that has is answered and its connection closed.
aiohttp's logger is a :class:`ParserErrorLog`, which tells of a refused
request in one line without a byte of it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys

from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any, Final, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from ._web_body import DEFAULT_WRITE_TIMEOUT, reset


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.http_parser import RawRequestMessage
    from aiohttp.streams import StreamReader


__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "MAX_FIELD_SIZE",
    "MAX_HEADERS",
    "MAX_LINE_SIZE",
    "MAX_UNHANDLED_BYTES",
    "ConnectionLimits",
    "ExporterServer",
    "ParserErrorLog",
]

#: Seconds a connection may send nothing, before its first request or
#: between two, by default: nginx's keep-alive timeout.
DEFAULT_IDLE_TIMEOUT: Final = 75.0
#: Seconds a request head may take to arrive once its first byte has, by
#: default.
DEFAULT_HEADER_TIMEOUT: Final = 10.0
#: Bytes a connection may have sent that no request handler has started on
#: (a head still arriving, pipelined requests); past it, it is aborted.
MAX_UNHANDLED_BYTES: Final = 1 << 20
#: aiohttp's bounds on a request head: the request line and each header
#: line, and how many headers (aiohttp 3.10 takes 32768 by default, and
#: does not enforce it: MAX_UNHANDLED_BYTES bounds a head there).
MAX_LINE_SIZE: Final = 8190
MAX_FIELD_SIZE: Final = 8190
MAX_HEADERS: Final = 100
#: Seconds between two log lines about rejected requests, at least.
LOG_INTERVAL: Final = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """
    The timeouts of one server's connections, in seconds.
    """

    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    #: How long the client may read nothing of an answer it has stopped
    #: reading.
    write_timeout: float = DEFAULT_WRITE_TIMEOUT


class ExporterServer(web.Server):
    """
    aiohttp's low-level server, whose connections are guarded.

    Args:
        answer: Makes the response to a request; the server writes it.
        limits: The connections' timeouts.
        log: Where the parser's rejections are told, one line at a time.
    """

    def __init__(
        self,
        answer: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        limits: ConnectionLimits,
        log: logging.Logger,
    ) -> None:
        self._answer = answer
        self.limits = limits
        self.guards: dict[web.RequestHandler, _ConnectionGuard] = {}
        self.parser_log = ParserErrorLog(log)
        super().__init__(
            self._handle,
            request_factory=self._build_request,
            access_log=None,
            logger=self.parser_log,
            # The guards close idle connections; aiohttp's own timer, which
            # 3.10 starts only after a first request, is a later backstop.
            keepalive_timeout=limits.idle_timeout + limits.header_timeout,
            # Nothing of a body reaches aiohttp: there is nothing to linger
            # for.
            lingering_time=0,
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )

    # The protocol made for a connection is a guard that delegates to
    # aiohttp's, not aiohttp's itself.
    def __call__(self) -> _ConnectionGuard:  # type: ignore[override]
        return _ConnectionGuard(super().__call__(), self)

    def _build_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        loop = asyncio.get_running_loop()
        try:
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop
            )
        except ValueError as error:
            # aiohttp 3.10's parser lets URLs through that yarl refuses.
            self.parser_log.rejected(error)
            return _RefusedRequest(
                message._replace(url=URL("/")),
                payload,
                protocol,
                writer,
                task,
                loop,
            )

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        guard = self.guards.get(request.protocol, _UNGUARDED)
        guard.request_started()
        keep_alive = False
        try:
            refused = isinstance(request, _RefusedRequest)
            response = (
                web.Response(status=400, text="400: Bad Request")
                if refused
                else await self._answer(request)
            )
            if refused or request.body_exists:
                response.force_close()
            try:
                # Written here rather than by aiohttp, so that the guard
                # knows when the answer is out.
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                # aiohttp's own write of it finds the client gone too.
                return response
            keep_alive = bool(response.keep_alive)
        finally:
            guard.request_finished(keep_alive=keep_alive)
        return response


class _RefusedRequest(web.BaseRequest):
    """
    A request whose URL could not be read, made with ``/`` instead; it is
    answered ``400``.
    """


_IDLE: Final = "idle"
_HEAD: Final = "head"
_SENT: Final = "sent"
_BUSY: Final = "busy"
_CLOSED: Final = "closed"
_LINE_ENDS: Final = b"\r\n"
_BAD_REQUEST: Final = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class _ConnectionGuard(asyncio.Protocol):
    """
    One connection's protocol: aiohttp's, behind timers and a buffer.

    Its states: *idle* (nothing of a request yet; the idle timer runs),
    *head* (a head is arriving and handed on; the header timer runs),
    *sent* (a whole head was handed on; the header timer runs until the
    request starts), *busy* (a request is handled; no timer) and *closed*.
    What arrives in *sent* or *busy* is held until the request is answered.
    """

    def __init__(
        self, handler: web.RequestHandler, server: ExporterServer
    ) -> None:
        self._handler = handler
        self._server = server
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._state = _IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._held = bytearray()
        self._head_size = 0
        self._head_content = False
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        self._server.guards[self._handler] = self
        self._handler.connection_made(transport)
        self._start_timer(self._limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._stop_timer()
        self._stop_write_timer()
        self._held.clear()
        self._server.guards.pop(self._handler, None)
        self._handler.connection_lost(exc)

    def eof_received(self) -> bool | None:
        # aiohttp's closes the connection at the client's end of sending.
        self._handler.eof_received()
        return None

    def pause_writing(self) -> None:
        self._handler.pause_writing()
        self._stop_write_timer()
        self._write_timer = self._loop.call_later(
            self._limits.write_timeout, self._abort
        )

    def resume_writing(self) -> None:
        self._stop_write_timer()
        self._handler.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._state is _CLOSED:
            return
        if self._state in {_SENT, _BUSY}:
            self._held += data
            self._check_unhandled()
            return
        if self._state is _IDLE:
            self._state = _HEAD
            self._head_size = 0
            self._head_content = False
            self._tail = b""
            self._start_timer(self._limits.header_timeout)
        head, rest = self._split_head(data)
        self._head_size += len(head)
        self._held += rest
        if not self._check_unhandled():
            return
        try:
            self._handler.data_received(head)
        except Exception as error:  # noqa: BLE001 -- whatever the parser raises
            # aiohttp 3.10 lets some errors out of its parser (yarl's,
            # about URLs); asyncio would log them with their traceback.
            self._server.parser_log.rejected(error)
            self._state = _CLOSED
            self._held.clear()
            assert self._transport is not None  # noqa: S101 -- connected
            self._transport.write(_BAD_REQUEST)
            self._transport.close()

    def request_started(self) -> None:
        """
        The request whose head was handed on is being handled.
        """
        if self._state is _CLOSED:
            return
        self._state = _BUSY
        self._head_size = 0
        self._stop_timer()

    def request_finished(self, *, keep_alive: bool) -> None:
        """
        Its answer is written; the next request may come.
        """
        if self._state is _CLOSED:
            return
        self._state = _IDLE
        self._start_timer(self._limits.idle_timeout)
        held, self._held = bytes(self._held), bytearray()
        if keep_alive and held:
            self.data_received(held)

    def _split_head(self, data: bytes) -> tuple[bytes, bytes]:
        """
        What of *data* belongs to the head arriving, and what comes after
        its end (the first empty line, CRLF or bare LF, once the request
        line has begun).
        """
        start = 0
        if not self._head_content:
            # Empty lines before a request line are skipped by parsers.
            start = len(data) - len(data.lstrip(_LINE_ENDS))
            if start == len(data):
                return data, b""
            self._head_content = True
        window = self._tail + data[start:]
        ends = [
            found + len(end)
            for end in (b"\n\n", b"\n\r\n")
            if (found := window.find(end)) >= 0
        ]
        if not ends:
            self._tail = window[-2:]
            return data, b""
        self._state = _SENT
        cut = start + min(ends) - len(self._tail)
        return data[:cut], data[cut:]

    def _check_unhandled(self) -> bool:
        if self._head_size + len(self._held) <= MAX_UNHANDLED_BYTES:
            return True
        self._abort()
        return False

    def _start_timer(self, seconds: float) -> None:
        self._stop_timer()
        self._timer = self._loop.call_later(seconds, self._time_out)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _time_out(self) -> None:
        self._timer = None
        self._handler.force_close()

    def _abort(self) -> None:
        self._state = _CLOSED
        self._held.clear()
        assert self._transport is not None  # noqa: S101 -- connected
        reset(self._transport)


class _Unguarded:
    """
    Stands in for the guard of a connection lost before its request
    started.
    """

    def request_started(self) -> None:
        """
        Nothing to do.
        """

    def request_finished(self, *, keep_alive: bool) -> None:
        """
        Nothing to do.
        """


_UNGUARDED: Final = _Unguarded()


class ParserErrorLog:
    """
    The logger aiohttp's server is given: one line per problem, without a
    byte of the request.

    aiohttp logs a request its parser refuses at ERROR, with a traceback
    and a message that quotes the offending bytes (an ``Authorization``
    header among them).  Here such a rejection is one INFO line with the
    status and the exception's class only; other errors are told at their
    level, with their traceback.  Each kind gets a line every
    :data:`LOG_INTERVAL` seconds at most; the next line counts those left
    out.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._rejections = _Throttle()
        self._failures = _Throttle()

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(
        self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any
    ) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kwargs)

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)

    def log(
        self,
        level: int,
        msg: object,
        *_args: object,
        exc_info: Any = None,
        **_kwargs: Any,
    ) -> None:
        # aiohttp's arguments may hold what the client sent: only the
        # exception's class is told, or the bare message.
        error = _exception_of(exc_info)
        if isinstance(error, HttpProcessingError):
            self.rejected(error)
            return
        left_out = self._failures.allow()
        if left_out is None:
            return
        if error is None:
            self._log.log(level, "aiohttp: %s%s", msg, _left_out(left_out))
        else:
            self._log.log(
                level,
                "answering a request failed: %s%s",
                type(error).__name__,
                _left_out(left_out),
                exc_info=error,
            )

    def rejected(self, error: BaseException) -> None:
        """
        Tell of a request refused with ``400`` because of *error*.
        """
        left_out = self._rejections.allow()
        if left_out is not None:
            self._log.info(
                "rejected a malformed request from a client: 400 %s%s",
                type(error).__name__,
                _left_out(left_out),
            )


def _exception_of(exc_info: Any) -> BaseException | None:
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    return exc_info if isinstance(exc_info, BaseException) else None


def _left_out(count: int) -> str:
    return f" ({count} more left out of the log)" if count else ""


class _Throttle:
    """
    Allows one event every :data:`LOG_INTERVAL` seconds; counts the others.
    """

    def __init__(self) -> None:
        self._next = -math.inf
        self._left_out = 0

    def allow(self) -> int | None:
        """
        How many were left out since the last allowed, or None for this
        one.
        """
        now = monotonic()
        if now < self._next:
            self._left_out += 1
            return None
        self._next = now + LOG_INTERVAL
        left_out, self._left_out = self._left_out, 0
        return left_out
