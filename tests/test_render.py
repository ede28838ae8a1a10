from __future__ import annotations

import asyncio
import gzip
import logging
import threading

from collections.abc import Callable, Iterator

import pytest

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
    values,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as openmetrics

from fixtures_servers import PROMETHEUS_2_42_ACCEPT, eventually
from prom_async.aio._render import (
    Exposition,
    RegistryRenderer,
    RenderTimeoutError,
    _accepts_gzip,
    _Render,
)
from prom_async.aio._render_families import (
    LazyRegistry,
    Pacer,
    encode_by_family,
)
from prom_async.aio._workers import (
    RENDERS,
    JobInterruptedError,
    PoolFullError,
    WorkerPool,
)


ACCEPT_HEADERS = [
    None,
    "text/plain",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    PROMETHEUS_2_42_ACCEPT,
    "*/*",
]


class CustomCollector:
    """
    A hand-written collector exposing every kind of family.
    """

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "custom_temperature", "Degrees.", labels=["room"]
        )
        gauge.add_metric(["kitchen"], 21.5, timestamp=1700000000.5)
        yield gauge
        counter = CounterMetricFamily(
            "custom_events", "Events.", labels=["kind"], created=17.0
        )
        counter.add_metric(['a\\b\n"c'], 3)
        yield counter
        yield SummaryMetricFamily(
            "custom_latency", "Latency.", count_value=2, sum_value=0.5
        )
        yield HistogramMetricFamily(
            "custom_size",
            "Size.",
            buckets=[("1.0", 1), ("+Inf", 3)],
            sum_value=7,
        )
        yield GaugeHistogramMetricFamily(
            "custom_queue", "Queue.", buckets=[("+Inf", 4)], gsum_value=9
        )
        yield InfoMetricFamily("custom_build", "Build.", value={"v": "1"})
        yield StateSetMetricFamily(
            "custom_state", "State.", value={"up": True, "down": False}
        )
        unknown = UnknownMetricFamily("custom_other", "Other.")
        unknown.add_metric([], 1)
        yield unknown


class FrozenCounter(Counter):
    """
    A counter whose collect() is overridden, so only collect() is right.
    """

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(self._name, "Frozen.")
        family.add_metric([], 42)
        return [family]


class FailingCollector:
    """
    A collector that raises until told to work.
    """

    def __init__(self) -> None:
        self.broken = True

    def collect(self) -> Iterator[Metric]:
        if self.broken:
            raise RuntimeError("collector is broken")
        yield GaugeMetricFamily("repaired", "Works again.", value=1)


