"""
Registries of a chosen size for the benchmarks.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


__all__ = ["build_registry", "sample_count"]

# A histogram child with the default buckets exposes 15 buckets, _count,
# _sum and _created in the text format.
_HISTOGRAM_SAMPLES = 18


def build_registry(
    samples: int, registry: CollectorRegistry | None = None
) -> CollectorRegistry:
    """
    A registry of about *samples* text-format samples.

    Four tenths are gauges, three tenths counters (``_total`` and
    ``_created`` each) and three tenths histograms with the default buckets,
    all labelled like a busy HTTP service's metrics.  They go into
    *registry* when given (e.g. the global one), else into a new registry.
    """
    if registry is None:
        registry = CollectorRegistry()
    gauges = Gauge(
        "app_queue_depth",
        "Items waiting per queue.",
        ["queue", "shard"],
        registry=registry,
    )
    counters = Counter(
        "app_requests",
        "Requests handled.",
        ["route", "method", "status"],
        registry=registry,
    )
    histograms = Histogram(
        "app_request_duration_seconds",
        "Time to handle a request.",
        ["route", "method"],
        registry=registry,
    )
    for i in range(samples * 4 // 10):
        gauges.labels(f"queue-{i % 97}", str(i)).set(i * 1.5)
    for i in range(samples * 3 // 10 // 2):
        counters.labels(f"/api/v1/items/{i}", "GET", "200").inc(i)
    for i in range(samples * 3 // 10 // _HISTOGRAM_SAMPLES):
        child = histograms.labels(f"/api/v1/items/{i}", "POST")
        child.observe(0.003 * (i % 50))
        child.observe(1.7)
    return registry


def sample_count(registry: CollectorRegistry) -> int:
    """
    How many samples the text format exposes for *registry*.
    """
    return sum(
        1
        for line in generate_latest(registry).splitlines()
        if not line.startswith(b"#")
    )
