#!/usr/bin/env python3
"""
Draw the example service's request rate and p90 latency from a real
Prometheus.

It starts examples/cat_or_not.py and Prometheus (with
examples/prometheus/prometheus.yml, its target moved to the example's
port), sends demo traffic for --minutes, asks Prometheus' query_range API
for the series of QUERIES and plots them with matplotlib (a development
dependency: pip install matplotlib)::

    python scripts/plot_example.py --minutes 3 \
        --output docs/_static/example-graph.png

The traffic is a mix of picture sizes, so analysis times vary from a
millisecond to half a second; its rate swells and ebbs, and a stretch in the
middle sends larger photos, so the p90 moves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cat_or_not.py"
PROMETHEUS_CONFIG = ROOT / "examples" / "prometheus" / "prometheus.yml"
DEFAULT_OUTPUT = ROOT / "docs" / "_static" / "example-graph.png"

#: What the picture shows: the talk's two queries, on the example's names.
QUERIES = {
    "rate": (
        "sum(rate(cat_or_not_request_duration_seconds_count[1m]))",
        "requests per second",
    ),
    "p50": (
        (
            "histogram_quantile(0.5, sum by (le) "
            "(rate(cat_or_not_request_duration_seconds_bucket[1m])))"
        ),
        "p50 latency",
    ),
    "p90": (
        (
            "histogram_quantile(0.9, sum by (le) "
            "(rate(cat_or_not_request_duration_seconds_bucket[1m])))"
        ),
        "p90 latency",
    ),
}

Series = list[tuple[float, float]]


def jpeg_header(width: int, height: int) -> bytes:
    """
    The start of a JPEG up to its start-of-frame: all the example reads.
    """
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\1\1\0\0\1\0\1\0\0"
    sof = (
        b"\xff\xc0"
        + struct.pack(">HBHHB", 11, 8, height, width, 1)
        + b"\1\x11\0"
    )
    return b"\xff\xd8" + app0 + sof


def picture_sizes(
    count: int, *, seed: int = 0, megapixels: float = 2.0
) -> list[tuple[int, int]]:
    """
    *count* (width, height) pairs: a median of *megapixels*, log-normally
    spread (a tenth are four times larger or more), most lying down.
    """
    rng = random.Random(seed)  # noqa: S311 -- demo traffic, not secrets
    sizes = []
    for _ in range(count):
        pixels = megapixels * 1e6 * rng.lognormvariate(0.0, 1.1)
        long_side = min(65535, max(1, round(math.sqrt(pixels * 4 / 3))))
        short_side = min(65535, max(1, round(long_side * 3 / 4)))
        lying = rng.random() < 0.6  # noqa: PLR2004
        sizes.append(
            (long_side, short_side) if lying else (short_side, long_side)
        )
    return sizes


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float


async def send_pictures(
    analyze_url: str,
    sizes: Sequence[tuple[int, int]],
    *,
    concurrency: int = 16,
    api_key: str | None = None,
) -> list[Answer]:
    """
    POST a JPEG of each size to *analyze_url*; the answers in order, each
    with the time the client waited.
    """
    import aiohttp  # noqa: PLC0415 -- only the traffic needs it

    limit = asyncio.Semaphore(concurrency)
    headers = {} if api_key is None else {"X-API-Key": api_key}

    async def one(
        session: aiohttp.ClientSession, size: tuple[int, int]
    ) -> Answer:
        form = aiohttp.FormData()
        form.add_field("picture", jpeg_header(*size), filename="photo.jpg")
        async with limit:
            start = time.perf_counter()
            async with session.post(
                analyze_url, data=form, headers=headers
            ) as response:
                await response.read()
            return Answer(response.status, time.perf_counter() - start)

    async with aiohttp.ClientSession() as session:
        return await asyncio.gather(*(one(session, size) for size in sizes))


async def demo_traffic(
    analyze_url: str, *, seconds: float, seed: int = 0
) -> int:
    """
    Send pictures for *seconds*: 4 to 16 a second, swelling and ebbing,
    larger ones in the middle fifth. Returns how many were sent.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    tasks = set()
    second = 0
    while (now := loop.time() - start) < seconds:
        share = now / seconds
        rate = round(10 + 6 * math.sin(2 * math.pi * share))
        megapixels = 6.0 if 0.4 <= share < 0.6 else 2.0  # noqa: PLR2004
        sizes = picture_sizes(rate, seed=seed + second, megapixels=megapixels)
        task = asyncio.ensure_future(send_pictures(analyze_url, sizes))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += rate
        second += 1
        # The next second's batch: paced by the clock, not waiting for
        # the answers.
        await asyncio.sleep(max(0.0, start + second - loop.time()))
    await asyncio.gather(*tasks)
    return sent


