"""
prometheus_client's multiprocess mode under gunicorn: the directory wiped
at start, dead workers marked, and one exporter process, forked by the
master, that serves what all workers wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import ssl
import sys
import time

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, multiprocess

from ..types import ServiceDiscovery
from ._client_internals import values_are_local
from ._families import family
from ._prefork_hooks import ArbiterLike, GunicornHooks, WorkerLike
from ._prefork_options import ExporterOptions
from ._web_connections import DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT
from ._web_handler import DEFAULT_RENDER_TIMEOUT, DEFAULT_WRITE_TIMEOUT


__all__ = [
    "DROPPED",
    "MultiprocessExporter",
    "inprogress_gauge",
]

log = logging.getLogger("prom_async.aio.prefork")

#: What multiprocess mode drops, as the start-up warning names it
#: (documented in docs/prefork.rst).
DROPPED: Final = (
    "exemplars",
    (
        "custom collectors (your own, and the process, platform and GC "
        "collectors of the global registry)"
    ),
    "Gauge.set_function()",
    "Info and Enum metrics",
    "removing or clearing labelled series",
)
_ENVIRONMENT: Final = "PROMETHEUS_MULTIPROC_DIR"
_PARENT_POLL_INTERVAL: Final = 1.0
_STOP_POLL_INTERVAL: Final = 0.02
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

#: The running exporter process of each directory, by pid and metrics URL.
#: Kept here, not in the hooks' object: gunicorn's SIGHUP loads the
#: configuration again, and the new object must stop the process the old
#: one started.
_started: dict[Path, tuple[int, str]] = {}


class _Listener(Protocol):
    def close(self) -> None: ...


def inprogress_gauge(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    *,
    namespace: str = "",
    registry: CollectorRegistry = REGISTRY,
) -> Gauge:
    """
    A :class:`~prometheus_client.Gauge` for
    :func:`~prom_async.aio.track_inprogress` that adds up over the live
    workers in multiprocess mode (``multiprocess_mode="livesum"``).

    In multiprocess mode a gauge's default (``"all"``) keeps one series per
    process, labelled ``pid``, also for workers that died in the middle of
    a request. ``"livesum"`` exports one sum, over the workers that live:
    :class:`MultiprocessExporter`'s ``child_exit`` drops a dead worker's
    share. Outside multiprocess mode the mode does nothing, so the same
    code serves both ways. Asking twice for the same gauge in a registry
    returns it.

    Args:
        name: The metric name.
        documentation: Its help text.
        labelnames: Its label names.
        namespace: A prefix of the name, joined with ``_``.
        registry: The registry to create it in.

    Raises:
        ValueError: *name* is taken in *registry* by another metric, or is
            not a valid name.

    .. versionadded:: 0.2.0
    """
    return family(
        Gauge,
        name,
        documentation,
        labelnames,
        registry=registry,
        namespace=namespace,
        multiprocess_mode="livesum",
    )


class MultiprocessExporter(GunicornHooks):
    """
    gunicorn's workers write their metrics to ``PROMETHEUS_MULTIPROC_DIR``
    (prometheus_client's multiprocess mode); one exporter, in a process of
    its own that the gunicorn master starts, serves their sum.

    In the gunicorn configuration module::

        from prom_async.aio.prefork import MultiprocessExporter

        MultiprocessExporter(port=9100).install(globals())

    Its hooks:

    - ``on_starting``: creates the directory and wipes the files a previous
      run left, then logs a warning naming what multiprocess mode drops
      (:data:`DROPPED`);
    - ``when_ready``: forks the exporter process from the master, before
      the workers, and waits until it listens (gunicorn stops with the
      reason if it cannot);
    - ``child_exit``: marks a dead worker (prometheus_client's
      ``multiprocess.mark_process_dead()``), so that ``live*`` gauges
      (:func:`inprogress_gauge`) drop its share;
    - ``on_exit``: stops the exporter process (it deregisters from service
      discovery); if the master dies without, the exporter process stops
      within a second.

    The exporter process renders off its event loop, as
    :func:`~prom_async.aio.web.start_http_server` does, and no thread ever
    runs in the master, which forks the workers.

    ``PROMETHEUS_MULTIPROC_DIR`` must be set in gunicorn's environment
    before it starts (``PROMETHEUS_MULTIPROC_DIR=/run/app-metrics gunicorn
    ...``): prometheus_client chooses where values go when it is first
    imported, and gunicorn's own ``--env`` is applied after the
    configuration module has imported it.

    Args:
        port: The exporter's port; ``0`` picks a free one
            (:attr:`metrics_url` says which).
        addr: See :func:`~prom_async.aio.web.start_http_server`.
        ssl_ctx: See :func:`~prom_async.aio.web.start_http_server`.
        service_discovery: See
            :func:`~prom_async.aio.web.start_http_server`: one registration,
            for the one exporter.
        basic_auth_users: See
            :func:`~prom_async.aio.web.start_http_server`.
        bearer_token: See :func:`~prom_async.aio.web.start_http_server`.
        idle_timeout: See :func:`~prom_async.aio.web.start_http_server`.
        header_timeout: See :func:`~prom_async.aio.web.start_http_server`.
        render_timeout: See :func:`~prom_async.aio.web.start_http_server`.
        write_timeout: See :func:`~prom_async.aio.web.start_http_server`.
        start_timeout: Seconds ``when_ready`` waits for the exporter to
            listen.
        stop_timeout: Seconds ``on_exit`` waits for it to end before it
            kills it.

    Raises:
        RuntimeError: ``PROMETHEUS_MULTIPROC_DIR`` is not set, or was set
            after prometheus_client was imported.
        TypeError: An option has the wrong type.
        ValueError: An option has a wrong value.

    Attributes:
        directory: ``PROMETHEUS_MULTIPROC_DIR``, as a path.
        port (int): The port asked for.

    .. versionadded:: 0.2.0
    """

    hook_names: ClassVar[tuple[str, ...]] = (
        "on_starting",
        "when_ready",
        "child_exit",
        "on_exit",
    )

    def __init__(
        self,
        *,
        port: int = 0,
        addr: str = "",
        ssl_ctx: ssl.SSLContext | None = None,
        service_discovery: ServiceDiscovery | None = None,
        basic_auth_users: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        render_timeout: float = DEFAULT_RENDER_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        directory = os.environ.get(_ENVIRONMENT)
        if not directory:
            raise RuntimeError(
                f"{_ENVIRONMENT} is not set: set it in gunicorn's "
                f"environment ({_ENVIRONMENT}=/path/to/dir gunicorn ...)"
            )
        if values_are_local():
            raise RuntimeError(
                f"{_ENVIRONMENT} was set after prometheus_client was "
                "imported, which keeps values in memory then: set it in "
                f"gunicorn's environment ({_ENVIRONMENT}=/path/to/dir "
                "gunicorn ...), not in its configuration or --env"
            )
        self._options = ExporterOptions(
            addr=addr,
            ssl_ctx=ssl_ctx,
            service_discovery=service_discovery,
            basic_auth_users=basic_auth_users,
            bearer_token=bearer_token,
            idle_timeout=idle_timeout,
            header_timeout=header_timeout,
            render_timeout=render_timeout,
            write_timeout=write_timeout,
        )
        self._options.check(port, CollectorRegistry())
        self.port = port
        self.directory = Path(directory)
        self.start_timeout = _seconds("start_timeout", start_timeout)
        self.stop_timeout = _seconds("stop_timeout", stop_timeout)

    def __repr__(self) -> str:
        return (
            f"<MultiprocessExporter {self.directory} "
            f"{self.metrics_url or 'not started'}>"
        )

    @property
    def pid(self) -> int | None:
        """
        The exporter process, once ``when_ready`` started it; also after a
        ``SIGHUP`` made gunicorn load its configuration again.
        """
        started = _started.get(self.directory)
        return None if started is None else started[0]

    @property
    def metrics_url(self) -> str | None:
        """
        The exporter's metrics URL, once ``when_ready`` started it.
        """
        started = _started.get(self.directory)
        return None if started is None else started[1]

    def on_starting(self, server: ArbiterLike) -> None:
        """
        gunicorn's ``on_starting`` hook: create and wipe the directory; log
        what multiprocess mode drops.
        """
        if getattr(server, "master_pid", 0):
            log.warning(
                "gunicorn was re-executed (USR2): %s keeps the files of the "
                "old master's workers, and the exporter's port may be taken "
                "by the old master's exporter",
                self.directory,
            )
        else:
            wipe(self.directory)
        log.warning(
            "prometheus_client's multiprocess mode (%s=%s) drops %s; one "
            "exporter per worker (prom_async.aio.prefork.worker_exporter) "
            "keeps them",
            _ENVIRONMENT,
            self.directory,
            ", ".join(DROPPED),
        )

    def when_ready(self, server: ArbiterLike) -> None:
        """
        gunicorn's ``when_ready`` hook: fork the exporter process and wait
        until it listens.

        Raises:
            RuntimeError: It did not start; the message says why.
        """
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        # The child; tests/test_prefork.py runs it under gunicorn, and
        # tests/test_prefork_hooks.py runs _exporter_process() in-process.
        if pid == 0:  # pragma: no cover -- the forked exporter process
            os.close(read_end)
            os._exit(self._exporter_process(server, write_end))
        os.close(write_end)
        try:
            report = read_report(read_end, self.start_timeout)
        finally:
            os.close(read_end)
        if "error" in report:
            stop_process(pid, self.stop_timeout)
            raise RuntimeError(
                f"the metrics exporter did not start: {report['error']}"
            )
        _started[self.directory] = (pid, str(report["metrics_url"]))
        log.info(
            "the workers' metrics, from %s, are served at %s by process %d",
            self.directory,
            report["metrics_url"],
            pid,
        )

    def child_exit(self, server: ArbiterLike, worker: WorkerLike) -> None:  # noqa: ARG002 -- gunicorn's signature
        """
        gunicorn's ``child_exit`` hook: mark *worker* dead.
        """
        multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
            worker.pid, str(self.directory)
        )

    def on_exit(self, server: ArbiterLike) -> None:  # noqa: ARG002 -- gunicorn's signature
        """
        gunicorn's ``on_exit`` hook: stop the exporter process.
        """
        started = _started.pop(self.directory, None)
        if started is not None:
            stop_process(started[0], self.stop_timeout)

    def _exporter_process(self, server: ArbiterLike, report_to: int) -> int:
        detach(getattr(server, "LISTENERS", ()))
        parent = os.getppid()

        def report(message: Mapping[str, Any]) -> None:
            os.write(report_to, json.dumps(message).encode() + b"\n")

        try:
            return asyncio.run(
                self._serve(report, lambda: os.getppid() == parent)
            )
        finally:
            os.close(report_to)

    async def _serve(
        self,
        report: Callable[[Mapping[str, Any]], None],
        parent_alive: Callable[[], bool],
    ) -> int:
        """
        Serve the sum of the directory until ``SIGTERM`` or ``SIGINT``, or
        until *parent_alive* says the master is gone.

        *report* gets the exporter's address, or why it did not start.

        Returns:
            The exit status of the exporter process.
        """
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in _STOP_SIGNALS:
            loop.add_signal_handler(number, stopping.set)
        try:
            registry = CollectorRegistry()
            try:
                # It looks at the directory: off the loop.
                await asyncio.to_thread(
                    multiprocess.MultiProcessCollector,
                    registry,
                    str(self.directory),
                )
                server = await self._options.start(self.port, registry)
            except Exception as error:  # noqa: BLE001 -- reported to the master
                await asyncio.to_thread(
                    report, {"error": f"{type(error).__name__}: {error}"}
                )
                return 1
            await asyncio.to_thread(
                report, {"metrics_url": server.metrics_url}
            )
            try:
                while not stopping.is_set():
                    if not parent_alive():
                        log.warning(
                            "the gunicorn master is gone: the exporter stops"
                        )
                        break
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(
                            stopping.wait(), _PARENT_POLL_INTERVAL
                        )
            finally:
                await server.close()
        finally:
            for number in _STOP_SIGNALS:
                loop.remove_signal_handler(number)
        return 0


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def wipe(directory: Path) -> None:
    """
    Create *directory*, and remove the metric files a previous run left.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("*.db"):
        leftover.unlink(missing_ok=True)


def detach(listeners: Iterable[_Listener]) -> None:
    """
    In a process forked from gunicorn's master: close the master's
    listening sockets and give every signal back its default action.
    """
    for listener in listeners:
        listener.close()
    for number in signal.valid_signals():
        if callable(signal.getsignal(number)):
            signal.signal(number, signal.SIG_DFL)


def read_report(fd: int, timeout: float) -> dict[str, Any]:
    """
    The exporter process's first line on *fd*: its address, or an error;
    an error too when it ends or stays silent for *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    received = b""
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return {"error": f"no answer within {timeout} s"}
        chunk = os.read(fd, 4096)
        if not chunk:
            return {"error": "the exporter process ended at start-up"}
        received += chunk
    report: dict[str, Any] = json.loads(received.partition(b"\n")[0])
    return report


def stop_process(pid: int, timeout: float) -> None:
    """
    Stop our child *pid*: ``SIGTERM``, then ``SIGKILL`` after *timeout*
    seconds; reap it unless gunicorn already has.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _reaped(pid):
            return
        # The master has nothing else to do meanwhile; the deadline bounds
        # the wait.
        time.sleep(_STOP_POLL_INTERVAL)
    log.warning("the exporter process %d did not stop: killed", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _reaped(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # gunicorn's waitpid(-1) reaped it
        return True
    return waited == pid
