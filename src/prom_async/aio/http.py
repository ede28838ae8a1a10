"""
Instrument an aiohttp service: the requests it serves and the requests it
makes, under the metric names of OpenTelemetry's HTTP semantic conventions.

Measure the server side with :func:`server_middleware` (or
:func:`instrument_app`, which puts it first among an application's
middlewares).
"""

# The server: requests an aiohttp application serves.
from ._http_server import (
    DEFAULT_EXCLUDE_PATHS,
    DEFAULT_KNOWN_METHODS,
    RequestLabels,
    instrument_app,
    server_middleware,
)


# The client: requests an aiohttp.ClientSession makes (imported from
# ._http_client; its names are added here and to __all__).


__all__ = [
    # The server.
    "DEFAULT_EXCLUDE_PATHS",
    "DEFAULT_KNOWN_METHODS",
    "RequestLabels",
    "instrument_app",
    "server_middleware",
    # The client.
]
