"""
Send a large exposition to a client chunk by chunk, as fast as it reads.

A body handed to aiohttp as :class:`bytes` goes to the transport in one
write, which copies what the socket does not take at once into the
transport's buffer: a client that does not read pins a copy of the whole
body, and many clients at once make the event loop copy megabytes in one
step.  :class:`SharedBody` writes slices of the one body that every scrape
of a render shares, one chunk at a time, each followed by a wait for the
transport to drain below its high-water mark, and the loop runs other tasks
between two chunks: a connection holds at most that mark and a chunk.  A
chunk that does not drain within the write timeout aborts the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from typing import TYPE_CHECKING, Any, Final

from aiohttp import payload


if TYPE_CHECKING:
    from collections.abc import Awaitable

    from aiohttp import web
    from aiohttp.abc import AbstractStreamWriter


__all__ = ["CHUNK", "DEFAULT_WRITE_TIMEOUT", "SharedBody", "reset"]

log = logging.getLogger("prom_async.aio.web")

#: Bytes written at a time.  Fifty clients reading at once make the loop
#: write fifty chunks between two looks at its other tasks: with 16 KiB,
#: that step stays under a few milliseconds (64 KiB tripled it).
CHUNK: Final = 1 << 14
#: Seconds one chunk may take to be written and drained, by default.
DEFAULT_WRITE_TIMEOUT: Final = 10.0


class SharedBody(payload.Payload):
    """
    A response body written in chunks, each within *write_timeout*.

    Args:
        body: The bytes to send; slices of it are written, never copies.
        content_type: The body's ``Content-Type``.
        request: The request answered; its transport is aborted when a
            chunk is not written in time.
        write_timeout: Seconds each chunk may take to be written and
            drained.
    """

    def __init__(
        self,
        body: bytes,
        *,
        content_type: str,
        request: web.BaseRequest,
        write_timeout: float,
    ) -> None:
        super().__init__(body, content_type=content_type)
        self._size = len(body)
        self._body = body
        self._request = request
        self._write_timeout = write_timeout
        self._cut_off = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """
        The body as text.
        """
        return self._body.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        """
        Write the body to *writer* chunk by chunk, each drained before the
        next; abort the connection when a chunk takes too long.

        Raises:
            ConnectionResetError: The connection was aborted, or closed.
        """
        view = memoryview(self._body)
        for start in range(0, len(view), CHUNK):
            await self._in_time(
                self._send(writer, view[start : start + CHUNK])
            )
            # Other connections' chunks go out between two of this one.
            await asyncio.sleep(0)

    @staticmethod
    async def _send(writer: AbstractStreamWriter, chunk: memoryview) -> None:
        await writer.write(chunk)
        # aiohttp's writer drains only past 64 KiB of its own count: at most
        # one chunk is added to a transport buffer below its high mark.
        await writer.drain()

    async def _in_time(self, step: Awaitable[Any]) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._write_timeout, self._abort)
        try:
            await step
        finally:
            timer.cancel()
        if self._cut_off:
            raise ConnectionResetError("the client read too slowly")

    def _abort(self) -> None:
        self._cut_off = True
        transport = self._request.transport
        # None only when the client left in the same loop iteration.
        if transport is not None:  # pragma: no branch
            reset(transport)
        log.debug(
            "A scrape's client took more than %g s to read %d bytes: "
            "connection aborted",
            self._write_timeout,
            CHUNK,
        )


# SO_LINGER on, with no time to linger: close() resets the connection.
_RESET_ON_CLOSE: Final = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """
    Close *transport* at once with a TCP reset, so that the kernel drops
    what it still holds to send to a client that does not read, instead of
    keeping it (megabytes per connection) until the client goes away.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # A socket already shut down refuses it; abort() still closes.
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE
            )
    transport.abort()
