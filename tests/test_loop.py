"""Tests for prom_async.aio.loop: the event loop monitor and its watchdog."""

from __future__ import annotations

import asyncio
import asyncio.events
import concurrent.futures
import math
import threading
import time
import urllib.request

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiohttp import web
from blockbuster import BlockBuster
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from docs_pages import code_blocks
from fixtures_servers import eventually, poll
from prom_async.aio import _loop_slow
from prom_async.aio._loop_monitor import WorstLag
from prom_async.aio.loop import LAG_BUCKETS, LoopMonitor
from prom_async.aio.web import add_metrics_route, start_http_server_in_thread


LOOPBACK = "127.0.0.1"
LAG = "asyncio_event_loop_lag_seconds"
LAG_MAX = "asyncio_event_loop_lag_max_seconds"
BLOCKED = "asyncio_event_loop_blocked_seconds"
TASKS = "asyncio_tasks"
SLOW = "asyncio_event_loop_slow_callbacks_total"
GAUGES = (LAG_MAX, BLOCKED, TASKS)
#: A probe interval short enough for probes to follow each other quickly.
FAST = 0.005


def block_the_loop(seconds: float) -> None:
    """
    Keep the running event loop from running anything for *seconds*: the
    freeze under test, not a wait.
    """
    time.sleep(seconds)


@pytest.fixture
def deliberate_blocks(blockbuster: BlockBuster) -> BlockBuster:
    """
    Let block_the_loop() block the loop on purpose, and prometheus_client
    take the lock of a value that the exporter's thread holds for a moment
    while it reads it.
    """
    blockbuster.functions["time.sleep"].can_block_in(
        "tests/test_loop.py", "block_the_loop"
    )
    for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
        blockbuster.functions[name].can_block_in(
            "prometheus_client/values.py", {"inc", "get", "set"}
        )
    return blockbuster


def probes(registry: CollectorRegistry, **labels: str) -> float:
    """
    How many probes the monitor has run so far.
    """
    return registry.get_sample_value(f"{LAG}_count", labels) or 0.0


def above(registry: CollectorRegistry, bound: float, **labels: str) -> float:
    """
    How many probes ran later than *bound* seconds.
    """
    below = registry.get_sample_value(
        f"{LAG}_bucket", {**labels, "le": str(bound)}
    )
    return probes(registry, **labels) - (below or 0.0)


def gauges(registry: CollectorRegistry, **labels: str) -> dict[str, Any]:
    """
    The scrape-time gauges' values (``None`` for one without a sample).
    """
    return {name: registry.get_sample_value(name, labels) for name in GAUGES}


def scrape(url: str, name: str) -> float | None:
    """
    GET *url* with a blocking client and read the sample *name*.
    """
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


async def until_probed(registry: CollectorRegistry, count: float) -> None:
    """
    Let the loop run until the monitor has run *count* probes in all.
    """
    await eventually(
        lambda: probes(registry) >= count, what=f"{count:g} probes"
    )


