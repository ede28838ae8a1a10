"""
A Consul agent double: Consul's HTTP API, served on loopback for tests.

`ConsulDouble` is an aiohttp server on ``127.0.0.1`` that answers like a
single Consul agent running in dev mode (agent and server in one, so the
catalog holds exactly what was registered with it).  It follows
``shared/consul-contract.md``: the JSON shapes, status codes and error texts
are Consul's, so unmodified clients (py-consul, VictoriaMetrics' and
Prometheus' ``consul_sd_configs``, prom_async's own ``ConsulAgent``) accept
it.

What it serves:

- ``/v1/agent/``: ``self``, ``services``, ``service/<id>``, ``checks``,
  ``service/register`` (with ``replace-existing-checks``),
  ``service/deregister/<id>``, ``check/register``, ``check/deregister/<id>``,
  ``check/pass|warn|fail/<id>`` and ``check/update/<id>``.
- ``/v1/catalog/``: ``services``, ``service/<name>``, ``nodes``;
  ``/v1/health/``: ``service/<name>``, ``checks/<name>``.  They support
  blocking queries (``index``/``wait``) and always send ``X-Consul-Index``.
- Request bodies are decoded like Go's ``encoding/json`` does (key names
  match case-insensitively, snake_case aliases accepted, unknown keys
  ignored, a wrong JSON type is ``400 Request decode failed: ...``).
- ACLs (``acl_token=``): default deny; an unknown token gets
  ``403 ACL not found``, an anonymous write gets ``403 Permission denied:
  ...``, anonymous catalog/health reads are filtered to nothing.
- HTTP and TCP checks really run at their ``Interval`` (first run staggered
  randomly within one interval, as Consul does), TTL checks expire, and
  ``DeregisterCriticalServiceAfter`` reaps services whose check stays
  critical.
- Test hooks: `ConsulDouble.restart` (registrations lost),
  `ConsulDouble.go_down` / `ConsulDouble.come_up` (connection refused
  meanwhile), `ConsulDouble.set_check_status`,
  `ConsulDouble.answer_instead` (what a broken proxy in front of the agent
  would send, for one route), and the inspection
  properties `ConsulDouble.services`, `ConsulDouble.checks` and
  `ConsulDouble.requests`.

Choices the double makes where Consul pins nothing down are marked
*[double]* in the docstrings.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import json
import random
import re
import uuid

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


__all__ = [
    "ANONYMOUS_ACCESSOR_ID",
    "ConsulDouble",
    "RecordedRequest",
    "format_go_duration",
    "parse_go_duration",
]

#: The AccessorID Consul names in errors for requests without a token.
ANONYMOUS_ACCESSOR_ID: Final = "00000000-0000-0000-0000-000000000002"

_PASSING: Final = "passing"
_WARNING: Final = "warning"
_CRITICAL: Final = "critical"
_STATUSES: Final = (_PASSING, _WARNING, _CRITICAL)

_SECOND_NS: Final = 1_000_000_000
_DEFAULT_WAIT_NS: Final = 5 * 60 * _SECOND_NS
_MAX_WAIT_NS: Final = 10 * 60 * _SECOND_NS
_DEFAULT_CHECK_TIMEOUT_NS: Final = 10 * _SECOND_NS
_MIN_CHECK_INTERVAL_NS: Final = _SECOND_NS
_DEFAULT_OUTPUT_MAX_SIZE: Final = 4096
_SERVER_PORT: Final = 8300
_VERSION: Final = "1.18.1"

_SERF_CHECK_ID: Final = "serfHealth"
_CONSUL_SERVICE: Final = "consul"


# --- Go durations ----------------------------------------------------------

_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": _SECOND_NS,
    "m": 60 * _SECOND_NS,
    "h": 3600 * _SECOND_NS,
}
_DURATION_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def parse_go_duration(text: str) -> int:
    """
    Parse a Go duration string, the way Go's ``time.ParseDuration`` does.

    Args:
        text: For example ``"10s"``, ``"1m30s"``, ``"500ms"``, ``"0.3s"``.

    Returns:
        The duration in nanoseconds.

    Raises:
        ValueError: With Go's own message, e.g.
            ``time: invalid duration "ten"``.
    """
    invalid = f'time: invalid duration "{text}"'
    rest = text
    sign = 1
    if rest[:1] in ("-", "+"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(invalid)
    total = 0
    while rest:
        match = _DURATION_PART.match(rest)
        if match is None:  # pragma: no cover - the pattern matches anything
            raise ValueError(invalid)
        whole, fraction, unit = match.groups()
        if not whole and not fraction:
            raise ValueError(invalid)
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        size = _UNIT_NS.get(unit)
        if size is None:
            raise ValueError(
                f'time: unknown unit "{unit}" in duration "{text}"'
            )
        total += int(whole or "0") * size
        if fraction:
            total += int(fraction) * size // 10 ** len(fraction)
        rest = rest[match.end() :]
    return sign * total


def _format_fraction(value: int, size: int) -> str:
    whole, remainder = divmod(value, size)
    if not remainder:
        return str(whole)
    digits = str(remainder).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_go_duration(  # noqa: PLR0911 - one return per Go unit
    nanoseconds: int,
) -> str:
    """
    Format nanoseconds the way Go's ``time.Duration.String`` does.

    Args:
        nanoseconds: The duration.

    Returns:
        For example ``"10s"``, ``"1m30s"``, ``"1h0m0s"``, ``"500ms"`` or
        ``"0s"``.
    """
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    value = abs(nanoseconds)
    if value < 1_000:
        return f"{sign}{value}ns"
    if value < 1_000_000:
        return f"{sign}{_format_fraction(value, 1_000)}\u00b5s"
    if value < _SECOND_NS:
        return f"{sign}{_format_fraction(value, 1_000_000)}ms"
    hours, value = divmod(value, 3600 * _SECOND_NS)
    minutes, value = divmod(value, 60 * _SECOND_NS)
    seconds = f"{_format_fraction(value, _SECOND_NS)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


# --- decoding request bodies like Go's encoding/json -------------------------


class _ConsulError(Exception):
    """An error answer: a status code and Consul's plain-text reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _bad_request(reason: str) -> _ConsulError:
    return _ConsulError(400, reason)


def _decode_failed(reason: str) -> _ConsulError:
    return _bad_request(f"Request decode failed: {reason}")


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}"
    if isinstance(value, list):
        return "array"
    return "object"


