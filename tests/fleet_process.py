"""
One process of an exporter fleet, and the handle that starts it.

Run as a script, it starts *count* exporters in one event loop, each a
`prom_async.aio.web.start_http_server` on ``127.0.0.1``, port 0, with a
registry and a `prom_async.aio.sd.ConsulAgent` of its own::

    python tests/fleet_process.py AGENT_ADDRESS NAME PREFIX COUNT [options]

The service IDs are ``PREFIX-0`` to ``PREFIX-<count - 1>``.  Once every
exporter listens and its first registration was attempted (one still
pending then goes on in the background), it prints one JSON line,
``{"pid": ..., "instances": {service_id: port, ...}}``.  Then it serves
until SIGTERM, SIGINT or the end of its standard input (the parent is
gone), closes every exporter (each deregisters itself) and prints
``{"closed": <count>}``.

`FleetProcess` is that process seen from the test or benchmark that starts
it; `scrape_config` is the VictoriaMetrics job that finds the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

from prometheus_client import CollectorRegistry, Gauge

from prom_async.aio.sd import ConsulAgent
from prom_async.aio.web import MetricsHTTPServer, start_http_server


__all__ = ["FleetProcess", "FleetProcessError", "main", "scrape_config"]

SCRIPT: Final = Path(__file__)
_STOP_TIMEOUT: Final = 30.0


class QuickReapAgent(ConsulAgent):
    """
    A `ConsulAgent` that registers a ``DeregisterCriticalServiceAfter``
    below Consul's 60 s minimum, which `ConsulAgent` rightly refuses; the
    double honours it when started with ``deregister_minimum=0``.
    """

    def __init__(self, *args: Any, reap_after: float, **options: Any) -> None:
        super().__init__(*args, **options)
        self.reap_after = reap_after

    def service_definition(self, metrics_server: Any) -> dict[str, Any]:
        definition = super().service_definition(metrics_server)
        definition["check"]["DeregisterCriticalServiceAfter"] = (
            f"{round(self.reap_after * 1000)}ms"
        )
        return definition


def _agent(arguments: argparse.Namespace, service_id: str) -> ConsulAgent:
    options: dict[str, Any] = {
        "agent_address": arguments.agent_address,
        "tags": ["metrics"],
        "check_interval": arguments.check_interval,
    }
    if arguments.reap_after is None:
        return ConsulAgent(arguments.name, service_id, **options)
    return QuickReapAgent(
        arguments.name,
        service_id,
        reap_after=arguments.reap_after,
        **options,
    )


async def _stop_requested() -> asyncio.Future[None]:
    """
    What completes on SIGTERM, SIGINT or the end of stdin (the parent has
    gone: nobody else would stop us).
    """
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop)
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    eof = asyncio.ensure_future(stdin.read())
    eof.add_done_callback(lambda _: request_stop())

    def stop_watching(_: asyncio.Future[None]) -> None:
        eof.cancel()
        transport.close()

    stop.add_done_callback(stop_watching)
    return stop


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _start_one(
    arguments: argparse.Namespace, number: int
) -> MetricsHTTPServer:
    registry = CollectorRegistry()
    Gauge("fleet_member", "One exporter of the fleet.", registry=registry).set(
        number
    )
    return await start_http_server(
        addr="127.0.0.1",
        registry=registry,
        service_discovery=_agent(arguments, f"{arguments.prefix}-{number}"),
    )


async def _serve(arguments: argparse.Namespace) -> None:
    stop = await _stop_requested()
    # All at once: each start waits up to request_timeout for its first
    # registration attempt, which a busy agent may take.
    started = await asyncio.gather(
        *(_start_one(arguments, number) for number in range(arguments.count)),
        return_exceptions=True,
    )
    servers = [s for s in started if isinstance(s, MetricsHTTPServer)]
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        _say(
            {
                "pid": os.getpid(),
                "instances": {
                    f"{arguments.prefix}-{number}": server.socket.port
                    for number, server in enumerate(servers)
                },
            }
        )
        await stop
    finally:
        await asyncio.gather(*(server.close() for server in servers))
    _say({"closed": len(servers)})


def main(argv: Sequence[str] | None = None) -> None:
    """
    Parse the command line and run the exporters until stopped.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("agent_address", help="the Consul agent, host:port")
    parser.add_argument("name", help="the Consul service name")
    parser.add_argument("prefix", help="service IDs are PREFIX-<n>")
    parser.add_argument("count", type=int, help="how many exporters")
    parser.add_argument(
        "--check-interval",
        type=float,
        default=10.0,
        help="seconds between two health checks by the agent",
    )
    parser.add_argument(
        "--reap-after",
        type=float,
        default=None,
        help="DeregisterCriticalServiceAfter in seconds, below Consul's "
        "minimum (the default is ConsulAgent's)",
    )
    # Without asyncio's debug mode, even under PYTHONDEVMODE: on a busy
    # machine it would log most callbacks of 50 servers as slow, and that
    # logging would cost more than the servers.
    asyncio.run(_serve(parser.parse_args(argv)), debug=False)