def run_in_new_loop(main: Callable[[], Any]) -> Any:
    """
    Run the coroutine function *main* in an event loop of a new thread.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, main()).result()


class TestLoopMonitorOptions:
    def test_defaults(self, registry):
        """By default it probes every 0.1 s and keeps 60 s of worst lag."""
        monitor = LoopMonitor(registry=registry)

        assert "<LoopMonitor interval=0.1 window=60 stopped>" == repr(monitor)
        assert not monitor.running

    def test_lag_buckets(self):
        """The lag histogram's buckets go from 1 ms to 10 s."""
        assert (0.001, 10.0) == (LAG_BUCKETS[0], LAG_BUCKETS[-1])
        assert sorted(LAG_BUCKETS) == list(LAG_BUCKETS)

    @pytest.mark.parametrize(
        "option", ["interval", "window", "slow_callback_threshold"]
    )
    @pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan])
    def test_seconds_must_be_positive(self, registry, option, value):
        """A duration that is not positive and finite is refused."""
        with pytest.raises(ValueError, match=f"{option} must be positive"):
            LoopMonitor(registry=registry, **{option: value})

    @pytest.mark.parametrize(
        "option", ["interval", "window", "slow_callback_threshold"]
    )
    @pytest.mark.parametrize("value", ["1", True])
    def test_seconds_must_be_numbers(self, registry, option, value):
        """A duration that is not a number is refused."""
        with pytest.raises(TypeError, match=f"{option} must be a number"):
            LoopMonitor(registry=registry, **{option: value})

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"registry": object()}, TypeError, "registry must be"),
            ({"namespace": 1}, TypeError, "namespace must be a string"),
            ({"name": 1}, TypeError, "name must be a string"),
            ({"name": ""}, ValueError, "name must not be empty"),
        ],
    )
    def test_wrong_options(self, registry, options, error, message):
        """A registry, namespace or name of the wrong kind is refused."""
        with pytest.raises(error, match=message):
            LoopMonitor(**{"registry": registry, **options})

    def test_families_shared_per_registry(self, registry):
        """Two monitors into one registry share its metric families."""
        LoopMonitor(registry=registry, slow_callback_threshold=0.1)
        LoopMonitor(registry=registry, slow_callback_threshold=0.2)

        names = [metric.name for metric in registry.collect()]

        assert sorted(set(names)) == sorted(names)
        assert {LAG, *GAUGES, SLOW.removesuffix("_total")} == set(names)

    def test_named_and_unnamed_in_one_registry(self, registry):
        """A monitor with a name and one without cannot share a
        registry."""
        LoopMonitor(registry=registry)

        with pytest.raises(ValueError, match="label names"):
            LoopMonitor(registry=registry, name="main")

    def test_namespace(self, registry):
        """namespace= prefixes every metric name."""
        LoopMonitor(
            registry=registry, namespace="app", slow_callback_threshold=1
        )

        assert {
            f"app_{name}"
            for name in (LAG, *GAUGES, SLOW.removesuffix("_total"))
        } == {metric.name for metric in registry.collect()}

    def test_buckets(self, registry):
        """buckets= sets the lag histogram's buckets."""
        LoopMonitor(registry=registry, buckets=(0.5, 1.0))

        assert 0.0 == registry.get_sample_value(f"{LAG}_bucket", {"le": "0.5"})
        assert None is registry.get_sample_value(
            f"{LAG}_bucket", {"le": "0.001"}
        )


class TestStartAndStop:
    async def test_async_with(self, registry):
        """Inside async with it probes and reports; after it, the gauges
        have no samples, the probe is gone and no task is left."""
        async with LoopMonitor(registry=registry, interval=FAST) as monitor:
            assert monitor.running
            assert "running" in repr(monitor)
            await until_probed(registry, 3)
            during = gauges(registry)
        after = probes(registry)
        # Time for several more probes, had one survived.
        await asyncio.sleep(FAST * 10)

        assert None not in during.values()
        assert not monitor.running
        assert {LAG_MAX: None, BLOCKED: None, TASKS: None} == gauges(registry)
        assert after == probes(registry)
        assert {asyncio.current_task()} == asyncio.all_tasks()

    async def test_start_and_stop(self, registry):
        """start() and stop() do what async with does, and it starts again
        after a stop."""
        monitor = LoopMonitor(registry=registry, interval=FAST)

        monitor.start()
        await until_probed(registry, 1)
        monitor.stop()
        monitor.stop()
        stopped = gauges(registry)
        monitor.start()
        await until_probed(registry, probes(registry) + 1)
        monitor.stop()

        assert {LAG_MAX: None, BLOCKED: None, TASKS: None} == stopped

    def test_start_needs_a_running_loop(self, registry):
        """start() outside an event loop is an error."""
        with pytest.raises(RuntimeError, match="no running event loop"):
            LoopMonitor(registry=registry).start()

    async def test_start_twice(self, registry):
        """Starting a running monitor is an error."""
        async with LoopMonitor(registry=registry) as monitor:
            with pytest.raises(RuntimeError, match="already running"):
                monitor.start()

    async def test_one_monitor_per_registry_and_name(self, registry):
        """A second monitor into the same registry, namespace and name is
        refused while the first runs; another namespace is not."""
        async with LoopMonitor(registry=registry):
            second = LoopMonitor(registry=registry)
            with pytest.raises(RuntimeError, match="its own"):
                second.start()
            assert not second.running
            async with LoopMonitor(registry=registry, namespace="other"):
                with pytest.raises(RuntimeError, match="namespace 'other'"):
                    LoopMonitor(registry=registry, namespace="other").start()

    async def test_stop_from_another_thread(self, registry):
        """stop() from another thread while the loop runs is refused."""
        async with LoopMonitor(registry=registry) as monitor:
            with pytest.raises(RuntimeError, match="must be called from"):
                await asyncio.to_thread(monitor.stop)

            assert monitor.running

    async def test_a_closed_loops_monitor_is_replaced(self, registry):
        """A monitor whose loop was closed without stopping it reports
        nothing and gives way to a new one, which its late stop() leaves
        alone."""
        forgotten = LoopMonitor(registry=registry)

        async def start_and_forget() -> None:
            forgotten.start()

        await asyncio.to_thread(run_in_new_loop, start_and_forget)
        left = gauges(registry)
        async with LoopMonitor(registry=registry, interval=FAST):
            await until_probed(registry, 1)
            forgotten.stop()
            kept = gauges(registry)

        assert {LAG_MAX: None, BLOCKED: None, TASKS: None} == left
        assert None not in kept.values()

    def test_a_loop_that_is_not_running(self, registry):
        """Between two runs of its loop, the monitor reports the loop as
        not blocked, and stops from outside."""
        loop = asyncio.new_event_loop()
        monitor = LoopMonitor(registry=registry)

        async def start() -> None:
            monitor.start()

        try:
            loop.run_until_complete(start())
            between = gauges(registry)
            monitor.stop()
        finally:
            loop.close()

        assert {LAG_MAX: 0.0, BLOCKED: 0.0, TASKS: 0.0} == between
        assert {LAG_MAX: None, BLOCKED: None, TASKS: None} == gauges(registry)