def _canonical_key(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str
    go_type: str


def _fields(
    *specs: tuple[str, str, str], aliases: Mapping[str, str] | None = None
) -> dict[str, _Field]:
    table = {
        _canonical_key(name): _Field(name, kind, go_type)
        for name, kind, go_type in specs
    }
    for alias, name in (aliases or {}).items():
        table[_canonical_key(alias)] = table[_canonical_key(name)]
    return table


_CHECK_FIELDS: Final = _fields(
    ("CheckID", "str", "types.CheckID"),
    ("Name", "str", "string"),
    ("Notes", "str", "string"),
    ("Status", "str", "string"),
    ("ServiceID", "str", "string"),
    ("HTTP", "str", "string"),
    ("Method", "str", "string"),
    ("Header", "headers", "map[string][]string"),
    ("Body", "str", "string"),
    ("DisableRedirects", "bool", "bool"),
    ("TLSServerName", "str", "string"),
    ("TLSSkipVerify", "bool", "bool"),
    ("TCP", "str", "string"),
    ("UDP", "str", "string"),
    ("GRPC", "str", "string"),
    ("GRPCUseTLS", "bool", "bool"),
    ("H2PING", "str", "string"),
    ("AliasNode", "str", "string"),
    ("AliasService", "str", "string"),
    ("OSService", "str", "string"),
    ("ScriptArgs", "strings", "[]string"),
    ("Script", "str", "string"),
    ("DockerContainerID", "str", "string"),
    ("Shell", "str", "string"),
    ("Interval", "duration", "time.Duration"),
    ("Timeout", "duration", "time.Duration"),
    ("TTL", "duration", "time.Duration"),
    ("DeregisterCriticalServiceAfter", "duration", "time.Duration"),
    ("SuccessBeforePassing", "int", "int"),
    ("FailuresBeforeWarning", "int", "int"),
    ("FailuresBeforeCritical", "int", "int"),
    ("OutputMaxSize", "int", "int"),
    aliases={"ID": "CheckID", "Args": "ScriptArgs"},
)

_SERVICE_FIELDS: Final = _fields(
    ("Name", "str", "string"),
    ("ID", "str", "string"),
    ("Tags", "strings", "[]string"),
    ("Address", "str", "string"),
    ("Port", "int", "int"),
    ("Meta", "strmap", "map[string]string"),
    ("TaggedAddresses", "tagged", "map[string]structs.ServiceAddress"),
    ("EnableTagOverride", "bool", "bool"),
    ("Weights", "weights", "structs.Weights"),
    ("Kind", "str", "structs.ServiceKind"),
    ("Check", "check", "structs.CheckType"),
    ("Checks", "checks", "structs.CheckTypes"),
)

_SERVICE_ADDRESS_FIELDS: Final = _fields(
    ("Address", "str", "string"), ("Port", "int", "int")
)
_WEIGHTS_FIELDS: Final = _fields(
    ("Passing", "int", "int"), ("Warning", "int", "int")
)
_CHECK_UPDATE_FIELDS: Final = _fields(
    ("Status", "str", "string"), ("Output", "str", "string")
)


def _mismatch(value: object, where: str, go_type: str) -> _ConsulError:
    return _decode_failed(
        f"json: cannot unmarshal {_json_type(value)} into Go struct field "
        f"{where} of type {go_type}"
    )


def _decode_struct(
    body: object, table: Mapping[str, _Field], struct: str
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _decode_failed(
            f"json: cannot unmarshal {_json_type(body)} into Go value of "
            f"type {struct}"
        )
    decoded: dict[str, Any] = {}
    for key, value in body.items():
        spec = table.get(_canonical_key(key))
        if spec is None or value is None:
            continue
        decoded[spec.name] = _decode_value(
            value, spec, f"{struct.rsplit('.', 1)[-1]}.{spec.name}"
        )
    return decoded


def _decode_value(value: object, spec: _Field, where: str) -> Any:  # noqa: PLR0911, PLR0912 - one branch per Go type
    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            raise _mismatch(value, where, spec.go_type)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _mismatch(value, where, spec.go_type)
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _mismatch(value, where, spec.go_type)
        return value
    if kind == "duration":
        if isinstance(value, str):
            try:
                return parse_go_duration(value)
            except ValueError as error:
                raise _decode_failed(str(error)) from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        raise _mismatch(value, where, spec.go_type)
    if kind == "strings":
        if not isinstance(value, list):
            raise _mismatch(value, where, spec.go_type)
        for item in value:
            if not isinstance(item, str):
                raise _mismatch(item, where, "string")
        return list(value)
    if kind == "strmap":
        if not isinstance(value, dict):
            raise _mismatch(value, where, spec.go_type)
        for item in value.values():
            if not isinstance(item, str):
                raise _mismatch(item, where, "string")
        return dict(value)
    if kind == "headers":
        if not isinstance(value, dict):
            raise _mismatch(value, where, spec.go_type)
        headers: dict[str, list[str]] = {}
        for name, values in value.items():
            if not isinstance(values, list) or not all(
                isinstance(v, str) for v in values
            ):
                raise _mismatch(values, where, "[]string")
            headers[name] = list(values)
        return headers
    if kind == "weights":
        return _decode_struct(value, _WEIGHTS_FIELDS, "structs.Weights")
    if kind == "tagged":
        if not isinstance(value, dict):
            raise _mismatch(value, where, spec.go_type)
        tagged: dict[str, dict[str, Any]] = {}
        for name, address in value.items():
            if not isinstance(address, dict):
                raise _mismatch(address, where, "structs.ServiceAddress")
            tagged[name] = _decode_struct(
                address, _SERVICE_ADDRESS_FIELDS, "structs.ServiceAddress"
            )
        return tagged
    if kind == "check":
        return _decode_struct(value, _CHECK_FIELDS, "structs.CheckType")
    if kind == "checks":
        if not isinstance(value, list):
            raise _mismatch(value, where, spec.go_type)
        return [
            _decode_struct(item, _CHECK_FIELDS, "structs.CheckType")
            for item in value
            if item is not None
        ]
    raise AssertionError(kind)  # pragma: no cover


# --- validation -------------------------------------------------------------

_META_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_META_MAX_PAIRS: Final = 64
_META_MAX_KEY: Final = 128
_META_MAX_VALUE: Final = 512


def _validate_meta(meta: Mapping[str, str]) -> None:
    if len(meta) > _META_MAX_PAIRS:
        raise _bad_request(
            "Invalid Service Meta: Node metadata cannot contain more than "
            f"{_META_MAX_PAIRS} key/value pairs"
        )
    for key, value in meta.items():
        problem = None
        if not key:
            problem = "Key cannot be blank"
        elif not _META_KEY.match(key):
            problem = f"Key contains invalid characters: {key}"
        elif len(key) > _META_MAX_KEY:
            problem = f"Key is too long (limit: {_META_MAX_KEY} characters)"
        elif key.startswith("consul-"):
            problem = (
                f"Key prefix 'consul-' is reserved for internal use: {key}"
            )
        elif len(value) > _META_MAX_VALUE:
            problem = (
                f"Value is too long (limit: {_META_MAX_VALUE} characters)"
            )
        if problem:
            raise _bad_request(f"Invalid Service Meta: {problem}")


def _check_kind(check: Mapping[str, Any]) -> str:
    for key, kind in (
        ("HTTP", "http"),
        ("TCP", "tcp"),
        ("UDP", "udp"),
        ("GRPC", "grpc"),
        ("H2PING", "h2ping"),
        ("OSService", "os_service"),
        ("AliasService", "alias"),
        ("AliasNode", "alias"),
    ):
        if check.get(key):
            return kind
    if check.get("ScriptArgs") or check.get("Script"):
        return "docker" if check.get("DockerContainerID") else "script"
    if check.get("TTL", 0) > 0:
        return "ttl"
    return ""


def _validate_check(check: Mapping[str, Any]) -> None:
    status = check.get("Status", "")
    if status and status not in _STATUSES:
        raise _bad_request(
            "Status for checks must 'passing', 'warning', 'critical'"
        )
    kind = _check_kind(check)
    interval = check.get("Interval", 0)
    ttl = check.get("TTL", 0)
    if interval > 0 and ttl > 0:
        raise _bad_request(
            "Invalid check: Interval and TTL cannot both be specified"
        )
    if (
        kind
        in (
            "http",
            "tcp",
            "udp",
            "grpc",
            "h2ping",
            "os_service",
            "script",
            "docker",
        )
        and interval <= 0
    ):
        raise _bad_request(
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, "
            "TCP, UDP or OSService checks"
        )
    if kind in ("", "ttl") and ttl <= 0:
        raise _bad_request("Invalid check: TTL must be > 0 for TTL checks")
    if check.get("OutputMaxSize", 0) < 0:
        raise _bad_request("Invalid check: MaxOutputMaxSize must be positive")


def _is_unspecified_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        return False


# --- state -----------------------------------------------------------------


@dataclass(frozen=True)
class _CannedAnswer:
    status: int
    body: bytes
    content_type: str

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=self.body,
            headers={"Content-Type": self.content_type},
        )


@dataclass
class RecordedRequest:
    """
    One request the double received, kept so tests can assert what clients
    sent.

    Attributes:
        method: ``"GET"``, ``"PUT"``, ...
        path: The path without the query string, e.g.
            ``"/v1/health/service/web"``.
        query: The query parameters in the order sent, repeats included.
        query_string: The raw query string.
        headers: The request headers (case-insensitive look-up).
        body: The raw request body.
        status: The answer's status code; `None` while the request is still
            being handled (a held blocking query).
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    status: int | None = None

    def param(self, name: str) -> str | None:
        """
        The first value of query parameter *name*, or `None` if absent.
        """
        return next((value for key, value in self.query if key == name), None)


@dataclass
class _Service:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    tagged_addresses: dict[str, dict[str, Any]]
    weights: dict[str, int]
    enable_tag_override: bool
    kind: str
    create_index: int = 0
    modify_index: int = 0

    def same_definition(self, other: _Service) -> bool:
        return _service_definition(self) == _service_definition(other)


def _service_definition(service: _Service) -> tuple[object, ...]:
    return (
        service.id,
        service.name,
        service.tags,
        service.address,
        service.port,
        service.meta,
        service.tagged_addresses,
        service.weights,
        service.enable_tag_override,
        service.kind,
    )


@dataclass
class _Check:
    id: str
    name: str
    notes: str
    service_id: str
    service_name: str
    service_tags: list[str]
    kind: str
    status: str
    definition: dict[str, Any]
    output: str = ""
    synced_output: str = ""
    create_index: int = 0
    modify_index: int = 0
    critical_since: float | None = None
    successes: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def duration(self, name: str) -> int:
        value = self.definition.get(name, 0)
        return int(value)


class ConsulDouble:
    """
    A Consul agent (dev mode: agent and catalog in one) on ``127.0.0.1``.

    Args:
        port: The port to listen on; ``0`` picks a free one.  It is kept
            across `go_down`/`come_up` and `restart`.
        acl_token: Turn ACLs on (default deny) with this as the only valid
            token, which may do everything.  `None` (the default) turns ACLs
            off: any token, or none, is accepted.
        datacenter: The agent's datacenter, ``Config.Datacenter``.
        node_name: The node name (``Node.Node``, ``Config.NodeName``).
        node_meta: Extra node metadata (``Node.Meta``); the agent's own
            ``consul-network-segment: ""`` is always there.
        list_consul_service: List the ``consul`` service that every real
            catalog holds for its servers (port 8300, only the
            ``serfHealth`` check).  Pass `False` to hide it.
        check_time_scale: **Test knob.** Multiply every check ``Interval``,
            ``Timeout`` and ``TTL`` by this before using it, e.g. ``0.01`` so
            a ``"10s"`` interval runs every 100 ms.  The definitions shown by
            the API keep the registered values.  Default ``1.0`` (Consul's).
        reap_interval: **Test knob.** Seconds between two runs of the
            reaper that removes services critical for longer than their
            ``DeregisterCriticalServiceAfter``.  Default ``30.0`` (Consul's).
        deregister_minimum: **Test knob.** The least
            ``DeregisterCriticalServiceAfter`` in seconds; smaller values are
            raised to it, as Consul does.  Default ``60.0`` (Consul's).
            ``DeregisterCriticalServiceAfter`` is not scaled by
            *check_time_scale*.
        version: What ``/v1/agent/self`` reports as ``Config.Version``.

    Raises:
        ValueError: If a knob is not positive, or *datacenter*/*node_name*
            is empty.

    A check result that changes only the output shows at once in
    ``/v1/agent/checks`` but reaches the health endpoints with the next
    status change, and does not move the index (Consul syncs output-only
    changes lazily, every 5 minutes by default).

    The index of blocking queries only ever grows: after `restart` it moves
    on from where it was *[double]* (a real dev agent would start over at a
    low number; clients treat both as a change).  Unknown paths get
    ``404 page not found`` *[double]*; ``?filter=`` is refused with a 400
    *[double]*; ``ns``/``partition`` parameters are accepted and ignored.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        acl_token: str | None = None,
        datacenter: str = "dc1",
        node_name: str = "consul-double",
        node_meta: Mapping[str, str] | None = None,
        list_consul_service: bool = True,
        check_time_scale: float = 1.0,
        reap_interval: float = 30.0,
        deregister_minimum: float = 60.0,
        version: str = _VERSION,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port!r}")
        if acl_token is not None and not acl_token:
            raise ValueError("acl_token must be a non-empty string or None")
        if not datacenter or not node_name:
            raise ValueError("datacenter and node_name must not be empty")
        for name, value in (
            ("check_time_scale", check_time_scale),
            ("reap_interval", reap_interval),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if deregister_minimum < 0:
            raise ValueError(
                f"deregister_minimum must be >= 0, got {deregister_minimum!r}"
            )
        self._port = port
        self._acl_token = acl_token
        self._datacenter = datacenter
        self._node_name = node_name
        self._node_id = str(uuid.uuid4())
        self._node_meta = {"consul-network-segment": "", **(node_meta or {})}
        self._list_consul_service = list_consul_service
        self._check_time_scale = check_time_scale
        self._reap_interval = reap_interval
        self._deregister_minimum_ns = int(deregister_minimum * _SECOND_NS)
        self._version = version

        self._index = 0
        self._node_index = 0
        self._services_index = 0
        self._service_name_index: dict[str, int] = {}
        self._services: dict[str, _Service] = {}
        self._checks: dict[str, _Check] = {}
        self._consul_service: _Service | None = None
        self._serf_check: _Check | None = None
        self._changed: asyncio.Event | None = None

        self._requests: list[RecordedRequest] = []
        self._answers_instead: dict[tuple[str, str], _CannedAnswer] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._started = False
        self._reset_catalog()

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """
        Start listening on ``127.0.0.1`` and running checks.

        Raises:
            RuntimeError: If already started.
        """
        if self._started:
            raise RuntimeError("the Consul double is already started")
        self._started = True
        self._changed = asyncio.Event()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        )
        await self._listen()
        self._start_background()

    async def stop(self) -> None:
        """
        Stop listening, drop held connections, stop checks and close the
        HTTP session the checks use.  Safe to call twice.
        """
        if not self._started:
            return
        self._started = False
        await self._stop_background()
        await self._close_listener()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def go_down(self) -> None:
        """
        Simulate agent downtime: close the listening socket and every open
        connection (clients get *connection refused*), pause checks and the
        reaper.  Registrations are kept for `come_up`.

        Raises:
            RuntimeError: If not started or already down.
        """
        if not self._started or self._runner is None:
            raise RuntimeError("the Consul double is not up")
        await self._stop_background()
        await self._close_listener()

    async def come_up(self) -> None:
        """
        End a `go_down`: listen again on the same port, resume checks.

        Raises:
            RuntimeError: If not started or not down.
        """
        if not self._started or self._runner is not None:
            raise RuntimeError("the Consul double is not down")
        await self._listen()
        self._start_background()

    async def restart(self) -> None:
        """
        Simulate an agent restart without configuration: connections drop,
        every registered service and check is lost, and the index moves on
        (blocking queries and watchers see a change).  The port stays.

        Raises:
            RuntimeError: If not started.
        """
        if not self._started:
            raise RuntimeError("the Consul double is not started")
        if self._runner is not None:
            await self._stop_background()
            await self._close_listener()
        for check in self._checks.values():
            self._cancel_check_task(check)
        lost_names = {service.name for service in self._services.values()}
        self._services.clear()
        self._checks.clear()
        index = self._next_index()
        self._services_index = index
        for name in lost_names:
            self._service_name_index[name] = index
        self._notify()
        await self._listen()
        self._start_background()

    # --- addresses and inspection -----------------------------------------

    @property
    def port(self) -> int:
        """
        The TCP port the double listens on (known once started).
        """
        return self._port

    @property
    def host(self) -> str:
        """
        Always ``"127.0.0.1"``.
        """
        return "127.0.0.1"

    @property
    def address(self) -> str:
        """
        ``"127.0.0.1:PORT"``, as ``consul_sd_configs.server`` wants it.
        """
        return f"{self.host}:{self._port}"

    @property
    def url(self) -> str:
        """
        ``"http://127.0.0.1:PORT"``, the agent's base URL.
        """
        return f"http://{self.address}"

    @property
    def datacenter(self) -> str:
        """
        The datacenter the agent reports.
        """
        return self._datacenter

    @property
    def node_name(self) -> str:
        """
        The node name the agent reports.
        """
        return self._node_name

    @property
    def acl_token(self) -> str | None:
        """
        The only valid token, or `None` when ACLs are off.
        """
        return self._acl_token

    @property
    def index(self) -> int:
        """
        The current (raft) index, the highest ``X-Consul-Index`` yet.
        """
        return self._index

    @property
    def is_up(self) -> bool:
        """
        Whether the double accepts connections right now.
        """
        return self._runner is not None

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        """
        The registered services, as ``GET /v1/agent/services`` shows them:
        a fresh dict from service ID to AgentService JSON.
        """
        return {
            service_id: self._agent_service_json(s)
            for service_id, s in self._services.items()
        }

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        """
        The registered checks, as ``GET /v1/agent/checks`` shows them:
        a fresh dict from check ID to HealthCheck JSON.
        """
        return {
            check_id: self._check_json(c, agent_view=True)
            for check_id, c in self._checks.items()
        }

    @property
    def requests(self) -> list[RecordedRequest]:
        """
        Every request received so far, oldest first (a copy of the log).
        """
        return list(self._requests)

    def requests_to(
        self, path: str, method: str | None = None
    ) -> list[RecordedRequest]:
        """
        The logged requests whose path is *path* (and method *method*).
        """
        return [
            r
            for r in self._requests
            if r.path == path and (method is None or r.method == method)
        ]

    def clear_requests(self) -> None:
        """
        Forget the requests logged so far.
        """
        self._requests.clear()

    def set_check_status(
        self, check_id: str, status: str, output: str = ""
    ) -> None:
        """
        Set a check's status as if it had just run, e.g. to make a service
        critical without a failing endpoint.  A running HTTP/TCP check will
        overwrite it on its next run.

        Raises:
            KeyError: If no check has this ID.
            ValueError: If *status* is not ``passing``, ``warning`` or
                ``critical``.
        """
        if status not in _STATUSES:
            raise ValueError(
                f"status must be one of {_STATUSES}, got {status!r}"
            )
        self._set_status(self._checks[check_id], status, output)

    def answer_instead(
        self,
        method: str,
        path: str,
        *,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """
        **Test hook, not Consul behaviour.**  Answer *method* *path* (the
        path without the query string) with *status* and *body* instead of
        what the agent would, as a broken proxy in front of it might (an
        HTML error page, a truncated or non-UTF-8 body, a ``403`` of its
        own).  The request is logged; the agent's state does not change.
        It lasts through `restart` and `go_down`; `answer_normally` ends
        it.
        """
        self._answers_instead[(method.upper(), path)] = _CannedAnswer(
            status=status, body=body, content_type=content_type
        )

    def answer_normally(self) -> None:
        """
        End every `answer_instead`: the agent answers again.
        """
        self._answers_instead.clear()

    async def wait_for(
        self, condition: Callable[[ConsulDouble], bool], timeout: float = 10.0
    ) -> None:
        """
        Poll *condition* (called with the double) until it is true.

        Raises:
            TimeoutError: If it is still false after *timeout* seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self):
            if loop.time() > deadline:
                raise TimeoutError(f"condition still false after {timeout} s")
            await asyncio.sleep(0.01)

    # --- server plumbing ---------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        read = [
            ("/v1/agent/self", self._agent_self),
            ("/v1/agent/services", self._agent_services),
            ("/v1/agent/service/{service_id}", self._agent_service),
            ("/v1/agent/checks", self._agent_checks),
            ("/v1/catalog/services", self._catalog_services),
            ("/v1/catalog/service/{name}", self._catalog_service),
            ("/v1/catalog/nodes", self._catalog_nodes),
            ("/v1/health/service/{name}", self._health_service),
            ("/v1/health/checks/{name}", self._health_checks),
        ]
        write = [
            ("/v1/agent/service/register", self._register_service),
            (
                "/v1/agent/service/deregister/{service_id}",
                self._deregister_service,
            ),
            ("/v1/agent/check/register", self._register_check),
            ("/v1/agent/check/deregister/{check_id}", self._deregister_check),
            ("/v1/agent/check/pass/{check_id}", self._ttl_pass),
            ("/v1/agent/check/warn/{check_id}", self._ttl_warn),
            ("/v1/agent/check/fail/{check_id}", self._ttl_fail),
            ("/v1/agent/check/update/{check_id}", self._ttl_update),
        ]
        # Like Go's mux, an exact path wins over a pattern whatever the
        # method, so GET /v1/agent/service/register is a 405, not a lookup.
        routes = [(path, "PUT", h) for path, h in write]
        routes += [(path, "GET", h) for path, h in read]
        routes.sort(key=lambda route: "{" in route[0])
        for path, method, handler in routes:
            app.router.add_route("*", path, _only(method, handler))
        return app

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=tuple(request.query.items()),
            query_string=request.query_string,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=await request.read(),
        )
        self._requests.append(record)
        canned = self._answers_instead.get((request.method, request.path))
        response: web.StreamResponse
        try:
            if canned is not None:
                response = canned.response()
            else:
                response = await handler(request)
        except web.HTTPNotFound:
            response = _text(404, "404 page not found")
        except _ConsulError as error:
            response = _text(error.status, error.reason)
        record.status = response.status
        return response

    async def _listen(self) -> None:
        runner = web.AppRunner(
            self._make_app(), access_log=None, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def _close_listener(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _start_background(self) -> None:
        for check in self._checks.values():
            self._start_check_task(check)
        self._reaper = asyncio.create_task(
            self._reap_forever(), name="consul-double-reaper"
        )

    async def _stop_background(self) -> None:
        tasks = [
            check.task
            for check in self._checks.values()
            if check.task is not None
        ]
        for check in self._checks.values():
            check.task = None
        if self._reaper is not None:
            tasks.append(self._reaper)
            self._reaper = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- indexes and blocking queries --------------------------------------

    def _next_index(self) -> int:
        self._index += 1
        return self._index

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _touch_service_name(self, name: str, index: int) -> None:
        self._service_name_index[name] = index

    def _service_index(self, name: str) -> int:
        return self._service_name_index.get(name, self._services_index)

    async def _block(
        self, request: web.Request, resource_index: Callable[[], int]
    ) -> None:
        min_index = _parse_index(request.query.get("index"))
        wait_ns = _parse_wait(request.query.get("wait"))
        if min_index <= 0:
            return
        wait = wait_ns / _SECOND_NS
        wait += random.uniform(0, wait / 16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while resource_index() <= min_index:
            remaining = deadline - loop.time()
            changed = self._changed
            if remaining <= 0 or changed is None:
                return
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _read_headers(
        self, request: web.Request, index: int, *, filtered: bool
    ) -> dict[str, str]:
        if "consistent" in request.query:
            consistency = "consistent"
        elif "stale" in request.query:
            consistency = "stale"
        else:
            consistency = "leader"
        headers = {
            "X-Consul-Index": str(max(index, 1)),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": consistency,
            "X-Consul-Query-Backend": "blocking-query",
        }
        if filtered:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return headers

    # --- ACLs --------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        """
        Resolve the request's token: `True` for full rights, `False` for the
        anonymous token; ``403 ACL not found`` for an unknown token.
        """
        if self._acl_token is None:
            return True
        token = request.headers.get("X-Consul-Token", "")
        authorization = request.headers.get("Authorization", "")
        if not token and authorization.lower().startswith("bearer "):
            token = authorization[len("bearer ") :].strip()
        if not token:
            token = request.query.get("token", "")
        if not token:
            return False
        if token != self._acl_token:
            raise _ConsulError(403, "ACL not found")
        return True

    def _require(
        self, request: web.Request, permission: str, resource: str
    ) -> None:
        if not self._authorized(request):
            raise _permission_denied(permission, resource)

    # --- common request handling --------------------------------------------

    def _common_read(self, request: web.Request) -> bool:
        """
        Check ``dc``/``filter`` and the token of a read; return whether the
        caller may see everything (else results are ACL-filtered).
        """
        dc = request.query.get("dc")
        if dc and dc != self._datacenter:
            raise _ConsulError(500, "No path to datacenter")
        if request.query.get("filter"):
            raise _bad_request(
                "Failed to create boolean expression evaluator: filtering "
                "is not supported by the double"
            )
        return self._authorized(request)

    def _node_meta_matches(self, request: web.Request) -> bool:
        for pair in request.query.getall("node-meta", []):
            key, _, value = pair.partition(":")
            if self._node_meta.get(key) != value:
                return False
        return True

    def _instances(self, request: web.Request, name: str) -> list[_Service]:
        if not self._node_meta_matches(request):
            return []
        tags = request.query.getall("tag", [])
        candidates = [s for s in self._services.values() if s.name == name]
        if self._consul_service is not None and name == _CONSUL_SERVICE:
            candidates.insert(0, self._consul_service)
        return [s for s in candidates if all(tag in s.tags for tag in tags)]

    # --- agent endpoints ---------------------------------------------------

    async def _agent_self(self, request: web.Request) -> web.Response:
        self._require(request, "agent:read", self._node_name)
        body = {
            "Config": {
                "Datacenter": self._datacenter,
                "PrimaryDatacenter": self._datacenter,
                "NodeName": self._node_name,
                "NodeID": self._node_id,
                "Server": True,
                "Revision": "double",
                "Version": self._version,
                "BuildDate": "2024-01-01T00:00:00Z",
            },
            "DebugConfig": {},
            "Coord": None,
            "Member": {
                "Name": self._node_name,
                "Addr": self.host,
                "Port": 8301,
                "Tags": {
                    "dc": self._datacenter,
                    "id": self._node_id,
                    "role": "consul",
                    "port": str(_SERVER_PORT),
                    "build": self._version,
                },
                "Status": 1,
                "ProtocolMin": 1,
                "ProtocolMax": 5,
                "ProtocolCur": 2,
                "DelegateMin": 2,
                "DelegateMax": 5,
                "DelegateCur": 4,
            },
            "Stats": {},
            "Meta": dict(self._node_meta),
            "xDS": None,
        }
        return _json(request, body)

    async def _agent_services(self, request: web.Request) -> web.Response:
        allowed = self._common_read(request)
        body = self.services if allowed else {}
        headers = (
            {} if allowed else {"X-Consul-Results-Filtered-By-ACLs": "true"}
        )
        return _json(request, body, headers)

    async def _agent_service(self, request: web.Request) -> web.Response:
        service_id = request.match_info["service_id"]
        service = self._services.get(service_id)
        if service is None:
            self._authorized(request)
            raise _ConsulError(404, f"unknown service ID: {service_id}")
        self._require(request, "service:read", service.name)
        body = self._agent_service_json(service)
        content_hash = hashlib.sha256(
            json.dumps(body, sort_keys=True).encode()
        ).hexdigest()[:16]
        body["ContentHash"] = content_hash
        return _json(request, body, {"X-Consul-ContentHash": content_hash})

    async def _agent_checks(self, request: web.Request) -> web.Response:
        allowed = self._common_read(request)
        body = self.checks if allowed else {}
        headers = (
            {} if allowed else {"X-Consul-Results-Filtered-By-ACLs": "true"}
        )
        return _json(request, body, headers)

    async def _register_service(self, request: web.Request) -> web.Response:
        body = await _read_json(request, "structs.ServiceDefinition")
        fields = _decode_struct(
            body, _SERVICE_FIELDS, "structs.ServiceDefinition"
        )
        name = fields.get("Name", "")
        if not name:
            raise _bad_request("Missing service name")
        address = fields.get("Address", "")
        if _is_unspecified_address(address):
            raise _bad_request("Invalid service address")
        allowed = self._authorized(request)
        _validate_meta(fields.get("Meta", {}))
        weights = {"Passing": 1, "Warning": 1}
        if "Weights" in fields:
            weights = {"Passing": 0, "Warning": 0, **fields["Weights"]}
            if weights["Passing"] < 1:
                raise _bad_request(
                    "Invalid Weights: Passing must be greater than 0"
                )
            if weights["Warning"] < 0:
                raise _bad_request(
                    "Invalid Weights: Warning must be greater or equal than 0"
                )
        check_defs = (
            [fields["Check"]] if "Check" in fields else []
        ) + fields.get("Checks", [])
        for check_def in check_defs:
            _validate_check(check_def)
        if not allowed:
            raise _permission_denied("service:write", name)
        if any(_check_kind(c) in ("script", "docker") for c in check_defs):
            raise _ConsulError(500, _SCRIPTS_DISABLED)
        service_id = fields.get("ID") or name
        port = fields.get("Port", 0)
        service = _Service(
            id=service_id,
            name=name,
            tags=fields.get("Tags", []),
            address=address,
            port=port,
            meta=fields.get("Meta", {}),
            tagged_addresses=_service_tagged_addresses(
                fields.get("TaggedAddresses", {}), address, port
            ),
            weights=weights,
            enable_tag_override=fields.get("EnableTagOverride", False),
            kind=fields.get("Kind", ""),
        )
        replace = request.query.get("replace-existing-checks")
        replace_checks = replace is not None and replace.lower() not in (
            "false",
            "0",
        )
        self._store_service(service)
        check_ids = []
        for position, check_def in enumerate(check_defs, start=1):
            default_id = (
                f"service:{service_id}"
                if len(check_defs) == 1
                else f"service:{service_id}:{position}"
            )
            check_id = check_def.get("CheckID") or default_id
            check_ids.append(check_id)
            self._store_check(
                check_id,
                check_def.get("Name") or f"Service '{name}' check",
                check_def,
                service,
            )
        if replace_checks:
            for check in list(self._checks.values()):
                if (
                    check.service_id == service_id
                    and check.id not in check_ids
                ):
                    self._remove_check(check)
        return _empty()

    async def _deregister_service(self, request: web.Request) -> web.Response:
        service_id = request.match_info["service_id"]
        service = self._services.get(service_id)
        if service is None:
            self._authorized(request)
            raise _ConsulError(
                404,
                f'Unknown service ID "{service_id}". Ensure that the '
                "service ID is passed, not the service name.",
            )
        self._require(request, "service:write", service.name)
        self._remove_service(service_id)
        return _empty()

    async def _register_check(self, request: web.Request) -> web.Response:
        body = await _read_json(request, "structs.CheckDefinition")
        fields = _decode_struct(body, _CHECK_FIELDS, "structs.CheckDefinition")
        allowed = self._authorized(request)
        name = fields.get("Name", "")
        if not name:
            raise _bad_request("Missing check name")
        _validate_check(fields)
        service = None
        service_id = fields.get("ServiceID", "")
        if service_id:
            service = self._services.get(service_id)
            if service is None:
                raise _bad_request(f'ServiceID "{service_id}" does not exist')
        if not allowed:
            raise _permission_denied(
                *(
                    ("service:write", service.name)
                    if service
                    else ("node:write", self._node_name)
                )
            )
        if _check_kind(fields) in ("script", "docker"):
            raise _ConsulError(500, _SCRIPTS_DISABLED)
        self._store_check(fields.get("CheckID") or name, name, fields, service)
        return _empty()

    async def _deregister_check(self, request: web.Request) -> web.Response:
        check = self._existing_check(request)
        self._remove_check(check)
        return _empty()

    def _existing_check(self, request: web.Request) -> _Check:
        check_id = request.match_info["check_id"]
        check = self._checks.get(check_id)
        if check is None:
            self._authorized(request)
            raise _ConsulError(
                404,
                f'Unknown check ID "{check_id}". Ensure that the check ID '
                "is passed, not the check name.",
            )
        if check.service_id:
            self._require(request, "service:write", check.service_name)
        else:
            self._require(request, "node:write", self._node_name)
        return check

    def _ttl_check(self, request: web.Request) -> _Check:
        check = self._existing_check(request)
        if check.kind != "ttl":
            raise _ConsulError(
                500, f'CheckID "{check.id}" does not have associated TTL'
            )
        return check

    async def _ttl_pass(self, request: web.Request) -> web.Response:
        return self._ttl_set(
            self._ttl_check(request), _PASSING, request.query.get("note", "")
        )

    async def _ttl_warn(self, request: web.Request) -> web.Response:
        return self._ttl_set(
            self._ttl_check(request), _WARNING, request.query.get("note", "")
        )

    async def _ttl_fail(self, request: web.Request) -> web.Response:
        return self._ttl_set(
            self._ttl_check(request), _CRITICAL, request.query.get("note", "")
        )

    async def _ttl_update(self, request: web.Request) -> web.Response:
        check = self._ttl_check(request)
        body = await _read_json(request, "checkUpdate")
        update = _decode_struct(
            body, _CHECK_UPDATE_FIELDS, "agent.checkUpdate"
        )
        status = update.get("Status", "")
        if status not in _STATUSES:
            raise _bad_request(f"Invalid check status: '{status}'")
        return self._ttl_set(check, status, update.get("Output", ""))

    def _ttl_set(
        self, check: _Check, status: str, output: str
    ) -> web.Response:
        self._set_status(check, status, output)
        self._cancel_check_task(check)
        if self._runner is not None:
            self._start_check_task(check)
        return _empty()

    # --- catalog and health endpoints --------------------------------------

    async def _catalog_services(self, request: web.Request) -> web.Response:
        allowed = self._common_read(request)
        await self._block(request, lambda: self._services_index)
        tags_by_name: dict[str, list[str]] = {}
        if allowed and self._node_meta_matches(request):
            every = list(self._services.values())
            if self._consul_service is not None:
                every.insert(0, self._consul_service)
            for service in every:
                union = tags_by_name.setdefault(service.name, [])
                union.extend(tag for tag in service.tags if tag not in union)
        headers = self._read_headers(
            request, self._services_index, filtered=not allowed
        )
        return _json(request, tags_by_name, headers)

    async def _catalog_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        allowed = self._common_read(request)
        await self._block(request, lambda: self._service_index(name))
        body = (
            [
                self._catalog_service_json(s)
                for s in self._instances(request, name)
            ]
            if allowed
            else []
        )
        headers = self._read_headers(
            request, self._service_index(name), filtered=not allowed
        )
        return _json(request, body, headers)

    async def _catalog_nodes(self, request: web.Request) -> web.Response:
        allowed = self._common_read(request)
        await self._block(request, lambda: self._node_index)
        body = (
            [self._node_json()]
            if allowed and self._node_meta_matches(request)
            else []
        )
        headers = self._read_headers(
            request, self._node_index, filtered=not allowed
        )
        return _json(request, body, headers)

    async def _health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        allowed = self._common_read(request)
        passing_only = _parse_passing(request)
        await self._block(request, lambda: self._service_index(name))
        entries = []
        for service in self._instances(request, name) if allowed else []:
            checks = self._entry_checks(service)
            if passing_only and any(c.status != _PASSING for c in checks):
                continue
            entries.append(
                {
                    "Node": self._node_json(),
                    "Service": self._catalog_entry_service_json(service),
                    "Checks": [
                        self._check_json(c, agent_view=False) for c in checks
                    ],
                }
            )
        headers = self._read_headers(
            request, self._service_index(name), filtered=not allowed
        )
        return _json(request, entries, headers)

    async def _health_checks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        allowed = self._common_read(request)
        await self._block(request, lambda: self._service_index(name))
        body = []
        if allowed and self._node_meta_matches(request):
            body = [
                self._check_json(c, agent_view=False)
                for c in self._checks.values()
                if c.service_name == name
            ]
        headers = self._read_headers(
            request, self._service_index(name), filtered=not allowed
        )
        return _json(request, body, headers)

    def _entry_checks(self, service: _Service) -> list[_Check]:
        node_checks = [c for c in self._checks.values() if not c.service_id]
        if self._serf_check is not None:
            node_checks.insert(0, self._serf_check)
        own = sorted(
            (c for c in self._checks.values() if c.service_id == service.id),
            key=lambda c: c.id,
        )
        return node_checks + own

    # --- state changes ------------------------------------------------------

    def _reset_catalog(self) -> None:
        self._node_index = self._next_index()
        serf_index = self._next_index()
        self._serf_check = _Check(
            id=_SERF_CHECK_ID,
            name="Serf Health Status",
            notes="",
            service_id="",
            service_name="",
            service_tags=[],
            kind="",
            status=_PASSING,
            definition={},
            output="Agent alive and reachable",
            synced_output="Agent alive and reachable",
            create_index=serf_index,
            modify_index=serf_index,
        )
        self._services_index = self._next_index()
        if self._list_consul_service:
            self._consul_service = _Service(
                id=_CONSUL_SERVICE,
                name=_CONSUL_SERVICE,
                tags=[],
                address="",
                port=_SERVER_PORT,
                meta={
                    "raft_version": "3",
                    "serf_protocol_current": "2",
                    "version": self._version,
                },
                tagged_addresses={},
                weights={"Passing": 1, "Warning": 1},
                enable_tag_override=False,
                kind="",
                create_index=self._services_index,
                modify_index=self._services_index,
            )
            self._touch_service_name(_CONSUL_SERVICE, self._services_index)

    def _store_service(self, service: _Service) -> None:
        existing = self._services.get(service.id)
        if existing is not None and existing.same_definition(service):
            return
        index = self._next_index()
        service.create_index = (
            existing.create_index if existing is not None else index
        )
        service.modify_index = index
        self._services[service.id] = service
        self._services_index = index
        self._touch_service_name(service.name, index)
        if existing is not None and existing.name != service.name:
            self._touch_service_name(existing.name, index)
        for check in self._checks.values():
            if check.service_id == service.id:
                check.service_name = service.name
                check.service_tags = list(service.tags)
        self._notify()

    def _remove_service(self, service_id: str) -> None:
        service = self._services.pop(service_id)
        for check in [
            c for c in self._checks.values() if c.service_id == service_id
        ]:
            self._cancel_check_task(check)
            del self._checks[check.id]
        index = self._next_index()
        self._services_index = index
        self._touch_service_name(service.name, index)
        self._notify()

    def _store_check(
        self,
        check_id: str,
        name: str,
        definition: dict[str, Any],
        service: _Service | None,
    ) -> None:
        existing = self._checks.get(check_id)
        if existing is not None:
            self._cancel_check_task(existing)
        status = definition.get("Status") or _CRITICAL
        index = self._next_index()
        check = _Check(
            id=check_id,
            name=name,
            notes=definition.get("Notes", ""),
            service_id=service.id if service else "",
            service_name=service.name if service else "",
            service_tags=list(service.tags) if service else [],
            kind=_check_kind(definition),
            status=status,
            definition=definition,
            create_index=existing.create_index
            if existing is not None
            else index,
            modify_index=index,
            critical_since=asyncio.get_running_loop().time()
            if status == _CRITICAL
            else None,
        )
        self._checks[check_id] = check
        self._touch_checked(check, index)
        if self._runner is not None:
            self._start_check_task(check)
        self._notify()

    def _remove_check(self, check: _Check) -> None:
        self._cancel_check_task(check)
        del self._checks[check.id]
        self._touch_checked(check, self._next_index())
        self._notify()

    def _touch_checked(self, check: _Check, index: int) -> None:
        if check.service_name:
            self._touch_service_name(check.service_name, index)
            return
        for name in {s.name for s in self._services.values()} | set(
            self._service_name_index
        ):
            self._touch_service_name(name, index)

    def _set_status(self, check: _Check, status: str, output: str) -> None:
        check.output = output
        if status == check.status:
            return
        loop = asyncio.get_running_loop()
        check.status = status
        check.synced_output = output
        check.critical_since = loop.time() if status == _CRITICAL else None
        check.modify_index = self._next_index()
        self._touch_checked(check, check.modify_index)
        self._notify()

    def _apply_result(self, check: _Check, passed: str, output: str) -> None:
        """
        Feed one check result through Consul's success/failure counters.
        """
        success_threshold = check.definition.get("SuccessBeforePassing", 0)
        critical_threshold = check.definition.get("FailuresBeforeCritical", 0)
        warning_threshold = (
            check.definition.get("FailuresBeforeWarning", 0)
            or critical_threshold
        )
        if passed == _PASSING:
            check.successes += 1
            check.failures = 0
            if check.successes >= success_threshold:
                self._set_status(check, _PASSING, output)
            else:
                check.output = output
            return
        if passed == _WARNING:
            check.successes = check.failures = 0
            self._set_status(check, _WARNING, output)
            return
        check.failures += 1
        check.successes = 0
        if check.failures >= critical_threshold:
            self._set_status(check, _CRITICAL, output)
        elif check.failures >= warning_threshold:
            self._set_status(check, _WARNING, output)
        else:
            check.output = output

    # --- running checks ------------------------------------------------------

    def _scaled(self, nanoseconds: int) -> float:
        return nanoseconds / _SECOND_NS * self._check_time_scale

    def _start_check_task(self, check: _Check) -> None:
        if check.kind in ("http", "tcp"):
            check.task = asyncio.create_task(
                self._probe_forever(check),
                name=f"consul-double-check-{check.id}",
            )
        elif check.kind == "ttl":
            check.task = asyncio.create_task(
                self._expire_ttl(check), name=f"consul-double-ttl-{check.id}"
            )

    def _cancel_check_task(self, check: _Check) -> None:
        if check.task is not None:
            check.task.cancel()
            check.task = None

    async def _probe_forever(self, check: _Check) -> None:
        interval = self._scaled(
            max(check.duration("Interval"), _MIN_CHECK_INTERVAL_NS)
        )
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            if check.kind == "http":
                status, output = await self._probe_http(check)
            else:
                status, output = await self._probe_tcp(check)
            self._apply_result(check, status, output)
            await asyncio.sleep(interval)

    def _check_timeout(self, check: _Check) -> float:
        timeout = check.duration("Timeout")
        return self._scaled(
            timeout if timeout > 0 else _DEFAULT_CHECK_TIMEOUT_NS
        )

    async def _probe_http(  # noqa: PLR0911 - one answer per outcome
        self, check: _Check
    ) -> tuple[str, str]:
        definition = check.definition
        method = definition.get("Method") or "GET"
        url = definition["HTTP"]
        headers: CIMultiDict[str] = CIMultiDict(
            {
                "User-Agent": "Consul Health Check",
                "Accept": "text/plain, text/*, */*",
            }
        )
        for name, values in definition.get("Header", {}).items():
            headers.popall(name, None)
            for value in values:
                headers.add(name, value)
        max_size = definition.get("OutputMaxSize") or _DEFAULT_OUTPUT_MAX_SIZE
        session = self._session
        if (
            session is None
        ):  # pragma: no cover - tasks stop before the session closes
            return _CRITICAL, "agent is shutting down"
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=definition.get("Body") or None,
                ssl=not definition.get("TLSSkipVerify", False),
                server_hostname=definition.get("TLSServerName") or None,
                allow_redirects=not definition.get("DisableRedirects", False),
                timeout=aiohttp.ClientTimeout(
                    total=self._check_timeout(check)
                ),
            ) as response:
                text = (await response.content.read(max_size)).decode(
                    "utf-8", "replace"
                )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return _CRITICAL, (
                f'{method.capitalize()} "{url}": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)"
            )
        except aiohttp.ClientConnectorCertificateError:
            return _CRITICAL, (
                f'{method.capitalize()} "{url}": tls: failed to verify '
                "certificate: x509: certificate signed by unknown authority"
            )
        except aiohttp.ClientConnectorError as error:
            return (
                _CRITICAL,
                f'{method.capitalize()} "{url}": '
                + _dial_error(error.host, error.port, error.os_error),
            )
        except (aiohttp.ClientError, ValueError) as error:
            return _CRITICAL, f'{method.capitalize()} "{url}": {error}'
        output = (
            f"HTTP {method} {url}: {response.status} {response.reason} "
            f"Output: {text}"
        )
        if 200 <= response.status < 300:
            return _PASSING, output
        if response.status == 429:
            return _WARNING, output
        return _CRITICAL, output

    async def _probe_tcp(self, check: _Check) -> tuple[str, str]:
        target = check.definition["TCP"]
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port_text)),
                self._check_timeout(check),
            )
        except asyncio.TimeoutError:
            return _CRITICAL, f"dial tcp {target}: i/o timeout"
        except (OSError, ValueError) as error:
            return _CRITICAL, _dial_error(
                host, port_text, error if isinstance(error, OSError) else None
            )
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return _PASSING, f"TCP connect {target}: Success"

    async def _expire_ttl(self, check: _Check) -> None:
        await asyncio.sleep(self._scaled(check.duration("TTL")))
        self._set_status(
            check,
            _CRITICAL,
            "TTL expired (last output before timeout follows): "
            + check.output,
        )

    async def _reap_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._reap_interval)
            now = loop.time()
            doomed = set()
            for check in self._checks.values():
                timeout_ns = check.duration("DeregisterCriticalServiceAfter")
                if (
                    not check.service_id
                    or timeout_ns <= 0
                    or check.critical_since is None
                ):
                    continue
                timeout = (
                    max(timeout_ns, self._deregister_minimum_ns) / _SECOND_NS
                )
                if now - check.critical_since > timeout:
                    doomed.add(check.service_id)
            for service_id in doomed:
                if service_id in self._services:
                    self._remove_service(service_id)

    # --- JSON shapes ---------------------------------------------------------

    def _node_tagged_addresses(self) -> dict[str, str]:
        return dict.fromkeys(("lan", "lan_ipv4", "wan", "wan_ipv4"), self.host)

    def _node_json(self) -> dict[str, Any]:
        return {
            "ID": self._node_id,
            "Node": self._node_name,
            "Address": self.host,
            "Datacenter": self._datacenter,
            "TaggedAddresses": self._node_tagged_addresses(),
            "Meta": dict(self._node_meta),
            "CreateIndex": self._node_index,
            "ModifyIndex": self._node_index,
        }

    def _agent_service_json(self, service: _Service) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ID": service.id,
            "Service": service.name,
            "Tags": list(service.tags),
            "Meta": dict(service.meta),
            "Port": service.port,
            "Address": service.address,
        }
        if service.kind:
            body["Kind"] = service.kind
        if service.tagged_addresses:
            body["TaggedAddresses"] = _copy_tagged(service.tagged_addresses)
        body.update(
            {
                "Weights": dict(service.weights),
                "EnableTagOverride": service.enable_tag_override,
                "Datacenter": self._datacenter,
            }
        )
        return body

    def _catalog_entry_service_json(self, service: _Service) -> dict[str, Any]:
        body = self._agent_service_json(service)
        del body["Datacenter"]
        body.update(
            {
                "Proxy": {"MeshGateway": {}, "Expose": {}},
                "Connect": {},
                "CreateIndex": service.create_index,
                "ModifyIndex": service.modify_index,
            }
        )
        return body

    def _catalog_service_json(self, service: _Service) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ID": self._node_id,
            "Node": self._node_name,
            "Address": self.host,
            "Datacenter": self._datacenter,
            "TaggedAddresses": self._node_tagged_addresses(),
            "NodeMeta": dict(self._node_meta),
            "ServiceKind": service.kind,
            "ServiceID": service.id,
            "ServiceName": service.name,
            "ServiceTags": list(service.tags),
            "ServiceAddress": service.address,
            "ServiceWeights": dict(service.weights),
            "ServiceMeta": dict(service.meta),
            "ServicePort": service.port,
            "ServiceEnableTagOverride": service.enable_tag_override,
            "ServiceProxy": {"MeshGateway": {}, "Expose": {}},
            "ServiceConnect": {},
            "CreateIndex": service.create_index,
            "ModifyIndex": service.modify_index,
        }
        if service.tagged_addresses:
            body["ServiceTaggedAddresses"] = _copy_tagged(
                service.tagged_addresses
            )
        return body

    def _check_json(
        self, check: _Check, *, agent_view: bool
    ) -> dict[str, Any]:
        definition = check.definition
        interval = check.duration("Interval")
        timeout = check.duration("Timeout")
        return {
            "Node": self._node_name,
            "CheckID": check.id,
            "Name": check.name,
            "Status": check.status,
            "Notes": check.notes,
            "Output": check.output if agent_view else check.synced_output,
            "ServiceID": check.service_id,
            "ServiceName": check.service_name,
            "ServiceTags": list(check.service_tags),
            "Type": check.kind,
            "Interval": format_go_duration(interval) if interval else "",
            "Timeout": format_go_duration(timeout) if timeout else "",
            "ExposedPort": 0,
            "Definition": {
                "HTTP": definition.get("HTTP", ""),
                "Header": definition.get("Header"),
                "Method": definition.get("Method", ""),
                "Body": definition.get("Body", ""),
                "TLSServerName": definition.get("TLSServerName", ""),
                "TLSSkipVerify": definition.get("TLSSkipVerify", False),
                "TCP": definition.get("TCP", ""),
                "Interval": format_go_duration(interval),
                "Timeout": format_go_duration(timeout),
                "DeregisterCriticalServiceAfter": format_go_duration(
                    definition.get("DeregisterCriticalServiceAfter", 0)
                ),
            }
            if check.kind
            else {},
            "CreateIndex": check.create_index,
            "ModifyIndex": check.modify_index,
        }


