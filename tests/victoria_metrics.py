"""
Run Debian's VictoriaMetrics (``/usr/bin/victoria-metrics``) for tests.

Debian's ``prometheus`` is built without Consul discovery; VictoriaMetrics
(1.79) has ``consul_sd_configs`` with Prometheus' keys, so the tests use it
as the real, independent Consul client that must discover targets through
the Consul double.  It serves ``/api/v1/targets`` and ``/api/v1/query`` like
Prometheus.

`VictoriaMetrics` starts the binary on ``127.0.0.1`` and a free port, in its
own data directory, and stops it (terminate, then kill).  A missing binary
is an error here; the tests that need it are marked ``victoria_metrics``,
which tests/conftest.py skips when it is absent, except in CI.
"""

from __future__ import annotations

import asyncio
import socket

from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Final

import aiohttp


__all__ = ["VICTORIA_METRICS_BINARY", "VictoriaMetrics"]

#: Where Debian's ``victoria-metrics`` package installs the server.
VICTORIA_METRICS_BINARY: Final = Path("/usr/bin/victoria-metrics")

_STOP_TIMEOUT: Final = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class VictoriaMetrics:
    """
    One VictoriaMetrics server process.

    Args:
        scrape_config: The text of its ``-promscrape.config`` file
            (Prometheus ``scrape_configs`` YAML).  VictoriaMetrics 1.79
            refuses ``refresh_interval`` inside ``consul_sd_configs``; the
            Consul refresh is the ``-promscrape.consulSDCheckInterval`` flag
            (1 s here).
        directory: A directory of its own for the config, data and log.
        extra_flags: More command-line flags, e.g.
            ``"-promscrape.consul.waitTime=5s"``.
        binary: The executable.

    Raises:
        FileNotFoundError: If *binary* does not exist.
    """

    def __init__(
        self,
        scrape_config: str,
        directory: Path,
        extra_flags: Iterable[str] = (),
        binary: Path = VICTORIA_METRICS_BINARY,
    ) -> None:
        if not binary.is_file():
            raise FileNotFoundError(
                f"{binary} is missing: install Debian's victoria-metrics "
                "package (apt-get install victoria-metrics)"
            )
        self._scrape_config = scrape_config
        self._directory = directory
        self._extra_flags = tuple(extra_flags)
        self._binary = binary
        self._port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """
        The base URL, ``http://127.0.0.1:PORT``.
        """
        return f"http://127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path:
        """
        The file that collects the server's output.
        """
        return self._directory / "victoria-metrics.log"

    def log_text(self) -> str:
        """
        What the server has logged so far.
        """
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    async def start(self, ready_timeout: float = 30.0) -> None:
        """
        Start the server and wait until ``/health`` answers ``200``.

        Raises:
            RuntimeError: If the process exits, or is not ready within
                *ready_timeout* seconds; the message holds its log.
        """
        self._directory.mkdir(parents=True, exist_ok=True)
        config_path = self._directory / "promscrape.yml"
        config_path.write_text(self._scrape_config)
        self._port = _free_port()
        self._log = self.log_path.open("wb")
        self._process = await asyncio.create_subprocess_exec(
            str(self._binary),
            f"-promscrape.config={config_path}",
            f"-httpListenAddr=127.0.0.1:{self._port}",
            f"-storageDataPath={self._directory / 'data'}",
            "-promscrape.consulSDCheckInterval=1s",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=INFO",
            *self._extra_flags,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._session = aiohttp.ClientSession()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while not await self._healthy():
            if self._process.returncode is not None:
                raise RuntimeError(
                    f"victoria-metrics exited with {self._process.returncode}:"
                    f"\n{self.log_text()}"
                )
            if loop.time() > deadline:
                raise RuntimeError(
                    f"victoria-metrics not ready after {ready_timeout} s:"
                    f"\n{self.log_text()}"
                )
            await asyncio.sleep(0.05)

    async def _healthy(self) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(f"{self.url}/health") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def stop(self) -> None:
        """
        Terminate the server (kill it after 10 s) and release its log and
        HTTP session.  Safe to call twice.
        """
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._log is not None:
            self._log.close()
            self._log = None

    async def get_json(self, path: str, **params: str) -> Any:
        """
        ``GET`` *path* with query *params* and return the decoded JSON.

        Raises:
            aiohttp.ClientResponseError: On a non-2xx answer.
        """
        assert self._session is not None, "start() first"
        async with self._session.get(
            f"{self.url}{path}", params=params
        ) as response:
            response.raise_for_status()
            return await response.json()

    async def targets(self) -> list[dict[str, Any]]:
        """
        The active targets from ``/api/v1/targets``.
        """
        body = await self.get_json("/api/v1/targets")
        targets: list[dict[str, Any]] = body["data"]["activeTargets"]
        return targets

    async def query(self, expression: str) -> list[dict[str, Any]]:
        """
        The instant-vector result of *expression* from ``/api/v1/query``.
        """
        body = await self.get_json("/api/v1/query", query=expression)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