class TestCleanupCtx:
    async def test_runs_with_the_app(self, registry, http):
        """In an app's cleanup contexts it runs from start-up to cleanup,
        and the app's own /metrics serves it."""
        monitor = LoopMonitor(registry=registry, interval=FAST)
        app = web.Application()
        app.cleanup_ctx.append(monitor.cleanup_ctx)
        add_metrics_route(app, "/metrics", registry=registry)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, LOOPBACK, 0)
            await site.start()
            assert monitor.running
            await until_probed(registry, 1)
            port = runner.addresses[0][1]
            async with http.get(
                f"http://{LOOPBACK}:{port}/metrics",
                headers={"Accept-Encoding": "identity"},
            ) as response:
                body = await response.text()
        finally:
            await runner.cleanup()

        assert not monitor.running
        assert f"\n{BLOCKED} " in body
        assert f"\n{LAG}_count " in body


class TestLag:
    async def test_a_block_is_observed(self, registry, deliberate_blocks):
        """A block of the loop is observed as lag, and kept as the worst
        lag."""
        async with LoopMonitor(registry=registry, interval=FAST):
            await until_probed(registry, 1)
            block_the_loop(0.3)
            await until_probed(registry, probes(registry) + 1)

            assert 1 <= above(registry, 0.25)
            assert 0.25 < registry.get_sample_value(LAG_MAX)

    async def test_worst_lag_is_forgotten(self, registry, deliberate_blocks):
        """The worst lag goes once the window has passed."""
        async with LoopMonitor(registry=registry, interval=FAST, window=0.24):
            await until_probed(registry, 1)
            block_the_loop(0.3)
            await until_probed(registry, probes(registry) + 1)
            worst = registry.get_sample_value(LAG_MAX)
            await eventually(
                lambda: registry.get_sample_value(LAG_MAX) < 0.25,
                what="the worst lag to be forgotten",
            )

        assert 0.25 < worst


class TestWorstLag:
    def test_kept_for_the_window(self):
        """A lag is the worst for at least the window, at most a twelfth
        of it more."""
        worst = WorstLag(12.0)
        worst.record(100.5, 0.3)

        assert 0.3 == worst.worst(100.5)
        assert 0.3 == worst.worst(112.4)
        assert 0.3 == worst.worst(112.99)
        assert 0.0 == worst.worst(113.0)

    def test_the_worst_of_several(self):
        """The worst of the lags in the window wins, within a slot too."""
        worst = WorstLag(12.0)
        worst.record(100.1, 0.2)
        worst.record(100.2, 0.5)
        worst.record(100.3, 0.1)
        worst.record(105.0, 0.4)

        assert 0.5 == worst.worst(105.0)
        assert 0.4 == worst.worst(113.5)

    def test_a_reused_slot_forgets(self):
        """A slot used again a window later holds only the new lag."""
        worst = WorstLag(12.0)
        worst.record(100.5, 0.9)
        worst.record(113.5, 0.1)

        assert 0.1 == worst.worst(113.5)


