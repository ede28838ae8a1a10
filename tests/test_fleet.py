"""
A fleet: 200 exporters in 4 processes, each exporter with a `ConsulAgent`
of its own, registered with the Consul double; Debian's VictoriaMetrics
finds them all through ``consul_sd_configs`` and scrapes them.  Then one
process is stopped and closes its exporters (they deregister), and one is
killed hard (its checks turn critical and the double reaps the services
after their ``DeregisterCriticalServiceAfter``); both leave the target list.
The agents register 5 s there, below Consul's 60 s minimum, which the
double accepts with ``deregister_minimum=0`` (see
``fleet_process.QuickReapAgent``).

The figures (time from the last registration to all 200 up, memory per
exporter) come from ``python benchmarks/bench_fleet.py``; the test logs its
own discovery time and asserts no timing beyond its deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import pytest

from consul_double import ConsulDouble
from fixtures_consul import ConsulDoubleFactory, VictoriaMetricsFactory
from fleet_process import FleetProcess, scrape_config
from victoria_metrics import VictoriaMetrics


PROCESSES = 4
PER_PROCESS = 50
SERVICE = "fleet"
#: Seconds.  VictoriaMetrics looks at Consul every second (its fixture's
#: -promscrape.consulSDCheckInterval); a first scrape comes within one
#: interval of a target's discovery.
SCRAPE_INTERVAL = 2
CHECK_INTERVAL = 2.0
#: A check starts critical, as Consul's do, and first runs within one
#: interval: the reaping delay leaves room for that first run.
REAP_AFTER = 5.0
DEADLINE = 60.0

T = TypeVar("T")
log = logging.getLogger(__name__)


class StartFleet(Protocol):
    """
    Starts *processes* fleet processes of *per_process* exporters each.
    """

    def __call__(
        self, double: ConsulDouble, processes: int, per_process: int
    ) -> Awaitable[list[FleetProcess]]: ...


@pytest.fixture
async def reaping_double(
    consul_double_factory: ConsulDoubleFactory,
) -> ConsulDouble:
    """
    A double that honours a short ``DeregisterCriticalServiceAfter`` and
    reaps five times a second.
    """
    return await consul_double_factory(reap_interval=0.2, deregister_minimum=0)


@pytest.fixture
async def start_fleet(
    tmp_path: Path, consul_env_cleared: None
) -> AsyncIterator[StartFleet]:
    """
    Start fleet processes; stop whatever still runs after the test.
    """
    spawned: list[FleetProcess] = []

    async def start(
        double: ConsulDouble, processes: int, per_process: int
    ) -> list[FleetProcess]:
        fleet = []
        for number in range(processes):
            process = await FleetProcess.spawn(
                double.address,
                SERVICE,
                f"p{number}",
                per_process,
                log_path=tmp_path / f"fleet-p{number}.log",
                check_interval=CHECK_INTERVAL,
                reap_after=REAP_AFTER,
            )
            spawned.append(process)
            fleet.append(process)
        await asyncio.gather(*(process.ready(DEADLINE) for process in fleet))
        return fleet

    try:
        yield start
    finally:
        stopped = await asyncio.gather(
            *(process.stop() for process in spawned), return_exceptions=True
        )
        for outcome in stopped:
            if isinstance(outcome, BaseException):
                raise outcome


async def target_health(victoria: VictoriaMetrics) -> dict[str, str]:
    """
    Each active target's service ID and health (``up``, ``down``, ...).
    """
    return {
        target["labels"]["consul_service_id"]: target["health"]
        for target in await victoria.targets()
    }


async def poll(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float = DEADLINE,
) -> T:
    """
    Await *fetch()* until *done* holds for its result; fail at the deadline.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = await fetch()
        except aiohttp.ClientError as error:
            last = error
        else:
            if done(result):
                return result
            last = result
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last seen: {last!r}")


async def services_of(double: ConsulDouble) -> set[str]:
    return set(double.services)


async def check_statuses(double: ConsulDouble) -> dict[str, str]:
    """
    Each service's ID and the status of its check.
    """
    return {
        check["ServiceID"]: check["Status"]
        for check in double.checks.values()
        if check["ServiceID"]
    }


def deregistrations(
    double: ConsulDouble, service_ids: set[str]
) -> list[tuple[str, int | None]]:
    """
    The deregistrations of *service_ids* the double got, with its answers.
    """
    return sorted(
        (service_id, request.status)
        for service_id in service_ids
        for request in double.requests_to(
            f"/v1/agent/service/deregister/{service_id}", method="PUT"
        )
    )


class TestFleet:
    async def test_discovered_scraped_and_gone(
        self,
        reaping_double: ConsulDouble,
        victoria_metrics_factory: VictoriaMetricsFactory,
        start_fleet: StartFleet,
    ) -> None:
        """200 exporters are scraped; closed and killed ones leave."""
        double = reaping_double
        victoria = await victoria_metrics_factory(
            scrape_config(double.address, SERVICE, SCRAPE_INTERVAL)
        )

        fleet = await start_fleet(double, PROCESSES, PER_PROCESS)
        everyone = {
            service_id for process in fleet for service_id in process.instances
        }

        assert PROCESSES * PER_PROCESS == len(everyone)

        await poll(
            lambda: services_of(double),
            lambda services: everyone == services,
            what="all 200 registered",
        )
        last_registered = time.monotonic()
        await poll(
            lambda: target_health(victoria),
            lambda health: dict.fromkeys(everyone, "up") == health,
            what="all 200 targets up",
        )
        all_up_at = time.time()
        log.info(
            "all %d up %.2f s after the last registration",
            len(everyone),
            time.monotonic() - last_registered,
        )

        await poll(
            lambda: check_statuses(double),
            lambda statuses: dict.fromkeys(everyone, "passing") == statuses,
            what="every exporter's health check passing",
        )

        closed, killed, *survivors = fleet
        remaining = everyone - closed.instances.keys()

        assert PER_PROCESS == await closed.terminate()
        assert [(each, 200) for each in sorted(closed.instances)] == (
            deregistrations(double, set(closed.instances))
        )
        assert not closed.instances.keys() & await services_of(double)

        await poll(
            lambda: target_health(victoria),
            lambda health: remaining == set(health),
            what="the closed process's targets gone",
        )

        remaining -= killed.instances.keys()

        assert -signal.SIGKILL == await killed.kill()

        await poll(
            lambda: services_of(double),
            lambda services: not killed.instances.keys() & services,
            what="the killed process's services reaped",
        )
        await poll(
            lambda: target_health(victoria),
            lambda health: dict.fromkeys(remaining, "up") == health,
            what="only the survivors' targets left, all up",
        )
        assert [] == deregistrations(double, set(killed.instances))
        assert [None, None] == [process.returncode for process in survivors]
        # Samples become searchable seconds after their scrape, so the
        # minute up to the moment all were up is looked at last.
        await poll(
            lambda: victoria.get_json(
                "/api/v1/query",
                query=f'count(max_over_time(up{{job="{SERVICE}"}}[1m]) == 1)',
                time=f"{all_up_at:.3f}",
            ),
            lambda body: (
                [str(len(everyone))]
                == [sample["value"][1] for sample in body["data"]["result"]]
            ),
            what="up == 1 stored for all 200 when all were up",
        )
