"""
Registering a metrics server with the local Consul agent, and keeping it
registered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import ssl

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ._consul_client import (
    DEFAULT_AGENT_ADDRESS,
    UNREACHABLE,
    AgentAnswerError,
    AgentClient,
    AgentEndpoint,
    check_py_consul,
    parse_agent_address,
    redact_address,
    url_host,
)
from ._consul_errors import ConsulRegistrationError


logger = logging.getLogger("prom_async.aio.sd")

_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_META_MAX_PAIRS = 64
_META_MAX_VALUE = 512
_MIN_DEREGISTER_CRITICAL_AFTER = 60.0


class _BoundSocket(Protocol):
    @property
    def addr(self) -> str: ...

    @property
    def port(self) -> int: ...


class _MetricsServer(Protocol):
    @property
    def socket(self) -> _BoundSocket: ...

    @property
    def https(self) -> bool: ...

    @property
    def metrics_path(self) -> str: ...


def _is_wildcard(address: str) -> bool:
    host = address.strip().strip("[]")
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _go_duration(seconds: float) -> str:
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def _kind(value: object) -> str:
    """
    The type of *value*, for a message that must not show the value.
    """
    return type(value).__name__


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds, got {_kind(value)}"
        )
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _optional_str(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {_kind(value)}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _tags(tags: object) -> tuple[str, ...]:
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise TypeError(f"tags must be an iterable of str, got {_kind(tags)}")
    result = tuple(tags)
    for tag in result:
        if not isinstance(tag, str):
            raise TypeError(f"each tag must be a str, got {_kind(tag)}")
    return result


def _meta(meta: object) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(
            f"meta must be a mapping of str to str, got {_kind(meta)}"
        )
    result = dict(meta)
    for key, value in result.items():
        if not isinstance(key, str):
            raise TypeError(f"meta keys must be str, got {_kind(key)}")
        if not isinstance(value, str):
            raise TypeError(f"meta[{key!r}] must be a str, got {_kind(value)}")
        if not _META_KEY.fullmatch(key) or key.startswith("consul-"):
            raise ValueError(
                f"invalid meta key {key!r}: Consul accepts 1-128 of "
                "[A-Za-z0-9_-], not starting with 'consul-'"
            )
        if len(value) > _META_MAX_VALUE:
            raise ValueError(
                f"meta value for {key!r} is longer than {_META_MAX_VALUE}"
            )
    if len(result.keys() | {"metrics_path", "scheme"}) > _META_MAX_PAIRS:
        raise ValueError(
            f"Consul accepts at most {_META_MAX_PAIRS} meta pairs, "
            "metrics_path and scheme included"
        )
    return result


def _check_headers(headers: object) -> dict[str, list[str]] | None:
    """
    The headers as Consul wants them. Messages name a header, never show
    its value: that is often a credential.
    """
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"check_headers must be a mapping, got {_kind(headers)}"
        )
    result: dict[str, list[str]] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(
                f"check_headers names must be str, got {_kind(name)}"
            )
        several = not isinstance(
            value, str | bytes | bytearray
        ) and isinstance(value, Iterable)
        values = list(value) if several else [value]
        wrong = sorted({_kind(v) for v in values if not isinstance(v, str)})
        if wrong:
            raise TypeError(
                f"check_headers[{name!r}] must be a str or a sequence of "
                f"str, got {_kind(value)}"
                + (f" holding {', '.join(wrong)}" if several else "")
            )
        result[name] = values
    return result


@dataclass(frozen=True)
class _Timing:
    request_timeout: float
    retry_initial_delay: float
    retry_max_delay: float
    resync_interval: float


class ConsulRegistration:
    """
    One metrics server's registration with a Consul agent.

    Returned by :meth:`ConsulAgent.register`. While it lives, a background
    task on the server's event loop registers the service, retries with
    capped exponential backoff while the agent is unreachable, and every
    *resync_interval* asks the agent whether it still knows the service,
    registering it again if not (e.g. after the agent restarted without its
    state). An answer that does not tell (a refused read, a body that is
    not the agent's JSON list of services, a ``5xx``) keeps the last known
    state: one warning when such answers start, one info line when they
    end.

    Awaiting the object itself (``await registration()``) stops that work,
    deregisters the service (unless the :class:`ConsulAgent` was created
    with ``deregister=False``) and closes the HTTP session. It finishes
    within *request_timeout* even when the agent is gone, and may be called
    more than once.
    """

    def __init__(
        self,
        *,
        client: AgentClient,
        agent_url: str,
        service: dict[str, Any],
        deregister: bool,
        timing: _Timing,
    ) -> None:
        self._client = client
        self._agent_url = agent_url
        self._service = service
        self._deregister = deregister
        self._timing = timing
        self._registered = False
        self._ever_registered = False
        self._reply_pending = False
        self._closed = False
        self._error: ConsulRegistrationError | None = None
        self._in_outage = False
        self._unreadable: str | None = None
        self._attempted = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._keep_registered(),
            name=f"consul-registration-{self.service_id}",
        )

    @property
    def service_id(self) -> str:
        """
        The service ID registered with the agent.
        """
        return str(self._service["service_id"])

    @property
    def service(self) -> Mapping[str, Any]:
        """
        The registration sent to the agent, as keyword arguments of
        py-consul's ``agent.service.register()``.
        """
        return self._service

    @property
    def is_registered(self) -> bool:
        """
        Whether the agent accepted the registration and, as far as the last
        look (at most *resync_interval* ago) shows, still has it. A look
        the agent answers unusably leaves it as it was; an agent that
        cannot be reached makes it ``False``.
        """
        return self._registered

    @property
    def error(self) -> ConsulRegistrationError | None:
        """
        The agent's last refusal (e.g. ``403`` for a bad token), or ``None``
        once a registration succeeds.
        """
        return self._error

    async def _wait_for_first_attempt(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._attempted.wait(), timeout)
        except asyncio.TimeoutError:
            logger.debug(
                "Registration of %r is still pending; continuing in the "
                "background.",
                self.service_id,
            )

    async def __call__(self) -> None:
        """
        Stop the background work, deregister, and close the HTTP session.
        """
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        try:
            await asyncio.wait({self._task})
            if self._deregister and (
                self._ever_registered or self._reply_pending
            ):
                await self._deregister_service()
        finally:
            self._registered = False
            await self._client.close()

    async def _deregister_service(self) -> None:
        try:
            await asyncio.wait_for(
                self._client.deregister_service(self.service_id),
                self._timing.request_timeout,
            )
        except ConsulRegistrationError as error:
            logger.warning(
                "Consul agent at %s refused to deregister %r: %s",
                self._agent_url,
                self.service_id,
                error,
            )
        except UNREACHABLE as error:
            logger.warning(
                "Could not deregister %r: Consul agent at %s unreachable (%s)",
                self.service_id,
                self._agent_url,
                _describe(error),
            )
        else:
            logger.info(
                "Deregistered %r from Consul agent at %s.",
                self.service_id,
                self._agent_url,
            )

    async def _keep_registered(self) -> None:
        delay = self._timing.retry_initial_delay
        while True:
            try:
                if self._registered:
                    await asyncio.sleep(self._timing.resync_interval)
                    if await self._agent_knows_service() is not False:
                        continue
                    logger.warning(
                        "Consul agent at %s no longer knows %r; "
                        "registering it again.",
                        self._agent_url,
                        self.service_id,
                    )
                    self._registered = False
                await self._register_once()
            except ConsulRegistrationError as error:
                self._on_rejected(error)
                pause = self._timing.retry_max_delay
            except UNREACHABLE as error:
                self._on_unreachable(error)
                pause = delay
                delay = min(delay * 2, self._timing.retry_max_delay)
            except Exception:
                self._registered = False
                logger.exception(
                    "Unexpected error registering %r with Consul agent at "
                    "%s; retrying in %s s.",
                    self.service_id,
                    self._agent_url,
                    self._timing.retry_max_delay,
                )
                pause = self._timing.retry_max_delay
            else:
                self._on_registered()
                delay = self._timing.retry_initial_delay
                continue
            finally:
                self._attempted.set()
            await asyncio.sleep(pause)

    async def _register_once(self) -> None:
        # Until the agent answers, the service may or may not be registered:
        # close() then deregisters to be safe.
        self._reply_pending = True
        try:
            await self._client.register_service(self._service)
        except (aiohttp.ClientConnectorError, ConsulRegistrationError):
            self._reply_pending = False
            raise
        self._reply_pending = False
        self._ever_registered = True

    async def _agent_knows_service(self) -> bool | None:
        """
        Whether the agent still has the service; ``None`` when its answer
        does not tell (a refused or garbled read), which keeps the last
        known state.

        Raises:
            Exception: One of :data:`UNREACHABLE`, but not an answer.
        """
        try:
            service_ids = await self._client.service_ids()
        except ConsulRegistrationError as error:
            self._on_unreadable(_read_refused(error))
            return None
        except AgentAnswerError as error:
            self._on_unreadable(str(error))
            return None
        if self._unreadable is not None:
            logger.info(
                "Consul agent at %s lists its services again.",
                self._agent_url,
            )
            self._unreadable = None
        return self.service_id in service_ids

    def _on_unreadable(self, problem: str) -> None:
        if problem == self._unreadable:
            logger.debug("Services still unreadable: %s", problem)
            return
        self._unreadable = problem
        logger.warning(
            "Could not read the services of the Consul agent at %s: %s. "
            "Keeping %r as registered; asking again every %s s.",
            self._agent_url,
            problem,
            self.service_id,
            self._timing.resync_interval,
        )

    def _on_registered(self) -> None:
        self._registered = True
        self._error = None
        if self._in_outage:
            logger.info(
                "Consul agent at %s is reachable again; registered %r.",
                self._agent_url,
                self.service_id,
            )
        else:
            logger.info(
                "Registered %r with Consul agent at %s.",
                self.service_id,
                self._agent_url,
            )
        self._in_outage = False

    def _on_rejected(self, error: ConsulRegistrationError) -> None:
        self._registered = False
        self._in_outage = False
        previous = self._error
        self._error = error
        if previous is not None and (previous.status, previous.message) == (
            error.status,
            error.message,
        ):
            logger.debug("Still refused: %s", error)
            return
        logger.error(
            "Consul agent at %s refused to register %r: %s (retrying every "
            "%s s in case the token or policy changes)",
            self._agent_url,
            self.service_id,
            error,
            self._timing.retry_max_delay,
        )

    def _on_unreachable(self, error: BaseException) -> None:
        self._registered = False
        if self._in_outage:
            logger.debug("Agent still unreachable: %s", _describe(error))
            return
        self._in_outage = True
        logger.warning(
            "Consul agent at %s unreachable (%s); %r will be registered when "
            "it answers again.",
            self._agent_url,
            _describe(error),
            self.service_id,
        )


def _read_refused(error: ConsulRegistrationError) -> str:
    """
    What a ``4xx`` answer to the read of the services means.
    """
    if error.status != HTTPStatus.FORBIDDEN:
        return str(error)
    if error.message.startswith("ACL not found"):
        meaning = "the ACL token is unknown to the agent"
    elif error.message.startswith("Permission denied"):
        meaning = "the ACL token may not read services (service:read)"
    else:
        meaning = "the read was denied (ACLs, or a proxy in between)"
    return f"{error}; {meaning}"


def _describe(error: BaseException) -> str:
    if isinstance(error, AgentAnswerError):
        return str(error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ConsulAgent:
    """
    Register metrics servers with a Consul agent, so that Prometheus'
    ``consul_sd_configs`` finds them.

    Pass an instance as ``service_discovery=`` to
    :func:`~prom_async.aio.web.start_http_server` or
    :func:`~prom_async.aio.web.start_http_server_in_thread`. The first five
    arguments are those of prometheus-async's ``ConsulAgent``, in the same
    order; everything else is keyword-only. All arguments are checked here,
    so mistakes surface when the object is created.

    Args:
        name: The Consul service name.
        service_id: The service ID. Defaults to ``<name>-<hostname>-<port>``:
            unique per instance on a host, and the same when the instance
            restarts, so a restart replaces its own entry. An explicit ID
            suits one server per :class:`ConsulAgent`.
        tags: The service's tags.
        token: The ACL token. Defaults to ``CONSUL_HTTP_TOKEN``, then the
            contents of the file named by ``CONSUL_HTTP_TOKEN_FILE``. Never
            logged nor shown in an error message.
        deregister: Whether closing the server deregisters the service.
        agent_address: Where the agent's HTTP API is: ``host:port`` or
            ``http(s)://host:port``. Defaults to ``CONSUL_HTTP_ADDR``, then
            ``127.0.0.1:8500``. Credentials in it are refused (the error
            shows them as ``***``): the agent takes a *token*.
        agent_tls: For an ``https`` agent: ``True`` verifies its certificate
            against the system's CAs, ``False`` does not verify, an
            :class:`ssl.SSLContext` is used as is.
        address: The service address to register. Defaults to the address
            the server is bound to or, when that is a wildcard (``0.0.0.0``,
            ``::``), to none, so that discovery uses the agent's node
            address. A wildcard is refused.
        meta: Service metadata. ``metrics_path`` and ``scheme`` are added
            from the server unless given here.
        check_interval: Seconds between two health checks by the agent.
        check_timeout: Seconds before a health check counts as failed.
        deregister_critical_after: Seconds a check may stay critical
            before the agent drops the service (at least 60, Consul's
            minimum), or ``None`` to keep it forever.
        check_url: The URL the agent checks. Defaults to the server's
            metrics endpoint or, when the server requires credentials and
            *check_headers* is not given, to its unauthenticated root page.
            The host is *address*, the bound address, or for a wildcard the
            loopback address (the agent is local).
        check_headers: Headers the agent sends with each check, e.g.
            ``{"Authorization": "Basic ..."}``. Consul stores them, so
            passing credentials here is an explicit choice. Errors name a
            header, never show its value.
        check_tls_skip_verify: Whether the agent skips verifying the
            server's certificate when checking over HTTPS.
        check_tls_server_name: The name the agent expects in the server's
            certificate (SNI), when it differs from the URL's host.
        request_timeout: Seconds one request to the agent may take.
        retry_initial_delay: Seconds before the first retry while the agent
            is unreachable; doubled after each failure.
        retry_max_delay: The cap on that delay, and the delay between tries
            after the agent refused the registration.
        resync_interval: Seconds between two looks at whether the agent
            still knows the service.

    Raises:
        TypeError: An argument has the wrong type; the message names the
            argument and the type, not the value.
        ValueError: An argument has a value Consul would refuse or that
            makes no sense, including a malformed ``CONSUL_HTTP_ADDR`` and a
            token (or ``CONSUL_HTTP_TOKEN``) with control characters. No
            message shows a token, a check header's value or the
            credentials of an address.
        RuntimeError: The installed py-consul lacks an internal that
            prom_async relies on; the message names it.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str = "app-metrics",
        service_id: str | None = None,
        tags: Iterable[str] = (),
        token: str | None = None,
        deregister: bool = True,
        *,
        agent_address: str | None = None,
        agent_tls: ssl.SSLContext | bool = True,
        address: str | None = None,
        meta: Mapping[str, str] | None = None,
        check_interval: float = 10.0,
        check_timeout: float = 5.0,
        deregister_critical_after: float | None = 600.0,
        check_url: str | None = None,
        check_headers: Mapping[str, str | Sequence[str]] | None = None,
        check_tls_skip_verify: bool = False,
        check_tls_server_name: str | None = None,
        request_timeout: float = 5.0,
        retry_initial_delay: float = 1.0,
        retry_max_delay: float = 30.0,
        resync_interval: float = 10.0,
    ) -> None:
        check_py_consul()
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {_kind(name)}")
        if not name:
            raise ValueError("name must not be empty")
        self.name = name
        self.service_id = _optional_str("service_id", service_id)
        self.tags = _tags(tags)
        self.deregister = _bool("deregister", deregister)
        self._token, self._token_file = _token_source(
            _token("token", _optional_str("token", token))
        )

        self.agent = _agent_endpoint(
            _optional_str("agent_address", agent_address)
        )
        if not isinstance(agent_tls, bool | ssl.SSLContext):
            raise TypeError(
                "agent_tls must be a bool or an ssl.SSLContext, got "
                f"{_kind(agent_tls)}"
            )
        self._agent_tls = agent_tls

        self.address = _optional_str("address", address)
        if self.address is not None and _is_wildcard(self.address):
            raise ValueError(
                f"address {address!r} is a wildcard, not an address others "
                "can reach; leave it unset to use the agent's node address"
            )
        self.meta = _meta(meta)

        self.check_interval = _positive("check_interval", check_interval)
        self.check_timeout = _positive("check_timeout", check_timeout)
        self.deregister_critical_after = _deregister_critical_after(
            deregister_critical_after
        )
        self.check_url = _optional_str("check_url", check_url)
        if self.check_url is not None and not self.check_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                "check_url must be an http(s) URL, got "
                f"{redact_address(self.check_url)!r}"
            )
        self.check_headers = _check_headers(check_headers)
        self.check_tls_skip_verify = _bool(
            "check_tls_skip_verify", check_tls_skip_verify
        )
        self.check_tls_server_name = _optional_str(
            "check_tls_server_name", check_tls_server_name
        )

        self._timing = _Timing(
            request_timeout=_positive("request_timeout", request_timeout),
            retry_initial_delay=_positive(
                "retry_initial_delay", retry_initial_delay
            ),
            retry_max_delay=_positive("retry_max_delay", retry_max_delay),
            resync_interval=_positive("resync_interval", resync_interval),
        )
        if self._timing.retry_max_delay < self._timing.retry_initial_delay:
            raise ValueError(
                "retry_max_delay must be >= retry_initial_delay, got "
                f"{retry_max_delay!r} < {retry_initial_delay!r}"
            )
        self._registration: ConsulRegistration | None = None

    def __repr__(self) -> str:
        return (
            f"ConsulAgent(name={self.name!r}, service_id={self.service_id!r}, "
            f"tags={list(self.tags)!r}, agent={self.agent.url!r}, "
            f"token={'<set>' if self._token or self._token_file else None})"
        )

    @property
    def registration(self) -> ConsulRegistration | None:
        """
        The handle returned by the latest :meth:`register`, if any.
        """
        return self._registration

    def service_definition(
        self, metrics_server: _MetricsServer
    ) -> dict[str, Any]:
        """
        The registration for *metrics_server*, as keyword arguments of
        py-consul's ``agent.service.register()``.
        """
        bound = metrics_server.socket
        port = int(bound.port)
        service_address = self.address
        if service_address is None and not _is_wildcard(bound.addr):
            service_address = bound.addr
        meta = {
            "metrics_path": metrics_server.metrics_path,
            "scheme": "https" if metrics_server.https else "http",
            **self.meta,
        }
        return {
            "name": self.name,
            "service_id": self.service_id
            or f"{self.name}-{socket.gethostname()}-{port}",
            "address": service_address,
            "port": port,
            "tags": list(self.tags),
            "meta": meta,
            "check": self._check(metrics_server),
        }

    def _check(self, metrics_server: _MetricsServer) -> dict[str, Any]:
        check: dict[str, Any] = {
            "http": self.check_url or self._default_check_url(metrics_server),
            "interval": _go_duration(self.check_interval),
            "timeout": _go_duration(self.check_timeout),
        }
        if self.deregister_critical_after is not None:
            check["DeregisterCriticalServiceAfter"] = _go_duration(
                self.deregister_critical_after
            )
        if self.check_headers is not None:
            check["header"] = self.check_headers
        if self.check_tls_skip_verify:
            check["TLSSkipVerify"] = True
        if self.check_tls_server_name is not None:
            check["TLSServerName"] = self.check_tls_server_name
        return check

    def _default_check_url(self, metrics_server: _MetricsServer) -> str:
        bound = metrics_server.socket
        host = self.address or bound.addr
        if _is_wildcard(host):
            host = "::1" if ":" in host else "127.0.0.1"
        requires_auth = bool(getattr(metrics_server, "requires_auth", False))
        path = (
            "/"
            if requires_auth and self.check_headers is None
            else metrics_server.metrics_path
        )
        scheme = "https" if metrics_server.https else "http"
        return f"{scheme}://{url_host(host)}:{int(bound.port)}{path}"

    async def register(
        self, metrics_server: _MetricsServer
    ) -> ConsulRegistration:
        """
        Register *metrics_server* and keep it registered.

        Waits at most *request_timeout* for the first attempt; whatever its
        outcome, the returned handle keeps working in the background on the
        running event loop until it is awaited.
        """
        service = self.service_definition(metrics_server)
        token = self._token
        if token is None and self._token_file is not None:
            token = await asyncio.to_thread(_read_token_file, self._token_file)
        registration = ConsulRegistration(
            client=AgentClient(
                self.agent,
                token=token,
                tls=self._agent_tls,
                request_timeout=self._timing.request_timeout,
            ),
            agent_url=self.agent.url,
            service=service,
            deregister=self.deregister,
            timing=self._timing,
        )
        self._registration = registration
        try:
            await registration._wait_for_first_attempt(  # noqa: SLF001 -- ConsulAgent owns the handle
                self._timing.request_timeout
            )
        except BaseException:
            await registration()
            raise
        return registration


