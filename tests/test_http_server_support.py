"""
Helpers for the tests of prom_async.aio.http's server side (no tests here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aiohttp import web
from prometheus_client import CollectorRegistry

from prom_async.aio import _http_server


LOOPBACK = "127.0.0.1"
DURATION = "http_server_request_duration_seconds"
ACTIVE = "http_server_active_requests"


@asynccontextmanager
async def serving(
    app: web.Application, *, handler_cancellation: bool = False
) -> AsyncIterator[str]:
    """
    Serve *app* on loopback; yield its base URL (no trailing slash).
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=0.1,
        handler_cancellation=handler_cancellation,
    )
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def samples(
    registry: CollectorRegistry, name: str
) -> dict[frozenset[tuple[str, str]], float]:
    """
    Every sample named *name*: its labels, as a set of pairs, to its value.
    """
    return {
        frozenset(sample.labels.items()): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name
    }


def requests(
    registry: CollectorRegistry,
    *,
    method: str = "GET",
    route: str,
    status: int | str,
    error_type: str = "",
    name: str = DURATION,
    **extra: str,
) -> float | None:
    """
    The number of requests recorded with these labels, or None.
    """
    return registry.get_sample_value(
        f"{name}_count",
        {
            "http_request_method": method,
            "http_route": route,
            "http_response_status_code": str(status),
            "error_type": error_type,
            **extra,
        },
    )


def recorded(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    """
    The request counts by (method, route, status, error type).
    """
    return {
        (
            labels["http_request_method"],
            labels["http_route"],
            labels["http_response_status_code"],
            labels["error_type"],
        ): value
        for pairs, value in samples(registry, f"{DURATION}_count").items()
        for labels in [dict(pairs)]
    }


def active(registry: CollectorRegistry, method: str = "GET") -> float | None:
    return registry.get_sample_value(ACTIVE, {"http_request_method": method})


class Clock:
    """
    The middleware's clock, moved by the tests.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """
    A clock of the test's own in place of the middleware's.
    """
    fake = Clock()
    monkeypatch.setattr(_http_server, "_clock", fake)
    return fake


def app_with(*middlewares: Any, routes: dict[str, Any]) -> web.Application:
    """
    An application with *middlewares* and GET *routes* (path: handler).
    """
    app = web.Application(middlewares=list(middlewares))
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    return app


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")
