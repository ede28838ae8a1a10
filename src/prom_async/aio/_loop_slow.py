"""
Count the callbacks of asyncio's own event loops that run longer than a
threshold.

asyncio's debug mode times every callback too, but it also records where
each one was scheduled (a stack extraction per ``call_soon``), too costly to
leave on. Instead, while any loop is watched, ``asyncio.events.Handle._run``
(which the loops of ``asyncio.base_events.BaseEventLoop`` call for every
callback, in CPython 3.10 to 3.14) is wrapped: a handle of a loop nobody
watches costs one dictionary look-up more; one of a watched loop two clock
readings more. ``Handle._run`` and ``Handle._loop`` are private: both are
checked before the wrapper goes in, and their absence is a clear error.
Other event loops (uvloop) run their callbacks in their own compiled code,
where nothing can time them.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import sys
import threading

from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol


__all__ = ["check", "unwatch", "watch"]


class _Counter(Protocol):
    def inc(self, amount: float = 1, /) -> None: ...


_Watcher = tuple[float, _Counter]

_lock = threading.Lock()
#: The watched loops; read without the lock by every callback.
_watched: dict[asyncio.AbstractEventLoop, tuple[_Watcher, ...]] = {}
#: Handle._run as it was before the wrapper went in; set before it does.
_original: Callable[[Any], None]
#: Whether the wrapper is in place, possibly under another one since.
_installed = False


def _timed_run(handle: Any) -> None:
    watchers = _watched.get(handle._loop)  # noqa: SLF001
    if watchers is None:
        return _original(handle)
    start = perf_counter()
    _original(handle)
    elapsed = perf_counter() - start
    for threshold, counter in watchers:
        if elapsed >= threshold:
            counter.inc()
    return None


def check(loop: asyncio.AbstractEventLoop) -> None:
    """
    Raise unless the callbacks of *loop* can be timed.

    Raises:
        RuntimeError: *loop* is not one of asyncio's own, or this Python's
            asyncio lacks what the wrapper needs.
    """
    if not isinstance(loop, asyncio.BaseEventLoop):
        kind = type(loop)
        raise RuntimeError(  # noqa: TRY004 -- not an argument: the running loop
            "slow-callback counting needs one of asyncio's own event loops "
            f"(asyncio.BaseEventLoop); the running loop is a "
            f"{kind.__module__}.{kind.__qualname__}, which runs its "
            "callbacks where they cannot be timed (uvloop does so in its "
            "compiled code). Leave slow_callback_threshold=None with this "
            "loop: the lag, the watchdog and the task count work with any "
            "loop."
        )
    handle = asyncio.events.Handle
    if not callable(getattr(handle, "_run", None)) or "_loop" not in getattr(
        handle, "__slots__", ()
    ):
        raise RuntimeError(
            "slow-callback counting wraps asyncio.events.Handle._run and "
            "reads Handle._loop, which this Python "
            f"({sys.version.split()[0]}) does not have; leave "
            "slow_callback_threshold=None"
        )


def watch(
    loop: asyncio.AbstractEventLoop, threshold: float, counter: _Counter
) -> None:
    """
    Increment *counter* for each callback of *loop* that runs for
    *threshold* seconds or longer.

    Raises:
        RuntimeError: *loop* is not one of asyncio's own, or this Python's
            asyncio lacks what the wrapper needs.
    """
    global _original, _installed  # noqa: PLW0603 -- one wrapper per process
    check(loop)
    with _lock:
        if not _installed:
            handle: Any = asyncio.events.Handle
            _original = handle._run  # noqa: SLF001
            handle._run = _timed_run  # noqa: SLF001
            _installed = True
        _watched[loop] = (*_watched.get(loop, ()), (threshold, counter))


def unwatch(loop: asyncio.AbstractEventLoop, counter: _Counter) -> None:
    """
    Stop counting into *counter*; once no loop is watched, put
    ``Handle._run`` back, unless something wrapped it in turn since.
    """
    global _installed  # noqa: PLW0603 -- one wrapper per process
    with _lock:
        watchers = tuple(
            watcher
            for watcher in _watched.pop(loop, ())
            if watcher[1] is not counter
        )
        if watchers:
            _watched[loop] = watchers
        handle: Any = asyncio.events.Handle
        if not _watched and handle._run is _timed_run:  # noqa: SLF001
            handle._run = _original  # noqa: SLF001
            _installed = False
