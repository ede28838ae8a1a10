"""
prom_async.aio.http.server_middleware and instrument_app: what is recorded,
under which names and labels, and which requests are left out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import string

import aiohttp
import pytest

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram

from prom_async.aio import _http_server
from prom_async.aio.http import (
    DEFAULT_EXCLUDE_PATHS,
    DEFAULT_KNOWN_METHODS,
    instrument_app,
    server_middleware,
)
from prom_async.aio.web import add_metrics_route, metrics_handler, server_stats
from test_http_server_support import (
    ACTIVE,
    DURATION,
    active,
    app_with,
    ok,
    recorded,
    requests,
    samples,
    serving,
)


async def user(request: web.Request) -> web.Response:
    return web.Response(text=request.match_info["id"])


class TestServerMiddleware:
    async def test_records_a_request(self, registry, http):
        """A request is counted under its method, route template and
        status, with no error type."""
        app = app_with(
            server_middleware(registry=registry), routes={"/users/{id}": user}
        )

        async with serving(app) as url, http.get(f"{url}/users/42") as got:
            body = await got.text()

        assert ("42", 200) == (body, got.status)
        assert {("GET", "/users/{id}", "200", ""): 1.0} == recorded(registry)

    async def test_active_requests(self, registry, http):
        """http_server_active_requests counts the requests being served,
        by method."""
        during = []

        async def handler(request):
            during.append(active(registry, "POST"))
            return web.Response()

        app = web.Application(
            middlewares=[server_middleware(registry=registry)]
        )
        app.router.add_post("/", handler)

        async with serving(app) as url, http.post(url) as got:
            assert 200 == got.status

        assert [1.0] == during
        assert 0.0 == active(registry, "POST")

    async def test_names_and_types(self, registry):
        """The metrics carry OpenTelemetry's HTTP server names as
        Prometheus sees them."""
        server_middleware(registry=registry, body_sizes=True)

        families = {m.name: m.type for m in registry.collect()}

        assert {
            "http_server_request_duration_seconds": "histogram",
            "http_server_active_requests": "gauge",
            "http_server_active_websocket_connections": "gauge",
            "http_server_websocket_connection_duration_seconds": "histogram",
            "http_server_request_body_size_bytes": "histogram",
            "http_server_response_body_size_bytes": "histogram",
        } == families

    async def test_body_sizes_are_opt_in(self, registry):
        """Without body_sizes=True there are no size histograms."""
        server_middleware(registry=registry)

        assert {
            DURATION,
            ACTIVE,
            "http_server_active_websocket_connections",
            "http_server_websocket_connection_duration_seconds",
        } == {m.name for m in registry.collect()}

    async def test_namespace(self, registry, http):
        """namespace= prefixes every name."""
        app = app_with(
            server_middleware(registry=registry, namespace="shop"),
            routes={"/": ok},
        )

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        assert {
            "shop_http_server_request_duration_seconds",
            "shop_http_server_active_requests",
            "shop_http_server_active_websocket_connections",
            "shop_http_server_websocket_connection_duration_seconds",
        } == {m.name for m in registry.collect()}
        assert 1.0 == requests(
            registry,
            route="/",
            status=200,
            name="shop_http_server_request_duration_seconds",
        )

    async def test_default_buckets(self, registry, http):
        """The duration's buckets are prometheus_client's by default."""
        app = app_with(server_middleware(registry=registry), routes={"/": ok})

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        bounds = sorted(
            float(dict(labels)["le"])
            for labels in samples(registry, f"{DURATION}_bucket")
        )
        assert list(Histogram.DEFAULT_BUCKETS) == bounds

    async def test_buckets(self, registry, http):
        """buckets= sets the duration's buckets, in any sequence form."""
        app = app_with(
            server_middleware(registry=registry, buckets=[1, 2]),
            routes={"/": ok},
        )

        async with serving(app) as url, http.get(url) as got:
            assert 200 == got.status

        bounds = {
            dict(labels)["le"]
            for labels in samples(registry, f"{DURATION}_bucket")
        }
        assert {"1.0", "2.0", "+Inf"} == bounds
        assert server_middleware(registry=registry, buckets=(1.0, 2.0, "inf"))

    @pytest.mark.parametrize("buckets", ["1,2", 5])
    def test_buckets_must_be_numbers(self, registry, buckets):
        """buckets= that is not a sequence of numbers is refused."""
        with pytest.raises(TypeError, match="buckets"):
            server_middleware(registry=registry, buckets=buckets)

    async def test_two_apps_share_the_families(self, registry, http):
        """Two middlewares with one registry and namespace count into the
        same metrics instead of raising Duplicated timeseries."""
        first = app_with(
            server_middleware(registry=registry), routes={"/": ok}
        )
        second = app_with(
            server_middleware(registry=registry), routes={"/": ok}
        )

        async with serving(first) as one, serving(second) as two:
            for url in (one, two):
                async with http.get(url) as got:
                    assert 200 == got.status

        assert 2.0 == requests(registry, route="/", status=200)

    def test_a_clash_is_a_clear_error(self, registry):
        """Another middleware with other labels or buckets on the same
        names is refused, naming the metric."""
        server_middleware(registry=registry)

        with pytest.raises(ValueError, match=DURATION):
            server_middleware(registry=registry, buckets=(1,))
        with pytest.raises(ValueError, match="label names"):
            server_middleware(
                registry=registry, labels={"tenant": lambda request: "a"}
            )

    def test_a_clash_with_a_metric_of_the_user(self, registry):
        """A metric of the user's under one of the names is refused by
        prometheus_client."""
        Gauge(ACTIVE, "Mine.", registry=registry)

        with pytest.raises(ValueError, match="Duplicated"):
            server_middleware(registry=registry)

    async def test_labels(self, registry, http):
        """labels= adds labels whose values come from the request."""
        app = app_with(
            server_middleware(
                registry=registry,
                labels={
                    "tenant": lambda request: request.headers["X-Tenant"],
                    "api": lambda request: 2,
                },
            ),
            routes={"/": ok},
        )

        async with (
            serving(app) as url,
            http.get(url, headers={"X-Tenant": "acme"}) as got,
        ):
            assert 200 == got.status

        assert 1.0 == requests(
            registry, route="/", status=200, tenant="acme", api="2"
        )
        assert 0.0 == registry.get_sample_value(
            ACTIVE,
            {"http_request_method": "GET", "tenant": "acme", "api": "2"},
        )

    async def test_a_failing_labels_callable(self, registry, http, caplog):
        """A labels= callable that raises gives an empty value; the request
        is served, and only the first failure is logged as an error."""

        def tenant(request):
            raise KeyError("X-Tenant")

        app = app_with(
            server_middleware(registry=registry, labels={"tenant": tenant}),
            routes={"/": ok},
        )

        with caplog.at_level(logging.DEBUG, logger=_http_server.__name__):
            async with serving(app) as url:
                for _ in range(2):
                    async with http.get(url) as got:
                        assert 200 == got.status

        assert 2.0 == requests(registry, route="/", status=200, tenant="")
        assert ["ERROR", "DEBUG"] == [r.levelname for r in caplog.records]
        assert "labels= callable for 'tenant'" in caplog.records[0].message
        assert isinstance(caplog.records[0].exc_info[1], KeyError)

    @pytest.mark.parametrize(
        ("labels", "error", "match"),
        [
            ({"http_route": str}, ValueError, "own labels"),
            ({"tenant": "acme"}, TypeError, "callable"),
            ([("tenant", str)], TypeError, "map label names"),
        ],
    )
    def test_wrong_labels(self, registry, labels, error, match):
        """labels= must map new label names to callables."""
        with pytest.raises(error, match=match):
            server_middleware(registry=registry, labels=labels)

    async def test_more_series_than_cached(self, registry, http, monkeypatch):
        """Past the cache of label values, every request is still counted
        in its own series."""
        monkeypatch.setattr(_http_server, "_CACHE_LIMIT", 1)
        app = app_with(
            server_middleware(registry=registry),
            routes={"/a": ok, "/b": ok, "/c": ok},
        )

        async with serving(app) as url:
            for path in ("/a", "/b", "/c") * 2:
                async with http.get(f"{url}{path}") as got:
                    assert 200 == got.status

        assert {
            ("GET", "/a", "200", ""): 2.0,
            ("GET", "/b", "200", ""): 2.0,
            ("GET", "/c", "200", ""): 2.0,
        } == recorded(registry)

    def test_wrong_unmatched_route(self, registry):
        """unmatched_route= must be a string."""
        with pytest.raises(TypeError, match="unmatched_route"):
            server_middleware(registry=registry, unmatched_route=None)


