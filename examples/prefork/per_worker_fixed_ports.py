"""
One exporter per gunicorn worker, on ports that survive restarts::

    gunicorn -c gunicorn_per_worker.py -k aiohttp.GunicornWebWorker -w 4 \
        --bind 127.0.0.1:8080 per_worker_fixed_ports:app_factory

Worker slot 0 serves its metrics on port 9101, slot 1 on 9102, and so on
(``METRICS_BASE_PORT`` changes 9101); a worker that gunicorn restarts takes
over the slot, and the port, of the one it replaces.
"""

from __future__ import annotations

import os

from aiohttp import web
from service import make_app

from prom_async.aio.prefork import worker_exporter


async def app_factory() -> web.Application:
    app = make_app()
    base_port = int(os.environ.get("METRICS_BASE_PORT", "9101"))
    app.cleanup_ctx.append(
        worker_exporter(addr="127.0.0.1", base_port=base_port)
    )
    return app
