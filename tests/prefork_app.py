"""
The prefork examples (examples/prefork/) with what tests/test_prefork.py
needs to watch them: the worker's pid in its own metrics, and requests that
stay in progress until the test releases them.

``PREFORK_HOLD_DIR`` names a directory: ``POST /hold`` writes
``held-<pid>-<n>`` there once it is in progress, and answers once a file
named ``release`` appears (or after a minute). It is a POST so that the
client never sends it again to another worker when its worker dies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time

from pathlib import Path

import aggregated
import per_worker
import per_worker_fixed_ports
import service

from aiohttp import web
from prometheus_client import Gauge

from prom_async.aio import track_inprogress


HOLD_DEADLINE = 60.0
_held = itertools.count()

WORKER_PID = Gauge("prefork_test_worker_pid", "The worker's process ID.")


@track_inprogress(service.IN_PROGRESS)
async def hold(_: web.Request) -> web.Response:
    directory = Path(os.environ["PREFORK_HOLD_DIR"])
    marker = directory / f"held-{os.getpid()}-{next(_held)}"
    await asyncio.to_thread(marker.touch)
    release = directory / "release"
    deadline = time.monotonic() + HOLD_DEADLINE
    while not await asyncio.to_thread(release.exists):
        if time.monotonic() > deadline:
            break
        # The release is another process's file: polled, with a deadline.
        await asyncio.sleep(0.01)
    return web.Response(text=json.dumps({"pid": os.getpid()}))


def with_test_routes(app: web.Application) -> web.Application:
    WORKER_PID.set(os.getpid())
    app.router.add_post("/hold", hold)
    return app


async def per_worker_app() -> web.Application:
    return with_test_routes(await per_worker.app_factory())


async def fixed_ports_app() -> web.Application:
    return with_test_routes(await per_worker_fixed_ports.app_factory())


async def aggregated_app() -> web.Application:
    return with_test_routes(await aggregated.app_factory())
