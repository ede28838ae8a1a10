"""
Scrape throughput and latency: prom_async vs prometheus-async vs
prometheus_client, at 1k and 10k samples, 8 connections on loopback.

Each exporter runs in a process of its own, serving a registry of N samples;
this process is the load generator: 8 connections that scrape back to back,
bounded by time and by count. Rounds interleave the exporters so that the
machine's drift hits all of them alike.

    python benchmarks/bench_scrape_throughput.py
    python benchmarks/bench_scrape_throughput.py --rounds 5 --seconds 3

By default the scrapes carry Prometheus 2.42's ``Accept`` and
``Accept-Encoding: gzip`` headers, like a real scraper; ``--accept text``
drops the ``Accept`` header (the text format, which prometheus_client encodes
faster than OpenMetrics) and ``--identity`` asks for uncompressed answers.

``--baseline DIR`` adds a fourth exporter, ``baseline``: prom_async imported
from the ``src`` directory *DIR* (e.g. a copy of an earlier version), so that
a change is measured against what it replaces in the same interleaved run.

``rss MB`` is each exporter process's resident memory after its last round
(Linux only): the registry, plus what the exporter keeps between scrapes.
``benchmarks/bench_render_memory.py`` measures what the render engine keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from dataclasses import dataclass, field
from pathlib import Path


IMPLEMENTATIONS = ("prom_async", "prometheus_async", "prometheus_client")
BASELINE = "baseline"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
LABELS_PER_METRIC = 100


def fill_global_registry(samples: int) -> None:
    """
    Put *samples* gauge samples into the global registry (the only one
    prometheus-async can serve), in metrics of 100 labelled series.
    """
    from prometheus_client import Gauge  # noqa: PLC0415

    for number in range(samples // LABELS_PER_METRIC):
        gauge = Gauge(
            f"bench_metric_{number}", "A benchmark gauge.", ["series"]
        )
        for series in range(LABELS_PER_METRIC):
            gauge.labels(str(series)).set(series * 1.5)


async def serve_prom_async() -> None:
    from prom_async.aio.web import start_http_server  # noqa: PLC0415

    async with await start_http_server(addr="127.0.0.1") as server:
        print(server.socket.port, flush=True)
        await asyncio.to_thread(sys.stdin.read)


async def serve_prometheus_async() -> None:
    from prometheus_async.aio.web import (  # noqa: PLC0415
        start_http_server,
    )

    server = await start_http_server(addr="127.0.0.1")
    print(server.socket.port, flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await server.close()


def serve_prometheus_client() -> None:
    from prometheus_client import start_http_server  # noqa: PLC0415

    server, thread = start_http_server(0, addr="127.0.0.1")
    print(server.server_port, flush=True)
    sys.stdin.read()
    server.shutdown()
    thread.join()


def serve(implementation: str, samples: int) -> None:
    """
    Run one exporter until stdin closes; print its port first.
    """
    fill_global_registry(samples)
    if implementation in {"prom_async", BASELINE}:
        asyncio.run(serve_prom_async())
    elif implementation == "prometheus_async":
        asyncio.run(serve_prometheus_async())
    else:
        serve_prometheus_client()


@dataclass
class Exporter:
    implementation: str
    samples: int
    process: subprocess.Popen[str]
    url: str


def start_exporter(
    implementation: str, samples: int, baseline: str | None = None
) -> Exporter:
    environment = dict(os.environ)
    if implementation == BASELINE and baseline:
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [baseline, environment.get("PYTHONPATH")])
        )
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            implementation,
            "--samples",
            str(samples),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return Exporter(
        implementation, samples, process, f"http://127.0.0.1:{port}/metrics"
    )


def stop_exporter(exporter: Exporter) -> None:
    assert exporter.process.stdin is not None
    exporter.process.stdin.close()
    try:
        exporter.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        exporter.process.kill()
        exporter.process.wait()


def resident_megabytes(process: subprocess.Popen[str]) -> float:
    """
    The resident memory of *process*, or NaN where /proc cannot tell.
    """
    try:
        status = Path(f"/proc/{process.pid}/status").read_text("ascii")
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Measurement:
    requests: int = 0
    seconds: float = 0.0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    resident: float = float("nan")

    def add(self, other: Measurement) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.failures += other.failures
        self.latencies.extend(other.latencies)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def load(
    url: str,
    *,
    connections: int,
    seconds: float,
    max_requests: int,
    headers: dict[str, str],
) -> Measurement:
    """
    Scrape *url* back to back over *connections* connections until
    *seconds* have passed or *max_requests* were sent.
    """
    import aiohttp  # noqa: PLC0415

    measurement = Measurement()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False
    ) as session:

        async def scrape() -> None:
            async with session.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(response.status)

        for _ in range(connections):  # warm up every connection
            await scrape()
        sent = 0
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                begin = time.perf_counter()
                try:
                    await scrape()
                except (aiohttp.ClientError, RuntimeError):
                    measurement.failures += 1
                    continue
                measurement.latencies.append(time.perf_counter() - begin)

        await asyncio.gather(*(worker() for _ in range(connections)))
        measurement.seconds = time.perf_counter() - started
        measurement.requests = len(measurement.latencies)
    return measurement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--serve", choices=(*IMPLEMENTATIONS, BASELINE))
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[1000, 10000]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--identity", action="store_true")
    parser.add_argument(
        "--accept",
        choices=["prometheus", "text"],
        default="prometheus",
        help="Prometheus 2.42's Accept header (OpenMetrics where "
        "supported), or none (the text format)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also serve prom_async imported from this src directory",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.samples[0])
        return

    headers = {"Accept-Encoding": "identity" if args.identity else "gzip"}
    if args.accept == "prometheus":
        headers["Accept"] = PROMETHEUS_ACCEPT
    print(
        f"{args.connections} connections, {args.rounds} interleaved rounds "
        f"of {args.seconds:g} s (at most {args.max_requests} scrapes) per "
        f"exporter; headers: {headers}"
    )
    implementations = IMPLEMENTATIONS + ((BASELINE,) if args.baseline else ())
    for samples in args.samples:
        results = {name: Measurement() for name in implementations}
        exporters = [
            start_exporter(name, samples, args.baseline)
            for name in implementations
        ]
        try:
            for round_number in range(args.rounds):
                shift = round_number % len(exporters)
                for exporter in exporters[shift:] + exporters[:shift]:
                    results[exporter.implementation].add(
                        asyncio.run(
                            load(
                                exporter.url,
                                connections=args.connections,
                                seconds=args.seconds,
                                max_requests=args.max_requests,
                                headers=headers,
                            )
                        )
                    )
            for exporter in exporters:
                measured = results[exporter.implementation]
                measured.resident = resident_megabytes(exporter.process)
        finally:
            for exporter in exporters:
                stop_exporter(exporter)
        report(samples, results)


def report(samples: int, results: dict[str, Measurement]) -> None:
    print(f"\n{samples} samples")
    print(
        f"{'exporter':<18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>6} {'rss MB':>7}"
    )
    for name, measurement in results.items():
        print(
            f"{name:<18} {measurement.per_second:>9.1f} "
            f"{measurement.percentile(0.5) * 1000:>8.2f} "
            f"{measurement.percentile(0.99) * 1000:>8.2f} "
            f"{max(measurement.latencies, default=0) * 1000:>8.2f} "
            f"{measurement.failures:>6} {measurement.resident:>7.1f}"
        )
    ours = results["prom_async"].per_second
    for name in list(results)[1:]:
        theirs = results[name].per_second
        ratio = ours / theirs if theirs else float("inf")
        print(f"prom_async / {name}: {ratio:.2f}x")
    theirs_p50 = results["prometheus_async"].percentile(0.5)
    ours_p50 = results["prom_async"].percentile(0.5)
    print(
        "p50 latency prometheus_async / prom_async: "
        f"{theirs_p50 / ours_p50:.2f}x"
    )


if __name__ == "__main__":
    main()
