"""
prom_async.aio.prefork in this process: the gunicorn hooks called with
stand-ins for gunicorn's arbiter and workers (mocks with gunicorn's own
classes as spec), the worker exporter in an aiohttp application, and the
multiprocess exporter's process run here.

tests/test_prefork.py runs all of it under a real gunicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest

from aiohttp import web
from prometheus_client import Counter, Gauge

from fixtures_servers import bad_timeouts, eventually
from prom_async.aio import (
    _prefork_hooks,
    _prefork_multiprocess,
    _prefork_options,
    _prefork_worker,
)
from prom_async.aio.prefork import (
    DROPPED,
    EXPORTER_KEY,
    GunicornHooks,
    MultiprocessExporter,
    WorkerSlots,
    inprogress_gauge,
    worker_exporter,
    worker_slot,
)
from prom_async.aio.sd import ConsulAgent
from prom_async.aio.web import start_http_server


arbiter_module = pytest.importorskip("gunicorn.arbiter")
worker_module = pytest.importorskip("gunicorn.workers.base")

#: The connection and scrape timeouts, each a value of its own so that one
#: passed on as another shows; idle_timeout short enough to be seen.
TIMEOUTS = {
    "idle_timeout": 0.2,
    "header_timeout": 7.0,
    "render_timeout": 8.0,
    "write_timeout": 9.0,
}
#: Seconds within which an idle connection must be closed: a guard against
#: hangs, not a speed claim.
CLOSED_WITHIN = 10.0


def fake_arbiter(
    workers: dict[int, Any] | None = None,
    listeners: list[Any] | None = None,
    master_pid: int = 0,
) -> Any:
    arbiter = mock.Mock(spec=arbiter_module.Arbiter)
    arbiter.WORKERS = {} if workers is None else workers
    arbiter.LISTENERS = [] if listeners is None else listeners
    arbiter.master_pid = master_pid
    return arbiter


def fake_worker(pid: int) -> Any:
    worker = mock.Mock(spec=worker_module.Worker)
    worker.pid = pid
    return worker


@pytest.fixture
def slot_reset() -> Iterator[None]:
    """
    Forget the worker slot this process took.
    """
    yield
    _prefork_hooks._current_slot = None


@pytest.fixture
def multiproc_dir(tmp_path, monkeypatch) -> Path:
    """
    PROMETHEUS_MULTIPROC_DIR set, and prometheus_client taken to be in
    multiprocess mode (this process keeps its values in memory).
    """
    directory = tmp_path / "multiproc"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setattr(
        _prefork_multiprocess, "values_are_local", lambda: False
    )
    return directory


@pytest.fixture
def signals_restored() -> Iterator[None]:
    """
    Put back every signal handler of this process after the test.
    """
    saved = {
        number: signal.getsignal(number) for number in signal.valid_signals()
    }
    yield
    for number, handler in saved.items():
        if handler is not None and signal.getsignal(number) != handler:
            signal.signal(number, handler)


@pytest.fixture
def started_with(monkeypatch) -> list[dict[str, Any]]:
    """
    The options given to start_http_server by the prefork ways, whose
    exporters start as they would.
    """
    recorded: list[dict[str, Any]] = []
    start = _prefork_options.start_http_server

    async def recording(**options: Any) -> Any:
        recorded.append(options)
        return await start(**options)

    monkeypatch.setattr(_prefork_options, "start_http_server", recording)
    return recorded


async def closed_when_idle(port: int) -> bool:
    """
    Whether the exporter on *port* closes a connection that sends nothing.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(reader.read(), CLOSED_WITHIN)
    except ConnectionError:
        pass
    except TimeoutError:
        return False
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return True


class TestGunicornHooks:
    def test_install_assigns_each_hook(self):
        """install() puts every hook under its gunicorn name."""
        hooks = WorkerSlots()
        namespace: dict[str, Any] = {}

        hooks.install(namespace)

        assert {
            "pre_fork": hooks.pre_fork,
            "post_fork": hooks.post_fork,
        } == namespace

    def test_install_keeps_the_users_hook(self):
        """A hook the configuration defines runs after ours."""
        calls = []

        class Hooks(GunicornHooks):
            hook_names = ("child_exit",)

            def child_exit(self, server, worker):
                calls.append(("ours", server, worker))

        namespace = {"child_exit": lambda s, w: calls.append(("theirs", s, w))}

        Hooks().install(namespace)
        namespace["child_exit"](1, 2)

        assert [("ours", 1, 2), ("theirs", 1, 2)] == calls
        assert "child_exit" == namespace["child_exit"].__name__

    def test_install_refuses_a_non_callable(self):
        """A hook name bound to something else is a clear error."""
        with pytest.raises(TypeError, match="pre_fork in the configuration"):
            WorkerSlots().install({"pre_fork": 3})


