"""
The one place that reads ``prometheus_client``'s internals.

``prometheus_client`` has no public way to walk a registry lazily, to read a
metric's series, or to escape names and values as its encoders do; the
render engine and the wrappers read these internals instead.  Each is looked
up here, once, and checked; where one is missing or not what it was, the
fast path that needs it is off and the reason names it (the render engine
logs it at DEBUG, once), and the public API is used: nothing here raises
because an internal changed.

Proven on prometheus_client 0.20.0, 0.21.0, 0.22.0, 0.23.0, 0.24.0, 0.25.0
and 0.26.0 (``tests/test_render*.py``, ``tests/test_web.py`` and
``tests/test_prometheus_scrape.py`` run on each):

``CollectorRegistry._lock``, ``._collector_to_names``, ``._target_info``,
``._target_info_metric()``
    0.20-0.26.  The collectors and the target info, read as ``collect()``
    reads them, for the lazy walk (:func:`registry_contents`).
``MetricWrapperBase._name``, ``._get_metric()``, ``._samples()``
    0.20-0.26.  A stock metric's family and its samples produced one by one
    (:func:`lazy_metric`).
``MetricWrapperBase._multi_samples()``, ``._is_parent()``, ``._lock``,
``._metrics``, ``._labelnames``, ``._child_samples()``
    0.20-0.26.  A metric's series, for the line encoder (:func:`series`,
    :func:`series_samples`).
``MetricWrapperBase._labelnames``, ``._labelvalues``
    0.20-0.26.  The label names still to bind (:func:`unbound_label_names`,
    and :func:`needs_label_values` for metrics it has read).
``MetricWrapperBase._metrics``
    0.20-0.26.  A child that exists, looked up without ``labels()``'s
    checks, for the HTTP client tracer's hot path (:func:`child`).
``Sample.native_histogram``
    0.22-0.26 (a sixth field; before 0.22 a sample has five).  The line
    encoder unpacks six fields.
``openmetrics.exposition._escape(text, escaping, rune)``,
``._is_legacy_labelname_rune``, ``._compose_exemplar_string``,
``.escape_metric_name(name, escaping)``, ``.escape_label_name(name,
escaping)``, ``.ALLOWUTF8``, ``.UNDERSCORES``; and
``._is_valid_legacy_metric_name``
    0.23-0.26 (the last one 0.22-0.26).  The line encoder's escaping, made by
    the library's own functions (:class:`Escapers`).  0.22 has ``_escape``
    with one argument and no escaping schemes; 0.20 and 0.21 have none of
    them: the line encoder is off there, the library's encoders are used.
``values.ValueClass``, ``values.MutexValue``
    0.20-0.26.  Whether metrics made now keep their values in memory, not
    in multiprocess files (:func:`values_are_local`): the line encoder's
    probe makes metrics only then.
"""

from __future__ import annotations

import importlib.metadata

from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import CollectorRegistry, Gauge, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.samples import Sample


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import ModuleType


__all__ = [
    "LINE_ENCODING",
    "VERSION",
    "Escapers",
    "LazyMetric",
    "child",
    "has_stock_samples",
    "lazy_metric",
    "line_encoding",
    "metric_name",
    "needs_label_values",
    "registry_contents",
    "series",
    "series_samples",
    "unbound_label_names",
    "values_are_local",
]


def _version() -> str:
    try:
        return importlib.metadata.version("prometheus_client")
    except importlib.metadata.PackageNotFoundError:  # Imported from a copy.
        return "(version unknown)"


#: The installed ``prometheus_client``'s version, for the reasons given.
VERSION = _version()

_OM = "prometheus_client.openmetrics.exposition"
_SAMPLE_FIELDS = (
    "name",
    "labels",
    "value",
    "timestamp",
    "exemplar",
    "native_histogram",
)


def unbound_label_names(metric: object) -> tuple[str, ...] | None:
    """
    The label names still to be bound on a ``prometheus_client`` metric.

    Returns:
        The metric's label names when they are not bound yet; ``()`` when
        the metric has none or is a child with its values bound;
        :data:`None` for an object that is not such a metric.
    """
    names = getattr(metric, "_labelnames", None)
    if not isinstance(names, tuple):
        return None
    if getattr(metric, "_labelvalues", ()):
        return ()
    return names


