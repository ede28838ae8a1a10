"""
The URLs of Pushgateway groups, built and escaped like prometheus_client's.

A group is addressed as ``<gateway>/metrics/job/<job>/<name>/<value>...``
with the grouping key's names sorted. A value that is empty, or holds a
``/`` or a space, is sent base64-encoded (URL-safe alphabet) under
``<name>@base64``, with ``=`` standing for the empty value; any other value
is percent-encoded.
"""

from __future__ import annotations

import base64
import re
import urllib.parse

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final


__all__ = ["Group", "validated_group"]

_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SCHEMES: Final = ("http", "https")


@dataclass(frozen=True)
class Group:
    """
    A validated job and grouping key, and the group's URL.
    """

    job: str
    grouping_key: Mapping[str, str]
    url: str


def validated_group(
    gateway: object, job: object, grouping_key: Mapping[str, Any] | None
) -> Group:
    """
    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument has a wrong value.
    """
    base = gateway_base(gateway)
    valid_job = validated_job(job)
    key = validated_grouping_key(grouping_key)
    return Group(valid_job, key, base + group_path(valid_job, key))


def gateway_base(gateway: object) -> str:
    """
    The gateway's URL without a trailing ``/``; ``http://`` is put in
    front of one without a scheme.

    Raises:
        TypeError: *gateway* is not a string.
        ValueError: It has a scheme other than http and https, no host, a
            wrong port, credentials, a query or a fragment.
    """
    if not isinstance(gateway, str):
        raise TypeError(
            f"gateway must be a URL string, not {type(gateway).__name__}"
        )
    url = gateway.strip()
    if urllib.parse.urlsplit(url).scheme not in _SCHEMES:
        if "://" in url:
            raise ValueError(
                f"invalid gateway URL {gateway!r}: the scheme must be http "
                "or https"
            )
        url = f"http://{url}"
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 -- parsing the port is the check
    except ValueError:
        raise ValueError(
            f"invalid gateway URL {gateway!r}: the port is not a number "
            "from 0 to 65535"
        ) from None
    problem = None
    if not parts.hostname:
        problem = "it names no host; expected e.g. 'localhost:9091'"
    elif parts.username is not None:
        problem = "it holds credentials: pass basic_auth=(user, password)"
    elif parts.query or parts.fragment or url.endswith(("?", "#")):
        problem = "a gateway URL has no query or fragment"
    if problem is not None:
        raise ValueError(f"invalid gateway URL {gateway!r}: {problem}")
    return url.rstrip("/")


def validated_grouping_key(
    grouping_key: Mapping[str, Any] | None,
) -> dict[str, str]:
    """
    The grouping key with its values as strings (``str(value)``, like
    prometheus_client).

    Raises:
        TypeError: *grouping_key* is not a mapping.
        ValueError: A name is not a label name the gateway accepts, or is
            ``job``.
    """
    if grouping_key is None:
        return {}
    if not isinstance(grouping_key, Mapping):
        raise TypeError(
            "grouping_key must be a mapping of label names to values, not "
            f"{type(grouping_key).__name__}"
        )
    validated = {}
    entries: Iterable[tuple[object, object]] = grouping_key.items()
    for name, value in entries:
        if (
            not isinstance(name, str)
            or _LABEL_NAME.fullmatch(name) is None
            or name.startswith("__")
        ):
            raise ValueError(
                f"invalid grouping key label name {name!r}: a label name "
                "is letters, digits and underscores, does not start with a "
                "digit, and does not start with '__'"
            )
        if name == "job":
            raise ValueError(
                "the grouping key cannot hold 'job': the job is the "
                "second argument"
            )
        validated[name] = str(value)
    return validated


def validated_job(job: object) -> str:
    """
    Raises:
        TypeError: *job* is not a string.
        ValueError: It is empty (the gateway requires a job name).
    """
    if not isinstance(job, str):
        raise TypeError(f"job must be a string, not {type(job).__name__}")
    if not job:
        raise ValueError("job must not be empty: the gateway requires one")
    return job


def group_path(job: str, grouping_key: Mapping[str, str]) -> str:
    """
    The path of a group under the gateway's URL, from ``/metrics``.
    """
    segments = [_segment("job", job)]
    segments.extend(
        _segment(name, grouping_key[name]) for name in sorted(grouping_key)
    )
    return "/metrics" + "".join(segments)


def _segment(name: str, value: str) -> str:
    if not value:
        return f"/{name}@base64/="
    if "/" in value or " " in value:
        encoded = base64.urlsafe_b64encode(value.encode()).decode()
        return f"/{name}@base64/{encoded}"
    return f"/{name}/{urllib.parse.quote(value, safe='')}"