class TestRoutes:
    async def test_template_not_path(self, registry, http):
        """Every path a dynamic route matches is one http_route: its
        template, with the pattern of a variable left out."""
        app = web.Application(
            middlewares=[server_middleware(registry=registry)]
        )
        app.router.add_get(r"/orders/{id:\d+}", user)

        async with serving(app) as url:
            for number in range(3):
                async with http.get(f"{url}/orders/{number}") as got:
                    assert 200 == got.status

        assert {("GET", "/orders/{id}", "200", ""): 3.0} == recorded(registry)

    async def test_sub_application_prefix(self, registry, http):
        """A route of a sub-application includes its prefix."""
        api = web.Application()
        api.router.add_get("/items/{id}", user)
        app = web.Application(
            middlewares=[server_middleware(registry=registry)]
        )
        app.add_subapp("/api/v1", api)

        async with (
            serving(app) as url,
            http.get(f"{url}/api/v1/items/7") as got,
        ):
            assert 200 == got.status

        assert {("GET", "/api/v1/items/{id}", "200", ""): 1.0} == recorded(
            registry
        )

    async def test_static_files(self, registry, http, tmp_path):
        """Static files are one route: the prefix and {filename}."""
        (tmp_path / "a.css").write_text("a")
        (tmp_path / "b.css").write_text("b")
        app = web.Application(
            middlewares=[server_middleware(registry=registry)]
        )
        app.router.add_static("/static/", tmp_path)

        async with serving(app) as url:
            for name in ("a.css", "b.css"):
                async with http.get(f"{url}/static/{name}") as got:
                    assert 200 == got.status

        assert {("GET", "/static/{filename}", "200", ""): 2.0} == recorded(
            registry
        )

    async def test_head_of_a_get_route(self, registry, http):
        """HEAD of a GET route is recorded as HEAD, on the same route."""
        app = app_with(server_middleware(registry=registry), routes={"/": ok})

        async with serving(app) as url, http.head(url) as got:
            assert 200 == got.status

        assert {("HEAD", "/", "200", ""): 1.0} == recorded(registry)

    async def test_unmatched(self, registry, http):
        """Requests that match no route share one http_route; 404 and 405
        are told apart by status."""
        app = app_with(server_middleware(registry=registry), routes={"/": ok})

        async with serving(app) as url:
            for path in ("/nope", "/other/thing"):
                async with http.get(f"{url}{path}") as got:
                    assert 404 == got.status
            async with http.post(url) as got:
                assert 405 == got.status

        assert {
            ("GET", "", "404", ""): 2.0,
            ("POST", "", "405", ""): 1.0,
        } == recorded(registry)

    async def test_unmatched_route(self, registry, http):
        """unmatched_route= names the route of unmatched requests."""
        app = app_with(
            server_middleware(registry=registry, unmatched_route="unmatched"),
            routes={"/": ok},
        )

        async with serving(app) as url, http.get(f"{url}/nope") as got:
            assert 404 == got.status

        assert {("GET", "unmatched", "404", ""): 1.0} == recorded(registry)

    async def test_unknown_methods(self, registry, http):
        """A method outside the known set is recorded as _OTHER."""
        app = web.Application(
            middlewares=[server_middleware(registry=registry)]
        )
        app.router.add_route("*", "/", ok)

        async with serving(app) as url:
            for method in ("PURGE", "PROPFIND", "GET"):
                async with http.request(method, url) as got:
                    assert 200 == got.status

        assert {
            ("_OTHER", "/", "200", ""): 2.0,
            ("GET", "/", "200", ""): 1.0,
        } == recorded(registry)

    def test_default_known_methods(self):
        """The known methods are OpenTelemetry's."""
        assert {
            "CONNECT",
            "DELETE",
            "GET",
            "HEAD",
            "OPTIONS",
            "PATCH",
            "POST",
            "PUT",
            "QUERY",
            "TRACE",
        } == DEFAULT_KNOWN_METHODS

    async def test_known_methods(self, registry, http):
        """known_methods= replaces the known set."""
        app = web.Application(
            middlewares=[
                server_middleware(registry=registry, known_methods=["PURGE"])
            ]
        )
        app.router.add_route("*", "/", ok)

        async with serving(app) as url:
            for method in ("PURGE", "GET"):
                async with http.request(method, url) as got:
                    assert 200 == got.status

        assert {
            ("PURGE", "/", "200", ""): 1.0,
            ("_OTHER", "/", "200", ""): 1.0,
        } == recorded(registry)

    def test_known_methods_from_the_environment(self, registry, monkeypatch):
        """OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS replaces the known set
        when known_methods= is not given."""
        monkeypatch.setenv(
            "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET, PURGE,,"
        )

        middleware = server_middleware(registry=registry)

        assert frozenset({"GET", "PURGE"}) == middleware._known_methods

    @pytest.mark.parametrize("methods", ["GET", [b"GET"]])
    def test_wrong_known_methods(self, registry, methods):
        """known_methods= must be a collection of strings."""
        with pytest.raises(TypeError, match="known_methods"):
            server_middleware(registry=registry, known_methods=methods)


