from __future__ import annotations

import functools
import math

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
    metrics,
    samples,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Sample

from prom_async.aio._client_internals import LINE_ENCODING, VERSION
from prom_async.aio._render import RegistryRenderer
from prom_async.aio._render_families import (
    LazyRegistry,
    Pacer,
    encode_by_family,
)
from prom_async.aio._render_lines import Layout, LineEncoder, layout_of


ACCEPT_HEADERS = [
    None,
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=2.0.0;escaping=values",
]

Encoder = Callable[[Any], bytes]

#: Whether the line encoder works with the installed prometheus_client.
LINES_ON = not isinstance(LINE_ENCODING, str)
needs_line_encoder = pytest.mark.skipif(
    not LINES_ON,
    reason=f"the line encoder is off on prometheus_client {VERSION}: "
    f"{LINE_ENCODING}",
)
# From prometheus_client 0.22 on.
NativeHistogram = getattr(samples, "NativeHistogram", None)


def _utf8_names() -> bool:
    try:
        Gauge("a.b", "UTF-8.", ["ü"], registry=None)
    except ValueError:
        return False
    return True


#: Whether metric and label names may be any UTF-8 (prometheus_client 0.22
#: on).
UTF8_NAMES = _utf8_names()
needs_utf8_names = pytest.mark.skipif(
    not UTF8_NAMES, reason=f"prometheus_client {VERSION} has legacy names"
)

# Label names: legacy ones, and UTF-8 ones that each escaping rewrites.
# (Names starting with "__" are reserved: refused before 0.22.)
LABEL_NAMES = st.from_regex(
    r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True
).filter(lambda name: not name.startswith("__"))
if UTF8_NAMES:
    LABEL_NAMES |= st.sampled_from(["a.b", "ü", "x-y", "le_x", "with space"])
NUMBERS = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0.0, -0.0, 1e6, 1234567.0, 1e16, 1e22, 1e-7, 0.1])
)


def encoders() -> list[Encoder]:
    return [choose_encoder(accept or "")[0] for accept in ACCEPT_HEADERS]


def encoder_ids() -> list[str]:
    return [
        "none" if accept is None else accept.split("/")[1]
        for accept in ACCEPT_HEADERS
    ]


def direct(count: int) -> list[bool]:
    """
    What `directly_encoded` gives for *count* stock families.
    """
    return [True] * count if LINES_ON else []


def fast_encode(
    encoder: Encoder, registry: CollectorRegistry, lines: LineEncoder
) -> bytes:
    return encode_by_family(encoder, LazyRegistry(registry), lines)


def directly_encoded(
    registry: CollectorRegistry, encoder: Encoder, lines: LineEncoder
) -> list[bool]:
    """
    Whether the line encoder takes each stock family itself; `[]` when it
    is off for this prometheus_client.
    """
    layout = lines.layout(encoder)
    if layout is None:
        return []
    return [
        lines.encode(family, family.source, layout, lambda _: None) is not None
        for family in LazyRegistry(registry).collect()
        if family.source is not None
    ]


def fill_every_kind(registry: CollectorRegistry) -> None:
    """
    One of each stock metric, labelled and not, with awkward values.
    """
    counter = Counter("jobs", "Jobs\\ done\n.", ["queue"], registry=registry)
    counter.labels('a"b\\c\nd').inc(3)
    counter.labels("ü").inc(0.5, exemplar={"trace_id": 'x"y'})
    Counter("bare", "Bare.", registry=registry).inc()
    gauge = Gauge("level", "Level.", ["tank", "side"], registry=registry)
    gauge.labels("1", "left").set(float("nan"))
    gauge.labels("2", "right").set(-1e22)
    gauge.labels("3", "").set(1234567.5)
    Gauge("from_function", "Called.", registry=registry).set_function(
        lambda: 2
    )
    histogram = Histogram(
        "wait",
        "Wait.",
        ["op"],
        registry=registry,
        unit="seconds",
        buckets=(0.001, 2.5, 1e7, float("inf")),
    )
    histogram.labels("get").observe(0.0005, exemplar={"span": "1"})
    histogram.labels("put").observe(3e6)
    Summary("size", "Size.", ["kind"], registry=registry).labels("k").observe(
        -4
    )
    info = Info("build", "Build.", ["host"], registry=registry)
    info.labels("h1").info({"version": "1.2", "commit": 'a"\n'})
    Info("plain_build", "Build.", registry=registry).info({"v": "2"})
    state = Enum(
        "phase", "Phase.", ["job"], states=["idle", "busy"], registry=registry
    )
    state.labels("j").state("busy")


