"""
LoopMonitor: the health of a running event loop, and a watchdog that sees
it stuck while it is stuck.

A probe timer is rescheduled every *interval* seconds; how late the loop
runs it is the loop's lag. The probe writes when it is due next; the
watchdog gauge is read in the collecting thread (the threaded exporter's),
from that timestamp alone, so it keeps rising while the loop is stuck.
"""

from __future__ import annotations

import asyncio
import math
import time

from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from . import _loop_slow
from ._families import family
from ._loop_gauges import ScrapeTimeGauge
from ._options import check_seconds


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from types import TracebackType

    from aiohttp import web
    from typing_extensions import Self


__all__ = ["LAG_BUCKETS", "LoopMonitor"]

#: The buckets of ``asyncio_event_loop_lag_seconds``: 1 ms to 10 s.
LAG_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_SLOTS: Final = 12

_M = TypeVar("_M")


class WorstLag:
    """
    The worst lag of the last *window* seconds, kept in whole slots.

    The window is cut into 12 slots of *window* / 12 seconds; the worst is
    that of the current slot and the 12 before it, so a lag stays for at
    least *window* seconds and for at most one slot more. Each slot is a
    ``(slot number, worst lag)`` tuple, replaced whole: another thread reads
    them without a lock.
    """

    def __init__(self, window: float) -> None:
        self._slot_length = window / _SLOTS
        self._slots: list[tuple[int, float]] = [(-1, 0.0)] * (_SLOTS + 1)

    def record(self, now: float, lag: float) -> None:
        number = math.floor(now / self._slot_length)
        index = number % len(self._slots)
        slot_number, worst = self._slots[index]
        if slot_number != number or lag > worst:
            self._slots[index] = (number, lag)

    def worst(self, now: float) -> float:
        oldest = math.floor(now / self._slot_length) - _SLOTS
        return max(
            (lag for number, lag in self._slots if number >= oldest),
            default=0.0,
        )


def _check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if name == "":
        raise ValueError("name must not be empty; None leaves the label out")


