"""
Encode ``prometheus_client``'s own metrics line by line, quickly.

``prometheus_client``'s encoders spend most of their time on work that is the
same from one scrape to the next: sorting and escaping each series' labels,
escaping sample names character by character (OpenMetrics), and building a
:class:`~prometheus_client.samples.Sample` per sample with a fresh label
dictionary.  For the stock metric classes (``Counter``, ``Gauge``,
``Histogram``, ``Summary``, ``Info``, ``Enum``) a :class:`LineEncoder`
formats the lines itself: a series' labels are escaped once and kept (a
child's label values never change; the text is keyed by them, so a removed
and re-created child finds the same text), sample names are escaped once per
family, and values go through a short path that gives what
``floatToGoString`` gives, calling it for anything but plain numbers (with
the texts of up to 16384 recurring values kept).

The output is byte for byte the library's: every escaping and formatting
decision is made by ``prometheus_client``'s own functions, and before a
layout (format and escaping) is used, a probe registry is encoded both ways
and compared; on any difference, or anything unusual in a family (native
histograms, values that are not numbers, names that need quoting, an error),
the family is handed back to the library's encoder.
"""

from __future__ import annotations

import functools
import threading
import weakref

from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
)
from prometheus_client import exposition as text_exposition
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["Layout", "LineEncoder"]

# Private helpers of the OpenMetrics encoder that both encoders use; without
# any of them (another prometheus_client version), nothing is encoded here.
_escape: Callable[..., str] | None = getattr(om_exposition, "_escape", None)
_labelname_rune: Callable[..., bool] | None = getattr(
    om_exposition, "_is_legacy_labelname_rune", None
)
_valid_metric_name: Callable[[str], bool] | None = getattr(
    om_exposition, "_is_valid_legacy_metric_name", None
)
_compose_exemplar: Callable[..., str] | None = getattr(
    om_exposition, "_compose_exemplar_string", None
)
_escape_metric_name: Callable[..., str] | None = getattr(
    om_exposition, "escape_metric_name", None
)
_escape_label_name: Callable[..., str] | None = getattr(
    om_exposition, "escape_label_name", None
)
_ALLOWUTF8: str | None = getattr(om_exposition, "ALLOWUTF8", None)
_UNDERSCORES: str | None = getattr(om_exposition, "UNDERSCORES", None)

# Samples of the text format that it moves into gauges of their own.
_TEXT_SIDE_SUFFIXES = ("_created", "_gsum", "_gcount")
# Lines joined into one piece of bytes at a time.
_CHUNK_LINES = 512
# Label texts kept per series for samples with labels of their own.
_MERGED_PER_SERIES = 64
# Digits before the point that Go writes without an exponent.
_GO_PLAIN_DIGITS = 6
# Numbers whose text is kept, and how many at most.
_KEPT_NUMBER_TYPES = frozenset({float, int})
_KEPT_NUMBERS = 1 << 14


class Layout(NamedTuple):
    """
    What an encoder of ``prometheus_client`` produces.

    Attributes:
        openmetrics: OpenMetrics rather than the text format 0.0.4.
        escaping: How metric and label names are escaped.
        version: The OpenMetrics version asked for.
    """

    openmetrics: bool
    escaping: str
    version: str


class _Family(NamedTuple):
    """
    What is written of a family besides its samples.

    Attributes:
        name: The family's name.
        documentation: Its help text.
        type: Its OpenMetrics type.
        unit: Its unit, or ``""``.
        prefix: What its samples' names start with.
    """

    name: str
    documentation: str
    type: str
    unit: str
    prefix: str


class _Unusual(Exception):  # noqa: N818 -- a signal, not an error
    """
    The family holds something left to the library's encoder.
    """


def layout_of(encoder: Callable[[Any], bytes]) -> Layout | None:
    """
    The layout *encoder* produces, if it is one of the library's encoders.

    :data:`None` for anything else, such as a wrapped or custom encoder.
    """
    if (
        _escape is None
        or _labelname_rune is None
        or _valid_metric_name is None
        or _compose_exemplar is None
        or _escape_metric_name is None
        or _escape_label_name is None
        or _ALLOWUTF8 is None
        or _UNDERSCORES is None
    ):
        return None
    function: object = encoder
    keywords: dict[str, Any] = {}
    if isinstance(encoder, functools.partial):
        if encoder.args:
            return None
        function, keywords = encoder.func, dict(encoder.keywords)
    escaping = keywords.pop("escaping", _UNDERSCORES)
    if function is text_exposition.generate_latest and not keywords:
        openmetrics, version = False, ""
    elif function is om_exposition.generate_latest and set(keywords) <= {
        "version"
    }:
        openmetrics, version = True, keywords.get("version", "1.0.0")
    else:
        return None
    if not isinstance(escaping, str) or not isinstance(version, str):
        return None
    return Layout(openmetrics, escaping, version)


