"""The talk's Flask service, examples/cat_or_not_flask.py, as run."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import urllib.parse
import urllib.request

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prometheus_client.parser import text_string_to_metric_families

from fixtures_servers import poll, promtool_check_metrics


EXAMPLE = Path(__file__).parent.parent / "examples" / "cat_or_not_flask.py"
PICTURES = EXAMPLE.parent / "pictures"
CAT = PICTURES / "lying-cat.png"
DOG = PICTURES / "standing-dog.png"
KEY = "k3y"
READY = re.compile(
    r"cat-or\.not on (?P<analyze>http://\S+/analyze), "
    r"metrics on (?P<metrics>http://\S+/metrics)"
)
BOUNDARY = "cat-or-not-test-boundary"


@dataclass
class Service:
    """
    The example running as a subprocess.
    """

    analyze_url: str
    metrics_url: str
    process: subprocess.Popen[bytes]
    log: Path
    returncode: int | None = field(default=None)

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def value(self, name: str, **labels: str) -> float | None:
        """
        The sample *name* with *labels* in a fresh scrape, or None.
        """
        for family in text_string_to_metric_families(self.scrape()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def values(self, *names: str) -> dict[str, float | None]:
        return {name: self.value(name) for name in names}

    def post(
        self, picture: Path, *, key: str | None = None, name: str = "picture"
    ) -> tuple[int, str]:
        """
        POST *picture* as the README does, with curl; the status and body.
        """
        command = ["curl", "-sS", "-w", "%{http_code}"]
        if key is not None:
            command += ["-H", f"X-API-Key: {key}"]
        command += ["-F", f"{name}=@{picture}", self.analyze_url]
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=30
        ).stdout
        return int(out[-3:]), out[:-3]


def ready(process: subprocess.Popen[bytes], log: Path) -> re.Match[str] | None:
    if process.poll() is not None:
        pytest.fail(
            f"the example exited with {process.returncode}:\n"
            + log.read_text()
        )
    return READY.search(log.read_text())


@contextmanager
def running(tmp_path: Path, *options: str) -> Iterator[Service]:
    """
    Run the example on free loopback ports until the block ends, then stop
    it with SIGTERM (a kill if that takes too long).
    """
    log = tmp_path / "cat_or_not_flask.log"
    with (
        log.open("wb") as output,
        subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE),
                "--port",
                "0",
                "--metrics-port",
                "0",
                *options,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        service: Service | None = None
        try:
            urls = poll(
                lambda: ready(process, log), what="the example to listen"
            )
            service = Service(
                urls["analyze"], urls["metrics"], process=process, log=log
            )
            yield service
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if service is not None:
                service.returncode = process.returncode
            print(log.read_text())  # noqa: T201 -- shown if the test fails


def multipart(name: str, content: bytes) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="up.png"'
            "\r\nContent-Type: image/png\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


class TestCatOrNotFlask:
    def test_verdicts(self, tmp_path):
        """A cat is meow!, a dog nope!, a non-picture a 415; each request is
        timed, each picture analyzed, and nothing is left in progress."""
        not_a_picture = tmp_path / "notes.txt"
        not_a_picture.write_text("a cat, honest\n")

        with running(tmp_path) as service:
            answers = [
                service.post(path) for path in (CAT, DOG, not_a_picture)
            ]
            missing = service.post(CAT, name="photo")
            after = service.values(
                "cat_or_not_request_seconds_count",
                "cat_or_not_analyze_seconds_count",
                "cat_or_not_in_progress_requests",
                "auth_seconds_count",
            )

        assert [200, 200, 415] == [status for status, _ in answers]
        assert ["meow!\n", "nope!\n"] == [body for _, body in answers[:2]]
        assert "not a PNG, GIF or JPEG" in answers[2][1]
        assert 400 == missing[0]
        assert "multipart field 'picture'" in missing[1]
        assert {
            "cat_or_not_request_seconds_count": 4.0,
            "cat_or_not_analyze_seconds_count": 3.0,
            "cat_or_not_in_progress_requests": 0.0,
            "auth_seconds_count": 0.0,
        } == after

    def test_too_large(self, tmp_path):
        """An upload over --max-bytes is refused with a 413, unanalyzed."""
        with running(tmp_path, "--max-bytes", "100") as service:
            status, _ = service.post(CAT)
            analyzed = service.value("cat_or_not_analyze_seconds_count")

        assert (413, 0.0) == (status, analyzed)

    def test_api_key(self, tmp_path):
        """With --api-key, a missing or wrong key is a 401 counted as wrong
        credentials, never analyzed; every check is timed."""
        with running(tmp_path, "--api-key", KEY) as service:
            missing = service.post(CAT)
            wrong = service.post(CAT, key="no")
            right = service.post(CAT, key=KEY)
            after = service.values(
                "auth_wrong_creds_total",
                "auth_errors_total",
                "auth_seconds_count",
                "cat_or_not_request_seconds_count",
                "cat_or_not_analyze_seconds_count",
            )

        assert [401, 401] == [missing[0], wrong[0]]
        assert "X-API-Key is missing or wrong" in wrong[1]
        assert (200, "meow!\n") == right
        assert {
            "auth_wrong_creds_total": 2.0,
            "auth_errors_total": 0.0,
            "auth_seconds_count": 3.0,
            "cat_or_not_request_seconds_count": 3.0,
            "cat_or_not_analyze_seconds_count": 1.0,
        } == after

    def test_api_key_file(self, tmp_path):
        """With --api-key-file, the key is read on every check: a changed
        key applies at once, and an unreadable one is an auth error per
        attempt (three) and a 503."""
        key_file = tmp_path / "api-key"
        key_file.write_text(KEY + "\n")

        with running(tmp_path, "--api-key-file", str(key_file)) as service:
            first = service.post(CAT, key=KEY)
            key_file.unlink()
            unreadable = service.post(CAT, key=KEY)
            key_file.write_text("n3w")
            old = service.post(CAT, key=KEY)
            new = service.post(DOG, key="n3w")
            after = service.values(
                "auth_errors_total",
                "auth_wrong_creds_total",
                "auth_seconds_count",
            )

        assert (200, "meow!\n") == first
        assert 503 == unreadable[0]
        assert "cannot be read" in unreadable[1]
        assert (401, (200, "nope!\n")) == (old[0], new)
        assert {
            "auth_errors_total": 3.0,
            "auth_wrong_creds_total": 1.0,
            "auth_seconds_count": 4.0,
        } == after

    def test_in_progress(self, tmp_path):
        """A request whose upload is still arriving shows in the in-progress
        gauge; once answered, it is gone from it."""
        body = multipart("picture", CAT.read_bytes())

        with running(tmp_path) as service:
            url = urllib.parse.urlsplit(service.analyze_url)
            connection = http.client.HTTPConnection(
                url.hostname, url.port, timeout=30
            )
            try:
                connection.putrequest("POST", url.path)
                connection.putheader(
                    "Content-Type",
                    f"multipart/form-data; boundary={BOUNDARY}",
                )
                connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body[:40])
                poll(
                    lambda: (
                        1.0 == service.value("cat_or_not_in_progress_requests")
                    ),
                    what="the upload to show in the in-progress gauge",
                )
                connection.send(body[40:])
                response = connection.getresponse()
                answer = response.status, response.read().decode()
            finally:
                connection.close()
            after = service.value("cat_or_not_in_progress_requests")

        assert (200, "meow!\n") == answer
        assert 0.0 == after

    def test_sigterm(self, tmp_path):
        """SIGTERM stops the service and its metrics server: exit status
        0, and the metrics port is closed."""
        with running(tmp_path) as service:
            service.scrape()

        assert 0 == service.returncode
        with pytest.raises(OSError, match="refused"):
            service.scrape()

    @pytest.mark.prometheus
    def test_promtool_lint(self, tmp_path):
        """What the service serves after traffic passes promtool check
        metrics."""
        with running(tmp_path, "--api-key", KEY) as service:
            service.post(CAT, key=KEY)
            service.post(DOG, key="no")
            exposition = service.scrape()

        result = promtool_check_metrics(exposition.encode())

        assert "auth_wrong_creds_total 1.0" in exposition
        assert (0, "", "") == (result.returncode, result.stdout, result.stderr)
