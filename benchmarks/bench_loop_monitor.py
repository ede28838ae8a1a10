"""
The CPU time prom_async.aio.loop.LoopMonitor costs, measured side by side:
one process per variant, all started together in each round, each running
its event loop for the same wall time and reporting the CPU time
(``time.process_time``, and ``resource.getrusage`` beside it) it used
meanwhile. Start-up (imports, the registry) is outside the measurement.

Variants:

- ``off``: the event loop with no monitor: the floor;
- ``hand``: a hand-written probe, a task that sleeps for the interval and
  observes how late it woke into a prometheus_client histogram;
- ``ours``: ``LoopMonitor()`` at its default interval (0.1 s);
- ``ours_slow``: the same with slow-callback counting on;
- ``ours_10ms``: ``LoopMonitor(interval=0.01)``, ten times the probes.

Each variant's share of one core is (its CPU time - ``off``'s) / wall time,
paired within a round; the median over the rounds is printed. With
``--callbacks N`` every process also runs N no-op callbacks a second, the
work that slow-callback counting adds a cost to (printed per callback).

Run: ``python benchmarks/bench_loop_monitor.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry, Histogram

from prom_async.aio.loop import LAG_BUCKETS, LoopMonitor


VARIANTS = ("off", "hand", "ours", "ours_slow", "ours_10ms")
DEFAULT_INTERVAL = 0.1


async def hand_written_probe(histogram: Histogram, interval: float) -> None:
    """
    What one would write by hand: sleep, then observe the lateness.
    """
    while True:
        due = time.monotonic() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, time.monotonic() - due))


async def callbacks(per_second: int, stop: asyncio.Event) -> int:
    """
    Run *per_second* no-op callbacks a second, in batches every 10 ms.
    """
    loop = asyncio.get_running_loop()
    batch = per_second // 100
    ran = 0
    while not stop.is_set():
        for _ in range(batch):
            loop.call_soon(int)
        ran += batch
        await asyncio.sleep(0.01)
    return ran


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), usage.ru_utime + usage.ru_stime


async def child(variant: str, seconds: float, per_second: int) -> None:
    registry = CollectorRegistry()
    probe: asyncio.Task[None] | None = None
    monitor: LoopMonitor | None = None
    if variant == "hand":
        histogram = Histogram(
            "lag_seconds", "Lag.", buckets=LAG_BUCKETS, registry=registry
        )
        probe = asyncio.create_task(
            hand_written_probe(histogram, DEFAULT_INTERVAL)
        )
    elif variant != "off":
        monitor = LoopMonitor(
            registry=registry,
            interval=0.01 if variant == "ours_10ms" else DEFAULT_INTERVAL,
            slow_callback_threshold=0.1 if variant == "ours_slow" else None,
        )
        monitor.start()
    stop = asyncio.Event()
    load = (
        asyncio.create_task(callbacks(per_second, stop))
        if per_second
        else None
    )
    start_cpu, start_rusage = cpu_seconds()
    start_wall = time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - start_wall
    cpu, rusage = cpu_seconds()
    stop.set()
    ran = await load if load is not None else 0
    if probe is not None:
        probe.cancel()
    if monitor is not None:
        monitor.stop()
    print(
        json.dumps(
            {
                "cpu": cpu - start_cpu,
                "rusage": rusage - start_rusage,
                "wall": wall,
                "callbacks": ran,
            }
        )
    )


def run_round(
    order: list[str], seconds: float, per_second: int
) -> dict[str, dict[str, float]]:
    processes = {
        variant: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--seconds",
                str(seconds),
                "--callbacks",
                str(per_second),
            ],
            stdout=subprocess.PIPE,
        )
        for variant in order
    }
    results = {}
    for variant, process in processes.items():
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"{variant} failed: {process.returncode}")
        results[variant] = json.loads(out)
    return results


def main(arguments: argparse.Namespace) -> None:
    names = [variant for variant in VARIANTS if variant in arguments.only]
    if "off" not in names:
        names.insert(0, "off")
    print(
        f"{arguments.rounds} rounds x {arguments.seconds:g} s, "
        f"{arguments.callbacks} no-op callbacks/s in every process, "
        f"variants side by side: {', '.join(names)}"
    )
    shares: dict[str, list[float]] = {name: [] for name in names}
    rusage: dict[str, list[float]] = {name: [] for name in names}
    per_callback: list[float] = []
    for number in range(arguments.rounds):
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        results = run_round(order, arguments.seconds, arguments.callbacks)
        off = results["off"]
        line = [f"  round {number}:"]
        for name in names:
            result = results[name]
            shares[name].append((result["cpu"] - off["cpu"]) / result["wall"])
            rusage[name].append(
                (result["rusage"] - off["rusage"]) / result["wall"]
            )
            line.append(f"{name} {result['cpu'] / result['wall'] * 100:.3f}%")
        if "ours_slow" in results and "ours" in results and off["callbacks"]:
            slow, ours = results["ours_slow"], results["ours"]
            per_callback.append(
                (slow["cpu"] - ours["cpu"]) / slow["callbacks"]
            )
        print(" ".join(line))
    print(
        "\nCPU time above 'off', as a share of one core "
        "(median of the rounds; process_time, getrusage):"
    )
    for name in names[1:]:
        print(
            f"  {name:<10} {statistics.median(shares[name]) * 100:7.3f}% "
            f"{statistics.median(rusage[name]) * 100:7.3f}%"
        )
    if "hand" in names and "ours" in names:
        ratios = [
            ours / hand
            for ours, hand in zip(shares["ours"], shares["hand"], strict=True)
            if hand > 0
        ]
        if ratios:
            print(
                "  ours / hand-written probe, added CPU time: "
                f"{statistics.median(ratios):.2f}"
            )
    if per_callback:
        print(
            "  slow-callback counting, per callback: "
            f"{statistics.median(per_callback) * 1e9:.0f} ns"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="wall time per round"
    )
    parser.add_argument(
        "--callbacks",
        type=int,
        default=0,
        help="no-op callbacks per second in every process",
    )
    parser.add_argument(
        "--only", nargs="+", default=list(VARIANTS), choices=VARIANTS
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        asyncio.run(
            child(arguments.child, arguments.seconds, arguments.callbacks)
        )
    else:
        main(arguments)