def scrape_config(
    agent_address: str, service: str, scrape_interval: int
) -> str:
    """
    A ``-promscrape.config`` whose job *service* finds the service
    *service* through the agent at *agent_address* and scrapes every
    *scrape_interval* seconds; each target is labelled with its
    ``consul_service_id``.
    """
    return f"""
global:
  scrape_interval: {scrape_interval}s
  scrape_timeout: {scrape_interval}s
scrape_configs:
  - job_name: {service}
    consul_sd_configs:
      - server: {agent_address}
        services: [{service}]
    relabel_configs:
      - source_labels: [__meta_consul_service_id]
        target_label: consul_service_id
"""


class FleetProcessError(RuntimeError):
    """
    A fleet process did not do what it was asked; the message holds its
    standard error.
    """


class FleetProcess:
    """
    A running ``fleet_process.py``, started with `FleetProcess.start` (or
    `FleetProcess.spawn`, then `FleetProcess.ready`).

    Attributes:
        instances: Service ID to port, of every exporter it runs.
        pid: Its process ID.
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        log_path: Path,
        log: IO[bytes],
    ) -> None:
        self._process = process
        self._log_path = log_path
        self._log = log
        self.instances: dict[str, int] = {}
        self.pid = process.pid

    @classmethod
    async def spawn(
        cls,
        agent_address: str,
        name: str,
        prefix: str,
        count: int,
        *,
        log_path: Path,
        check_interval: float = 10.0,
        reap_after: float | None = None,
    ) -> FleetProcess:
        """
        Start the script; `ready` waits for its exporters.

        Args:
            agent_address: The Consul agent, ``host:port``.
            name: The service name of every exporter.
            prefix: Service IDs are ``<prefix>-<n>``.
            count: How many exporters.
            log_path: Where its standard error goes.
            check_interval: Seconds between two health checks by the agent.
            reap_after: ``DeregisterCriticalServiceAfter`` in seconds, below
                Consul's minimum; `None` keeps `ConsulAgent`'s.
        """
        options = ["--check-interval", str(check_interval)]
        if reap_after is not None:
            options += ["--reap-after", str(reap_after)]
        log = log_path.open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-W",
                "error",
                str(SCRIPT),
                agent_address,
                name,
                prefix,
                str(count),
                *options,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        except BaseException:
            log.close()
            raise
        return cls(process, log_path, log)

    @classmethod
    async def start(
        cls, *args: Any, ready_timeout: float = 60.0, **options: Any
    ) -> FleetProcess:
        """
        `spawn` with the same arguments, then `ready`; killed if not ready.
        """
        fleet = await cls.spawn(*args, **options)
        try:
            await fleet.ready(ready_timeout)
        except BaseException:
            await fleet.stop()
            raise
        return fleet

    async def ready(self, timeout: float = 60.0) -> dict[str, int]:
        """
        Wait until every exporter listens and its first registration was
        attempted.

        Returns:
            `instances`.

        Raises:
            FleetProcessError: It exited or was not ready in time.
        """
        message = await self._read_message(timeout)
        self.instances = {
            service_id: int(port)
            for service_id, port in message["instances"].items()
        }
        return self.instances

    @property
    def returncode(self) -> int | None:
        """
        Its exit status, or `None` while it runs.
        """
        return self._process.returncode

    def log_text(self) -> str:
        """
        What it wrote to standard error so far.
        """
        self._log.flush()
        return self._log_path.read_text(errors="replace")

    async def _read_message(self, timeout: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(
                self._process.stdout.readline(), timeout
            )
        except asyncio.TimeoutError:
            raise FleetProcessError(
                f"fleet process {self.pid} said nothing in {timeout} s:\n"
                f"{self.log_text()}"
            ) from None
        if not line:
            await self._process.wait()
            raise FleetProcessError(
                f"fleet process {self.pid} exited with "
                f"{self._process.returncode}:\n{self.log_text()}"
            )
        message: dict[str, Any] = json.loads(line)
        return message

    async def terminate(self, timeout: float = _STOP_TIMEOUT) -> int:
        """
        Send SIGTERM; return how many exporters it closed, once it exited.

        Raises:
            FleetProcessError: It did not say so, or exited with an error.
        """
        self._process.terminate()
        closed = await self._read_message(timeout)
        await asyncio.wait_for(self._process.wait(), timeout)
        if self._process.returncode != 0:
            raise FleetProcessError(
                f"fleet process {self.pid} exited with "
                f"{self._process.returncode}:\n{self.log_text()}"
            )
        count: int = closed["closed"]
        return count

    async def kill(self) -> int:
        """
        Send SIGKILL: nothing is closed or deregistered.  Returns the exit
        status once it is gone.
        """
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        return await self._process.wait()

    async def stop(self, timeout: float = 5.0) -> None:
        """
        Stop it if it still runs (SIGTERM, SIGKILL after *timeout* seconds)
        and release its pipes and log.  Safe to call twice.
        """
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), timeout)
            except asyncio.TimeoutError:
                await self.kill()
        # Closes stdin and reads stdout to its end, so the pipes are closed.
        await self._process.communicate()
        self._log.close()


if __name__ == "__main__":
    main()
