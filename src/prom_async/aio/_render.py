"""
Render a registry into an exposition body without stalling the event loop.

The exporter asks a :class:`RegistryRenderer` for an :class:`Exposition`; the
renderer negotiates the format, encodes the registry in a worker thread of
its own pool, compresses it when the client allows, and shares one render
between all the scrapes that are waiting for the same representation at the
same moment.

A render that overruns its deadline cannot be stopped (a collector runs
until it returns), so it is not repeated: while a render of a registry has
run longer than its render timeout, scrapes of that registry get
:class:`RenderTimeoutError` at once, and a hung collector holds one thread
of the pool, not one per scrape.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import threading
import weakref

from typing import Final, NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from ._client_internals import metric_name
from ._render_families import LazyRegistry, Progress, encode_by_family
from ._render_lines import LineEncoder
from ._render_negotiation import Negotiated, negotiate
from ._workers import RENDERS, WorkerPool


__all__ = [
    "DEFAULT_RENDER_TIMEOUT",
    "Exposition",
    "RegistryRenderer",
    "RenderTimeoutError",
]

log = logging.getLogger("prom_async.aio.web")

#: Seconds a render may take when the scraper sends no timeout of its own.
DEFAULT_RENDER_TIMEOUT: Final = 10.0

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


class RenderTimeoutError(Exception):
    """
    The render did not finish by the scrape's deadline, or one of the same
    registry is still running past its render timeout.
    """


class _Flight:
    """
    A render of one key that has not started yet, and the scrapes waiting
    for it.
    """

    __slots__ = ("future", "negotiated", "waiters")

    def __init__(
        self, future: asyncio.Future[Exposition], negotiated: Negotiated
    ) -> None:
        self.future = future
        self.negotiated = negotiated
        self.waiters = 0


class _Render:
    """
    A render under way in a worker thread.
    """

    __slots__ = ("progress", "returned", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.progress = Progress()
        self.returned = False


class _Stall:
    """
    What the renderers of one registry share, in any thread: the renders
    running past their render timeout, and whether the stall was logged.
    """

    __slots__ = ("__weakref__", "overdue", "told")

    def __init__(self) -> None:
        self.overdue: set[_Render] = set()
        self.told = False


# Guards every _Stall and the map: held for a few attribute updates only.
_stall_lock = threading.Lock()
_stalls: weakref.WeakKeyDictionary[CollectorRegistry, _Stall] = (
    weakref.WeakKeyDictionary()
)


def _stall_of(registry: CollectorRegistry) -> _Stall:
    with _stall_lock:
        stall = _stalls.get(registry)
        if stall is None:
            stall = _stalls[registry] = _Stall()
        return stall


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
    render and the one :class:`bytes` object it produced.  One render runs
    at a time; scrapes of other representations wait for their own render
    behind it.

    Renders run in *pool* (the exporter's own, never the event loop's
    default executor); a renderer serves one event loop.

    Args:
        registry: The registry to expose: the global ``REGISTRY``, a custom
            one, or one holding a multiprocess collector.
        render_timeout: Seconds a scrape waits for its render at most; a
            render that runs longer is overdue, and scrapes of the registry
            (through any renderer) fail at once until it returns.
        pool: Where renders run.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        render_timeout: float = DEFAULT_RENDER_TIMEOUT,
        pool: WorkerPool = RENDERS,
    ) -> None:
        self._registry = registry
        self._render_timeout = render_timeout
        self._pool = pool
        self._stall = _stall_of(registry)
        self._waiting: dict[_RenderKey, _Flight] = {}
        self._running: _Render | None = None
        self._lines = LineEncoder()

    async def render(
        self,
        *,
        accept: str | None,
        accept_encoding: str | None,
        names: frozenset[str] | None,
        deadline: float | None = None,
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
            deadline: When the scrape gives up, in the running loop's
                time; never later than the render timeout from now.

        Returns:
            The exposition, shared with concurrent scrapes of the same kind.

        Raises:
            RenderTimeoutError: The deadline passed first, or a render of
                the registry is overdue.
            Exception: Whatever a collector raised while collecting (a
                ``BaseException`` as
                :class:`~._workers.JobInterruptedError`).
        """
        loop = asyncio.get_running_loop()
        latest = loop.time() + self._render_timeout
        deadline = latest if deadline is None else min(deadline, latest)
        if self._stall.overdue or deadline <= loop.time():
            raise self._timed_out(loop)
        negotiated = negotiate(accept)
        key = _RenderKey(
            negotiated.content_type, _accepts_gzip(accept_encoding), names
        )
        flight = self._waiting.get(key)
        if flight is None:
            future: asyncio.Future[Exposition] = loop.create_future()
            future.add_done_callback(_consume_exception)
            flight = self._waiting[key] = _Flight(future, negotiated)
        flight.waiters += 1
        try:
            self._start_next(loop)
            await asyncio.wait(
                (flight.future,), timeout=deadline - loop.time()
            )
            if not flight.future.done():
                raise self._timed_out(loop)
            return flight.future.result()
        finally:
            flight.waiters -= 1
            if not flight.waiters and self._waiting.get(key) is flight:
                # Nobody waits for it any more: it need not run.
                del self._waiting[key]
                flight.future.cancel()

    def _start_next(self, loop: asyncio.AbstractEventLoop) -> None:
        """
        Start the render that has waited longest, unless one is running.
        """
        while self._running is None and self._waiting:
            key = next(iter(self._waiting))
            flight = self._waiting.pop(key)
            render = _Render(loop.time())
            try:
                job = self._pool.run(
                    self._encode, key, flight.negotiated, render
                )
            except Exception as error:  # noqa: BLE001 -- the scrapes' error
                flight.future.set_exception(error)
                continue
            self._running = render
            overdue = loop.call_at(
                render.started + self._render_timeout, self._overdue, render
            )
            job.add_done_callback(
                functools.partial(self._finished, flight, overdue)
            )

    def _finished(
        self,
        flight: _Flight,
        overdue: asyncio.TimerHandle,
        job: asyncio.Future[Exposition],
    ) -> None:
        overdue.cancel()
        self._running = None
        if flight.waiters:
            # A scrape is answered in time: a later stall is news again.
            with _stall_lock:
                self._stall.told = False
        _copy_outcome(job, flight.future)
        self._start_next(asyncio.get_running_loop())

    def _overdue(self, render: _Render) -> None:
        with _stall_lock:
            if render.returned:
                return
            self._stall.overdue.add(render)
            tell = not self._stall.told
            self._stall.told = True
        if tell:
            self._tell(render, asyncio.get_running_loop())

    def _timed_out(
        self, loop: asyncio.AbstractEventLoop
    ) -> RenderTimeoutError:
        with _stall_lock:
            render = self._running or next(iter(self._stall.overdue), None)
            tell = not self._stall.told
            self._stall.told = True
        if tell:
            self._tell(render, loop)
        return RenderTimeoutError(
            f"rendering {_describe_registry(self._registry)} took too long"
        )

    def _tell(
        self, render: _Render | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        if render is None:
            log.warning(
                "Rendering %s: the scrape left no time for it and gets 503",
                _describe_registry(self._registry),
            )
            return
        log.warning(
            "Rendering %s is too slow: %.3g s so far, in %s; scrapes that "
            "cannot wait get 503, and all of them while it runs past %g s",
            _describe_registry(self._registry),
            loop.time() - render.started,
            _describe_collector(render.progress.collector),
            self._render_timeout,
        )

    def _encode(
        self, key: _RenderKey, negotiated: Negotiated, render: _Render
    ) -> Exposition:
        encoder, content_type = negotiated
        try:
            body = encode_by_family(
                encoder,
                LazyRegistry(
                    self._registry, key.names, progress=render.progress
                ),
                self._lines,
            )
            if key.compress:
                return Exposition(
                    gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0),
                    content_type,
                    "gzip",
                )
            return Exposition(body, content_type, None)
        finally:
            with _stall_lock:
                render.returned = True
                self._stall.overdue.discard(render)


def _describe_registry(registry: CollectorRegistry) -> str:
    if registry is REGISTRY:
        return "the global registry"
    # Not repr(): a subclass's own could block or raise.
    return object.__repr__(registry)


def _describe_collector(collector: object) -> str:
    """
    What a log line says of *collector*, without calling its code.
    """
    if collector is None:
        return "a collector it cannot name"
    kind = type(collector)
    described = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(collector, MetricWrapperBase):
        described += f" {metric_name(collector)!r}"
    return described


def _copy_outcome(
    source: asyncio.Future[Exposition], target: asyncio.Future[Exposition]
) -> None:
    # Neither is ever cancelled: the pool does not, and a render that
    # started is no longer dropped when its scrapes leave.
    if (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def _consume_exception(future: asyncio.Future[Exposition]) -> None:
    # Every waiter may have gone away (a client hung up); the outcome is
    # still looked at so asyncio does not log it as never retrieved.
    if not future.cancelled():
        future.exception()
