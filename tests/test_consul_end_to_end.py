"""
End to end: our exporters register with the Consul double, and Debian's
VictoriaMetrics finds them through ``consul_sd_configs`` and scrapes them.

The scrape job is the ``prometheus.yml`` snippet of
docs/service-discovery.rst, read from the page, so the documented relabel
config is the one that is tested.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from prometheus_client import CollectorRegistry, Counter

from consul_double import ConsulDouble
from docs_pages import code_blocks
from fixtures_consul import (
    ConsulDoubleFactory,
    VictoriaMetricsFactory,
    sd_log_records,
)
from fixtures_servers import RunningServer, Serve, eventually
from prom_async.aio.sd import ConsulAgent


#: Fast but realistic settings: the documented re-registration bound is
#: resync_interval + 2 * request_timeout = 4.5 s.
TIMING = {
    "request_timeout": 2.0,
    "retry_initial_delay": 0.05,
    "retry_max_delay": 0.5,
    "resync_interval": 0.5,
}
REREGISTRATION_BOUND = (
    TIMING["resync_interval"] + 2 * TIMING["request_timeout"]
)


def documented_scrape_config(consul_address: str) -> str:
    """
    The docs' ``prometheus.yml`` snippet, pointed at *consul_address*.
    """
    snippet = code_blocks("service-discovery.rst", "yaml")[0]
    assert "server: 127.0.0.1:8500" in snippet
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        + snippet.replace("127.0.0.1:8500", consul_address)
    )


def consul_agent(double: ConsulDouble, **options: Any) -> ConsulAgent:
    return ConsulAgent(
        "e2e-app",
        **{
            "tags": ["metrics"],
            "agent_address": double.address,
            **TIMING,
            **options,
        },
    )


def service_id(port: int) -> str:
    return f"e2e-app-{socket.gethostname()}-{port}"


async def get_status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


class TestDiscoveredAndScraped:
    async def test_victoria_metrics_scrapes_registered_servers(
        self,
        fast_double: ConsulDouble,
        victoria_metrics_factory: VictoriaMetricsFactory,
        serve: Serve,
    ) -> None:
        """Two instances, one on 0.0.0.0, are found, labelled and stored."""
        registries = [CollectorRegistry(), CollectorRegistry()]
        for value, registry in zip((7, 11), registries, strict=True):
            Counter("e2e_jobs", "Jobs done.", registry=registry).inc(value)
        loopback = await serve(
            registry=registries[0], service_discovery=consul_agent(fast_double)
        )
        wildcard = await serve(
            addr="0.0.0.0",
            registry=registries[1],
            service_discovery=consul_agent(fast_double),
        )
        ids = {service_id(loopback.port), service_id(wildcard.port)}

        assert ids == set(fast_double.services) - {"consul"}
        assert "" == fast_double.services[service_id(wildcard.port)]["Address"]

        await eventually(
            lambda: all(
                fast_double.checks[f"service:{each}"]["Status"] == "passing"
                for each in ids
            ),
            what="passing checks of both instances",
        )

        victoria = await victoria_metrics_factory(
            documented_scrape_config(fast_double.address)
        )

        async def healthy_targets() -> dict[str, dict[str, Any]]:
            return {
                target["labels"].get("consul_service_id", ""): target
                for target in await victoria.targets()
                if target["health"] == "up"
                and target["discoveredLabels"].get("__meta_consul_health")
                == "passing"
            }

        targets = await poll_async(
            healthy_targets,
            lambda found: ids <= set(found),
            what="both targets up and passing in VictoriaMetrics",
        )
        labels = targets[service_id(wildcard.port)]["labels"]
        assert {
            "job": "prom_async",
            "consul_service": "e2e-app",
            "consul_service_id": service_id(wildcard.port),
            "consul_node": fast_double.node_name,
            "instance": f"127.0.0.1:{wildcard.port}",
        }.items() <= labels.items()

        async def stored() -> dict[str, str]:
            return {
                sample["metric"]["consul_service_id"]: sample["value"][1]
                for sample in await victoria.query(
                    'e2e_jobs_total{consul_service="e2e-app"}'
                )
            }

        values = await poll_async(
            stored, lambda found: ids <= set(found), what="stored counters"
        )
        assert {
            service_id(loopback.port): "7",
            service_id(wildcard.port): "11",
        } == values


async def poll_async(
    fetch: Callable[[], Any],
    done: Callable[[Any], bool],
    *,
    what: str,
    timeout: float = 60.0,
) -> Any:
    """
    Await *fetch()* until *done* holds for its result; fail at the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        try:
            last = await fetch()
        except aiohttp.ClientError:
            last = None
        else:
            if done(last):
                return last
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; last seen: {last!r}")


