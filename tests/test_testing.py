from __future__ import annotations

import gc
import math
import re
import subprocess
import sys

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.openmetrics.exposition import (
    generate_latest as generate_openmetrics,
)

from prom_async.aio.web import add_metrics_route
from prom_async.testing import (
    SampleChange,
    assert_exposition,
    assert_sample,
    capture_metrics,
    fresh_registry,
    lint_exposition,
    parse_exposition,
)


pytest_plugins = ["pytester"]

DOCS = Path(__file__).parent.parent / "docs"
PLUGIN = "prom_async._pytest_plugin"
#: Load the plugin by hand unless the installed distribution's pytest11
#: entry point already does.
#: The inner runs need no asyncio plugin (unconfigured there, it warns).
PLUGIN_ARGS = (
    ["-p", "no:asyncio"]
    if any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    else ["-p", "no:asyncio", "-p", PLUGIN]
)


@pytest.fixture
def orders(registry):
    """
    A labelled counter in the test's registry, one order already placed.
    """
    counter = Counter(
        "orders", "Orders placed.", ["item", "shop"], registry=registry
    )
    counter.labels("food", "north").inc()
    return counter


class QueueCollector:
    """
    A custom collector without describe(): one gauge.
    """

    def collect(self):
        yield GaugeMetricFamily("queue_length", "Orders waiting.", 3)


class TestCaptureMetrics:
    def test_changes_inside_the_block(self, registry, orders):
        """value() is the change from the block's start until its end."""
        with capture_metrics(registry) as changes:
            orders.labels("food", "north").inc(2)
        orders.labels("food", "north").inc(5)

        assert 2.0 == changes.value("orders_total", item="food")

    def test_changes_so_far_inside_the_block(self, registry, orders):
        """Inside the block, value() answers with the changes so far."""
        with capture_metrics(registry) as changes:
            orders.labels("food", "north").inc()
            so_far = changes.value("orders_total")
            orders.labels("food", "north").inc()

        assert (1.0, 2.0) == (so_far, changes.value("orders_total"))

    def test_block_that_raises(self, registry, orders):
        """A block that raises ends the capture too."""
        with (
            pytest.raises(ValueError, match="boom"),
            capture_metrics(registry) as changes,
        ):
            orders.labels("toy", "north").inc()
            raise ValueError("boom")
        orders.labels("toy", "north").inc()

        assert 1.0 == changes.value("orders_total", item="toy")

    def test_global_registry_by_default(self):
        """Without a registry, the global one is captured."""
        counter = Counter("test_testing_global", "Global.")
        try:
            with capture_metrics() as changes:
                counter.inc()
        finally:
            REGISTRY.unregister(counter)

        assert 1.0 == changes.value("test_testing_global_total")

    def test_before_the_block(self, registry, orders):
        """Asking before the block starts is a RuntimeError."""
        changes = capture_metrics(registry)

        with pytest.raises(RuntimeError, match="with capture_metrics"):
            changes.value("orders_total")


