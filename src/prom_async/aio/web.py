"""
Serve metrics over HTTP with aiohttp, without stalling the application.

Start a standalone server in the running event loop
(:func:`start_http_server`) or in a thread of its own
(:func:`start_http_server_in_thread`), or mount the metrics into an existing
:class:`aiohttp.web.Application` (:func:`add_metrics_route`,
:func:`metrics_handler`, :func:`server_stats`).
"""

from ._web_handler import (
    add_metrics_route,
    metrics_handler,
    server_stats,
)
from ._web_server import (
    MetricsHTTPServer,
    Socket,
    ThreadedMetricsHTTPServer,
    start_http_server,
    start_http_server_in_thread,
)


__all__ = [
    "MetricsHTTPServer",
    "Socket",
    "ThreadedMetricsHTTPServer",
    "add_metrics_route",
    "metrics_handler",
    "server_stats",
    "start_http_server",
    "start_http_server_in_thread",
]
