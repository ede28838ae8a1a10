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
``floatToGoString`` gives, calling it for anything but plain numbers.

What is kept is bounded.  Per encoder: the label texts of at most
:data:`_KEPT_TEXTS` series (about 120 bytes each; the series beyond are
escaped at each render, as the library does), and the texts of at most
:data:`_KEPT_NUMBERS` recurring values.  A sample's own label (a bucket's
``le``, an enum's state) is not kept per series: the series' text is split
where it goes, and only the escaped label (one per bucket bound or state,
at most :data:`_KEPT_PAIRS` per metric) is kept.  The texts of series that
are gone are dropped once a metric keeps more than twice as many as it has,
and those of a metric that is gone with it.

The output is byte for byte the library's: every escaping and formatting
decision is made by ``prometheus_client``'s own functions, and before a
layout (format and escaping) is used, a probe registry is encoded both ways
and compared; on any difference, or anything unusual in a family (native
histograms, values that are not numbers, names that need quoting, an error),
the family is handed back to the library's encoder.  Where the line encoder
cannot be used at all (an internal it needs is missing, the probe differs),
the reason is logged at DEBUG on the ``prom_async.aio.web`` logger, once.
"""

from __future__ import annotations

import bisect
import functools
import logging
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
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from . import _client_internals as internals
from ._client_internals import (
    Escapers,
    has_stock_samples,
    metric_name,
    series,
    series_samples,
)


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["Layout", "LineEncoder", "layout_of"]

log = logging.getLogger("prom_async.aio.web")

# Samples of the text format that it moves into gauges of their own.
_TEXT_SIDE_SUFFIXES = ("_created", "_gsum", "_gcount")
# Lines joined into one piece of bytes at a time, about.
_CHUNK_LINES = 512
# Samples encoded between two calls of the pacer, about.
_TICK_SAMPLES = 64
# Digits before the point that Go writes without an exponent.
_GO_PLAIN_DIGITS = 6
# Numbers whose text is kept, and how many at most.
_KEPT_NUMBER_TYPES = frozenset({float, int})
_KEPT_NUMBERS = 1 << 14
# Label texts of series (and split texts) kept per encoder, at most.
_KEPT_TEXTS = 1 << 17
# Escaped labels of samples (bucket bounds, states) kept per metric.
_KEPT_PAIRS = 256
# Layouts whose probe outcome is kept; past them, the library encodes.
# Negotiation leaves at most 12 (the text format and OpenMetrics 1.0.0 and
# 2.0.0, each with four escapings): the bound guards against a library
# that tells more of what a client sends apart.
_KEPT_LAYOUTS = 32
# What a series' samples have of own labels before the first (never read).
_NO_PAIRS: dict[str, str] = {}


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


def layout_of(
    encoder: Callable[[Any], bytes], escapers: Escapers | str | None = None
) -> Layout | None:
    """
    The layout *encoder* produces, if it is one of the library's encoders.

    :data:`None` for anything else, such as a wrapped or custom encoder,
    and when the line encoder cannot be used with this ``prometheus_client``
    (*escapers* is the reason; by default, the installed library's).
    """
    if escapers is None:
        escapers = internals.LINE_ENCODING
    if isinstance(escapers, str):
        return None
    function: object = encoder
    keywords: dict[str, Any] = {}
    if isinstance(encoder, functools.partial):
        if encoder.args:
            return None
        function, keywords = encoder.func, dict(encoder.keywords)
    escaping = keywords.pop("escaping", escapers.underscores)
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


class _Budget:
    """
    How many more label texts an encoder may keep.
    """

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self) -> bool:
        """
        Whether one more text may be kept, counting it if so.
        """
        # Renders in other threads take too: the count may be off by the
        # few texts taken at the same moment, until the next recount.
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class _Texts:
    """
    The label texts of one metric's series, in one escaping.

    Only strings are kept, in dictionaries keyed by tuples of strings: the
    garbage collector soon stops tracking all of them, so however many
    series there are, keeping their texts adds nothing to its full
    collections (which would hold the GIL, stalling the event loop).
    """

    __slots__ = (
        "budget",
        "escapers",
        "escaping",
        "labelnames",
        "order",
        "pairs",
        "plain",
        "positions",
        "sorted_names",
        "splits",
    )

    def __init__(
        self,
        labelnames: tuple[str, ...],
        escaping: str,
        escapers: Escapers,
        budget: _Budget,
    ) -> None:
        self.labelnames = labelnames
        self.sorted_names = sorted(labelnames)
        # Where each label's value is, and its name escaped, in the order
        # the library writes them.
        self.order = [
            (
                labelnames.index(name),
                escapers.escape_label_name(name, escaping),
            )
            for name in self.sorted_names
        ]
        self.escaping = escaping
        self.escapers = escapers
        self.budget = budget
        self.plain: dict[tuple[str, ...], str] = {}
        self.splits: dict[tuple[tuple[str, ...], str], tuple[str, str]] = {}
        self.pairs: dict[str, dict[str, str]] = {}
        self.positions: dict[str, int] = {}

    def of(self, labelvalues: tuple[str, ...]) -> str:
        """
        The label text of the series with *labelvalues*, kept if it may be.
        """
        if labelvalues:
            escape, rune = self.escapers.escape, self.escapers.labelname_rune
            utf8 = self.escapers.allow_utf8
            pairs = [
                f'{name}="{escape(labelvalues[index], utf8, rune)}"'
                for index, name in self.order
            ]
            text = "{" + ",".join(pairs) + "}"
        else:
            text = ""
        if self.budget.take():
            self.plain[labelvalues] = text
        return text

    def around(
        self, labelvalues: tuple[str, ...], text: str, name: str
    ) -> tuple[str, str]:
        """
        The label text *text* of a series, split where a sample's own label
        *name* goes.

        Raises:
            _Unusual: *name* is one of the series' own label names.
        """
        position = self.positions.get(name)
        if position is None:
            if name in self.labelnames:
                raise _Unusual  # Not made by the stock metrics.
            position = self.positions[name] = bisect.bisect(
                self.sorted_names, name
            )
        if not text:
            return "{", "}"
        if position == 0:
            return "{", "," + text[1:]
        if position == len(self.labelnames):
            return text[:-1] + ",", "}"
        key = (labelvalues, name)
        split = self.splits.get(key)
        if split is None:
            pairs = dict(zip(self.labelnames, labelvalues, strict=False))
            first, last = (
                _label_text(
                    {label: pairs[label] for label in names},
                    self.escaping,
                    self.escapers,
                )
                for names in (
                    self.sorted_names[:position],
                    self.sorted_names[position:],
                )
            )
            split = (first[:-1] + ",", "," + last[1:])
            if self.budget.take():
                self.splits[key] = split
        return split

    def pairs_of(self, name: str) -> dict[str, str]:
        """
        The escaped ``name="value"`` texts kept for a sample's own label.
        """
        pairs = self.pairs.get(name)
        if pairs is None:
            if len(self.pairs) >= _KEPT_PAIRS:
                self.pairs = {}  # Info keys that keep changing.
                self.positions = {}
            pairs = self.pairs[name] = {}
        return pairs

    def pair(self, pairs: dict[str, str], name: str, value: str) -> str:
        """
        ``name="value"`` as the library writes it, kept in *pairs*.
        """
        text = _label_text({name: value}, self.escaping, self.escapers)[1:-1]
        if len(pairs) >= _KEPT_PAIRS:
            pairs.clear()  # Info values that keep changing.
        pairs[value] = text
        return text

    def merged(
        self, labelvalues: tuple[str, ...], labels: dict[str, str]
    ) -> str:
        """
        The label text of a sample with several labels of its own.
        """
        # As MetricWrapperBase._multi_samples: the sample's labels last.
        return _label_text(
            dict(
                list(zip(self.labelnames, labelvalues, strict=False))
                + list(labels.items())
            ),
            self.escaping,
            self.escapers,
        )

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
        self.splits = {
            key: split
            for key, split in self.splits.copy().items()
            if key[0] in children
        }

    def kept(self) -> int:
        """
        How many texts are kept, as the budget counts them.
        """
        return len(self.plain) + len(self.splits)


def _label_text(
    labels: dict[str, str], escaping: str, escapers: Escapers
) -> str:
    """
    ``{name="value",...}`` as both encoders write a sample's (non-empty)
    labels.
    """
    escape, rune = escapers.escape, escapers.labelname_rune
    name_of, utf8 = escapers.escape_label_name, escapers.allow_utf8
    pairs = [
        f'{name_of(name, escaping)}="{escape(value, utf8, rune)}"'
        for name, value in sorted(labels.items())
    ]
    return "{" + ",".join(pairs) + "}"


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


class LineEncoder:
    """
    Encode stock metric families directly, remembering label texts.

    One encoder serves any number of renders of one or more registries,
    from any number of threads at once.

    Args:
        escapers: The library's escaping helpers, or the reason the line
            encoder cannot be used; by default, the installed library's.
    """

    def __init__(self, escapers: Escapers | str | None = None) -> None:
        self._escapers = (
            internals.LINE_ENCODING if escapers is None else escapers
        )
        self._texts: weakref.WeakKeyDictionary[object, dict[str, _Texts]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._numbers: dict[object, str] = {}
        self._budget = _Budget(_KEPT_TEXTS)
        self._told: set[str] = set()

    def layout(self, encoder: Callable[[Any], bytes]) -> Layout | None:
        """
        The layout of *encoder* when this encoder reproduces it exactly.

        Called once per render: the count of kept texts is brought up to
        date (texts of metrics that are gone no longer count).  When the
        line encoder cannot be used, the reason is logged at DEBUG, once.
        """
        escapers = self._escapers
        if isinstance(escapers, str):
            self._tell(f"prometheus_client {internals.VERSION}: {escapers}")
            return None
        layout = layout_of(encoder, escapers)
        if layout is None:
            self._tell(f"{_describe(encoder)} is not an encoder it reproduces")
            return None
        reason = _probe_outcome(layout, encoder, escapers)
        if reason is not None:
            self._tell(reason)
            return None
        self._recount()
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
            layout: What to produce, as :meth:`layout` gave it.
            tick: Told how many samples were encoded, now and then.

        Returns:
            The family's bytes in pieces, or :data:`None` when the family
            is left to the library's encoder (the metric is not a stock
            one, holds something unusual, or raised).
        """
        if isinstance(self._escapers, str) or not has_stock_samples(source):
            return None
        try:
            return self._encode(family, source, layout, self._escapers, tick)
        except Exception:  # noqa: BLE001 -- the library's encoder tells
            return None

    def _tell(self, reason: str) -> None:
        with self._lock:
            if reason in self._told:
                return
            self._told.add(reason)
        log.debug(
            "Line encoder off (%s): prometheus_client's own encoder renders "
            "instead",
            reason,
        )

    def _recount(self) -> None:
        with self._lock:
            tables = [
                texts
                for by_escaping in list(self._texts.values())
                for texts in list(by_escaping.values())
            ]
        self._budget.left = _KEPT_TEXTS - sum(t.kept() for t in tables)

    def _texts_of(
        self,
        source: object,
        labelnames: tuple[str, ...],
        layout: Layout,
        escapers: Escapers,
    ) -> _Texts:
        escaping = layout.escaping
        by_escaping = self._texts.get(source)
        texts = None if by_escaping is None else by_escaping.get(escaping)
        if texts is None:
            made = _Texts(labelnames, escaping, escapers, self._budget)
            with self._lock:  # Another render may have made them meanwhile.
                by_escaping = self._texts.setdefault(source, {})
                texts = by_escaping.setdefault(escaping, made)
        return texts

    def _encode(
        self,
        family: Any,
        source: object,
        layout: Layout,
        escapers: Escapers,
        tick: Callable[[int], object],
    ) -> list[bytes]:
        children, labelnames = series(source)
        texts = self._texts_of(source, labelnames, layout, escapers)
        limit = 2 * len(children) + 64
        if len(texts.plain) > limit or len(texts.splits) > limit:
            texts.keep_only(children)
        about = _Family(
            family.name,
            family.documentation,
            family.type,
            family.unit,
            metric_name(source),
        )
        return [
            _header(about, layout, escapers),
            *_sample_lines(
                _Writing(about, texts, layout, escapers, self._numbers),
                children,
                tick,
            ),
        ]


class _Writing(NamedTuple):
    """
    What the lines of one family are written with.
    """

    family: _Family
    texts: _Texts
    layout: Layout
    escapers: Escapers
    numbers: dict[object, str]


def _sample_lines(  # noqa: C901, PLR0912, PLR0915 -- one loop, inlined
    writing: _Writing,
    children: dict[tuple[str, ...], Any],
    tick: Callable[[int], object],
) -> list[bytes]:
    """
    The sample lines of *children*; the text format's side gauges last.
    """
    texts, numbers = writing.texts, writing.numbers
    pieces: list[bytes] = []
    lines: list[str] = []
    plain = texts.plain
    names: dict[str, tuple[str, list[str]]] = {}
    sides: dict[str, list[str]] = {}
    # The series' text split where its samples' own label goes, and the
    # texts of that label's values; made again for each series.
    head = tail = ""
    own_pairs = _NO_PAIRS
    untold = 0  # Samples the pacer was not told of yet.
    for labelvalues, samples in series_samples(children):
        text = plain.get(labelvalues)
        if text is None:
            text = texts.of(labelvalues)
        own_name: str | None = None
        for suffix, labels, value, timestamp, exemplar, native in samples:
            named = names.get(suffix)
            if named is None:
                name, side = _sample_name(writing, suffix)
                target = lines if side is None else sides.setdefault(side, [])
                named = names[suffix] = (name, target)
            if native is not None or value is None:
                raise _Unusual
            number = _number_text(numbers, value)
            if not labels and timestamp is None and not exemplar:
                named[1].append(f"{named[0]}{text} {number}\n")
                continue
            end = (
                "\n"
                if timestamp is None and not exemplar
                else _line_end(writing, suffix, labels, timestamp, exemplar)
            )
            if not labels:
                named[1].append(f"{named[0]}{text} {number}{end}")
            elif len(labels) == 1:
                ((own, own_value),) = labels.items()
                if own != own_name:
                    head, tail = texts.around(labelvalues, text, own)
                    own_name, own_pairs = own, texts.pairs_of(own)
                pair = own_pairs.get(own_value)
                if pair is None:
                    pair = texts.pair(own_pairs, own, own_value)
                named[1].append(f"{named[0]}{head}{pair}{tail} {number}{end}")
            else:
                merged = texts.merged(labelvalues, labels)
                named[1].append(f"{named[0]}{merged} {number}{end}")
        untold += len(samples)
        if untold >= _TICK_SAMPLES:
            tick(untold)
            untold = 0
            if len(lines) >= _CHUNK_LINES:
                pieces.append("".join(lines).encode("utf-8"))
                lines.clear()
    tick(untold)
    pieces.extend(_chunks(lines))
    for side in sorted(sides):
        pieces.append(_side_header(writing, side))
        pieces.extend(_chunks(sides[side]))
    return pieces


def _line_end(
    writing: _Writing,
    suffix: str,
    labels: dict[str, str],
    timestamp: object,
    exemplar: Exemplar | None,
) -> str:
    """
    What follows the value: the timestamp, an exemplar (OpenMetrics only).
    """
    if not writing.layout.openmetrics:
        if timestamp is None:
            return "\n"
        return f" {int(float(timestamp) * 1000):d}\n"  # type: ignore[arg-type]
    end = "" if timestamp is None else f" {timestamp}"
    if exemplar:
        end += _exemplar(writing, suffix, labels, exemplar)
    return end + "\n"


def _header(family: _Family, layout: Layout, escapers: Escapers) -> bytes:
    """
    The ``# HELP``, ``# TYPE`` (and ``# UNIT``) lines of *family*.
    """
    name, kind = family.name, family.type
    if layout.openmetrics:
        escaped = escapers.escape_metric_name(name, layout.escaping)
        help_text = escapers.escape(
            family.documentation, escapers.allow_utf8, escapers.labelname_rune
        )
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
    escaped = escapers.escape_metric_name(name, layout.escaping)
    help_text = _text_help(family.documentation)
    return f"# HELP {escaped} {help_text}\n# TYPE {escaped} {kind}\n".encode()


def _side_header(writing: _Writing, suffix: str) -> bytes:
    family = writing.family
    escaped = writing.escapers.escape_metric_name(
        family.name + suffix, writing.layout.escaping
    )
    help_text = _text_help(family.documentation)
    return f"# HELP {escaped} {help_text}\n# TYPE {escaped} gauge\n".encode()


def _text_help(documentation: str) -> str:
    return documentation.replace("\\", r"\\").replace("\n", r"\n")


def _sample_name(writing: _Writing, suffix: str) -> tuple[str, str | None]:
    """
    A sample name as written, and the text format's side gauge it goes to.
    """
    family, layout, escapers = writing.family, writing.layout, writing.escapers
    full = family.prefix + suffix
    if layout.escaping == escapers.allow_utf8 and not (
        escapers.valid_metric_name(full)
    ):
        raise _Unusual  # Written inside the braces.
    if layout.openmetrics:
        escaped = escapers.escape(
            full, layout.escaping, escapers.labelname_rune
        )
        return escaped, None
    escaped = escapers.escape_metric_name(full, layout.escaping)
    for side in _TEXT_SIDE_SUFFIXES:
        if full == family.name + side:
            return escaped, side
    return escaped, None


def _exemplar(
    writing: _Writing,
    suffix: str,
    labels: dict[str, str],
    exemplar: Exemplar,
) -> str:
    family = writing.family
    sample = Sample(family.prefix + suffix, labels, 0.0, None, exemplar)
    return writing.escapers.compose_exemplar(family, sample, exemplar)


def _describe(encoder: object) -> str:
    if isinstance(encoder, functools.partial):
        keywords = "".join(f", {name}=" for name in sorted(encoder.keywords))
        return f"{_describe(encoder.func)} (partial{keywords})"
    module = getattr(encoder, "__module__", None) or "?"
    name = getattr(encoder, "__qualname__", None) or type(encoder).__name__
    return f"{module}.{name}"


# Per layout and escaping helpers: why the line encoder's probe differed
# from the library's encoder, or None when they agreed.
_probed: dict[tuple[Layout, Escapers], str | None] = {}


def _probe_outcome(
    layout: Layout, encoder: Callable[[Any], bytes], escapers: Escapers
) -> str | None:
    """
    Why the line encoder does not reproduce *encoder*, or :data:`None`.
    """
    key = (layout, escapers)
    if key in _probed:
        return _probed[key]
    if not internals.values_are_local():
        return (
            "multiprocess mode: the probe's metrics would be written to "
            "PROMETHEUS_MULTIPROC_DIR"
        )
    if len(_probed) >= _KEPT_LAYOUTS:
        # Not naming the layout: what it holds may come from a client.
        return f"{_KEPT_LAYOUTS} layouts were probed already"
    differs = _compare_on_probe(layout, encoder, escapers)
    reason = _probed[key] = None if differs is None else f"{layout}: {differs}"
    return reason


def _compare_on_probe(
    layout: Layout, encoder: Callable[[Any], bytes], escapers: Escapers
) -> str | None:
    """
    Why the library and a :class:`LineEncoder` differ on a probe, if they
    do.
    """
    registry, metrics = _probe_registry()
    expected = encoder(registry)
    line_encoder = LineEncoder(escapers)
    for attempt in ("first", "second"):  # The second from the kept texts.
        pieces: list[bytes] = []
        for metric in metrics:
            (family,) = metric.collect()
            try:
                encoded = line_encoder._encode(  # noqa: SLF001 -- its own
                    family, metric, layout, escapers, _ignore
                )
            except Exception as error:  # noqa: BLE001 -- named in the reason
                return f"encoding the probe's {family.name} raised {error!r}"
            pieces.extend(encoded)
        if layout.openmetrics:
            pieces.append(b"# EOF\n")
        if b"".join(pieces) != expected:
            return f"the probe's {attempt} render differed from the library's"
    return None


def _ignore(_count: int) -> None:
    pass


def _probe_registry() -> tuple[CollectorRegistry, list[Any]]:
    """
    One of each stock metric, with labels that need escaping, in order.

    Samples' own labels (``le``, an enum's state) go first, last and in
    the middle of the series' labels.
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
    around = Histogram(
        "probe_wait", "Wait.", ["a", "z"], registry=registry, buckets=(1.0,)
    )
    around.labels('"', "\\").observe(0.5)
    around.labels("b", "y").observe(2)
    bare = Histogram("probe_bare", "Bare.", registry=registry, buckets=(1.0,))
    bare.observe(0.5)
    summary = Summary("probe_size", "Size.", ["kind"], registry=registry)
    summary.labels("k").observe(4)
    info = Info("probe_build", "Build.", ["host"], registry=registry)
    info.labels("h").info({"version": "1.2", "a": "\n"})
    enum = Enum(
        "probe_state", "State.", ["z"], states=["a", "b"], registry=registry
    )
    enum.labels("zz").state("b")
    last = Enum("probe_mode", "Mode.", ["a"], states=["x"], registry=registry)
    last.labels("1").state("x")
    return registry, [
        counter,
        plain,
        gauge,
        histogram,
        around,
        bare,
        summary,
        info,
        enum,
        last,
    ]
