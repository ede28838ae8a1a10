"""
The render engine's fallbacks, forced: the line encoder off, families left
to the library, and the bounds of what the line encoder keeps.
"""

from __future__ import annotations

import functools
import gc
import logging

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Sample

from prom_async.aio import _client_internals, _render_lines
from prom_async.aio._client_internals import (
    LINE_ENCODING,
    VERSION,
    Escapers,
    line_encoding,
)
from prom_async.aio._render import RegistryRenderer
from prom_async.aio._render_families import LazyRegistry
from prom_async.aio._render_lines import Layout, LineEncoder, layout_of
from test_render_internals import SixFields, fake_openmetrics
from test_render_lines import (
    LINES_ON,
    direct,
    directly_encoded,
    fast_encode,
    fill_every_kind,
    needs_line_encoder,
)


LOGGER = "prom_async.aio.web"
ENCODERS = [generate_latest, openmetrics.generate_latest]
ENCODER_IDS = ["text", "openmetrics"]


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Probe outcomes of this test's own, so that its helpers are probed.
    """
    monkeypatch.setattr(_render_lines, "_probed", {})


@pytest.fixture
def debug(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """
    The DEBUG lines of the exporter's logger, as they come.
    """
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.DEBUG:
                lines.append(record.getMessage())

    handler = Collect()
    logging.getLogger(LOGGER).addHandler(handler)
    yield lines
    logging.getLogger(LOGGER).removeHandler(handler)


def escapers() -> Escapers:
    assert isinstance(LINE_ENCODING, Escapers)
    return LINE_ENCODING


def kept(lines: LineEncoder) -> int:
    return sum(
        texts.kept()
        for by_escaping in lines._texts.values()
        for texts in by_escaping.values()
    )


class Relabelled(Gauge):
    """
    A gauge whose samples carry a label named like one of its series'.
    """

    def _child_samples(self) -> Iterable[Sample]:
        return (Sample("", {"q": "own"}, 1.0, None, None),)


class Untyped(Gauge):
    """
    A gauge of the unknown type.
    """

    _type = "unknown"


class GaugeHistogram(Histogram):
    """
    A histogram of the gaugehistogram type.
    """

    _type = "gaugehistogram"


class TestLineEncoderOff:
    @pytest.mark.parametrize("encoder", ENCODERS, ids=ENCODER_IDS)
    def test_missing_internal_is_logged_once(
        self,
        registry: CollectorRegistry,
        debug: list[str],
        encoder: Any,
    ) -> None:
        """Without an internal the library encodes; the reason once."""
        fill_every_kind(registry)
        lines = LineEncoder("_escape is missing")

        bodies = [fast_encode(encoder, registry, lines) for _ in range(2)]

        assert ([encoder(registry)] * 2, 1) == (bodies, len(debug))
        assert f"(prometheus_client {VERSION}: _escape is missing)" in debug[0]

    def test_encodes_nothing_without_an_internal(
        self, registry: CollectorRegistry
    ) -> None:
        """Without an internal, every family is left to the library."""
        fill_every_kind(registry)
        lines = LineEncoder("_escape is missing")
        layout = Layout(False, "underscores", "")

        families = list(LazyRegistry(registry).collect())

        assert [None] * len(families) == [
            lines.encode(family, family.source, layout, lambda _: None)
            for family in families
        ]

    async def test_exporter_lacking_an_internal(
        self,
        registry: CollectorRegistry,
        monkeypatch: pytest.MonkeyPatch,
        debug: list[str],
    ) -> None:
        """An exporter without an internal answers the same, logs it once."""
        monkeypatch.setattr(
            _client_internals,
            "LINE_ENCODING",
            line_encoding(fake_openmetrics(without="_escape"), SixFields),
        )
        fill_every_kind(registry)
        renderer = RegistryRenderer(registry)

        bodies = [
            (
                await renderer.render(
                    accept=accept, accept_encoding=None, names=None
                )
            ).body
            for accept in [None, "application/openmetrics-text"] * 2
        ]

        assert [
            generate_latest(registry),
            openmetrics.generate_latest(registry),
        ] * 2 == bodies
        assert [
            (
                "Line encoder off (prometheus_client "
                f"{VERSION}: prometheus_client.openmetrics.exposition._escape "
                "is missing): prometheus_client's own encoder renders instead"
            )
        ] == debug

    @needs_line_encoder
    @pytest.mark.parametrize("encoder", ENCODERS, ids=ENCODER_IDS)
    def test_probe_that_differs(
        self,
        registry: CollectorRegistry,
        debug: list[str],
        encoder: Any,
    ) -> None:
        """A probe render that differs turns it off, and says so."""
        fill_every_kind(registry)
        lines = LineEncoder(
            escapers()._replace(
                escape_metric_name=lambda name, _: name.upper()
            )
        )

        assert (encoder(registry), None) == (
            fast_encode(encoder, registry, lines),
            lines.layout(encoder),
        )
        assert 1 == len(debug)
        assert debug[0].endswith(
            "the probe's first render differed from the library's): "
            "prometheus_client's own encoder renders instead"
        )

    @needs_line_encoder
    def test_probe_that_raises(
        self, registry: CollectorRegistry, debug: list[str]
    ) -> None:
        """A probe render that raises turns it off, naming the error."""

        def broken(*_: object) -> str:
            raise LookupError("gone")

        fill_every_kind(registry)
        lines = LineEncoder(escapers()._replace(escape=broken))

        assert generate_latest(registry) == fast_encode(
            generate_latest, registry, lines
        )
        assert [True] == [
            "encoding the probe's probe_requests raised LookupError('gone')"
            in line
            for line in debug
        ]

    @needs_line_encoder
    def test_second_probe_render_is_compared(
        self, registry: CollectorRegistry, debug: list[str]
    ) -> None:
        """The probe is rendered again from the kept texts, and compared."""
        seen: set[str] = set()
        escape_metric_name = escapers().escape_metric_name

        def forgetful(name: str, escaping: str) -> str:
            # Right the first time a family's header is written only.
            escaped = escape_metric_name(name, escaping)
            if name in seen:
                return escaped.upper()
            seen.add(name)
            return escaped

        fill_every_kind(registry)
        lines = LineEncoder(escapers()._replace(escape_metric_name=forgetful))

        assert openmetrics.generate_latest(registry) == fast_encode(
            openmetrics.generate_latest, registry, lines
        )
        assert [True] == [
            "the probe's second render differed" in line for line in debug
        ]

    def test_foreign_encoders(
        self, registry: CollectorRegistry, debug: list[str]
    ) -> None:
        """Encoders it does not know are the library's; each said once."""

        def framed(collector: Any) -> bytes:
            return b"BEGIN\n" + generate_latest(collector)

        lines = LineEncoder(fake_openmetrics_escapers())
        partial = functools.partial(generate_latest, registry)

        assert [None] * 3 == [
            lines.layout(framed),
            lines.layout(partial),
            lines.layout(framed),
        ]
        assert [
            (
                f"Line encoder off ({__name__}.TestLineEncoderOff."
                "test_foreign_encoders.<locals>.framed is not an encoder it "
                "reproduces): prometheus_client's own encoder renders instead"
            ),
            (
                "Line encoder off (prometheus_client.exposition."
                "generate_latest (partial) is not an encoder it reproduces): "
                "prometheus_client's own encoder renders instead"
            ),
        ] == debug

    def test_partials_with_other_keywords(self) -> None:
        """Escaping and version must be strings."""
        escaping = fake_openmetrics_escapers()

        assert [None, None] == [
            layout_of(
                functools.partial(openmetrics.generate_latest, escaping=1),
                escaping,
            ),
            layout_of(
                functools.partial(openmetrics.generate_latest, version=1),
                escaping,
            ),
        ]

    def test_no_layout_without_helpers(self) -> None:
        """Without the helpers, no encoder has a layout."""
        assert None is layout_of(generate_latest, "_escape is missing")

    @needs_line_encoder
    def test_layouts_probed_are_capped(
        self,
        registry: CollectorRegistry,
        monkeypatch: pytest.MonkeyPatch,
        debug: list[str],
    ) -> None:
        """Past the layouts kept, new ones are left to the library."""
        monkeypatch.setattr(_render_lines, "_KEPT_LAYOUTS", 0)
        fill_every_kind(registry)

        assert generate_latest(registry) == fast_encode(
            generate_latest, registry, LineEncoder()
        )
        assert [True] == ["0 layouts were probed already" in d for d in debug]

    async def test_multiprocess_exporter_makes_no_probe(
        self,
        registry: CollectorRegistry,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        """In multiprocess mode no probe metric is written, nor exposed."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        monkeypatch.setattr(
            values, "ValueClass", values.MultiProcessValue(lambda: 321)
        )
        MultiProcessCollector(registry, path=str(tmp_path))

        exposition = await RegistryRenderer(registry).render(
            accept=None, accept_encoding=None, names=None
        )

        assert (b"", []) == (exposition.body, list(tmp_path.iterdir()))

    def test_no_probe_in_multiprocess_mode(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In multiprocess mode the probe is not made; the reason says so."""
        monkeypatch.setattr(
            values, "ValueClass", values.MultiProcessValue(lambda: 321)
        )

        assert (
            "multiprocess mode: the probe's metrics would be written to "
            "PROMETHEUS_MULTIPROC_DIR"
        ) == _render_lines._probe_outcome(
            Layout(False, "underscores", ""),
            generate_latest,
            fake_openmetrics_escapers(),
        )


def fake_openmetrics_escapers() -> Escapers:
    """
    Helpers that are there, whatever the prometheus_client.
    """
    found = line_encoding(fake_openmetrics(), SixFields)
    assert isinstance(found, Escapers)
    return found._replace(underscores="underscores")


class TestLineEncoderUnusual:
    @pytest.mark.parametrize("encoder", ENCODERS, ids=ENCODER_IDS)
    def test_sample_label_named_like_a_series_label(
        self, registry: CollectorRegistry, encoder: Any
    ) -> None:
        """A sample relabelling its series is the library's to write."""
        Relabelled("odd", "Odd.", ["q"], registry=registry).labels("x")
        lines = LineEncoder()

        assert (encoder(registry), [False] if LINES_ON else []) == (
            fast_encode(encoder, registry, lines),
            directly_encoded(registry, encoder, lines),
        )

    @pytest.mark.parametrize("encoder", ENCODERS, ids=ENCODER_IDS)
    def test_unknown_and_gaugehistogram_types(
        self, registry: CollectorRegistry, encoder: Any
    ) -> None:
        """Stock metrics of the other types come out as the library's."""
        Untyped("other", "Other.", ["a"], registry=registry).labels("1").set(2)
        GaugeHistogram(
            "queue", "Queue.", ["a"], registry=registry, buckets=(1.0,)
        ).labels("1").observe(0.5)
        lines = LineEncoder()

        assert (encoder(registry), direct(2)) == (
            fast_encode(encoder, registry, lines),
            directly_encoded(registry, encoder, lines),
        )


@needs_line_encoder
class TestLineEncoderCaches:
    def test_kept_texts_are_capped(
        self, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the cap, texts are made at each render, not kept."""
        monkeypatch.setattr(_render_lines, "_KEPT_TEXTS", 10)
        gauge = Gauge("queue", "Queue.", ["name"], registry=registry)
        waits = Histogram(
            "wait", "Wait.", ["a", "z"], registry=registry, buckets=(1.0,)
        )
        for number in range(30):
            gauge.labels(str(number)).set(number)
            waits.labels(str(number), "z").observe(number)
        lines = LineEncoder()
        expected = [encoder(registry) for encoder in ENCODERS] * 2

        bodies = [
            fast_encode(encoder, registry, lines) for encoder in ENCODERS * 2
        ]

        assert (expected, 10) == (bodies, kept(lines))

    def test_texts_of_metrics_gone_are_not_counted(
        self, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A metric that is gone frees its share of the cap."""
        monkeypatch.setattr(_render_lines, "_KEPT_TEXTS", 10)
        lines = LineEncoder()
        gone = Gauge("gone", "Gone.", ["name"], registry=registry)
        for number in range(10):
            gone.labels(str(number)).set(number)
        fast_encode(generate_latest, registry, lines)
        registry.unregister(gone)
        del gone
        gc.collect()
        later = Gauge("later", "Later.", ["name"], registry=registry)
        for number in range(5):
            later.labels(str(number)).set(number)

        fast_encode(generate_latest, registry, lines)

        assert 5 == len(lines._texts[later]["underscores"].plain)

    def test_splits_of_removed_series_are_forgotten(
        self, registry: CollectorRegistry
    ) -> None:
        """Split texts of series that are gone are not kept for ever."""
        waits = Histogram(
            "wait", "Wait.", ["a", "z"], registry=registry, buckets=(1.0,)
        )
        for number in range(200):
            waits.labels(str(number), "z").observe(number)
        lines = LineEncoder()
        fast_encode(generate_latest, registry, lines)
        waits.clear()
        waits.labels("only", "z").observe(1)

        assert generate_latest(registry) == fast_encode(
            generate_latest, registry, lines
        )
        assert [(("only", "z"), "le")] == list(
            lines._texts[waits]["underscores"].splits
        )

    def test_changing_info_keys_keep_few_texts(
        self, registry: CollectorRegistry
    ) -> None:
        """An Info whose one key keeps changing keeps few label texts."""
        info = Info("build", "Build.", registry=registry)
        lines = LineEncoder()
        for number in range(300):
            info.info({f"key{number}": "v"})
            assert generate_latest(registry) == fast_encode(
                generate_latest, registry, lines
            )

        assert 256 >= len(lines._texts[info]["underscores"].pairs)

    def test_ever_new_versions_leave_bounded_traces(
        self, registry: CollectorRegistry, debug: list[str]
    ) -> None:
        """Scrapers asking for ever new versions leave bounded traces."""
        fill_every_kind(registry)
        lines = LineEncoder()
        for number in range(100):
            encoder = functools.partial(
                openmetrics.generate_latest, version=f"1.0.{number}"
            )
            assert encoder(registry) == fast_encode(encoder, registry, lines)

        assert (32, 1) == (len(_render_lines._probed), len(debug))
        assert "32 layouts were probed already" in debug[0]

    def test_series_churn_keeps_texts_bounded(
        self, registry: CollectorRegistry
    ) -> None:
        """Series replaced render after render keep the texts bounded."""
        gauge = Gauge("queue", "Queue.", ["name"], registry=registry)
        live = [str(number) for number in range(100)]
        for name in live:
            gauge.labels(name).set(1)
        lines = LineEncoder()
        sizes = []
        for render in range(50):
            for name in live[:10]:
                gauge.remove(name)
            live = live[10:] + [f"{render}-{n}" for n in range(10)]
            for name in live[-10:]:
                gauge.labels(name).set(2)
            assert generate_latest(registry) == fast_encode(
                generate_latest, registry, lines
            )
            sizes.append(len(lines._texts[gauge]["underscores"].plain))

        # Texts are dropped before a render adds the texts of new series.
        assert 2 * 100 + 64 + 10 >= max(sizes)
