"""
Render a registry into an exposition body without stalling the event loop.

The exporter asks a :class:`RegistryRenderer` for an :class:`Exposition`; the
renderer negotiates the format, encodes the registry in a worker thread,
compresses it when the client allows, and shares one render between all the
scrapes that are waiting for the same representation at the same moment.
"""

from __future__ import annotations

import asyncio
import gzip

from typing import TYPE_CHECKING, NamedTuple

from ._render_families import LazyRegistry, encode_by_family
from ._render_lines import LineEncoder
from ._render_negotiation import negotiate


if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


__all__ = ["Exposition", "RegistryRenderer"]

# Level 1 compresses a 10k-sample body in a seventh of level 6's time
# (0.9 ms against 6.7), for a body about 1.5 times as large (47 KB against
# 32 KB): worth it while renders are this fast; see the throughput benchmark.
_GZIP_LEVEL = 1


class Exposition(NamedTuple):
    """
    One rendered scrape: the body and the headers that describe it.

    Attributes:
        body: The encoded (and maybe compressed) exposition.
        content_type: The value for the ``Content-Type`` header.
        content_encoding: ``"gzip"`` when *body* is compressed, else
            :data:`None`.
    """

    body: bytes
    content_type: str
    content_encoding: str | None


class _RenderKey(NamedTuple):
    content_type: str
    compress: bool
    names: frozenset[str] | None


class _Flight:
    """
    The render under way for one key, and the one queued behind it.
    """

    __slots__ = ("queued", "running")

    def __init__(self) -> None:
        self.running: asyncio.Future[Exposition] | None = None
        self.queued: asyncio.Future[Exposition] | None = None


def _accepts_gzip(accept_encoding: str | None) -> bool:
    """
    Whether an ``Accept-Encoding`` header admits gzip.

    ``gzip`` (or ``x-gzip``) with a non-zero quality admits it, and so does
    ``*`` with a non-zero quality when gzip is not named; ``q=0`` refuses.
    """
    if not accept_encoding:
        return False
    wildcard: bool | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding not in {"gzip", "x-gzip", "*"}:
            continue
        acceptable = _quality(params) > 0
        if coding == "*":
            wildcard = acceptable
        else:
            return acceptable
    return bool(wildcard)


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


class RegistryRenderer:
    """
    Render one registry for scrapes, off the event loop, sharing renders.

    A scrape is answered by a render that began no earlier than the scrape
    arrived, so it never sees values older than its request; all the scrapes
    that wait for the same representation at the same moment share that one
    render and the one :class:`bytes` object it produced.

    Renders run in the event loop's default executor; a renderer serves
    one event loop.

    Args:
        registry: The registry to expose: the global ``REGISTRY``, a custom
            one, or one holding a multiprocess collector.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._flights: dict[_RenderKey, _Flight] = {}
        self._lines = LineEncoder()

    async def render(
        self,
        *,
        accept: str | None,
        accept_encoding: str | None,
        names: frozenset[str] | None,
    ) -> Exposition:
        """
        Render the registry as the client asked.

        Args:
            accept: The request's ``Accept`` header, negotiated like
                ``prometheus_client`` does (text 0.0.4 or OpenMetrics).
            accept_encoding: The request's ``Accept-Encoding`` header;
                gzip is used when it admits gzip.
            names: Only the time series with these names (``name[]``), or
                :data:`None` for all.

        Returns:
            The exposition, shared with concurrent scrapes of the same kind.

        Raises:
            Exception: Whatever a collector raised while collecting.
        """
        content_type = negotiate(accept).content_type
        key = _RenderKey(content_type, _accepts_gzip(accept_encoding), names)
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
        if flight.running is None:
            waiting = self._start(key, flight, accept or "")
        else:
            if flight.queued is None:
                flight.queued = asyncio.get_running_loop().create_future()
                flight.queued.add_done_callback(_consume_exception)
            waiting = flight.queued
        return await asyncio.shield(waiting)

    def _start(
        self,
        key: _RenderKey,
        flight: _Flight,
        accept: str,
        into: asyncio.Future[Exposition] | None = None,
    ) -> asyncio.Future[Exposition]:
        loop = asyncio.get_running_loop()
        try:
            running = loop.run_in_executor(None, self._encode, key, accept)
        except RuntimeError as error:  # The executor is shut down.
            if into is None:
                raise
            into.set_exception(error)
            flight.running = None
            self._flights.pop(key, None)
            return into
        flight.running = running

        def finished(done: asyncio.Future[Exposition]) -> None:
            if into is not None and not into.done():
                _copy_outcome(done, into)
            queued, flight.queued = flight.queued, None
            if queued is None:
                flight.running = None
                del self._flights[key]
            else:
                self._start(key, flight, accept, queued)

        running.add_done_callback(_consume_exception)
        running.add_done_callback(finished)
        return running

    def _encode(self, key: _RenderKey, accept: str) -> Exposition:
        encoder, content_type = negotiate(accept)
        body = encode_by_family(
            encoder, LazyRegistry(self._registry, key.names), self._lines
        )
        if key.compress:
            return Exposition(
                gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0),
                content_type,
                "gzip",
            )
        return Exposition(body, content_type, None)


def _copy_outcome(
    source: asyncio.Future[Exposition], target: asyncio.Future[Exposition]
) -> None:
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def _consume_exception(future: asyncio.Future[Exposition]) -> None:
    # Every waiter may have gone away (a client hung up); the outcome is
    # still looked at so asyncio does not log it as never retrieved.
    if not future.cancelled():
        future.exception()