class TestExclusions:
    async def test_metrics_path_by_default(self, registry, http):
        """/metrics is left out by default, whatever serves it."""

        async def other_metrics(request):
            return web.Response(text="# EOF\n")

        app = app_with(
            server_middleware(registry=registry),
            routes={"/metrics": other_metrics, "/": ok},
        )

        async with serving(app) as url:
            for path in ("/metrics", "/"):
                async with http.get(f"{url}{path}") as got:
                    assert 200 == got.status

        assert {("GET", "/", "200", ""): 1.0} == recorded(registry)
        assert ("/metrics",) == DEFAULT_EXCLUDE_PATHS

    async def test_prom_async_metrics_handlers_anywhere(self, registry, http):
        """Requests answered by prom_async's metrics handlers are never
        measured, wherever they are mounted."""
        app = web.Application(
            middlewares=[
                server_middleware(registry=registry, exclude_paths=())
            ]
        )
        add_metrics_route(app, "/internal/metrics", registry=registry)
        app.router.add_get("/stats", metrics_handler(registry=registry))
        app.router.add_get("/global", server_stats)

        async with serving(app) as url:
            for path in (
                "/internal/metrics",
                "/internal/metrics/",
                "/stats",
                "/global",
            ):
                async with http.get(f"{url}{path}") as got:
                    assert 200 == got.status

        assert {} == recorded(registry)

    async def test_exclude_paths(self, registry, http):
        """exclude_paths= takes whole paths and patterns that match whole
        paths; it replaces the default list."""
        app = web.Application(
            middlewares=[
                server_middleware(
                    registry=registry,
                    exclude_paths=["/healthz", re.compile(r"/static/.*")],
                )
            ]
        )
        app.router.add_get("/{tail:.*}", ok)

        async with serving(app) as url:
            for path in (
                "/healthz",
                "/healthz/more",
                "/static/a.css",
                "/static",
                "/metrics",
            ):
                async with http.get(f"{url}{path}") as got:
                    assert 200 == got.status

        assert {("GET", "/{tail}", "200", ""): 3.0} == recorded(registry)

    @pytest.mark.parametrize(
        "paths", ["/healthz", re.compile("/x"), [re.compile(b"/x")], [3]]
    )
    def test_wrong_exclude_paths(self, registry, paths):
        """exclude_paths= must be a collection of strings and str
        patterns."""
        with pytest.raises(TypeError, match="exclude_paths"):
            server_middleware(registry=registry, exclude_paths=paths)