def _token_source(token: str | None) -> tuple[str | None, str | None]:
    """
    The token, else the token file to read it from.
    """
    if token is not None:
        return token, None
    from_env = os.environ.get("CONSUL_HTTP_TOKEN")
    if from_env:
        return _token("CONSUL_HTTP_TOKEN", from_env), None
    return None, os.environ.get("CONSUL_HTTP_TOKEN_FILE") or None


def _token(source: str, token: str | None) -> str | None:
    """
    *token*, if it can go in a header; the error names *source*, never the
    token.
    """
    if token is not None and not _is_header_safe(token):
        raise ValueError(
            f"{source} has control characters or surrounding whitespace; "
            "an ACL token has none (it is sent in the X-Consul-Token header)"
        )
    return token


def _is_header_safe(token: str) -> bool:
    return token == token.strip() and token.isprintable()


def _deregister_critical_after(value: float | None) -> float | None:
    if value is None:
        return None
    seconds = _positive("deregister_critical_after", value)
    if seconds < _MIN_DEREGISTER_CRITICAL_AFTER:
        raise ValueError(
            "deregister_critical_after must be at least 60 seconds "
            f"(Consul's minimum), got {value!r}"
        )
    return seconds


def _bool(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {_kind(value)}")
    return value


def _agent_endpoint(agent_address: str | None) -> AgentEndpoint:
    ssl_from_env = os.environ.get("CONSUL_HTTP_SSL", "").lower() == "true"
    if agent_address is not None:
        return parse_agent_address(agent_address, default_scheme="http")
    from_env = os.environ.get("CONSUL_HTTP_ADDR")
    scheme = "https" if ssl_from_env else "http"
    if from_env:
        try:
            return parse_agent_address(from_env, default_scheme=scheme)
        except ValueError as error:
            raise ValueError(f"CONSUL_HTTP_ADDR: {error}") from None
    return parse_agent_address(DEFAULT_AGENT_ADDRESS, default_scheme=scheme)


def _read_token_file(path: str) -> str | None:
    try:
        token = Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as error:
        problem = error.strerror or type(error).__name__
    except UnicodeDecodeError:
        problem = "it is not UTF-8"
    else:
        if token is None or _is_header_safe(token):
            return token
        problem = "the token in it has control characters"
    logger.error(
        "Cannot read the Consul token from CONSUL_HTTP_TOKEN_FILE %r (%s); "
        "registering without a token.",
        path,
        problem,
    )
    return None
