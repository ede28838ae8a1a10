"""
prom_async.aio.push against Debian's real Pushgateway, scraped by a real
Prometheus.
"""

from __future__ import annotations

import asyncio

import pytest

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from fixtures_pushgateway import Pushgateway, PushgatewayFactory
from fixtures_servers import PASSWORD, free_loopback_port, poll
from prom_async.aio.push import (
    Pusher,
    PushError,
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
)


# Every test here runs Debian's prometheus-pushgateway.
pytestmark = pytest.mark.pushgateway

AWKWARD_KEY = {
    "path": "/var/backups/db",
    "note": "two words",
    "empty": "",
    "odd": "a+b%c?d#é",
    "shard": 3,
}


@pytest.fixture
def job_registry(registry: CollectorRegistry) -> CollectorRegistry:
    Gauge(
        "backup_last_success_unixtime",
        "When the backup last succeeded.",
        registry=registry,
    ).set(1_700_000_000)
    Counter(
        "backup_rows", "Rows backed up.", ["table"], registry=registry
    ).labels("orders").inc(42)
    return registry


class TestPushToRealGateway:
    @pytest.mark.parametrize("compression", ["gzip", None])
    async def test_push_arrives(
        self, plain_pushgateway: Pushgateway, job_registry, compression
    ):
        """A push, gzipped or plain, is stored in its group."""
        await push_to_gateway(
            plain_pushgateway.url,
            "backup",
            job_registry,
            {"instance": "db-1"},
            compression=compression,
        )

        values = await asyncio.to_thread(
            plain_pushgateway.values, job="backup", instance="db-1"
        )
        assert ("1.7e+09", "42") == (
            values["backup_last_success_unixtime"],
            values["backup_rows_total"],
        )

    async def test_awkward_grouping_key(
        self, plain_pushgateway: Pushgateway, job_registry
    ):
        """Values with /, spaces, escapes and empty ones arrive as the
        group's labels, unchanged."""
        await push_to_gateway(
            plain_pushgateway.address,
            "nightly/backup",
            job_registry,
            AWKWARD_KEY,
        )

        groups = await asyncio.to_thread(plain_pushgateway.groups)

        assert [
            {
                "job": "nightly/backup",
                **{name: str(value) for name, value in AWKWARD_KEY.items()},
            }
        ] == [group["labels"] for group in groups]

    async def test_put_replaces_post_adds(
        self, plain_pushgateway: Pushgateway
    ):
        """push_to_gateway replaces the group; pushadd_to_gateway keeps the
        metrics it does not push."""
        first, second, third = (CollectorRegistry() for _ in range(3))
        Gauge("a", "A.", registry=first).set(1)
        Gauge("b", "B.", registry=second).set(2)
        Gauge("c", "C.", registry=third).set(3)

        await push_to_gateway(plain_pushgateway.url, "j", first)
        await pushadd_to_gateway(plain_pushgateway.url, "j", second)
        after_post = await asyncio.to_thread(plain_pushgateway.values, job="j")
        await push_to_gateway(plain_pushgateway.url, "j", third)
        after_put = await asyncio.to_thread(plain_pushgateway.values, job="j")

        assert {"a": "1", "b": "2"} == after_post
        assert {"c": "3"} == after_put

    async def test_delete_removes_the_group(
        self, plain_pushgateway: Pushgateway, job_registry
    ):
        """delete_from_gateway removes exactly that group."""
        await push_to_gateway(
            plain_pushgateway.url, "backup", job_registry, AWKWARD_KEY
        )
        await push_to_gateway(
            plain_pushgateway.url, "backup", job_registry, {"other": "x"}
        )

        await delete_from_gateway(plain_pushgateway.url, "backup", AWKWARD_KEY)

        groups = await asyncio.to_thread(plain_pushgateway.groups)
        assert [{"job": "backup", "other": "x"}] == [
            group["labels"] for group in groups
        ]

    async def test_refusal_raises_with_the_gateways_text(
        self, plain_pushgateway: Pushgateway, registry
    ):
        """A push the gateway refuses (samples with timestamps) raises
        PushError 400 with its explanation, after one attempt."""

        class Stamped:
            def collect(self):
                family = GaugeMetricFamily("stamped", "Has a timestamp.")
                family.add_metric([], 1, timestamp=1_700_000_000)
                yield family

        registry.register(Stamped())

        with pytest.raises(PushError) as caught:
            await push_to_gateway(plain_pushgateway.url, "j", registry)

        error = caught.value
        assert (400, 1) == (error.status, error.attempts)
        assert "pushed metrics must not have timestamps" in error.text
        assert "pushed metrics must not have timestamps" in str(error)

    async def test_retried_until_the_gateway_is_up(
        self, pushgateway: PushgatewayFactory, job_registry
    ):
        """A push that starts before the gateway listens is retried and
        lands."""
        port = free_loopback_port()
        push = asyncio.create_task(
            push_to_gateway(f"127.0.0.1:{port}", "early", job_registry)
        )
        gateway = await asyncio.to_thread(pushgateway, port=port)

        await push

        assert await asyncio.to_thread(gateway.group, job="early")


