"""
The figures of the fleet test (tests/test_fleet.py): memory per exporter
instance, and how soon VictoriaMetrics scrapes a fleet once it registered.

**Memory.**  Two processes of tests/fleet_process.py run side by side, one
with no exporter and one with ``--per-process`` of them (each a
``start_http_server`` on loopback with its own registry and its own
``ConsulAgent``, registered with the Consul double in this process).  The
per-instance figure is the difference of their resident set sizes
(``VmRSS``) divided by the number of exporters: the interpreter and the
imported modules count once, in both.  It is taken once all are registered
("idle") and again after this process scraped every exporter
``--scrapes`` times ("scraped").  Medians over ``--rounds``.

**Discovery.**  Debian's VictoriaMetrics (``consul_sd_configs``, Consul
looked at every second, scrape interval ``--scrape-interval``) and a fleet
of ``--processes`` x ``--per-process`` exporters, started after
VictoriaMetrics is up.  From the moment the double holds all their
registrations, the time until every one is in VictoriaMetrics'
target list, and until every one is ``up``; a fresh double and
VictoriaMetrics each round.

Run from the repository (``--help`` for options)::

    python benchmarks/bench_fleet.py
    python benchmarks/bench_fleet.py --rounds 5 --skip-discovery
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp


sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from consul_double import ConsulDouble
from fleet_process import FleetProcess, scrape_config
from victoria_metrics import VictoriaMetrics


SERVICE = "fleet"
DEADLINE = 120.0

T = TypeVar("T")


def rss_kib(pid: int) -> int:
    """
    The resident set size of process *pid*, in KiB.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def until(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str
) -> T:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = await fetch()
        if done(result):
            return result
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no {what} after {DEADLINE} s")


async def scrape_all(ports: list[int], times: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(times):
            for port in ports:
                url = f"http://127.0.0.1:{port}/metrics"
                async with session.get(url) as response:
                    response.raise_for_status()
                    await response.read()


async def memory_round(
    double: ConsulDouble, directory: Path, count: int, scrapes: int
) -> tuple[int, int, int, int]:
    """
    RSS in KiB of an empty and a *count*-exporter process, idle and after
    the scrapes.
    """
    empty = full = None
    try:
        empty = await FleetProcess.spawn(
            double.address, SERVICE, "empty", 0, log_path=directory / "e.log"
        )
        full = await FleetProcess.spawn(
            double.address,
            SERVICE,
            "full",
            count,
            log_path=directory / "f.log",
        )
        await asyncio.gather(empty.ready(DEADLINE), full.ready(DEADLINE))
        idle = rss_kib(empty.pid), rss_kib(full.pid)
        await scrape_all(list(full.instances.values()), scrapes)
        scraped = rss_kib(empty.pid), rss_kib(full.pid)
        return (*idle, *scraped)
    finally:
        for process in (empty, full):
            if process is not None:
                await process.stop()


async def measure_memory(arguments: argparse.Namespace) -> None:
    count = arguments.per_process
    rounds = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(arguments.rounds):
            double = ConsulDouble()
            await double.start()
            try:
                rounds.append(
                    await memory_round(
                        double, Path(directory), count, arguments.scrapes
                    )
                )
            finally:
                await double.stop()
    empty_idle, full_idle, empty_scraped, full_scraped = (
        statistics.median(column) for column in zip(*rounds, strict=True)
    )
    print(f"memory, median of {arguments.rounds} rounds (VmRSS):")
    print(f"  process with 0 exporters:   {empty_idle / 1024:7.1f} MiB")
    print(f"  process with {count} exporters: {full_idle / 1024:7.1f} MiB")
    print(
        f"  per exporter, idle:         "
        f"{(full_idle - empty_idle) / count:7.0f} KiB"
    )
    print(
        f"  per exporter, scraped {arguments.scrapes}x:   "
        f"{(full_scraped - empty_scraped) / count:7.0f} KiB"
    )


async def services_of(double: ConsulDouble) -> set[str]:
    return set(double.services)


async def target_health(victoria: VictoriaMetrics) -> dict[str, str]:
    return {
        target["labels"]["consul_service_id"]: target["health"]
        for target in await victoria.targets()
    }


async def discovery_round(
    arguments: argparse.Namespace, directory: Path
) -> tuple[float, float]:
    """
    Seconds from the last registration to all discovered, and to all up.
    """
    double = ConsulDouble()
    await double.start()
    victoria = VictoriaMetrics(
        scrape_config(double.address, SERVICE, arguments.scrape_interval),
        directory / "victoria-metrics",
    )
    fleet: list[FleetProcess] = []
    try:
        await victoria.start()
        for number in range(arguments.processes):
            process = await FleetProcess.spawn(
                double.address,
                SERVICE,
                f"p{number}",
                arguments.per_process,
                log_path=directory / f"p{number}.log",
            )
            fleet.append(process)
        await asyncio.gather(*(process.ready(DEADLINE) for process in fleet))
        everyone = {
            service_id for process in fleet for service_id in process.instances
        }
        await until(
            lambda: services_of(double),
            lambda services: everyone == services,
            "registrations",
        )
        registered = time.monotonic()
        await until(
            lambda: target_health(victoria),
            lambda health: everyone <= health.keys(),
            "targets",
        )
        discovered = time.monotonic() - registered
        await until(
            lambda: target_health(victoria),
            lambda health: dict.fromkeys(everyone, "up") == health,
            "targets up",
        )
        return discovered, time.monotonic() - registered
    finally:
        for process in fleet:
            await process.stop()
        await victoria.stop()
        await double.stop()


async def measure_discovery(arguments: argparse.Namespace) -> None:
    results = []
    for _ in range(arguments.rounds):
        with tempfile.TemporaryDirectory() as directory:
            results.append(await discovery_round(arguments, Path(directory)))
    total = arguments.processes * arguments.per_process
    print(
        f"discovery of {total} exporters in {arguments.processes} processes,"
        f" scrape interval {arguments.scrape_interval} s, "
        f"{arguments.rounds} rounds:"
    )
    discovered, up = zip(*results, strict=True)
    for name, column in (
        ("all in the target list", discovered),
        ("all up", up),
    ):
        figures = ", ".join(f"{seconds:.2f}" for seconds in column)
        print(
            f"  {name + ':':24} median {statistics.median(column):.2f} s "
            f"({figures})"
        )


async def main(arguments: argparse.Namespace) -> None:
    await measure_memory(arguments)
    if not arguments.skip_discovery:
        await measure_discovery(arguments)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--per-process", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=3)
    parser.add_argument("--scrape-interval", type=int, default=2)
    parser.add_argument("--skip-discovery", action="store_true")
    asyncio.run(main(parser.parse_args()))
