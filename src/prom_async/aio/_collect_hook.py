"""
One registered scrape hook: its runs on the event loop it was registered on,
shared by the scrapes that wait for them, and its health metrics.

A run is a task on the hook's loop: made there directly when the scrape
runs on that loop, handed to it with ``run_coroutine_threadsafe`` when the
scrape runs on another (an exporter in a thread of its own). Either way its
outcome lands in a concurrent future that scrapes on any loop can wait for
(through ``asyncio.wrap_future``) without cancelling it: a scrape that stops
waiting leaves the run to finish for the next one. The state (the run under
way, the last outcome) is shared by the exporters' threads and taken under a
lock that is never held across an ``await`` or a call into the hook.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
import time
import weakref

from typing import TYPE_CHECKING, Final, NamedTuple

from prometheus_client import CollectorRegistry, Gauge

from ._families import family


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine


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
    One run of a hook, from its submission to its loop. The outcome lands
    in *future*; *task* is set when the run is a task of the loop of the
    scrape that started it.
    """

    __slots__ = ("future", "overdue_logged", "submitted", "task")

    def __init__(
        self, future: concurrent.futures.Future[_Outcome], submitted: float
    ) -> None:
        self.future = future
        self.submitted = submitted
        self.task: asyncio.Task[_Outcome] | None = None
        self.overdue_logged = False

    @classmethod
    def hand_over(
        cls,
        run_once: Callable[[], Coroutine[object, object, _Outcome]],
        loop: asyncio.AbstractEventLoop,
        submitted: float,
    ) -> _Run | None:
        """
        A run of *run_once* handed to *loop*, another thread's, in a context
        of its own; None if *loop* has closed.
        """
        coroutine = run_once()
        try:
            future = contextvars.Context().run(
                asyncio.run_coroutine_threadsafe, coroutine, loop
            )
        except RuntimeError:  # closed since it was checked
            coroutine.close()
            return None
        return cls(future, submitted)

    def start_here(
        self, run_once: Callable[[], Coroutine[object, object, _Outcome]]
    ) -> None:
        """
        Start the run as a task of the running loop, in a context of its
        own: it is shared by scrapes, and belongs to none. Outside the
        hook's lock: an eager task factory runs the hook at once.
        """
        loop = asyncio.get_running_loop()
        task = contextvars.Context().run(loop.create_task, run_once())
        self.task = task
        task.add_done_callback(functools.partial(_copy_outcome, self.future))
        if self.future.cancelled():  # removed in the meantime
            task.cancel()

    def done(self) -> bool:
        task = self.task
        return self.future.done() or (task is not None and task.done())

    async def wait(self, seconds: float) -> None:
        """
        Wait for the run from the running loop for at most *seconds*,
        without cancelling it.
        """
        task = self.task
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait((task,), timeout=seconds)
            return
        waiter = asyncio.wrap_future(self.future)
        waiter.add_done_callback(_retrieve)
        await asyncio.wait((waiter,), timeout=seconds)

    def cancel(self) -> None:
        """
        Cancel the run, from any thread.
        """
        self.future.cancel()
        task = self.task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed
                task.get_loop().call_soon_threadsafe(task.cancel)

    def outcome(self) -> _Outcome:
        """
        What the finished run gave; a cancelled one counts as failed.
        """
        task = self.task
        source: asyncio.Task[_Outcome] | concurrent.futures.Future[_Outcome]
        # The task's outcome reaches the future in a callback, a moment
        # after the task is done.
        source = task if task is not None and task.done() else self.future
        if not source.cancelled() and source.exception() is None:
            return source.result()
        now = clock()
        return _Outcome(ok=False, duration=now - self.submitted, finished=now)


def _copy_outcome(
    future: concurrent.futures.Future[_Outcome], task: asyncio.Task[_Outcome]
) -> None:
    if future.done():  # cancelled by remove()
        return
    if task.cancelled():
        future.cancel()
        return
    error = task.exception()
    if error is None:
        future.set_result(task.result())
    else:
        future.set_exception(error)


def _retrieve(waiter: asyncio.Future[_Outcome]) -> None:
    # The outcome is read from the concurrent future; an exception left in
    # the waiter would be logged as never retrieved.
    if not waiter.cancelled():
        waiter.exception()


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
            run.cancel()
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
            run, mine = (None, False) if self._removed else self._current_run()
        if run is None:
            return
        if mine:
            run.start_here(self._run_once)
        # By the time a run is as old as the timeout, its loop has cancelled
        # it, or is not running it (blocked, or stopped without closing):
        # scrapes waiting for it would only pile up.
        wait = self._timeout - (clock() - run.submitted)
        if budget is not None:
            wait = min(wait, budget)
        if wait > 0:
            await run.wait(wait)
        with self._lock:
            if self._removed:
                return
            if run.done():
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

    def _current_run(self) -> tuple[_Run | None, bool]:
        """
        The run this scrape waits for, and whether the scrape is to start
        it in its loop; no run when the scrape is answered without one (a
        recent outcome, a closed loop). Under the lock.
        """
        run = self._run
        if run is not None and run.done():
            self._finish(run)
            run = None
        if run is not None:
            return run, False
        now = clock()
        outcome = self._outcome
        if outcome is not None and now - outcome.finished < self._min_interval:
            self._report(outcome.ok, outcome.duration)
            return None, False
        loop = self._loop()
        if loop is asyncio.get_running_loop():
            self._run = _Run(concurrent.futures.Future(), now)
            return self._run, True
        if loop is not None and not loop.is_closed():
            run = _Run.hand_over(self._run_once, loop, now)
            if run is not None:
                self._run = run
                return run, False
        self._report(False, 0.0)
        if not self._closed_logged:
            self._closed_logged = True
            log.warning(
                "scrape hook %r is skipped: the event loop it was "
                "registered on is closed",
                self.name,
            )
        return None, False

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
