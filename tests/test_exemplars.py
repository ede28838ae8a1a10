"""
Exemplars from the current trace, or from a callable, on observations.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from prometheus_client import CollectorRegistry, Histogram

from prom_async.aio import _exemplars, time


trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
sampling = pytest.importorskip("opentelemetry.sdk.trace.sampling")


@pytest.fixture(scope="module")
def tracer():
    """
    A tracer of a provider of its own, so no global state is touched.
    """
    provider = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_ON)
    return provider.get_tracer("tests")


@pytest.fixture
def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("work_seconds", "Work.", registry=registry)


def exemplars(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [
        sample.exemplar.labels
        for metric in registry.collect()
        for sample in metric.samples
        if sample.exemplar is not None
    ]


class TestCurrentTrace:
    def test_sampled_span(self, tracer):
        """Inside a sampled span: its trace and span IDs in hex."""
        with tracer.start_as_current_span("work") as span:
            context = span.get_span_context()
            found = _exemplars.current_trace()

        assert {
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
        } == found

    def test_no_span_or_not_sampled(self):
        """Outside any span, or in one not sampled: none."""
        provider = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_OFF)

        assert None is _exemplars.current_trace()
        with provider.get_tracer("t").start_as_current_span("dropped"):
            assert None is _exemplars.current_trace()

    def test_without_opentelemetry(self, monkeypatch):
        """Without the OpenTelemetry API installed: none."""
        monkeypatch.setitem(sys.modules, "opentelemetry", None)
        _exemplars._opentelemetry_trace.cache_clear()
        try:
            assert None is _exemplars.current_trace()
        finally:
            _exemplars._opentelemetry_trace.cache_clear()


class TestTimeWithExemplars:
    async def test_current_trace(self, registry, histogram, tracer):
        """time(exemplar=True) links the observation to the current span."""

        @time(histogram, exemplar=True)
        async def work():
            await asyncio.sleep(0)

        with tracer.start_as_current_span("request") as span:
            await work()
            trace_id = f"{span.get_span_context().trace_id:032x}"

        assert [trace_id] == [e["trace_id"] for e in exemplars(registry)]

    async def test_every_shape(self, registry, histogram):
        """Decorators, awaitables, with blocks and labels all attach it."""
        labelled = Histogram("by_path", "", ["path"], registry=registry)

        def source():
            return {"trace_id": "abc"}

        time(histogram, exemplar=source)(lambda: None)()
        await time(histogram, asyncio.sleep(0), exemplar=source)
        with time(histogram, exemplar=source):
            pass
        time(labelled, labels=lambda: ["/"], exemplar=source)(lambda: 1)()

        assert 3.0 == registry.get_sample_value("work_seconds_count")
        # One exemplar per bucket is kept: the lowest bucket and by_path's.
        assert [{"trace_id": "abc"}] * 2 == exemplars(registry)

    def test_exemplars_that_cannot_be_kept(self, registry, histogram):
        """Too long, refused, or raising: the observation is still made."""
        sources = [
            lambda: {"trace_id": "x" * 130},
            lambda: {"bad name": "x"},
            lambda: 1 / 0,
            lambda: None,
        ]
        for source in sources:
            time(histogram, exemplar=source)(lambda: None)()

        assert 4.0 == registry.get_sample_value("work_seconds_count")
        assert [] == exemplars(registry)

    def test_refused_by_the_metric(self, registry, histogram, monkeypatch):
        """An exemplar the metric refuses is left out; the value stays."""
        monkeypatch.setattr(_exemplars, "_MAX_RUNES", 1000)

        time(histogram, exemplar=lambda: {"trace_id": "x" * 200})(list)()

        assert 1.0 == registry.get_sample_value("work_seconds_count")
        assert [] == exemplars(registry)

    def test_observers_without_exemplars(self):
        """Anything but a Histogram is observed without an exemplar."""
        seen = []

        class Observer:
            def observe(self, value):
                seen.append(value)

        time(Observer(), exemplar=lambda: {"trace_id": "x"})(list)()

        assert 1 == len(seen)

    def test_multiprocess_mode_warns_once(
        self, registry, histogram, monkeypatch, tmp_path, caplog
    ):
        """In multiprocess mode exemplars are dropped, with one warning."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        monkeypatch.setattr(_exemplars, "_multiprocess_warned", False)
        timed = time(histogram, exemplar=lambda: {"trace_id": "abc"})

        with caplog.at_level(logging.WARNING):
            timed(lambda: None)()
            timed(lambda: None)()

        assert 1 == caplog.text.count("multiprocess mode keeps no exemplars")
        assert [] == exemplars(registry)

    def test_wrong_exemplar_option(self, histogram):
        """exemplar= takes True, a callable or None."""
        with pytest.raises(TypeError, match="exemplar="):
            time(histogram, exemplar="trace")
        assert isinstance(
            time(histogram, exemplar=False), type(time(histogram))
        )
