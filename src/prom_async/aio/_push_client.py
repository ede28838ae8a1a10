"""
The requests of pushes and deletes: sent with aiohttp, retried, typed
errors.

A request is retried while the gateway cannot be reached or answers ``5xx``
(or ``429``), with a delay that doubles up to a cap, until the call's
timeout; any other answer that is not ``2xx`` is a refusal and raises at
once. The registry is rendered (and gzipped) in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import ssl as ssl_module
import urllib.parse

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import aiohttp
import yarl

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ._push_errors import PushError
from ._push_url import Group


__all__ = ["Connection", "send", "validated_connection"]

#: The text format 0.0.4, which every Pushgateway reads.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_COMPRESSIONS: Final = ("gzip",)
# The first retry comes soon (a gateway that restarts is back in a moment);
# later ones no more often than every few seconds.
_FIRST_RETRY_DELAY: Final = 0.1
_MAX_RETRY_DELAY: Final = 5.0
_RETRIED_STATUSES: Final = frozenset({HTTPStatus.TOO_MANY_REQUESTS})


@dataclass(frozen=True)
class Connection:
    """
    How to talk to the gateway: validated options shared by every request.
    """

    timeout: float | None
    compression: str | None
    authorization: str | None
    ssl_ctx: ssl_module.SSLContext | None
    session: aiohttp.ClientSession | None


def validated_connection(
    group: Group,
    *,
    timeout: object,
    compression: object,
    basic_auth: object,
    bearer_token: object,
    ssl_ctx: object,
    session: object,
) -> Connection:
    """
    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option has a wrong value.
    """
    if compression is not None and compression not in _COMPRESSIONS:
        raise ValueError(
            f"compression must be 'gzip' or None, not {compression!r}"
        )
    return Connection(
        timeout=_timeout(timeout),
        compression=compression,
        authorization=_authorization(basic_auth, bearer_token),
        ssl_ctx=_ssl_ctx(ssl_ctx, group),
        session=_session_option(session),
    )


def _timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            "timeout must be a number of seconds or None, not "
            f"{type(timeout).__name__}"
        )
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    return timeout


def _authorization(basic_auth: object, bearer_token: object) -> str | None:
    if bearer_token is not None:
        if basic_auth is not None:
            raise ValueError("pass basic_auth or bearer_token, not both")
        if not isinstance(bearer_token, str) or not bearer_token:
            raise TypeError("bearer_token must be a non-empty string")
        return f"Bearer {bearer_token}"
    if basic_auth is None:
        return None
    if (
        not isinstance(basic_auth, tuple)
        or len(basic_auth) != 2  # noqa: PLR2004 -- user and password
        or not all(isinstance(part, str) for part in basic_auth)
    ):
        raise TypeError(
            "basic_auth must be a (user, password) tuple of strings"
        )
    user, password = basic_auth
    if ":" in user:
        raise ValueError("invalid basic_auth: a user name cannot hold ':'")
    # UTF-8, as prometheus_client's basic_auth_handler sends it.
    credentials = base64.b64encode(f"{user}:{password}".encode())
    return f"Basic {credentials.decode()}"


def _ssl_ctx(ssl_ctx: object, group: Group) -> ssl_module.SSLContext | None:
    if ssl_ctx is None:
        return None
    if not isinstance(ssl_ctx, ssl_module.SSLContext):
        raise TypeError(
            f"ssl_ctx must be an ssl.SSLContext, not {type(ssl_ctx).__name__}"
        )
    if urllib.parse.urlsplit(group.url).scheme != "https":
        raise ValueError(
            "ssl_ctx is given but the gateway URL is not https://: the push "
            f"would go out unencrypted ({group.url})"
        )
    return ssl_ctx


def _session_option(session: object) -> aiohttp.ClientSession | None:
    if session is None:
        return None
    if not isinstance(session, aiohttp.ClientSession):
        raise TypeError(
            "session must be an aiohttp.ClientSession, not "
            f"{type(session).__name__}"
        )
    if session.closed:
        raise ValueError("session is closed")
    return session


def _render(registry: Collector, compression: str | None) -> bytes:
    body = generate_latest(registry)
    if compression is None:
        return body
    return gzip.compress(body, mtime=0)


@contextlib.asynccontextmanager
async def _session(
    connection: Connection,
) -> AsyncIterator[aiohttp.ClientSession]:
    if connection.session is not None:
        yield connection.session
        return
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    method: str,
    group: Group,
    connection: Connection,
    registry: Collector | None = None,
) -> None:
    """
    Send one push (PUT or POST, of *registry*) or delete (DELETE), retried
    until the connection's timeout.

    Raises:
        PushError: The gateway refused it, or was not reached in time.
        Exception: Whatever a collector of *registry* raised.
    """
    headers = {}
    if connection.authorization is not None:
        headers["Authorization"] = connection.authorization
    body = None
    if registry is not None:
        headers["Content-Type"] = CONTENT_TYPE
        if connection.compression is not None:
            headers["Content-Encoding"] = connection.compression
        body = await asyncio.to_thread(
            _render, registry, connection.compression
        )
    request = _Request(method, group.url, headers, body, connection.ssl_ctx)
    async with _session(connection) as session:
        if connection.timeout is None:
            await request.until_sent(session)
            return
        try:
            await asyncio.wait_for(
                request.until_sent(session), connection.timeout
            )
        except asyncio.TimeoutError:
            raise PushError(
                f"no success within {connection.timeout} s, after "
                f"{request.attempts} attempts (last: "
                f"{request.last_failure or 'no answer in time'})",
                method=method,
                url=group.url,
                status=request.last_status,
                text=request.last_text,
                attempts=request.attempts,
            ) from request.last_error


class _Request:
    """
    One push or delete, and what its attempts met so far.
    """

    def __init__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        ssl_ctx: ssl_module.SSLContext | None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.ssl: ssl_module.SSLContext | bool = ssl_ctx or True
        self.attempts = 0
        self.last_failure = ""
        self.last_status: int | None = None
        self.last_text = ""
        self.last_error: BaseException | None = None

    async def until_sent(self, session: aiohttp.ClientSession) -> None:
        """
        Retry until the gateway takes the request or refuses it.

        Raises:
            PushError: The gateway refused it, or TLS failed.
        """
        # Sent as built: the escaping is the gateway's protocol, not to be
        # normalised again.
        url = yarl.URL(self.url, encoded=True)
        delay = _FIRST_RETRY_DELAY
        while True:
            self.attempts += 1
            try:
                async with session.request(
                    self.method,
                    url,
                    data=self.body,
                    headers=self.headers,
                    ssl=self.ssl,
                    allow_redirects=False,
                    # Whatever the application's session says: the status
                    # decides below.
                    raise_for_status=False,
                ) as response:
                    text = await response.text(errors="replace")
            except aiohttp.ClientSSLError as error:
                raise PushError(
                    f"TLS failed: {error}", method=self.method, url=self.url
                ) from error
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                self.last_failure = _describe(error)
                self.last_error = error
            else:
                status = response.status
                if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
                    return
                reason = f"{status} {response.reason}"
                if (
                    status < HTTPStatus.INTERNAL_SERVER_ERROR
                    and status not in _RETRIED_STATUSES
                ):
                    raise PushError(
                        f"refused ({reason})",
                        method=self.method,
                        url=self.url,
                        status=status,
                        text=text,
                        attempts=self.attempts,
                    )
                self.last_failure = reason
                self.last_status = status
                self.last_text = text
                self.last_error = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY)


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"
