"""
prom_async.aio.prefork under a real gunicorn: four aiohttp workers
(``gunicorn -k aiohttp.GunicornWebWorker -w 4``) running the examples in
examples/prefork/, both ways.

Requests go over a new connection each, many at a time, so that they land
on different workers; each answer names the worker that served it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from prometheus_client.openmetrics import parser as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from consul_double import ConsulDouble
from fixtures_consul import CONSUL_ENVIRONMENT
from fixtures_servers import free_loopback_port


gunicorn_config = pytest.importorskip("gunicorn.config")

EXAMPLES = Path(__file__).parent.parent / "examples" / "prefork"
TESTS = Path(__file__).parent
WORKERS = 4
REQUESTS = 200
DEADLINE = 30.0
STOP_TIMEOUT = 15.0
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
Labels = tuple[tuple[str, str], ...]
#: gunicorn 25 and later listen on a control socket in the home directory
#: unless told not to.
NO_CONTROL_SOCKET = [
    setting.cli[0]
    for setting in gunicorn_config.KNOWN_SETTINGS
    if setting.name == "control_socket_disable"
]


@dataclass
class Gunicorn:
    """
    A gunicorn master and its workers, started for one test.
    """

    process: asyncio.subprocess.Process
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    async def stop(self) -> None:
        """
        SIGTERM, wait, and kill the whole process group on timeout.
        """
        if self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()


StartGunicorn = Callable[..., Awaitable[Gunicorn]]


@pytest.fixture
async def gunicorn(tmp_path: Path) -> AsyncIterator[StartGunicorn]:
    """
    ``await gunicorn(app, config=None, env={})`` starts gunicorn with four
    aiohttp workers on a free loopback port and returns once a worker
    answers (``GET /``: 404), or at once with ``ready=False``; every one
    started is stopped at teardown.
    """
    started: list[Gunicorn] = []
    logs = []

    async def start(
        app: str,
        *,
        config: str | None = None,
        env: Mapping[str, str] = {},
        ready: bool = True,
    ) -> Gunicorn:
        port = free_loopback_port()
        log_path = tmp_path / f"gunicorn-{len(started)}.log"
        log_file = log_path.open("wb")
        logs.append(log_file)
        options = ["--config", str(EXAMPLES / config)] if config else []
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gunicorn",
            *options,
            "--worker-class",
            "aiohttp.GunicornWebWorker",
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            *NO_CONTROL_SOCKET,
            app,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment(env),
            start_new_session=True,
        )
        server = Gunicorn(process, f"http://127.0.0.1:{port}/", log_path)
        started.append(server)
        if not ready:
            return server

        async def answers() -> bool:
            if process.returncode is not None:
                pytest.fail(f"gunicorn exited:\n{server.log()}")
            # Any answer will do; /work would count a request.
            return 404 == await status(server.url)

        await wait_until(
            answers, what=lambda: f"gunicorn to answer\n{server.log()}"
        )
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop()
        for log_file in logs:
            log_file.close()


def environment(extra: Mapping[str, str]) -> dict[str, str]:
    """
    This process's environment without Consul's and prometheus_client's
    variables, the examples and the test app importable, and *extra*.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in CONSUL_ENVIRONMENT
        and name != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(EXAMPLES), str(TESTS), env.get("PYTHONPATH")])
    )
    env.update(extra)
    return env


async def wait_until(
    condition: Callable[[], Awaitable[Any]],
    *,
    what: str | Callable[[], str],
    timeout: float = DEADLINE,
) -> Any:
    """
    Await *condition()* until it is true; fail at the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            result = await condition()
        except (aiohttp.ClientError, OSError):
            result = None
        if result:
            return result
        # Another process's state, polled; the deadline bounds the wait.
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what() if callable(what) else what}")


async def status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as got:
        return got.status


async def scrape(url: str, *, accept: str | None = None) -> str:
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers) as response,
    ):
        assert 200 == response.status
        return await response.text()


def samples(exposition: str) -> dict[tuple[str, Labels], float]:
    """
    The samples of a text exposition, by name and sorted labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


@dataclass
class Spread:
    """
    Which worker answered which request.
    """

    ids_by_pid: dict[int, list[str]]

    @property
    def count_by_pid(self) -> dict[int, int]:
        return {pid: len(ids) for pid, ids in self.ids_by_pid.items()}

    @property
    def total(self) -> int:
        return sum(self.count_by_pid.values())