class TestAuthAndTLS:
    async def test_basic_auth(self, pushgateway: PushgatewayFactory, registry):
        """With the password its web config holds as a bcrypt hash, the
        push is taken; with a wrong one it is refused (401), at once."""
        gateway = await asyncio.to_thread(
            pushgateway, basic_auth_user="pusher"
        )
        Gauge("g", "G.", registry=registry).set(1)

        await push_to_gateway(
            gateway.url, "j", registry, basic_auth=("pusher", PASSWORD)
        )
        with pytest.raises(PushError) as caught:
            await push_to_gateway(
                gateway.url, "j", registry, basic_auth=("pusher", "wrong")
            )

        assert {"g": "1"} == await asyncio.to_thread(gateway.values, job="j")
        assert (401, 1) == (caught.value.status, caught.value.attempts)

    async def test_tls(self, pushgateway: PushgatewayFactory, registry):
        """Over HTTPS with a context that trusts the gateway the push is
        taken; without one, the certificate fails at once."""
        gateway = await asyncio.to_thread(
            pushgateway, tls=True, basic_auth_user="pusher"
        )
        Gauge("g", "G.", registry=registry).set(1)
        credentials = ("pusher", PASSWORD)

        await push_to_gateway(
            gateway.url,
            "j",
            registry,
            basic_auth=credentials,
            ssl_ctx=gateway.client_ssl,
        )
        with pytest.raises(PushError) as caught:
            await push_to_gateway(
                gateway.url, "j", registry, basic_auth=credentials
            )

        assert {"g": "1"} == await asyncio.to_thread(gateway.values, job="j")
        assert gateway.url.startswith("https://")
        assert (None, 1) == (caught.value.status, caught.value.attempts)
        assert "TLS failed" in str(caught.value)


class TestScrapedByPrometheus:
    async def test_pushed_values_come_back_with_their_labels(
        self, plain_pushgateway: Pushgateway, prometheus, job_registry
    ):
        """Prometheus scrapes the gateway with honor_labels: true and
        stores the pushed values under the pushed job and grouping key;
        without it, the scrape's own job and instance win."""
        await push_to_gateway(
            plain_pushgateway.url, "nightly-backup", job_registry, AWKWARD_KEY
        )

        honoring = await asyncio.to_thread(
            prometheus,
            [plain_pushgateway.address],
            scrape_config="    honor_labels: true\n",
        )
        overriding = await asyncio.to_thread(
            prometheus, [plain_pushgateway.address]
        )
        (honored,) = await asyncio.to_thread(
            honoring.wait_for_value, "backup_rows_total", "42"
        )
        (overridden,) = await asyncio.to_thread(
            overriding.wait_for_value, "backup_rows_total", "42"
        )

        assert {
            "__name__": "backup_rows_total",
            "job": "nightly-backup",
            "table": "orders",
            "path": "/var/backups/db",
            "note": "two words",
            "odd": "a+b%c?d#é",
            "shard": "3",
        } == honored["metric"]
        assert (
            "prom_async",
            "nightly-backup",
            plain_pushgateway.address,
        ) == (
            overridden["metric"]["job"],
            overridden["metric"]["exported_job"],
            overridden["metric"]["instance"],
        )


class TestPusherWithRealGateway:
    async def test_failed_job_is_pushed(self, plain_pushgateway: Pushgateway):
        """A job that raises: its metrics are on the gateway, and its
        exception is what the caller gets."""
        with pytest.raises(ZeroDivisionError):
            async with Pusher(
                plain_pushgateway.url, "etl", grouping_key={"run": "7"}
            ) as pusher:
                failed = Gauge(
                    "etl_failed",
                    "1 when the run failed.",
                    registry=pusher.registry,
                )
                failed.set(1)
                1 / 0  # noqa: B018

        assert {"etl_failed": "1"} == await asyncio.to_thread(
            plain_pushgateway.values, job="etl", run="7"
        )

    async def test_delete_on_exit(self, plain_pushgateway: Pushgateway):
        """delete_on_exit: the group is there while the job runs (pushed
        every interval) and gone when it ends."""
        async with Pusher(
            plain_pushgateway.url, "long", interval=0.05, delete_on_exit=True
        ) as pusher:
            Gauge("progress", "Done.", registry=pusher.registry).set(0.5)
            seen = await asyncio.to_thread(
                poll_group, plain_pushgateway, job="long"
            )

        assert {"progress": "0.5"} == seen
        assert [] == await asyncio.to_thread(plain_pushgateway.groups)


def poll_group(gateway: Pushgateway, **labels: str) -> dict[str, str]:
    found: dict[str, str] = poll(
        lambda: gateway.values(**labels), what=f"group {labels}"
    )
    return found
