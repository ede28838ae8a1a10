"""
Exemplars: the trace an observation belongs to, attached to its sample.

An exemplar is a small set of labels (``trace_id``, ``span_id``) that
Prometheus keeps beside a histogram bucket, linking a latency to the trace
that shows why. The current trace comes from OpenTelemetry when its API (the
``otel`` extra) is installed and a sampled span is current; anything else
may be passed as a callable.

Exemplars go to prometheus_client's histograms (and their children); other
observers are observed without. Observing never fails because of an
exemplar: one that OpenMetrics would refuse (a label name that is not one,
its labels over 128 characters) is left out, and so are all of them in
prometheus_client's multiprocess mode, which cannot store them (a warning
says so, once).
"""

from __future__ import annotations

import functools
import logging
import os
import re

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram


if TYPE_CHECKING:
    from ..types import ExemplarSource


__all__ = [
    "WithExemplars",
    "current_trace",
    "exemplar_source",
    "observe",
]

log = logging.getLogger(__name__)

# OpenMetrics: the combined length of an exemplar's label names and values,
# and what a label name is.
_MAX_RUNES = 128
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_multiprocess_warned = False


def current_trace() -> dict[str, str] | None:
    """
    The ``trace_id`` and ``span_id`` of OpenTelemetry's current span, in
    the W3C hex form, when it is sampled; otherwise None (also when the
    OpenTelemetry API is not installed).
    """
    trace = _opentelemetry_trace()
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


@functools.cache
def _opentelemetry_trace() -> Any:
    """
    ``opentelemetry.trace``, imported once, or None without the API.
    """
    try:
        from opentelemetry import trace  # noqa: PLC0415 -- optional extra
    except ImportError:
        return None
    return trace


def exemplar_source(
    exemplar: bool | ExemplarSource | None,
) -> ExemplarSource | None:
    """
    What an ``exemplar=`` option means: True for :func:`current_trace`, a
    callable for itself, False or None for none.

    Raises:
        TypeError: *exemplar* is none of those.
    """
    if exemplar is None or exemplar is False:
        return None
    if exemplar is True:
        return current_trace
    if not callable(exemplar):
        raise TypeError(
            "exemplar= takes True (the current OpenTelemetry trace), a "
            f"callable that returns exemplar labels, or None; got {exemplar!r}"
        )
    return exemplar


def observe(metric: Any, value: float, source: ExemplarSource) -> None:
    """
    ``metric.observe(value)``, with the exemplar from *source* when there is
    one that can be kept.
    """
    if not isinstance(metric, Histogram):
        metric.observe(value)
        return
    try:
        labels = source()
        exemplar = _keepable(labels) if labels else None
    except Exception:
        log.debug("the exemplar source %r raised", source, exc_info=True)
        exemplar = None
    if exemplar is None:
        metric.observe(value)
        return
    try:
        metric.observe(value, exemplar)
    except ValueError:  # Checked after the value went in: only it is lost.
        log.debug("exemplar %r refused by %r", exemplar, metric)


class WithExemplars:
    """
    Observes into *metric* with an exemplar from *source*.
    """

    __slots__ = ("_metric", "_source")

    def __init__(self, metric: Any, source: ExemplarSource) -> None:
        self._metric = metric
        self._source = source

    def observe(self, value: float, /) -> None:
        observe(self._metric, value, self._source)


def _keepable(labels: Mapping[str, str]) -> dict[str, str] | None:
    global _multiprocess_warned  # noqa: PLW0603 -- one warning a process
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        if not _multiprocess_warned:
            _multiprocess_warned = True
            log.warning(
                "prometheus_client's multiprocess mode keeps no exemplars: "
                "they are dropped"
            )
        return None
    kept = {str(name): str(value) for name, value in labels.items()}
    if not all(_LABEL_NAME.fullmatch(name) for name in kept):
        log.debug("exemplar %r has an invalid label name: left out", kept)
        return None
    if sum(len(name) + len(value) for name, value in kept.items()) > (
        _MAX_RUNES
    ):
        log.debug("exemplar %r is over 128 characters: left out", kept)
        return None
    return kept
