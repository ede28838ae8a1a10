"""
:class:`Pusher`: a batch job's metrics, pushed when it ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl as ssl_module

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp

from prometheus_client import CollectorRegistry

from ._push_client import Connection, send, validated_connection
from ._push_url import validated_group


if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self


__all__ = ["Pusher"]

log = logging.getLogger("prom_async.aio.push")

_USE_ASYNC_WITH = (
    "Pusher is an async context manager: use `async with Pusher(...) as "
    "pusher:` around the job"
)


class Pusher:
    """
    Push a batch job's metrics to the Pushgateway when the job ends.

    Use it as an async context manager around the job (``async with
    Pusher(...) as pusher:``), and create the job's metrics in
    :attr:`registry`. When the block ends, the registry is pushed (``PUT``:
    the group holds exactly these metrics), **also when the block raises**:
    a failed run is what most needs to be seen. A push that fails then is
    logged (logger ``prom_async.aio.push``) and the job's own exception
    propagates; a push that fails after a block that succeeded raises
    :class:`PushError`.

    With *interval*, the registry is also pushed every *interval* seconds
    while the block runs; those pushes that fail are logged and the job
    goes on. One :class:`aiohttp.ClientSession` serves every push of a
    block (or the one given as *session*).

    Args:
        gateway: The gateway's URL, as for :func:`push_to_gateway`.
        job: The ``job`` label of the group.
        registry: The registry to push. By default a new, empty
            :class:`~prometheus_client.CollectorRegistry` (see
            :attr:`registry`), so the process and platform metrics of the
            global :data:`~prometheus_client.REGISTRY` are not pushed by
            accident: with it, every run would overwrite the last one's
            ``process_start_time_seconds`` and friends, which say nothing
            about a job. Pass ``registry=REGISTRY`` to push the global one.
        grouping_key: The other labels of the group, as for
            :func:`push_to_gateway`.
        interval: Also push every *interval* seconds while the block runs
            (for jobs long enough that their progress matters).
        delete_on_exit: When the block ends, delete the group instead of
            pushing: for metrics that only matter while the job runs
            (with *interval*).
        timeout: Seconds each push may take, retries included, as for
            :func:`push_to_gateway`.
        compression: ``"gzip"`` (the default) or :data:`None`.
        basic_auth: ``(user, password)`` for HTTP basic auth.
        bearer_token: Send ``Authorization: Bearer <bearer_token>``.
        ssl_ctx: The client TLS context for an ``https://`` gateway.
        session: An application's :class:`aiohttp.ClientSession` to push
            with, never closed here; without one, the pusher opens one when
            the block starts and closes it when it ends.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument has a wrong value: a gateway URL without
            a host, a grouping key name that is not a label name, an empty
            job, an *interval* that is not positive.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        gateway: str,
        job: str,
        *,
        registry: CollectorRegistry | None = None,
        grouping_key: Mapping[str, Any] | None = None,
        interval: float | None = None,
        delete_on_exit: bool = False,
        timeout: float | None = 30,
        compression: str | None = "gzip",
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        ssl_ctx: ssl_module.SSLContext | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._group = validated_group(gateway, job, grouping_key)
        self._connection = validated_connection(
            self._group,
            timeout=timeout,
            compression=compression,
            basic_auth=basic_auth,
            bearer_token=bearer_token,
            ssl_ctx=ssl_ctx,
            session=session,
        )
        if registry is None:
            registry = CollectorRegistry()
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                "registry must be a CollectorRegistry, not "
                f"{type(registry).__name__}"
            )
        given: object = interval
        if given is not None and (
            isinstance(given, bool)
            or not isinstance(given, int | float)
            or not given > 0
        ):
            raise ValueError(
                f"interval must be a positive number of seconds or None, "
                f"not {interval!r}"
            )
        if not isinstance(delete_on_exit, bool):
            raise TypeError("delete_on_exit must be True or False")
        self._registry = registry
        self._interval = interval
        self._delete_on_exit = delete_on_exit
        self._block: _Block | None = None

    def __repr__(self) -> str:
        return f"<Pusher {self._group.url}>"

    @property
    def registry(self) -> CollectorRegistry:
        """
        The registry that is pushed; create the job's metrics in it, as in
        ``Counter(..., registry=pusher.registry)``.
        """
        return self._registry

    @property
    def url(self) -> str:
        """
        The group's URL on the gateway, like
        ``"http://pushgateway:9091/metrics/job/nightly-backup"``.
        """
        return self._group.url

    async def push(self) -> None:
        """
        Push the registry now (``PUT``), inside the ``async with`` block:
        after a stage of the job, for example.

        Raises:
            PushError: The gateway refused the push, or did not take it
                before the timeout.
            RuntimeError: Called outside the ``async with`` block.
        """
        if self._block is None:
            raise RuntimeError(
                "Pusher.push() works inside `async with Pusher(...) as "
                "pusher:`, which opens the session it pushes with"
            )
        await self._send("PUT", self._block)

    async def _send(self, method: str, block: _Block) -> None:
        # One request at a time, in order: a periodic push still in flight
        # never lands after the final one.
        async with block.lock:
            if method == "DELETE":
                await send(method, self._group, block.connection)
            else:
                await send(
                    method, self._group, block.connection, self._registry
                )

    async def __aenter__(self) -> Self:
        if self._block is not None:
            raise RuntimeError(
                f"{self!r} is already in use by another `async with` block"
            )
        session = self._connection.session
        own_session = None
        if session is None:
            session = own_session = aiohttp.ClientSession()
        elif session.closed:
            raise RuntimeError(f"the session given to {self!r} is closed")
        block = self._block = _Block(
            dataclasses.replace(self._connection, session=session),
            own_session,
        )
        if self._interval is not None:
            block.periodic = asyncio.create_task(
                self._push_every(self._interval, block),
                name=f"prom_async-pusher {self._group.job}",
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        block = self._block
        assert block is not None  # noqa: S101 -- set by __aenter__
        try:
            if block.periodic is not None:
                block.stopping.set()
                await block.periodic
            method = "DELETE" if self._delete_on_exit else "PUT"
            try:
                await self._send(method, block)
            except Exception:
                if exc is None:
                    raise
                # The job's exception is what the user needs to see; it
                # propagates, and this one is told beside it.
                log.exception(
                    "The final %s of job %r to %s failed; the job itself "
                    "failed with %r, which follows.",
                    method,
                    self._group.job,
                    self._group.url,
                    exc,
                )
        finally:
            self._block = None
            if block.own_session is not None:
                await block.own_session.close()

    async def _push_every(self, interval: float, block: _Block) -> None:
        while True:
            try:
                await asyncio.wait_for(block.stopping.wait(), interval)
            except asyncio.TimeoutError:
                pass
            else:
                return
            try:
                await self._send("PUT", block)
            except Exception:
                log.warning(
                    "A periodic push of job %r to %s failed; the job goes "
                    "on, and the next push is in %s s.",
                    self._group.job,
                    self._group.url,
                    interval,
                    exc_info=True,
                )

    def _refuse_sync_with(self, *_args: object) -> NoReturn:
        raise TypeError(_USE_ASYNC_WITH)

    # ``with Pusher(...)`` gets the hint, not a missing-attribute error.
    __enter__ = __exit__ = _refuse_sync_with


class _Block:
    """
    The state of one ``async with`` block, on its event loop.
    """

    def __init__(
        self,
        connection: Connection,
        own_session: aiohttp.ClientSession | None,
    ) -> None:
        self.connection = connection
        self.own_session = own_session
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.periodic: asyncio.Task[None] | None = None