async def spread_requests(
    url: str, at_least: int = REQUESTS, *, batch: int = 16
) -> Spread:
    """
    GET ``/work`` on a new connection each, *batch* at a time, with an
    ``X-Request-Id`` each: *at_least* of them, and more until every worker
    has answered some.

    asyncio accepts every pending connection at once, so a worker may take
    a whole batch; which one is the kernel's choice.
    """
    connector = aiohttp.TCPConnector(force_close=True, limit=batch)
    ids_by_pid: dict[int, list[str]] = collections.defaultdict(list)
    sent = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(number: int) -> None:
            request_id = f"request-{number}"
            async with session.get(
                url + "work", headers={"X-Request-Id": request_id}
            ) as response:
                assert 200 == response.status
                ids_by_pid[(await response.json())["pid"]].append(request_id)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while sent < at_least or len(ids_by_pid) < WORKERS:
            if loop.time() > deadline:
                pytest.fail(f"only workers {sorted(ids_by_pid)} answered")
            await asyncio.gather(*(one(sent + n) for n in range(batch)))
            sent += batch
    return Spread(dict(ids_by_pid))


async def registered(
    double: ConsulDouble, count: int
) -> dict[str, dict[str, Any]]:
    """
    The example's services in the double's catalog, once there are *count*.
    """
    services = {
        service_id: service
        for service_id, service in double.services.items()
        if service["Service"] == "prefork-example"
    }
    return services if len(services) == count else {}


async def worker_pid(metrics_url: str) -> int:
    """
    The pid of the worker whose exporter is at *metrics_url*.
    """
    exposition = samples(await scrape(metrics_url))
    return int(exposition["prefork_test_worker_pid", ()])


def metrics_url(service: Mapping[str, Any]) -> str:
    return f"http://{service['Address']}:{service['Port']}/metrics"


class TestPerWorker:
    async def test_scraped_worker_by_worker(
        self, gunicorn, consul_double, prometheus
    ):
        """Each worker registers its exporter in Consul under an ID of its
        own and serves every metric type with its own values and the
        exemplars of its own requests; Prometheus, scraping the four, sums
        to the requests sent."""
        server = await gunicorn(
            "prefork_app:per_worker_app",
            env={"CONSUL_HTTP_ADDR": consul_double.address},
        )
        services = await wait_until(
            lambda: registered(consul_double, WORKERS),
            what="four registrations",
        )
        scraper = await asyncio.to_thread(
            prometheus,
            [f"{s['Address']}:{s['Port']}" for s in services.values()],
        )

        spread = await spread_requests(server.url)
        by_pid = {}
        for service in services.values():
            text = await scrape(metrics_url(service), accept=OPENMETRICS)
            by_pid[await worker_pid(metrics_url(service))] = (
                openmetrics_samples(text)
            )
        by_route = await asyncio.to_thread(
            scraper.wait_for_value,
            "sum by (route) (prefork_requests_total)",
            str(spread.total),
        )
        durations = await asyncio.to_thread(
            scraper.wait_for_value,
            "sum(prefork_request_duration_seconds_count)",
            str(spread.total),
        )

        assert [{"route": "/work"}] == [s["metric"] for s in by_route]
        assert 1 == len(durations)
        assert set(spread.ids_by_pid) == set(by_pid)
        for pid, found in by_pid.items():
            served = spread.count_by_pid[pid]
            assert {
                "counter": served,
                "histogram": served,
                "summary": served,
                "gauge": 0,
                "info": 1,
                "stateset": 1,
            } == {
                "counter": found[
                    "prefork_requests_total", (("route", "/work"),)
                ].value,
                "histogram": found[
                    "prefork_request_duration_seconds_count", ()
                ].value,
                "summary": found[
                    "prefork_response_size_bytes_count", ()
                ].value,
                "gauge": found["prefork_requests_in_progress", ()].value,
                "info": found[
                    "prefork_build_info", (("version", "1.0"),)
                ].value,
                "stateset": found[
                    "prefork_state", (("prefork_state", "serving"),)
                ].value,
            }
            exemplars = {
                sample.exemplar.labels["request_id"]
                for (name, _), sample in found.items()
                if name == "prefork_request_duration_seconds_bucket"
                and sample.exemplar is not None
            }
            assert set() != exemplars
            assert exemplars <= set(spread.ids_by_pid[pid])

    async def test_restart_deregisters_the_old_worker(
        self, gunicorn, consul_double
    ):
        """A worker that gunicorn stops deregisters; its replacement
        registers under a new ID, and Consul holds four services again."""
        await gunicorn(
            "prefork_app:per_worker_app",
            env={"CONSUL_HTTP_ADDR": consul_double.address},
        )
        before = await wait_until(
            lambda: registered(consul_double, WORKERS),
            what="four registrations",
        )
        victim_id, victim = next(iter(before.items()))
        victim_pid = await worker_pid(metrics_url(victim))

        os.kill(victim_pid, signal.SIGTERM)

        async def replaced() -> dict[str, Any]:
            now = await registered(consul_double, WORKERS)
            return now if victim_id not in now else {}

        after = await wait_until(replaced, what="the replacement")
        new_ids = set(after) - set(before)
        assert 1 == len(new_ids)
        assert victim_pid != await worker_pid(
            metrics_url(after[new_ids.pop()])
        )
        assert [] != consul_double.requests_to(
            f"/v1/agent/service/deregister/{victim_id}", "PUT"
        )