# --- helpers ---------------------------------------------------------------

_SCRIPTS_DISABLED: Final = (
    "Scripts are disabled on this agent; to enable, configure "
    "'enable_script_checks' or 'enable_local_script_checks' to true"
)


def _only(
    method: str, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def dispatch(request: web.Request) -> web.Response:
        if request.method != method:
            raise _ConsulError(405, f"method {request.method} not allowed")
        return await handler(request)

    return dispatch


def _permission_denied(permission: str, resource: str) -> _ConsulError:
    return _ConsulError(
        403,
        f"Permission denied: token with AccessorID '{ANONYMOUS_ACCESSOR_ID}' "
        f"lacks permission '{permission}' on \"{resource}\"",
    )


def _dial_error(host: object, port: object, error: OSError | None) -> str:
    if error is not None and error.errno == errno.ECONNREFUSED:
        return f"dial tcp {host}:{port}: connect: connection refused"
    reason = (
        error.strerror if error is not None and error.strerror else str(error)
    )
    return f"dial tcp {host}:{port}: {reason}"


def _service_tagged_addresses(
    given: Mapping[str, Mapping[str, Any]], address: str, port: int
) -> dict[str, dict[str, Any]]:
    tagged = {
        name: {
            "Address": value.get("Address", ""),
            "Port": value.get("Port", 0),
        }
        for name, value in given.items()
    }
    try:
        version = ipaddress.ip_address(address).version if address else None
    except ValueError:
        version = None
    if version is not None:
        for key in (f"lan_ipv{version}", f"wan_ipv{version}"):
            tagged.setdefault(key, {"Address": address, "Port": port})
    return tagged


def _copy_tagged(
    tagged: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    return {name: dict(value) for name, value in tagged.items()}


def _parse_index(text: str | None) -> int:
    if text is None or text == "":
        return 0
    try:
        index = int(text)
    except ValueError:
        raise _bad_request("Invalid index") from None
    if index < 0:
        raise _bad_request("Invalid index")
    return index


def _parse_wait(text: str | None) -> int:
    if not text:
        return _DEFAULT_WAIT_NS
    try:
        wait = parse_go_duration(text)
    except ValueError:
        raise _bad_request("Invalid wait time") from None
    return min(max(wait, 0), _MAX_WAIT_NS) or _DEFAULT_WAIT_NS


def _parse_passing(request: web.Request) -> bool:
    if "passing" not in request.query:
        return False
    value = request.query["passing"].lower()
    if value in ("", "1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise _bad_request("Invalid value for ?passing")


async def _read_json(request: web.Request, struct: str) -> object:
    raw = await request.read()
    if not raw.strip():
        raise _decode_failed("EOF")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _decode_failed(f"invalid JSON for {struct}: {error}") from None


def _json(
    request: web.Request,
    body: object,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    indent = 4 if "pretty" in request.query else None
    return web.Response(
        text=json.dumps(body, indent=indent),
        content_type="application/json",
        headers=dict(headers or {}),
    )


def _text(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason, content_type="text/plain")


def _empty() -> web.Response:
    return web.Response(status=200)