class GatedCollector:
    """
    A collector that counts its collections and can hold the first one.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("collections", "Collections.")]

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        calls = self.calls
        self.entered.set()
        if not self.release.wait(60):
            raise TimeoutError("never released")
        yield GaugeMetricFamily("collections", "Collections.", value=calls)


def gated_renderer(
    registry: CollectorRegistry,
) -> tuple[GatedCollector, RegistryRenderer]:
    """
    A renderer of *registry*, with a `GatedCollector` registered in it.
    """
    collector = GatedCollector()
    registry.register(collector)
    return collector, RegistryRenderer(registry)


async def scrapes_behind_a_held_render(
    collector: GatedCollector, renderer: RegistryRenderer
) -> tuple[
    asyncio.Task[Exposition],
    asyncio.Task[Exposition],
    asyncio.Task[Exposition],
]:
    """
    Start a scrape, hold its render in collect(), then start two more.

    Returns the three tasks without yielding to the loop after the last two
    are created: they have not taken their first step yet.
    """
    collector.release.clear()

    def scrape() -> asyncio.Task[Exposition]:
        return asyncio.create_task(
            renderer.render(accept=None, accept_encoding=None, names=None)
        )

    first = scrape()
    assert await asyncio.to_thread(collector.entered.wait, 60)
    return first, scrape(), scrape()


def fill_stock_metrics(registry: CollectorRegistry) -> None:
    """
    Register one of each prometheus_client metric, some labelled.
    """
    counter = Counter("requests", "Requests.", ["path"], registry=registry)
    counter.labels('/a"b\\c\nd').inc(2)
    counter.labels("/ü").inc(exemplar={"trace_id": "abc"})
    Counter("plain", "No labels.", registry=registry).inc()
    gauge = Gauge("depth", "Depth\\ and\nmore.", ["q"], registry=registry)
    gauge.labels("x").set(-1.5)
    gauge.labels("y").set(float("inf"))
    Gauge("calls", "From a function.", registry=registry).set_function(
        lambda: 7
    )
    histogram = Histogram(
        "latency", "Latency.", ["op"], registry=registry, unit="seconds"
    )
    histogram.labels("get").observe(0.2, exemplar={"trace_id": "x"})
    histogram.labels("put").observe(3)
    summary = Summary("size", "Size.", ["kind"], registry=registry)
    summary.labels("k").observe(4)
    Info("build", "Build.", registry=registry).info({"version": "1.2"})
    Enum("state", "State.", states=["a", "b"], registry=registry).state("b")
    FrozenCounter("frozen", "Frozen.", registry=registry)


RegistryFactory = Callable[[CollectorRegistry], CollectorRegistry]


def stock_registry(registry: CollectorRegistry) -> CollectorRegistry:
    fill_stock_metrics(registry)
    return registry


def custom_registry(registry: CollectorRegistry) -> CollectorRegistry:
    registry.register(CustomCollector())
    return registry


def target_info_registry(registry: CollectorRegistry) -> CollectorRegistry:
    fill_stock_metrics(registry)
    registry.set_target_info({"service": "shop", "env": "test"})
    return registry


def empty_registry(registry: CollectorRegistry) -> CollectorRegistry:
    return registry


REGISTRIES = [
    stock_registry,
    custom_registry,
    target_info_registry,
    empty_registry,
]


@pytest.fixture
def multiprocess_registry(
    registry: CollectorRegistry,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CollectorRegistry]:
    """
    A registry reading metrics that a multiprocess worker wrote to files.
    """
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(
        values, "ValueClass", values.MultiProcessValue(lambda: 123)
    )
    worker = CollectorRegistry()
    jobs = Counter("mp_jobs", "Jobs.", ["kind"], registry=worker).labels("a")
    jobs.inc(3)
    busy = Gauge(
        "mp_busy", "Busy.", registry=worker, multiprocess_mode="livesum"
    )
    busy.set(2)
    wait = Histogram("mp_wait", "Wait.", registry=worker)
    wait.observe(0.3)
    MultiProcessCollector(registry, path=str(tmp_path))
    yield registry
    close_all = getattr(values, "close_all_multiprocess_files", None)
    if close_all is not None:
        close_all()
    else:  # Before prometheus_client 0.26, only each value knows its file.
        for value in (jobs._value, busy._value, wait._sum):
            value._file.close()


class TestRegistryRendererFormat:
    @pytest.mark.parametrize("accept", ACCEPT_HEADERS)
    @pytest.mark.parametrize("make_registry", REGISTRIES)
    async def test_body_is_prometheus_clients(
        self,
        registry: CollectorRegistry,
        accept: str | None,
        make_registry: RegistryFactory,
    ) -> None:
        """The body and content type are byte for byte prometheus_client's."""
        registry = make_registry(registry)
        encoder, content_type = choose_encoder(accept or "")

        exposition = await RegistryRenderer(registry).render(
            accept=accept, accept_encoding=None, names=None
        )

        assert Exposition(encoder(registry), content_type, None) == exposition

    async def test_prometheus_2_42_gets_openmetrics(
        self, registry: CollectorRegistry
    ) -> None:
        """Prometheus 2.42's Accept header gets OpenMetrics 1.0.0."""
        fill_stock_metrics(registry)

        exposition = await RegistryRenderer(registry).render(
            accept=PROMETHEUS_2_42_ACCEPT, accept_encoding=None, names=None
        )

        # prometheus_client names the escaping from 0.23 on.
        assert (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            openmetrics.generate_latest(registry),
        ) == (
            exposition.content_type.removesuffix("; escaping=underscores"),
            exposition.body,
        )

    async def test_exemplars_in_openmetrics(
        self, registry: CollectorRegistry
    ) -> None:
        """Exemplars of counters and histograms appear in OpenMetrics."""
        fill_stock_metrics(registry)

        exposition = await RegistryRenderer(registry).render(
            accept=PROMETHEUS_2_42_ACCEPT, accept_encoding=None, names=None
        )

        assert [True, True] == [
            b'# {trace_id="abc"} 1.0' in exposition.body,
            b'# {trace_id="x"} 0.2' in exposition.body,
        ]

    @pytest.mark.parametrize("accept", [None, PROMETHEUS_2_42_ACCEPT])
    async def test_multiprocess_registry(
        self,
        multiprocess_registry: CollectorRegistry,
        accept: str | None,
    ) -> None:
        """A multiprocess collector's registry renders like the library."""
        encoder, _ = choose_encoder(accept or "")

        exposition = await RegistryRenderer(multiprocess_registry).render(
            accept=accept, accept_encoding=None, names=None
        )

        assert b"mp_jobs_total" in exposition.body
        assert encoder(multiprocess_registry) == exposition.body

    async def test_global_registry(self) -> None:
        """The global registry renders the library's series and headers."""
        from prometheus_client import REGISTRY  # noqa: PLC0415

        def without_values(body: bytes) -> list[bytes]:
            # The process collector's values move between two renders.
            return [line.rsplit(b" ", 1)[0] for line in body.splitlines()]

        exposition = await RegistryRenderer(REGISTRY).render(
            accept=None, accept_encoding=None, names=None
        )

        assert without_values(generate_latest(REGISTRY)) == without_values(
            exposition.body
        )

    @pytest.mark.parametrize("accept", [None, PROMETHEUS_2_42_ACCEPT])
    @pytest.mark.parametrize(
        "names",
        [
            frozenset({"requests_total"}),
            frozenset({"latency_seconds_bucket", "depth", "target_info"}),
            frozenset({"missing"}),
            frozenset(),
        ],
    )
    async def test_names_restrict_like_name_parameter(
        self,
        registry: CollectorRegistry,
        accept: str | None,
        names: frozenset[str],
    ) -> None:
        """names restricts samples like prometheus_client's name[]."""
        target_info_registry(registry)
        encoder, _ = choose_encoder(accept or "")

        exposition = await RegistryRenderer(registry).render(
            accept=accept, accept_encoding=None, names=names
        )

        assert encoder(registry.restricted_registry(names)) == exposition.body