def openmetrics_samples(text: str) -> dict[tuple[str, Labels], Any]:
    """
    The samples of an OpenMetrics exposition, by name and sorted labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample
        for family in openmetrics.text_string_to_metric_families(text)
        for sample in family.samples
    }


def free_port_range(count: int) -> int:
    """
    A port from which *count* consecutive loopback ports are free now.
    """
    for _ in range(50):
        base = free_loopback_port()
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    pytest.fail(f"no {count} consecutive free ports")


class TestWorkerSlots:
    async def test_replacement_takes_over_the_port(self, gunicorn):
        """With WorkerSlots, worker i serves on base_port + i, and the
        worker gunicorn starts after one was killed serves on its port."""
        base = free_port_range(2 * WORKERS)
        await gunicorn(
            "prefork_app:fixed_ports_app",
            config="gunicorn_per_worker.py",
            env={"METRICS_BASE_PORT": str(base)},
        )
        ports = range(base, base + WORKERS)

        async def pids_by_port() -> dict[int, int]:
            return {
                port: await worker_pid(f"http://127.0.0.1:{port}/metrics")
                for port in ports
            }

        before = await wait_until(pids_by_port, what="four exporters")
        victim_port = base + 2

        os.kill(before[victim_port], signal.SIGKILL)

        async def replaced() -> dict[int, int]:
            now = await pids_by_port()
            return now if now[victim_port] != before[victim_port] else {}

        after = await wait_until(replaced, what="the replacement")
        assert {
            port: pid for port, pid in before.items() if port != victim_port
        } == {port: pid for port, pid in after.items() if port != victim_port}
        with pytest.raises(aiohttp.ClientConnectionError):
            await status(f"http://127.0.0.1:{base + WORKERS}/metrics")


async def write_stale_files(directory: Path) -> None:
    """
    Leave the files of a previous run in *directory*: a thousand requests
    of a process long gone.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from prometheus_client import Counter\n"
        "Counter('prefork_requests', 'Requests served.', ['route'])"
        ".labels('/work').inc(1000)\n",
        env={**environment({}), "PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )
    assert 0 == await process.wait()


class TestMultiprocessExporter:
    async def test_exact_sums(self, gunicorn, tmp_path):
        """One exporter serves the workers' sums, exact, without what a
        previous run left, and stops with gunicorn; what multiprocess mode
        drops is named in the log, and missing from the exposition."""
        directory = tmp_path / "multiproc"
        directory.mkdir()
        await write_stale_files(directory)
        port = free_loopback_port()
        server = await gunicorn(
            "prefork_app:aggregated_app",
            config="gunicorn_aggregated.py",
            env={
                "PROMETHEUS_MULTIPROC_DIR": str(directory),
                "METRICS_PORT": str(port),
            },
        )

        spread = await spread_requests(server.url)
        values = openmetrics_samples(
            await scrape(
                f"http://127.0.0.1:{port}/metrics", accept=OPENMETRICS
            )
        )
        await server.stop()

        assert 0 == server.process.returncode
        with pytest.raises(aiohttp.ClientConnectionError):
            await status(f"http://127.0.0.1:{port}/metrics")
        assert {
            "counter": spread.total,
            "histogram": spread.total,
            "summary": spread.total,
            "in progress": 0,
        } == {
            "counter": values[
                "prefork_requests_total", (("route", "/work"),)
            ].value,
            "histogram": values[
                "prefork_request_duration_seconds_count", ()
            ].value,
            "summary": values["prefork_response_size_bytes_count", ()].value,
            "in progress": values["prefork_requests_in_progress", ()].value,
        }
        assert [] == [s for s in values.values() if s.exemplar is not None]
        assert set() == {
            name
            for name, _ in values
            if name.startswith(("prefork_build", "prefork_state"))
        }
        assert (
            "drops exemplars, custom collectors (your own, and the process, "
            "platform and GC collectors of the global registry), "
            "Gauge.set_function(), Info and Enum metrics"
        ) in server.log()

    async def test_in_progress_livesum(self, gunicorn, tmp_path):
        """The in-progress gauge sums over the live workers: a worker
        killed in the middle of requests no longer counts once gunicorn
        has seen it die; a gauge in the default mode keeps its series."""
        directory = tmp_path / "multiproc"
        hold = tmp_path / "hold"
        hold.mkdir()
        port = free_loopback_port()
        server = await gunicorn(
            "prefork_app:aggregated_app",
            config="gunicorn_aggregated.py",
            env={
                "PROMETHEUS_MULTIPROC_DIR": str(directory),
                "METRICS_PORT": str(port),
                "PREFORK_HOLD_DIR": str(hold),
            },
        )
        url = f"http://127.0.0.1:{port}/metrics"

        async def in_progress() -> float:
            return samples(await scrape(url))[
                "prefork_requests_in_progress", ()
            ]

        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def hold_one() -> int:
                async with session.post(server.url + "hold") as response:
                    return response.status

            requests: list[asyncio.Task[int]] = []

            async def holders() -> collections.Counter[int]:
                names = await asyncio.to_thread(
                    lambda: [path.name for path in hold.glob("held-*")]
                )
                return collections.Counter(
                    int(name.split("-")[1]) for name in names
                )

            async def held_by_two_workers() -> collections.Counter[int]:
                # One more request, in progress once its marker is there.
                requests.append(asyncio.create_task(hold_one()))
                found = await wait_until(
                    lambda: _filtered(holders(), len(requests)),
                    what="the request to be in progress",
                )
                enough = len(requests) >= 8 and len(found) >= 2
                return found if enough else collections.Counter()

            held_by = await wait_until(
                held_by_two_workers, what="requests held by two workers"
            )
            held = len(requests)
            assert held == await in_progress()
            victim, victims_share = held_by.most_common(1)[0]

            os.kill(victim, signal.SIGKILL)

            await wait_until(
                lambda: _equals(in_progress(), held - victims_share),
                what="the killed worker's share to go",
            )
            await asyncio.to_thread((hold / "release").touch)
            statuses = await asyncio.gather(*requests, return_exceptions=True)

        assert held - victims_share == statuses.count(200)
        assert 0 == await in_progress()
        assert ("prefork_test_worker_pid", (("pid", str(victim)),)) in (
            samples(await scrape(url))
        )

    @pytest.mark.parametrize(
        ("taken", "variables", "reason"),
        [
            (
                True,
                {"PROMETHEUS_MULTIPROC_DIR": "multiproc"},
                "Error: the metrics exporter did not start: OSError: ",
            ),
            (
                False,
                {},
                (
                    "RuntimeError: PROMETHEUS_MULTIPROC_DIR is not set: set "
                    "it in gunicorn's environment"
                ),
            ),
        ],
        ids=["port taken", "no directory"],
    )
    async def test_refused_start(
        self, gunicorn, tmp_path, taken, variables, reason
    ):
        """gunicorn does not start, and says why, when the exporter's port
        is taken or PROMETHEUS_MULTIPROC_DIR is not set."""
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            port = free_loopback_port()
            if taken:
                port = blocker.getsockname()[1]
            server = await gunicorn(
                "prefork_app:aggregated_app",
                config="gunicorn_aggregated.py",
                env={
                    **{
                        name: str(tmp_path / value)
                        for name, value in variables.items()
                    },
                    "METRICS_PORT": str(port),
                },
                ready=False,
            )
            status = await asyncio.wait_for(server.process.wait(), DEADLINE)

        assert 0 != status
        assert reason in server.log()


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return expected == await value


async def _filtered(
    holders: Awaitable[collections.Counter[int]], total: int
) -> collections.Counter[int]:
    found = await holders
    return found if found.total() == total else collections.Counter()
