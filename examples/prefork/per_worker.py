"""
One exporter per gunicorn worker, each registered with Consul::

    gunicorn -k aiohttp.GunicornWebWorker -w 4 --bind 127.0.0.1:8080 \
        per_worker:app_factory

Each worker serves its metrics on a free port of 127.0.0.1 (``addr=""``
listens on every interface, for a Prometheus on another host) and registers
it with the Consul agent (``CONSUL_HTTP_ADDR``, else ``127.0.0.1:8500``)
under the service ID ``prefork-example-<hostname>-<port>``.
"""

from __future__ import annotations

from aiohttp import web
from service import make_app

from prom_async.aio.prefork import worker_exporter
from prom_async.aio.sd import ConsulAgent


async def app_factory() -> web.Application:
    app = make_app()
    app.cleanup_ctx.append(
        worker_exporter(
            addr="127.0.0.1", service_discovery=ConsulAgent("prefork-example")
        )
    )
    return app
