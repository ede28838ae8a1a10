"""
The error of a push or a delete that did not succeed.
"""

from __future__ import annotations

from typing import Final


__all__ = ["PushError"]

# A gateway's explanation is a line or two; a proxy's error page may be
# long, and the message quotes only its start (PushError.text has it all).
_QUOTED_TEXT_MAX: Final = 500


class PushError(OSError):
    """
    The Pushgateway refused a push or a delete, or could not be reached
    before the timeout.

    A subclass of :class:`OSError`, like the errors of
    ``prometheus_client``'s push functions, so code that catches those
    keeps catching it.

    Attributes:
        method (str): ``"PUT"``, ``"POST"`` or ``"DELETE"``.
        url (str): The group's URL.
        status (int | None): The status of the gateway's last answer, like
            ``400``; :data:`None` when it never answered (connection
            refused, TLS failure, timeout).
        text (str): The body of that answer: the gateway's explanation,
            like ``"pushed metrics are invalid or inconsistent with
            existing metrics: ..."``; ``""`` without an answer.
        attempts (int): How many requests were made: ``1`` for a refusal
            (a ``4xx`` answer is never retried), more when connection
            errors and ``5xx`` answers were retried until the timeout.

    .. versionadded:: 0.2.0
    """

    method: str
    url: str
    status: int | None
    text: str
    attempts: int

    def __init__(
        self,
        reason: str,
        *,
        method: str,
        url: str,
        status: int | None = None,
        text: str = "",
        attempts: int = 1,
    ) -> None:
        message = f"{method} {url}: {reason}"
        quoted = text.strip()
        if quoted:
            if len(quoted) > _QUOTED_TEXT_MAX:
                quoted = quoted[:_QUOTED_TEXT_MAX] + "..."
            message = f"{message}: {quoted}"
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.text = text
        self.attempts = attempts