def needs_label_values(metric: Any) -> bool:
    """
    Whether *metric*, of a class whose instances
    :func:`unbound_label_names` read before, still has label names to bind:
    the same answer, for the wrappers' per-call path, in fewer steps.
    """
    return bool(metric._labelnames) and not metric._labelvalues  # noqa: SLF001


def child(metric: Any, labelvalues: tuple[str, ...]) -> Any:
    """
    ``metric.labels(*labelvalues)``, without its checks when the child
    exists already.
    """
    children = getattr(metric, "_metrics", None)
    found = children.get(labelvalues) if isinstance(children, dict) else None
    return metric.labels(*labelvalues) if found is None else found


def registry_contents(
    registry: CollectorRegistry,
) -> tuple[list[Any], Any] | None:
    """
    The collectors of *registry* and its target info family, as its
    ``collect()`` would read them, or :data:`None` when it cannot tell.

    :data:`None` when ``collect()`` is overridden or an internal is missing:
    then only ``registry.collect()`` knows what it yields.
    """
    if type(registry).collect is not CollectorRegistry.collect:
        return None
    lock = getattr(registry, "_lock", None)
    collector_to_names = getattr(registry, "_collector_to_names", None)
    target_info_metric = getattr(registry, "_target_info_metric", None)
    if (
        lock is None
        or not isinstance(collector_to_names, dict)
        or not hasattr(registry, "_target_info")
        or not callable(target_info_metric)
    ):
        return None
    with lock:
        collectors = list(collector_to_names)
        target_info = (
            target_info_metric() if registry._target_info else None  # noqa: SLF001
        )
    return collectors, target_info


class LazyMetric(NamedTuple):
    """
    A stock metric's family, its samples still to be produced.

    Attributes:
        family: The family without its samples (name, documentation, type,
            unit).
        prefix: What each sample's name starts with.
        samples: Produces the samples, their names without *prefix*.
    """

    family: Any
    prefix: str
    samples: Callable[[], Iterable[Sample]]


def lazy_metric(collector: object) -> LazyMetric | None:
    """
    What ``collector.collect()`` would return, its samples still to come.

    :data:`None` unless *collector* is a ``prometheus_client`` metric whose
    ``collect()`` is the stock one and whose internals are there.
    """
    # As in has_stock_samples, no isinstance() check.
    if getattr(type(collector), "collect", None) is not (
        MetricWrapperBase.collect
    ):
        return None
    name = getattr(collector, "_name", None)
    get_metric = getattr(collector, "_get_metric", None)
    produce = getattr(collector, "_samples", None)
    if not isinstance(name, str) or get_metric is None or produce is None:
        return None
    return LazyMetric(get_metric(), name, produce)


_STOCK_SAMPLES = getattr(MetricWrapperBase, "_samples", None)
_STOCK_MULTI_SAMPLES = getattr(MetricWrapperBase, "_multi_samples", None)


def has_stock_samples(metric: object) -> bool:
    """
    Whether *metric* is a ``prometheus_client`` metric whose samples are
    those of its series, as the stock classes produce them.
    """
    # Only MetricWrapperBase and its subclasses have its methods (and an
    # isinstance() check of it, a Protocol, is slow).
    kind = type(metric)
    return (
        _STOCK_SAMPLES is not None
        and getattr(kind, "_samples", None) is _STOCK_SAMPLES
        and getattr(kind, "_multi_samples", None) is _STOCK_MULTI_SAMPLES
    )


def series(metric: Any) -> tuple[dict[tuple[str, ...], Any], tuple[str, ...]]:
    """
    The series of a stock metric by their label values, and its label
    names: its children, or the metric itself when it has no labels.

    Raises:
        Exception: When an internal is missing (the line encoder then
            leaves the family to the library).
    """
    if metric._is_parent():  # noqa: SLF001
        with metric._lock:  # noqa: SLF001
            children: dict[tuple[str, ...], Any] = metric._metrics.copy()  # noqa: SLF001
        return children, tuple(metric._labelnames)  # noqa: SLF001
    return {(): metric}, ()


def metric_name(metric: Any) -> str:
    """
    What the names of *metric*'s samples start with.
    """
    return str(metric._name)  # noqa: SLF001