class TestValue:
    def test_labels_are_a_subset(self, registry, orders):
        """Samples whose labels include those given are added up."""
        with capture_metrics(registry) as changes:
            orders.labels("food", "north").inc()
            orders.labels("food", "south").inc(2)
            orders.labels("toy", "south").inc(4)

        assert (7.0, 3.0, 6.0, 2.0) == (
            changes.value("orders_total"),
            changes.value("orders_total", item="food"),
            changes.value("orders_total", shop="south"),
            changes.value("orders_total", item="food", shop="south"),
        )

    def test_labels_never_used(self, registry):
        """A labelled metric with no children changed by 0."""
        Counter("errors", "Errors.", ["kind"], registry=registry)

        with capture_metrics(registry) as changes:
            pass

        assert 0.0 == changes.value("errors_total", kind="timeout")

    def test_metric_created_in_block(self, registry):
        """A metric registered inside the block counts from 0."""
        with capture_metrics(registry) as changes:
            Counter("late", "Late.", registry=registry).inc(3)

        assert 3.0 == changes.value("late_total")

    def test_gauge_delta(self, registry):
        """A gauge's value() is its change, not its value."""
        gauge = Gauge("stock", "Stock.", registry=registry)
        gauge.set(10)

        with capture_metrics(registry) as changes:
            gauge.set(4)

        assert -6.0 == changes.value("stock")

    def test_histogram_samples(self, registry):
        """A histogram's _count, _sum and one bucket each have a change."""
        histogram = Histogram(
            "latency_seconds",
            "Latency.",
            buckets=(0.1, 1.0),
            registry=registry,
        )

        with capture_metrics(registry) as changes:
            histogram.observe(0.1)
            histogram.observe(0.2)

        assert (2.0, 0.3, 1.0, 2.0) == (
            changes.value("latency_seconds_count"),
            pytest.approx(changes.value("latency_seconds_sum")),
            changes.value("latency_seconds_bucket", le="0.1"),
            changes.value("latency_seconds_bucket", le="+Inf"),
        )

    @pytest.mark.parametrize(
        ("kind", "sample", "label"),
        [
            (Histogram, "latency_seconds_bucket", "le"),
            (Summary, "latency_seconds", "quantile"),
        ],
    )
    def test_buckets_not_added_up(self, registry, kind, sample, label):
        """Adding up buckets (or quantiles) is refused."""
        metric = kind("latency_seconds", "Latency.", registry=registry)
        if kind is Summary:
            # prometheus_client's Summary has no quantiles: fake two.
            registry.unregister(metric)
            registry.register(TwoQuantiles())

        with capture_metrics(registry) as changes:
            pass

        with pytest.raises(ValueError, match=f"a sample per '{label}'"):
            changes.value(sample)

    def test_typo(self, registry, orders):
        """A name no metric has raises LookupError listing those it has."""
        with capture_metrics(registry) as changes:
            pass

        with pytest.raises(LookupError) as raised:
            changes.value("order_total")

        assert (
            "no metric has a sample named 'order_total'; the registry has: "
            "orders_created, orders_total"
        ) == str(raised.value)

    def test_typo_in_empty_registry(self, registry):
        """The LookupError of an empty registry says it is empty."""
        with capture_metrics(registry) as changes:
            pass

        with pytest.raises(LookupError, match=r"has: \(nothing\)$"):
            changes.value("orders_total")

    def test_label_called_name(self, registry):
        """The name is positional-only: a label may be called name."""
        counter = Counter("hits", "Hits.", ["name"], registry=registry)

        with capture_metrics(registry) as changes:
            counter.labels("x").inc()

        assert 1.0 == changes.value("hits_total", name="x")


class TwoQuantiles:
    """
    A summary with two quantiles, as other clients expose them.
    """

    def collect(self):
        family = SummaryMetricFamily("latency_seconds", "Latency.")
        family.add_sample("latency_seconds", {"quantile": "0.5"}, 0.1)
        family.add_sample("latency_seconds", {"quantile": "0.9"}, 0.4)
        yield family


class TestBeforeAfter:
    def test_raw_values(self, registry):
        """before() and after() are the values at each end of the block."""
        gauge = Gauge("stock", "Stock.", registry=registry)
        gauge.set(10)

        with capture_metrics(registry) as changes:
            gauge.set(4)

        assert (10.0, 4.0) == (changes.before("stock"), changes.after("stock"))

    def test_absent(self, registry, orders):
        """A sample that did not exist is None."""
        with capture_metrics(registry) as changes:
            orders.labels("toy", "north").inc()

        assert (None, 1.0) == (
            changes.before("orders_total", item="toy"),
            changes.after("orders_total", item="toy"),
        )

    def test_after_inside_the_block(self, registry):
        """Inside the block, after() is the value now."""
        gauge = Gauge("in_progress", "In progress.", registry=registry)

        with capture_metrics(registry) as changes:
            gauge.inc()
            during = changes.after("in_progress")
            gauge.dec()

        assert (1.0, 0.0) == (during, changes.after("in_progress"))


