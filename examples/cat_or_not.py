"""
cat-or.not: a tiny aiohttp service that tells whether a picture shows a cat.

POST a picture as the multipart field ``picture`` to ``/analyze``; the answer
is ``meow!`` or ``nope!``. The verdict is a deterministic heuristic on the
image bytes: cats lie down, so a picture wider than it is tall shows a cat.
PNG, GIF and JPEG are understood. Looking takes time: the (simulated)
analysis goes over every pixel, so a 12-megapixel photo takes 0.3 s and a
thumbnail a millisecond.

The service is instrumented with ``prom_async.aio``'s wrappers and serves its
metrics on a second port with ``prom_async.aio.web.start_http_server``::

    python examples/cat_or_not.py --port 8080 --metrics-port 8081
    curl -F picture=@cat.png http://127.0.0.1:8080/analyze
    curl http://127.0.0.1:8081/metrics

With ``--api-key``, requests need an ``X-API-Key`` header; the check is
timed and its refusals are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import struct

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from aiohttp import BodyPartReader, web
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from prom_async.aio import count_exceptions, time, track_inprogress
from prom_async.aio.loop import LoopMonitor
from prom_async.aio.web import MetricsHTTPServer, start_http_server


PICTURE_FIELD: Final = "picture"
DEFAULT_MAX_BYTES: Final = 5 * 1024 * 1024
API_KEY_HEADER: Final = "X-API-Key"
METRICS_SERVER: Final = web.AppKey("metrics_server", MetricsHTTPServer)
ROUTE: Final = "/analyze"
#: How many pixels the simulated analysis looks at per second.
PIXELS_PER_SECOND: Final = 40_000_000
#: No picture takes longer than this to analyze.
MAX_ANALYSIS_SECONDS: Final = 2.0
#: Bounds for answers from a millisecond (a thumbnail, a refusal) to a
#: couple of seconds (the largest pictures), densest where photos fall.
REQUEST_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
#: An API-key check takes microseconds.
AUTH_BUCKETS: Final = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.01,
)


@dataclass(frozen=True)
class Metrics:
    """
    What cat-or.not measures.
    """

    request_time: Histogram
    responses: Counter
    analysis_time: Histogram
    in_progress: Gauge
    auth_time: Histogram
    auth_errors: Counter
    bad_uploads: Counter
    verdicts: Counter

    @classmethod
    def in_registry(cls, registry: CollectorRegistry) -> Metrics:
        return cls(
            request_time=Histogram(
                "cat_or_not_request_duration_seconds",
                "Time spent answering requests, by route.",
                ["route"],
                buckets=REQUEST_BUCKETS,
                registry=registry,
            ),
            responses=Counter(
                "cat_or_not_responses",
                "Responses sent, by route and status code.",
                ["route", "code"],
                registry=registry,
            ),
            analysis_time=Histogram(
                "cat_or_not_analysis_duration_seconds",
                "Time spent looking at a picture.",
                buckets=REQUEST_BUCKETS,
                registry=registry,
            ),
            in_progress=Gauge(
                "cat_or_not_requests_in_progress",
                "Requests to /analyze being answered.",
                registry=registry,
            ),
            auth_time=Histogram(
                "cat_or_not_auth_duration_seconds",
                "Time spent checking API keys.",
                buckets=AUTH_BUCKETS,
                registry=registry,
            ),
            auth_errors=Counter(
                "cat_or_not_auth_errors",
                "Requests refused for a missing or wrong API key.",
                ["reason"],
                registry=registry,
            ),
            bad_uploads=Counter(
                "cat_or_not_bad_uploads",
                "Uploads refused as unusable.",
                ["reason"],
                registry=registry,
            ),
            verdicts=Counter(
                "cat_or_not_verdicts",
                "Pictures judged.",
                ["verdict"],
                registry=registry,
            ),
        )


class RefusedError(Exception):
    """
    A request the service will not answer; *reason* labels the counter.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class AuthError(RefusedError):
    pass


class BadUploadError(RefusedError):
    pass


def picture_size(picture: bytes) -> tuple[int, int]:
    """
    The (width, height) of a PNG, GIF or JPEG picture.

    Raises:
        BadUploadError: The bytes are none of those.
    """
    if picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) >= 24:  # noqa: PLR2004
        width, height = struct.unpack(">II", picture[16:24])
        return width, height
    if picture[:6] in (b"GIF87a", b"GIF89a") and len(picture) >= 10:  # noqa: PLR2004
        width, height = struct.unpack("<HH", picture[6:10])
        return width, height
    if picture.startswith(b"\xff\xd8"):
        return _jpeg_size(picture)
    raise _not_an_image()


def _jpeg_size(picture: bytes) -> tuple[int, int]:
    # Walk the segments up to a start-of-frame, which holds the size.
    start_of_frame = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
    position = 2
    while position + 9 <= len(picture):
        if picture[position] != 0xFF:  # noqa: PLR2004
            break
        marker = picture[position + 1]
        (length,) = struct.unpack(">H", picture[position + 2 : position + 4])
        if marker in start_of_frame:
            height, width = struct.unpack(
                ">HH", picture[position + 5 : position + 9]
            )
            return width, height
        position += 2 + length
    raise _not_an_image()


def _not_an_image() -> BadUploadError:
    return BadUploadError(
        415,
        "not_an_image",
        f"the {PICTURE_FIELD!r} field is not a PNG, GIF or JPEG picture",
    )


