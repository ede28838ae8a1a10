"""
What a server middleware adds to each request of an aiohttp hello-world
handler, for these middlewares in one interleaved run:

- ``none``: no middleware, the floor;
- ``noop``: a middleware that only awaits the handler: what aiohttp's
  middleware chain costs by itself;
- ``minimal``: a hand-written middleware, ``labels(...).observe()`` of a
  histogram plus an in-progress gauge's ``inc``/``dec``: what anyone writes
  by hand, and the cost to match;
- ``aiohttp_prometheus_exporter``: that package's
  ``prometheus_middleware_factory()``;
- ``prom_async``: :func:`prom_async.aio.http.server_middleware` with its
  defaults (with the OpenTelemetry API installed and no span current, it
  asks for the current span on every request);
- ``prom_async_plain``: the same with ``exemplar=False``;
- ``prom_async_sizes``: the same with ``body_sizes=True``.

Every application serves ``GET /hello/{name}`` on loopback, in this
process's event loop. A client in a subprocess sends the requests one after
the other over one keep-alive connection per application; what is measured
is the CPU time this process (the server) spends per request, so the
client's own cost is left out. With ``--client memory``, the requests are
handed to the server's protocol in this process instead, and the answers
written to memory: the server's code alone, with no kernel and no client,
steadier on a busy machine. Each round measures every middleware once,
in a rotated order. What a middleware adds is its cost minus ``none``'s,
estimated two ways: the median over the rounds of the difference within a
round, and the difference of the fastest rounds.

Run: ``python benchmarks/bench_http_server.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp_prometheus_exporter.middleware import (
    prometheus_middleware_factory,
)
from prometheus_client import CollectorRegistry, Gauge, Histogram

from prom_async.aio.http import server_middleware


CLIENT = """
import http.client, sys
connections = {}
for line in sys.stdin:
    port, count = line.split()
    connection = connections.get(port)
    if connection is None:
        connection = connections[port] = http.client.HTTPConnection(
            "127.0.0.1", int(port), timeout=60
        )
    for number in range(int(count)):
        connection.request("GET", f"/hello/{number % 10}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"status {response.status}")
    print("done", flush=True)
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"Hello, {request.match_info['name']}")


def minimal(registry: CollectorRegistry) -> Callable[..., object]:
    """
    The middleware one writes by hand.
    """
    duration = Histogram(
        "minimal_request_duration_seconds",
        "Request duration.",
        ["method", "route", "status"],
        registry=registry,
    )
    in_progress = Gauge(
        "minimal_requests_in_progress",
        "Requests in progress.",
        ["method"],
        registry=registry,
    )

    @web.middleware
    async def middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        gauge = in_progress.labels(request.method)
        gauge.inc()
        start = time.perf_counter()
        try:
            response = await handler(request)
        finally:
            gauge.dec()
        duration.labels(
            request.method,
            request.match_info.route.resource.canonical,  # type: ignore[union-attr]
            str(response.status),
        ).observe(time.perf_counter() - start)
        return response

    return middleware


