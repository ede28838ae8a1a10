"""
Everything prom_async knows about py-consul, in one place.

This is the only module that imports ``consul``. It builds py-consul's API
object (``agent.service.register()`` and friends) on a transport of its own,
so that the arguments, not the environment, decide the agent and the token,
and the aiohttp session is built the current way (``ssl=``, no certificate
files read inside the event loop).

Beyond py-consul's documented API, it relies on these internals, proven on
py-consul 1.8.0 (:data:`PROVEN_ON`):

``consul.base.Consul``
    The API object without a transport. Its constructor calls
    ``self.http_connect(host, port, scheme, verify, cert)`` and keeps the
    result as ``self.http``; every API call goes through
    ``self.http.get/put(callback, path, params=..., headers=..., data=...)``
    and sends ``self.token``, which is overwritten after construction (the
    constructor prefers ``CONSUL_HTTP_TOKEN`` to its argument).
``consul.base.HTTPClient``
    The transport base class: ``__init__(host, port, scheme, verify)``,
    ``uri(path, params)``, and the abstract methods the transport implements.
``consul.base.Response``
    What a transport hands to the callback: ``(code, headers, body)``.

The transport turns a ``4xx`` answer into :class:`ConsulRegistrationError`
(the status and Consul's reason) before py-consul's callback sees it: for a
``404`` that callback returns ``False`` or ``None`` instead of raising, and
it keeps the status in only some of its messages.

:func:`check_py_consul` tries each of them without any I/O (a dry run of the
three calls prom_async makes, on a transport that only records), so a
py-consul that changed them fails when a ``ConsulAgent`` is created, not in
the middle of a registration. Older releases fail it: 1.5.5, 1.6.1 and 1.7.1
send no ACL token with ``agent.services()`` (under ACLs the service would
look lost at every resync), 1.1.1 and 1.3.0 lack ``consul.exceptions``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import inspect
import json
import urllib.parse

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from ._consul_errors import ConsulRegistrationError


try:
    import consul.base
    import consul.exceptions
except ImportError as error:
    raise ImportError(
        f"prom_async.aio.sd needs py-consul >= 1.8 ({error}; the consul "
        "extra): pip install 'py-consul>=1.8,<2'"
    ) from error


if TYPE_CHECKING:
    import ssl as ssl_module


__all__ = [
    "DEFAULT_AGENT_ADDRESS",
    "PROVEN_ON",
    "UNREACHABLE",
    "AgentClient",
    "AgentEndpoint",
    "check_py_consul",
    "parse_agent_address",
]

#: The py-consul release whose internals (above) prom_async was tested on.
PROVEN_ON: Final = "1.8.0"

DEFAULT_AGENT_ADDRESS: Final = "127.0.0.1:8500"
DEFAULT_AGENT_PORT: Final = 8500

# Looked up, not subclassed directly, so that a py-consul without them fails
# in check_py_consul() with a message, not here with an AttributeError.
_ConsulBase: Any = getattr(consul.base, "Consul", object)
_HTTPClientBase: Any = getattr(consul.base, "HTTPClient", object)

#: The agent could not be asked, or answered with a server error.
UNREACHABLE: Final = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
    consul.exceptions.ConsulException,
)


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
        return f"{self.scheme}://{_url_host(self.host)}:{self.port}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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


class _Transport(_HTTPClientBase):  # type: ignore[misc]
    """
    A py-consul transport on one aiohttp session; a ``4xx`` answer raises
    :class:`ConsulRegistrationError`.
    """

    def __init__(
        self,
        endpoint: AgentEndpoint,
        *,
        tls: ssl_module.SSLContext | bool,
        request_timeout: float,
    ) -> None:
        super().__init__(
            _url_host(endpoint.host),
            endpoint.port,
            endpoint.scheme,
            verify=bool(tls),
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=tls if endpoint.scheme == "https" else True
            ),
            timeout=aiohttp.ClientTimeout(total=request_timeout),
        )

    async def _send(
        self,
        method: str,
        callback: Any,
        path: str,
        *,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        data: str | bytes | None = None,
        **_options: Any,
    ) -> Any:
        async with self._session.request(
            method, self.uri(path, params), headers=headers, data=data
        ) as response:
            body = await response.text(encoding="utf-8")
        if 400 <= response.status < 500:  # noqa: PLR2004 -- client errors
            raise ConsulRegistrationError(response.status, body)
        return callback(
            consul.base.Response(
                code=response.status, headers=response.headers, body=body
            )
        )

    get = functools.partialmethod(_send, "GET")
    put = functools.partialmethod(_send, "PUT")
    delete = functools.partialmethod(_send, "DELETE")
    post = functools.partialmethod(_send, "POST")

    async def close(self) -> None:
        await self._session.close()


class AgentClient(_ConsulBase):  # type: ignore[misc]
    """
    py-consul's API on a :class:`_Transport`, with the agent and the token
    given, never read from the environment, and the three calls a
    registration makes.

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
        self.token = token

    def http_connect(self, *_args: Any, **_kwargs: Any) -> _Transport:
        return _Transport(
            self._endpoint,
            tls=self._tls,
            request_timeout=self._request_timeout,
        )

    async def register_service(self, service: Mapping[str, Any]) -> None:
        """
        Register *service*, replacing its checks.

        Raises:
            ConsulRegistrationError: The agent refused (a ``4xx``).
            Exception: One of :data:`UNREACHABLE`: the agent could not be
                asked, or failed (a ``5xx``).
        """
        await self.agent.service.register(
            **service, replace_existing_checks=True
        )

    async def deregister_service(self, service_id: str) -> None:
        """
        Deregister *service_id*; one the agent does not know is gone too.

        Raises:
            ConsulRegistrationError: The agent refused.
            Exception: One of :data:`UNREACHABLE`.
        """
        try:
            await self.agent.service.deregister(service_id)
        except ConsulRegistrationError as error:
            if error.status != HTTPStatus.NOT_FOUND:
                raise

    async def service_ids(self) -> frozenset[str]:
        """
        The IDs of the services the agent has.

        Raises:
            ConsulRegistrationError: The agent refused.
            Exception: One of :data:`UNREACHABLE`.
        """
        services = await self.agent.services()
        if not isinstance(services, Mapping):
            return frozenset()
        return frozenset(services)

    async def close(self) -> None:
        await self.http.close()


