"""
Per-call cost of the wrappers on a no-op ``async def``.

For each wrapper, six variants run in interleaved rounds in one process: the
bare await, the same measurement written out by hand around the await (the
floor), prometheus-async's decorator and ours, and prometheus-async's
awaitable form (``time(m, f())``) and ours. Each variant's figure is the
fastest round, in nanoseconds per call.

    python benchmarks/bench_decorators.py [--calls 200000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import time as clock

from collections.abc import Awaitable, Callable
from time import perf_counter

import prometheus_async.aio as peer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import prom_async.aio as ours


Loop = Callable[[int], Awaitable[None]]


async def noop() -> None:
    pass


def calling(function: Callable[[], Awaitable[None]]) -> Loop:
    async def loop(calls: int) -> None:
        for _ in range(calls):
            await function()

    return loop


def wrapping(
    form: Callable[[Awaitable[None]], Awaitable[None]],
) -> Loop:
    async def loop(calls: int) -> None:
        for _ in range(calls):
            await form(noop())

    return loop


def time_cases(registry: CollectorRegistry) -> dict[str, Loop]:
    histogram = Histogram("bench_seconds", "", registry=registry)

    async def inlined(calls: int) -> None:
        for _ in range(calls):
            start = perf_counter()
            try:
                await noop()
            finally:
                histogram.observe(perf_counter() - start)

    return {
        "bare await": calling(noop),
        "hand-inlined": inlined,
        "prometheus-async": calling(peer.time(histogram)(noop)),
        "prom_async": calling(ours.time(histogram)(noop)),
        "prometheus-async(m, f())": wrapping(
            lambda aw: peer.time(histogram, aw)
        ),
        "prom_async(m, f())": wrapping(lambda aw: ours.time(histogram, aw)),
    }


def count_cases(registry: CollectorRegistry) -> dict[str, Loop]:
    counter = Counter("bench_errors", "", registry=registry)

    async def inlined(calls: int) -> None:
        for _ in range(calls):
            try:
                await noop()
            except Exception:
                counter.inc()
                raise

    return {
        "bare await": calling(noop),
        "hand-inlined": inlined,
        "prometheus-async": calling(peer.count_exceptions(counter)(noop)),
        "prom_async": calling(ours.count_exceptions(counter)(noop)),
        "prometheus-async(m, f())": wrapping(
            lambda aw: peer.count_exceptions(counter, aw)
        ),
        "prom_async(m, f())": wrapping(
            lambda aw: ours.count_exceptions(counter, aw)
        ),
    }


def track_cases(registry: CollectorRegistry) -> dict[str, Loop]:
    gauge = Gauge("bench_inprogress", "", registry=registry)

    async def inlined(calls: int) -> None:
        for _ in range(calls):
            gauge.inc()
            try:
                await noop()
            finally:
                gauge.dec()

    return {
        "bare await": calling(noop),
        "hand-inlined": inlined,
        "prometheus-async": calling(peer.track_inprogress(gauge)(noop)),
        "prom_async": calling(ours.track_inprogress(gauge)(noop)),
        "prometheus-async(m, f())": wrapping(
            lambda aw: peer.track_inprogress(gauge, aw)
        ),
        "prom_async(m, f())": wrapping(
            lambda aw: ours.track_inprogress(gauge, aw)
        ),
    }


async def measure(
    cases: dict[str, Loop], calls: int, rounds: int
) -> dict[str, float]:
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, loop in cases.items():
            start = clock.perf_counter()
            await loop(calls)
            elapsed = (clock.perf_counter() - start) / calls * 1e9
            best[name] = min(best[name], elapsed)
    return best


def report(title: str, best: dict[str, float], target: str) -> None:
    floor = best["hand-inlined"]
    bare = best["bare await"]
    print(f"\n{title}  (target: {target})")
    for name, ns in best.items():
        print(
            f"  {name:<25} {ns:7.0f} ns/call  {ns / floor:5.2f}x inlined"
            f"  {ns - bare:+6.0f} ns over bare await"
        )
    decorated = best["prom_async"] / best["prometheus-async"]
    awaited = best["prom_async(m, f())"] / best["prometheus-async(m, f())"]
    print(
        f"  prom_async vs prometheus-async: {decorated:.2f}x the time "
        f"decorated, {awaited:.2f}x on an awaitable"
    )


async def main(calls: int, rounds: int) -> None:
    registry = CollectorRegistry()
    report(
        "@time",
        await measure(time_cases(registry), calls, rounds),
        "<= 1.15x hand-inlined",
    )
    report(
        "@count_exceptions (no exception raised)",
        await measure(count_cases(registry), calls, rounds),
        "<= 150 ns over the bare await",
    )
    report(
        "@track_inprogress",
        await measure(track_cases(registry), calls, rounds),
        "<= 1.15x hand-inlined",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.rounds))