class TestWorkerSlots:
    def test_lowest_free_slot(self, slot_reset):
        """Each new worker gets the lowest slot no live worker has; the
        worker learns it after the fork."""
        slots = WorkerSlots()
        workers: dict[int, Any] = {}
        arbiter = fake_arbiter(workers)
        for pid in (10, 11, 12):
            worker = fake_worker(pid)
            slots.pre_fork(arbiter, worker)
            workers[pid] = worker
        del workers[11]
        replacement = fake_worker(13)

        slots.pre_fork(arbiter, replacement)
        slots.post_fork(arbiter, replacement)

        assert 1 == worker_slot()

    def test_slots_survive_a_reload(self, slot_reset):
        """A WorkerSlots made by a reloaded configuration knows the slots
        of the workers that still run."""
        workers = {10: fake_worker(10)}
        arbiter = fake_arbiter(workers)
        WorkerSlots().pre_fork(arbiter, workers[10])
        new = fake_worker(11)

        WorkerSlots().pre_fork(arbiter, new)
        WorkerSlots().post_fork(arbiter, new)

        assert 1 == worker_slot()

    def test_post_fork_without_pre_fork(self):
        """post_fork alone says which hook is missing."""
        with pytest.raises(RuntimeError, match="without its pre_fork"):
            WorkerSlots().post_fork(fake_arbiter(), fake_worker(10))

    def test_no_slot_outside_workers(self):
        """Outside a worker under WorkerSlots there is no slot."""
        assert None is worker_slot()


async def started(app: web.Application) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    return runner


