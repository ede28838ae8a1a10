"""
prom_async's pytest plugin (entry point ``pytest11``, name ``prom_async``):
the fixtures of :mod:`prom_async.testing`.

It imports prom_async.testing only when a test asks for a fixture, so that
loading it costs every other test run nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest


if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client import CollectorRegistry

    from .testing import MetricChanges


__all__ = ["metric_changes", "prom_registry"]


@pytest.fixture
def prom_registry() -> CollectorRegistry:
    """
    A new, empty registry per test, that behaves like the global one (see
    :func:`prom_async.testing.fresh_registry`).
    """
    from .testing import fresh_registry  # noqa: PLC0415 -- see the module

    return fresh_registry()


@pytest.fixture
def metric_changes() -> Iterator[MetricChanges]:
    """
    What the test changes in the global registry (see
    :func:`prom_async.testing.capture_metrics`), captured from before the
    test to its end.
    """
    from .testing import capture_metrics  # noqa: PLC0415 -- see the module

    with capture_metrics() as changes:
        yield changes