class TestWatchdog:
    async def test_reports_a_stuck_loop_while_stuck(
        self, registry, deliberate_blocks
    ):
        """The threaded exporter answers while the app's loop is stuck, and
        the watchdog gauge says how long it has been stuck."""
        server = await asyncio.to_thread(
            start_http_server_in_thread, addr=LOOPBACK, registry=registry
        )
        try:
            async with LoopMonitor(registry=registry, interval=FAST):
                await until_probed(registry, 1)
                unblocked = threading.Event()

                def stuck() -> float | None:
                    if unblocked.is_set():
                        raise AssertionError("no scrape saw the loop stuck")
                    value = scrape(server.metrics_url, BLOCKED)
                    return value if value is not None and value >= 1 else None

                watcher = asyncio.get_running_loop().run_in_executor(
                    None, lambda: poll(stuck, what="the loop seen stuck")
                )
                block_the_loop(2.0)
                unblocked.set()
                seen = await watcher
                await until_probed(registry, probes(registry) + 1)
                recovered = registry.get_sample_value(BLOCKED)
                worst = registry.get_sample_value(LAG_MAX)
        finally:
            await asyncio.to_thread(server.close)

        assert 1.0 <= seen
        assert 1.0 > recovered
        assert 1.0 <= worst
        assert 1 <= above(registry, 1.0)

    async def test_worst_lag_includes_a_stall_in_progress(
        self, registry, deliberate_blocks
    ):
        """While the loop is stuck, before any probe could observe it, the
        worst lag already counts the stall."""
        async with LoopMonitor(registry=registry, interval=FAST):
            await until_probed(registry, 1)
            before = probes(registry)

            def stalled() -> tuple[float, float] | None:
                worst = registry.get_sample_value(LAG_MAX)
                seen = (worst, probes(registry))
                return seen if worst is not None and worst >= 0.2 else None

            watcher = asyncio.get_running_loop().run_in_executor(
                None, lambda: poll(stalled, what="a worst lag of 0.2 s")
            )
            block_the_loop(0.5)
            worst, probed = await watcher

        assert 0.2 <= worst
        assert before == probed


class TestTasks:
    async def test_counts_the_loops_tasks(self, registry):
        """asyncio_tasks is the loop's tasks that are not done, read from
        another thread."""
        release = asyncio.Event()
        async with LoopMonitor(registry=registry):
            before = await asyncio.to_thread(registry.get_sample_value, TASKS)
            waiting = [asyncio.create_task(release.wait()) for _ in range(5)]
            during = await asyncio.to_thread(registry.get_sample_value, TASKS)
            release.set()
            await asyncio.gather(*waiting)
            after = await asyncio.to_thread(registry.get_sample_value, TASKS)

        assert (1.0, 6.0, 1.0) == (before, during, after)

    async def test_tasks_of_this_loop_only(self, registry):
        """Tasks of another loop are not counted."""

        async def other() -> float | None:
            await asyncio.gather(asyncio.sleep(0), asyncio.sleep(0))
            return registry.get_sample_value(TASKS)

        async with LoopMonitor(registry=registry):
            read = await asyncio.to_thread(run_in_new_loop, other)

        assert 1.0 == read

    async def test_a_failed_count_is_left_out(self, registry, monkeypatch):
        """If asyncio cannot list the tasks, the sample is left out and the
        rest of the scrape goes on."""

        def fail(loop: object = None) -> set[asyncio.Task[Any]]:
            raise RuntimeError("Set changed size during iteration")

        async with LoopMonitor(registry=registry):
            with monkeypatch.context() as patched:
                patched.setattr(asyncio, "all_tasks", fail)
                read = gauges(registry)

        assert None is read[TASKS]
        assert None is not read[BLOCKED]


