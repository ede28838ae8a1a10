"""
Small pools of daemon threads for the exporter's blocking work.

Renders and credential checks run here rather than in the event loop's
default executor, so that nothing a client sends can take the threads the
application's own ``asyncio.to_thread()`` and ``run_in_executor(None, ...)``
use.  The threads are daemons: a job that never returns (a hung collector)
holds one thread and does not keep the program from exiting.  What a job
raises is handed back as an :class:`Exception`, also when it is a
``SystemExit`` or ``KeyboardInterrupt``, so that it never reaches the event
loop as a ``BaseException``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import queue
import threading

from typing import TYPE_CHECKING, Any, Final, TypeVar


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = [
    "CREDENTIAL_CHECKS",
    "RENDERS",
    "JobInterruptedError",
    "PoolFullError",
    "WorkerPool",
]

_T = TypeVar("_T")


class PoolFullError(RuntimeError):
    """
    The pool has as many jobs waiting as it takes.
    """


class JobInterruptedError(Exception):
    """
    A job raised a ``BaseException`` that is not an ``Exception``.

    The original is the ``__cause__``.
    """


class _Job:
    __slots__ = ("args", "function", "future", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        function: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        self.loop = loop
        self.future = future
        self.function = function
        self.args = args


class WorkerPool:
    """
    Run blocking functions in up to *workers* daemon threads.

    Args:
        name: The threads' names start with it.
        workers: How many threads at most.
        max_pending: How many jobs may wait for a thread, at most;
            :data:`None` for no bound.
        exit_wait: When the interpreter exits, start no more jobs and wait
            up to this many seconds for those running; :data:`None` to
            wait for none.  For jobs in native code that must not be
            running when the interpreter ends its daemon threads: bcrypt's
            (Rust) aborts the process then, on Python 3.11 to 3.13.
    """

    def __init__(
        self,
        name: str,
        *,
        workers: int,
        max_pending: int | None = None,
        exit_wait: float | None = None,
    ) -> None:
        self.name = name
        self.workers = workers
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads = 0
        self._active = 0
        self._running = 0
        self._started = 0
        self._closing = False
        os.register_at_fork(after_in_child=self._forget_threads)
        if exit_wait is not None:
            atexit.register(self.finish, exit_wait)

    @property
    def busy(self) -> int:
        """
        How many jobs are running or waiting.
        """
        return self._active

    def run(
        self, function: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """
        Run ``function(*args)`` in a thread; the future is the running
        loop's.

        Raises:
            PoolFullError: *max_pending* jobs are waiting already.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        with self._lock:
            if (
                self.max_pending is not None
                and self._active >= self.workers + self.max_pending
            ):
                raise PoolFullError(
                    f"{self.name}: {self.max_pending} jobs are waiting"
                )
            self._active += 1
            if self._threads < min(self.workers, self._active):
                self._threads += 1
                self._started += 1
                threading.Thread(
                    target=self._work,
                    name=f"{self.name}-{self._started}",
                    daemon=True,
                ).start()
        self._jobs.put(_Job(loop, future, function, args))
        return future

    def finish(self, timeout: float) -> bool:
        """
        Start no more jobs; wait up to *timeout* seconds for the running
        ones.

        Returns:
            Whether none is running any more.
        """
        with self._lock:
            self._closing = True
            return self._idle.wait_for(lambda: not self._running, timeout)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            with self._lock:
                skip = self._closing or job.future.cancelled()
                self._running += not skip
            outcome = None if skip else _outcome(job)
            # Free before the outcome is handed over: whoever awaited it may
            # run the next job at once, and must find room for it.
            with self._lock:
                self._active -= 1
                self._running -= not skip
                self._idle.notify_all()
            if outcome is not None:
                # A closed loop raises RuntimeError: nobody waits for it.
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_settle, job.future, outcome)
            del job, outcome

    def _forget_threads(self) -> None:
        # A forked child has none of its parent's threads or jobs.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._jobs = queue.SimpleQueue()
        self._threads = self._active = self._running = 0


def _outcome(job: _Job) -> tuple[bool, object]:
    """
    Run *job*: what it returned, or what it raised (a ``BaseException`` as
    a :class:`JobInterruptedError`).
    """
    try:
        return (True, job.function(*job.args))
    except Exception as error:  # noqa: BLE001 -- handed to the loop
        return (False, error)
    except BaseException as error:  # noqa: BLE001 -- never re-raised
        interrupted = JobInterruptedError(
            f"{job.function!r} raised {type(error).__name__}"
        )
        interrupted.__cause__ = error
        return (False, interrupted)


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, object]) -> None:
    if future.cancelled():
        return
    succeeded, value = outcome
    if succeeded:
        future.set_result(value)
    else:
        assert isinstance(value, BaseException)  # noqa: S101 -- narrows
        future.set_exception(value)


# Renders are short and mostly hold the GIL: a few threads keep the loop
# free, more would only queue on the GIL.
RENDERS: Final = WorkerPool("prom_async-render", workers=4)
# bcrypt releases the GIL; two checks at a time bound the CPU one flood of
# wrong passwords can take, and the queue bound makes the rest fail fast.
# A check takes a quarter of a second at bcrypt's usual cost (12), a second
# at 14: the program's exit waits that long for the running ones.
CREDENTIAL_CHECKS: Final = WorkerPool(
    "prom_async-credentials", workers=2, max_pending=8, exit_wait=2.0
)
