"""
The aiohttp service both prefork examples run: ``GET /work`` answers which
worker process served it, ``{"pid": 1234}``.

It uses every metric type. Run by gunicorn, each worker process has its own
copy of these metrics: ``per_worker.py`` serves each copy, ``aggregated.py``
has prometheus_client add them up.
"""

from __future__ import annotations

import contextvars
import json
import os

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter, Enum, Histogram, Info, Summary

from prom_async.aio import time, track_inprogress
from prom_async.aio.prefork import inprogress_gauge


REQUESTS = Counter("prefork_requests", "Requests served.", ["route"])
DURATION = Histogram(
    "prefork_request_duration_seconds", "Time spent answering a request."
)
RESPONSE_SIZE = Summary(
    "prefork_response_size_bytes", "Size of the answers' bodies."
)
# "livesum": in multiprocess mode, the sum over the live workers.
IN_PROGRESS = inprogress_gauge(
    "prefork_requests_in_progress", "Requests being answered."
)
BUILD = Info("prefork_build", "The service's version.")
BUILD.info({"version": "1.0"})
STATE = Enum(
    "prefork_state", "The service's state.", states=["starting", "serving"]
)

#: The caller's request ID, if it sent one: the exemplar of the duration.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "REQUEST_ID", default=None
)


def request_exemplar() -> dict[str, str] | None:
    request_id = REQUEST_ID.get()
    return None if request_id is None else {"request_id": request_id}


@web.middleware
async def remember_request_id(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    REQUEST_ID.set(request.headers.get("X-Request-Id"))
    return await handler(request)


@time(DURATION, exemplar=request_exemplar)
@track_inprogress(IN_PROGRESS)
async def work(_: web.Request) -> web.Response:
    REQUESTS.labels("/work").inc()
    body = json.dumps({"pid": os.getpid()})
    RESPONSE_SIZE.observe(len(body))
    return web.Response(text=body, content_type="application/json")


async def serving(_: web.Application) -> None:
    STATE.state("serving")


def make_app() -> web.Application:
    app = web.Application(middlewares=[remember_request_id])
    app.router.add_get("/work", work)
    app.on_startup.append(serving)
    return app
