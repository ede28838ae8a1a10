"""
Helpers for the tests of prom_async.aio.collect (no tests here).
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from blockbuster import BlockBuster
from prometheus_client.parser import text_string_to_metric_families

from prom_async.aio.collect import ScrapeHook, on_scrape


LOOPBACK = "127.0.0.1"
DURATION = "prom_async_scrape_hook_duration_seconds"
SUCCESS = "prom_async_scrape_hook_success"
TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
PLAIN = {"Accept-Encoding": "identity"}


class Scraped:
    """
    One answer of an exporter: its status and its samples.
    """

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.samples = (
            {
                (name, tuple(sorted(labels.items()))): value
                for family in text_string_to_metric_families(body)
                for name, labels, value, *_ in family.samples
            }
            if status == 200
            else {}
        )

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def success(self, hook: str) -> float | None:
        return self.value(SUCCESS, hook=hook)

    def duration(self, hook: str) -> float | None:
        return self.value(DURATION, hook=hook)


async def scrape(
    http: aiohttp.ClientSession,
    url: str,
    *,
    scrape_timeout: str | None = None,
    headers: dict[str, str] | None = None,
) -> Scraped:
    """
    GET the metrics at *url*, as a scraper with *scrape_timeout* would.
    """
    sent = {**PLAIN, **(headers or {})}
    if scrape_timeout is not None:
        sent[TIMEOUT_HEADER] = scrape_timeout
    async with http.get(url, headers=sent) as response:
        return Scraped(response.status, await response.text())


def scrape_blocking(url: str, *, scrape_timeout: str | None = None) -> Scraped:
    """
    GET the metrics at *url* with a blocking client, in a thread without a
    loop.
    """
    headers = dict(PLAIN)
    if scrape_timeout is not None:
        headers[TIMEOUT_HEADER] = scrape_timeout
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return Scraped(response.status, response.read().decode())


def block_the_loop_until(event: threading.Event, timeout: float) -> bool:
    """
    Keep the running event loop from running anything until *event* is set
    (or *timeout* seconds have passed): the freeze under test.
    """
    deadline = time.monotonic() + timeout
    while not event.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    return event.is_set()


def waiters(hook: ScrapeHook) -> int:
    """
    How many scrapes wait for the hook's run under way: one callback each
    on its task (scrapes in the task's loop) or on its concurrent future
    (scrapes in other loops); less the run's own callback, which copies
    the task's outcome to the future, or chains the future handed to
    another loop.
    """
    run = hook._run
    if run is None:
        return 0
    across = len(run.future._done_callbacks)
    if run.task is None:
        return across - 1
    return across + len(run.task._callbacks or ()) - 1


class Hang:
    """
    A hook that hangs until released (or cancelled), and says so.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0

    async def __call__(self) -> None:
        self.calls += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@pytest.fixture
def hooks() -> Iterator[Callable[..., ScrapeHook]]:
    """
    ``hooks(function, **options)`` registers with on_scrape; every hook is
    removed at teardown, which cancels a run that still hangs.
    """
    made: list[ScrapeHook] = []

    def register(function: Any, **options: Any) -> ScrapeHook:
        hook = on_scrape(function, **options)
        made.append(hook)
        return hook

    yield register
    for hook in made:
        hook.remove()


@pytest.fixture(autouse=True)
def brief_locks(blockbuster: BlockBuster) -> BlockBuster:
    """
    Let a scrape in the exporter's thread and the test's loop contend for
    a hook's lock, or a gauge's, for the moment one of them holds it (never
    across an await); and let block_the_loop_until() block on purpose.
    """
    for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
        blockbuster.functions[name].can_block_in(
            "prom_async/aio/_collect_hook.py",
            {"refresh", "remove", "retire", "is_alive"},
        ).can_block_in("prom_async/aio/_collect.py", {"_add", "_discard"})
    blockbuster.functions["time.sleep"].can_block_in(
        "tests/test_collect_support.py", "block_the_loop_until"
    )
    return blockbuster


async def run_in_new_loop(main: Callable[[], Any]) -> Any:
    """
    Run the coroutine function *main* in an event loop of another thread,
    closed when *main* returns.
    """
    return await asyncio.to_thread(asyncio.run, main())
