"""
Uses of the public API that mypy --strict must accept, and, marked with
``type: ignore[...]``, uses it must refuse (strict mode reports an ignore
that is not needed, so a wrong use that starts to pass fails the check).

This file is type-checked, not run.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiohttp

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from prom_async.aio import (
    ExceptionCounter,
    InProgressTracker,
    Timer,
    count_exceptions,
    time,
    track_inprogress,
)
from prom_async.aio.http import (
    client_trace_config,
    instrument_app,
    server_middleware,
)
from prom_async.aio.loop import LoopMonitor
from prom_async.aio.prefork import MultiprocessExporter, worker_exporter
from prom_async.aio.push import (
    Pusher,
    PushError,
    delete_from_gateway,
    push_to_gateway,
)
from prom_async.aio.sd import ConsulAgent, ConsulRegistrationError
from prom_async.aio.web import (
    MetricsHTTPServer,
    ThreadedMetricsHTTPServer,
    add_metrics_route,
    metrics_handler,
    start_http_server,
    start_http_server_in_thread,
)
from prom_async.types import (
    IncDecrementer,
    Incrementer,
    Observer,
    ServiceDiscovery,
)


REQUEST_TIME = Histogram("request_seconds", "Request time.")
BY_METHOD = Histogram("by_method_seconds", "Time by method.", ["method"])
ERRORS = Counter("errors", "Errors.")
ERRORS_BY_TYPE = Counter("errors_by_type", "Errors by type.", ["type"])
INPROGRESS = Gauge("inprogress", "In progress.")


@time(REQUEST_TIME)
@count_exceptions(ERRORS)
@track_inprogress(INPROGRESS)
async def fetch(url: str, *, retries: int = 3) -> bytes:
    return url.encode() * retries


@time(BY_METHOD, labels=lambda method, path: [method])
async def handle(method: str, path: str) -> int:
    return len(path)


@count_exceptions(ERRORS_BY_TYPE, exc_labels=lambda e: [type(e).__name__])
def parse(text: str) -> int:
    return int(text)


@time(REQUEST_TIME)
async def stream(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class Service:
    @time(REQUEST_TIME)
    async def method(self, x: int) -> int:
        return x

    @time(REQUEST_TIME)
    @classmethod
    async def build(cls) -> Service:
        return cls()


async def uses() -> None:
    body: bytes = await fetch("http://localhost/", retries=1)
    status: int = await handle("GET", "/")
    number: int = parse("1")
    numbers: list[int] = [n async for n in stream(3)]
    value: int = await Service().method(1)
    service: Service = await Service.build()

    slept: int = await time(REQUEST_TIME, asyncio.sleep(0, 0))
    task: asyncio.Task[str] = asyncio.create_task(
        time(REQUEST_TIME, asyncio.sleep(0, "x"))
    )
    counted: int = await count_exceptions(ERRORS, asyncio.sleep(0, 1))
    tracked: str = await track_inprogress(INPROGRESS, asyncio.sleep(0, "t"))

    with time(REQUEST_TIME):
        pass
    async with count_exceptions(ERRORS, exc=(KeyError, ValueError)):
        pass
    with track_inprogress(INPROGRESS):
        pass

    timer: Timer = time(BY_METHOD.labels("GET"))
    counter: ExceptionCounter = count_exceptions(ERRORS)
    tracker: InProgressTracker = track_inprogress(INPROGRESS)
    decorator: Callable[
        [Callable[[int], Coroutine[Any, Any, int]]],
        Callable[[int], Coroutine[Any, Any, int]],
    ] = time(REQUEST_TIME)

    print(
        body,
        status,
        number,
        numbers,
        value,
        service,
        slept,
        task,
        counted,
        tracked,
        timer,
        counter,
        tracker,
        decorator,
    )


class MyObserver:
    def observe(self, value: float) -> None:
        pass


class MyCounter:
    def inc(self, amount: float = 1) -> None:
        pass


class MyGauge(MyCounter):
    def dec(self, amount: float = 1) -> None:
        pass


observer: Observer = MyObserver()
incrementer: Incrementer = MyCounter()
gauge_like: IncDecrementer = MyGauge()
custom_timer = time(MyObserver())
custom_tracker = track_inprogress(MyGauge())


async def wrong_uses() -> None:
    # The decorated signature is kept: wrong arguments are caught.
    await fetch(1)  # type: ignore[arg-type]
    await fetch("u", retries="3")  # type: ignore[arg-type]
    # The result type is kept.
    text: str = await fetch("u")  # type: ignore[assignment]
    # A counter cannot observe; a histogram cannot go down.
    time(ERRORS)  # type: ignore[call-overload]
    track_inprogress(REQUEST_TIME)  # type: ignore[call-overload]
    # exc must be exception classes.
    count_exceptions(ERRORS, exc=int)  # type: ignore[arg-type]
    # Something to observe must have observe().
    time(MyCounter())  # type: ignore[call-overload]
    print(text)


async def serving() -> None:
    agent: ServiceDiscovery = ConsulAgent("app-metrics", tags=["prod"])
    server: MetricsHTTPServer = await start_http_server(
        port=0, registry=CollectorRegistry(), service_discovery=agent
    )
    async with server:
        registered: bool = server.is_registered
        url: str = server.url
    threaded: ThreadedMetricsHTTPServer = start_http_server_in_thread(
        port=0, service_discovery=ConsulAgent()
    )
    with threaded:
        port: int = threaded.socket.port
    error: type[Exception] = ConsulRegistrationError
    print(registered, url, port, error)
    # The registry must be a registry, the agent a ServiceDiscovery.
    await start_http_server(registry=REQUEST_TIME)  # type: ignore[arg-type]
    await start_http_server(service_discovery="consul")  # type: ignore[arg-type]


async def timeouts() -> None:
    # Seconds, int or float, for the connections and the scrapes.
    server: MetricsHTTPServer = await start_http_server(
        idle_timeout=75,
        header_timeout=10.0,
        render_timeout=5,
        write_timeout=2.5,
    )
    threaded: ThreadedMetricsHTTPServer = start_http_server_in_thread(
        idle_timeout=30.0,
        header_timeout=5,
        render_timeout=9.5,
        write_timeout=10,
    )
    handler: Callable[[web.Request], Awaitable[web.Response]] = (
        metrics_handler(render_timeout=5, write_timeout=2.5)
    )
    app = web.Application()
    add_metrics_route(app, render_timeout=9.5, write_timeout=10)
    app.cleanup_ctx.append(
        worker_exporter(
            idle_timeout=75,
            header_timeout=10.0,
            render_timeout=5,
            write_timeout=2.5,
        )
    )
    hooks: MultiprocessExporter = MultiprocessExporter(
        idle_timeout=30.0,
        header_timeout=5,
        render_timeout=9.5,
        write_timeout=10,
    )
    print(server, threaded, handler, hooks)
    # A timeout is a number of seconds, not a string.
    await start_http_server(idle_timeout="75")  # type: ignore[arg-type]
    start_http_server_in_thread(header_timeout="10")  # type: ignore[arg-type]
    metrics_handler(render_timeout="5")  # type: ignore[arg-type]
    add_metrics_route(app, write_timeout="10")  # type: ignore[arg-type]
    worker_exporter(render_timeout="5")  # type: ignore[arg-type]
    MultiprocessExporter(write_timeout="10")  # type: ignore[arg-type]


async def instrumenting_a_service() -> None:
    app = web.Application(middlewares=[server_middleware()])
    instrument_app(web.Application(), namespace="shop", exemplar=False)
    trace: aiohttp.TraceConfig = client_trace_config(response_duration=True)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        print(session)
    monitor = LoopMonitor(interval=0.5)
    app.cleanup_ctx.append(monitor.cleanup_ctx)
    async with LoopMonitor(registry=CollectorRegistry()):
        pass
    # Exemplars: True, a callable, or None.
    timed: Timer = time(REQUEST_TIME, exemplar=lambda: {"trace_id": "x"})
    print(timed)
    time(REQUEST_TIME, exemplar="yes")  # type: ignore[call-overload]
    server_middleware(buckets=3)  # type: ignore[arg-type]


async def pushing() -> None:
    async with Pusher("127.0.0.1:9091", "batch") as pusher:
        Counter("rows", "Rows.", registry=pusher.registry).inc()
    await push_to_gateway("127.0.0.1:9091", "batch", CollectorRegistry())
    await delete_from_gateway("127.0.0.1:9091", "batch", {"shard": "1"})
    error: type[OSError] = PushError
    print(error)
    await push_to_gateway("gw", "batch", registry="r")  # type: ignore[arg-type]
