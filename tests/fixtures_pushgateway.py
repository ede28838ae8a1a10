"""
Fixtures around Prometheus' Pushgateway.

- ``pushgateway``: ``pushgateway(**options)`` starts Debian's
  ``prometheus-pushgateway`` on 127.0.0.1, in memory only (no persistence
  file), and returns a `Pushgateway`; options: ``basic_auth_user=`` (that
  user with ``fixtures_servers.PASSWORD``, checked against a bcrypt hash)
  and ``tls=True`` (HTTPS with a throwaway CA, trusted by
  `Pushgateway.client_ssl`), through its ``--web.config.file``; ``port=`` a
  given port, ``wait=False`` to return before it is ready. Every one
  started is stopped after the test. A test using it is marked
  ``pushgateway`` (tests/conftest.py).
- ``plain_pushgateway``: one started plain gateway.
- ``gateway_double``: a started `GatewayDouble`, an aiohttp server that
  records every request and answers as the test scripts it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
import urllib.request

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import trustme

from aiohttp import web

from fixtures_servers import (
    PASSWORD,
    free_loopback_port,
    poll,
    stop_processes,
)


__all__ = [
    "PUSHGATEWAY",
    "GatewayDouble",
    "Pushgateway",
    "PushgatewayFactory",
    "RecordedRequest",
    "gateway_double",
    "plain_pushgateway",
    "pushgateway",
    "pushgateway_certificates",
]

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
#: What the gateway's API says of a group besides the pushed metrics.
GATEWAY_FIELDS = frozenset(
    {
        "labels",
        "last_push_successful",
        "push_time_seconds",
        "push_failure_time_seconds",
    }
)


@dataclass
class Pushgateway:
    """
    A real Pushgateway on loopback, for one test.
    """

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: (user, password) it requires, if any.
    basic_auth: tuple[str, str] | None = None
    #: A client context that trusts it, when it serves HTTPS.
    client_ssl: ssl.SSLContext | None = None

    @property
    def address(self) -> str:
        """
        ``host:port``, as a scrape target.
        """
        return self.url.split("://", 1)[1]

    def get(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}")
        if self.basic_auth is not None:
            credentials = ":".join(self.basic_auth).encode()
            request.add_header(
                "Authorization",
                "Basic " + base64.b64encode(credentials).decode(),
            )
        with urllib.request.urlopen(
            request, timeout=5, context=self.client_ssl
        ) as response:
            return response.read()

    def groups(self) -> list[dict[str, Any]]:
        """
        The groups the gateway holds, from its ``/api/v1/metrics``.
        """
        payload = json.loads(self.get("/api/v1/metrics"))
        assert "success" == payload["status"], payload
        groups: list[dict[str, Any]] = payload["data"]
        return groups

    def group(self, **labels: str) -> dict[str, Any] | None:
        """
        The group with exactly these labels (``job`` and the grouping
        key), or None.
        """
        for group in self.groups():
            if group["labels"] == labels:
                return group
        return None

    def values(self, **labels: str) -> dict[str, str] | None:
        """
        The first sample's value of each metric of a group, by name, but
        the gateway's own ``push_*_seconds``; None without the group.
        """
        group = self.group(**labels)
        if group is None:
            return None
        return {
            name: family["metrics"][0]["value"]
            for name, family in group.items()
            if name not in GATEWAY_FIELDS
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_until_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"the pushgateway exited:\n{self.log()}")
            self.get("/-/ready")
            return True

        poll(ready, what=f"the pushgateway to be ready\n{self.log()}")


class PushgatewayFactory(Protocol):
    """
    Starts a `Pushgateway`.
    """

    def __call__(
        self,
        *,
        basic_auth_user: str | None = None,
        tls: bool = False,
        port: int | None = None,
        wait: bool = True,
    ) -> Pushgateway: ...


@dataclass(frozen=True)
class GatewayCertificates:
    """
    A certificate for 127.0.0.1 in files, and a client context that
    trusts it.
    """

    cert_file: Path
    key_file: Path
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def pushgateway_certificates(
    tmp_path_factory: pytest.TempPathFactory,
) -> GatewayCertificates:
    """
    A throwaway CA's certificate for 127.0.0.1, as the gateway reads it.
    """
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1")
    directory = tmp_path_factory.mktemp("pushgateway-tls")
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return GatewayCertificates(cert_file, key_file, client)


@pytest.fixture
def pushgateway(
    tmp_path: Path,
    pushgateway_certificates: GatewayCertificates,
    password_hash: str,
) -> Iterator[PushgatewayFactory]:
    """
    Start real Pushgateways; every one started is stopped at teardown.
    """
    if shutil.which(PUSHGATEWAY) is None:
        pytest.fail(
            f"{PUSHGATEWAY} is missing: apt-get install prometheus-pushgateway"
        )
    started: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(
        *,
        basic_auth_user: str | None = None,
        tls: bool = False,
        port: int | None = None,
        wait: bool = True,
    ) -> Pushgateway:
        directory = tmp_path / f"pushgateway-{len(started)}"
        directory.mkdir()
        options = []
        web_config = []
        if basic_auth_user is not None:
            web_config += [
                "basic_auth_users:",
                f"  {basic_auth_user}: {json.dumps(password_hash)}",
            ]
        if tls:
            web_config += [
                "tls_server_config:",
                f"  cert_file: {pushgateway_certificates.cert_file}",
                f"  key_file: {pushgateway_certificates.key_file}",
            ]
        if web_config:
            config = directory / "web.yml"
            config.write_text("\n".join(web_config) + "\n")
            options.append(f"--web.config.file={config}")
        if port is None:
            port = free_loopback_port()
        log_path = directory / "pushgateway.log"
        log_file = log_path.open("wb")
        logs.append(log_file)
        process = subprocess.Popen(
            [
                PUSHGATEWAY,
                f"--web.listen-address=127.0.0.1:{port}",
                "--persistence.file=",
                "--log.level=warn",
                *options,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        gateway = Pushgateway(
            f"{'https' if tls else 'http'}://127.0.0.1:{port}",
            process,
            log_path,
            basic_auth=(
                None
                if basic_auth_user is None
                else (basic_auth_user, PASSWORD)
            ),
            client_ssl=pushgateway_certificates.client if tls else None,
        )
        if wait:
            gateway.wait_until_ready()
        return gateway

    try:
        yield start
    finally:
        stop_processes(started, logs)


@pytest.fixture
def plain_pushgateway(pushgateway: PushgatewayFactory) -> Pushgateway:
    """
    A started Pushgateway without auth or TLS.
    """
    return pushgateway()


@dataclass(frozen=True)
class RecordedRequest:
    """
    One request the double received.
    """

    method: str
    #: The path exactly as sent, still escaped.
    raw_path: str
    headers: Mapping[str, str]
    body: bytes
    #: The client's port: one per connection.
    client_port: int


@dataclass
class GatewayDouble:
    """
    An HTTP server that records requests and answers from a script.

    Each request takes the next of `answers` (``(status, text)``, or
    ``None`` to hang until the test ends); once they are used up, every
    request gets ``200``.
    """

    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    answers: list[tuple[int, str] | None] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        self.requests.append(
            RecordedRequest(
                request.method,
                request.raw_path,
                dict(request.headers),
                await request.read(),
                peer[1],
            )
        )
        answer = self.answers.pop(0) if self.answers else (200, "")
        if answer is None:
            await self.released.wait()
            answer = (200, "")
        status, text = answer
        return web.Response(status=status, text=text)


@pytest.fixture
async def gateway_double() -> AsyncIterator[GatewayDouble]:
    """
    A started `GatewayDouble` on 127.0.0.1; hanging requests are released
    and the server stopped after the test.
    """
    double = GatewayDouble()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", double.handle)
    # The body as sent: aiohttp would gunzip it otherwise.
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=1, auto_decompress=False
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    double.url = f"http://127.0.0.1:{port}"
    try:
        yield double
    finally:
        double.released.set()
        await runner.cleanup()
