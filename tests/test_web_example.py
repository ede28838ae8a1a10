"""The example service, examples/cat_or_not.py, in process and as run."""

from __future__ import annotations

import asyncio
import bisect
import importlib.util
import math
import struct
import subprocess
import sys
import urllib.parse
import urllib.request
import zlib

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from fixtures_servers import eventually, free_loopback_port, poll


ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "cat_or_not.py"
PICTURES = EXAMPLE.parent / "pictures"
PLOT_SCRIPT = ROOT / "scripts" / "plot_example.py"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cat_or_not = load("cat_or_not", EXAMPLE)
#: The demo traffic of the picture script, scripts/plot_example.py.
plot_example = load("plot_example", PLOT_SCRIPT)


def png(width: int, height: int) -> bytes:
    """
    A valid grey PNG of the given size.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (
            struct.pack(">I", len(data))
            + body
            + struct.pack(">I", zlib.crc32(body))
        )

    rows = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def gif(width: int, height: int) -> bytes:
    """
    A one-colour GIF of the given size.
    """
    return (
        b"GIF89a"
        + struct.pack("<HH", width, height)
        + b"\x80\x00\x00\xff\xff\xff\x00\x00\x00"
        + b",\x00\x00\x00\x00"
        + struct.pack("<HH", width, height)
        + b"\x00\x02\x02D\x01\x00;"
    )


def jpeg_header(width: int, height: int) -> bytes:
    """
    The start of a JPEG, up to its start-of-frame segment.
    """
    app0 = (
        b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\1\0\1\0\0"
    )
    sof = (
        b"\xff\xc0"
        + struct.pack(">HBHHB", 11, 8, height, width, 1)
        + b"\x01\x11\x00"
    )
    return b"\xff\xd8" + app0 + sof


@asynccontextmanager
async def running(
    registry: CollectorRegistry, **options: Any
) -> AsyncIterator[tuple[str, str]]:
    """
    Run the example on loopback; yield the /analyze and metrics URLs.
    """
    app: web.Application = cat_or_not.build_app(
        registry=registry, metrics_addr="127.0.0.1", metrics_port=0, **options
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield (
            str(server.make_url("/analyze")),
            app[cat_or_not.METRICS_SERVER].metrics_url,
        )
    finally:
        await server.close()


async def post(
    http: aiohttp.ClientSession,
    url: str,
    *,
    field: str = "picture",
    content: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    form = aiohttp.FormData()
    form.add_field(field, content, filename="upload")
    async with http.post(url, data=form, headers=headers) as response:
        return response.status, await response.text()


class TestCatOrNot:
    @pytest.mark.parametrize(
        ("picture", "verdict"),
        [
            (png(4, 2), "meow!"),
            (png(2, 4), "nope!"),
            (gif(3, 1), "meow!"),
            (gif(1, 1), "nope!"),
            (jpeg_header(640, 480), "meow!"),
            (jpeg_header(480, 640), "nope!"),
        ],
    )
    async def test_verdicts(self, registry, http, picture, verdict):
        """A landscape picture is a cat, anything else is not."""
        async with running(registry) as (analyze, _):
            answer = await post(http, analyze, content=picture)

        assert (200, verdict + "\n") == answer
        assert 1.0 == registry.get_sample_value(
            "cat_or_not_verdicts_total", {"verdict": verdict}
        )

    async def test_bad_uploads(self, registry, http):
        """Unusable uploads get a 4xx that says why, and are counted."""
        async with running(registry, max_bytes=1024) as (analyze, _):
            missing = await post(http, analyze, field="photo", content=b"x")
            not_image = await post(http, analyze, content=b"hello, cat")
            too_large = await post(http, analyze, content=png(4, 2) * 100)
            async with http.post(analyze, data=b"raw") as response:
                raw = response.status, await response.text()

        assert 400 == missing[0]
        assert "'picture' field is missing" in missing[1]
        assert 415 == not_image[0]
        assert "not a PNG, GIF or JPEG" in not_image[1]
        assert 413 == too_large[0]
        assert "larger than 1024 bytes" in too_large[1]
        assert 400 == raw[0]
        assert "multipart/form-data" in raw[1]
        reasons = (
            "missing_field",
            "not_an_image",
            "too_large",
            "not_multipart",
        )
        assert dict.fromkeys(reasons, 1.0) == {
            reason: registry.get_sample_value(
                "cat_or_not_bad_uploads_total", {"reason": reason}
            )
            for reason in reasons
        }

    async def test_api_key(self, registry, http):
        """With an API key, a missing or wrong key is refused and counted;
        every check is timed."""
        async with running(registry, api_key="k3y") as (analyze, _):
            missing = await post(http, analyze, content=png(2, 1))
            wrong = await post(
                http, analyze, content=png(2, 1), headers={"X-API-Key": "no"}
            )
            right = await post(
                http, analyze, content=png(2, 1), headers={"X-API-Key": "k3y"}
            )

        assert (401, 401, 200) == (missing[0], wrong[0], right[0])
        assert 3.0 == registry.get_sample_value(
            "cat_or_not_auth_duration_seconds_count"
        )
        assert (2.0, 1.0) == tuple(
            registry.get_sample_value(
                "cat_or_not_responses_total",
                {"route": "/analyze", "code": code},
            )
            for code in ("401", "200")
        )
        assert (1.0, 1.0) == (
            registry.get_sample_value(
                "cat_or_not_auth_errors_total", {"reason": "missing"}
            ),
            registry.get_sample_value(
                "cat_or_not_auth_errors_total", {"reason": "wrong"}
            ),
        )

    async def test_metrics_move(self, registry, http):
        """The metrics port shows the request and analysis times move."""
        async with running(registry) as (analyze, metrics_url):
            await post(http, analyze, content=png(4, 2))
            await post(http, analyze, content=b"not a picture")
            async with http.get(
                metrics_url, headers={"Accept-Encoding": "identity"}
            ) as response:
                exposition = await response.text()

        assert (
            'cat_or_not_request_duration_seconds_count{route="/analyze"} 2.0'
            in exposition
        )
        assert "cat_or_not_analysis_duration_seconds_count 2.0" in exposition
        assert "cat_or_not_requests_in_progress 0.0" in exposition
        assert "cat_or_not_auth_duration_seconds_count 0.0" in exposition
        assert "asyncio_event_loop_lag_seconds_count" in exposition
        assert (
            'cat_or_not_bad_uploads_total{reason="not_an_image"} 1.0'
            in exposition
        )


class TestAnalysisTime:
    @pytest.mark.parametrize(
        ("size", "seconds"),
        [
            ((4000, 3000), 0.3),
            ((200, 200), 0.001),
            ((1, 1), 2.5e-08),
            ((65535, 65535), 2.0),
        ],
    )
    def test_grows_with_the_pixels(self, size, seconds):
        """The simulated analysis takes a second per 40 megapixels, at most
        2 s."""
        assert seconds == pytest.approx(cat_or_not.analysis_seconds(*size))

    async def test_slow_upload_is_in_progress(self, registry, http):
        """A request whose upload is still arriving counts as in progress,
        and no longer once answered."""
        gauge = "cat_or_not_requests_in_progress"
        more = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield png(4, 2)
            await more.wait()
            yield b"\0" * 1024

        async with running(registry) as (analyze, _):
            form = aiohttp.FormData()
            form.add_field("picture", body(), filename="slow.png")
            upload = asyncio.ensure_future(post_form(http, analyze, form))
            await eventually(
                lambda: registry.get_sample_value(gauge) == 1.0,
                what="the upload in progress",
            )
            more.set()
            answer = await upload

        assert (200, "meow!\n") == answer
        assert 0.0 == registry.get_sample_value(gauge)


async def post_form(
    http: aiohttp.ClientSession, url: str, form: aiohttp.FormData
) -> tuple[int, str]:
    async with http.post(url, data=form) as response:
        return response.status, await response.text()


def p90(seconds: list[float]) -> float:
    """
    The 90th percentile: the smallest value that 90% are at most.
    """
    ordered = sorted(seconds)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def bucket_of(seconds: float) -> int:
    """
    The index of the example's request bucket that *seconds* falls in.
    """
    return bisect.bisect_left(cat_or_not.REQUEST_BUCKETS, seconds)


class TestBuckets:
    async def test_p90_from_prometheus_is_within_a_bucket(
        self, registry, prometheus
    ):
        """The talk's histogram_quantile(0.9, ...) over the example's
        buckets lands in the bucket of the true p90 of the requests sent, or
        the next: the buckets fit the latencies."""
        async with running(registry) as (analyze, metrics_url):
            target = urllib.parse.urlsplit(metrics_url).netloc
            scraper = await asyncio.to_thread(prometheus, [target])
            await asyncio.to_thread(scraper.wait_for_target_up, target)
            sizes = plot_example.picture_sizes(300, seed=11)
            answers = await plot_example.send_pictures(analyze, sizes)
            await asyncio.to_thread(
                scraper.wait_for_value,
                "sum(cat_or_not_request_duration_seconds_count)",
                "300",
            )
            # The buckets' counts since the start: every request sent.
            (result,) = (
                await asyncio.to_thread(
                    scraper.api,
                    "query",
                    query="histogram_quantile(0.9, sum by (le) "
                    "(cat_or_not_request_duration_seconds_bucket))",
                )
            )["result"]
        estimate = float(result["value"][1])
        true_p90 = p90([answer.seconds for answer in answers])

        assert {200} == {answer.status for answer in answers}
        assert bucket_of(true_p90) - bucket_of(estimate) in {0, 1}, (
            estimate,
            true_p90,
        )
        # Not the artifact of buckets that are all too wide: the estimate
        # is above the lowest buckets.
        assert bucket_of(estimate) > bucket_of(0.01)


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


class TestRunCommand:
    def test_readme_command_serves(self):
        """`python examples/cat_or_not.py --port --metrics-port` serves both
        ports, and the curl lines of the README work."""
        port, metrics_port = free_loopback_port(), free_loopback_port()
        with subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE),
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ) as process:
            try:
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                poll(
                    lambda: answers(metrics_url),
                    what="the example's metrics port",
                )
                verdicts = [
                    subprocess.run(
                        [
                            "curl",
                            "-sS",
                            "-F",
                            f"picture=@{PICTURES / name}",
                            f"http://127.0.0.1:{port}/analyze",
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                        timeout=30,
                    ).stdout
                    for name in ("lying-cat.png", "standing-dog.png")
                ]
                with urllib.request.urlopen(metrics_url) as response:
                    exposition = response.read().decode()
            finally:
                process.terminate()
                output = process.communicate(timeout=30)[0].decode()

        assert ["meow!\n", "nope!\n"] == verdicts, output
        assert 'cat_or_not_verdicts_total{verdict="meow!"} 1.0' in exposition
        assert 'cat_or_not_verdicts_total{verdict="nope!"} 1.0' in exposition


#: The README's commands for the in-progress gauge, run from the clone.
README_SLOW_UPLOAD = (
    "head -c 1000000 /dev/zero"
    " | cat examples/pictures/lying-cat.png - > slow-cat.png\n"
    "curl -sS --limit-rate 100k -F picture=@slow-cat.png"
    " http://127.0.0.1:8080/analyze\n"
)
README_IN_PROGRESS = (
    "curl -s http://127.0.0.1:8081/metrics"
    " | grep '^cat_or_not_requests_in_progress'"
)
#: The README's commands for the API key, with their output.
README_API_KEY = [
    (
        (
            "curl -sS -F picture=@examples/pictures/lying-cat.png"
            " http://127.0.0.1:8080/analyze"
        ),
        "X-API-Key is required\n",
    ),
    (
        (
            "curl -sS -H 'X-API-Key: guess'"
            " -F picture=@examples/pictures/lying-cat.png"
            " http://127.0.0.1:8080/analyze"
        ),
        "X-API-Key is wrong\n",
    ),
    (
        (
            "curl -sS -H 'X-API-Key: s3cret'"
            " -F picture=@examples/pictures/lying-cat.png"
            " http://127.0.0.1:8080/analyze"
        ),
        "meow!\n",
    ),
    (
        (
            "curl -s http://127.0.0.1:8081/metrics"
            " | grep -E"
            " '^cat_or_not_auth_(errors_total|duration_seconds_count)'"
        ),
        (
            "cat_or_not_auth_duration_seconds_count 3.0\n"
            'cat_or_not_auth_errors_total{reason="missing"} 1.0\n'
            'cat_or_not_auth_errors_total{reason="wrong"} 1.0\n'
        ),
    ),
]


class TestReadmeCommands:
    @pytest.fixture
    def clone(self, tmp_path: Path) -> Path:
        """
        A directory where the README's relative paths work, and its files
        land in the test's own directory.
        """
        (tmp_path / "examples").symlink_to(ROOT / "examples")
        return tmp_path

    def test_slow_upload_moves_in_progress_gauge(self, clone):
        """While the README's rate-limited upload runs, the in-progress
        gauge is 1; once answered, 0."""
        with example_process() as (port, metrics_port):
            with subprocess.Popen(
                [
                    "bash",
                    "-c",
                    on_ports(README_SLOW_UPLOAD, port, metrics_port),
                ],
                cwd=clone,
                stdout=subprocess.PIPE,
                text=True,
            ) as upload:
                during = poll(
                    lambda: (
                        shell(README_IN_PROGRESS, port, metrics_port, clone)
                        == "cat_or_not_requests_in_progress 1.0\n"
                    ),
                    what="the slow upload in progress",
                )
                answer = upload.communicate(timeout=60)[0]
            after = shell(README_IN_PROGRESS, port, metrics_port, clone)

        assert during
        assert "meow!\n" == answer
        assert "cat_or_not_requests_in_progress 0.0\n" == after

    def test_api_key_commands(self, clone):
        """With --api-key, the README's requests are refused, refused and
        answered, and the auth counters and histogram show it."""
        with example_process("--api-key", "s3cret") as (port, metrics_port):
            outputs = [
                shell(command, port, metrics_port, clone)
                for command, _ in README_API_KEY
            ]

        assert [output for _, output in README_API_KEY] == outputs


@contextmanager
def example_process(*options: str) -> Iterator[tuple[int, int]]:
    """
    Run the example as the README does, on free ports; yield them.
    """
    port, metrics_port = free_loopback_port(), free_loopback_port()
    command = [
        sys.executable,
        str(EXAMPLE),
        f"--port={port}",
        f"--metrics-port={metrics_port}",
        *options,
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        try:
            poll(
                lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"),
                what="the example's metrics port",
            )
            yield port, metrics_port
        finally:
            process.terminate()
            process.communicate(timeout=30)


def on_ports(command: str, port: int, metrics_port: int) -> str:
    return command.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace(
        "127.0.0.1:8081", f"127.0.0.1:{metrics_port}"
    )


def shell(command: str, port: int, metrics_port: int, cwd: Path) -> str:
    return subprocess.run(
        ["bash", "-c", on_ports(command, port, metrics_port)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