class TestChanged:
    def test_lists_changed_samples(self, registry, orders):
        """changed() lists each changed sample, sorted, with both values."""
        gauge = Gauge("stock", "Stock.", registry=registry)
        gauge.set(3)

        with capture_metrics(registry) as changes:
            orders.labels("toy", "south").inc()
            orders.labels("food", "north").inc()
            orders.labels("food", "south")
            gauge.set(3)

        assert [
            SampleChange(
                "orders_total", {"item": "food", "shop": "north"}, 1.0, 2.0
            ),
            SampleChange(
                "orders_total", {"item": "toy", "shop": "south"}, None, 1.0
            ),
        ] == changes.changed()

    def test_removed_sample(self, registry, orders):
        """A sample that went away changed by minus its value."""
        with capture_metrics(registry) as changes:
            orders.remove("food", "north")

        assert [-1.0] == [change.delta for change in changes.changed()]

    def test_default_collectors_left_out(self):
        """The process, GC and platform collectors' families are left out
        of changed(), and value() still answers for them."""
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)

        with capture_metrics(registry) as changes:
            garbage = [[] for _ in range(10_000)]
            garbage.append(garbage)
            del garbage
            gc.collect()

        assert [] == changes.changed()
        assert changes.value("python_gc_collections_total", generation="2") > 0

    def test_nan_unchanged(self, registry):
        """A gauge that stays NaN did not change."""
        gauge = Gauge("ratio", "Ratio.", registry=registry)
        gauge.set(math.nan)

        with capture_metrics(registry) as changes:
            gauge.set(math.nan)

        assert [] == changes.changed()

    def test_nan_set(self, registry):
        """A gauge that becomes NaN changed."""
        gauge = Gauge("ratio", "Ratio.", registry=registry)

        with capture_metrics(registry) as changes:
            gauge.set(math.nan)

        assert ["ratio"] == [change.name for change in changes.changed()]


class TestAssertChanged:
    def test_any_change(self, registry, orders):
        """Without by, any change passes."""
        with capture_metrics(registry) as changes:
            orders.labels("food", "north").inc(0.5)

        changes.assert_changed("orders_total", item="food")

    def test_no_change(self, registry, orders):
        """Without by, no change fails, showing the family."""
        with capture_metrics(registry) as changes:
            pass

        with pytest.raises(AssertionError) as raised:
            changes.assert_changed("orders_total", item="food")

        assert (
            'expected orders_total{item="food"} to change, but it changed by '
            "0.0\n"
            "orders (counter) before:\n"
            '  orders_total{item="food",shop="north"} 1.0\n'
            "orders (counter) after:\n"
            '  orders_total{item="food",shop="north"} 1.0'
        ) == str(raised.value)

    def test_by(self, registry, orders):
        """With by, the change must be that, up to float rounding."""
        histogram = Histogram("size", "Size.", registry=registry)

        with capture_metrics(registry) as changes:
            histogram.observe(0.1)
            histogram.observe(0.2)

        changes.assert_changed("size_sum", by=0.3)

    def test_by_other_amount(self, registry, orders):
        """A change by another amount fails, with the family before and
        after."""
        with capture_metrics(registry) as changes:
            orders.labels("food", "south").inc(2)

        with pytest.raises(AssertionError) as raised:
            changes.assert_changed("orders_total", by=1, shop="south")

        assert (
            'expected orders_total{shop="south"} to change by 1, but it '
            "changed by 2.0\n"
            "orders (counter) before:\n"
            '  orders_total{item="food",shop="north"} 1.0\n'
            "orders (counter) after:\n"
            '  orders_total{item="food",shop="north"} 1.0\n'
            '  orders_total{item="food",shop="south"} 2.0'
        ) == str(raised.value)

    def test_metric_registered_in_block(self, registry):
        """A family that did not exist before is shown as not registered."""
        with capture_metrics(registry) as changes:
            Counter("late", "Late.", registry=registry).inc()

        with pytest.raises(AssertionError) as raised:
            changes.assert_changed("late_total", by=2)

        assert str(raised.value).endswith(
            "before: (not registered)\nlate (counter) after:\n  late_total 1.0"
        )

    def test_family_without_samples(self, registry):
        """A family without samples is shown as such."""
        Counter("errors", "Errors.", ["kind"], registry=registry)

        with capture_metrics(registry) as changes:
            pass

        with pytest.raises(AssertionError) as raised:
            changes.assert_changed("errors_total")

        assert str(raised.value).endswith(
            "errors (counter) after:\n  (no samples)"
        )

    def test_label_values_escaped(self, registry):
        """Label values are shown escaped, as in an exposition."""
        counter = Counter("paths", "Paths.", ["path"], registry=registry)

        with capture_metrics(registry) as changes:
            pass

        with pytest.raises(AssertionError) as raised:
            changes.assert_changed("paths_total", path='a"b\\c\nd')

        assert str(raised.value).startswith(
            'expected paths_total{path="a\\"b\\\\c\\nd"} to change'
        )
        assert counter is not None