class TestRegistryRendererCompression:
    @pytest.mark.parametrize(
        "accept_encoding",
        ["gzip", "gzip, deflate, br", "GZIP;q=0.5", "*", "x-gzip"],
    )
    async def test_gzip_when_accepted(
        self, registry: CollectorRegistry, accept_encoding: str
    ) -> None:
        """A client admitting gzip gets the same body, gzipped."""
        fill_stock_metrics(registry)

        exposition = await RegistryRenderer(registry).render(
            accept=None, accept_encoding=accept_encoding, names=None
        )

        assert ("gzip", generate_latest(registry)) == (
            exposition.content_encoding,
            gzip.decompress(exposition.body),
        )

    @pytest.mark.parametrize(
        "accept_encoding",
        [None, "", "identity", "gzip;q=0", "deflate", "*;q=0", "gzip;q=0,*"],
    )
    async def test_plain_when_gzip_refused(
        self, registry: CollectorRegistry, accept_encoding: str | None
    ) -> None:
        """Without gzip admitted, or with q=0, the body is not compressed."""
        fill_stock_metrics(registry)

        exposition = await RegistryRenderer(registry).render(
            accept=None, accept_encoding=accept_encoding, names=None
        )

        assert (None, generate_latest(registry)) == (
            exposition.content_encoding,
            exposition.body,
        )


class TestAcceptsGzip:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("gzip;q=0.0", False),
            ("gzip; q=0.001", True),
            ("gzip;q=bogus", False),
            ("br, *;q=0.1", True),
            ("*, gzip;q=0", False),
        ],
    )
    def test_quality_values(self, header: str, expected: bool) -> None:
        """Quality values decide, and a named gzip beats the wildcard."""
        assert expected == _accepts_gzip(header)


