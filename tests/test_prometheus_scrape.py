"""A real Prometheus scrapes our exporter; promtool lints what we serve."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families,
)

from fixtures_servers import PASSWORD, TLSContexts, promtool_check_metrics
from prom_async.aio.web import (
    start_http_server,
    start_http_server_in_thread,
)


LOOPBACK = "127.0.0.1"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TOKEN = "prometheus-scrape-token"

# Every test here runs Debian's prometheus or promtool.
pytestmark = pytest.mark.prometheus


@pytest.fixture
def scraped(registry: CollectorRegistry) -> CollectorRegistry:
    """
    The per-test registry with values the tests look for in Prometheus.
    """
    Gauge("prom_async_e2e_value", "Set by the test.", registry=registry).set(
        42.5
    )
    Counter(
        "prom_async_e2e_jobs",
        "Counted by the test.",
        ["queue"],
        registry=registry,
    ).labels("mail").inc(7)
    return registry


@pytest.fixture
def lintable(registry: CollectorRegistry) -> CollectorRegistry:
    """
    The per-test registry with every kind of metric and awkward labels.
    """
    Counter(
        "requests", "Requests served.", ["path"], registry=registry
    ).labels('/a "quoted"\\path\nnext').inc(2)
    Gauge("queue_depth", "Jobs waiting.", registry=registry).set(-3.5)
    Histogram(
        "request_seconds", "Request time.", ["method"], registry=registry
    ).labels("GET").observe(0.3)
    Summary("payload_bytes", "Payload size.", registry=registry).observe(512)
    Info("build", "Build facts.", registry=registry).info({"version": "1.2"})
    Enum(
        "phase", "Phase.", states=["starting", "running"], registry=registry
    ).state("running")
    return registry


class TestRealPrometheus:
    async def test_scrapes_the_in_loop_server(self, scraped, prometheus):
        """Prometheus finds the in-loop exporter up and stores its values."""
        async with await start_http_server(
            addr=LOOPBACK, registry=scraped
        ) as server:
            target = f"{LOOPBACK}:{server.socket.port}"
            scraper = await asyncio.to_thread(prometheus, [target])
            up = await asyncio.to_thread(scraper.wait_for_target_up, target)
            gauge = await asyncio.to_thread(
                scraper.wait_for_value, "prom_async_e2e_value", "42.5"
            )
            counter = await asyncio.to_thread(
                scraper.wait_for_value, "prom_async_e2e_jobs_total", "7"
            )

        assert "" == up["lastError"]
        assert [target] == [series["metric"]["instance"] for series in gauge]
        assert "mail" == counter[0]["metric"]["queue"]

    def test_scrapes_the_threaded_server(self, scraped, prometheus):
        """Prometheus finds the threaded exporter up and stores its values."""
        with start_http_server_in_thread(
            addr=LOOPBACK, registry=scraped
        ) as server:
            target = f"{LOOPBACK}:{server.socket.port}"
            scraper = prometheus([target])
            up = scraper.wait_for_target_up(target)
            gauge = scraper.wait_for_value("prom_async_e2e_value", "42.5")

        assert "" == up["lastError"]
        assert [target] == [series["metric"]["instance"] for series in gauge]

    def test_scrapes_over_tls_with_basic_auth(
        self, scraped, prometheus, tls: TLSContexts, password_hash
    ):
        """Prometheus scrapes over HTTPS with basic auth (bcrypt hash)."""
        with start_http_server_in_thread(
            addr=LOOPBACK,
            registry=scraped,
            ssl_ctx=tls.server,
            basic_auth_users={"prometheus": password_hash},
        ) as server:
            target = f"{LOOPBACK}:{server.socket.port}"
            scraper = prometheus(
                [target],
                scrape_config=(
                    "    scheme: https\n"
                    "    tls_config:\n"
                    f"      ca_file: {tls.ca_path}\n"
                    "    basic_auth:\n"
                    "      username: prometheus\n"
                    f"      password: {PASSWORD}\n"
                ),
            )
            up = scraper.wait_for_target_up(target)
            scraper.wait_for_value("prom_async_e2e_value", "42.5")

        assert f"https://{target}/metrics" == up["scrapeUrl"]

    async def test_scrapes_with_a_bearer_token(self, scraped, prometheus):
        """Prometheus scrapes with a bearer token."""
        async with await start_http_server(
            addr=LOOPBACK, registry=scraped, bearer_token=TOKEN
        ) as server:
            target = f"{LOOPBACK}:{server.socket.port}"
            scraper = await asyncio.to_thread(
                prometheus,
                [target],
                scrape_config=(
                    f"    authorization:\n      credentials: {TOKEN}\n"
                ),
            )
            await asyncio.to_thread(scraper.wait_for_target_up, target)
            await asyncio.to_thread(
                scraper.wait_for_value, "prom_async_e2e_value", "42.5"
            )


class TestPromtool:
    async def test_text_format_is_clean(self, lintable):
        """promtool check metrics finds nothing wrong in the text format."""
        body = await fetch(lintable, accept="text/plain")

        result = await asyncio.to_thread(promtool_check_metrics, body)

        assert (0, "", "") == (result.returncode, result.stdout, result.stderr)

    async def test_openmetrics_is_clean(self, registry):
        """promtool check metrics finds nothing wrong in OpenMetrics.

        promtool 2.42 reads stdin as the text format, where a counter's
        family is named ``x_total`` and OpenMetrics names it ``x``; so the
        families linted here are those whose names agree in both formats.
        Every kind is checked strictly by the next test.
        """
        Gauge("queue_depth", "Jobs.", ["queue"], registry=registry).labels(
            'say "hi"\\\n'
        ).set(3)
        Gauge("temperature_celsius", "Temperature.", registry=registry).set(
            -1.5
        )
        body = await fetch(registry, accept=OPENMETRICS)

        result = await asyncio.to_thread(promtool_check_metrics, body)

        assert body.endswith(b"# EOF\n")
        assert (0, "", "") == (result.returncode, result.stdout, result.stderr)

    async def test_openmetrics_parses_strictly(self, lintable):
        """prometheus_client's strict OpenMetrics parser reads every kind."""
        body = await fetch(lintable, accept=OPENMETRICS)

        families = {
            family.name: family.type
            for family in text_string_to_metric_families(body.decode())
        }

        assert {
            "requests": "counter",
            "queue_depth": "gauge",
            "request_seconds": "histogram",
            "payload_bytes": "summary",
            "build": "info",
            "phase": "stateset",
        } == families


async def fetch(registry: CollectorRegistry, *, accept: str) -> bytes:
    async with (
        await start_http_server(addr=LOOPBACK, registry=registry) as server,
        aiohttp.ClientSession() as http,
        http.get(server.metrics_url, headers={"Accept": accept}) as response,
    ):
        assert 200 == response.status
        return await response.read()
