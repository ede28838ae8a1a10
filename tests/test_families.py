"""
Families created for the user are shared per registry.
"""

from __future__ import annotations

import pytest

from prometheus_client import CollectorRegistry, Gauge, Histogram

from prom_async.aio._families import family


class TestFamily:
    def test_second_request_gets_the_first_family(self, registry):
        """Asking twice gives the same metric, registered once."""
        first = family(
            Histogram, "seconds", "S.", ["route"], registry=registry
        )
        second = family(
            Histogram, "seconds", "S.", ["route"], registry=registry
        )

        assert first is second
        assert 1 == len([m for m in registry.collect() if m.name == "seconds"])

    def test_registries_and_namespaces_are_apart(self, registry):
        """Another registry or namespace gets a family of its own."""
        other = CollectorRegistry()
        one = family(Gauge, "active", "A.", [], registry=registry)

        assert one is not family(Gauge, "active", "A.", [], registry=other)
        assert one is not family(
            Gauge, "active", "A.", [], registry=registry, namespace="app"
        )
        assert 0.0 == registry.get_sample_value("app_active")

    def test_another_shape_is_a_clear_error(self, registry):
        """The same name with other labels, kind or options is refused."""
        family(Histogram, "seconds", "S.", ["route"], registry=registry)

        with pytest.raises(ValueError, match="label names"):
            family(Histogram, "seconds", "S.", ["path"], registry=registry)
        with pytest.raises(ValueError, match="Gauge"):
            family(Gauge, "seconds", "S.", ["route"], registry=registry)
        with pytest.raises(ValueError, match="options"):
            family(
                Histogram,
                "seconds",
                "S.",
                ["route"],
                registry=registry,
                buckets=(1.0,),
            )
