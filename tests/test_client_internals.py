"""
The prometheus_client internals that the wrappers and the HTTP client
tracer read, through the one module that reads them.
"""

from __future__ import annotations

import types

from prometheus_client import Counter, Gauge

from prom_async.aio._client_internals import child, needs_label_values


class TestNeedsLabelValues:
    def test_parent_with_label_names(self):
        """A labelled parent needs values; its child and a plain one do not."""
        labelled = Gauge("queue", "Queue.", ["name"], registry=None)
        plain = Gauge("depth", "Depth.", registry=None)

        assert [True, False, False] == [
            needs_label_values(labelled),
            needs_label_values(labelled.labels("a")),
            needs_label_values(plain),
        ]


class TestChild:
    def test_existing_and_new_children(self):
        """An existing child is found; a new one is made by labels()."""
        counter = Counter("hits", "Hits.", ["path"], registry=None)
        first = child(counter, ("/a",))

        assert first is child(counter, ("/a",))
        assert first is counter.labels("/a")

    def test_anything_with_labels(self):
        """An object without prometheus_client's children uses labels()."""
        made = []
        other = types.SimpleNamespace(labels=lambda *v: made.append(v) or v)

        assert ("x",) == child(other, ("x",))
        assert [("x",)] == made