class TimestampedGauge(Gauge):
    """
    A gauge whose samples carry a timestamp.
    """

    def _child_samples(self) -> Iterable[Sample]:
        return (Sample("", {}, self._value.get(), 1700000000.123, None),)


class NativeGauge(Gauge):
    """
    A gauge whose samples carry a native histogram.
    """

    def _child_samples(self) -> Iterable[Sample]:
        assert NativeHistogram is not None
        native = NativeHistogram(1, 2.0, 0, 0.0, 0)
        return (Sample("", {}, 1.0, None, None, native),)


def framed(registry: CollectorRegistry) -> bytes:
    """
    An encoder of its own: the library's text, framed.
    """
    return b"BEGIN\n" + generate_latest(registry) + b"END\n"


class TestLayoutOf:
    @needs_line_encoder
    @pytest.mark.parametrize("accept", ACCEPT_HEADERS)
    def test_library_encoders_have_layouts(self, accept: str | None) -> None:
        """Every encoder choose_encoder picks is reproduced line by line."""
        encoder, _ = choose_encoder(accept or "")

        assert isinstance(LineEncoder().layout(encoder), Layout)

    def test_other_encoders_have_none(self) -> None:
        """Wrapped, partially applied or foreign encoders have no layout."""
        assert [None, None, None] == [
            layout_of(framed),
            layout_of(functools.partial(generate_latest, CollectorRegistry())),
            layout_of(functools.partial(openmetrics.generate_latest, x=1)),
        ]