class _Recorder:
    """
    A transport for the dry run: records each call, and what its callback
    makes of an empty ``200`` answer.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], object]] = []

    def _record(
        self, method: str, callback: Any, path: str, **options: Any
    ) -> None:
        answer = consul.base.Response(code=200, headers={}, body="{}")
        self.calls.append((method, path, options, callback(answer)))

    def get(self, callback: Any, path: str, **options: Any) -> None:
        self._record("GET", callback, path, **options)

    def put(self, callback: Any, path: str, **options: Any) -> None:
        self._record("PUT", callback, path, **options)


class _MissingInternalError(Exception):
    pass


_PROBE_TOKEN: Final = "prom-async-probe"  # noqa: S105 -- sent nowhere
_PROBE_ID: Final = "prom-async-probe"
_PROBE_SERVICE: Final = {
    "name": "prom-async-probe",
    "service_id": _PROBE_ID,
    "address": "127.0.0.1",
    "port": 9100,
    "tags": ["a"],
    "meta": {"metrics_path": "/metrics"},
    "check": {"http": "http://127.0.0.1:9100/metrics", "interval": "10s"},
}
_PROBE_CALLS: Final = [
    ("PUT", "/v1/agent/service/register"),
    ("PUT", f"/v1/agent/service/deregister/{_PROBE_ID}"),
    ("GET", "/v1/agent/services"),
]


def _dry_run() -> _Recorder:
    """
    Make the calls of :class:`AgentClient` on a recording transport.
    """
    recorder = _Recorder()

    class Probe(_ConsulBase):  # type: ignore[misc]
        def http_connect(self, *_args: Any, **_kwargs: Any) -> _Recorder:
            return recorder

    probe = Probe(
        host="127.0.0.1", port=1, scheme="http", token=None, verify=True
    )
    if not isinstance(probe.http, _Recorder):
        raise _MissingInternalError(
            "consul.base.Consul() does not build its transport with "
            "http_connect()"
        )
    probe.token = _PROBE_TOKEN
    probe.agent.service.register(
        **_PROBE_SERVICE, replace_existing_checks=True
    )
    probe.agent.service.deregister(_PROBE_ID)
    probe.agent.services()
    made = [(method, path) for method, path, _, _ in recorder.calls]
    if made != _PROBE_CALLS:
        raise _MissingInternalError(
            "agent.service.register(), agent.service.deregister() and "
            f"agent.services() no longer make the requests {_PROBE_CALLS}"
        )
    return recorder


def _check_transport() -> list[str]:
    if _HTTPClientBase is object:
        return ["consul.base.HTTPClient is missing"]
    problems = []
    unimplemented = sorted(
        name
        for name in getattr(_HTTPClientBase, "__abstractmethods__", ())
        if getattr(getattr(_Transport, name), "__isabstractmethod__", False)
    )
    if unimplemented:
        problems.append(
            "consul.base.HTTPClient has abstract methods that prom_async's "
            f"transport lacks: {', '.join(unimplemented)}"
        )
    try:
        inspect.signature(_HTTPClientBase).bind(
            "127.0.0.1", 1, "http", verify=True
        )
    except TypeError:
        problems.append(
            "consul.base.HTTPClient() no longer takes "
            "(host, port, scheme, verify=)"
        )
    if not callable(getattr(_HTTPClientBase, "uri", None)):
        problems.append("consul.base.HTTPClient.uri() is missing")
    return problems


def _check_calls() -> list[str]:
    if _ConsulBase is object:
        return ["consul.base.Consul is missing"]
    try:
        calls = _dry_run().calls
    except _MissingInternalError as error:
        return [str(error)]
    except Exception as error:  # noqa: BLE001 -- reported, with its type
        return [f"the calls prom_async makes fail: {error!r}"]
    problems = []
    tokenless = [
        f"{method} {path}"
        for method, path, options, _ in calls
        if (options.get("headers") or {}).get("X-Consul-Token") != _PROBE_TOKEN
    ]
    if tokenless:
        problems.append(
            "the token set on consul.base.Consul is not sent with "
            + ", ".join(tokenless)
        )
    _, _, register, _ = calls[0]
    sent = {key.lower() for key in json.loads(register.get("data") or "{}")}
    params = register.get("params") or ()
    if {"name", "id", "address", "port", "tags", "meta", "checks"} - sent or (
        ("replace-existing-checks", "true") not in params
    ):
        problems.append(
            "agent.service.register() does not send the service as given"
        )
    if calls[2][3] != {}:
        problems.append("agent.services() does not answer the agent's JSON")
    return problems


@functools.cache
def _problems() -> tuple[str, ...]:
    return (*_check_transport(), *_check_calls())


def check_py_consul() -> None:
    """
    Make sure the installed py-consul has every internal this module uses.

    The check runs once per process; it makes no request.

    Raises:
        RuntimeError: One of them is missing or behaves differently; the
            message names each.
    """
    problems = _problems()
    if problems:
        try:
            version = importlib.metadata.version("py-consul")
        except importlib.metadata.PackageNotFoundError:
            version = "(version unknown)"
        raise RuntimeError(
            f"prom_async's Consul support does not work with py-consul "
            f"{version}: {'; '.join(problems)}. It is proven on py-consul "
            f"{PROVEN_ON}: pip install 'py-consul=={PROVEN_ON}'"
        )
