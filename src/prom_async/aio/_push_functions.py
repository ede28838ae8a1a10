"""
``push_to_gateway``, ``pushadd_to_gateway`` and ``delete_from_gateway``:
prometheus_client's functions, awaited.
"""

from __future__ import annotations

import ssl as ssl_module

from collections.abc import Mapping
from typing import Any

import aiohttp

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from ._push_client import send, validated_connection
from ._push_url import validated_group


__all__ = ["delete_from_gateway", "push_to_gateway", "pushadd_to_gateway"]


async def push_to_gateway(
    gateway: str,
    job: str,
    registry: Collector,
    grouping_key: Mapping[str, Any] | None = None,
    timeout: float | None = 30,
    *,
    compression: str | None = "gzip",
    basic_auth: tuple[str, str] | None = None,
    bearer_token: str | None = None,
    ssl_ctx: ssl_module.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> None:
    """
    Push *registry* to the Pushgateway, replacing the whole group.

    The group (*job* and *grouping_key*) is left holding exactly the
    metrics of *registry*: those it held before are dropped. This is
    ``PUT``, the semantics of ``prometheus_client.push_to_gateway``.

    Args:
        gateway: The gateway's URL, like ``"http://pushgateway:9091"``;
            ``http://`` is assumed without a scheme
            (``"pushgateway:9091"``). A path is kept (a gateway behind a
            prefix).
        job: The ``job`` label of the group.
        registry: What to push, rendered in the text format (in a worker
            thread, off the event loop). :data:`None` pushes the global
            :data:`~prometheus_client.REGISTRY`.
        grouping_key: The other labels of the group, like
            ``{"instance": "db-3"}``; values are turned into strings.
            Values that are empty or hold ``/`` or spaces are sent
            base64-encoded, like ``prometheus_client`` does.
        timeout: Seconds the whole call may take, retries included; a
            ``5xx`` answer, a ``429``, a connection error or a timed-out
            request is retried within it, with a delay that doubles from
            0.1 s up to 5 s. :data:`None` retries until it succeeds or the
            call is cancelled.
        compression: ``"gzip"`` (the default; Pushgateway 1.5 and later
            read it) or :data:`None` for a plain body.
        basic_auth: ``(user, password)`` for HTTP basic auth, as the
            gateway's ``--web.config.file`` asks.
        bearer_token: Send ``Authorization: Bearer <bearer_token>`` (for
            a gateway behind a proxy that checks tokens).
        ssl_ctx: The client TLS context for an ``https://`` gateway (a
            private CA, client certificates); without one, the system's
            CAs verify the gateway.
        session: An :class:`aiohttp.ClientSession` of the application to
            send with (its connection pool, proxy settings and tracing);
            never closed here. Without one, a session is made for the call.

    Raises:
        PushError: The gateway refused the push (a ``4xx`` answer: its
            explanation is in :attr:`PushError.text`), or did not take it
            before *timeout*.
        TypeError: An argument has the wrong type.
        ValueError: An argument has a wrong value: a gateway URL without
            a host, a grouping key name that is not a label name, an empty
            job.

    .. versionadded:: 0.2.0
    """
    await _push(
        "PUT",
        gateway=gateway,
        job=job,
        registry=registry,
        grouping_key=grouping_key,
        timeout=timeout,
        compression=compression,
        basic_auth=basic_auth,
        bearer_token=bearer_token,
        ssl_ctx=ssl_ctx,
        session=session,
    )


async def pushadd_to_gateway(
    gateway: str,
    job: str,
    registry: Collector | None,
    grouping_key: Mapping[str, Any] | None = None,
    timeout: float | None = 30,
    *,
    compression: str | None = "gzip",
    basic_auth: tuple[str, str] | None = None,
    bearer_token: str | None = None,
    ssl_ctx: ssl_module.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> None:
    """
    Push *registry* to the Pushgateway, replacing only the metrics it
    holds.

    Metrics of the group with other names stay. This is ``POST``, the
    semantics of ``prometheus_client.pushadd_to_gateway``; the arguments
    are :func:`push_to_gateway`'s.

    Raises:
        PushError: The gateway refused the push, or did not take it
            before *timeout*.
        TypeError: An argument has the wrong type.
        ValueError: An argument has a wrong value.

    .. versionadded:: 0.2.0
    """
    await _push(
        "POST",
        gateway=gateway,
        job=job,
        registry=registry,
        grouping_key=grouping_key,
        timeout=timeout,
        compression=compression,
        basic_auth=basic_auth,
        bearer_token=bearer_token,
        ssl_ctx=ssl_ctx,
        session=session,
    )


async def delete_from_gateway(
    gateway: str,
    job: str,
    grouping_key: Mapping[str, Any] | None = None,
    timeout: float | None = 30,
    *,
    basic_auth: tuple[str, str] | None = None,
    bearer_token: str | None = None,
    ssl_ctx: ssl_module.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> None:
    """
    Delete the group (*job* and *grouping_key*) from the Pushgateway.

    This is ``DELETE``, without a body, the semantics of
    ``prometheus_client.delete_from_gateway``. Deleting a group that does
    not exist succeeds. The arguments are :func:`push_to_gateway`'s.

    Raises:
        PushError: The gateway refused the delete, or did not take it
            before *timeout*.
        TypeError: An argument has the wrong type.
        ValueError: An argument has a wrong value.

    .. versionadded:: 0.2.0
    """
    group = validated_group(gateway, job, grouping_key)
    connection = validated_connection(
        group,
        timeout=timeout,
        compression=None,
        basic_auth=basic_auth,
        bearer_token=bearer_token,
        ssl_ctx=ssl_ctx,
        session=session,
    )
    await send("DELETE", group, connection)


async def _push(
    method: str,
    *,
    gateway: str,
    job: str,
    registry: Collector | None,
    grouping_key: Mapping[str, Any] | None,
    timeout: float | None,
    **options: Any,
) -> None:
    group = validated_group(gateway, job, grouping_key)
    connection = validated_connection(group, timeout=timeout, **options)
    await send(method, group, connection, _validated_registry(registry))


def _validated_registry(registry: object) -> Collector:
    if registry is None:
        return REGISTRY
    if not callable(getattr(registry, "collect", None)):
        raise TypeError(
            "registry must be a CollectorRegistry (or another collector), "
            f"not {type(registry).__name__}"
        )
    return registry  # type: ignore[return-value]
