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
it keeps the status in only some of its messages. Any other answer that is
not a ``2xx``, and a read whose body is not UTF-8 JSON, is an
:class:`AgentAnswerError` (py-consul's callbacks would put the whole body in
their message). Neither error holds the ACL token, should the agent or a
proxy echo it.

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

from ._consul_errors import ConsulRegistrationError, summarize_reason


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
    "AgentAnswerError",
    "AgentClient",
    "AgentEndpoint",
    "check_py_consul",
    "parse_agent_address",
    "redact_address",
    "url_host",
]

#: The py-consul release whose internals (above) prom_async was tested on.
PROVEN_ON: Final = "1.8.0"

DEFAULT_AGENT_ADDRESS: Final = "127.0.0.1:8500"
DEFAULT_AGENT_PORT: Final = 8500

# Looked up, not subclassed directly, so that a py-consul without them fails
# in check_py_consul() with a message, not here with an AttributeError.
_ConsulBase: Any = getattr(consul.base, "Consul", object)
_HTTPClientBase: Any = getattr(consul.base, "HTTPClient", object)


class AgentAnswerError(consul.exceptions.ConsulException):  # type: ignore[misc]
    """
    The agent answered, but not with something prom_async can use: a
    status that is neither ``2xx`` nor ``4xx`` (a ``5xx`` above all), or a
    read whose body is not UTF-8, not JSON, or JSON of the wrong shape.

    Attributes:
        status: The HTTP status of the answer.

    Its text says what was wrong in a few words, never the body.
    """

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status

    @classmethod
    def error_status(cls, status: int, body: str) -> AgentAnswerError:
        """
        An answer with an error status and *body* as its reason.
        """
        return cls(
            status, f"Consul answered {status}: {summarize_reason(body)}"
        )

    @classmethod
    def unusable(cls, status: int, problem: str) -> AgentAnswerError:
        """
        A successful answer whose body has *problem*, e.g. ``"a body that
        is not JSON"``.
        """
        return cls(status, f"Consul answered {status} with {problem}")


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
        return f"{self.scheme}://{url_host(self.host)}:{self.port}"


def url_host(host: str) -> str:
    """
    *host* as a URL writes it: an IPv6 address in brackets.
    """
    return f"[{host}]" if ":" in host else host


def parse_agent_address(address: str, *, default_scheme: str) -> AgentEndpoint:
    """
    Parse ``host:port`` or ``scheme://host:port`` like ``CONSUL_HTTP_ADDR``.

    Raises:
        ValueError: The address is not one of those forms. The message
            shows the address without credentials, query or fragment.
    """
    spec = address.strip()
    if not spec:
        raise ValueError("the Consul agent address is empty")
    with_scheme = "://" in spec
    try:
        parts = urllib.parse.urlsplit(spec if with_scheme else f"//{spec}")
    except ValueError:
        parts = None
    scheme = (
        parts.scheme if parts is not None and with_scheme else default_scheme
    )
    problem = _address_problem(parts, scheme)
    if parts is None or problem is not None:
        raise ValueError(
            f"invalid Consul agent address {redact_address(spec)!r} "
            f"({problem}): expected 'host:port' or 'http(s)://host:port'"
        )
    return AgentEndpoint(
        scheme=scheme,
        host=str(parts.hostname),
        port=DEFAULT_AGENT_PORT if parts.port is None else parts.port,
    )


def _address_problem(  # noqa: PLR0911 -- one return per problem
    parts: urllib.parse.SplitResult | None, scheme: str
) -> str | None:
    if parts is None:
        return "it is not a URL"
    if parts.username is not None or parts.password is not None:
        return "credentials belong in token=, not in the address"
    if scheme not in ("http", "https"):
        return "the scheme is not http or https"
    if not parts.hostname:
        return "it has no host"
    try:
        parts.port  # noqa: B018 -- raises for a port that is not one
    except ValueError:
        return "the port is not a number in 0..65535"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "it has a path, query or fragment"
    return None


def redact_address(address: str) -> str:
    """
    *address* without what may be a secret in it: the credentials before
    an ``@`` become ``***``, and a query or fragment is dropped.
    """
    scheme, separator, rest = address.rpartition("://")
    if "://" in scheme or "@" in scheme:
        return "***"
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    for mark in "?#":
        if mark in rest:
            rest = rest.partition(mark)[0] + mark + "***"
    return f"{scheme}{separator}{rest}"


def _unreadable(raw: bytes, content_type: str) -> str | None:
    """
    What makes *raw*, the body of a read, unusable, or ``None``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "a body that is not UTF-8"
    if content_type == "text/html" or text.lstrip().startswith("<"):
        return "an HTML page, not JSON"
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return "a body that is not JSON" if text.strip() else "no body"
    return None


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
            url_host(endpoint.host),
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
            raw = await response.read()
        status = response.status
        body = raw.decode("utf-8", errors="replace")
        if not 200 <= status < 300:  # noqa: PLR2004 -- success
            token = (headers or {}).get("X-Consul-Token")
            reason = body.replace(token, "***") if token else body
            if 400 <= status < 500:  # noqa: PLR2004 -- client errors
                raise ConsulRegistrationError(status, reason)
            raise AgentAnswerError.error_status(status, reason)
        if method == "GET":
            problem = _unreadable(raw, response.content_type)
            if problem is not None:
                raise AgentAnswerError.unusable(status, problem)
        return callback(
            consul.base.Response(
                code=status, headers=response.headers, body=body
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
            ConsulRegistrationError: The agent refused the read (a
                ``4xx``).
            AgentAnswerError: The agent answered, but not with its
                services: a ``5xx``, or a body that is not UTF-8, not
                JSON, or not an object of services.
            Exception: One of :data:`UNREACHABLE`: the agent could not be
                asked.
        """
        services = await self.agent.services()
        if not isinstance(services, Mapping):
            raise AgentAnswerError.unusable(
                HTTPStatus.OK,
                f"{_json_kind(services)}, not an object of services",
            )
        if not all(isinstance(entry, Mapping) for entry in services.values()):
            raise AgentAnswerError.unusable(
                HTTPStatus.OK,
                "a JSON object whose entries are not all services",
            )
        return frozenset(services)

    async def close(self) -> None:
        await self.http.close()


def _json_kind(value: object) -> str:
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, list):
        return "a JSON array"
    return "a JSON number"


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
