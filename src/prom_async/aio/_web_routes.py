"""
The standalone exporter's paths: ``/``, the metrics with and without ``/``,
and nothing else.
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web

from ._web_handler import MetricsEndpoint, landing_page


__all__ = ["ExporterRoutes"]

_METHODS: Final = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})
_ALLOW: Final = "GET,HEAD"


class ExporterRoutes:
    """
    Answers ``GET`` and ``HEAD`` of the landing page and of the metrics.

    Other paths get ``404``, other methods ``405`` with ``Allow``, and a
    request with a body ``413``: none of them has one.
    """

    def __init__(self, endpoint: MetricsEndpoint, metrics_path: str) -> None:
        self._endpoint = endpoint
        self._landing = landing_page(metrics_path)
        self._metrics_paths = frozenset({metrics_path, metrics_path + "/"})

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        """
        The response to *request*, not yet written.
        """
        path = request.path
        if path != "/" and path not in self._metrics_paths:
            return _refusal(404, "Not Found")
        if request.method not in _METHODS:
            refused = _refusal(405, "Method Not Allowed")
            refused.headers[hdrs.ALLOW] = _ALLOW
            return refused
        if request.body_exists:
            return _refusal(413, "Requests here have no body")
        if path == "/":
            return web.Response(
                body=self._landing, content_type="text/html", charset="utf-8"
            )
        return await self._endpoint.handle(request)


def _refusal(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=f"{status}: {text}")