class TestRegistryRendererSharing:
    async def test_waiting_scrapes_share_the_next_render(
        self, registry: CollectorRegistry
    ) -> None:
        """Scrapes arriving mid-render share one render begun after them."""
        collector, renderer = gated_renderer(registry)
        first, second, third = await scrapes_behind_a_held_render(
            collector, renderer
        )
        # Runs after both scrapes took their first step: they are waiting.
        asyncio.get_running_loop().call_soon(collector.release.set)
        results = await asyncio.gather(first, second, third)

        assert [b"1.0", b"2.0", b"2.0", True, 2] == [
            results[0].body.split(b"\n")[2].split()[-1],
            results[1].body.split(b"\n")[2].split()[-1],
            results[2].body.split(b"\n")[2].split()[-1],
            results[1].body is results[2].body,
            collector.calls,
        ]

    async def test_later_scrape_gets_a_fresh_render(
        self, registry: CollectorRegistry
    ) -> None:
        """A scrape after a render finished gets a new render."""
        collector, renderer = gated_renderer(registry)

        await renderer.render(accept=None, accept_encoding=None, names=None)
        later = await renderer.render(
            accept=None, accept_encoding=None, names=None
        )

        assert (2, b"collections 2.0") == (
            collector.calls,
            later.body.split(b"\n")[2],
        )

    async def test_different_representations_render_apart(
        self, registry: CollectorRegistry
    ) -> None:
        """Scrapes wanting different formats or encodings don't share."""
        collector, renderer = gated_renderer(registry)

        results = await asyncio.gather(
            renderer.render(accept=None, accept_encoding=None, names=None),
            renderer.render(
                accept=PROMETHEUS_2_42_ACCEPT,
                accept_encoding=None,
                names=None,
            ),
            renderer.render(accept=None, accept_encoding="gzip", names=None),
            renderer.render(
                accept=None,
                accept_encoding=None,
                names=frozenset({"collections"}),
            ),
        )

        assert (4, [None, None, "gzip", None]) == (
            collector.calls,
            [result.content_encoding for result in results],
        )

    async def test_cancelled_scrape_leaves_others_served(
        self, registry: CollectorRegistry
    ) -> None:
        """A scrape that is cancelled does not cancel the shared render."""
        collector, renderer = gated_renderer(registry)
        first, second, third = await scrapes_behind_a_held_render(
            collector, renderer
        )
        # Both run after the two scrapes took their first step.
        asyncio.get_running_loop().call_soon(second.cancel)
        asyncio.get_running_loop().call_soon(collector.release.set)
        await first
        exposition = await third

        assert (True, b"collections 2.0") == (
            second.cancelled(),
            exposition.body.split(b"\n")[2],
        )


class TestRegistryRendererErrors:
    async def test_collector_error_raises(
        self, registry: CollectorRegistry
    ) -> None:
        """A collector that raises makes render raise its error."""
        registry.register(FailingCollector())

        with pytest.raises(RuntimeError, match="collector is broken"):
            await RegistryRenderer(registry).render(
                accept=None, accept_encoding=None, names=None
            )

    async def test_error_does_not_wedge_later_renders(
        self, registry: CollectorRegistry
    ) -> None:
        """After a failed render, the next scrape renders afresh."""
        collector = FailingCollector()
        registry.register(collector)
        renderer = RegistryRenderer(registry)
        with pytest.raises(RuntimeError):
            await renderer.render(
                accept=None, accept_encoding=None, names=None
            )
        collector.broken = False

        exposition = await renderer.render(
            accept=None, accept_encoding=None, names=None
        )

        assert generate_latest(registry) == exposition.body

    async def test_waiters_on_a_failed_render_all_see_the_error(
        self, registry: CollectorRegistry
    ) -> None:
        """Every scrape sharing a failed render gets the error."""
        registry.register(FailingCollector())
        renderer = RegistryRenderer(registry)

        results = await asyncio.gather(
            *(
                renderer.render(accept=None, accept_encoding=None, names=None)
                for _ in range(3)
            ),
            return_exceptions=True,
        )

        assert [RuntimeError] * 3 == [type(result) for result in results]


