"""
How late a 1 ms ticker in the application's loop runs while /metrics is
scraped back to back, for three exporters in one interleaved run:

- ``prom_async``: ``prom_async.aio.web.start_http_server`` in the app's loop;
- ``prometheus_async``: ``prometheus_async.aio.web.start_http_server`` in the
  app's loop (it renders inside the loop);
- ``wsgi_thread``: ``prometheus_client.start_http_server`` (a WSGI server in
  its own thread).

A separate process scrapes (no ``Accept`` header: text 0.0.4 everywhere,
which all three serve; ``--gzip`` adds ``Accept-Encoding: gzip``).  All three
serve the global ``REGISTRY`` (the only one prometheus_async serves), filled
with ``--samples`` samples.  ``idle`` is the ticker with nothing scraped: the
floor the machine and the timer resolution set.

First, the render cost: 1k- and 10k-sample renders through prom_async's
renderer (thread hop included) against ``generate_latest`` called directly.

Run: ``python benchmarks/bench_loop_lateness.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time

from collections.abc import Awaitable, Callable
from pathlib import Path

import prometheus_async.aio.web
import prometheus_client

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from prom_async.aio import web
from prom_async.aio._render import RegistryRenderer


sys.path.insert(0, str(Path(__file__).parent))

from _registries import build_registry, sample_count


SCRAPER = """
import http.client, json, sys, time
host, port, path, seconds, limit, gz = sys.argv[1:7]
headers = {"Accept-Encoding": "gzip"} if gz == "1" else {}
connection = http.client.HTTPConnection(host, int(port), timeout=60)
scrapes = received = 0
start = time.perf_counter()
deadline = start + float(seconds)
while time.perf_counter() < deadline and scrapes < int(limit):
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise SystemExit(f"status {response.status}")
    received += len(body)
    scrapes += 1
print(json.dumps({"scrapes": scrapes, "bytes": received,
                  "seconds": time.perf_counter() - start}))
"""

Closer = Callable[[], Awaitable[None]]
Started = tuple[str, int, Closer]
Starter = Callable[[], Awaitable[Started]]


async def start_prom_async() -> Started:
    server = await web.start_http_server(addr="127.0.0.1", port=0)
    return "127.0.0.1", server.socket.port, server.close


async def start_prometheus_async() -> Started:
    server = await prometheus_async.aio.web.start_http_server(
        addr="127.0.0.1", port=0
    )
    return "127.0.0.1", server.socket.port, server.close


async def start_wsgi_thread() -> Started:
    httpd, thread = prometheus_client.start_http_server(0, addr="127.0.0.1")

    async def close() -> None:
        httpd.shutdown()
        httpd.server_close()
        await asyncio.to_thread(thread.join)

    return "127.0.0.1", httpd.server_address[1], close


EXPORTERS: dict[str, Starter | None] = {
    "idle": None,
    "prom_async": start_prom_async,
    "prometheus_async": start_prometheus_async,
    "wsgi_thread": start_wsgi_thread,
}


async def tick(
    period: float, stop: asyncio.Event, lateness: list[float]
) -> None:
    """
    Wake every *period* seconds; record how late each wake-up is.
    """
    due = time.perf_counter() + period
    while not stop.is_set():
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        woke = time.perf_counter()
        lateness.append(woke - due)
        due = woke + period


async def scrape_while_ticking(
    starter: Starter | None, seconds: float, limit: int, gz: bool
) -> tuple[list[float], dict[str, float]]:
    stop = asyncio.Event()
    lateness: list[float] = []
    close = None
    if starter is not None:
        host, port, close = await starter()
    ticker = asyncio.create_task(tick(0.001, stop, lateness))
    try:
        if starter is None:
            await asyncio.sleep(seconds)
            stats = {"scrapes": 0, "bytes": 0, "seconds": seconds}
        else:
            scraper = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                SCRAPER,
                host,
                str(port),
                "/metrics",
                str(seconds),
                str(limit),
                "1" if gz else "0",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await scraper.communicate()
            if scraper.returncode:
                raise SystemExit(f"scraper failed: {scraper.returncode}")
            stats = json.loads(out)
    finally:
        stop.set()
        await ticker
        if close is not None:
            await close()
    return lateness, stats


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def render_ratios(rounds: int) -> None:
    print(
        "render time, prom_async renderer / generate_latest "
        "(median of interleaved rounds; < 1 is faster)"
    )
    for samples in (1_000, 10_000):
        registry = build_registry(samples, CollectorRegistry())
        renderer = RegistryRenderer(registry)
        ours: list[float] = []
        theirs: list[float] = []
        repeat = 200 if samples == 1_000 else 20
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeat):
                generate_latest(registry)
            theirs.append((time.perf_counter() - start) / repeat)
            start = time.perf_counter()
            for _ in range(repeat):
                await renderer.render(
                    accept=None, accept_encoding=None, names=None
                )
            ours.append((time.perf_counter() - start) / repeat)
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"  {sample_count(registry):>6} samples: ratio "
            f"{statistics.median(ratios):.2f} "
            f"(ours {statistics.median(ours) * 1e3:.2f} ms, "
            f"generate_latest {statistics.median(theirs) * 1e3:.2f} ms)"
        )


async def main(arguments: argparse.Namespace) -> None:
    await render_ratios(arguments.render_rounds)
    build_registry(arguments.samples, REGISTRY)
    print(
        f"\nloop lateness, registry of {sample_count(REGISTRY)} samples, "
        f"{arguments.rounds} rounds x {arguments.seconds} s each, "
        f"gzip={arguments.gzip}, switch interval "
        f"{sys.getswitchinterval() * 1e3:g} ms, gc thresholds "
        f"{gc.get_threshold()}"
    )
    names = [name for name in EXPORTERS if name in arguments.only]
    lateness: dict[str, list[float]] = {name: [] for name in names}
    scrapes: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(arguments.rounds):
        # Rotate the order so none always runs first or last.
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            late, stats = await scrape_while_ticking(
                EXPORTERS[name],
                arguments.seconds,
                arguments.limit,
                arguments.gzip,
            )
            lateness[name].extend(late)
            scrapes[name].append(stats["scrapes"] / stats["seconds"])
            print(
                f"  round {round_number} {name:<17} "
                f"p99 {percentile(late, 0.99) * 1e3:7.2f} ms  "
                f"max {max(late) * 1e3:7.2f} ms  "
                f"{stats['scrapes']} scrapes"
            )
    print(
        f"\n{'exporter':<17} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'scrapes/s':>10}"
    )
    for name in names:
        late = lateness[name]
        print(
            f"{name:<17} {percentile(late, 0.5) * 1e3:8.2f} "
            f"{percentile(late, 0.99) * 1e3:8.2f} "
            f"{max(late) * 1e3:8.2f} "
            f"{statistics.mean(scrapes[name]):10.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="scraping time per exporter per round",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=1_000,
        help="most scrapes per exporter per round",
    )
    parser.add_argument(
        "--gzip", action="store_true", help="scrape with Accept-Encoding: gzip"
    )
    parser.add_argument("--render-rounds", type=int, default=5)
    parser.add_argument(
        "--only", nargs="+", default=list(EXPORTERS), choices=list(EXPORTERS)
    )
    asyncio.run(main(parser.parse_args()))