def query_range(
    prometheus_url: str, promql: str, *, start: float, end: float, step: float
) -> Series:
    """
    The (time, value) points of *promql*'s one series from *start* to
    *end*; no series is an empty list.
    """
    params = urllib.parse.urlencode(
        {"query": promql, "start": start, "end": end, "step": step}
    )
    with urllib.request.urlopen(  # noqa: S310 -- a loopback URL we were given
        f"{prometheus_url.rstrip('/')}/api/v1/query_range?{params}",
        timeout=30,
    ) as response:
        payload = json.load(response)
    if payload["status"] != "success":
        raise RuntimeError(f"{promql}: {payload}")
    result = payload["data"]["result"]
    if len(result) > 1:
        raise RuntimeError(f"{promql} answers {len(result)} series, not one")
    return [
        (float(at), float(value))
        for series in result
        for at, value in series["values"]
        if value not in {"NaN", "+Inf", "-Inf"}
    ]


def fetch(
    prometheus_url: str, *, start: float, end: float, step: float
) -> dict[str, Series]:
    """
    Every query of QUERIES over [*start*, *end*], by its key.
    """
    return {
        key: query_range(
            prometheus_url, promql, start=start, end=end, step=step
        )
        for key, (promql, _) in QUERIES.items()
    }


def plot(series: dict[str, Series], output: Path, *, since: float) -> None:
    """
    Draw the request rate above the latency percentiles into *output*, in
    minutes from *since*.
    """
    import matplotlib as mpl  # noqa: PLC0415 -- a dev-only dependency

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (rate_axes, latency_axes) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 5), dpi=120, layout="constrained"
    )
    figure.suptitle("cat-or.not under demo traffic, as Prometheus saw it")

    def draw(axes: Any, key: str, **style: Any) -> None:
        label = QUERIES[key][1]
        minutes = [(at - since) / 60 for at, _ in series[key]]
        values = [value for _, value in series[key]]
        axes.plot(minutes, values, label=label, **style)

    draw(rate_axes, "rate", color="tab:blue")
    rate_axes.set_ylabel("requests / s")
    rate_axes.set_ylim(bottom=0)
    rate_axes.set_title(
        QUERIES["rate"][0], fontsize="small", family="monospace"
    )
    draw(latency_axes, "p90", color="tab:red")
    draw(latency_axes, "p50", color="tab:gray", linestyle="--")
    latency_axes.set_ylabel("seconds")
    highest = max(value for _, value in series["p90"])
    latency_axes.set_ylim(0, highest * 1.35)
    latency_axes.set_xlabel(
        "minutes of traffic (the first fills rate()'s 1m window)"
    )
    latency_axes.set_title(
        "histogram_quantile(0.9, sum by (le) (rate(…_bucket[1m])))",
        fontsize="small",
        family="monospace",
    )
    latency_axes.legend(loc="upper left", ncols=2)
    for axes in (rate_axes, latency_axes):
        axes.grid(alpha=0.3)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prometheus_config(target: str, *, scrape_interval: str) -> str:
    """
    The shipped prometheus.yml, scraping *target*, its rules found.
    """
    rules = PROMETHEUS_CONFIG.parent / "rules"
    return (
        PROMETHEUS_CONFIG.read_text()
        .replace('"127.0.0.1:8081"', json.dumps(target))
        .replace("scrape_interval: 5s", f"scrape_interval: {scrape_interval}")
        .replace("- rules/", f"- {rules}/")
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if condition():
                return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def scraped(prometheus_url: str) -> float:
    """
    How many requests Prometheus' latest scrape counted.
    """
    points = query_range(
        prometheus_url,
        "sum(cat_or_not_request_duration_seconds_count)",
        start=time.time(),
        end=time.time(),
        step=1,
    )
    return points[-1][1] if points else 0.0


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return bool(response.status == 200)  # noqa: PLR2004


@contextlib.contextmanager
def started(
    command: list[str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 -- our own commands
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--prometheus", default="prometheus")
    parser.add_argument("--scrape-interval", default="5s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    port, metrics_port, prometheus_port = free_port(), free_port(), free_port()
    analyze_url = f"http://127.0.0.1:{port}/analyze"
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    with tempfile.TemporaryDirectory(prefix="plot-example-") as scratch:
        directory = Path(scratch)
        config = directory / "prometheus.yml"
        config.write_text(
            prometheus_config(
                f"127.0.0.1:{metrics_port}",
                scrape_interval=args.scrape_interval,
            )
        )
        example = [
            sys.executable,
            str(EXAMPLE),
            f"--port={port}",
            f"--metrics-port={metrics_port}",
        ]
        prometheus = [
            args.prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ]
        with (
            started(example, directory / "example.log"),
            started(prometheus, directory / "prometheus.log"),
        ):
            wait_for(
                lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"),
                "the example",
            )
            wait_for(
                lambda: answers(f"{prometheus_url}/-/ready"), "Prometheus"
            )
            start = time.time()
            print(f"sending traffic for {args.minutes} minutes", flush=True)  # noqa: T201
            sent = asyncio.run(
                demo_traffic(
                    analyze_url, seconds=args.minutes * 60, seed=args.seed
                )
            )
            wait_for(
                lambda: scraped(prometheus_url) == sent,
                "Prometheus to scrape the last requests",
            )
            series = fetch(
                prometheus_url, start=start + 60, end=time.time(), step=5
            )
    plot(series, args.output, since=start)
    print(f"{sent} requests; wrote {args.output}")  # noqa: T201


if __name__ == "__main__":
    main()
