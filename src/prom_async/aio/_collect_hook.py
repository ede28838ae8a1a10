"""
One registered scrape hook: its runs on the event loop it was registered on,
shared by the scrapes that wait for them, and its health metrics.

A run is submitted to the hook's loop with ``run_coroutine_threadsafe``,
whatever loop the scrape runs on, so its outcome is a concurrent future that
scrapes on any loop can wait for (through ``asyncio.wrap_future``) without
cancelling it: a scrape that stops waiting leaves the run to finish for the
next one. The state (the run under way, the last outcome) is shared by the
exporters' threads and taken under a lock that is never held across an
``await`` or a call into the hook.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import weakref

from typing import TYPE_CHECKING, Final, NamedTuple

from prometheus_client import CollectorRegistry, Gauge

from ._families import family


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


__all__ = ["Health", "ScrapeHook", "clock", "health_of"]

log = logging.getLogger("prom_async.aio.collect")

#: The clock of runs and of ``min_interval``; the tests replace it.
clock = time.monotonic

DURATION: Final = "prom_async_scrape_hook_duration_seconds"
SUCCESS: Final = "prom_async_scrape_hook_success"


class Health(NamedTuple):
    """
    The two gauges that say how a registry's hooks did.
    """

    duration: Gauge
    success: Gauge


def health_of(registry: CollectorRegistry) -> Health:
    """
    The health gauges of *registry*'s hooks, made on first use.
    """
    return Health(
        family(
            Gauge,
            DURATION,
            "How long the scrape hook's last run took, or has run so far "
            "when it did not finish in time; 0 when it was skipped.",
            ("hook",),
            registry=registry,
        ),
        family(
            Gauge,
            SUCCESS,
            "Whether the scrape hook's last run finished in time without "
            "an error (1) or not (0).",
            ("hook",),
            registry=registry,
        ),
    )


class _Outcome(NamedTuple):
    ok: bool
    duration: float
    finished: float


class _Run:
    """
    One run of a hook, from its submission to its loop.
    """

    __slots__ = ("future", "overdue_logged", "submitted")

    def __init__(
        self, future: concurrent.futures.Future[_Outcome], submitted: float
    ) -> None:
        self.future = future
        self.submitted = submitted
        self.overdue_logged = False

    def outcome(self) -> _Outcome:
        """
        What the finished run gave; a cancelled one counts as failed.
        """
        future = self.future
        if not future.cancelled() and future.exception() is None:
            return future.result()
        now = clock()
        return _Outcome(ok=False, duration=now - self.submitted, finished=now)


class ScrapeHook:
    """
    A coroutine function that is awaited before each scrape of a registry.

    Made by :func:`on_scrape`, as its return value, also when it is used
    as a decorator: the decorated name is then this handle. Calling the
    handle calls the function (``await handle()`` runs it once, outside of
    any scrape), so the decorated name still works as the function did.

    Attributes:
        name (str): The value of the ``hook`` label of the health metrics.
        function: The coroutine function, as it was given.

    .. versionadded:: 0.2.0
    """

    __slots__ = (
        "__weakref__",
        "_closed_logged",
        "_health",
        "_lock",
        "_loop",
        "_min_interval",
        "_outcome",
        "_removed",
        "_run",
        "_timeout",
        "_unregister",
        "function",
        "name",
    )

    def __init__(
        self,
        function: Callable[[], Awaitable[object]],
        *,
        name: str,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        min_interval: float,
        health: Health,
        unregister: Callable[[ScrapeHook], None],
    ) -> None:
        self.function = function
        self.name = name
        self._loop = weakref.ref(loop)
        self._timeout = timeout
        self._min_interval = min_interval
        self._health = health
        self._unregister = unregister
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._outcome: _Outcome | None = None
        self._removed = False
        self._closed_logged = False

    def __repr__(self) -> str:
        return f"<ScrapeHook {self.name!r}>"

    async def __call__(self) -> object:
        return await self.function()

    @property
    def is_alive(self) -> bool:
        """
        Whether the hook is registered and its event loop is not closed.
        """
        loop = self._loop()
        return not self._removed and loop is not None and not loop.is_closed()

    def remove(self) -> None:
        """
        Stop running the hook before scrapes, and drop its health metrics.

        A run under way is cancelled. Removing twice does nothing the
        second time. It may be called from any thread.

        .. versionadded:: 0.2.0
        """
        with self._lock:
            if self._removed:
                return
            self._removed = True
            run, self._run = self._run, None
        self._unregister(self)
        if run is not None:
            run.future.cancel()
        for gauge in self._health:
            # prometheus_client 0.20 raises for a series never set.
            with contextlib.suppress(KeyError):
                gauge.remove(self.name)

    def retire(self) -> None:
        """
        Stop running the hook, for a hook of the same name that replaces
        it: the health metrics stay, for the new one.
        """
        with self._lock:
            self._removed = True

    async def refresh(self, budget: float | None) -> None:
        """
        Let the hook run for a scrape: join the run under way, reuse a
        recent outcome, or start a run; wait for it for at most *budget*
        seconds, and only until the run is as old as the hook's timeout;
        report how it went. Never raises.
        """
        with self._lock:
            run = None if self._removed else self._current_run()
        if run is None:
            return
        # By the time a run is as old as the timeout, its loop has cancelled
        # it, or is not running it (blocked, or stopped without closing):
        # scrapes waiting for it would only pile up.
        wait = self._timeout - (clock() - run.submitted)
        if budget is not None:
            wait = min(wait, budget)
        if wait > 0:
            waiter = asyncio.wrap_future(run.future)
            await asyncio.wait((waiter,), timeout=wait)
        with self._lock:
            if self._removed:
                return
            if run.future.done():
                outcome = self._finish(run)
                self._report(outcome.ok, outcome.duration)
                return
            overdue = clock() - run.submitted
            self._report(False, overdue)
            if not run.overdue_logged:
                run.overdue_logged = True
                log.warning(
                    "scrape hook %r has not finished after %.3g s; the "
                    "scrape answers with the values it set before",
                    self.name,
                    overdue,
                )

    def _current_run(self) -> _Run | None:
        """
        The run this scrape waits for, or None when the scrape is answered
        without one (a recent outcome, a closed loop). Under the lock.
        """
        run = self._run
        if run is not None and run.future.done():
            self._finish(run)
            run = None
        if run is not None:
            return run
        now = clock()
        outcome = self._outcome
        if outcome is not None and now - outcome.finished < self._min_interval:
            self._report(outcome.ok, outcome.duration)
            return None
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            coroutine = self._run_once()
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, loop)
            except RuntimeError:  # closed since the check
                coroutine.close()
            else:
                self._run = run = _Run(future, now)
                return run
        self._report(False, 0.0)
        if not self._closed_logged:
            self._closed_logged = True
            log.warning(
                "scrape hook %r is skipped: the event loop it was "
                "registered on is closed",
                self.name,
            )
        return None

    def _finish(self, run: _Run) -> _Outcome:
        """
        The outcome of the finished *run*, kept if it is the current one.
        Under the lock.
        """
        outcome = run.outcome()
        if self._run is run:
            self._run = None
            self._outcome = outcome
        return outcome

    def _report(self, ok: bool, duration: float) -> None:
        self._health.duration.labels(self.name).set(duration)
        self._health.success.labels(self.name).set(1 if ok else 0)

    async def _run_once(self) -> _Outcome:
        """
        Run the hook once, on its own loop, within its timeout.
        """
        started = clock()
        try:
            await asyncio.wait_for(self.function(), self._timeout)
        except asyncio.TimeoutError:
            log.warning(
                "scrape hook %r did not finish within its timeout of %g s "
                "and was cancelled",
                self.name,
                self._timeout,
            )
            ok = False
        except Exception:
            log.warning("scrape hook %r failed", self.name, exc_info=True)
            ok = False
        else:
            ok = True
        finished = clock()
        return _Outcome(ok=ok, duration=finished - started, finished=finished)
