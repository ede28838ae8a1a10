"""
What the options of ``client_trace_config()`` mean, checked once when the
trace config is made.

They mean what the server middleware's options of the same names mean.
"""

from __future__ import annotations

import math
import os

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Histogram

from . import _exemplars
from ._http_server import DEFAULT_KNOWN_METHODS


if TYPE_CHECKING:
    from ..types import ExemplarSource


__all__ = ["buckets", "exemplar_source", "known_methods", "label_limit"]

_KNOWN_METHODS_ENV = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"


def known_methods(given: Iterable[str] | None) -> frozenset[str]:
    """
    The methods recorded as themselves, upper-cased as aiohttp sends them:
    *given*, or those of ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS``
    (comma-separated), or the default ones.

    Raises:
        TypeError: *given* is a string, or holds something else.
    """
    if given is None:
        configured = os.environ.get(_KNOWN_METHODS_ENV)
        if configured is None:
            return DEFAULT_KNOWN_METHODS
        given = [method.strip() for method in configured.split(",")]
    value: object = given
    if isinstance(value, str):
        raise TypeError(
            f"known_methods= takes a collection of methods, like ({value!r},)"
        )
    methods: list[object] = list(given)
    wrong = [method for method in methods if not isinstance(method, str)]
    if wrong:
        raise TypeError(f"known_methods= takes strings, not {wrong[0]!r}")
    return frozenset(str(method).upper() for method in methods if method)


def buckets(given: Sequence[float] | None) -> tuple[float, ...]:
    """
    *given* (or the default buckets) as prometheus_client keeps them, so
    equal buckets given in another form share a family.

    Raises:
        TypeError: *given* is not a sequence of numbers.
    """
    if given is None:
        return tuple(Histogram.DEFAULT_BUCKETS)
    try:
        bounds = tuple(float(bound) for bound in given)
    except (TypeError, ValueError):
        raise TypeError(
            f"buckets= takes a sequence of numbers, not {given!r}"
        ) from None
    if not bounds or bounds[-1] != math.inf:
        bounds = (*bounds, math.inf)
    return bounds


def exemplar_source(
    exemplar: bool | ExemplarSource | None,
) -> ExemplarSource | None:
    """
    What ``exemplar=`` means: True only when the OpenTelemetry API is there
    to ask, so that without it no request pays for the question.

    Raises:
        TypeError: *exemplar* is not True, False, None or a callable.
    """
    if exemplar is True:
        try:
            import opentelemetry.trace  # noqa: F401, PLC0415 -- optional
        except ImportError:
            return None
    return _exemplars.exemplar_source(exemplar)


def label_limit(given: int) -> int:
    """
    *given*, checked: how many distinct values a bounded label keeps.

    Raises:
        ValueError: *given* is negative.
        TypeError: *given* is not an int.
    """
    value: object = given
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_label_values= takes an int, not {value!r}")
    if given < 0:
        raise ValueError(f"max_label_values= must be 0 or more, not {given}")
    return given
