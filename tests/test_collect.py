"""Tests for prom_async.aio.collect: coroutine functions awaited at scrape."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import inspect
import logging
import math
import threading

import pytest

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram

from fixtures_servers import eventually
from prom_async.aio import _collect, _collect_hook, time
from prom_async.aio.collect import SCRAPE_TIMEOUT_OFFSET, ScrapeHook, on_scrape
from prom_async.aio.web import start_http_server, start_http_server_in_thread
from test_collect_support import (
    DURATION,
    LOOPBACK,
    SUCCESS,
    Hang,
    brief_locks,
    hooks,
    run_in_new_loop,
    scrape,
    waiters,
)


__all__ = ["brief_locks", "hooks"]

TOKEN = "s3cr3t-t0ken"


async def nothing() -> None:
    """A hook that sets nothing."""


def returns_a_coroutine():
    """Not a coroutine function, though it returns a coroutine."""
    return nothing()


class Counting:
    """
    A hook that counts its runs into a gauge.
    """

    def __init__(self, registry: CollectorRegistry, name: str = "runs"):
        self.calls = 0
        self.gauge = Gauge(name, "Runs of the hook.", registry=registry)

    async def __call__(self) -> None:
        self.calls += 1
        await asyncio.sleep(0)
        self.gauge.set(self.calls)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hook_records(caplog, text: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "prom_async.aio.collect"
        and text in record.getMessage()
    ]


class TestOnScrapeOptions:
    @pytest.mark.parametrize(
        "function",
        [returns_a_coroutine, len, "nothing", None.__class__, 3],
        ids=["function", "builtin", "string", "class", "int"],
    )
    async def test_not_a_coroutine_function(self, registry, function):
        """Anything but a coroutine function is a TypeError at once."""
        with pytest.raises(TypeError, match="coroutine function"):
            on_scrape(function, registry=registry)

    async def test_a_coroutine_is_refused(self, registry):
        """A called hook (a coroutine) is refused with a hint."""
        coroutine = nothing()
        try:
            with pytest.raises(TypeError, match="without calling it"):
                on_scrape(coroutine, registry=registry)  # type: ignore[call-overload]
        finally:
            coroutine.close()

    def test_needs_a_running_loop(self, registry):
        """Without a running loop, registering is a RuntimeError."""
        with pytest.raises(RuntimeError, match="running event loop"):
            on_scrape(nothing, registry=registry)

    def test_decorator_needs_a_running_loop(self, registry):
        """The decorator, applied at import time, says why it fails."""
        decorate = on_scrape(registry=registry)

        with pytest.raises(RuntimeError, match="not at import time"):
            decorate(nothing)

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"registry": object()}, TypeError, "registry"),
            ({"timeout": 0}, ValueError, "timeout must be positive"),
            ({"timeout": -1.0}, ValueError, "timeout must be positive"),
            ({"timeout": math.inf}, ValueError, "finite"),
            ({"timeout": math.nan}, ValueError, "finite"),
            ({"timeout": "1"}, TypeError, "timeout must be a number"),
            ({"timeout": True}, TypeError, "timeout must be a number"),
            ({"min_interval": -1}, ValueError, "0 or more"),
            ({"min_interval": math.inf}, ValueError, "0 or more"),
            ({"min_interval": None}, TypeError, "min_interval"),
            ({"name": ""}, ValueError, "empty"),
            ({"name": 3}, TypeError, "name must be a string"),
        ],
    )
    async def test_wrong_options(self, registry, options, error, message):
        """Each wrong option is an error at the call, with or without the
        hook (the decorator's options are checked before decorating)."""
        options = {"registry": registry, **options}

        with pytest.raises(error, match=message):
            on_scrape(nothing, **options)
        with pytest.raises(error, match=message):
            on_scrape(**options)

    def test_defaults(self):
        """The global registry, 5 s, no reuse, the function's name."""
        parameters = inspect.signature(on_scrape).parameters

        assert (REGISTRY, 5.0, 0, None) == (
            parameters["registry"].default,
            parameters["timeout"].default,
            parameters["min_interval"].default,
            parameters["name"].default,
        )

    async def test_integers_are_seconds(self, registry, hooks):
        """Integer seconds are taken for timeout and min_interval."""
        hook = hooks(nothing, registry=registry, timeout=2, min_interval=1)

        assert (2.0, 1.0) == (hook._timeout, hook._min_interval)


class Pool:
    async def size(self) -> int:
        return 3


async def read(pool: Pool) -> None:
    await pool.size()


class TestNames:
    async def test_default_name_is_the_qualname(self, registry, hooks):
        """The hook label defaults to the function's __qualname__."""

        async def pool_size() -> None:
            pass

        hook = hooks(pool_size, registry=registry)

        assert pool_size.__qualname__ == hook.name
        assert "<locals>.pool_size" in hook.name

    async def test_names_of_other_callables(self, registry, hooks):
        """A bound method, a partial and a callable object are named after
        the method, the wrapped function and the class."""
        names = [
            hooks(Pool().size, registry=registry).name,
            hooks(functools.partial(read, Pool()), registry=registry).name,
            hooks(Hang(), registry=registry).name,
        ]

        assert ["Pool.size", "read", "Hang"] == names

    async def test_given_name(self, registry, hooks):
        """name= is the label's value."""
        assert "pool" == hooks(nothing, registry=registry, name="pool").name

    async def test_a_name_once_per_registry(self, registry, hooks):
        """A second live hook of the same name in a registry is refused;
        in another registry it is fine."""
        hooks(nothing, registry=registry, name="pool")

        with pytest.raises(ValueError, match="'pool' is registered"):
            on_scrape(nothing, registry=registry, name="pool")
        assert "pool" == (
            hooks(nothing, registry=CollectorRegistry(), name="pool").name
        )

    async def test_a_name_again_after_remove(self, registry, hooks):
        """Once removed, the name can be registered again."""
        on_scrape(nothing, registry=registry, name="pool").remove()

        assert "pool" == hooks(nothing, registry=registry, name="pool").name


class TestDecorator:
    async def test_bare(self, registry, hooks, monkeypatch):
        """@on_scrape registers the function into the default registry and
        the name becomes the handle, which still calls the function."""
        monkeypatch.setitem(on_scrape.__kwdefaults__, "registry", registry)

        @on_scrape
        async def pool_size() -> int:
            return 3

        try:
            assert isinstance(pool_size, ScrapeHook)
            assert [pool_size] == list(_collect._hooks[registry])
            assert 3 == await pool_size()
        finally:
            pool_size.remove()

    async def test_with_options(self, registry):
        """@on_scrape(...) registers with those options."""

        @on_scrape(registry=registry, name="pool", timeout=1)
        async def pool_size() -> int:
            return 3

        try:
            assert ("pool", 1.0) == (pool_size.name, pool_size._timeout)
            assert 3 == await pool_size()
        finally:
            pool_size.remove()

    async def test_a_handle_into_another_registry(self, registry, hooks):
        """A handle is a hook too: stacked decorators register one function
        into two registries, under the function's name."""
        other = CollectorRegistry()

        @on_scrape(registry=other)
        @on_scrape(registry=registry)
        async def pool_size() -> None:
            pass

        try:
            inner = pool_size.function
            assert isinstance(inner, ScrapeHook)
            assert inner.name == pool_size.name
            assert [pool_size] == list(_collect._hooks[other])
            assert [inner] == list(_collect._hooks[registry])
        finally:
            pool_size.remove()
            inner.remove()

    async def test_stacks_with_the_timing_decorator(
        self, registry, serve, http
    ):
        """A hook timed by prom_async.aio.time runs, and is timed."""
        histogram = Histogram("read_seconds", "Reads.", registry=registry)

        @on_scrape(registry=registry, name="timed")
        @time(histogram)
        async def timed() -> None:
            await asyncio.sleep(0)

        try:
            server = await serve(registry=registry)
            scraped = await scrape(http, server.metrics_url)
        finally:
            timed.remove()

        assert (1.0, 1.0) == (
            scraped.success("timed"),
            scraped.value("read_seconds_count"),
        )

    async def test_repr(self, registry, hooks):
        """The handle's repr names the hook."""
        assert "<ScrapeHook 'pool'>" == repr(
            hooks(nothing, registry=registry, name="pool")
        )


class TestScrapes:
    async def test_awaited_before_each_render(
        self, registry, serve, http, hooks
    ):
        """Each scrape shows what the hook set for it."""
        counting = Counting(registry)
        hooks(counting, registry=registry, name="runs")
        server = await serve(registry=registry)

        first = await scrape(http, server.metrics_url)
        second = await scrape(http, server.metrics_url)

        assert (200, 1.0, 2.0) == (
            first.status,
            first.value("runs"),
            second.value("runs"),
        )

    async def test_runs_on_the_registering_loop(
        self, registry, serve, http, hooks
    ):
        """The hook runs on the loop that registered it, in its thread,
        whichever exporter answers."""
        seen = []

        async def where() -> None:
            seen.append((asyncio.get_running_loop(), threading.get_ident()))

        hooks(where, registry=registry, name="where")
        server = await serve(registry=registry)

        await scrape(http, server.metrics_url)

        assert [(asyncio.get_running_loop(), threading.get_ident())] == seen

    async def test_health_of_a_hook_that_succeeds(
        self, registry, serve, http, hooks
    ):
        """A run that succeeds: success 1, its duration in seconds."""
        hooks(nothing, registry=registry, name="quick")
        server = await serve(registry=registry)

        scraped = await scrape(http, server.metrics_url)

        assert 1.0 == scraped.success("quick")
        assert 0.0 <= scraped.duration("quick")

    async def test_a_failing_hook(self, registry, serve, http, hooks, caplog):
        """A hook that raises: the scrape answers 200 with the values it
        set before, success 0, and the error is logged; the next run that
        succeeds reports 1 again."""
        gauge = Gauge("pool_size", "Connections.", registry=registry)
        calls = 0

        async def flaky() -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise OSError("pool gone")
            gauge.set(calls * 10)

        hooks(flaky, registry=registry, name="flaky")
        server = await serve(registry=registry)

        answers = [await scrape(http, server.metrics_url) for _ in range(3)]

        assert [200, 200, 200] == [answer.status for answer in answers]
        assert [(10.0, 1.0), (10.0, 0.0), (30.0, 1.0)] == [
            (answer.value("pool_size"), answer.success("flaky"))
            for answer in answers
        ]
        (record,) = hook_records(caplog, "'flaky' failed")
        assert "pool gone" == str(record.exc_info[1])

    async def test_a_hook_cancelled_from_inside(
        self, registry, serve, http, hooks
    ):
        """A hook that is cancelled (by what it awaits) counts as failed."""

        async def cancelled() -> None:
            raise asyncio.CancelledError

        hooks(cancelled, registry=registry, name="cancelled")
        server = await serve(registry=registry)

        scraped = await scrape(http, server.metrics_url)

        assert (200, 0.0) == (scraped.status, scraped.success("cancelled"))

    async def test_a_hook_that_raises_a_base_exception(
        self, registry, serve, http, hooks
    ):
        """A BaseException that is not an Exception fails the hook, not the
        scrape."""

        class Fatal(BaseException):
            pass

        async def fatal() -> None:
            raise Fatal

        hooks(fatal, registry=registry, name="fatal")
        server = await serve(registry=registry)

        scraped = await scrape(http, server.metrics_url)

        assert (200, 0.0) == (scraped.status, scraped.success("fatal"))

    async def test_hooks_of_other_registries_do_not_run(
        self, registry, serve, http, hooks
    ):
        """Only the scraped registry's hooks run."""
        other = CollectorRegistry()
        counting = Counting(other)
        hooks(counting, registry=other)
        server = await serve(registry=registry)

        await scrape(http, server.metrics_url)

        assert 0 == counting.calls

    async def test_unauthorized_scrapes_run_nothing(
        self, registry, serve, http, hooks
    ):
        """A scrape refused for its credentials runs no hook."""
        counting = Counting(registry)
        hooks(counting, registry=registry)
        server = await serve(registry=registry, bearer_token=TOKEN)

        refused = await scrape(http, server.metrics_url)
        allowed = await scrape(
            http,
            server.metrics_url,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

        assert (401, 200, 1) == (
            refused.status,
            allowed.status,
            counting.calls,
        )


class TestDeadlines:
    async def test_a_hanging_hook_does_not_delay_the_others(
        self, registry, serve, http, hooks, caplog
    ):
        """A hook that hangs is given up at the scraper's deadline; the
        others ran meanwhile; the scrape answers 200."""
        hang = Hang()
        counting = Counting(registry)
        hooks(hang, registry=registry, name="hang", timeout=60)
        hooks(counting, registry=registry, name="quick", timeout=60)
        server = await serve(registry=registry)

        scraped = await scrape(http, server.metrics_url, scrape_timeout="0.5")

        assert (200, 0.0, 1.0, 1.0) == (
            scraped.status,
            scraped.success("hang"),
            scraped.success("quick"),
            scraped.value("runs"),
        )
        assert 0.0 < scraped.duration("hang")
        assert 1 == len(hook_records(caplog, "has not finished"))

    async def test_a_later_scrape_waits_for_the_same_run(
        self, registry, serve, http, hooks, caplog
    ):
        """The run that hangs is kept, not started again: a later scrape
        waits for it, within its own deadline; it is logged once."""
        hang = Hang()
        hook = hooks(hang, registry=registry, name="hang", timeout=60)
        server = await serve(registry=registry)

        first = await scrape(http, server.metrics_url, scrape_timeout="0.4")
        second = await scrape(http, server.metrics_url, scrape_timeout="0.4")

        assert (0.0, 0.0, 1) == (
            first.success("hang"),
            second.success("hang"),
            hang.calls,
        )
        assert first.duration("hang") < second.duration("hang")
        assert 1 == len(hook_records(caplog, "has not finished"))
        assert hook._run is not None

    async def test_no_wait_for_a_run_as_old_as_its_timeout(
        self, registry, serve, http, hooks, monkeypatch
    ):
        """A run that has lasted its timeout is not waited for any more:
        its loop cancels it or is not running it; the scrape answers at
        once, with the run's age as its duration."""
        clock = FakeClock()
        monkeypatch.setattr(_collect_hook, "clock", clock)
        hang = Hang()
        hook = hooks(hang, registry=registry, name="hang", timeout=60)
        server = await serve(registry=registry)
        await scrape(http, server.metrics_url, scrape_timeout="0.4")
        left_behind = waiters(hook)  # by the scrape from another loop
        clock.now += 60

        scraped = await scrape(http, server.metrics_url)

        assert (0.0, 60.0, left_behind) == (
            scraped.success("hang"),
            scraped.duration("hang"),
            waiters(hook),
        )

    async def test_a_run_is_cancelled_after_its_timeout(
        self, registry, serve, http, hooks, caplog
    ):
        """A run still going after timeout seconds is cancelled; the next
        scrape starts a new one."""
        hang = Hang()
        hooks(hang, registry=registry, name="hang", timeout=0.2)
        server = await serve(registry=registry)

        first = await scrape(http, server.metrics_url)
        await eventually(lambda: hang.cancelled == 1, what="the cancellation")
        second = await scrape(http, server.metrics_url)

        assert (0.0, 0.0, 2) == (
            first.success("hang"),
            second.success("hang"),
            hang.calls,
        )
        assert hook_records(caplog, "timeout of 0.2 s and was cancelled")

    @pytest.mark.parametrize(
        "reuse", [(0, 2), (3600, 1)], ids=["run-again", "reuse"]
    )
    async def test_a_late_run_that_ends(
        self, registry, serve, http, hooks, reuse
    ):
        """A run that ends after its scrape gave up counts for the next
        scrape: its outcome is reused within min_interval, else the hook
        runs again."""
        min_interval, calls = reuse
        hang = Hang()
        hook = hooks(
            hang,
            registry=registry,
            name="hang",
            timeout=60,
            min_interval=min_interval,
        )
        server = await serve(registry=registry)

        late = await scrape(http, server.metrics_url, scrape_timeout="0.4")
        hang.release.set()
        await eventually(hook._run.future.done, what="the run")
        after = await scrape(http, server.metrics_url, scrape_timeout="0.4")

        assert (0.0, 1.0, calls) == (
            late.success("hang"),
            after.success("hang"),
            hang.calls,
        )


class TestSharing:
    async def test_concurrent_scrapes_share_one_run(
        self, registry, serve, http, hooks
    ):
        """Scrapes that arrive while a run is under way wait for it; the
        hook runs once for all of them."""
        hang = Hang()
        hook = hooks(hang, registry=registry, name="shared", timeout=60)
        server = await serve(registry=registry)

        scrapes = [
            asyncio.ensure_future(scrape(http, server.metrics_url))
            for _ in range(3)
        ]
        await eventually(lambda: waiters(hook) == 3, what="three waiting")
        hang.release.set()
        answers = await asyncio.gather(*scrapes)

        assert 1 == hang.calls
        assert [1.0, 1.0, 1.0] == [a.success("shared") for a in answers]

    async def test_exporters_of_both_kinds_share_a_run(
        self, registry, http, hooks
    ):
        """A scrape of an exporter in a thread waits for the run that a
        scrape in the loop started, and the other way round."""
        hang = Hang()
        hook = hooks(hang, registry=registry, name="shared", timeout=60)
        in_loop = await start_http_server(addr=LOOPBACK, registry=registry)
        in_thread = await asyncio.to_thread(
            start_http_server_in_thread, addr=LOOPBACK, registry=registry
        )
        try:
            answers = []
            for first, second in ((in_loop, in_thread), (in_thread, in_loop)):
                hang.release.clear()
                scrapes = [
                    asyncio.ensure_future(scrape(http, server.metrics_url))
                    for server in (first, second)
                ]
                await eventually(lambda: waiters(hook) == 2, what="both")
                hang.release.set()
                answers += await asyncio.gather(*scrapes)
        finally:
            await in_loop.close()
            await asyncio.to_thread(in_thread.close)

        assert 2 == hang.calls
        assert [1.0] * 4 == [answer.success("shared") for answer in answers]

    async def test_min_interval_reuses_a_recent_result(
        self, registry, serve, http, hooks, monkeypatch
    ):
        """Within min_interval of a run's end, scrapes reuse its outcome;
        after it, the hook runs again."""
        clock = FakeClock()
        monkeypatch.setattr(_collect_hook, "clock", clock)
        counting = Counting(registry)
        hooks(counting, registry=registry, name="runs", min_interval=10)
        server = await serve(registry=registry)

        first = await scrape(http, server.metrics_url)
        clock.now += 9.5
        reused = await scrape(http, server.metrics_url)
        clock.now += 0.5
        again = await scrape(http, server.metrics_url)

        assert [(1.0, 1.0), (1.0, 1.0), (2.0, 1.0)] == [
            (answer.value("runs"), answer.success("runs"))
            for answer in (first, reused, again)
        ]

    async def test_a_reused_failure(
        self, registry, serve, http, hooks, monkeypatch
    ):
        """A failure is reused too: the backend is not asked again before
        min_interval."""
        monkeypatch.setattr(_collect_hook, "clock", FakeClock())
        calls = 0

        async def failing() -> None:
            nonlocal calls
            calls += 1
            raise OSError("down")

        hooks(failing, registry=registry, name="failing", min_interval=10)
        server = await serve(registry=registry)

        answers = [await scrape(http, server.metrics_url) for _ in range(2)]

        assert (1, [0.0, 0.0]) == (
            calls,
            [answer.success("failing") for answer in answers],
        )


class TestRemove:
    async def test_removed_hooks_do_not_run(
        self, registry, serve, http, hooks
    ):
        """After remove(), scrapes run the hook no more, and its health
        series are gone."""
        counting = Counting(registry)
        hook = hooks(counting, registry=registry, name="runs")
        server = await serve(registry=registry)
        before = await scrape(http, server.metrics_url)

        hook.remove()
        after = await scrape(http, server.metrics_url)

        assert (1.0, 1.0) == (before.value("runs"), before.success("runs"))
        assert (1.0, None, None, 1) == (
            after.value("runs"),
            after.success("runs"),
            after.duration("runs"),
            counting.calls,
        )
        assert not hook.is_alive

    async def test_remove_twice(self, registry):
        """Removing twice does nothing the second time; a hook never run
        has no series to drop."""
        hook = on_scrape(nothing, registry=registry)

        hook.remove()
        hook.remove()

        assert registry.get_sample_value(SUCCESS, {"hook": hook.name}) is None

    async def test_remove_from_another_thread(self, registry):
        """remove() may be called from any thread."""
        hook = on_scrape(nothing, registry=registry)

        await asyncio.to_thread(hook.remove)

        assert () == _collect._hooks[registry]

    async def test_remove_cancels_the_run_under_way(
        self, registry, serve, http
    ):
        """A run under way is cancelled; the scrape waiting for it answers
        at once, without the removed hook's series."""
        hang = Hang()
        hook = on_scrape(hang, registry=registry, name="hang", timeout=60)
        server = await serve(registry=registry)
        waiting = asyncio.ensure_future(scrape(http, server.metrics_url))
        await eventually(lambda: waiters(hook) == 1, what="a scrape waiting")

        hook.remove()
        answer = await waiting

        await eventually(lambda: hang.cancelled == 1, what="the cancellation")
        assert (200, None) == (answer.status, answer.success("hang"))

    async def test_remove_once_the_registry_is_gone(self):
        """A hook outlives its registry harmlessly."""
        registry = CollectorRegistry()
        hook = on_scrape(nothing, registry=registry)
        del registry
        gc.collect()

        hook.remove()

        assert not hook.is_alive


class TestRun:
    async def test_removed_before_it_starts(self):
        """A run cancelled (by remove() in another thread) before the
        scrape that made it starts its task is cancelled as it starts."""
        hang = Hang()
        run = _collect_hook._Run(concurrent.futures.Future(), 0.0)
        run.cancel()

        run.start_here(hang)
        await asyncio.wait((run.task,))

        assert (True, 0) == (run.task.cancelled(), hang.calls)


class TestClosedLoops:
    async def test_a_hook_whose_loop_is_closed(
        self, registry, serve, http, caplog
    ):
        """A hook whose loop has closed is skipped and reported as failed,
        with duration 0, logged once; the scrape answers 200."""

        async def main() -> ScrapeHook:
            return on_scrape(nothing, registry=registry, name="ghost")

        hook = await run_in_new_loop(main)
        server = await serve(registry=registry)

        answers = [await scrape(http, server.metrics_url) for _ in range(2)]

        assert [(200, 0.0, 0.0)] * 2 == [
            (a.status, a.success("ghost"), a.duration("ghost"))
            for a in answers
        ]
        assert 1 == len(hook_records(caplog, "'ghost' is skipped"))
        assert not hook.is_alive
        hook.remove()

    async def test_a_loop_closed_at_the_last_moment(
        self, registry, serve, http, monkeypatch
    ):
        """A loop that closes between the check and the submission makes
        the hook skipped, not the scrape fail."""
        loops = []

        async def main() -> ScrapeHook:
            loops.append(asyncio.get_running_loop())
            return on_scrape(nothing, registry=registry, name="ghost")

        hook = await run_in_new_loop(main)
        monkeypatch.setattr(loops[0], "is_closed", lambda: False)
        server = await serve(registry=registry)

        scraped = await scrape(http, server.metrics_url)

        assert (200, 0.0) == (scraped.status, scraped.success("ghost"))
        hook.remove()

    async def test_replaced_by_a_hook_of_the_same_name(
        self, registry, serve, http, hooks
    ):
        """A hook of the same name replaces one whose loop is closed (an
        application built again); removing the old handle then leaves the
        new one alone."""

        async def main() -> ScrapeHook:
            return on_scrape(nothing, registry=registry, name="pool")

        old = await run_in_new_loop(main)
        new = hooks(nothing, registry=registry, name="pool")
        old.remove()
        server = await serve(registry=registry)

        scraped = await scrape(http, server.metrics_url)

        assert [new] == list(_collect._hooks[registry])
        assert 1.0 == scraped.success("pool")


class TestScrapeBudget:
    @pytest.mark.parametrize(
        ("header", "budget"),
        [
            (None, None),
            ("10", 9.75),
            ("1", 0.75),
            ("0.5", 0.25),
            ("0.3", 0.15),
            ("0", None),
            ("-1", None),
            ("inf", None),
            ("nan", None),
            ("", None),
            ("ten", None),
        ],
    )
    def test_budget(self, header, budget):
        """The scraper's timeout less the offset, or less half of it when
        that is smaller; nothing for a header that is not a positive
        number."""
        assert budget == _collect.scrape_budget(header)

    def test_offset(self):
        """The offset is a quarter of a second."""
        assert 0.25 == SCRAPE_TIMEOUT_OFFSET

    async def test_the_timeout_bounds_a_longer_scrape_timeout(
        self, registry, serve, http, hooks
    ):
        """A hook's timeout shorter than the scraper's wins."""
        hang = Hang()
        hooks(hang, registry=registry, name="hang", timeout=0.2)
        server = await serve(registry=registry)

        scraped = await scrape(http, server.metrics_url, scrape_timeout="60")

        assert 0.0 == scraped.success("hang")


def test_health_metric_names():
    """The documented names."""
    assert (DURATION, SUCCESS) == (
        _collect_hook.DURATION,
        _collect_hook.SUCCESS,
    )
