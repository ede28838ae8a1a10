"""
What hostile clients cost the exporter: memory, latency, loop stalls.

Each figure runs the exporter (``prom_async.aio.web.start_http_server`` in
the application's event loop) in a process of its own, so that the memory
read is that process's alone (``VmRSS`` in ``/proc/<pid>/status``, Linux
only); this process is the attacker, on loopback only.  The exporter's
process measures what only it can: how late its loop wakes, how long the
application's ``asyncio.to_thread()`` waits, what it logged.

- ``accept``: 10,000 scrapes, each with an ``Accept`` header of an
  OpenMetrics version never sent before (``version=1.0.0.<n>``): the growth
  of the exporter's memory, and how many were not answered 200 or were
  logged at ERROR; then scrapes with versions the library cannot read
  (``version=1.0.x``, ``text/plain; version=abc``, 4,400 digits); after
  the flood of versions, what a scrape in the text format and one with
  Prometheus' ``Accept`` header take.
- ``auth``: basic auth with a bcrypt hash of cost 12; once a first scrape
  had its credential checked, 96 clients guess passwords back to back while
  the authenticated scraper and the application's no-op ``to_thread()``
  are probed every second.
- ``readers``: 40 raw connections with a small receive buffer ask for a
  body of 100k samples, then read one byte a second (``slow``) or nothing
  (``still``): the exporter's memory over the run, and when the server let
  go of them (its side of each connection, from ``/proc/net/tcp``).
- ``lateness``: 50 scrapes of that body at once, while a 1 ms ticker in
  the exporter's loop records how late it wakes.

``--baseline DIR`` measures prom_async imported from the ``src`` directory
*DIR* too (e.g. a copy of the version before a change), figure by figure,
and prints both side by side with their ratio; ``--only`` picks which
copies to measure, ``--current DIR`` another copy than this checkout's
(e.g. ``git archive`` of a commit).  Options of ``start_http_server`` that
one copy lacks are left out for it (``--option NAME=VALUE``, e.g.
``write_timeout=5``).

    python benchmarks/bench_hostile.py --baseline /tmp/old/src
    python benchmarks/bench_hostile.py --figures readers --reader-seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import socket
import statistics
import sys
import time

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src"
CURRENT = "prom_async"
BASELINE = "baseline"
FIGURES = ("accept", "auth", "readers", "lateness")
USER = "prometheus"
PASSWORD = "correct horse battery staple"
HASH_VARIABLE = "BENCH_HOSTILE_BCRYPT_HASH"
# Prometheus 2.42's, as benchmarks/bench_scrape_throughput.py sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TCP_STATES = {
    "01": "established",
    "04": "fin_wait1",
    "05": "fin_wait2",
    "06": "time_wait",
    "07": "close",
    "08": "close_wait",
    "09": "last_ack",
    "0B": "closing",
}

Rows = dict[str, float | int | str]


# The exporter's side.


class LogCounter:
    """
    Counts log records by level; keeps the first message of each.
    """

    def __init__(self) -> None:
        import logging  # noqa: PLC0415

        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        handler = logging.Handler(logging.INFO)
        handler.emit = self._emit  # type: ignore[method-assign]
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(handler)

    def _emit(self, record: Any) -> None:
        self.counts[record.levelname] += 1
        message = f"{record.name}: {record.getMessage()}"
        self.first.setdefault(record.levelname, message[:160])

    def take(self) -> dict[str, Any]:
        taken = {"counts": dict(self.counts), "first": self.first}
        self.counts = Counter()
        self.first = {}
        return taken


class Ticker:
    """
    Wakes every millisecond; records how late each wake-up is, and the
    garbage collector's longest pause meanwhile (in any thread: it holds
    the GIL).
    """

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._collecting = 0.0
        self._longest = (0.0, -1)
        self._collections: Counter[int] = Counter()

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collecting = time.perf_counter()
            return
        pause = time.perf_counter() - self._collecting
        self._collections[info["generation"]] += 1
        self._longest = max(self._longest, (pause, info["generation"]))

    def start(self) -> None:
        self.lateness = []
        self._longest = (0.0, -1)
        self._collections = Counter()
        gc.callbacks.append(self._collected)
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        period = 0.001
        due = time.perf_counter() + period
        while True:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            woke = time.perf_counter()
            self.lateness.append(woke - due)
            due = woke + period

    async def stop(self) -> dict[str, Any]:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.callbacks.remove(self._collected)
        late = sorted(self.lateness) or [math.nan]
        return {
            "wakeups": len(self.lateness),
            "p50": percentile(late, 0.5),
            "p99": percentile(late, 0.99),
            "max": late[-1],
            "gc_longest": self._longest[0],
            "gc_longest_generation": self._longest[1],
            "gc_gen2": self._collections[2],
        }


async def probe_to_thread(
    count: int, interval: float, timeout: float
) -> list[float | None]:
    """
    Start a no-op ``to_thread()`` every *interval* seconds, *count* times:
    how long each waited (None: more than *timeout*).
    """

    async def probe() -> float | None:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.to_thread(int), timeout)
        except TimeoutError:
            return None
        return time.perf_counter() - started

    probes = []
    for _ in range(count):
        probes.append(asyncio.create_task(probe()))
        await asyncio.sleep(interval)
    return list(await asyncio.gather(*probes))


def parse_options(given: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in given:
        name, _, text = item.partition("=")
        value: Any = text
        for kind in (int, float):
            with contextlib.suppress(ValueError):
                value = kind(text)
                break
        if text.lower() == "none":
            value = None
        options[name] = value
    return options


async def serve(arguments: argparse.Namespace) -> None:
    """
    Run the exporter until stdin closes, answering commands on stdin.

    The first line out says where it listens; each command line in gets
    one JSON line out.  Stdin is read by the loop itself, so that no thread
    of the default executor is taken.
    """
    import inspect  # noqa: PLC0415

    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    import prom_async  # noqa: PLC0415

    from prom_async.aio import web  # noqa: PLC0415

    sys.path.insert(0, str(HERE))
    from _registries import build_registry, sample_count  # noqa: PLC0415

    logs = LogCounter()
    registry = build_registry(arguments.samples, CollectorRegistry())
    options = parse_options(arguments.option)
    accepted = inspect.signature(web.start_http_server).parameters
    applied = {k: v for k, v in options.items() if k in accepted}
    if arguments.serve == "auth":
        applied["basic_auth_users"] = {USER: os.environ[HASH_VARIABLE]}
    server = await web.start_http_server(
        addr="127.0.0.1", port=0, registry=registry, **applied
    )
    applied.pop("basic_auth_users", None)
    print(
        json.dumps(
            {
                "port": server.socket.port,
                "prom_async": str(Path(prom_async.__file__).parent),
                "samples": sample_count(registry),
                "applied": applied,
                "ignored": sorted(set(options) - set(applied)),
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), sys.stdin
    )
    ticker = Ticker()
    while line := await commands.readline():
        words = line.decode().split()
        reply: Any = "ok"
        if words == ["log"]:
            reply = logs.take()
        elif words == ["tick", "start"]:
            ticker.start()
        elif words == ["tick", "stop"]:
            reply = await ticker.stop()
        elif words[0] == "threads":
            count, interval, timeout = words[1:]
            reply = await probe_to_thread(
                int(count), float(interval), float(timeout)
            )
        print(json.dumps(reply), flush=True)
    await server.close()


# The attacker's side.


@dataclass
class Exporter:
    name: str
    process: asyncio.subprocess.Process
    hello: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def port(self) -> int:
        return int(self.hello["port"])

    async def ask(self, command: str, timeout: float = 120) -> Any:
        self.send(command)
        return await self.reply(timeout)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")

    async def reply(self, timeout: float = 120) -> Any:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the {self.name} exporter exited")
        return json.loads(line)

    def memory(self, field: str = "VmRSS") -> float:
        """
        The exporter's resident memory (or its peak: VmHWM) in MB.
        """
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return math.nan
        for line in status.splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return math.nan


async def start_exporter(
    name: str,
    figure: str,
    samples: int,
    arguments: argparse.Namespace,
    environment: dict[str, str] | None = None,
) -> Exporter:
    source = arguments.baseline if name == BASELINE else arguments.current
    env = dict(os.environ, **(environment or {}))
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [source, env.get("PYTHONPATH")])
    )
    options = [f"--option={option}" for option in arguments.option]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        figure,
        "--samples",
        str(samples),
        *options,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    exporter = Exporter(name, process, {})
    exporter.hello = await exporter.reply(timeout=300)
    ignored = exporter.hello["ignored"]
    print(
        f"  [{figure}] {name}: {exporter.hello['prom_async']}, "
        f"{exporter.hello['samples']} samples"
        + (f", options ignored: {', '.join(ignored)}" if ignored else "")
    )
    return exporter


async def stop_exporter(exporter: Exporter) -> None:
    assert exporter.process.stdin is not None
    exporter.process.stdin.close()
    try:
        await asyncio.wait_for(exporter.process.wait(), 30)
    except TimeoutError:
        print(f"  {exporter.name}: not stopped after 30 s; killed")
        exporter.process.kill()
        await exporter.process.wait()
    else:
        if exporter.process.returncode:
            print(
                f"  {exporter.name}: the exporter's process exited with "
                f"{exporter.process.returncode}"
            )


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def scrape(
    session: Any, url: str, **options: Any
) -> tuple[int | str, int]:
    """
    One scrape: its status (or the error's name) and the body's size.
    """
    import aiohttp  # noqa: PLC0415

    try:
        async with session.get(url, **options) as response:
            body = await response.read()
            return response.status, len(body)
    except (aiohttp.ClientError, TimeoutError) as error:
        return type(error).__name__, 0


def tally(statuses: Counter[int | str]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(statuses.items(), key=str))


async def scrape_each(
    url: str,
    accepts: Iterator[str],
    *,
    connections: int,
    deadline: float,
    done: Callable[[int], None] = lambda _: None,
) -> Counter[int | str]:
    """
    Scrape *url* once per ``Accept`` value over *connections* connections,
    until they run out or *deadline* (``perf_counter``) passes.
    """
    import aiohttp  # noqa: PLC0415

    statuses: Counter[int | str] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for accept in accepts:
                if time.perf_counter() > deadline:
                    return
                status, _ = await scrape(
                    session,
                    url,
                    headers={"Accept": accept, "Accept-Encoding": "gzip"},
                )
                statuses[status] += 1
                done(statuses.total())

        await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


async def median_scrape(url: str, accept: str, count: int) -> float:
    """
    The median time of *count* scrapes one after the other.
    """
    import aiohttp  # noqa: PLC0415

    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            began = time.perf_counter()
            await scrape(session, url, headers={"Accept": accept})
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def log_rows(taken: dict[str, Any], prefix: str) -> Rows:
    counts = taken["counts"]
    rows: Rows = {
        f"{prefix} ERROR+ log records": counts.get("ERROR", 0)
        + counts.get("CRITICAL", 0),
        f"{prefix} WARNING log records": counts.get("WARNING", 0),
        f"{prefix} INFO log records": counts.get("INFO", 0),
    }
    for level in ("ERROR", "WARNING", "INFO"):
        if level in taken["first"]:
            rows[f"{prefix} first {level}"] = taken["first"][level]
    return rows


async def figure_accept(name: str, arguments: argparse.Namespace) -> Rows:
    exporter = await start_exporter(
        name, "accept", arguments.small_samples, arguments
    )
    try:
        await scrape_each(
            exporter.url,
            iter(["text/plain"] * 20),
            connections=1,
            deadline=math.inf,
        )
        await exporter.ask("log")
        start = exporter.memory()
        requests = arguments.accept_requests
        checkpoints: list[str] = []

        def done(count: int) -> None:
            if count % (requests // 5 or 1) == 0:
                checkpoints.append(f"{count}:{exporter.memory():.0f}")

        began = time.perf_counter()
        statuses = await scrape_each(
            exporter.url,
            (
                f"application/openmetrics-text; version=1.0.0.{n}"
                for n in range(requests)
            ),
            connections=arguments.connections,
            deadline=began + arguments.accept_seconds,
            done=done,
        )
        seconds = time.perf_counter() - began
        end = exporter.memory()
        rows: Rows = {
            "distinct versions: requests": statuses.total(),
            "distinct versions: seconds": seconds,
            "distinct versions: scrapes per second": statuses.total()
            / seconds,
            "distinct versions: RSS before MB": start,
            "distinct versions: RSS after MB": end,
            "distinct versions: RSS growth MB": end - start,
            "distinct versions: RSS MB by request": " ".join(checkpoints),
            "distinct versions: non-200": statuses.total() - statuses[200],
            "distinct versions: statuses": tally(statuses),
        }
        rows.update(log_rows(await exporter.ask("log"), "distinct versions:"))
        for kind, accept in {
            "text 0.0.4": "text/plain; version=0.0.4",
            "Prometheus' Accept": PROMETHEUS_ACCEPT,
        }.items():
            rows[f"then a scrape, {kind}: median ms"] = (
                await median_scrape(exporter.url, accept, 20) * 1e3
            )
        kinds = {
            "1.0.x": "application/openmetrics-text; version=1.0.x",
            "abc": "text/plain; version=abc",
            "4400 digits": "application/openmetrics-text; version=1."
            + "9" * 4400,
        }
        for kind, accept in kinds.items():
            statuses = await scrape_each(
                exporter.url,
                iter([accept] * arguments.malformed_requests),
                connections=arguments.connections,
                deadline=time.perf_counter() + arguments.accept_seconds,
            )
            rows[f"version={kind}: statuses"] = tally(statuses)
            rows[f"version={kind}: 500s"] = statuses[500]
            rows.update(
                log_rows(await exporter.ask("log"), f"version={kind}:")
            )
        rows["RSS at the end MB"] = exporter.memory()
    finally:
        await stop_exporter(exporter)
    return rows


async def figure_auth(
    name: str, arguments: argparse.Namespace, password_hash: str
) -> Rows:
    import aiohttp  # noqa: PLC0415

    exporter = await start_exporter(
        name,
        "auth",
        arguments.small_samples,
        arguments,
        {HASH_VARIABLE: password_hash},
    )
    good = basic_auth(PASSWORD)
    timeout = aiohttp.ClientTimeout(total=arguments.probe_timeout)
    guesses: Counter[int | str] = Counter()
    stop = asyncio.Event()
    probes = arguments.probes
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as prober,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=120),
            ) as guessers,
        ):
            began = time.perf_counter()
            first, _ = await scrape(prober, exporter.url, headers=good)
            first_seconds = time.perf_counter() - began
            await exporter.ask("log")

            async def guess(number: int) -> None:
                attempt = 0
                while not stop.is_set():
                    attempt += 1
                    status, _ = await scrape(
                        guessers,
                        exporter.url,
                        headers=basic_auth(f"{number}-{attempt}"),
                    )
                    if not stop.is_set():
                        guesses[status] += 1

            guessing = [
                asyncio.create_task(guess(n))
                for n in range(arguments.guessers)
            ]
            await asyncio.sleep(arguments.auth_warmup)
            flood_started = time.perf_counter()
            exporter.send(
                f"threads {probes} {arguments.probe_interval} "
                f"{arguments.probe_timeout}"
            )

            async def probe() -> tuple[int | str, float]:
                started = time.perf_counter()
                status, _ = await scrape(prober, exporter.url, headers=good)
                return status, time.perf_counter() - started

            scrapes = []
            for _ in range(probes):
                scrapes.append(asyncio.create_task(probe()))
                await asyncio.sleep(arguments.probe_interval)
            scraped = await asyncio.gather(*scrapes)
            threads = await exporter.reply(arguments.probe_timeout + 60)
            flood_seconds = time.perf_counter() - flood_started
            stop.set()
            for task in guessing:
                task.cancel()
            await asyncio.gather(*guessing, return_exceptions=True)
        logs = await exporter.ask("log")
    finally:
        await stop_exporter(exporter)
    latencies = sorted(seconds for _, seconds in scraped)
    waits = sorted(wait for wait in threads if wait is not None)
    rows: Rows = {
        "first scrape (bcrypt checked)": f"{first} in {first_seconds:.2f} s",
        "guessers": arguments.guessers,
        "authenticated scrape p50 s": percentile(latencies, 0.5),
        "authenticated scrape max s": latencies[-1] if latencies else math.nan,
        "authenticated scrapes over 10 s": sum(s > 10 for s in latencies),
        "authenticated scrapes timed out": sum(
            not isinstance(status, int) for status, _ in scraped
        ),
        "authenticated scrapes": tally(Counter(s for s, _ in scraped)),
        "to_thread p50 s": percentile(waits, 0.5),
        "to_thread max s": waits[-1] if waits else math.nan,
        f"to_thread over {arguments.probe_timeout:g} s": threads.count(None),
        "guesses answered": guesses.total(),
        "guesses per second": guesses.total() / flood_seconds,
        "guesses 401": guesses[401],
        "guesses 429": guesses[429],
        "guesses, all statuses": tally(guesses),
    }
    rows.update(log_rows(logs, "during the flood:"))
    return rows


def basic_auth(password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{USER}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def server_connections(port: int, clients: set[int]) -> Counter[str]:
    """
    The states of the server's side (on *port*) of the connections from
    the ports *clients*; ``unsent`` counts the bytes in their kernel send
    queues.
    """
    states: Counter[str] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), Path(table).open() as lines:
            next(lines)
            for line in lines:
                local, remote, state, queues = line.split()[1:5]
                if (
                    int(local.rsplit(":", 1)[1], 16) == port
                    and int(remote.rsplit(":", 1)[1], 16) in clients
                ):
                    states[TCP_STATES.get(state, state)] += 1
                    states["unsent"] += int(queues.split(":")[0], 16)
    return states


class Readers:
    """
    Raw connections that ask for the metrics and hardly read the answer.
    """

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.open: set[socket.socket] = set()
        self.received = 0
        self.seen: Counter[str] = Counter()
        self.ports: set[int] = set()

    async def connect(self, port: int, count: int, rcvbuf: int) -> None:
        loop = asyncio.get_running_loop()
        request = (
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Accept-Encoding: identity\r\n\r\n"
        )
        for _ in range(count):
            reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Before connecting, so that the window offered is small.
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            reader.setblocking(False)
            self.sockets.append(reader)
            await loop.sock_connect(reader, ("127.0.0.1", port))
            await loop.sock_sendall(reader, request)
        self.open = set(self.sockets)
        self.ports = {reader.getsockname()[1] for reader in self.sockets}

    def read_a_byte(self) -> None:
        """
        One byte from each connection that has one; note those that ended.
        """
        for reader in list(self.open):
            try:
                got = reader.recv(1)
            except BlockingIOError:
                continue
            except OSError as error:
                got = b""
                self.seen[type(error).__name__] += 1
            else:
                if not got:
                    self.seen["EOF"] += 1
            self.received += len(got)
            if not got:
                self.open.discard(reader)

    def close(self) -> None:
        for reader in self.sockets:
            reader.close()


async def figure_readers(
    name: str, arguments: argparse.Namespace, mode: str
) -> Rows:
    exporter = await start_exporter(
        name, "readers", arguments.samples, arguments
    )
    readers = Readers()
    count = arguments.readers
    try:
        statuses = await scrape_each(
            exporter.url,
            iter(["text/plain"] * 2),
            connections=1,
            deadline=math.inf,
        )
        await exporter.ask("log")
        start = peak = exporter.memory()
        await readers.connect(exporter.port, count, arguments.rcvbuf)
        began = time.perf_counter()
        timeline: list[str] = []
        held_by_second = []
        for second in range(1, arguments.reader_seconds + 1):
            await asyncio.sleep(max(0, began + second - time.perf_counter()))
            if mode == "slow":
                readers.read_a_byte()
            peak = max(peak, exporter.memory())
            held_by_second.append(
                server_connections(exporter.port, readers.ports)["established"]
            )
            if second % 5 == 0 or second == arguments.reader_seconds:
                timeline.append(
                    f"{second}s:{exporter.memory():.0f}MB"
                    f"/{held_by_second[-1]}held"
                )
        end = exporter.memory()
        states = server_connections(exporter.port, readers.ports)
        logs = await exporter.ask("log")
    finally:
        readers.close()
        await stop_exporter(exporter)
    cut = [s for s, held in enumerate(held_by_second, 1) if held < count]
    rows: Rows = {
        "warm-up scrapes": tally(statuses),
        "RSS before MB": start,
        "RSS peak MB": peak,
        f"RSS after {arguments.reader_seconds} s MB": end,
        "RSS growth per reader MB": (end - start) / count,
        "RSS over time": " ".join(timeline),
        "server still holding at the end": states["established"],
        "server side at the end": tally(
            Counter({k: v for k, v in states.items() if k != "unsent"})
        )
        or "none",
        "kernel send queues at the end MB": states["unsent"] / 2**20,
        "first cut off after s": cut[0] if cut else math.nan,
        "all cut off after s": next(
            (s for s, held in enumerate(held_by_second, 1) if not held),
            math.nan,
        ),
        "client saw": tally(readers.seen) or "nothing",
        "bytes read": readers.received,
    }
    rows.update(log_rows(logs, "logged:"))
    return rows


async def figure_lateness(name: str, arguments: argparse.Namespace) -> Rows:
    import aiohttp  # noqa: PLC0415

    exporter = await start_exporter(
        name, "lateness", arguments.samples, arguments
    )
    encoding = "gzip" if arguments.gzip else "identity"
    try:
        await scrape_each(
            exporter.url,
            iter(["text/plain"] * 2),
            connections=1,
            deadline=math.inf,
        )
        await exporter.ask("tick start")
        await asyncio.sleep(2)
        idle = await exporter.ask("tick stop")
        rounds = []
        statuses: Counter[int | str] = Counter()
        walls = []
        for _ in range(arguments.rounds):
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(
                connector=connector, auto_decompress=False
            ) as session:
                await exporter.ask("tick start")
                began = time.perf_counter()
                answers = await asyncio.gather(
                    *(
                        scrape(
                            session,
                            exporter.url,
                            headers={"Accept-Encoding": encoding},
                        )
                        for _ in range(arguments.scrapes)
                    )
                )
                walls.append(time.perf_counter() - began)
                rounds.append(await exporter.ask("tick stop"))
            statuses.update(status for status, _ in answers)
            size = max(length for _, length in answers)
        logs = await exporter.ask("log")
    finally:
        await stop_exporter(exporter)
    rows: Rows = {
        "body MB": size / 1e6,
        "idle max lateness ms": idle["max"] * 1e3,
        "max lateness ms": max(r["max"] for r in rounds) * 1e3,
        "max lateness per round ms": " ".join(
            f"{r['max'] * 1e3:.0f}" for r in rounds
        ),
        "p99 lateness ms (worst round)": max(r["p99"] for r in rounds) * 1e3,
        "longest GC pause per round ms": " ".join(
            f"{r['gc_longest'] * 1e3:.0f}(gen{r['gc_longest_generation']})"
            for r in rounds
        ),
        "full (gen 2) collections": sum(r["gc_gen2"] for r in rounds),
        "p50 lateness ms (median round)": statistics.median(
            r["p50"] for r in rounds
        )
        * 1e3,
        "seconds for all scrapes (median round)": statistics.median(walls),
        "statuses": tally(statuses),
    }
    rows.update(log_rows(logs, "logged:"))
    return rows


def shown(value: float | str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def report(title: str, results: dict[str, Rows]) -> None:
    names = list(results)
    labels = list(dict.fromkeys(k for rows in results.values() for k in rows))
    print(f"\n{title}")
    width = max(map(len, labels))
    header = f"{'':<{width}}" + "".join(f"  {n:>14}" for n in names)
    if len(names) == 2:
        header += f"  {names[0] + '/' + names[1]:>20}"
    print(header)
    for label in labels:
        values = [results[n].get(label, "-") for n in names]
        texts = [shown(v) for v in values]
        if any(len(t) > 14 for t in texts):
            print(label)
            for name, text in zip(names, texts, strict=True):
                print(f"    {name:>10}: {text}")
            continue
        line = f"{label:<{width}}" + "".join(f"  {t:>14}" for t in texts)
        numbers = [v for v in values if isinstance(v, int | float)]
        if len(numbers) == 2 and all(0 < v < math.inf for v in numbers):
            line += f"  {numbers[0] / numbers[1]:>19.2f}x"
        print(line)


async def run(arguments: argparse.Namespace) -> None:
    names = arguments.only or (
        [BASELINE, CURRENT] if arguments.baseline else [CURRENT]
    )
    if BASELINE in names and not arguments.baseline:
        raise SystemExit("--only baseline needs --baseline DIR")
    print(
        f"exporters: {', '.join(names)}; figures: "
        f"{', '.join(arguments.figures)}; {os.cpu_count()} CPUs; "
        f"python {sys.version.split()[0]}"
    )
    password_hash = ""
    if "auth" in arguments.figures:
        import bcrypt  # noqa: PLC0415

        began = time.perf_counter()
        password_hash = bcrypt.hashpw(
            PASSWORD.encode(), bcrypt.gensalt(arguments.bcrypt_cost)
        ).decode()
        print(
            f"bcrypt cost {arguments.bcrypt_cost}: one hash took "
            f"{time.perf_counter() - began:.2f} s"
        )
    if "accept" in arguments.figures:
        report(
            f"1. Accept versions: {arguments.accept_requests} distinct, "
            f"then {arguments.malformed_requests} of each unreadable kind, "
            f"{arguments.connections} connections",
            {n: await figure_accept(n, arguments) for n in names},
        )
    if "auth" in arguments.figures:
        report(
            f"2. Password guessing: {arguments.guessers} clients; "
            f"{arguments.probes} probes, one every "
            f"{arguments.probe_interval:g} s",
            {n: await figure_auth(n, arguments, password_hash) for n in names},
        )
    if "readers" in arguments.figures:
        for mode in arguments.reader_modes:
            report(
                f"3. {arguments.readers} {mode} readers of a body of "
                f"{arguments.samples} samples (SO_RCVBUF "
                f"{arguments.rcvbuf}), {arguments.reader_seconds} s",
                {n: await figure_readers(n, arguments, mode) for n in names},
            )
    if "lateness" in arguments.figures:
        report(
            f"4. Loop lateness: {arguments.scrapes} scrapes at once of "
            f"{arguments.samples} samples "
            f"({'gzip' if arguments.gzip else 'identity'}), "
            f"{arguments.rounds} rounds",
            {n: await figure_lateness(n, arguments) for n in names},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--serve", choices=FIGURES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--current",
        metavar="DIR",
        default=str(SOURCE),
        help="the src directory of prom_async (default: this checkout's)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure prom_async imported from this src directory",
    )
    parser.add_argument(
        "--only", nargs="+", choices=(CURRENT, BASELINE), default=None
    )
    parser.add_argument(
        "--figures", nargs="+", choices=FIGURES, default=list(FIGURES)
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a start_http_server option, where that copy has it",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=100_000,
        help="samples served to slow readers and simultaneous scrapes",
    )
    parser.add_argument(
        "--small-samples",
        type=int,
        default=1_000,
        help="samples served for the Accept and auth figures",
    )
    parser.add_argument("--accept-requests", type=int, default=10_000)
    parser.add_argument("--malformed-requests", type=int, default=300)
    parser.add_argument(
        "--accept-seconds",
        type=float,
        default=120,
        help="at most this long for each series of Accept scrapes",
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--bcrypt-cost", type=int, default=12)
    parser.add_argument("--guessers", type=int, default=96)
    parser.add_argument("--auth-warmup", type=float, default=3.0)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--probe-interval", type=float, default=1.0)
    parser.add_argument("--probe-timeout", type=float, default=30.0)
    parser.add_argument("--readers", type=int, default=40)
    parser.add_argument(
        "--reader-modes",
        nargs="+",
        choices=("slow", "still"),
        default=["slow", "still"],
    )
    parser.add_argument("--reader-seconds", type=int, default=15)
    parser.add_argument("--rcvbuf", type=int, default=4096)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gzip", action="store_true")
    arguments = parser.parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments))
    else:
        asyncio.run(run(arguments))


if __name__ == "__main__":
    main()
