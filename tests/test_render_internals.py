from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import threading
import types

from collections import namedtuple
from collections.abc import Iterator
from typing import Any

import pytest

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics import exposition as openmetrics

from fixtures_servers import eventually
from prom_async.aio import _client_internals, _render_negotiation
from prom_async.aio._client_internals import (
    LINE_ENCODING,
    VERSION,
    Escapers,
    has_stock_samples,
    lazy_metric,
    line_encoding,
    registry_contents,
    series,
    series_samples,
    unbound_label_names,
    values_are_local,
)
from prom_async.aio._render_families import LazyRegistry
from prom_async.aio._render_negotiation import negotiate
from prom_async.aio._workers import WorkerPool


#: The names line_encoding() takes from the OpenMetrics encoder's module.
HELPERS = [
    "_escape",
    "_is_legacy_labelname_rune",
    "_is_valid_legacy_metric_name",
    "_compose_exemplar_string",
    "escape_metric_name",
    "escape_label_name",
    "ALLOWUTF8",
    "UNDERSCORES",
]
SixFields = namedtuple(  # noqa: PYI024 -- only its fields matter
    "SixFields",
    ["name", "labels", "value", "timestamp", "exemplar", "native_histogram"],
)


def fake_openmetrics(without: str | None = None) -> types.ModuleType:
    """
    A stand-in for the OpenMetrics exposition module, lacking *without*.
    """
    module = types.ModuleType("fake_openmetrics")
    for name in HELPERS:
        if name != without:
            value = name.lower() if name.isupper() else (lambda *_: "")
            setattr(module, name, value)
    return module


class SamplesOfItsOwn(Gauge):
    """
    A gauge whose samples are not made the stock way.
    """

    def _samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        yield ("", {}, 1.0)


class CollectOfItsOwn(Counter):
    """
    A counter whose collect() is overridden.
    """

    def collect(self) -> list[Metric]:
        return [GaugeMetricFamily(self._name, "Own.", value=1)]


class TestUnboundLabelNames:
    def test_parent_has_its_names(self) -> None:
        """A metric with label names not yet bound gives them."""
        gauge = Gauge("queue", "Queue.", ["name", "shard"], registry=None)

        assert ("name", "shard") == unbound_label_names(gauge)

    def test_bound_child_and_unlabelled_metric_have_none(self) -> None:
        """A child with bound values, or a metric without labels: ()."""
        labelled = Gauge("queue", "Queue.", ["name"], registry=None)
        plain = Gauge("depth", "Depth.", registry=None)

        assert [(), ()] == [
            unbound_label_names(labelled.labels("a")),
            unbound_label_names(plain),
        ]

    @pytest.mark.parametrize(
        "other",
        [object(), "_labelnames", types.SimpleNamespace(_labelnames=["a"])],
    )
    def test_other_objects_have_none(self, other: object) -> None:
        """Anything but a prometheus_client metric gives None."""
        assert None is unbound_label_names(other)


class TestRegistryContents:
    def test_collectors_and_target_info(
        self, registry: CollectorRegistry
    ) -> None:
        """The collectors in order, and the target info family."""
        first = Gauge("first", "First.", registry=registry)
        second = Gauge("second", "Second.", registry=registry)
        registry.set_target_info({"env": "test"})

        contents = registry_contents(registry)

        assert contents is not None
        collectors, target_info = contents
        assert ([first, second], "target") == (collectors, target_info.name)

    def test_no_target_info(self, registry: CollectorRegistry) -> None:
        """Without target info, the family is None."""
        assert ([], None) == registry_contents(registry)

    def test_overridden_collect_tells_nothing(self) -> None:
        """A registry with its own collect() is left to it."""

        class OwnRegistry(CollectorRegistry):
            def collect(self) -> Iterator[Metric]:
                yield GaugeMetricFamily("own", "Own.", value=1)

        assert None is registry_contents(OwnRegistry())

    @pytest.mark.parametrize(
        "internal",
        [
            "_lock",
            "_collector_to_names",
            "_target_info",
            "_target_info_metric",
        ],
    )
    def test_missing_internal_tells_nothing(
        self,
        registry: CollectorRegistry,
        monkeypatch: pytest.MonkeyPatch,
        internal: str,
    ) -> None:
        """Without an internal, None; the lazy walk still encodes alike."""
        Gauge("depth", "Depth.", ["q"], registry=registry).labels("a").set(2)
        registry.set_target_info({"env": "test"})
        expected = generate_latest(registry)
        if internal in vars(registry):
            monkeypatch.delattr(registry, internal)
        else:
            monkeypatch.delattr(CollectorRegistry, internal)
        # collect() needs them all: encode with it put back.
        contents = registry_contents(registry)
        monkeypatch.undo()

        assert (None, expected) == (
            contents,
            generate_latest(LazyRegistry(registry)),  # type: ignore[arg-type]
        )


