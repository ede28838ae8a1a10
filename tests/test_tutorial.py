"""
docs/tutorial.rst runs as written: its shell sessions are replayed against
real processes on loopback, its YAML files pass promtool, its PromQL is
answered by a real Prometheus scraping the tutorial's service, and
scripts/consul-double serves until interrupted.  (Its Python blocks are
Sphinx doctests.)

A ``.. code-block:: console`` block is a session: a ``$ `` line is a
command (continued on the next line after a ``\\``), the lines after it
are what it prints, ``...`` standing for any lines.  A command ending in
`` &`` keeps running: what follows it must appear in its output.  Blank
lines do not count.  The page's ports are replaced by free ones.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from docs_pages import code_blocks
from fixtures_servers import (
    PROMETHEUS,
    PROMTOOL,
    Prometheus,
    free_loopback_port,
    poll,
)
from victoria_metrics import VICTORIA_METRICS_BINARY


ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "tutorial.rst"
EXAMPLE = ROOT / "examples" / "tutorial"
PORTS = ("8080", "8081", "8082", "8083", "8428", "8500", "9090", "9091")
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
CURL = "curl"


@dataclass
class Outcome:
    """
    What a command should print and what it printed.
    """

    line: str
    expected: list[str]
    actual: str
    background: bool

    @property
    def ok(self) -> bool:
        if self.background:
            return all(each in self.actual for each in self.expected)
        return matches(self.expected, self.actual)


@dataclass
class Command:
    line: str
    output: list[str]

    @property
    def background(self) -> bool:
        return self.line.endswith(" &")


def blocks(kind: str) -> list[str]:
    return code_blocks("tutorial.rst", kind)


def sessions() -> list[Command]:
    commands: list[Command] = []
    for block in blocks("console"):
        continued = False
        for line in block.splitlines():
            if continued:
                commands[-1].line = commands[-1].line[:-1] + line.lstrip()
            elif line.startswith("$ "):
                commands.append(Command(line[2:], []))
            else:
                commands[-1].output.append(line)
            continued = line.endswith("\\")
    return commands


def matches(expected: list[str], actual: str) -> bool:
    """
    Whether *actual*'s lines are *expected*, ``...`` matching any lines;
    blank lines do not count.
    """
    pattern = "".join(
        r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n"
        for line in expected
    )
    actual = "".join(f"{line}\n" for line in actual.splitlines() if line)
    return re.fullmatch(pattern, actual) is not None


def localized(text: str, ports: dict[str, str]) -> str:
    return re.sub(
        r"\b(" + "|".join(PORTS) + r")\b", lambda m: ports[m[1]], text
    )


class Session:
    """
    Runs the page's commands in a copy of examples/tutorial/.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = {port: str(free_loopback_port()) for port in PORTS}
        self.background: list[tuple[subprocess.Popen[str], Path]] = []

    def shell_line(self, line: str) -> str:
        line = localized(line, self.ports)
        line = re.sub(r"^python ", f"{sys.executable} ", line)
        return line.replace("scripts/", f"{ROOT}/scripts/")

    def run(self, command: Command) -> Outcome:
        """
        Run *command* to its end, or in the background until it has printed
        what the page shows (failing if it does not).
        """
        line = self.shell_line(command.line.removesuffix(" &"))
        expected = [localized(each, self.ports) for each in command.output]
        if command.background:
            log = self.directory / f"background-{len(self.background)}.log"
            with log.open("w") as output:
                process = subprocess.Popen(
                    ["/bin/bash", "-c", f"exec {line}"],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            self.background.append((process, log))

            def printed() -> bool:
                if process.poll() is not None:
                    pytest.fail(f"{command.line!r} exited:\n{log.read_text()}")
                return all(each in log.read_text() for each in expected)

            poll(printed, what=f"{command.line!r} printing {expected}")
            return Outcome(command.line, expected, log.read_text(), True)
        result = subprocess.run(
            ["/bin/bash", "-o", "pipefail", "-c", line],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        actual = result.stdout + result.stderr
        return Outcome(command.line, expected, actual, False)

    def stop(self) -> None:
        for process, _log in reversed(self.background):
            process.send_signal(signal.SIGINT)
        stubborn = []
        for process, log in reversed(self.background):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                stubborn.append(f"{process.args!r}:\n{log.read_text()}")
        if stubborn:
            pytest.fail("ignored Ctrl-C: " + "\n".join(stubborn))

    def get_json(self, port: str, path: str) -> Any:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.ports[port]}{path}", timeout=5
        ) as response:
            return json.load(response)


@dataclass
class Replayed:
    session: Session
    outcomes: list[Outcome]


@pytest.fixture(scope="class")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    """
    The page's commands run, in order, in one session kept running for the
    class's tests.
    """
    tmp_path = tmp_path_factory.mktemp("tutorial")
    for binary in (
        PROMETHEUS,
        PROMTOOL,
        PUSHGATEWAY,
        VICTORIA_METRICS_BINARY,
        CURL,
    ):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is missing")
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    running = Session(tmp_path)
    for config in tmp_path.glob("*.yml"):
        config.write_text(localized(config.read_text(), running.ports))
    try:
        yield Replayed(running, [running.run(each) for each in sessions()])
    finally:
        running.stop()


def healthy_target(targets: Any, port: str) -> bool:
    return any(
        target["health"] == "up"
        and target["labels"]["instance"] == f"127.0.0.1:{port}"
        for target in targets["data"]["activeTargets"]
    )