class TestWorkerExporter:
    async def test_started_and_stopped_with_the_app(self, registry, http):
        """The exporter starts with the application, serves the registry,
        and closes when the application stops."""
        Counter("served", "S.", registry=registry).inc(3)
        app = web.Application()
        app.cleanup_ctx.append(
            worker_exporter(addr="127.0.0.1", registry=registry)
        )

        runner = await started(app)
        server = app[EXPORTER_KEY]
        async with http.get(
            server.metrics_url, headers={"Accept-Encoding": "identity"}
        ) as response:
            body = await response.text()
        await runner.cleanup()

        assert "served_total 3.0" in body
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(server.metrics_url)

    async def test_registers_and_deregisters(
        self, registry, consul_double, consul_env_cleared
    ):
        """Each worker's exporter registers under an ID of its own, and
        deregisters when its application stops."""
        agent = ConsulAgent("workers", agent_address=consul_double.address)
        app = web.Application()
        app.cleanup_ctx.append(
            worker_exporter(
                addr="127.0.0.1", service_discovery=agent, registry=registry
            )
        )

        runner = await started(app)
        port = app[EXPORTER_KEY].socket.port
        registered = set(consul_double.services)
        await runner.cleanup()

        assert {f"workers-{socket.gethostname()}-{port}"} == registered
        assert {} == consul_double.services

    @pytest.mark.parametrize(("slot", "offset"), [(None, 0), (2, 2)])
    async def test_base_port_plus_slot(
        self, registry, slot_reset, slot, offset
    ):
        """base_port listens on base_port plus the worker's slot; 0 outside
        gunicorn."""
        probe = await start_http_server(addr="127.0.0.1", registry=registry)
        base = probe.socket.port
        await probe.close()
        _prefork_hooks._current_slot = slot
        app = web.Application()
        app.cleanup_ctx.append(
            worker_exporter(
                addr="127.0.0.1", base_port=base - offset, registry=registry
            )
        )

        runner = await started(app)
        port = app[EXPORTER_KEY].socket.port
        await runner.cleanup()

        assert base == port

    async def test_base_port_in_gunicorn_needs_slots(
        self, registry, monkeypatch
    ):
        """In a gunicorn worker without WorkerSlots, base_port says what
        to install."""
        monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/27.0.1")
        app = web.Application()
        app.cleanup_ctx.append(
            worker_exporter(base_port=9101, registry=registry)
        )
        runner = web.AppRunner(app)

        with pytest.raises(RuntimeError, match="install WorkerSlots"):
            await runner.setup()
        await runner.cleanup()

    async def test_warns_in_multiprocess_mode(
        self, registry, monkeypatch, caplog
    ):
        """One exporter per worker in multiprocess mode says what is
        lost."""
        monkeypatch.setattr(_prefork_worker, "values_are_local", lambda: False)
        app = web.Application()
        app.cleanup_ctx.append(
            worker_exporter(addr="127.0.0.1", registry=registry)
        )

        with caplog.at_level(logging.WARNING, "prom_async.aio.prefork"):
            runner = await started(app)
            await runner.cleanup()

        assert [
            (
                "PROMETHEUS_MULTIPROC_DIR is set: this worker's values are "
                "kept in its files and its exemplars are dropped; unset it "
                "for one exporter per worker"
            )
        ] == [r.getMessage() for r in caplog.records]

    @pytest.mark.parametrize(
        ("options", "error", "match"),
        [
            ({"base_port": "9101"}, TypeError, "base_port must be an integer"),
            ({"base_port": True}, TypeError, "base_port must be an integer"),
            ({"base_port": 0}, ValueError, r"base_port must be in 1\.\.65535"),
            ({"base_port": 65536}, ValueError, "base_port must be in"),
            ({"addr": 1}, TypeError, "addr must be a string"),
            ({"registry": {}}, TypeError, "registry must be"),
            ({"bearer_token": ""}, ValueError, "bearer_token"),
        ],
    )
    def test_bad_options(self, options, error, match):
        """A wrong option is refused where it is given."""
        with pytest.raises(error, match=match):
            worker_exporter(**options)

    @bad_timeouts()
    def test_bad_timeouts(self, options, error, message):
        """A timeout that is not a positive finite number is refused where
        it is given, naming the option."""
        with pytest.raises(error) as raised:
            worker_exporter(**options)

        assert message == str(raised.value)

    async def test_timeouts_reach_the_exporter(self, registry, started_with):
        """The four timeouts reach start_http_server, and its exporter
        closes a connection that sends nothing after idle_timeout."""
        app = web.Application()
        app.cleanup_ctx.append(
            worker_exporter(addr="127.0.0.1", registry=registry, **TIMEOUTS)
        )

        runner = await started(app)
        try:
            closed = await closed_when_idle(app[EXPORTER_KEY].socket.port)
        finally:
            await runner.cleanup()

        assert closed
        assert [TIMEOUTS] == [
            {name: options[name] for name in TIMEOUTS}
            for options in started_with
        ]


class TestExporterOptions:
    @pytest.mark.parametrize(
        ("way", "chosen"),
        [(worker_exporter, {"port"}), (MultiprocessExporter, {"registry"})],
        ids=["worker_exporter", "MultiprocessExporter"],
    )
    def test_every_option_of_the_exporter(self, way, chosen):
        """Each prefork way takes every option of start_http_server, with
        its type and default, but what it chooses itself."""
        theirs = inspect.signature(start_http_server).parameters
        ours = inspect.signature(way).parameters

        assert [] == [
            name
            for name, option in theirs.items()
            if name not in chosen
            and (
                name not in ours
                or (ours[name].annotation, ours[name].default)
                != (option.annotation, option.default)
            )
        ]


class TestInprogressGauge:
    def test_livesum(self, registry):
        """The gauge adds up over live workers; asking again returns it."""
        gauge = inprogress_gauge(
            "in_progress", "I.", ["route"], namespace="app", registry=registry
        )

        assert isinstance(gauge, Gauge)
        assert "livesum" == gauge._multiprocess_mode
        assert gauge is inprogress_gauge(
            "in_progress", "I.", ["route"], namespace="app", registry=registry
        )