class TestAssertUnchanged:
    def test_unchanged(self, registry, orders):
        """A sample that did not change passes."""
        with capture_metrics(registry) as changes:
            orders.labels("toy", "north").inc()

        changes.assert_unchanged("orders_total", item="food")

    def test_changed(self, registry, orders):
        """A sample that changed fails, showing the family."""
        with capture_metrics(registry) as changes:
            orders.labels("food", "north").inc()

        with pytest.raises(AssertionError) as raised:
            changes.assert_unchanged("orders_total")

        assert (
            "expected orders_total unchanged, but it changed by 1.0\n"
            "orders (counter) before:\n"
            '  orders_total{item="food",shop="north"} 1.0\n'
            "orders (counter) after:\n"
            '  orders_total{item="food",shop="north"} 2.0'
        ) == str(raised.value)

    def test_nothing_changed(self, registry, orders):
        """Without a name, passes if no sample changed."""
        with capture_metrics(registry) as changes:
            orders.labels("toy", "north")

        changes.assert_unchanged()

    def test_something_changed(self, registry, orders):
        """Without a name, fails listing every change."""
        gauge = Gauge("stock", "Stock.", registry=registry)

        with capture_metrics(registry) as changes:
            orders.labels("toy", "north").inc()
            gauge.set(2)

        with pytest.raises(AssertionError) as raised:
            changes.assert_unchanged()

        assert (
            "expected no sample to change, but these did:\n"
            '  orders_total{item="toy",shop="north"} (absent) -> 1.0\n'
            "  stock 0.0 -> 2.0"
        ) == str(raised.value)

    def test_labels_without_name(self, registry):
        """Labels without a name are a TypeError."""
        with capture_metrics(registry) as changes:
            pass

        with pytest.raises(TypeError, match="labels need a sample name"):
            changes.assert_unchanged(item="food")