class TestLineEncoder:
    @pytest.mark.parametrize("encoder", encoders(), ids=encoder_ids())
    def test_every_kind_encodes_like_the_library(
        self, registry: CollectorRegistry, encoder: Encoder
    ) -> None:
        """Each stock metric kind comes out byte for byte as the library's."""
        fill_every_kind(registry)
        lines = LineEncoder()

        first = fast_encode(encoder, registry, lines)
        again = fast_encode(encoder, registry, lines)

        assert [encoder(registry)] * 2 == [first, again]

    @pytest.mark.parametrize(
        "encoder",
        [generate_latest, openmetrics.generate_latest],
        ids=["text", "openmetrics"],
    )
    def test_stock_families_are_encoded_directly(
        self, registry: CollectorRegistry, encoder: Encoder
    ) -> None:
        """No stock family of the usual formats goes back to the library."""
        fill_every_kind(registry)

        assert direct(9) == directly_encoded(registry, encoder, LineEncoder())

    @pytest.mark.parametrize("encoder", encoders(), ids=encoder_ids())
    def test_series_come_and_go(
        self, registry: CollectorRegistry, encoder: Encoder
    ) -> None:
        """Removed, cleared and re-created series are written as they are."""
        gauge = Gauge("queue", "Queue.", ["name"], registry=registry)
        lines = LineEncoder()
        for number in range(100):
            gauge.labels(str(number)).set(number)
        fast_encode(encoder, registry, lines)
        gauge.remove("7")
        gauge.labels("new").set(1)
        after_remove = fast_encode(encoder, registry, lines)
        expected_after_remove = encoder(registry)
        gauge.clear()
        gauge.labels("7").set(-7)

        assert [expected_after_remove, encoder(registry)] == [
            after_remove,
            fast_encode(encoder, registry, lines),
        ]

    @needs_line_encoder
    def test_texts_of_removed_series_are_forgotten(
        self, registry: CollectorRegistry
    ) -> None:
        """Label texts of series that are gone are not kept for ever."""
        gauge = Gauge("queue", "Queue.", ["name"], registry=registry)
        lines = LineEncoder()
        for number in range(1000):
            gauge.labels(str(number)).set(number)
        fast_encode(generate_latest, registry, lines)
        gauge.clear()
        gauge.labels("only").set(1)
        fast_encode(generate_latest, registry, lines)

        assert [("only",)] == list(lines._texts[gauge]["underscores"].plain)

    @needs_line_encoder
    def test_changing_info_keeps_few_texts(
        self, registry: CollectorRegistry
    ) -> None:
        """An Info whose value keeps changing keeps few label texts."""
        info = Info("build", "Build.", registry=registry)
        lines = LineEncoder()
        for number in range(1000):
            info.info({"version": str(number)})
            assert generate_latest(registry) == fast_encode(
                generate_latest, registry, lines
            )
        texts = lines._texts[info]["underscores"]

        assert [True, 1] == [
            256 >= len(texts.pairs["version"]),
            len(texts.plain),
        ]

    @pytest.mark.parametrize("use_created", [True, False])
    @pytest.mark.parametrize(
        "encoder",
        [generate_latest, openmetrics.generate_latest],
        ids=["text", "openmetrics"],
    )
    def test_created_series_follow_the_library_setting(
        self,
        registry: CollectorRegistry,
        monkeypatch: pytest.MonkeyPatch,
        use_created: bool,
        encoder: Encoder,
    ) -> None:
        """_created samples appear exactly when the library writes them."""
        monkeypatch.setattr(metrics, "_use_created", use_created)
        fill_every_kind(registry)

        assert encoder(registry) == fast_encode(
            encoder, registry, LineEncoder()
        )

    @pytest.mark.parametrize("encoder", encoders(), ids=encoder_ids())
    def test_timestamps(
        self, registry: CollectorRegistry, encoder: Encoder
    ) -> None:
        """Samples with timestamps are written as the library writes them."""
        TimestampedGauge("stamped", "Stamped.", ["a"], registry=registry)
        registry._names_to_collectors["stamped"].labels("x").set(2)

        assert encoder(registry) == fast_encode(
            encoder, registry, LineEncoder()
        )

    @pytest.mark.skipif(
        NativeHistogram is None, reason="no native histograms before 0.22"
    )
    @pytest.mark.parametrize("encoder", encoders(), ids=encoder_ids())
    def test_native_histograms_go_to_the_library(
        self, registry: CollectorRegistry, encoder: Encoder
    ) -> None:
        """A family with native histogram samples is the library's to write."""
        NativeGauge("native", "Native.", registry=registry)
        Gauge("after", "After.", registry=registry).set(1)
        lines = LineEncoder()

        assert (encoder(registry), [False, True] if LINES_ON else []) == (
            fast_encode(encoder, registry, lines),
            directly_encoded(registry, encoder, lines),
        )

    @needs_utf8_names
    def test_utf8_names_in_braces_go_to_the_library(
        self, registry: CollectorRegistry
    ) -> None:
        """Names quoted inside the braces (allow-utf-8) are the library's."""
        Gauge("dotted.name", "Dotted.", ["a"], registry=registry).labels(
            "1"
        ).set(1)
        encoder, _ = choose_encoder(
            "text/plain;version=1.0.0;escaping=allow-utf-8"
        )

        assert (encoder(registry), [False] if LINES_ON else []) == (
            fast_encode(encoder, registry, LineEncoder()),
            directly_encoded(registry, encoder, LineEncoder()),
        )

    async def test_failing_function_raises_the_librarys_error(
        self, registry: CollectorRegistry
    ) -> None:
        """A gauge function that raises fails the render with its error."""

        def broken() -> float:
            raise ZeroDivisionError("no reading")

        Gauge("reading", "Reading.", registry=registry).set_function(broken)

        with pytest.raises(ZeroDivisionError, match="no reading"):
            await RegistryRenderer(registry).render(
                accept=None, accept_encoding=None, names=None
            )

    @needs_line_encoder
    @pytest.mark.parametrize(
        "encoder",
        [generate_latest, openmetrics.generate_latest],
        ids=["text", "openmetrics"],
    )
    def test_ticks_count_samples(
        self, registry: CollectorRegistry, encoder: Encoder
    ) -> None:
        """The pacer is told of every sample encoded."""
        fill_every_kind(registry)
        counted: list[int] = []
        lines = LineEncoder()
        layout = lines.layout(encoder)
        assert layout is not None

        for family in LazyRegistry(registry).collect():
            assert family.source is not None
            lines.encode(family, family.source, layout, counted.append)

        assert sum(len(m.samples) for m in registry.collect()) == sum(counted)


