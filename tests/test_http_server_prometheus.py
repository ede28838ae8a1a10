"""
Debian's Prometheus scrapes an instrumented aiohttp application: the PromQL
the docs give answers, and exemplars reach Prometheus' exemplar storage.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import urllib.request

from typing import Any

import pytest

from aiohttp import web

from fixtures_servers import poll
from prom_async.aio.http import instrument_app, server_middleware
from prom_async.aio.web import add_metrics_route
from test_http_server_support import ok, serving


pytestmark = pytest.mark.prometheus

RATE = (
    "sum by (http_route) "
    "(rate(http_server_request_duration_seconds_count[1m]))"
)
QUANTILE = (
    "histogram_quantile(0.9, sum by (le, http_route) "
    "(rate(http_server_request_duration_seconds_bucket[1m])))"
)
ROUTES = {"/users/{id}", "/items"}


async def user(request: web.Request) -> web.Response:
    return web.Response(text=request.match_info["id"])


def instrumented(registry: Any, tracing: Any = None) -> web.Application:
    """
    The application, instrumented; after *tracing*, a tracing middleware,
    if given.
    """
    if tracing is None:
        app = web.Application()
        instrument_app(app, registry=registry)
    else:
        app = web.Application(
            middlewares=[tracing, server_middleware(registry=registry)]
        )
    app.router.add_get("/users/{id}", user)
    app.router.add_get("/items", ok)
    add_metrics_route(app, registry=registry)
    return app


def requests_to(url: str) -> None:
    """
    One request to each route (from a worker thread: it blocks).
    """
    for path in ("/users/7", "/items"):
        with urllib.request.urlopen(f"{url}{path}", timeout=5) as got:
            got.read()


def target_of(url: str) -> str:
    return url.removeprefix("http://")


class TestScrapedByPrometheus:
    async def test_the_docs_promql(self, registry, prometheus):
        """The request rate and the 90th percentile by route come back
        from Prometheus, one series per route."""
        async with serving(instrumented(registry)) as url:
            scraper = await asyncio.to_thread(prometheus, [target_of(url)])

            def answered(query):
                def ready():
                    requests_to(url)  # traffic for as long as it takes
                    result = scraper.api("query", query=query)["result"]
                    values = {
                        series["metric"].get("http_route"): float(
                            series["value"][1]
                        )
                        for series in result
                    }
                    if set(values) == ROUTES and all(
                        value > 0 and math.isfinite(value)
                        for value in values.values()
                    ):
                        return result
                    return None

                return poll(ready, what=f"{query} for {ROUTES}")

            rates = await asyncio.to_thread(answered, RATE)
            quantiles = await asyncio.to_thread(answered, QUANTILE)

        assert [{"http_route": r} for r in sorted(ROUTES)] == sorted(
            (series["metric"] for series in rates),
            key=lambda m: m["http_route"],
        )
        assert [{"http_route": r} for r in sorted(ROUTES)] == sorted(
            (series["metric"] for series in quantiles),
            key=lambda m: m["http_route"],
        )


class TestExemplarsInPrometheus:
    async def test_query_exemplars(self, registry, prometheus):
        """Prometheus with exemplar storage scrapes OpenMetrics and returns
        the trace of a request through /api/v1/query_exemplars."""
        sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
        sampling = pytest.importorskip("opentelemetry.sdk.trace.sampling")
        tracer = sdk_trace.TracerProvider(
            sampler=sampling.ALWAYS_ON
        ).get_tracer("tests")
        traces = set()

        @web.middleware
        async def traced(request, handler):
            with tracer.start_as_current_span("request") as span:
                traces.add(f"{span.get_span_context().trace_id:032x}")
                return await handler(request)

        app = instrumented(registry, traced)
        started = time.time()

        async with serving(app) as url:
            scraper = await asyncio.to_thread(
                functools.partial(
                    prometheus,
                    [target_of(url)],
                    flags=["--enable-feature=exemplar-storage"],
                )
            )

            def stored():
                requests_to(url)  # traffic for as long as it takes
                found = scraper.api(
                    "query_exemplars",
                    query="http_server_request_duration_seconds_bucket",
                    start=str(started - 60),
                    end=str(time.time() + 60),
                )
                return [
                    (series["seriesLabels"], exemplar["labels"])
                    for series in found
                    for exemplar in series["exemplars"]
                    if exemplar["labels"].get("trace_id") in traces
                ]

            found = await asyncio.to_thread(
                poll, stored, what="an exemplar of ours in Prometheus"
            )

        series_labels, labels = found[0]
        assert {"trace_id", "span_id"} == set(labels)
        assert series_labels["http_route"] in ROUTES
        assert "prom_async" == series_labels["job"]