class TestAssertSample:
    def test_value(self, registry, orders):
        """The sample with exactly these labels has the value: passes."""
        assert_sample(
            registry, "orders_total", {"item": "food", "shop": "north"}, 1
        )

    def test_no_labels(self, registry):
        """None stands for no labels."""
        Gauge("stock", "Stock.", registry=registry).set(2)

        assert_sample(registry, "stock", None, 2.0)

    def test_wrong_value(self, registry, orders):
        """Another value fails, listing the family's samples."""
        orders.labels("toy", "south").inc(3)

        with pytest.raises(AssertionError) as raised:
            assert_sample(
                registry, "orders_total", {"item": "toy", "shop": "south"}, 2
            )

        assert (
            'orders_total{item="toy",shop="south"} 3.0, expected 2.0\n'
            "orders (counter):\n"
            '  orders_total{item="food",shop="north"} 1.0\n'
            '  orders_total{item="toy",shop="south"} 3.0'
        ) == str(raised.value)

    def test_partial_labels(self, registry, orders):
        """Labels must be all of the sample's: a subset finds nothing."""
        with pytest.raises(AssertionError, match=r"\(absent\), expected 1.0"):
            assert_sample(registry, "orders_total", {"item": "food"}, 1)

    def test_absent(self, registry, orders):
        """None expects the sample to be absent: passes when it is."""
        assert_sample(
            registry, "orders_total", {"item": "toy", "shop": "north"}, None
        )

    def test_present_when_absent_expected(self, registry, orders):
        """None fails when the sample exists."""
        with pytest.raises(AssertionError, match=r"1\.0, expected absent"):
            assert_sample(
                registry,
                "orders_total",
                {"item": "food", "shop": "north"},
                None,
            )

    def test_unknown_name(self, registry, orders):
        """A name no metric has fails, even expecting it absent."""
        with pytest.raises(AssertionError) as raised:
            assert_sample(registry, "order_total", None, None)

        assert (
            "no metric has a sample named 'order_total'; the registry has: "
            "orders_created, orders_total"
        ) == str(raised.value)

    def test_empty_registry(self, registry):
        """In an empty registry, the message says it is empty."""
        with pytest.raises(AssertionError, match=r"has: \(nothing\)$"):
            assert_sample(registry, "orders_total", None, 1)

    @pytest.mark.parametrize(
        ("create", "name"),
        [
            (lambda r: Info("build", "Build.", registry=r), "build_info"),
            (
                lambda r: Enum(
                    "state", "State.", states=["a", "b"], registry=r
                ),
                "state",
            ),
            (
                lambda r: Summary("size", "Size.", registry=r),
                "size_count",
            ),
        ],
    )
    def test_other_types(self, registry, create, name):
        """Info, enum (stateset) and summary samples are found by name."""
        metric = create(registry)
        if isinstance(metric, Info):
            metric.info({"version": "1"})
            labels = {"version": "1"}
        elif isinstance(metric, Enum):
            labels = {"state": "a"}
        else:
            labels = {}

        assert_sample(registry, name, labels, 1 if labels else 0)


class TestFreshRegistry:
    def test_empty(self):
        """A fresh registry collects nothing."""
        assert [] == list(fresh_registry().collect())

    def test_new_each_time(self):
        """Each call makes another registry."""
        assert fresh_registry() is not fresh_registry()

    def test_describes_custom_collectors(self):
        """A custom collector registered twice raises, as in the global
        registry (a bare CollectorRegistry takes it twice)."""
        bare = CollectorRegistry()
        bare.register(QueueCollector())
        bare.register(QueueCollector())
        registry = fresh_registry()
        registry.register(QueueCollector())

        with pytest.raises(ValueError, match="Duplicated timeseries"):
            registry.register(QueueCollector())


EXPECTED = """\
# HELP orders_total Orders placed.
# TYPE orders_total counter
orders_total{item="food",shop="north"} 1.0
"""


class TestParseExposition:
    def test_text(self, registry, orders):
        """The text format is parsed by prometheus_client's parser."""
        families = parse_exposition(generate_latest(registry).decode())

        assert [("orders", "counter"), ("orders_created", "gauge")] == [
            (family.name, family.type) for family in families
        ]

    def test_openmetrics(self, registry, orders):
        """An exposition ending with # EOF is parsed as OpenMetrics."""
        families = parse_exposition(generate_openmetrics(registry))

        assert [("orders", "counter", ["orders_total", "orders_created"])] == [
            (family.name, family.type, [s.name for s in family.samples])
            for family in families
        ]

    def test_bytes(self, registry, orders):
        """Bytes are read as UTF-8."""
        assert parse_exposition(generate_latest(registry)) == parse_exposition(
            generate_latest(registry).decode()
        )