class TestFaults:
    async def test_agent_down_at_start(
        self,
        consul_double: ConsulDouble,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
        serve: Serve,
    ) -> None:
        """Down at start: serving anyway, registered once the agent is up."""
        await consul_double.go_down()
        server = await serve(
            registry=registry, service_discovery=consul_agent(consul_double)
        )

        assert 200 == await get_status(server.metrics_url)
        assert not server.is_registered

        await consul_double.come_up()
        await eventually(lambda: server.is_registered, what="registration")

        assert service_id(server.port) in consul_double.services
        assert 1 == len(sd_log_records(caplog, logging.WARNING))

    async def test_restart_forgets_service(
        self, consul_double: ConsulDouble, serve: Serve
    ) -> None:
        """A restarted agent has the service back within the bound."""
        server = await serve(service_discovery=consul_agent(consul_double))
        expected = service_id(server.port)
        assert expected in consul_double.services

        await consul_double.restart()

        await eventually(
            lambda: (
                expected in consul_double.services and server.is_registered
            ),
            what="re-registration within the documented bound",
            timeout=REREGISTRATION_BOUND + 5.0,
        )
        assert 2 == len(
            consul_double.requests_to(
                "/v1/agent/service/register", method="PUT"
            )
        )

    async def test_wrong_token(
        self,
        consul_double_factory: ConsulDoubleFactory,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
        serve: Serve,
    ) -> None:
        """403: a typed error, logged once; the exporter keeps serving."""
        double = await consul_double_factory(acl_token="the-right-one")
        sd = consul_agent(double, token="a-wrong-one")
        server = await serve(registry=registry, service_discovery=sd)
        await eventually(
            lambda: len(double.requests_to("/v1/agent/service/register")) >= 3,
            what="several tries",
        )

        assert sd.registration is not None
        assert sd.registration.error is not None
        assert (403, "ACL not found") == (
            sd.registration.error.status,
            sd.registration.error.message,
        )
        assert not server.is_registered
        assert 200 == await get_status(server.metrics_url)
        assert 1 == len(sd_log_records(caplog, logging.ERROR))
        assert "a-wrong-one" not in caplog.text

    async def test_right_token(
        self, consul_double_factory: ConsulDoubleFactory, serve: Serve
    ) -> None:
        """With the right token, an ACL-enabled agent registers it."""
        double = await consul_double_factory(acl_token="the-right-one")

        server = await serve(
            service_discovery=consul_agent(double, token="the-right-one")
        )

        assert server.is_registered
        assert service_id(server.port) in double.services

    async def test_bad_request(
        self,
        consul_double: ConsulDouble,
        caplog: pytest.LogCaptureFixture,
        serve: Serve,
    ) -> None:
        """400: Consul's reason in a typed error, logged once."""

        class ZeroInterval(ConsulAgent):
            def service_definition(self, server: Any) -> dict[str, Any]:
                definition = super().service_definition(server)
                definition["check"]["interval"] = "0s"
                return definition

        sd = ZeroInterval(
            "e2e-app", agent_address=consul_double.address, **TIMING
        )
        server = await serve(service_discovery=sd)
        await eventually(
            lambda: (
                len(consul_double.requests_to("/v1/agent/service/register"))
                >= 3
            ),
            what="several tries",
        )

        assert sd.registration is not None
        assert sd.registration.error is not None
        assert 400 == sd.registration.error.status
        assert sd.registration.error.message.startswith("Invalid check: ")
        assert not server.is_registered
        assert 1 == len(sd_log_records(caplog, logging.ERROR))

    async def test_close_with_agent_gone(
        self, consul_double: ConsulDouble, serve: Serve
    ) -> None:
        """Closing finishes, and cleans up, when the agent is gone."""
        sd = consul_agent(consul_double)
        server = await serve(service_discovery=sd)
        registration = sd.registration
        await consul_double.go_down()

        await asyncio.wait_for(server.close(), TIMING["request_timeout"] * 5)

        assert registration is not None
        assert registration._task is not None
        assert registration._task.done()
        assert registration._client.http._session.closed
        assert not server.is_registered

    async def test_close_deregisters(
        self, consul_double: ConsulDouble, serve: Serve
    ) -> None:
        """Closing removes the service from the agent."""
        server = await serve(service_discovery=consul_agent(consul_double))
        assert service_id(server.port) in consul_double.services

        await server.close()

        assert service_id(server.port) not in consul_double.services

    async def test_two_instances_same_name(
        self, consul_double: ConsulDouble, serve: Serve
    ) -> None:
        """Two instances with one name are both listed."""
        first = await serve(service_discovery=consul_agent(consul_double))
        second = await serve(service_discovery=consul_agent(consul_double))

        assert {service_id(first.port), service_id(second.port)} <= set(
            consul_double.services
        )

    async def test_wildcard_server_check_passes(
        self, fast_double: ConsulDouble, serve: Serve
    ) -> None:
        """A server on 0.0.0.0 registers no address and its check passes."""
        server = await serve(
            addr="0.0.0.0", service_discovery=consul_agent(fast_double)
        )

        await passing_check(fast_double, server)
        assert "" == fast_double.services[service_id(server.port)]["Address"]

    async def test_tls_server_check_passes(
        self, fast_double: ConsulDouble, tls: Any, serve: Serve
    ) -> None:
        """An HTTPS exporter gets an https check that passes."""
        server = await serve(
            ssl_ctx=tls.server,
            service_discovery=consul_agent(
                fast_double, check_tls_skip_verify=True
            ),
        )

        check = await passing_check(fast_double, server)
        assert (
            f"https://127.0.0.1:{server.port}/metrics"
            == check["Definition"]["HTTP"]
        )

    async def test_authenticated_server_check_passes(
        self, fast_double: ConsulDouble, serve: Serve
    ) -> None:
        """An exporter with a bearer token is checked at its open /."""
        server = await serve(
            bearer_token="s3cr3t", service_discovery=consul_agent(fast_double)
        )

        check = await passing_check(fast_double, server)
        assert (
            f"http://127.0.0.1:{server.port}/" == check["Definition"]["HTTP"]
        )


async def passing_check(
    double: ConsulDouble, server: RunningServer
) -> dict[str, Any]:
    """
    Wait until *server*'s check in *double* passes; return the check.
    """
    check_id = f"service:{service_id(server.port)}"
    await eventually(
        lambda: double.checks[check_id]["Status"] == "passing",
        what="a passing check",
    )
    check: dict[str, Any] = double.checks[check_id]
    return check