class TestMultiprocessExporterOptions:
    def test_needs_the_environment(self, monkeypatch):
        """Without PROMETHEUS_MULTIPROC_DIR, the error says where to set
        it."""
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

        with pytest.raises(RuntimeError, match="gunicorn's environment"):
            MultiprocessExporter()

    def test_set_too_late(self, monkeypatch, tmp_path):
        """Set after prometheus_client was imported, it is refused."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

        with pytest.raises(RuntimeError, match="was set after"):
            MultiprocessExporter()

    @pytest.mark.parametrize(
        ("options", "error", "match"),
        [
            ({"port": -1}, ValueError, "port must be in"),
            ({"addr": None}, TypeError, "addr must be a string"),
            ({"start_timeout": "1"}, TypeError, "start_timeout must be"),
            ({"stop_timeout": True}, TypeError, "stop_timeout must be"),
            ({"stop_timeout": 0}, ValueError, "stop_timeout must be > 0"),
        ],
    )
    def test_bad_options(self, multiproc_dir, options, error, match):
        """A wrong option is refused where it is given."""
        with pytest.raises(error, match=match):
            MultiprocessExporter(**options)

    @bad_timeouts()
    def test_bad_timeouts(self, multiproc_dir, options, error, message):
        """A timeout that is not a positive finite number is refused by the
        constructor, naming the option."""
        with pytest.raises(error) as raised:
            MultiprocessExporter(**options)

        assert message == str(raised.value)

    def test_not_started(self, multiproc_dir):
        """Before when_ready, there is no process and no URL."""
        exporter = MultiprocessExporter()

        assert (None, None) == (exporter.pid, exporter.metrics_url)
        assert f"<MultiprocessExporter {multiproc_dir} not started>" == repr(
            exporter
        )


class TestOnStarting:
    def test_wipes_and_warns(self, multiproc_dir, caplog):
        """on_starting creates the directory, removes the metric files a
        previous run left (nothing else), and names what is dropped."""
        multiproc_dir.mkdir()
        (multiproc_dir / "counter_1.db").write_bytes(b"old")
        (multiproc_dir / "notes.txt").write_text("mine")

        with caplog.at_level(logging.WARNING, "prom_async.aio.prefork"):
            MultiprocessExporter().on_starting(fake_arbiter())

        assert ["notes.txt"] == [p.name for p in multiproc_dir.iterdir()]
        assert [
            (
                "prometheus_client's multiprocess mode "
                f"(PROMETHEUS_MULTIPROC_DIR={multiproc_dir}) drops "
                f"{', '.join(DROPPED)}; one exporter per worker "
                "(prom_async.aio.prefork.worker_exporter) keeps them"
            )
        ] == [r.getMessage() for r in caplog.records]

    def test_reexecuted_master_keeps_the_files(self, multiproc_dir, caplog):
        """A master re-executed by USR2 leaves the old workers' files."""
        multiproc_dir.mkdir()
        (multiproc_dir / "counter_1.db").write_bytes(b"old")

        with caplog.at_level(logging.WARNING, "prom_async.aio.prefork"):
            MultiprocessExporter().on_starting(fake_arbiter(master_pid=7))

        assert ["counter_1.db"] == [p.name for p in multiproc_dir.iterdir()]
        assert "re-executed (USR2)" in caplog.records[0].getMessage()


