"""
Per-request cost of measuring an aiohttp client.

A keep-alive ClientSession sends GET requests one after another to a
hello-world aiohttp server on loopback, in the same event loop, and reads
each body. The variants run in interleaved rounds in one process: no trace
config; a hand-written minimal trace config (a start time and a gauge
``inc()`` on the request's start, ``labels(...).observe()`` and ``dec()`` at
its end or exception); aiohttp-prometheus-exporter's
``PrometheusTraceConfig``; ``client_trace_config()`` with its defaults and
with every opt-in. Each variant's figure is its fastest round, in
microseconds per request; what a tracer adds is its figure minus the
untraced one.

    python benchmarks/bench_http_client.py [--requests 2000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from collections.abc import Callable
from types import SimpleNamespace

import aiohttp

from aiohttp import web
from aiohttp_prometheus_exporter.trace import PrometheusTraceConfig
from prometheus_client import CollectorRegistry, Gauge, Histogram

from prom_async.aio._http_client import client_trace_config


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="Hello, world")


def minimal(registry: CollectorRegistry) -> aiohttp.TraceConfig:
    """
    What a user would write by hand: a histogram and an in-flight gauge.
    """
    duration = Histogram(
        "minimal_request_duration_seconds",
        "Request duration.",
        ["method", "host", "status"],
        registry=registry,
    )
    active = Gauge(
        "minimal_active_requests",
        "Requests in flight.",
        ["method", "host"],
        registry=registry,
    )

    async def start(
        _session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        context.start = time.perf_counter()
        active.labels(params.method, params.url.host).inc()

    async def end(
        _session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        duration.labels(
            params.method, params.url.host, str(params.response.status)
        ).observe(time.perf_counter() - context.start)
        active.labels(params.method, params.url.host).dec()

    async def failed(
        _session: aiohttp.ClientSession,
        _context: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        active.labels(params.method, params.url.host).dec()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(start)
    config.on_request_end.append(end)
    config.on_request_exception.append(failed)
    return config


VARIANTS: dict[
    str, Callable[[CollectorRegistry], list[aiohttp.TraceConfig]]
] = {
    "no trace config": lambda _: [],
    "empty TraceConfig": lambda _: [aiohttp.TraceConfig()],
    "hand-written minimal": lambda registry: [minimal(registry)],
    "aiohttp-prometheus-exporter": lambda registry: [
        PrometheusTraceConfig(registry=registry)
    ],
    "prom_async": lambda registry: [client_trace_config(registry=registry)],
    "prom_async, every opt-in": lambda registry: [
        client_trace_config(
            registry=registry,
            response_duration=True,
            connect_duration=True,
            dns_duration=True,
        )
    ],
}


async def send(
    session: aiohttp.ClientSession, url: str, requests: int
) -> None:
    for _ in range(requests):
        async with session.get(url) as response:
            await response.read()


async def main(requests: int, rounds: int) -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    sessions = {
        name: aiohttp.ClientSession(trace_configs=make(CollectorRegistry()))
        for name, make in VARIANTS.items()
    }
    try:
        for session in sessions.values():  # connect, warm up
            await send(session, url, 200)
        best = dict.fromkeys(sessions, float("inf"))
        for _ in range(rounds):
            for name, session in sessions.items():
                start = time.perf_counter()
                await send(session, url, requests)
                elapsed = (time.perf_counter() - start) / requests * 1e6
                best[name] = min(best[name], elapsed)
    finally:
        for session in sessions.values():
            await session.close()
        await runner.cleanup()
    report(best, requests, rounds)


def report(best: dict[str, float], requests: int, rounds: int) -> None:
    bare = best["no trace config"]
    empty = best["empty TraceConfig"]
    minimal_added = best["hand-written minimal"] - bare
    minimal_own = best["hand-written minimal"] - empty
    print(
        f"keep-alive GET to a loopback hello-world server, {requests} "
        f"requests a round, fastest of {rounds} interleaved rounds\n"
        "  (added: over no trace config; own: over an empty TraceConfig, "
        "i.e. without aiohttp's signalling)"
    )
    for name, us in best.items():
        line = f"  {name:<29} {us:7.1f} us/request"
        if name not in {"no trace config", "empty TraceConfig"}:
            added, own = us - bare, us - empty
            line += (
                f"  added {added:+6.1f} us = {added / minimal_added:4.2f}x"
                f" the minimal's  own {own:+6.1f} us ="
                f" {own / minimal_own:4.2f}x the minimal's"
            )
        elif name == "empty TraceConfig":
            line += f"  added {us - bare:+6.1f} us (aiohttp's signalling)"
        print(line)
    ours = best["prom_async"] - bare
    peer = best["aiohttp-prometheus-exporter"] - bare
    print(
        f"  prom_async adds {ours / peer:.2f}x what "
        "aiohttp-prometheus-exporter adds"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.rounds))
