"""
An independent Consul client, Debian's VictoriaMetrics with
``consul_sd_configs``, discovers and scrapes a target through the Consul
double: the double is faithful enough for real discovery.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import consul
import pytest

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from consul_double import ConsulDouble
from fixtures_consul import (
    ConsulDoubleFactory,
    PyConsulFactory,
    VictoriaMetricsFactory,
)
from victoria_metrics import VictoriaMetrics


TOKEN = "e2e-secret"
T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 60.0
) -> T:
    """
    Poll *probe* until it returns something other than `None`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (result := await probe()) is None:
        if loop.time() > deadline:
            raise TimeoutError(f"nothing after {timeout} s")
        await asyncio.sleep(0.1)
    return result


@pytest.fixture
async def exporter(registry: CollectorRegistry) -> AsyncIterator[int]:
    """
    A plain aiohttp app serving *registry* at ``/metrics``; yields its port.
    """
    Gauge("demo_value", "A value the test sets.", registry=registry).set(42.5)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1]
    await runner.cleanup()


def scrape_config(double: ConsulDouble) -> str:
    return f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: consul-e2e
    consul_sd_configs:
      - server: {double.address}
        token: {TOKEN}
        tags: [metrics]
    relabel_configs:
      - source_labels: [__meta_consul_service]
        target_label: consul_service
      - source_labels: [__meta_consul_service_id]
        target_label: consul_service_id
      - source_labels: [__meta_consul_health]
        target_label: consul_health
"""


@pytest.fixture
async def registered(
    consul_double_factory: ConsulDoubleFactory,
    py_consul_factory: PyConsulFactory,
    exporter: int,
) -> tuple[ConsulDouble, consul.aio.Consul]:
    """
    A double with ACLs on and the exporter registered through py-consul.
    """
    double = await consul_double_factory(acl_token=TOKEN, check_time_scale=0.1)
    client = py_consul_factory(double, token=TOKEN)
    await client.agent.service.register(
        "demo",
        service_id="demo-1",
        address="127.0.0.1",
        port=exporter,
        tags=["metrics", "v1"],
        meta={"team-name": "obs"},
        check=consul.Check.http(f"http://127.0.0.1:{exporter}/metrics", "10s"),
    )
    await client.agent.service.register(
        "other", service_id="other-1", port=1, tags=["x"]
    )
    return double, client


async def _up_target(vm: Any) -> dict[str, Any] | None:
    for target in await vm.targets():
        if target["health"] == "up":
            return dict(target)
    return None


@pytest.mark.victoria_metrics
class TestVictoriaMetricsConsulDiscovery:
    async def test_discovers_and_scrapes(
        self,
        registered: tuple[ConsulDouble, consul.aio.Consul],
        victoria_metrics_factory: VictoriaMetricsFactory,
        exporter: int,
    ) -> None:
        """VictoriaMetrics finds the service via the double and stores it."""
        double, _ = registered
        vm = await victoria_metrics_factory(scrape_config(double))

        target = await eventually(lambda: _up_target(vm))

        async def stored() -> list[dict[str, Any]] | None:
            result = await vm.query('demo_value{consul_service="demo"}')
            return result or None

        [sample] = await eventually(stored)
        expected = {
            "__address__": f"127.0.0.1:{exporter}",
            "__meta_consul_dc": "dc1",
            "__meta_consul_node": double.node_name,
            "__meta_consul_service": "demo",
            "__meta_consul_service_id": "demo-1",
            "__meta_consul_service_port": str(exporter),
            "__meta_consul_service_metadata_team_name": "obs",
            "__meta_consul_tags": ",metrics,v1,",
            "__meta_consul_tagged_address_lan": "127.0.0.1",
        }
        discovered = target["discoveredLabels"]
        assert expected == {key: discovered.get(key) for key in expected}
        assert ("demo", "demo-1") == (
            target["labels"]["consul_service"],
            target["labels"]["consul_service_id"],
        )
        assert "42.5" == sample["value"][1]
        assert ["consul-e2e"] == sorted(
            {t["labels"]["job"] for t in await vm.targets()}
        )
        # VictoriaMetrics 1.79 sends the token as a Bearer header.
        health = double.requests_to("/v1/health/service/demo")
        assert f"Bearer {TOKEN}" == health[0].headers["Authorization"]
        assert [] == double.requests_to("/v1/health/service/other")

    async def test_follows_deregistration(
        self,
        registered: tuple[ConsulDouble, consul.aio.Consul],
        victoria_metrics_factory: VictoriaMetricsFactory,
    ) -> None:
        """A deregistered service disappears from VictoriaMetrics' targets."""
        double, client = registered
        vm = await victoria_metrics_factory(scrape_config(double))
        await eventually(lambda: _up_target(vm))

        await client.agent.service.deregister("demo-1")

        async def gone() -> bool | None:
            return True if not await vm.targets() else None

        assert await eventually(gone)

    async def test_health_label_follows_check(
        self,
        registered: tuple[ConsulDouble, consul.aio.Consul],
        victoria_metrics_factory: VictoriaMetricsFactory,
    ) -> None:
        """A check turned critical reaches the target as its health label."""
        double, client = registered
        await client.agent.check.register(
            "pinned", check=consul.Check.ttl("1h"), service_id="demo-1"
        )
        await client.agent.check.ttl_pass("pinned")
        vm = await victoria_metrics_factory(scrape_config(double))

        # VictoriaMetrics keeps a target's first discoveredLabels while its
        # final labels stay the same, so the health is relabelled into one.
        async def health_is(wanted: str) -> str | None:
            for target in await vm.targets():
                if target["labels"].get("consul_health") == wanted:
                    return wanted
            return None

        await eventually(lambda: health_is("passing"))
        await client.agent.check.ttl_fail("pinned", notes="broken")

        assert "critical" == await eventually(lambda: health_is("critical"))


class TestVictoriaMetrics:
    def test_missing_binary_fails(self, tmp_path: Path) -> None:
        """A missing binary is an error that says what to install."""
        with pytest.raises(FileNotFoundError, match="victoria-metrics"):
            VictoriaMetrics("", tmp_path, binary=tmp_path / "missing")