class TestTwoLoops:
    async def test_two_named_loops_in_one_registry(self, registry):
        """Monitors of two loops with names report side by side, under the
        loop label."""
        started = concurrent.futures.Future[None]()
        finish = threading.Event()

        async def worker() -> None:
            async with LoopMonitor(registry=registry, name="worker"):
                started.set_result(None)
                while not finish.is_set():
                    await asyncio.sleep(FAST)

        thread = threading.Thread(target=lambda: asyncio.run(worker()))
        thread.start()
        try:
            async with LoopMonitor(
                registry=registry, name="main", interval=FAST
            ):
                await asyncio.wrap_future(started)
                await eventually(
                    lambda: probes(registry, loop="main") >= 1,
                    what="a probe of the main loop",
                )
                main = gauges(registry, loop="main")
                other = gauges(registry, loop="worker")
        finally:
            finish.set()
            await asyncio.to_thread(thread.join)

        assert None not in main.values()
        assert None not in other.values()
        assert 1.0 == main[TASKS] == other[TASKS]


class TestSlowCallbacks:
    @pytest.fixture(autouse=True)
    def handle_run_restored(self) -> Iterator[None]:
        """
        asyncio's Handle._run is asyncio's again after each test.
        """
        original = asyncio.events.Handle._run
        yield
        assert original is asyncio.events.Handle._run

    async def test_counts_slow_callbacks(self, registry, deliberate_blocks):
        """Callbacks that run over the threshold are counted, others not,
        and Handle._run is asyncio's again after the stop."""
        async with LoopMonitor(
            registry=registry, slow_callback_threshold=0.05
        ):
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.call_soon(block_the_loop, 0.06)
            loop.call_soon(block_the_loop, 0.06)
            loop.call_soon(done.set_result, None)
            await done
            slow = registry.get_sample_value(SLOW)

        assert 2.0 == slow

    async def test_named(self, registry, deliberate_blocks):
        """A named monitor counts under its loop label."""
        async with LoopMonitor(
            registry=registry, name="main", slow_callback_threshold=0.05
        ):
            await asyncio.sleep(0)  # a callback of its own, to be timed
            block_the_loop(0.06)
            await asyncio.sleep(0)

        assert 1.0 == registry.get_sample_value(SLOW, {"loop": "main"})

    async def test_other_loops_are_not_timed(
        self, registry, deliberate_blocks
    ):
        """The callbacks of another loop are not counted."""

        async def other() -> None:
            asyncio.get_running_loop().call_soon(block_the_loop, 0.06)
            await asyncio.sleep(0.07)

        async with LoopMonitor(
            registry=registry, slow_callback_threshold=0.05
        ):
            await asyncio.to_thread(run_in_new_loop, other)

        assert 0.0 == registry.get_sample_value(SLOW)

    async def test_two_registries_one_loop(self, deliberate_blocks):
        """Two monitors of one loop into two registries each count with
        their own threshold."""
        low, high = CollectorRegistry(), CollectorRegistry()
        async with (
            LoopMonitor(registry=low, slow_callback_threshold=0.05),
            LoopMonitor(registry=high, slow_callback_threshold=10),
        ):
            await asyncio.sleep(0)  # a callback of its own, to be timed
            block_the_loop(0.06)
            await asyncio.sleep(0)

        assert (1.0, 0.0) == (
            low.get_sample_value(SLOW),
            high.get_sample_value(SLOW),
        )

    async def test_wrapped_again_by_someone_else(
        self, registry, deliberate_blocks
    ):
        """If something else wraps Handle._run over prom_async's wrapper,
        a stop leaves both in place, and a new start counts through
        them."""
        handle = asyncio.events.Handle
        original = handle._run
        monitor = LoopMonitor(registry=registry, slow_callback_threshold=0.05)
        monitor.start()
        ours = handle._run

        def theirs(self: asyncio.Handle) -> None:
            ours(self)

        handle._run = theirs
        try:
            monitor.stop()
            kept = handle._run
            monitor.start()
            await asyncio.sleep(0)  # a callback of its own, to be timed
            block_the_loop(0.06)
            await asyncio.sleep(0)
            monitor.stop()
        finally:
            handle._run = ours
        monitor.start()
        monitor.stop()

        assert theirs is kept
        assert 1.0 == registry.get_sample_value(SLOW)
        assert original is handle._run

    async def test_refused_on_another_loop_class(self, registry, monkeypatch):
        """With a loop that is not asyncio's own, counting slow callbacks
        is refused with a message that says what works."""

        class OtherLoop(asyncio.AbstractEventLoop):
            pass

        monitor = LoopMonitor(registry=registry, slow_callback_threshold=0.1)
        with monkeypatch.context() as patched:
            patched.setattr(asyncio, "get_running_loop", OtherLoop)
            with pytest.raises(RuntimeError, match="OtherLoop") as refused:
                monitor.start()

        assert "slow_callback_threshold=None" in str(refused.value)
        assert not monitor.running
        async with LoopMonitor(registry=registry):
            pass

    def test_refused_on_uvloop(self, registry):
        """On uvloop, counting slow callbacks is refused with a message
        naming uvloop; the rest of the monitor works."""
        uvloop = pytest.importorskip("uvloop")

        async def main() -> tuple[str, float]:
            with pytest.raises(RuntimeError, match="uvloop") as refused:
                LoopMonitor(
                    registry=CollectorRegistry(), slow_callback_threshold=0.1
                ).start()
            async with LoopMonitor(registry=registry, interval=FAST):
                await until_probed(registry, 2)
                return str(refused.value), registry.get_sample_value(BLOCKED)

        loop = uvloop.new_event_loop()
        try:
            message, blocked = loop.run_until_complete(main())
        finally:
            loop.close()

        assert "uvloop.Loop" in message
        assert 0.0 <= blocked

    async def test_refused_without_handle_internals(
        self, registry, monkeypatch
    ):
        """On an asyncio without Handle._run, counting is refused."""

        class Bare:
            __slots__ = ("_loop",)

        monitor = LoopMonitor(registry=registry, slow_callback_threshold=0.1)
        with monkeypatch.context() as patched:
            patched.setattr(asyncio.events, "Handle", Bare)
            with pytest.raises(RuntimeError, match=r"Handle\._run"):
                monitor.start()

        assert not monitor.running
        assert not _loop_slow._watched