def is_cat(picture: bytes) -> bool:
    """
    Whether *picture* shows a cat: cats lie down, so wider than tall.
    """
    width, height = checked_size(picture)
    return width > height


def checked_size(picture: bytes) -> tuple[int, int]:
    width, height = picture_size(picture)
    if width == 0 or height == 0:
        raise _not_an_image()
    return width, height


def analysis_seconds(width: int, height: int) -> float:
    """
    How long the simulated analysis of a *width* x *height* picture takes.
    """
    return min(MAX_ANALYSIS_SECONDS, width * height / PIXELS_PER_SECOND)


class CatOrNot:
    """
    The /analyze handler and what it needs.
    """

    def __init__(
        self, metrics: Metrics, *, max_bytes: int, api_key: str | None
    ) -> None:
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.api_key = api_key

    async def analyze(self, request: web.Request) -> web.Response:
        metrics = self.metrics
        code = 500
        try:
            with (
                track_inprogress(metrics.in_progress),
                time(metrics.request_time.labels(ROUTE)),
            ):
                response = await self.answer(request)
            code = response.status
            return response
        finally:
            metrics.responses.labels(ROUTE, str(code)).inc()

    async def answer(self, request: web.Request) -> web.Response:
        metrics = self.metrics
        try:
            with count_exceptions(
                metrics.auth_errors,
                exc=AuthError,
                exc_labels=_reason,
            ):
                self.check_api_key(request)
            with count_exceptions(
                metrics.bad_uploads,
                exc=BadUploadError,
                exc_labels=_reason,
            ):
                picture = await self.read_picture(request)
                cat = await time(metrics.analysis_time, self.judge(picture))
        except RefusedError as refused:
            return web.Response(
                status=refused.status, text=refused.message + "\n"
            )
        verdict = "meow!" if cat else "nope!"
        metrics.verdicts.labels(verdict).inc()
        return web.Response(text=verdict + "\n")

    async def judge(self, picture: bytes) -> bool:
        await asyncio.sleep(analysis_seconds(*checked_size(picture)))
        return is_cat(picture)

    def check_api_key(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        with time(self.metrics.auth_time):
            self.compare_api_key(request, self.api_key)

    def compare_api_key(self, request: web.Request, api_key: str) -> None:
        given = request.headers.get(API_KEY_HEADER)
        if given is None:
            raise AuthError(401, "missing", f"{API_KEY_HEADER} is required")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise AuthError(401, "wrong", f"{API_KEY_HEADER} is wrong")

    async def read_picture(self, request: web.Request) -> bytes:
        if not request.content_type.startswith("multipart/"):
            raise BadUploadError(
                400,
                "not_multipart",
                "POST the picture as multipart/form-data "
                f"(curl -F {PICTURE_FIELD}=@cat.png ...)",
            )
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == PICTURE_FIELD:
                return await self.read_limited(part)
        raise BadUploadError(
            400, "missing_field", f"the {PICTURE_FIELD!r} field is missing"
        )

    async def read_limited(self, part: BodyPartReader) -> bytes:
        chunks = []
        size = 0
        while chunk := await part.read_chunk():
            size += len(chunk)
            if size > self.max_bytes:
                raise BadUploadError(
                    413,
                    "too_large",
                    f"the picture is larger than {self.max_bytes} bytes",
                )
            chunks.append(chunk)
        if not size:
            raise BadUploadError(
                400, "empty", f"the {PICTURE_FIELD!r} field is empty"
            )
        return b"".join(chunks)


def _reason(error: BaseException) -> list[str]:
    assert isinstance(error, RefusedError)
    return [error.reason]


def build_app(
    *,
    registry: CollectorRegistry = REGISTRY,
    metrics_addr: str = "127.0.0.1",
    metrics_port: int = 8081,
    max_bytes: int = DEFAULT_MAX_BYTES,
    api_key: str | None = None,
) -> web.Application:
    """
    The cat-or.not application; its metrics server runs alongside it.
    """
    metrics = Metrics.in_registry(registry)
    # The route's series exist from the start, at 0: a rate() over the
    # first scrapes then counts the first requests too.
    metrics.request_time.labels(ROUTE)
    service = CatOrNot(metrics, max_bytes=max_bytes, api_key=api_key)
    # aiohttp's own body limit stays above ours, so ours gives the message.
    app = web.Application(client_max_size=max_bytes + 64 * 1024)
    app.router.add_post(ROUTE, service.analyze)

    async def metrics_server(app: web.Application) -> AsyncIterator[None]:
        async with await start_http_server(
            addr=metrics_addr, port=metrics_port, registry=registry
        ) as server:
            app[METRICS_SERVER] = server
            yield

    app.cleanup_ctx.append(metrics_server)
    app.cleanup_ctx.append(LoopMonitor(registry=registry).cleanup_ctx)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--metrics-port", type=int, default=8081)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CAT_OR_NOT_API_KEY"),
        help=f"require this {API_KEY_HEADER} header "
        "(default: $CAT_OR_NOT_API_KEY, else none)",
    )
    args = parser.parse_args(argv)
    app = build_app(
        metrics_addr=args.host,
        metrics_port=args.metrics_port,
        max_bytes=args.max_bytes,
        api_key=args.api_key,
    )
    print(
        f"cat-or.not on http://{args.host}:{args.port}/analyze, "
        f"metrics on http://{args.host}:{args.metrics_port}/metrics",
        flush=True,
    )
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
