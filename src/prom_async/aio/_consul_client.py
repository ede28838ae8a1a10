"""
Where the Consul agent is, and py-consul's asyncio client pointed at it.
"""

from __future__ import annotations

import urllib.parse

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import consul.aio
import consul.base


if TYPE_CHECKING:
    import ssl as ssl_module


DEFAULT_AGENT_ADDRESS = "127.0.0.1:8500"
DEFAULT_AGENT_PORT = 8500


@dataclass(frozen=True)
class AgentEndpoint:
    """
    The scheme, host and port of a Consul agent's HTTP API.
    """

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_agent_address(address: str, *, default_scheme: str) -> AgentEndpoint:
    """
    Parse ``host:port`` or ``scheme://host:port`` like ``CONSUL_HTTP_ADDR``.

    Raises:
        ValueError: The address is not one of those forms.
    """
    if not address.strip():
        raise ValueError("the Consul agent address is empty")
    spec = address.strip()
    with_scheme = "://" in spec
    parts = urllib.parse.urlsplit(spec if with_scheme else f"//{spec}")
    scheme = parts.scheme if with_scheme else default_scheme
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        scheme not in ("http", "https")
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.username
    ):
        raise ValueError(
            f"invalid Consul agent address {address!r}: expected "
            "'host:port' or 'http(s)://host:port'"
        )
    return AgentEndpoint(
        scheme=scheme,
        host=parts.hostname,
        port=DEFAULT_AGENT_PORT if port is None else port,
    )


class _AgentTransport(consul.aio.HTTPClient):  # type: ignore[misc]
    """
    py-consul's aiohttp transport with a session built the current way.

    py-consul 1.8 passes ``verify_ssl``/``ssl_context`` to aiohttp, which
    warns that both are deprecated, and builds an SSL context (reading
    certificate files) inside the event loop. This builds the session with
    ``ssl=`` instead and leaves everything else, including the requests, to
    py-consul.
    """

    def __init__(
        self,
        endpoint: AgentEndpoint,
        *,
        tls: ssl_module.SSLContext | bool,
        request_timeout: float,
    ) -> None:
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        consul.base.HTTPClient.__init__(
            self, host, endpoint.port, endpoint.scheme, verify=bool(tls)
        )
        self.loop = None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=tls if endpoint.scheme == "https" else True
            ),
            timeout=aiohttp.ClientTimeout(total=request_timeout),
        )


class AgentClient(consul.aio.Consul):  # type: ignore[misc]
    """
    py-consul's asyncio client where the arguments, not the environment,
    decide the agent and the token.

    Must be created inside the event loop that uses it.
    """

    def __init__(
        self,
        endpoint: AgentEndpoint,
        *,
        token: str | None,
        tls: ssl_module.SSLContext | bool,
        request_timeout: float,
    ) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._request_timeout = request_timeout
        super().__init__(
            host=endpoint.host,
            port=endpoint.port,
            scheme=endpoint.scheme,
            token=token,
            verify=bool(tls),
        )
        # py-consul prefers CONSUL_HTTP_TOKEN over its argument.
        self.token = token

    def http_connect(self, *_args: Any, **_kwargs: Any) -> _AgentTransport:
        return _AgentTransport(
            self._endpoint,
            tls=self._tls,
            request_timeout=self._request_timeout,
        )
