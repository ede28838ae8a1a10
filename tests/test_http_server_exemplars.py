"""
prom_async.aio.http.server_middleware: exemplars from the current trace.
"""

from __future__ import annotations

import sys

import pytest

from aiohttp import web

from prom_async.aio.http import server_middleware
from test_http_server_support import DURATION, app_with, ok, serving


trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
sampling = pytest.importorskip("opentelemetry.sdk.trace.sampling")


@pytest.fixture(scope="module")
def tracer():
    """
    A tracer of a provider of its own, so no global state is touched.
    """
    provider = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_ON)
    return provider.get_tracer("tests")


def traced_by(tracer, spans):
    """
    A middleware that serves each request in a span of its own, as a
    tracing middleware placed before the metrics does.
    """

    @web.middleware
    async def traced(request, handler):
        with tracer.start_as_current_span("request") as span:
            spans.append(span.get_span_context())
            return await handler(request)

    return traced


def exemplars(registry, name=f"{DURATION}_bucket"):
    return [
        sample.exemplar.labels
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name and sample.exemplar is not None
    ]


class TestExemplars:
    async def test_from_the_current_span(self, registry, http, tracer):
        """By default, the duration carries the trace and span of the span
        current when the middleware is called."""
        spans = []
        app = app_with(
            traced_by(tracer, spans),
            server_middleware(registry=registry),
            routes={"/": ok},
        )

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        assert [
            {
                "trace_id": f"{spans[0].trace_id:032x}",
                "span_id": f"{spans[0].span_id:016x}",
            }
        ] == exemplars(registry)

    async def test_websocket_connections_too(self, registry, http, tracer):
        """A WebSocket connection's duration carries its trace too."""
        spans = []

        async def echo(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.receive()
            return ws

        app = app_with(
            traced_by(tracer, spans),
            server_middleware(registry=registry),
            routes={"/ws": echo},
        )

        async with serving(app) as url:
            async with http.ws_connect(f"{url}/ws") as ws:
                await ws.send_str("hello")
            await ws.close()

        name = "http_server_websocket_connection_duration_seconds_bucket"
        assert [f"{spans[0].trace_id:032x}"] == [
            labels["trace_id"] for labels in exemplars(registry, name)
        ]

    async def test_no_span(self, registry, http):
        """Without a current span there is no exemplar."""
        app = app_with(server_middleware(registry=registry), routes={"/": ok})

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        assert [] == exemplars(registry)

    async def test_not_sampled(self, registry, http):
        """A span that is not sampled gives no exemplar."""
        provider = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_OFF)
        app = app_with(
            traced_by(provider.get_tracer("t"), []),
            server_middleware(registry=registry),
            routes={"/": ok},
        )

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        assert [] == exemplars(registry)

    async def test_turned_off(self, registry, http, tracer):
        """exemplar=False leaves them out."""
        app = app_with(
            traced_by(tracer, []),
            server_middleware(registry=registry, exemplar=False),
            routes={"/": ok},
        )

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        assert [] == exemplars(registry)

    async def test_a_callable(self, registry, http):
        """exemplar= takes a callable that returns the labels."""
        app = app_with(
            server_middleware(
                registry=registry, exemplar=lambda: {"request_id": "r-1"}
            ),
            routes={"/": ok},
        )

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        assert [{"request_id": "r-1"}] == exemplars(registry)

    def test_wrong_exemplar(self, registry):
        """exemplar= that is neither a flag nor a callable is refused."""
        with pytest.raises(TypeError, match="exemplar"):
            server_middleware(registry=registry, exemplar="trace")

    async def test_without_opentelemetry(self, registry, http, monkeypatch):
        """Without the OpenTelemetry API the default asks nothing."""
        monkeypatch.setitem(sys.modules, "opentelemetry", None)

        middleware = server_middleware(registry=registry)

        assert None is middleware._source
        app = app_with(middleware, routes={"/": ok})
        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status
        assert [] == exemplars(registry)