class TestChildExit:
    def test_marks_the_worker_dead(self, multiproc_dir):
        """child_exit removes the dead worker's live gauges only."""
        multiproc_dir.mkdir()
        for name in (
            "gauge_livesum_10.db",
            "gauge_all_10.db",
            "counter_10.db",
        ):
            (multiproc_dir / name).write_bytes(b"")
        (multiproc_dir / "gauge_livesum_11.db").write_bytes(b"")

        MultiprocessExporter().child_exit(fake_arbiter(), fake_worker(10))

        assert [
            "counter_10.db",
            "gauge_all_10.db",
            "gauge_livesum_11.db",
        ] == sorted(p.name for p in multiproc_dir.iterdir())


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """
    A child process of ours that stands in for the exporter process.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    yield process
    if process.returncode is None:
        process.kill()
    process.communicate()


@pytest.fixture
def forked(monkeypatch, child) -> Iterator[Any]:
    """
    os.fork() and os.pipe() of the module replaced: "forking" returns the
    stand-in child's pid; the test writes the report to the pipe, whose
    write end it holds open as the child would.
    """
    read_end, write_end = os.pipe()
    childs_end = os.dup(write_end)
    monkeypatch.setattr(
        _prefork_multiprocess.os, "pipe", lambda: (read_end, write_end)
    )
    monkeypatch.setattr(_prefork_multiprocess.os, "fork", lambda: child.pid)

    class Forked:
        @staticmethod
        def report(message: bytes) -> None:
            os.write(childs_end, message)

    yield Forked
    monkeypatch.undo()
    os.close(childs_end)


def assert_reaped(pid: int) -> None:
    """
    *pid* was stopped and reaped (so Popen can no longer tell how).
    """
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


class TestWhenReady:
    def test_started(self, multiproc_dir, forked, child, caplog):
        """when_ready knows the exporter's process and URL once it reports;
        on_exit stops it."""
        forked.report(b'{"metrics_url": "http://127.0.0.1:9100/metrics"}\n')
        exporter = MultiprocessExporter()

        with caplog.at_level(logging.INFO, "prom_async.aio.prefork"):
            exporter.when_ready(fake_arbiter())
        known = (exporter.pid, exporter.metrics_url)
        exporter.on_exit(fake_arbiter())
        exporter.on_exit(fake_arbiter())

        assert (child.pid, "http://127.0.0.1:9100/metrics") == known
        assert (None, None) == (exporter.pid, exporter.metrics_url)
        assert_reaped(child.pid)
        assert f"by process {child.pid}" in caplog.records[-1].getMessage()

    @pytest.mark.parametrize(
        ("report", "timeout", "reason"),
        [
            (b'{"error": "OSError: taken"}\n', 10.0, "OSError: taken"),
            (b"", 0.05, "no answer within 0.05 s"),
        ],
    )
    @pytest.mark.usefixtures("multiproc_dir")
    def test_not_started(self, forked, child, report, timeout, reason):
        """An exporter that reports an error, or nothing in time, stops
        gunicorn with the reason."""
        forked.report(report)
        exporter = MultiprocessExporter(start_timeout=timeout)

        with pytest.raises(RuntimeError, match=f"did not start: {reason}"):
            exporter.when_ready(fake_arbiter())

        assert None is exporter.pid
        assert_reaped(child.pid)


class TestReadReport:
    def test_in_pieces(self):
        """A report that arrives in pieces is read whole."""
        read_end, write_end = os.pipe()
        os.write(write_end, b'{"metrics_url": ')
        writer = threading.Thread(
            target=os.write, args=(write_end, b'"u"}\nmore')
        )

        writer.start()
        report = _prefork_multiprocess.read_report(read_end, 10.0)
        writer.join()
        os.close(read_end)
        os.close(write_end)

        assert {"metrics_url": "u"} == report

    def test_ended(self):
        """A process that ends without a word has ended at start-up."""
        read_end, write_end = os.pipe()
        os.close(write_end)

        report = _prefork_multiprocess.read_report(read_end, 10.0)
        os.close(read_end)

        assert {"error": "the exporter process ended at start-up"} == report


class TestStopProcess:
    def test_gone(self, child):
        """A process already reaped is left alone."""
        child.kill()
        child.wait()

        _prefork_multiprocess.stop_process(child.pid, 1.0)

    def test_reaped_by_gunicorn(self, child, monkeypatch):
        """A process gunicorn reaped first counts as stopped."""

        def reaped_elsewhere(pid: int, options: int) -> tuple[int, int]:
            raise ChildProcessError

        monkeypatch.setattr(
            _prefork_multiprocess.os, "waitpid", reaped_elsewhere
        )

        _prefork_multiprocess.stop_process(child.pid, 10.0)
        monkeypatch.undo()

        assert -signal.SIGTERM == child.wait()

    def test_killed_after_the_timeout(self, caplog):
        """A process that ignores SIGTERM is killed."""
        stubborn = subprocess.Popen(
            [
                sys.executable,
                "-c",
                (
                    "import signal, sys\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "print('ready', flush=True)\n"
                    "sys.stdin.read()\n"
                ),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert stubborn.stdout is not None
        assert b"ready\n" == stubborn.stdout.readline()

        with caplog.at_level(logging.WARNING, "prom_async.aio.prefork"):
            _prefork_multiprocess.stop_process(stubborn.pid, 0.05)
        stubborn.communicate()

        assert f"the exporter process {stubborn.pid} did not stop: killed" == (
            caplog.records[0].getMessage()
        )


class TestDetach:
    def test_listeners_closed_signals_default(self, signals_restored):
        """The forked process closes gunicorn's sockets and gives every
        signal its default action."""
        listener = mock.Mock(spec=["close"])
        signal.signal(signal.SIGUSR1, lambda *_: None)

        _prefork_multiprocess.detach([listener])

        listener.close.assert_called_once_with()
        assert signal.SIG_DFL == signal.getsignal(signal.SIGUSR1)


class TestServeDirectory:
    async def test_serves_until_sigterm(self, multiproc_dir, http):
        """The exporter reports its URL, serves the directory, and stops
        on SIGTERM."""
        multiproc_dir.mkdir()
        reports: list[dict[str, Any]] = []
        serving = asyncio.create_task(
            MultiprocessExporter(addr="127.0.0.1")._serve(
                reports.append,
                lambda: True,
            )
        )
        await eventually(lambda: reports, what="the report")
        async with http.get(reports[0]["metrics_url"]) as response:
            status = response.status

        os.kill(os.getpid(), signal.SIGTERM)

        assert 0 == await serving
        assert 200 == status
        assert signal.SIG_DFL == signal.getsignal(signal.SIGTERM)

    async def test_stops_without_its_master(self, multiproc_dir, caplog):
        """The exporter stops once the master is gone."""
        multiproc_dir.mkdir()
        reports: list[dict[str, Any]] = []

        with caplog.at_level(logging.WARNING, "prom_async.aio.prefork"):
            status = await MultiprocessExporter(addr="127.0.0.1")._serve(
                reports.append,
                lambda: False,
            )

        assert 0 == status
        assert ["metrics_url"] == list(reports[0])
        assert "the gunicorn master is gone: the exporter stops" == (
            caplog.records[0].getMessage()
        )

    async def test_timeouts_reach_the_exporter(
        self, multiproc_dir, started_with
    ):
        """The four timeouts reach start_http_server, and its exporter
        closes a connection that sends nothing after idle_timeout."""
        multiproc_dir.mkdir()
        reports: list[dict[str, Any]] = []
        serving = asyncio.create_task(
            MultiprocessExporter(addr="127.0.0.1", **TIMEOUTS)._serve(
                reports.append,
                lambda: True,
            )
        )
        await eventually(lambda: reports, what="the report")
        try:
            closed = await closed_when_idle(
                urllib.parse.urlsplit(reports[0]["metrics_url"]).port
            )
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

        assert 0 == await serving
        assert closed
        assert [TIMEOUTS] == [
            {name: options[name] for name in TIMEOUTS}
            for options in started_with
        ]

    async def test_reports_a_failed_start(self, multiproc_dir):
        """An exporter that cannot start reports why."""
        reports: list[dict[str, Any]] = []

        status = await MultiprocessExporter(addr="127.0.0.1")._serve(
            reports.append, bool
        )

        assert 1 == status
        assert [
            {
                "error": "ValueError: env PROMETHEUS_MULTIPROC_DIR is not "
                "set or not a directory"
            }
        ] == reports


class TestExporterProcess:
    def test_runs_until_sigterm(self, multiproc_dir, signals_restored):
        """The forked process detaches, reports on the pipe, serves, and
        ends on SIGTERM with status 0, its end of the pipe closed."""
        multiproc_dir.mkdir()
        read_end, write_end = os.pipe()
        listener = mock.Mock(spec=["close"])
        answers: list[int] = []

        def scrape_then_stop() -> None:
            report = _prefork_multiprocess.read_report(read_end, 30.0)
            with urllib.request.urlopen(report["metrics_url"]) as response:
                answers.append(response.status)
            os.kill(os.getpid(), signal.SIGTERM)

        scraper = threading.Thread(target=scrape_then_stop)
        scraper.start()
        status = MultiprocessExporter(addr="127.0.0.1")._exporter_process(
            fake_arbiter(listeners=[listener]), write_end
        )
        scraper.join()

        assert (0, [200]) == (status, answers)
        listener.close.assert_called_once_with()
        assert b"" == os.read(read_end, 1)
        os.close(read_end)