class TestLineEncoderProperties:
    @settings(max_examples=150, deadline=None)
    @given(
        names=st.lists(LABEL_NAMES, min_size=0, max_size=3, unique=True),
        series=st.lists(
            st.lists(st.text(max_size=12), min_size=3, max_size=3)
        ),
        values=st.lists(NUMBERS, min_size=1),
        accept=st.sampled_from(ACCEPT_HEADERS),
    )
    def test_random_labels_and_values(
        self,
        names: list[str],
        series: list[list[str]],
        values: list[float],
        accept: str | None,
    ) -> None:
        """Any label values and numbers come out as the library writes them."""
        registry = CollectorRegistry()  # Fresh for each example.
        gauge = Gauge("random_gauge", "Random.", names, registry=registry)
        counter = Counter("random", "Random.", names, registry=registry)
        for number, labelvalues in enumerate(series):
            value = values[number % len(values)]
            own = labelvalues[: len(names)]
            (gauge.labels(*own) if names else gauge).set(value)
            if math.isfinite(value):  # A counter only goes up, finitely.
                (counter.labels(*own) if names else counter).inc(abs(value))
        encoder, _ = choose_encoder(accept or "")
        lines = LineEncoder()

        assert (encoder(registry), direct(2)) == (
            fast_encode(encoder, registry, lines),
            directly_encoded(registry, encoder, lines),
        )

    @settings(max_examples=100, deadline=None)
    @given(
        bounds=st.lists(
            st.floats(
                allow_nan=False,
                allow_infinity=False,
                min_value=-1e30,
                max_value=1e30,
            ),
            min_size=1,
            max_size=6,
            unique=True,
        ),
        observations=st.lists(
            st.floats(allow_nan=False, allow_infinity=False), max_size=5
        ),
        label=st.text(max_size=8),
        accept=st.sampled_from(ACCEPT_HEADERS),
    )
    def test_random_histograms(
        self,
        bounds: list[float],
        observations: list[float],
        label: str,
        accept: str | None,
    ) -> None:
        """Histograms with any buckets come out as the library writes them."""
        registry = CollectorRegistry()  # Fresh for each example.
        histogram = Histogram(
            "random_seconds",
            "Random.",
            ["op"],
            registry=registry,
            buckets=sorted(bounds),
        )
        for observation in observations:
            histogram.labels(label).observe(observation)
        encoder, _ = choose_encoder(accept or "")
        lines = LineEncoder()

        assert (encoder(registry), direct(1)) == (
            fast_encode(encoder, registry, lines),
            directly_encoded(registry, encoder, lines),
        )

    @settings(max_examples=100, deadline=None)
    @given(
        names=st.lists(
            LABEL_NAMES.filter(lambda name: name not in {"le", "state"}),
            min_size=1,
            max_size=3,
            unique=True,
        ),
        series=st.lists(
            st.lists(st.text(max_size=8), min_size=3, max_size=3),
            min_size=1,
            max_size=4,
        ),
        accept=st.sampled_from(ACCEPT_HEADERS),
    )
    def test_random_own_labels(
        self, names: list[str], series: list[list[str]], accept: str | None
    ) -> None:
        """Buckets and states, wherever their label sorts, come out alike."""
        registry = CollectorRegistry()  # Fresh for each example.
        histogram = Histogram(
            "random_wait", "Wait.", names, registry=registry, buckets=(1.0,)
        )
        state = Enum(
            "state", "State.", names, states=["a", "b"], registry=registry
        )
        for labelvalues in series:
            histogram.labels(*labelvalues[: len(names)]).observe(0.5)
            state.labels(*labelvalues[: len(names)]).state("b")
        encoder, _ = choose_encoder(accept or "")
        lines = LineEncoder()

        assert [encoder(registry)] * 2 + [direct(2)] == [
            fast_encode(encoder, registry, lines),
            fast_encode(encoder, registry, lines),
            directly_encoded(registry, encoder, lines),
        ]


class TestPacerCounts:
    def test_counts_several_at_once(self) -> None:
        """tick(count) counts count units toward the next look at the clock."""
        looks: list[int] = []
        pacer = Pacer(
            slice_seconds=1.0,
            check_every=10,
            clock=lambda: looks.append(1) or 0.0,
            sleep=lambda _: None,
        )
        looks.clear()  # The clock read when the pacer was made.
        pacer.tick(4)
        pacer.tick(5)
        first = len(looks)
        pacer.tick(1)

        assert [0, 1] == [first, len(looks)]
