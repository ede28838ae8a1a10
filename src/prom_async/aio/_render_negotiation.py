"""
Pick the exposition format a scrape asks for, whatever its ``Accept`` says.

``prometheus_client``'s :func:`~prometheus_client.exposition.choose_encoder`
does the negotiating.  Two things are added around it: a header it cannot
read (a version such as ``1.0.x``, or thousands of digits, makes its
version comparison raise) is negotiated again without the media ranges it
cannot read, and gets the text format 0.0.4 when none is left; and an
OpenMetrics version is brought to the one it stands for (``1.0.0`` below 2,
else ``2.0.0``), so that what a client may put in a
header does not grow the number of distinct formats, and with it the
renders that cannot be shared and what is kept per format.
"""

from __future__ import annotations

import functools

from typing import TYPE_CHECKING, Any, Final, NamedTuple

from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as om_exposition


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["Negotiated", "negotiate"]

_OPENMETRICS_1: Final = "1.0.0"
_OPENMETRICS_2: Final = "2.0.0"


class Negotiated(NamedTuple):
    """
    The encoder a scrape is rendered with, and its ``Content-Type``.
    """

    encoder: Callable[[Any], bytes]
    content_type: str


def negotiate(accept: str | None) -> Negotiated:
    """
    The format for a scrape whose ``Accept`` header is *accept*.
    """
    try:
        encoder, content_type = choose_encoder(accept or "")
    except (TypeError, ValueError):
        # Negotiate among the media ranges the library can read.
        readable = [item for item in (accept or "").split(",") if _reads(item)]
        encoder, content_type = choose_encoder(",".join(readable))
    if not isinstance(encoder, functools.partial) or (
        encoder.func is not om_exposition.generate_latest
    ):
        return Negotiated(encoder, content_type)
    version = encoder.keywords.get("version")
    if not isinstance(version, str):
        return Negotiated(encoder, content_type)
    canonical = _canonical_version(version)
    if canonical == version:
        return Negotiated(encoder, content_type)
    escaping = encoder.keywords.get("escaping")
    asked = f"application/openmetrics-text; version={canonical}"
    if isinstance(escaping, str):
        asked += f"; escaping={escaping}"
    return Negotiated(*choose_encoder(asked))


def _reads(media_range: str) -> bool:
    try:
        choose_encoder(media_range)
    except (TypeError, ValueError):
        return False
    return True


def _canonical_version(version: str) -> str:
    """
    The OpenMetrics version *version* stands for: what the encoder tells
    apart is below 2 or not.
    """
    major = version.partition(".")[0].strip()
    if major.isdecimal() and len(major) < 4 and int(major) >= 2:  # noqa: PLR2004
        return _OPENMETRICS_2
    return _OPENMETRICS_1
