"""
The workers' metrics added up by prometheus_client's multiprocess mode::

    mkdir -p /run/prefork-example
    PROMETHEUS_MULTIPROC_DIR=/run/prefork-example gunicorn \
        -c gunicorn_aggregated.py -k aiohttp.GunicornWebWorker -w 4 \
        --bind 127.0.0.1:8080 aggregated:app_factory

The workers start no exporter: the gunicorn configuration runs one, for all
of them.
"""

from __future__ import annotations

from aiohttp import web
from service import make_app


async def app_factory() -> web.Application:
    return make_app()
