"""
prom_async.aio.collect with each exporter: mounted in an application, in a
thread while the application's loop is blocked, and scraped by Prometheus.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import Gauge

from fixtures_servers import DEADLINE, eventually
from prom_async.aio.web import (
    add_metrics_route,
    metrics_handler,
    start_http_server_in_thread,
)
from test_collect_support import (
    LOOPBACK,
    SUCCESS,
    Hang,
    block_the_loop_until,
    brief_locks,
    hooks,
    scrape,
    scrape_blocking,
)


__all__ = ["brief_locks", "hooks"]


class TestMounted:
    async def test_add_metrics_route(self, registry, hooks, http):
        """The metrics route of an application runs the hooks."""
        gauge = Gauge("queue_depth", "Jobs waiting.", registry=registry)

        async def depth() -> None:
            gauge.set(4)

        hooks(depth, registry=registry, name="depth")
        app = web.Application()
        add_metrics_route(app, "/internal/metrics", registry=registry)
        server = TestServer(app, host=LOOPBACK)
        await server.start_server()
        try:
            scraped = await scrape(
                http, str(server.make_url("/internal/metrics"))
            )
        finally:
            await server.close()

        assert (4.0, 1.0) == (
            scraped.value("queue_depth"),
            scraped.success("depth"),
        )

    async def test_metrics_handler(self, registry, hooks, http):
        """A handler from metrics_handler() runs the hooks, within the
        scraper's deadline."""
        hooks(Hang(), registry=registry, name="hang", timeout=60)
        app = web.Application()
        app.router.add_get("/m", metrics_handler(registry=registry))
        server = TestServer(app, host=LOOPBACK)
        await server.start_server()
        try:
            scraped = await scrape(
                http, str(server.make_url("/m")), scrape_timeout="0.4"
            )
        finally:
            await server.close()

        assert (200, 0.0) == (scraped.status, scraped.success("hang"))

    async def test_not_in_the_scrapes_context(self, registry, hooks, http):
        """A run is shared by scrapes and belongs to none: the hook does
        not see the context variables of the scrape's handler."""
        request_id = contextvars.ContextVar("request_id", default="none")
        seen = []

        async def where() -> None:
            seen.append(request_id.get())

        @web.middleware
        async def tag(request, handler):
            request_id.set("scrape-1")
            return await handler(request)

        hooks(where, registry=registry, name="where")
        app = web.Application(middlewares=[tag])
        add_metrics_route(app, registry=registry)
        server = TestServer(app, host=LOOPBACK)
        await server.start_server()
        try:
            scraped = await scrape(http, str(server.make_url("/metrics")))
        finally:
            await server.close()

        assert (1.0, ["none"]) == (scraped.success("where"), seen)


class TestThreadedExporter:
    async def test_answers_while_the_loop_is_blocked(self, registry, hooks):
        """With the application's loop blocked, the exporter in its own
        thread answers within the deadline: the hook counts as failed and
        its last values are served; once the loop runs again, so does the
        hook."""
        gauge = Gauge("queue_depth", "Jobs waiting.", registry=registry)
        runs = 0

        async def depth() -> None:
            nonlocal runs
            runs += 1
            gauge.set(runs)

        hooks(depth, registry=registry, name="depth", timeout=0.3)
        server = await asyncio.to_thread(
            start_http_server_in_thread, addr=LOOPBACK, registry=registry
        )
        try:
            before = await asyncio.to_thread(
                scrape_blocking, server.metrics_url
            )
            answered = threading.Event()

            def scrape_once_blocked():
                try:
                    return scrape_blocking(server.metrics_url)
                finally:
                    answered.set()

            blocked_scrape = asyncio.get_running_loop().run_in_executor(
                None, scrape_once_blocked
            )
            answered_while_blocked = block_the_loop_until(answered, DEADLINE)
            during = await blocked_scrape
            # The run handed over while the loop was blocked runs now.
            await eventually(lambda: runs == 2, what="the handed-over run")
            after = await asyncio.to_thread(
                scrape_blocking, server.metrics_url
            )
        finally:
            await asyncio.to_thread(server.close)

        assert answered_while_blocked
        assert [(200, 1.0, 1.0), (200, 1.0, 0.0)] == [
            (
                answer.status,
                answer.value("queue_depth"),
                answer.success("depth"),
            )
            for answer in (before, during)
        ]
        assert (1.0, 3.0) == (
            after.success("depth"),
            after.value("queue_depth"),
        )


class TestPrometheus:
    async def test_scraped_within_prometheus_timeout(
        self, registry, hooks, prometheus
    ):
        """Prometheus (scrape timeout 1 s) keeps the target up while one
        hook hangs for far longer, and stores both hooks' health and the
        other hook's value."""
        gauge = Gauge("pool_size", "Connections open.", registry=registry)

        async def pool_size() -> None:
            gauge.set(12)

        hooks(Hang(), registry=registry, name="hang", timeout=60)
        hooks(pool_size, registry=registry, name="pool")
        server = await asyncio.to_thread(
            start_http_server_in_thread, addr=LOOPBACK, registry=registry
        )
        target = f"{LOOPBACK}:{server.socket.port}"
        try:
            scraper = await asyncio.to_thread(prometheus, [target])
            await asyncio.to_thread(scraper.wait_for_target_up, target)
            failed = await asyncio.to_thread(
                scraper.wait_for_value, f'{SUCCESS}{{hook="hang"}}', "0"
            )
            succeeded = await asyncio.to_thread(
                scraper.wait_for_value, f'{SUCCESS}{{hook="pool"}}', "1"
            )
            value = await asyncio.to_thread(
                scraper.wait_for_value, "pool_size", "12"
            )
            up = await asyncio.to_thread(scraper.wait_for_value, "up", "1")
        finally:
            await asyncio.to_thread(server.close)

        assert [1, 1, 1, 1] == [
            len(failed),
            len(succeeded),
            len(value),
            len(up),
        ]