def series_samples(
    children: dict[tuple[str, ...], Any],
) -> Iterator[tuple[tuple[str, ...], tuple[Sample, ...]]]:
    """
    Each series of :func:`series` with its samples, their names without
    the metric's name: what ``child._samples()`` returns, since
    ``MetricWrapperBase._samples`` is stock and a child is never a parent.

    Raises:
        Exception: When the internal is missing (the line encoder then
            leaves the family to the library).
    """
    # The method is looked up on each child: Gauge.set_function() sets it
    # on the instance.
    for labelvalues, child in children.items():
        yield labelvalues, tuple(child._child_samples())  # noqa: SLF001


class Escapers(NamedTuple):
    """
    The OpenMetrics encoder's helpers that both of the library's encoders
    use to escape names and values.

    Attributes:
        escape: ``_escape(text, escaping, rune)``.
        labelname_rune: ``_is_legacy_labelname_rune(char, index)``.
        valid_metric_name: ``_is_valid_legacy_metric_name(name)``.
        compose_exemplar: ``_compose_exemplar_string(family, sample,
            exemplar)``.
        escape_metric_name: ``escape_metric_name(name, escaping)``.
        escape_label_name: ``escape_label_name(name, escaping)``.
        allow_utf8: The ``allow-utf-8`` escaping's name.
        underscores: The ``underscores`` escaping's name (the default).
    """

    escape: Callable[[str, str, Callable[[str, int], bool]], str]
    labelname_rune: Callable[[str, int], bool]
    valid_metric_name: Callable[[str], bool]
    compose_exemplar: Callable[[Any, Sample, Any], str]
    escape_metric_name: Callable[[str, str], str]
    escape_label_name: Callable[[str, str], str]
    allow_utf8: str
    underscores: str


_ESCAPERS = {
    "escape": "_escape",
    "labelname_rune": "_is_legacy_labelname_rune",
    "valid_metric_name": "_is_valid_legacy_metric_name",
    "compose_exemplar": "_compose_exemplar_string",
    "escape_metric_name": "escape_metric_name",
    "escape_label_name": "escape_label_name",
    "allow_utf8": "ALLOWUTF8",
    "underscores": "UNDERSCORES",
}


def line_encoding(
    openmetrics: ModuleType = om_exposition,
    sample: type[tuple[Any, ...]] = Sample,
) -> Escapers | str:
    """
    What the line encoder needs, or the reason it cannot be used.

    Args:
        openmetrics: The OpenMetrics exposition module to take the
            escaping helpers from.
        sample: The sample class, whose fields the line encoder unpacks.

    Returns:
        The escaping helpers; or, when anything the line encoder reads is
        missing, a sentence that names it.
    """
    found: dict[str, Any] = {}
    for field, name in _ESCAPERS.items():
        value = getattr(openmetrics, name, None)
        expected = str if field in {"allow_utf8", "underscores"} else None
        if value is None or (
            not isinstance(value, str) if expected else not callable(value)
        ):
            return f"{_OM}.{name} is missing"
        found[field] = value
    fields = getattr(sample, "_fields", ())
    if tuple(fields) != _SAMPLE_FIELDS:
        return (
            f"prometheus_client.samples.Sample has the fields {fields!r}, "
            f"not {_SAMPLE_FIELDS!r}"
        )
    missing = _missing_metric_internals()
    if missing is not None:
        return missing
    return Escapers(**found)


def _missing_metric_internals() -> str | None:
    """
    The first method of the stock metrics that is missing.

    Their instance attributes (``_lock``, ``_metrics``, ...) are proven by
    the line encoder's probe, which makes metrics (not done at import).
    """
    for name in ("_is_parent", "_child_samples", "_get_metric"):
        if not callable(getattr(Gauge, name, None)):
            return f"MetricWrapperBase.{name} is missing"
    if _STOCK_SAMPLES is None or _STOCK_MULTI_SAMPLES is None:
        return "MetricWrapperBase._samples or ._multi_samples is missing"
    return None


def values_are_local() -> bool:
    """
    Whether new metrics keep their values in this process's memory.

    Not so in multiprocess mode: a metric made then (the line encoder's
    probe) would be written to ``PROMETHEUS_MULTIPROC_DIR`` and exposed.
    """
    return getattr(values, "ValueClass", None) is getattr(
        values, "MutexValue", object()
    )


#: The escaping helpers the line encoder uses, or why it cannot be used
#: with the installed ``prometheus_client``.
LINE_ENCODING: Escapers | str = line_encoding()
