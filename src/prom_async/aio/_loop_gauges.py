"""
Gauges read when the registry is collected, from the collecting thread.

The event loop's health is reported by whoever scrapes, not by the loop:
a loop that is stuck cannot update a gauge, but the exporter's thread can
still read the timestamp the loop last wrote and say how long ago that was.
"""

from __future__ import annotations

import threading

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


__all__ = ["ScrapeTimeGauge"]

#: Reads one sample's value; ``None`` leaves the sample out.
Reading = Callable[[], "float | None"]


class ScrapeTimeGauge(Collector):
    """
    A gauge with one sample per reading added, each read at collection.

    Its constructor takes the arguments prometheus_client's metrics take,
    so :func:`~prom_async.aio._families.family` can share it per registry.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        namespace: str = "",
        registry: CollectorRegistry,
    ) -> None:
        self._name = f"{namespace}_{name}" if namespace else name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        # Replaced whole under the lock, read without it: collection never
        # waits for the loop's thread.
        self._readings: dict[tuple[str, ...], Reading] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def claim(
        self, labelvalues: tuple[str, ...], reading: Reading
    ) -> object | None:
        """
        Report *reading*'s value under *labelvalues* from now on, unless
        another reading there still gives a value: return its owner then.
        """
        with self._lock:
            current = self._readings.get(labelvalues)
            if current is not None and current() is not None:
                return getattr(current, "__self__", current)
            self._readings = {**self._readings, labelvalues: reading}
            return None

    def add(self, labelvalues: tuple[str, ...], reading: Reading) -> None:
        """
        Report *reading*'s value under *labelvalues* from now on.
        """
        with self._lock:
            self._readings = {**self._readings, labelvalues: reading}

    def remove(self, labelvalues: tuple[str, ...], reading: Reading) -> None:
        """
        Stop reporting *reading*, if it is still the one under
        *labelvalues*.
        """
        with self._lock:
            if self._readings.get(labelvalues) == reading:
                readings = dict(self._readings)
                del readings[labelvalues]
                self._readings = readings

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            self._name, self._documentation, labels=self._labelnames
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            self._name, self._documentation, labels=self._labelnames
        )
        for labelvalues, reading in self._readings.items():
            value = reading()
            if value is not None:
                gauge.add_metric(labelvalues, value)
        yield gauge