class _Texts:
    """
    The label texts of one metric's series, in one escaping.

    Only strings are kept, in dictionaries keyed by tuples of strings: the
    garbage collector soon stops tracking all of them, so however many
    series there are, keeping their texts adds nothing to its full
    collections (which would hold the GIL, stalling the event loop).
    """

    __slots__ = ("escaping", "labelnames", "merged", "plain")

    def __init__(self, labelnames: tuple[str, ...], escaping: str) -> None:
        self.labelnames = labelnames
        self.escaping = escaping
        self.plain: dict[tuple[str, ...], str] = {}
        self.merged: dict[tuple[tuple[str, ...], str, str], str] = {}

    def of(self, labelvalues: tuple[str, ...]) -> str:
        """
        The label text of the series with *labelvalues*.
        """
        text = self.plain.get(labelvalues)
        if text is None:
            text = self.plain[labelvalues] = _label_text(
                dict(zip(self.labelnames, labelvalues, strict=False)),
                self.escaping,
            )
        return text

    def with_labels(
        self, labelvalues: tuple[str, ...], labels: dict[str, str]
    ) -> str:
        """
        The label text of a sample of a series with *labels* of its own.
        """
        if len(labels) != 1:
            return self._merge(labelvalues, labels)
        ((name, value),) = labels.items()
        key = (labelvalues, name, value)
        text = self.merged.get(key)
        if text is None:
            if len(self.merged) >= _MERGED_PER_SERIES * (len(self.plain) + 1):
                self.merged = {}  # Info values that keep changing.
            text = self.merged[key] = self._merge(labelvalues, labels)
        return text

    def keep_only(self, children: dict[tuple[str, ...], Any]) -> None:
        """
        Forget the texts of series that are gone.
        """
        # Renders of other formats may be adding texts from other threads:
        # iterate over copies (taken in one step under the GIL).
        self.plain = {
            key: text
            for key, text in self.plain.copy().items()
            if key in children
        }
        self.merged = {
            key: text
            for key, text in self.merged.copy().items()
            if key[0] in children
        }

    def _merge(
        self, labelvalues: tuple[str, ...], labels: dict[str, str]
    ) -> str:
        # As MetricWrapperBase._multi_samples: the sample's labels last.
        return _label_text(
            dict(
                list(zip(self.labelnames, labelvalues, strict=False))
                + list(labels.items())
            ),
            self.escaping,
        )


def _label_text(labels: dict[str, str], escaping: str) -> str:
    """
    ``{name="value",...}`` as both encoders write a sample's labels.
    """
    if not labels:
        return ""
    assert _escape_label_name is not None  # noqa: S101 -- see layout_of
    assert _escape is not None  # noqa: S101
    pairs = [
        (
            _escape_label_name(name, escaping),
            _escape(value, _ALLOWUTF8, _labelname_rune),
        )
        for name, value in sorted(labels.items())
    ]
    return "{" + ",".join([f'{name}="{value}"' for name, value in pairs]) + "}"


def _go_float(value: object) -> str:
    """
    What ``floatToGoString(value)`` returns, without its detours.
    """
    number = float(value)  # type: ignore[arg-type]
    text = repr(number)
    # "inf", "-inf" and "nan" hold an "n"; a repr with more than six
    # digits before the point is written with an exponent in Go.
    if "n" in text or (
        len(text) > _GO_PLAIN_DIGITS + 1
        and number > 0
        and text.find(".") > _GO_PLAIN_DIGITS
    ):
        return str(floatToGoString(number))  # type: ignore[no-untyped-call]
    return text