class TestAssertExposition:
    def test_same(self, registry, orders):
        """The same families in any order pass; _created is left out."""
        Gauge("stock", "Stock.", registry=registry).set(4)
        orders.labels("toy", "south").inc()
        expected = (
            "# HELP stock Stock.\n# TYPE stock gauge\nstock 4\n"
            "# HELP orders_total Orders placed.\n"
            "# TYPE orders_total counter\n"
            'orders_total{shop="south",item="toy"} 1\n'
            'orders_total{item="food",shop="north"} 1\n'
        )

        assert_exposition(generate_latest(registry), expected, exact=True)

    def test_other_families_allowed(self, registry, orders):
        """Families the expected text does not name may be there."""
        Gauge("stock", "Stock.", registry=registry).set(4)

        assert_exposition(generate_latest(registry), EXPECTED)

    def test_other_families_exact(self, registry, orders):
        """With exact, a family not expected fails."""
        Gauge("stock", "Stock.", registry=registry).set(4)

        with pytest.raises(AssertionError) as raised:
            assert_exposition(generate_latest(registry), EXPECTED, exact=True)

        assert (
            "the expositions differ (- expected, + actual):\n"
            "stock (gauge):\n"
            "  + # HELP stock Stock.\n"
            "  + # TYPE stock gauge\n"
            "  + stock 4.0"
        ) == str(raised.value)

    def test_different(self, registry, orders):
        """A different value, help and a missing family fail, with - and
        + lines by family."""
        expected = EXPECTED.replace("1.0", "2.0").replace(
            "Orders placed.", "Orders."
        ) + ("# HELP stock Stock.\n# TYPE stock gauge\nstock 4\n")

        with pytest.raises(AssertionError) as raised:
            assert_exposition(generate_latest(registry), expected)

        assert (
            "the expositions differ (- expected, + actual):\n"
            "orders (counter):\n"
            "  - # HELP orders Orders.\n"
            '  - orders_total{item="food",shop="north"} 2.0\n'
            "  + # HELP orders Orders placed.\n"
            '  + orders_total{item="food",shop="north"} 1.0\n'
            "stock (gauge):\n"
            "  - # HELP stock Stock.\n"
            "  - # TYPE stock gauge\n"
            "  - stock 4.0"
        ) == str(raised.value)

    def test_created_compared(self, registry, orders):
        """With created=True, the _created samples are compared too."""
        with pytest.raises(AssertionError, match=r"\+ orders_created"):
            assert_exposition(
                generate_latest(registry), EXPECTED, exact=True, created=True
            )

    def test_openmetrics(self, registry, orders):
        """OpenMetrics compares with OpenMetrics, _created left out."""
        expected = (
            "# HELP orders Orders placed.\n"
            "# TYPE orders counter\n"
            'orders_total{item="food",shop="north"} 1.0\n'
            "# EOF\n"
        )

        assert_exposition(generate_openmetrics(registry), expected, exact=True)

    @pytest.mark.parametrize("side", ["actual", "expected"])
    def test_does_not_parse(self, side):
        """A text that does not parse is a ValueError naming its side."""
        texts = {"actual": EXPECTED, "expected": EXPECTED}
        texts[side] = "orders_total{ 1\n"

        with pytest.raises(ValueError, match=f"the {side} exposition"):
            assert_exposition(texts["actual"], texts["expected"])

    async def test_scrape_of_aiohttp_test_client(self, registry, orders):
        """What an aiohttp TestClient scrape returns compares with the
        expected text."""
        app = web.Application()
        add_metrics_route(app, registry=registry)

        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get("/metrics")
            body = await response.read()

        assert_exposition(body, EXPECTED, exact=True)


class TestLintExposition:
    @pytest.mark.prometheus
    def test_clean(self, registry, orders):
        """promtool finds nothing in prometheus_client's exposition."""
        assert [] == lint_exposition(generate_latest(registry))

    @pytest.mark.prometheus
    def test_problems(self):
        """Each problem promtool reports is one string."""
        problems = lint_exposition(
            "# TYPE orders counter\norders 1\n",
            promtool="/usr/bin/promtool",
        )

        assert [
            'orders counter metrics should have "_total" suffix',
            "orders no help text",
        ] == sorted(problems or [])

    @pytest.mark.prometheus
    def test_parse_error(self):
        """An exposition promtool cannot parse is reported as a problem."""
        problems = lint_exposition("orders{ 1\n")

        assert problems is not None
        assert 1 == len(problems)
        assert "parsing error" in problems[0]

    def test_no_promtool(self):
        """Without promtool, the answer is None."""
        assert None is lint_exposition("orders 1\n", promtool="no-promtool")

    def test_exit_status_without_output(self):
        """A promtool that fails silently is reported by its exit status."""
        assert ["false exited with 1"] == lint_exposition(
            "orders 1\n", promtool="false"
        )


