"""
Helpers for testing your instrumentation.

- :func:`capture_metrics`: what a block of code changed in a registry, to
  query (:meth:`MetricChanges.value`) and assert on
  (:meth:`MetricChanges.assert_changed`), with failure messages that show
  the whole family before and after;
- :func:`assert_sample`: one sample's value, with the family's samples
  listed when it is wrong;
- :func:`fresh_registry`: an empty registry that behaves like the global
  one;
- :func:`parse_exposition`, :func:`assert_exposition`: what a scrape
  returned, parsed and compared with what it should, in any order;
- :func:`lint_exposition`: what ``promtool check metrics`` says of it.

None of them needs pytest or aiohttp. With pytest, prom_async's plugin adds
the fixtures ``prom_registry`` and ``metric_changes``.

.. versionadded:: 0.2.0
"""

from ._testing_changes import MetricChanges, SampleChange, capture_metrics
from ._testing_exposition import (
    assert_exposition,
    lint_exposition,
    parse_exposition,
)
from ._testing_samples import assert_sample, fresh_registry


__all__ = [
    "MetricChanges",
    "SampleChange",
    "assert_exposition",
    "assert_sample",
    "capture_metrics",
    "fresh_registry",
    "lint_exposition",
    "parse_exposition",
]