def documented_queries() -> list[str]:
    return code_blocks("aiohttp-service/loop.rst", "promql")


class TestDocumentedPromQL:
    def test_a_query_for_each_metric(self):
        """The docs give PromQL for each metric the monitor reports."""
        queries = documented_queries()

        assert [] == [
            name
            for name in (LAG, LAG_MAX, BLOCKED, TASKS, SLOW)
            if not any(name in query for query in queries)
        ]

    async def test_queries_answer_about_a_stall(
        self, registry, prometheus, deliberate_blocks
    ):
        """Prometheus scrapes the threaded exporter during a stall of the
        loop, and each query of the docs, evaluated at the end of the
        stall, answers for the target."""
        queries = documented_queries()
        server = await asyncio.to_thread(
            start_http_server_in_thread, addr=LOOPBACK, registry=registry
        )
        target = f"{LOOPBACK}:{server.socket.port}"
        try:
            scraper = await asyncio.to_thread(prometheus, [target])
            async with LoopMonitor(
                registry=registry, slow_callback_threshold=0.5
            ):
                await asyncio.to_thread(scraper.wait_for_target_up, target)
                await asyncio.to_thread(
                    scraper.wait_for_value,
                    f"count_over_time({BLOCKED}[1m]) >= bool 2",
                    "1",
                )
                await asyncio.sleep(0)  # a callback of its own, to be timed
                block_the_loop(3.0)
                stalled_until = time.time()
                await asyncio.sleep(0)
                await asyncio.to_thread(
                    scraper.wait_for_value,
                    f"timestamp({BLOCKED}) > bool {stalled_until}",
                    "1",
                )
            answers = {
                query: await asyncio.to_thread(
                    scraper.api,
                    "query",
                    query=query,
                    time=str(stalled_until - 0.1),
                )
                for query in queries
            }
        finally:
            await asyncio.to_thread(server.close)

        assert {query: {target} for query in answers} == {
            query: {
                series["metric"]["instance"] for series in answer["result"]
            }
            for query, answer in answers.items()
        }