def docs_test_file() -> str:
    """
    The test file docs/testing.rst shows, as a user would save it.
    """
    page = (DOCS / "testing.rst").read_text()
    match = re.search(
        r"\.\. code-block:: python\n   :caption: test_shop\.py\n\n"
        r"((?:   .*\n|\n)+)",
        page,
    )
    assert match is not None
    return "\n".join(line[3:] for line in match.group(1).splitlines())


class TestPytestPlugin:
    def test_prom_registry(self, pytester):
        """prom_registry is a fresh registry per test."""
        pytester.makepyfile(
            """
            from prometheus_client import Counter, REGISTRY

            def test_one(prom_registry):
                Counter("c", "C.", registry=prom_registry).inc()
                assert prom_registry is not REGISTRY
                assert 1 == prom_registry.get_sample_value("c_total")

            def test_two(prom_registry):
                Counter("c", "C.", registry=prom_registry)
                assert 0 == prom_registry.get_sample_value("c_total")
            """
        )

        result = pytester.runpytest(*PLUGIN_ARGS)

        result.assert_outcomes(passed=2)

    def test_metric_changes(self, pytester):
        """metric_changes captures the test's changes to the global
        registry, whatever earlier tests did."""
        pytester.makepyfile(
            """
            from prometheus_client import Counter, REGISTRY

            HITS = Counter("plugin_hits", "Hits.")

            def test_one(metric_changes):
                HITS.inc(2)
                metric_changes.assert_changed("plugin_hits_total", by=2)

            def test_two(metric_changes):
                HITS.inc()
                assert 3 == REGISTRY.get_sample_value("plugin_hits_total")
                metric_changes.assert_changed("plugin_hits_total", by=1)

            def test_unregister():
                REGISTRY.unregister(HITS)
            """
        )

        result = pytester.runpytest(*PLUGIN_ARGS)

        result.assert_outcomes(passed=3)

    def test_failure_message(self, pytester):
        """A failing assertion shows the family before and after."""
        pytester.makepyfile(
            """
            from prometheus_client import Counter

            def test_wrong(prom_registry):
                c = Counter("c", "C.", registry=prom_registry)
                from prom_async.testing import capture_metrics
                with capture_metrics(prom_registry) as changes:
                    c.inc()
                changes.assert_changed("c_total", by=2)
            """
        )

        result = pytester.runpytest(*PLUGIN_ARGS)

        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            [
                "E * expected c_total to change by 2, but it changed by 1.0",
                "E * c (counter) before:",
                "E *   c_total 0.0",
                "E * c (counter) after:",
                "E *   c_total 1.0",
            ]
        )

    def test_docs_example(self, pytester):
        """The test file of docs/testing.rst passes, in a process of its
        own (it registers a counter in the global registry)."""
        pytester.makepyfile(test_shop=docs_test_file())

        result = pytester.runpytest_subprocess(*PLUGIN_ARGS)

        result.assert_outcomes(passed=3)


class TestImports:
    def test_no_aiohttp_no_pytest(self):
        """prom_async.testing imports neither aiohttp nor pytest."""
        code = (
            "import sys, prom_async.testing; "
            "print(sorted({'aiohttp', 'pytest'} & set(sys.modules)))"
        )

        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

        assert "[]\n" == result.stdout

    def test_plugin_imports_little(self):
        """The pytest plugin imports neither aiohttp nor prometheus_client
        until a fixture is used."""
        code = (
            f"import sys, {PLUGIN}; print(sorted("
            "{'aiohttp', 'prometheus_client'} & set(sys.modules)))"
        )

        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

        assert "[]\n" == result.stdout