class TestRegistryRendererPool:
    async def test_renders_in_the_exporters_pool(
        self, registry: CollectorRegistry
    ) -> None:
        """Renders run in the exporter's own threads, not the loop's
        default executor."""
        threads: list[str] = []

        class Noting:
            def collect(self) -> Iterator[Metric]:
                threads.append(threading.current_thread().name)
                yield GaugeMetricFamily("noted", "Noted.", value=1)

        registry.register(Noting())  # type: ignore[arg-type]

        await RegistryRenderer(registry).render(
            accept=None, accept_encoding=None, names=None
        )

        assert [True] == [
            name.startswith(f"{RENDERS.name}-") for name in threads
        ]

    async def test_pool_error_reaches_the_scrape(
        self, registry: CollectorRegistry
    ) -> None:
        """A pool that takes no more jobs fails the scrape with its error;
        the renderer serves again once it takes them."""
        pool = WorkerPool("test-full", workers=1, max_pending=0)
        collector = GatedCollector()
        registry.register(collector)
        collector.release.clear()
        held = asyncio.create_task(
            RegistryRenderer(registry, pool=pool).render(
                accept=None, accept_encoding=None, names=None
            )
        )
        assert await asyncio.to_thread(collector.entered.wait, 60)
        renderer = RegistryRenderer(registry, pool=pool)

        with pytest.raises(PoolFullError):
            await renderer.render(
                accept=None, accept_encoding=None, names=None
            )
        collector.release.set()
        await held
        later = await renderer.render(
            accept=None, accept_encoding=None, names=None
        )

        assert b"collections 2.0" == later.body.split(b"\n")[2]

    async def test_base_exception_stays_in_the_thread(
        self, registry: CollectorRegistry
    ) -> None:
        """A collector raising SystemExit fails the render with an
        Exception caused by it; the loop and later renders go on."""
        collector = FailingCollector()
        registry.register(collector)
        renderer = RegistryRenderer(registry)

        def exiting() -> None:
            raise SystemExit(3)

        collector.collect = exiting  # type: ignore[assignment,method-assign]
        with pytest.raises(JobInterruptedError) as raised:
            await renderer.render(
                accept=None, accept_encoding=None, names=None
            )
        del collector.collect
        collector.broken = False
        later = await renderer.render(
            accept=None, accept_encoding=None, names=None
        )

        assert (SystemExit, b"repaired 1.0") == (
            type(raised.value.__cause__),
            later.body.split(b"\n")[2],
        )


@pytest.fixture
def held(registry: CollectorRegistry) -> Iterator[GatedCollector]:
    """
    A `GatedCollector` in the registry that holds every collection until
    the test ends (or releases it).
    """
    collector = GatedCollector()
    collector.release.clear()
    registry.register(collector)
    yield collector
    collector.release.set()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "prom_async.aio.web"
        and record.levelno >= logging.WARNING
    ]


async def overdue_render(
    registry: CollectorRegistry, collector: GatedCollector
) -> RegistryRenderer:
    """
    A renderer of *registry* whose one render is held past its 0.2 s
    render timeout.
    """
    renderer = RegistryRenderer(registry, render_timeout=0.2)
    with pytest.raises(RenderTimeoutError):
        await renderer.render(accept=None, accept_encoding=None, names=None)
    assert collector.entered.is_set()
    await eventually(
        lambda: renderer._stall.overdue, what="the render to be overdue"
    )
    return renderer