class LoopMonitor:
    """
    Report the health of the running event loop while started.

    Use it as an async context manager (``async with LoopMonitor():``), or
    in an :class:`aiohttp.web.Application`'s cleanup contexts
    (:meth:`cleanup_ctx`), or call :meth:`start` and :meth:`stop`.

    While started, it reports into *registry*:

    ``asyncio_event_loop_lag_seconds`` (histogram)
        How late the loop ran the monitor's probe timer, once per
        *interval*. A loop that keeps up stays below 1 ms.
    ``asyncio_event_loop_lag_max_seconds`` (gauge, read when scraped)
        The worst lag of the last *window* seconds (or up to *window* /
        12 seconds more), a stall in progress included: a spike between
        two scrapes is not lost.
    ``asyncio_event_loop_blocked_seconds`` (gauge, read when scraped)
        How long the probe is overdue: the time since the loop last ran
        it, less the *interval* it waited; ``0`` while the loop keeps up.
        It is read by the thread that collects the registry, so an
        exporter in a thread of its own
        (:func:`~prom_async.aio.web.start_http_server_in_thread`) reports
        a stuck loop while it is stuck.
    ``asyncio_tasks`` (gauge, read when scraped)
        The loop's tasks that are not done.
    ``asyncio_event_loop_slow_callbacks_total`` (counter, opt-in)
        The callbacks that ran for *slow_callback_threshold* seconds or
        longer; asyncio's own event loops only.

    The gauges have samples only while the monitor runs. With *name*, every
    metric has a ``loop`` label of that value.

    Args:
        interval: Seconds between two probes. Each costs some microseconds
            of CPU time; at the default, well under 1% of one core.
        window: Seconds over which ``asyncio_event_loop_lag_max_seconds``
            keeps the worst lag: at least the scrape interval.
        registry: Where the metrics are registered. Monitors into one
            registry share the metric families.
        namespace: A prefix for the metric names, joined with ``_``.
        name: The ``loop`` label's value; needed to run monitors of two
            loops (in two threads) into one registry at once.
        slow_callback_threshold: Count the callbacks that run for this many
            seconds or longer; ``None`` counts none. Needs one of asyncio's
            own event loops (not uvloop), whose every callback it times.
        buckets: The buckets of the lag histogram.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option has a wrong value, or the metrics exist in
            *registry* with other label names (one monitor was given a
            *name*, another not) or other buckets.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        *,
        interval: float = 0.1,
        window: float = 60.0,
        registry: CollectorRegistry = REGISTRY,
        namespace: str = "",
        name: str | None = None,
        slow_callback_threshold: float | None = None,
        buckets: Sequence[float] = LAG_BUCKETS,
    ) -> None:
        self._interval = check_seconds("interval", interval)
        self._window = check_seconds("window", window)
        if not isinstance(registry, CollectorRegistry):
            raise TypeError(
                "registry must be a prometheus_client.CollectorRegistry, "
                f"not {type(registry).__name__}"
            )
        if not isinstance(namespace, str):
            raise TypeError(
                f"namespace must be a string, not {type(namespace).__name__}"
            )
        _check_name(name)
        self._namespace = namespace
        self._name = name
        self._labelvalues = () if name is None else (name,)
        labelnames = () if name is None else ("loop",)

        def make(
            kind: type[_M], metric: str, documentation: str, **options: Any
        ) -> _M:
            return family(
                kind,
                metric,
                documentation,
                labelnames,
                registry=registry,
                namespace=namespace,
                **options,
            )

        lag = make(
            Histogram,
            "asyncio_event_loop_lag_seconds",
            "How late the event loop ran the monitor's probe timer.",
            buckets=tuple(buckets),
        )
        self._lag = lag.labels(*self._labelvalues) if name else lag
        self._blocked = make(
            ScrapeTimeGauge,
            "asyncio_event_loop_blocked_seconds",
            "How long the event loop's probe is overdue: how long the loop "
            "has been stuck; 0 while it keeps up.",
        )
        self._gauges = [
            (self._blocked, self._read_blocked),
            (
                make(
                    ScrapeTimeGauge,
                    "asyncio_event_loop_lag_max_seconds",
                    "The worst event loop lag over the monitor's window, a "
                    "stall in progress included.",
                ),
                self._read_worst_lag,
            ),
            (
                make(
                    ScrapeTimeGauge,
                    "asyncio_tasks",
                    "The event loop's tasks that are not done.",
                ),
                self._read_tasks,
            ),
        ]
        self._slow: tuple[float, Counter] | None = None
        if slow_callback_threshold is not None:
            threshold = check_seconds(
                "slow_callback_threshold", slow_callback_threshold
            )
            slow = make(
                Counter,
                "asyncio_event_loop_slow_callbacks",
                "Event loop callbacks that ran for at least the monitor's "
                "threshold.",
            )
            self._slow = (
                threshold,
                slow.labels(*self._labelvalues) if name else slow,
            )
        self._run: _Run | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        name = "" if self._name is None else f" {self._name!r}"
        return (
            f"<LoopMonitor{name} interval={self._interval:g} "
            f"window={self._window:g} {state}>"
        )

    @property
    def running(self) -> bool:
        """
        Whether the monitor is started.
        """
        return self._run is not None

    def start(self) -> None:
        """
        Start monitoring the running event loop.

        Raises:
            RuntimeError: No event loop runs in this thread; the monitor is
                running; another monitor with the same *name* (or none)
                reports into the same registry and namespace; or
                slow-callback counting was asked for and this loop is not
                one of asyncio's own.
        """
        loop = asyncio.get_running_loop()
        if self._run is not None:
            raise RuntimeError(f"{self!r} is already running")
        if self._slow is not None:
            _loop_slow.check(loop)
        run = _Run(loop, self._interval, self._window, self._probe)
        self._run = run
        try:
            # The watchdog's sample is the claim on the series: only one
            # running monitor per registry, namespace and name has it.
            other = self._blocked.claim(self._labelvalues, self._read_blocked)
            if other is not None:
                self._refuse(other)
            if self._slow is not None:
                _loop_slow.watch(loop, *self._slow)
        except BaseException:
            self._run = None
            run.handle.cancel()
            self._blocked.remove(self._labelvalues, self._read_blocked)
            raise
        for gauge, reading in self._gauges[1:]:
            gauge.add(self._labelvalues, reading)

    def stop(self) -> None:
        """
        Stop monitoring; the gauges' samples go away. Stopping a monitor
        that is not running does nothing.

        Call it from the monitored loop, or once that loop has stopped.

        Raises:
            RuntimeError: Called while the monitored loop runs, from
                elsewhere.
        """
        run = self._run
        if run is None:
            return
        loop = run.loop
        if loop.is_running() and _running_loop() is not loop:
            raise RuntimeError(
                f"{self!r}.stop() must be called from the loop it monitors"
            )
        self._run = None
        run.handle.cancel()
        for gauge, reading in self._gauges:
            gauge.remove(self._labelvalues, reading)
        if self._slow is not None:
            _loop_slow.unwatch(loop, self._slow[1])

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def cleanup_ctx(
        self,
        app: web.Application,  # noqa: ARG002 -- aiohttp passes it
    ) -> AsyncIterator[None]:
        """
        Run the monitor while *app* runs:
        ``app.cleanup_ctx.append(LoopMonitor().cleanup_ctx)``.

        It starts when the application starts up, and stops when it is
        cleaned up.
        """
        async with self:
            yield

    def _refuse(self, other: object) -> NoReturn:
        where = f" with namespace {self._namespace!r}" * bool(self._namespace)
        raise RuntimeError(
            f"{other!r} already reports into this registry{where}; give "
            "each loop's monitor a name= of its own (the loop label), or "
            "stop the other one first"
        )

    def _probe(self, run: _Run) -> None:
        now = time.monotonic()
        lag = max(0.0, now - run.due)
        # The next probe first: nothing that fails below stops the probes.
        run.due = now + self._interval
        run.handle = run.loop.call_later(self._interval, self._probe, run)
        self._lag.observe(lag)
        run.worst.record(now, lag)

    def _read_blocked(self) -> float | None:
        run = self._run
        if run is None or run.loop.is_closed():
            return None
        if not run.loop.is_running():
            return 0.0
        return max(0.0, time.monotonic() - run.due)

    def _read_worst_lag(self) -> float | None:
        run = self._run
        blocked = self._read_blocked()
        if run is None or blocked is None:
            return None
        return max(blocked, run.worst.worst(time.monotonic()))

    def _read_tasks(self) -> float | None:
        run = self._run
        if run is None or run.loop.is_closed():
            return None
        try:
            # Safe from another thread: asyncio retries a copy that
            # another thread changed (before 3.14), or pauses the others.
            return float(len(asyncio.all_tasks(run.loop)))
        except RuntimeError:
            return None


class _Run:
    """
    One run of a monitor: its loop, its probe's timer and when it is due,
    and the worst lags.
    """

    __slots__ = ("due", "handle", "loop", "worst")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        window: float,
        probe: Callable[[_Run], None],
    ) -> None:
        self.loop = loop
        self.worst = WorstLag(window)
        self.due = time.monotonic() + interval
        self.handle = loop.call_later(interval, probe, self)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