class TestCardinality:
    async def test_random_requests_make_few_series(self, registry, http):
        """10,000 requests with random paths, methods and query strings
        make a small, fixed number of series."""
        app = web.Application(
            middlewares=[server_middleware(registry=registry)]
        )
        app.router.add_get("/users/{id}", user)
        app.router.add_route("*", "/items", ok)
        rng = random.Random(9)
        methods = ["GET", "POST", "DELETE", "PURGE", "PROPFIND", "MKCOL"]

        def word():
            return "".join(
                rng.choices(string.ascii_letters + string.digits, k=8)
            )

        def path():
            return rng.choice(
                [f"/users/{word()}", "/items", f"/{word()}/{word()}"]
            )

        async with serving(app) as url:
            connector = aiohttp.TCPConnector(limit=20)
            async with aiohttp.ClientSession(connector=connector) as client:

                async def send(number):
                    async with client.request(
                        rng.choice(methods),
                        f"{url}{path()}?{word()}={word()}&n={number}",
                    ) as got:
                        await got.read()

                for start in range(0, 10_000, 500):
                    await asyncio.gather(
                        *(send(n) for n in range(start, start + 500))
                    )

        counts = recorded(registry)
        assert 10_000.0 == sum(counts.values())
        # /items: each of GET, POST, DELETE and _OTHER; /users/{id}: GET,
        # or an unmatched 405 for each other method; anything else: an
        # unmatched 404 for each method.
        assert 12 == len(counts)
        assert 12 * len(Histogram.DEFAULT_BUCKETS) == len(
            samples(registry, f"{DURATION}_bucket")
        )
        assert {"GET", "POST", "DELETE", "_OTHER"} == {
            method for method, *_ in counts
        }
        assert {"/users/{id}", "/items", ""} == {
            route for _, route, *_ in counts
        }


