"""Fixtures that start exporters and real scrapers."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme

from prom_async.aio.web import start_http_server, start_http_server_in_thread


PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
DEADLINE = 60.0
POLL_INTERVAL = 0.05
#: The Accept header Prometheus 2.42 (Debian's) sends when it scrapes.
PROMETHEUS_2_42_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
#: The basic-auth password of the tests; ``password_hash`` is its hash.
PASSWORD = "correct horse battery"
#: Values each exporter timeout refuses, with the error and its message.
_BAD_TIMEOUTS = [
    ({"idle_timeout": "75"}, TypeError, "a number of seconds, not str"),
    ({"idle_timeout": 0}, ValueError, "positive and finite, not 0"),
    ({"header_timeout": True}, TypeError, "a number of seconds, not bool"),
    (
        {"header_timeout": float("inf")},
        ValueError,
        "positive and finite, not inf",
    ),
    ({"render_timeout": None}, TypeError, "a number of seconds, not NoneType"),
    ({"render_timeout": -1}, ValueError, "positive and finite, not -1"),
    ({"write_timeout": "10"}, TypeError, "a number of seconds, not str"),
    (
        {"write_timeout": float("nan")},
        ValueError,
        "positive and finite, not nan",
    ),
]


def bad_timeouts(*options: str) -> pytest.MarkDecorator:
    """
    Parametrize ``options``, ``error`` and ``message`` with values that the
    exporter timeouts named (all four by default) refuse.
    """
    return pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            (given, error, f"{name} must be {message}")
            for given, error, message in _BAD_TIMEOUTS
            for name in given
            if not options or name in options
        ],
    )


def poll(
    condition: Callable[[], Any], *, timeout: float = DEADLINE, what: str
) -> Any:
    """
    Call *condition* until it returns something true; fail at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except urllib.error.HTTPError as error:
            # It holds the response open until closed or collected, and a
            # collected one warns in whatever test runs at that moment.
            error.close()
            last_error = error
        except (OSError, ValueError, KeyError) as error:
            last_error = error
        else:
            if result:
                return result
        # A short pause between polls of another process, not a wait for
        # a state: the deadline above bounds the loop.
        time.sleep(POLL_INTERVAL)
    pytest.fail(f"timed out waiting for {what} (last error: {last_error})")


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Prometheus:
    """
    A real Prometheus server on loopback, for one test.
    """

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(
            f"{self.url}api/v1/{path}?{query}", timeout=5
        ) as response:
            payload = json.load(response)
        assert payload["status"] == "success", payload
        return payload["data"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_until_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited:\n{self.log()}")
            with urllib.request.urlopen(
                f"{self.url}-/ready", timeout=5
            ) as response:
                return bool(response.status == 200)

        poll(ready, what="prometheus to be ready")

    def wait_for_target_up(self, target: str) -> dict[str, Any]:
        """
        Poll the targets API until *target* has been scraped successfully.
        """

        def target_up() -> dict[str, Any] | None:
            for active in self.api("targets")["activeTargets"]:
                if (
                    active["labels"]["instance"] == target
                    and active["health"] == "up"
                ):
                    found: dict[str, Any] = active
                    return found
            return None

        result: dict[str, Any] = poll(
            target_up, what=f"target {target} up\n{self.log()}"
        )
        return result

    def wait_for_value(self, promql: str, expected: str) -> list[Any]:
        """
        Poll the query API until *promql* answers *expected* as its value.
        """

        def stored() -> list[Any] | None:
            result: list[Any] = self.api("query", query=promql)["result"]
            if result and all(
                series["value"][1] == expected for series in result
            ):
                return result
            return None

        found: list[Any] = poll(stored, what=f"{promql} == {expected}")
        return found


@pytest.fixture
def prometheus(
    tmp_path: Path,
) -> Iterator[Callable[..., Prometheus]]:
    """
    Start real Prometheus servers that scrape the given targets every
    second; every one started is stopped at teardown.

    A test using it is marked ``prometheus`` (tests/conftest.py): skipped
    when Prometheus is not installed, failed instead when CI is set.
    """
    if shutil.which(PROMETHEUS) is None:
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus")
    started: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(
        targets: list[str],
        *,
        scrape_config: str = "",
        flags: Sequence[str] = (),
    ) -> Prometheus:
        directory = tmp_path / f"prometheus-{len(started)}"
        directory.mkdir()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: prom_async\n"
            f"{scrape_config}"
            "    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        port = free_loopback_port()
        log_path = directory / "prometheus.log"
        log_file = log_path.open("wb")
        logs.append(log_file)
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *flags,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        server = Prometheus(f"http://127.0.0.1:{port}/", process, log_path)
        server.wait_until_ready()
        return server

    try:
        yield start
    finally:
        stop_processes(started, logs)


def promtool(
    *arguments: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """
    Run Debian's ``promtool`` with *arguments* (and *stdin*), its output
    captured.
    """
    if shutil.which(PROMTOOL) is None:
        pytest.fail(f"{PROMTOOL} is missing: apt-get install prometheus")
    return subprocess.run(
        [PROMTOOL, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def promtool_check_metrics(
    exposition: bytes,
) -> subprocess.CompletedProcess[str]:
    """
    Lint *exposition* with ``promtool check metrics``.
    """
    return promtool("check", "metrics", stdin=exposition.decode())


def stop_processes(
    processes: list[subprocess.Popen[bytes]], logs: list[Any]
) -> None:
    """
    Stop *processes* (terminated together, killed after 30 s) and close
    their *logs*.
    """
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for log_file in logs:
        log_file.close()


@dataclass
class TLSContexts:
    """
    A server context and a client context that trusts it.
    """

    server: ssl.SSLContext
    client: ssl.SSLContext
    ca_path: Path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSContexts:
    """
    A throwaway CA and a certificate for 127.0.0.1, ::1 and localhost.
    """
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "::1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    ca_path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return TLSContexts(server, client, ca_path)


@pytest.fixture(scope="session")
def password_hash() -> str:
    """
    A bcrypt hash of PASSWORD, cheap to check.
    """
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """
    An HTTP client that neither follows redirects silently nor decompresses
    behind the test's back unless asked.
    """
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def eventually(
    condition: Callable[[], Any], *, what: str, timeout: float = DEADLINE
) -> Any:
    """
    Await until *condition()* is true; fail at the deadline.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        await asyncio.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")


class RunningServer:
    """
    An exporter of either kind, driven from the test's event loop.
    """

    def __init__(self, server: Any, *, threaded: bool) -> None:
        self.server = server
        self.threaded = threaded

    @property
    def is_registered(self) -> bool:
        return bool(self.server.is_registered)

    @property
    def metrics_url(self) -> str:
        return str(self.server.metrics_url)

    @property
    def port(self) -> int:
        return int(self.server.socket.port)

    async def close(self) -> None:
        if self.threaded:
            await asyncio.to_thread(self.server.close)
        else:
            await self.server.close()


Serve = Callable[..., Awaitable[RunningServer]]


@pytest.fixture(params=["in-loop", "in-thread"])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[Serve]:
    """
    ``await serve(**options)`` starts an exporter of one kind (the test runs
    once with each); all are closed at the end.
    """
    threaded = request.param == "in-thread"
    started: list[RunningServer] = []

    async def start(**options: Any) -> RunningServer:
        options.setdefault("addr", "127.0.0.1")
        if threaded:
            server = await asyncio.to_thread(
                lambda: start_http_server_in_thread(**options)
            )
        else:
            server = await start_http_server(**options)
        running = RunningServer(server, threaded=threaded)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.close()