class TestLazyMetric:
    def test_stock_metric(self) -> None:
        """A stock metric gives its family and its samples, suffix only."""
        counter = Counter("jobs", "Jobs.", ["q"], registry=None)
        counter.labels("a").inc()

        lazy = lazy_metric(counter)

        assert lazy is not None
        assert [
            "jobs",
            "counter",
            "jobs",
            [],
            ["_total", "_created"],
        ] == [
            lazy.family.name,
            lazy.family.type,
            lazy.prefix,
            lazy.family.samples,
            [sample.name for sample in lazy.samples()],
        ]

    @pytest.mark.parametrize(
        "collector",
        [
            object(),
            GaugeMetricFamily("family", "Family.", value=1),
            CollectOfItsOwn("own", "Own.", registry=None),
        ],
        ids=["object", "family", "own-collect"],
    )
    def test_other_collectors(self, collector: object) -> None:
        """Collectors other than stock metrics give None."""
        assert None is lazy_metric(collector)

    def test_missing_internal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A metric whose name is not where it was gives None."""
        gauge = Gauge("depth", "Depth.", registry=None)
        monkeypatch.setattr(gauge, "_name", None)

        assert None is lazy_metric(gauge)


class TestHasStockSamples:
    def test_stock_metric(self) -> None:
        """A stock metric's samples are its series'."""
        assert has_stock_samples(Gauge("depth", "Depth.", registry=None))

    def test_other_samples(self) -> None:
        """A metric with samples of its own, or no metric: False."""
        own = SamplesOfItsOwn("own", "Own.", registry=None)

        assert [False, False] == [
            has_stock_samples(own),
            has_stock_samples(object()),
        ]

    def test_missing_stock_method(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the stock _samples to compare with: False."""
        monkeypatch.setattr(_client_internals, "_STOCK_SAMPLES", None)

        assert not has_stock_samples(Gauge("depth", "Depth.", registry=None))


class TestSeriesSamples:
    def test_children_and_their_samples(self) -> None:
        """Each child's label values with its samples, suffix only."""
        counter = Counter("jobs", "Jobs.", ["q"], registry=None)
        counter.labels("a").inc(2)
        counter.labels("b")

        assert [(("a",), ["_total", 2.0]), (("b",), ["_total", 0.0])] == [
            (labelvalues, [samples[0].name, samples[0].value])
            for labelvalues, samples in series_samples(series(counter)[0])
        ]

    def test_function_of_a_gauge(self) -> None:
        """A gauge's set_function, set on the instance, gives its value."""
        gauge = Gauge("reading", "Reading.", registry=None)
        gauge.set_function(lambda: 42)

        ((labelvalues, (sample,)),) = series_samples(series(gauge)[0])

        assert ((), 42.0) == (labelvalues, sample.value)