class TestInstrumentApp:
    async def test_puts_the_middleware_first(self, registry, http):
        """instrument_app() adds the middleware before the others and
        returns it."""

        @web.middleware
        async def teapot(request, handler):
            await handler(request)
            raise web.HTTPServiceUnavailable

        app = app_with(teapot, routes={"/": ok})

        middleware = instrument_app(app, registry=registry)

        async with serving(app) as url, http.get(url) as got:
            assert 503 == got.status
        assert [middleware, teapot] == list(app.middlewares)
        assert {("GET", "/", "503", "503"): 1.0} == recorded(registry)

    async def test_options(self, registry, http):
        """instrument_app() takes server_middleware()'s options."""
        app = app_with(routes={"/": ok})

        instrument_app(
            app,
            registry=registry,
            namespace="shop",
            buckets=(1,),
            labels={"tenant": lambda request: "acme"},
            exclude_paths=(),
            known_methods=("GET",),
            unmatched_route="none",
            body_sizes=True,
            body_size_buckets=(10,),
            websocket_buckets=(60,),
            exemplar=False,
        )

        async with serving(app) as url, http.get(f"{url}/x") as got:
            assert 404 == got.status
        assert 1.0 == registry.get_sample_value(
            "shop_http_server_request_body_size_bytes_bucket",
            {
                "http_request_method": "GET",
                "http_route": "none",
                "http_response_status_code": "404",
                "error_type": "",
                "tenant": "acme",
                "le": "10.0",
            },
        )

    def test_twice(self, registry):
        """A second instrument_app() on one application is refused."""
        app = web.Application()
        instrument_app(app, registry=registry)

        with pytest.raises(ValueError, match="already"):
            instrument_app(app, registry=registry)

    async def test_started_application(self, registry):
        """An application that has started is refused."""
        app = web.Application()
        async with serving(app):
            with pytest.raises(RuntimeError, match="before the application"):
                instrument_app(app, registry=CollectorRegistry())