def _number_text(numbers: dict[object, str], value: object) -> str:
    """
    ``floatToGoString(value)``, remembered in *numbers*.

    Many values recur, across series and from one scrape to the next
    (small counts, bucket counts, ``1.0`` of info and enum samples): a
    look-up is cheaper than formatting.  Zeros are not kept (``0.0 ==
    -0.0``), nor NaN (never equal).  Once *numbers* is full, it is kept as
    it is: a registry of ever new values pays one look-up per sample, not
    the churn of starting over.
    """
    text = numbers.get(value)
    if text is None:
        text = _go_float(value)
        if (
            len(numbers) < _KEPT_NUMBERS
            and value
            and type(value) in _KEPT_NUMBER_TYPES
            and text != "NaN"
        ):
            numbers[value] = text
    return text


def _chunks(lines: list[str]) -> list[bytes]:
    """
    *lines* joined into pieces of bytes, a chunk of lines at a time.
    """
    return [
        "".join(lines[start : start + _CHUNK_LINES]).encode("utf-8")
        for start in range(0, len(lines), _CHUNK_LINES)
    ]


_STOCK_SAMPLES = MetricWrapperBase._samples  # noqa: SLF001
_STOCK_MULTI_SAMPLES = MetricWrapperBase._multi_samples  # noqa: SLF001