@pytest.mark.prometheus
@pytest.mark.pushgateway
@pytest.mark.victoria_metrics
class TestShellSessions:
    def test_every_command_prints_what_the_page_shows(
        self, replayed: Replayed
    ):
        """Every command of the page, in order, prints what it shows."""
        mismatches = [each for each in replayed.outcomes if not each.ok]

        assert [] == mismatches
        assert len(replayed.outcomes) >= 20

    def test_prometheus_and_victoria_metrics_scrape_the_service(
        self, replayed: Replayed
    ):
        """The static target and the one found in Consul are scraped."""
        session = replayed.session

        poll(
            lambda: healthy_target(
                session.get_json("9090", "/api/v1/targets"),
                session.ports["8081"],
            ),
            what="Prometheus scraping the static target",
        )
        poll(
            lambda: healthy_target(
                session.get_json("8428", "/api/v1/targets"),
                session.ports["8083"],
            ),
            what="VictoriaMetrics scraping the target found in Consul",
        )


@pytest.mark.prometheus
class TestYAML:
    def test_shown_files_are_the_examples(self):
        """Every YAML file the page includes is checked below."""
        included = re.findall(
            r"literalinclude:: \.\./examples/tutorial/(\S+\.yml)",
            PAGE.read_text(),
        )

        assert [
            "prometheus.yml",
            "consul.yml",
            "alerts.yml",
            "alerts_test.yml",
        ] == included

    @pytest.mark.parametrize(
        ("arguments", "status"),
        [
            (["check", "config", "prometheus.yml"], 0),
            (["check", "rules", "alerts.yml"], 0),
            (["test", "rules", "alerts_test.yml"], 0),
            (["check", "config", "consul.yml"], 1),
        ],
    )
    def test_promtool(self, arguments: list[str], status: int):
        """promtool accepts the files, except consul_sd on Debian's."""
        result = subprocess.run(
            [PROMTOOL, *arguments],
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert status == result.returncode, result.stdout + result.stderr

    def test_consul_config_fails_only_for_consul_sd(self, tmp_path: Path):
        """With a static target instead, consul.yml passes promtool."""
        static = re.sub(
            r"consul_sd_configs:\n      - .*\n(?:        .*\n)*",
            'static_configs:\n      - targets: ["127.0.0.1:8083"]\n',
            (EXAMPLE / "consul.yml").read_text(),
        )
        (tmp_path / "static.yml").write_text(static)

        result = subprocess.run(
            [PROMTOOL, "check", "config", "static.yml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert 0 == result.returncode, result.stdout + result.stderr


@pytest.fixture
def tutorial_app(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """
    examples/tutorial/app.py running; its service and metrics addresses.
    """
    port, metrics_port = free_loopback_port(), free_loopback_port()
    log = tmp_path / "app.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "app.py",
                f"--port={port}",
                f"--metrics-port={metrics_port}",
            ],
            cwd=EXAMPLE,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        poll(
            lambda: "metrics on" in log.read_text(),
            what=f"app.py to start:\n{log.read_text()}",
        )
        yield f"http://127.0.0.1:{port}", f"127.0.0.1:{metrics_port}"
    finally:
        process.send_signal(signal.SIGINT)
        assert 0 == process.wait(timeout=30), log.read_text()


def request(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


class TestPromQL:
    @pytest.mark.parametrize(
        "promql",
        blocks("promql"),
        ids=[f"query-{n}" for n in range(1, len(blocks("promql")) + 1)],
    )
    def test_query_answers_with_numbers(
        self,
        promql: str,
        tutorial_app: tuple[str, str],
        prometheus: Callable[..., Prometheus],
    ):
        """The query has an answer, a number, once there is traffic."""
        service, target = tutorial_app
        server = prometheus([target])
        server.wait_for_target_up(target)

        def answered() -> list[Any]:
            for query in ("lang=de&delay=0.1", "lang=fr", "lang=tlh"):
                request(f"{service}/hello?{query}")
            result: list[Any] = server.api("query", query=promql)["result"]
            if result and all(
                series["value"][1] not in {"NaN", "0"} for series in result
            ):
                return result
            return []

        result = poll(answered, what=f"an answer to {promql}")

        assert all(float(series["value"][1]) > 0 for series in result)


class TestConsulDouble:
    def test_serves_until_interrupted(self):
        """It prints its address, answers as an agent, stops on Ctrl-C."""
        port = free_loopback_port()
        process = subprocess.Popen(
            [
                sys.executable,
                ROOT / "scripts" / "consul-double",
                f"--port={port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            agent = poll(
                lambda: self.agent_self(port), what="the double's agent API"
            )
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)

        assert (
            f"Consul agent double on http://127.0.0.1:{port} (datacenter "
            "dc1); Ctrl-C stops it\n"
        ) == first
        assert "dc1" == agent["Config"]["Datacenter"]
        assert (0, "Consul agent double stopped\n", "") == (
            process.returncode,
            out,
            err,
        )

    def test_port_taken(self):
        """A port in use is an error message and status 1."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = subprocess.run(
                [
                    sys.executable,
                    ROOT / "scripts" / "consul-double",
                    f"--port={port}",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        assert 1 == result.returncode
        assert result.stderr.startswith("consul-double: ")

    @staticmethod
    def agent_self(port: int) -> Any:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v1/agent/self", timeout=5
        ) as response:
            return json.load(response)
