"""
on_scrape(): coroutine functions awaited before each scrape of a registry,
and run_hooks(), which the exporter's handler awaits before it renders.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
import weakref

from typing import TYPE_CHECKING, Final, overload

from prometheus_client import REGISTRY, CollectorRegistry

from ._collect_hook import ScrapeHook, health_of


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


__all__ = [
    "SCRAPE_TIMEOUT_HEADER",
    "SCRAPE_TIMEOUT_OFFSET",
    "on_scrape",
    "run_hooks",
    "scrape_budget",
]

#: The header in which Prometheus sends its scrape timeout, in seconds.
SCRAPE_TIMEOUT_HEADER: Final = "X-Prometheus-Scrape-Timeout-Seconds"
#: Seconds taken off the scraper's timeout: the time left to render the
#: metrics and send them once the hooks are done.
SCRAPE_TIMEOUT_OFFSET: Final = 0.25

_lock = threading.Lock()
_hooks: weakref.WeakKeyDictionary[
    CollectorRegistry, tuple[ScrapeHook, ...]
] = weakref.WeakKeyDictionary()


@overload
def on_scrape(
    hook: Callable[[], Awaitable[object]],
    *,
    registry: CollectorRegistry = ...,
    timeout: float = ...,
    min_interval: float = ...,
    name: str | None = ...,
) -> ScrapeHook: ...


@overload
def on_scrape(
    hook: None = None,
    *,
    registry: CollectorRegistry = ...,
    timeout: float = ...,
    min_interval: float = ...,
    name: str | None = ...,
) -> Callable[[Callable[[], Awaitable[object]]], ScrapeHook]: ...


def on_scrape(
    hook: Callable[[], Awaitable[object]] | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    timeout: float = 5.0,
    min_interval: float = 0,
    name: str | None = None,
) -> ScrapeHook | Callable[[Callable[[], Awaitable[object]]], ScrapeHook]:
    """
    Await *hook* before each scrape of *registry*, on the running loop.

    The hook is a coroutine function that takes no arguments and sets
    metrics from what it awaits: ``POOL_SIZE.set(await pool.size())``. It
    runs on the event loop that is running when :func:`on_scrape` is
    called, the one that owns the pool or client it reads, whichever
    exporter of :mod:`prom_async.aio.web` answers the scrape: in that loop
    (:func:`~prom_async.aio.web.start_http_server`,
    :func:`~prom_async.aio.web.add_metrics_route`,
    :func:`~prom_async.aio.web.metrics_handler`), or in a thread of its own
    (:func:`~prom_async.aio.web.start_http_server_in_thread`: the hook is
    handed to the application's loop and awaited from the exporter's).

    Scrapes that arrive while a run is under way share it; the hooks of a
    registry run concurrently; each scrape waits for each hook for at most
    the smaller of *timeout* and the scraper's
    ``X-Prometheus-Scrape-Timeout-Seconds`` less
    :data:`SCRAPE_TIMEOUT_OFFSET`. A hook that fails or is late never fails
    the scrape: it answers with the values the hook set before, and the
    hook's health says what happened, in the same registry:
    ``prom_async_scrape_hook_success{hook}`` (1 or 0) and
    ``prom_async_scrape_hook_duration_seconds{hook}``. A late run is not
    cancelled by the scrape that stops waiting for it: the next scrape
    waits for the same run, until it ends or has run *timeout* seconds
    (then it is cancelled).

    Also a decorator, bare (``@on_scrape``) or with options
    (``@on_scrape(registry=registry)``), in code that runs in the loop
    (not at import time, when no loop runs).

    Args:
        hook: The coroutine function (``async def``, or an object whose
            ``__call__`` is one, or a ``functools.partial`` of one).
            Without it, a decorator with these options is returned.
        registry: The registry before whose scrapes the hook runs, and
            where its health metrics are.
        timeout: The seconds a run may take: a scrape waits for it at most
            this long, and a run still going after this long is cancelled.
        min_interval: Reuse the outcome of a run that ended less than this
            many seconds ago instead of running the hook again: for hooks
            that cost the backend something (a ``COUNT(*)``). ``0`` runs the
            hook for every scrape (concurrent scrapes still share a run).
        name: The ``hook`` label of the health metrics; by default the
            function's ``__qualname__``. Unique per registry.

    Returns:
        The :class:`ScrapeHook`; :meth:`ScrapeHook.remove` removes it. The
        decorator returns the handle too, which calls the function when
        called: the decorated name still works as the function.

    Raises:
        TypeError: *hook* is not a coroutine function, or an option has the
            wrong type.
        ValueError: An option has a wrong value, or a hook of that name is
            registered in *registry* already and its loop is not closed (a
            hook whose loop is closed is replaced).
        RuntimeError: No event loop is running.

    .. versionadded:: 0.2.0
    """
    _check_options(registry, timeout, min_interval, name)

    def register(hook: Callable[[], Awaitable[object]]) -> ScrapeHook:
        return _register(
            hook,
            registry=registry,
            timeout=float(timeout),
            min_interval=float(min_interval),
            name=name,
        )

    if hook is None:
        return register
    return register(hook)


def _check_options(
    registry: object, timeout: object, min_interval: object, name: object
) -> None:
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry, not "
            f"{type(registry).__name__}"
        )
    for option, value, least in (
        ("timeout", timeout, None),
        ("min_interval", min_interval, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"{option} must be a number of seconds, not "
                f"{type(value).__name__}"
            )
        if least is None and not 0 < value < math.inf:
            raise ValueError(
                f"{option} must be positive and finite, not {value}"
            )
        if least is not None and not least <= value < math.inf:
            raise ValueError(f"{option} must be 0 or more, not {value}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if name == "":
        raise ValueError("name must not be empty; None names the hook")


def _register(
    hook: Callable[[], Awaitable[object]],
    *,
    registry: CollectorRegistry,
    timeout: float,
    min_interval: float,
    name: str | None,
) -> ScrapeHook:
    given: object = hook
    if inspect.iscoroutine(given):
        raise TypeError(
            "on_scrape() takes the coroutine function, not a coroutine: "
            "pass the function without calling it"
        )
    if not (
        inspect.iscoroutinefunction(given)
        or inspect.iscoroutinefunction(getattr(given, "__call__", None))  # noqa: B004 -- the coroutine function test needs the method
    ):
        raise TypeError(
            "a scrape hook must be a coroutine function (async def) that "
            f"takes no arguments, not {given!r}"
        )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "on_scrape() needs a running event loop, the one the hook is to "
            "run on: call it from async code (an application's start-up), "
            "not at import time"
        ) from None
    registered = ScrapeHook(
        hook,
        name=_default_name(hook) if name is None else name,
        loop=loop,
        timeout=timeout,
        min_interval=min_interval,
        health=health_of(registry),
        unregister=functools.partial(_discard, weakref.ref(registry)),
    )
    _add(registry, registered)
    return registered


def _default_name(hook: object) -> str:
    if isinstance(hook, ScrapeHook):
        return hook.name
    while isinstance(hook, functools.partial):
        hook = hook.func
    qualname = getattr(hook, "__qualname__", None)
    return qualname if isinstance(qualname, str) else type(hook).__qualname__


def _add(registry: CollectorRegistry, hook: ScrapeHook) -> None:
    with _lock:
        hooks = _hooks.get(registry, ())
        for known in hooks:
            if known.name != hook.name:
                continue
            if known.is_alive:
                raise ValueError(
                    f"a scrape hook named {hook.name!r} is registered in "
                    "this registry already: remove() it first, or give "
                    "this one another name="
                )
            known.retire()
        _hooks[registry] = (
            *(known for known in hooks if known.name != hook.name),
            hook,
        )


def _discard(
    registry: weakref.ref[CollectorRegistry], hook: ScrapeHook
) -> None:
    with _lock:
        alive = registry()
        if alive is not None:
            _hooks[alive] = tuple(
                known for known in _hooks.get(alive, ()) if known is not hook
            )


def scrape_budget(header: str | None) -> float | None:
    """
    The seconds the hooks may take for a scrape whose
    ``X-Prometheus-Scrape-Timeout-Seconds`` is *header*: its value less
    :data:`SCRAPE_TIMEOUT_OFFSET`, or less half of it when that is
    smaller; None without a usable header.
    """
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    if not 0 < seconds < math.inf:
        return None
    return seconds - min(SCRAPE_TIMEOUT_OFFSET, seconds / 2)


async def run_hooks(
    registry: CollectorRegistry, scrape_timeout: str | None
) -> None:
    """
    Run *registry*'s hooks for one scrape, concurrently, each within its
    deadline; *scrape_timeout* is the scraper's header, if it sent one.
    Never raises.
    """
    hooks = _hooks.get(registry)
    if not hooks:
        return
    budget = scrape_budget(scrape_timeout)
    if len(hooks) == 1:
        await hooks[0].refresh(budget)
    else:
        await asyncio.gather(*(hook.refresh(budget) for hook in hooks))
