"""
Instrument an aiohttp service: the requests it serves and the requests it
makes, under the metric names of OpenTelemetry's HTTP semantic conventions.

Measure the server side with :func:`server_middleware` (or
:func:`instrument_app`, which puts it first among an application's
middlewares), and the client side with :func:`client_trace_config`.
"""

from ._http_client import client_trace_config
from ._http_server import (
    DEFAULT_EXCLUDE_PATHS,
    DEFAULT_KNOWN_METHODS,
    RequestLabels,
    instrument_app,
    server_middleware,
)


__all__ = [
    "DEFAULT_EXCLUDE_PATHS",
    "DEFAULT_KNOWN_METHODS",
    "RequestLabels",
    "client_trace_config",
    "instrument_app",
    "server_middleware",
]