@web.middleware
async def noop(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


MIDDLEWARES: dict[str, Callable[[CollectorRegistry], object | None]] = {
    "none": lambda _: None,
    "noop": lambda _: noop,
    "minimal": minimal,
    "aiohttp_prometheus_exporter": lambda registry: (
        prometheus_middleware_factory(registry=registry)
    ),
    "prom_async": lambda registry: server_middleware(registry=registry),
    "prom_async_plain": lambda registry: server_middleware(
        registry=registry, exemplar=False
    ),
    "prom_async_sizes": lambda registry: server_middleware(
        registry=registry, body_sizes=True
    ),
}


async def serve(name: str) -> tuple[web.AppRunner, int]:
    made = MIDDLEWARES[name](CollectorRegistry())
    app = web.Application(middlewares=[] if made is None else [made])  # type: ignore[list-item]
    app.router.add_get("/hello/{name}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


class LoopbackClient:
    """
    A client in a subprocess, one keep-alive connection per application.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls) -> LoopbackClient:
        return cls(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CLIENT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )

    async def send(self, _: web.AppRunner, port: int, count: int) -> None:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(f"{port} {count}\n".encode())
        await self._process.stdin.drain()
        line = await self._process.stdout.readline()
        if line.strip() != b"done":
            raise SystemExit(f"client failed: {line!r}")

    async def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        await self._process.wait()


class MemoryTransport(asyncio.Transport):
    """
    Where the server writes its answers, in memory: an answer is done when
    its body, the handler's greeting, has been written.
    """

    def __init__(self) -> None:
        super().__init__()
        self.answered: asyncio.Future[None] | None = None
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if b"Hello, " in data and self.answered is not None:
            self.answered.set_result(None)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, _: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class MemoryClient:
    """
    Requests handed to the server's protocol in this process, answers
    written to memory: no kernel and no client, the server's code alone.
    """

    def __init__(self) -> None:
        self._connections: dict[int, tuple[Any, MemoryTransport]] = {}

    @classmethod
    async def start(cls) -> MemoryClient:
        return cls()

    async def send(self, runner: web.AppRunner, port: int, count: int) -> None:
        connection = self._connections.get(port)
        if connection is None:
            assert runner.server is not None
            protocol = runner.server()
            transport = MemoryTransport()
            protocol.connection_made(transport)
            connection = self._connections[port] = (protocol, transport)
        protocol, transport = connection
        loop = asyncio.get_running_loop()
        for number in range(count):
            transport.answered = loop.create_future()
            protocol.data_received(
                f"GET /hello/{number % 10} HTTP/1.1\r\n"
                "Host: x\r\n\r\n".encode()
            )
            await transport.answered

    async def close(self) -> None:
        for protocol, _ in self._connections.values():
            protocol.connection_lost(None)


CLIENTS = {"loopback": LoopbackClient, "memory": MemoryClient}


async def measure(
    client: LoopbackClient | MemoryClient,
    runner: web.AppRunner,
    port: int,
    count: int,
) -> float:
    """
    The server's CPU seconds per request over *count* requests.
    """
    gc.collect()
    start = time.process_time()
    await client.send(runner, port, count)
    return (time.process_time() - start) / count


async def main(rounds: int, count: int, kind: str) -> None:
    names = list(MIDDLEWARES)
    served = {name: await serve(name) for name in names}
    client = await CLIENTS[kind].start()
    figures: dict[str, list[float]] = {name: [] for name in names}
    try:
        for name in names:  # warm up: connections, caches, children
            await measure(client, *served[name], count // 4)
        for number in range(rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                figures[name].append(
                    await measure(client, *served[name], count)
                )
    finally:
        await client.close()
        for runner, _ in served.values():
            await runner.cleanup()

    print(f"client: {kind}")
    report(rounds, count, figures)


def report(rounds: int, count: int, figures: dict[str, list[float]]) -> None:
    """
    Print each middleware's cost above ``none``'s, estimated two ways: the
    median over the rounds of the difference within a round (with its
    quartiles), and the difference of the fastest rounds (the machine's
    other load only ever adds).
    """
    floor = figures["none"]
    paired = {
        name: [mine - none for mine, none in zip(spent, floor, strict=True)]
        for name, spent in figures.items()
    }
    added = {name: statistics.median(paired[name]) for name in figures}
    fastest = {
        name: min(spent) - min(floor) for name, spent in figures.items()
    }
    print(
        f"{rounds} rounds of {count} keep-alive requests per middleware; "
        "server CPU µs per request"
    )
    print(
        f"{'middleware':<30}{'median':>8}{'added':>8}{'quartiles':>16}"
        f"{'fastest':>9}{'added':>8}"
    )
    for name, spent in figures.items():
        low, _, high = statistics.quantiles(paired[name], n=4)
        print(
            f"{name:<30}{statistics.median(spent) * 1e6:>8.2f}"
            f"{added[name] * 1e6:>8.2f}{low * 1e6:>8.2f}{high * 1e6:>8.2f}"
            f"{min(spent) * 1e6:>9.2f}{fastest[name] * 1e6:>8.2f}"
        )
    print()
    print(
        f"{'ratio of added costs':<52}{'median':>8}{'fastest':>9}{'target':>8}"
    )
    for ours in ("prom_async", "prom_async_plain", "prom_async_sizes"):
        for peer, target in (
            ("minimal", "<= 1.25"),
            ("aiohttp_prometheus_exporter", "< 1"),
        ):
            print(
                f"{f'{ours} / {peer}':<52}"
                f"{added[ours] / added[peer]:>8.2f}"
                f"{fastest[ours] / fastest[peer]:>9.2f}{target:>8}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--requests", type=int, default=3000, help="per round and middleware"
    )
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="loopback",
        help="loopback: a client process over TCP (the default); memory: "
        "requests handed to the server's protocol in this process, for "
        "steadier figures on a busy machine",
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.requests, arguments.client))