class LineEncoder:
    """
    Encode stock metric families directly, remembering label texts.

    One encoder serves any number of renders of one or more registries,
    from any number of threads at once.
    """

    def __init__(self) -> None:
        self._texts: weakref.WeakKeyDictionary[
            MetricWrapperBase, dict[str, _Texts]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._numbers: dict[object, str] = {}

    def layout(self, encoder: Callable[[Any], bytes]) -> Layout | None:
        """
        The layout of *encoder* when this encoder reproduces it exactly.
        """
        layout = layout_of(encoder)
        if layout is None or not _probe_agrees(layout, encoder):
            return None
        return layout

    def encode(
        self,
        family: Any,
        source: object,
        layout: Layout,
        tick: Callable[[int], object],
    ) -> list[bytes] | None:
        """
        Encode *family*, collected from the stock metric *source*.

        Args:
            family: The family's ``name``, ``documentation``, ``type`` and
                ``unit``; its samples are not read.
            source: The metric the family comes from.
            layout: What to produce.
            tick: Told how many samples were encoded, now and then.

        Returns:
            The family's bytes in pieces, or :data:`None` when the family
            is left to the library's encoder (the metric is not a stock
            one, holds something unusual, or raised).
        """
        if (
            not isinstance(source, MetricWrapperBase)
            or type(source)._samples is not _STOCK_SAMPLES  # noqa: SLF001
            or type(source)._multi_samples  # noqa: SLF001
            is not _STOCK_MULTI_SAMPLES
        ):
            return None
        try:
            return self._encode(family, source, layout, tick)
        except Exception:  # noqa: BLE001 -- the library's encoder tells
            return None

    def _texts_of(
        self,
        source: MetricWrapperBase,
        labelnames: tuple[str, ...],
        escaping: str,
    ) -> _Texts:
        try:
            by_escaping = self._texts.get(source)
        except TypeError:  # Not weakly referenceable: nothing is kept.
            return _Texts(labelnames, escaping)
        if by_escaping is None:
            with self._lock:
                by_escaping = self._texts.setdefault(source, {})
        texts = by_escaping.get(escaping)
        if texts is None:
            texts = by_escaping[escaping] = _Texts(labelnames, escaping)
        return texts

    def _encode(
        self,
        family: Any,
        source: MetricWrapperBase,
        layout: Layout,
        tick: Callable[[int], object],
    ) -> list[bytes]:
        metric: Any = source  # Its private parts are not typed.
        if metric._is_parent():  # noqa: SLF001
            with metric._lock:  # noqa: SLF001
                children: dict[tuple[str, ...], Any] = metric._metrics.copy()  # noqa: SLF001
            labelnames = tuple(metric._labelnames)  # noqa: SLF001
        else:
            children, labelnames = {(): source}, ()
        texts = self._texts_of(source, labelnames, layout.escaping)
        if len(texts.plain) > 2 * len(children) + 64:
            texts.keep_only(children)
        about = _Family(
            family.name,
            family.documentation,
            family.type,
            family.unit,
            metric._name,  # noqa: SLF001
        )
        write = _openmetrics if layout.openmetrics else _text
        return [
            _header(about, layout),
            *write(
                about,
                children,
                texts,
                layout,
                numbers=self._numbers,
                tick=tick,
            ),
        ]


def _openmetrics(
    family: _Family,
    children: dict[tuple[str, ...], Any],
    texts: _Texts,
    layout: Layout,
    *,
    numbers: dict[object, str],
    tick: Callable[[int], object],
) -> list[bytes]:
    """
    The OpenMetrics sample lines of *children*.
    """
    pieces: list[bytes] = []
    lines: list[str] = []
    plain = texts.plain
    names: dict[str, str] = {}
    for labelvalues, child in children.items():
        # What child._samples() returns: MetricWrapperBase._samples is
        # stock, and a child is never a parent.
        samples = tuple(child._child_samples())  # noqa: SLF001
        for suffix, labels, value, timestamp, exemplar, native in samples:
            name = names.get(suffix)
            if name is None:
                name = names[suffix] = _sample_name(family, suffix, layout)[0]
            if native is not None or value is None:
                raise _Unusual
            text = (
                texts.with_labels(labelvalues, labels)
                if labels
                else plain.get(labelvalues)
            )
            if text is None:
                text = texts.of(labelvalues)
            line = f"{name}{text} {_number_text(numbers, value)}"
            if timestamp is not None:
                line += f" {timestamp}"
            if exemplar:
                line += _exemplar(family, suffix, labels, exemplar)
            lines.append(line + "\n")
        tick(len(samples))
        if len(lines) >= _CHUNK_LINES:
            pieces.append("".join(lines).encode("utf-8"))
            lines.clear()
    pieces.extend(_chunks(lines))
    return pieces


def _text(
    family: _Family,
    children: dict[tuple[str, ...], Any],
    texts: _Texts,
    layout: Layout,
    *,
    numbers: dict[object, str],
    tick: Callable[[int], object],
) -> list[bytes]:
    """
    The text format's sample lines of *children*, side gauges last.
    """
    pieces: list[bytes] = []
    lines: list[str] = []
    plain = texts.plain
    names: dict[str, tuple[str, list[str]]] = {}
    sides: dict[str, list[str]] = {}
    for labelvalues, child in children.items():
        samples = tuple(child._child_samples())  # noqa: SLF001 -- as above
        for suffix, labels, value, timestamp, _, native in samples:
            named = names.get(suffix)
            if named is None:
                name, side = _sample_name(family, suffix, layout)
                target = lines if side is None else sides.setdefault(side, [])
                named = names[suffix] = (name, target)
            if native is not None or value is None:
                raise _Unusual
            text = (
                texts.with_labels(labelvalues, labels)
                if labels
                else plain.get(labelvalues)
            )
            if text is None:
                text = texts.of(labelvalues)
            number = _number_text(numbers, value)
            if timestamp is None:
                named[1].append(f"{named[0]}{text} {number}\n")
            else:
                milliseconds = int(float(timestamp) * 1000)
                named[1].append(
                    f"{named[0]}{text} {number} {milliseconds:d}\n"
                )
        tick(len(samples))
        if len(lines) >= _CHUNK_LINES:
            pieces.append("".join(lines).encode("utf-8"))
            lines.clear()
    pieces.extend(_chunks(lines))
    for side in sorted(sides):
        pieces.append(_side_header(family, side, layout))
        pieces.extend(_chunks(sides[side]))
    return pieces


def _header(family: _Family, layout: Layout) -> bytes:
    """
    The ``# HELP``, ``# TYPE`` (and ``# UNIT``) lines of *family*.
    """
    assert _escape_metric_name is not None  # noqa: S101 -- see layout_of
    assert _escape is not None  # noqa: S101
    name, kind = family.name, family.type
    if layout.openmetrics:
        escaped = _escape_metric_name(name, layout.escaping)
        help_text = _escape(family.documentation, _ALLOWUTF8, _labelname_rune)
        header = f"# HELP {escaped} {help_text}\n# TYPE {escaped} {kind}\n"
        if family.unit:
            header += f"# UNIT {escaped} {family.unit}\n"
        return header.encode("utf-8")
    # Munging from OpenMetrics into the text format, as the library does.
    if kind == "counter":
        name += "_total"
    elif kind == "info":
        name += "_info"
        kind = "gauge"
    elif kind == "stateset":
        kind = "gauge"
    elif kind == "gaugehistogram":
        kind = "histogram"
    elif kind == "unknown":
        kind = "untyped"
    escaped = _escape_metric_name(name, layout.escaping)
    help_text = _text_help(family.documentation)
    return f"# HELP {escaped} {help_text}\n# TYPE {escaped} {kind}\n".encode()


def _side_header(family: _Family, suffix: str, layout: Layout) -> bytes:
    assert _escape_metric_name is not None  # noqa: S101 -- see layout_of
    escaped = _escape_metric_name(family.name + suffix, layout.escaping)
    help_text = _text_help(family.documentation)
    return f"# HELP {escaped} {help_text}\n# TYPE {escaped} gauge\n".encode()


def _text_help(documentation: str) -> str:
    return documentation.replace("\\", r"\\").replace("\n", r"\n")


def _sample_name(
    family: _Family, suffix: str, layout: Layout
) -> tuple[str, str | None]:
    """
    A sample name as written, and the text format's side gauge it goes to.
    """
    assert _valid_metric_name is not None  # noqa: S101 -- see layout_of
    assert _escape_metric_name is not None  # noqa: S101
    assert _escape is not None  # noqa: S101
    full = family.prefix + suffix
    if layout.escaping == _ALLOWUTF8 and not _valid_metric_name(full):
        raise _Unusual  # Written inside the braces.
    if layout.openmetrics:
        return _escape(full, layout.escaping, _labelname_rune), None
    for side in _TEXT_SIDE_SUFFIXES:
        if full == family.name + side:
            return _escape_metric_name(full, layout.escaping), side
    return _escape_metric_name(full, layout.escaping), None


def _exemplar(
    family: _Family,
    suffix: str,
    labels: dict[str, str],
    exemplar: Exemplar,
) -> str:
    assert _compose_exemplar is not None  # noqa: S101 -- see layout_of
    sample = Sample(family.prefix + suffix, labels, 0.0, None, exemplar)
    return _compose_exemplar(family, sample, exemplar)


# Whether a layout was checked against the library on the probe registry.
_agreement: dict[Layout, bool] = {}


def _probe_agrees(layout: Layout, encoder: Callable[[Any], bytes]) -> bool:
    known = _agreement.get(layout)
    if known is None:
        known = _agreement[layout] = _compare_on_probe(layout, encoder)
    return known


def _compare_on_probe(layout: Layout, encoder: Callable[[Any], bytes]) -> bool:
    """
    Whether the library and a :class:`LineEncoder` agree on a probe.
    """
    registry, metrics = _probe_registry()
    pieces: list[bytes] = []
    line_encoder = LineEncoder()
    for _ in range(2):  # A second time, from the kept label texts.
        pieces.clear()
        for metric in metrics:
            (family,) = metric.collect()
            encoded = line_encoder.encode(family, metric, layout, _ignore)
            if encoded is None:
                return False
            pieces.extend(encoded)
        if layout.openmetrics:
            pieces.append(b"# EOF\n")
        if b"".join(pieces) != encoder(registry):
            return False
    return True


def _ignore(_count: int) -> None:
    pass


def _probe_registry() -> tuple[CollectorRegistry, list[MetricWrapperBase]]:
    """
    One of each stock metric, with labels that need escaping, in order.
    """
    registry = CollectorRegistry()
    counter = Counter(
        "probe_requests",
        'He\\lp "with"\nlines.',
        ["path", "a"],
        registry=registry,
    )
    counter.labels('/a"b\\c\nd', "ü").inc(2)
    counter.labels("/x", "").inc(1e22, exemplar={"trace_id": 'a"b'})
    plain = Counter("probe_plain", "Plain.", registry=registry)
    plain.inc(0.1)
    gauge = Gauge("probe_depth", "Depth.", ["q"], registry=registry)
    for number, value in enumerate(
        [-1.5, float("inf"), float("-inf"), float("nan"), 1234567.0, 1e-7]
    ):
        gauge.labels(str(number)).set(value)
    gauge.labels("big").set(123456789012.5)
    histogram = Histogram(
        "probe_latency",
        "Latency.",
        ["op"],
        registry=registry,
        unit="seconds",
        buckets=(0.5, 1e7, float("inf")),
    )
    histogram.labels("get").observe(0.2, exemplar={"trace_id": "x"})
    histogram.labels("put").observe(3)
    summary = Summary("probe_size", "Size.", ["kind"], registry=registry)
    summary.labels("k").observe(4)
    info = Info("probe_build", "Build.", ["host"], registry=registry)
    info.labels("h").info({"version": "1.2", "a": "\n"})
    enum = Enum(
        "probe_state", "State.", ["z"], states=["a", "b"], registry=registry
    )
    enum.labels("zz").state("b")
    return registry, [counter, plain, gauge, histogram, summary, info, enum]