class TestLineEncoding:
    def test_installed_library(self) -> None:
        """The installed library gives helpers from 0.23 on, else why not."""
        major, minor = (int(part) for part in VERSION.split(".")[:2])

        assert ((major, minor) >= (0, 23)) == isinstance(
            LINE_ENCODING, Escapers
        )

    def test_everything_there(self) -> None:
        """With every helper there, the helpers."""
        assert isinstance(
            line_encoding(fake_openmetrics(), SixFields), Escapers
        )

    @pytest.mark.parametrize("missing", HELPERS)
    def test_missing_helper_is_named(self, missing: str) -> None:
        """A missing helper is named in the reason."""
        assert (
            f"prometheus_client.openmetrics.exposition.{missing} is missing"
            == line_encoding(fake_openmetrics(without=missing), SixFields)
        )

    @pytest.mark.parametrize(
        ("name", "value"), [("_escape", "text"), ("UNDERSCORES", 1)]
    )
    def test_helper_of_another_kind_is_missing(
        self, name: str, value: object
    ) -> None:
        """A helper not callable, or a name not a string, is missing."""
        module = fake_openmetrics()
        setattr(module, name, value)

        assert (
            f"prometheus_client.openmetrics.exposition.{name} is missing"
            == line_encoding(module, SixFields)
        )

    def test_samples_of_five_fields(self) -> None:
        """A Sample of five fields (before 0.22) is named in the reason."""
        five = namedtuple(  # noqa: PYI024
            "Five", ["name", "labels", "value", "timestamp", "exemplar"]
        )

        reason = line_encoding(fake_openmetrics(), five)

        assert isinstance(reason, str)
        assert reason.startswith(
            "prometheus_client.samples.Sample has the fields ('name',"
        )

    @pytest.mark.parametrize(
        "method", ["_is_parent", "_child_samples", "_get_metric"]
    )
    def test_missing_metric_method(
        self, monkeypatch: pytest.MonkeyPatch, method: str
    ) -> None:
        """A stock metric's missing method is named in the reason."""
        for kind in (Gauge, MetricWrapperBase):
            if method in vars(kind):
                monkeypatch.delattr(kind, method)

        assert f"MetricWrapperBase.{method} is missing" == line_encoding(
            fake_openmetrics(), SixFields
        )

    def test_missing_stock_samples(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without MetricWrapperBase._multi_samples, the reason says so."""
        monkeypatch.setattr(_client_internals, "_STOCK_MULTI_SAMPLES", None)

        assert (
            "MetricWrapperBase._samples or ._multi_samples is missing"
            == line_encoding(fake_openmetrics(), SixFields)
        )


class TestValuesAreLocal:
    def test_in_memory(self) -> None:
        """Outside multiprocess mode, values are in memory."""
        assert values_are_local()

    def test_multiprocess_mode(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With multiprocess values, they are not."""
        monkeypatch.setattr(
            values, "ValueClass", values.MultiProcessValue(lambda: 1)
        )

        assert not values_are_local()


class TestVersion:
    def test_installed(self) -> None:
        """The version is the installed distribution's."""
        assert (
            importlib.metadata.version("prometheus_client")
            == _client_internals._version()
        )

    def test_not_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A copy that is not installed has no known version."""

        def missing(name: str) -> str:
            raise importlib.metadata.PackageNotFoundError(name)

        monkeypatch.setattr(importlib.metadata, "version", missing)

        assert "(version unknown)" == _client_internals._version()


class TestNegotiate:
    @pytest.mark.parametrize(
        ("accept", "asked"),
        [
            (
                "application/openmetrics-text; version=1.0.0.42",
                "application/openmetrics-text; version=1.0.0",
            ),
            (
                "application/openmetrics-text; version=1.5",
                "application/openmetrics-text; version=1.0.0",
            ),
            (
                "application/openmetrics-text; version=2.3.1",
                "application/openmetrics-text; version=2.0.0",
            ),
            (
                "application/openmetrics-text; version=99999.0.0",
                "application/openmetrics-text; version=1.0.0",
            ),
            (
                (
                    "application/openmetrics-text; version=2.1;"
                    " escaping=allow-utf-8"
                ),
                (
                    "application/openmetrics-text; version=2.0.0;"
                    " escaping=allow-utf-8"
                ),
            ),
        ],
    )
    def test_openmetrics_versions_are_brought_to_two(
        self, registry: CollectorRegistry, accept: str, asked: str
    ) -> None:
        """An OpenMetrics version is negotiated as 1.0.0 below 2, else as
        2.0.0 (a major version of four digits or more as 1.0.0)."""
        Gauge("depth", "Depth.", registry=registry).set(3)
        encoder, content_type = choose_encoder(asked)

        negotiated = negotiate(accept)

        assert (content_type, encoder(registry)) == (
            negotiated.content_type,
            negotiated.encoder(registry),
        )

    @pytest.mark.parametrize(
        "keywords",
        [{}, {"version": 1}, {"version": "1.0.0.7", "escaping": 2}],
        ids=["no-version", "version-not-text", "escaping-not-text"],
    )
    def test_encoder_of_other_keywords(
        self, monkeypatch: pytest.MonkeyPatch, keywords: dict[str, object]
    ) -> None:
        """An OpenMetrics encoder without a version that is text is used
        as the library chose it; one with an escaping that is not text is
        asked for without it."""
        chosen = functools.partial(openmetrics.generate_latest, **keywords)
        calls = []

        def choosing(accept: str) -> tuple[Any, str]:
            calls.append(accept)
            return chosen, "chosen"

        monkeypatch.setattr(_render_negotiation, "choose_encoder", choosing)

        negotiated = negotiate("application/openmetrics-text")

        assert (chosen, "chosen") == negotiated
        assert len(calls) == (2 if "escaping" in keywords else 1)
        assert "escaping" not in calls[-1]


class TestWorkerPool:
    async def test_cancelled_job_does_not_run(self) -> None:
        """A job whose future is cancelled before a thread takes it is
        dropped; one cancelled while it runs is left cancelled."""
        pool = WorkerPool("test-cancel", workers=1)
        entered, release = threading.Event(), threading.Event()
        ran: list[str] = []

        def holding() -> None:
            entered.set()
            release.wait(60)
            ran.append("holding")

        running = pool.run(holding)
        assert await asyncio.to_thread(entered.wait, 60)
        waiting = pool.run(ran.append, "waiting")
        running.cancel()
        waiting.cancel()
        release.set()
        await eventually(lambda: not pool.busy, what="the pool to be idle")

        assert (["holding"], True, True) == (
            ran,
            running.cancelled(),
            waiting.cancelled(),
        )

    async def test_free_once_the_result_is_in(self) -> None:
        """A full pool has room again as soon as a job's result is in."""
        pool = WorkerPool("test-room", workers=1, max_pending=0)

        results = [await pool.run(lambda n=n: n) for n in range(50)]

        assert (list(range(50)), 0) == (results, pool.busy)

    async def test_forked_child_starts_afresh(self) -> None:
        """After a fork, the pool has no threads or jobs, and runs new
        jobs in threads of its own."""
        pool = WorkerPool("test-fork", workers=1)
        pool._forget_threads()

        assert (0, 7) == (pool.busy, await pool.run(lambda: 7))

    async def test_finish_waits_for_running_jobs(self) -> None:
        """finish() waits for the running job, and no job starts after
        it."""
        pool = WorkerPool("test-finish", workers=1)
        entered, release = threading.Event(), threading.Event()
        ran: list[str] = []

        def holding() -> None:
            entered.set()
            release.wait(60)
            ran.append("holding")

        pool.run(holding)
        assert await asyncio.to_thread(entered.wait, 60)
        pool.run(ran.append, "after")
        finishing = asyncio.create_task(asyncio.to_thread(pool.finish, 60))
        await eventually(lambda: pool._closing, what="finish() to begin")
        release.set()
        finished = await finishing
        await eventually(lambda: not pool.busy, what="the pool to be idle")

        assert (True, ["holding"]) == (finished, ran)

    async def test_finish_gives_up_on_a_hung_job(self) -> None:
        """finish() returns False when a job still runs after its wait."""
        pool = WorkerPool("test-finish-hung", workers=1)
        entered, release = threading.Event(), threading.Event()

        def holding() -> None:
            entered.set()
            release.wait(60)

        pool.run(holding)
        assert await asyncio.to_thread(entered.wait, 60)
        try:
            finished = await asyncio.to_thread(pool.finish, 0.05)
        finally:
            release.set()

        assert finished is False