class TestRegistryRendererDeadline:
    async def test_past_the_deadline_raises_and_tells_once(
        self,
        registry: CollectorRegistry,
        held: GatedCollector,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A render past the scrape's deadline fails the scrape; one
        warning names the registry and the collector it is in."""
        renderer = RegistryRenderer(registry)
        loop = asyncio.get_running_loop()

        with pytest.raises(RenderTimeoutError):
            await renderer.render(
                accept=None,
                accept_encoding=None,
                names=None,
                deadline=loop.time() + 0.1,
            )

        (warning,) = warnings_of(caplog)
        assert object.__repr__(registry) in warning
        assert "test_render.GatedCollector" in warning

    async def test_overdue_render_is_not_repeated(
        self,
        registry: CollectorRegistry,
        held: GatedCollector,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """While a render is past its render timeout, scrapes of any kind
        fail at once, through any renderer of the registry, without
        another render or another warning."""
        renderer = await overdue_render(registry, held)
        other = RegistryRenderer(registry)

        for scraping, accept, encoding, names in (
            (renderer, None, None, None),
            (renderer, PROMETHEUS_2_42_ACCEPT, "gzip", None),
            (other, None, None, frozenset({"collections"})),
        ):
            with pytest.raises(RenderTimeoutError):
                await scraping.render(
                    accept=accept, accept_encoding=encoding, names=names
                )

        assert (1, 1) == (held.calls, len(warnings_of(caplog)))

    async def test_renders_resume_once_it_returns(
        self,
        registry: CollectorRegistry,
        held: GatedCollector,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Once the overdue render returns, scrapes are rendered again;
        a later stall is told again."""
        renderer = await overdue_render(registry, held)

        held.release.set()
        await eventually(
            lambda: not renderer._stall.overdue, what="the render to return"
        )
        exposition = await renderer.render(
            accept=None, accept_encoding=None, names=None
        )
        held.release.clear()
        with pytest.raises(RenderTimeoutError):
            await renderer.render(
                accept=None, accept_encoding=None, names=None
            )

        assert (b"collections 2.0", 2) == (
            exposition.body.split(b"\n")[2],
            len(warnings_of(caplog)),
        )

    async def test_scrapes_waiting_in_line_time_out_without_a_render(
        self, registry: CollectorRegistry, held: GatedCollector
    ) -> None:
        """Scrapes of other kinds wait behind the running render; those
        that time out there are never rendered."""
        renderer = RegistryRenderer(registry)
        first = asyncio.create_task(
            renderer.render(accept=None, accept_encoding=None, names=None)
        )
        assert await asyncio.to_thread(held.entered.wait, 60)
        loop = asyncio.get_running_loop()

        with pytest.raises(RenderTimeoutError):
            await renderer.render(
                accept=PROMETHEUS_2_42_ACCEPT,
                accept_encoding=None,
                names=None,
                deadline=loop.time() + 0.05,
            )
        held.release.set()
        await first

        assert (1, {}) == (held.calls, renderer._waiting)

    async def test_render_that_returned_is_not_overdue(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A render whose thread returned just as its render timeout passed
        (its result not yet handed over) is not overdue."""
        renderer = RegistryRenderer(registry)
        render = _Render(0.0)
        render.returned = True

        renderer._overdue(render)

        assert (set(), []) == (renderer._stall.overdue, warnings_of(caplog))

    async def test_stall_is_told_once(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A render that becomes overdue once a scrape told of the stall
        is counted but not told again."""
        renderer = RegistryRenderer(registry)
        renderer._stall.told = True
        render = _Render(0.0)

        renderer._overdue(render)

        assert ({render}, []) == (renderer._stall.overdue, warnings_of(caplog))

    async def test_no_time_left(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A scrape whose deadline has passed fails before any render and
        says so."""
        renderer = RegistryRenderer(registry)
        loop = asyncio.get_running_loop()

        with pytest.raises(RenderTimeoutError):
            await renderer.render(
                accept=None,
                accept_encoding=None,
                names=None,
                deadline=loop.time(),
            )

        told = (
            f"Rendering {object.__repr__(registry)}: the scrape left no time "
            "for it and gets 503"
        )
        assert [told] == warnings_of(caplog)

    async def test_collector_of_a_named_render_is_unknown(
        self,
        registry: CollectorRegistry,
        held: GatedCollector,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A render restricted by name[] does not know its collector."""
        renderer = RegistryRenderer(registry, render_timeout=0.1)

        with pytest.raises(RenderTimeoutError):
            await renderer.render(
                accept=None,
                accept_encoding=None,
                names=frozenset({"collections"}),
            )

        (warning,) = warnings_of(caplog)
        assert "a collector it cannot name" in warning

    async def test_stock_metric_is_named(
        self,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A stuck stock metric is told by its class and name."""
        release = threading.Event()
        gauge = Gauge("stuck_depth", "Depth.", registry=registry)
        gauge.set_function(lambda: float(release.wait(60)))
        renderer = RegistryRenderer(registry, render_timeout=0.1)
        try:
            with pytest.raises(RenderTimeoutError):
                await renderer.render(
                    accept=None, accept_encoding=None, names=None
                )
        finally:
            release.set()

        (warning,) = warnings_of(caplog)
        assert "prometheus_client.metrics.Gauge 'stuck_depth'" in warning

    async def test_global_registry_is_named(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The global registry is told as such."""
        renderer = RegistryRenderer(REGISTRY)
        loop = asyncio.get_running_loop()

        with pytest.raises(RenderTimeoutError):
            await renderer.render(
                accept=None,
                accept_encoding=None,
                names=None,
                deadline=loop.time() - 1,
            )

        told = (
            "Rendering the global registry: the scrape left no time for it "
            "and gets 503"
        )
        assert [told] == warnings_of(caplog)


class TestLazyRegistry:
    @pytest.mark.parametrize(
        "encoder",
        [generate_latest, openmetrics.generate_latest],
        ids=["text", "openmetrics"],
    )
    @pytest.mark.parametrize("make_registry", REGISTRIES)
    def test_encodes_like_the_registry(
        self,
        registry: CollectorRegistry,
        encoder: Callable[[CollectorRegistry], bytes],
        make_registry: RegistryFactory,
    ) -> None:
        """Encoding the lazy view gives the registry's own bytes."""
        registry = make_registry(registry)

        assert encoder(registry) == encoder(
            LazyRegistry(registry)  # type: ignore[arg-type]
        )

    def test_registry_subclass_uses_its_collect(self) -> None:
        """A registry with its own collect() is walked through it."""

        class OneFamilyRegistry(CollectorRegistry):
            def collect(self) -> Iterator[Metric]:
                yield GaugeMetricFamily("only", "Only this.", value=1)

        registry = OneFamilyRegistry()
        fill_stock_metrics(registry)

        assert generate_latest(registry) == generate_latest(
            LazyRegistry(registry)  # type: ignore[arg-type]
        )

    def test_samples_are_produced_while_encoding(
        self, registry: CollectorRegistry
    ) -> None:
        """Stock metrics' samples are read one at a time, not as a list."""
        Counter("lazy", "Lazy.", ["n"], registry=registry).labels("1").inc()

        (family,) = LazyRegistry(registry).collect()

        assert (False, ["lazy_total", "lazy_created"]) == (
            isinstance(family.samples, list),
            [sample.name for sample in family.samples],
        )


class TestEncodeByFamily:
    @pytest.mark.parametrize(
        "encoder",
        [generate_latest, openmetrics.generate_latest],
        ids=["text", "openmetrics"],
    )
    def test_same_bytes_as_at_once(
        self,
        registry: CollectorRegistry,
        encoder: Callable[[CollectorRegistry], bytes],
    ) -> None:
        """Family by family gives the bytes of one encoder call."""
        target_info_registry(registry)
        registry.register(CustomCollector())

        assert encoder(registry) == encode_by_family(
            encoder, LazyRegistry(registry)
        )

    def test_unknown_layout_is_encoded_at_once(
        self, registry: CollectorRegistry
    ) -> None:
        """An encoder whose pieces don't concatenate is called once."""
        fill_stock_metrics(registry)

        def framed(collector: CollectorRegistry) -> bytes:
            return b"BEGIN\n" + generate_latest(collector) + b"END\n"

        assert framed(registry) == encode_by_family(
            framed, LazyRegistry(registry)
        )


class TestPacer:
    def test_sleeps_after_each_slice(self) -> None:
        """The pacer sleeps once the slice's time is used up."""
        now = [0.0]
        pauses: list[float] = []
        pacer = Pacer(
            slice_seconds=1.0,
            pause_seconds=0.25,
            check_every=2,
            clock=lambda: now[0],
            sleep=pauses.append,
        )
        for step in range(8):
            now[0] = step * 0.5
            pacer.tick()

        assert [0.25, 0.25, 0.25] == pauses
