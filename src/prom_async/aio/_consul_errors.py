"""
The errors a Consul agent can answer a registration with.
"""

from __future__ import annotations


_MAX_REASON = 200


def summarize_reason(text: str) -> str:
    """
    *text*, an error answer's body, as it may go into a message: Consul's
    reasons (one short line, e.g. ``ACL not found``) as they are, anything
    else (a proxy's HTML page, a long or multi-line body) described in a
    few words.
    """
    stripped = text.strip()
    if not stripped:
        return "no reason given"
    if stripped.startswith("<"):
        return "an HTML page"
    if len(stripped) > _MAX_REASON or not stripped.isprintable():
        return f"a body of {len(text)} characters"
    return stripped


class ConsulRegistrationError(Exception):
    """
    The Consul agent refused to register (or deregister) the service.

    Raised (and logged once) for answers that waiting does not fix: ``403``
    (the ACL token is unknown or lacks ``service:write``), ``400`` (Consul
    rejected the service definition) and other ``4xx`` statuses.

    Args:
        status: The HTTP status Consul answered with, e.g. ``403``.
        message: Consul's reason, e.g. ``ACL not found``.

    Attributes:
        status: The HTTP status Consul answered with.
        message: Consul's reason, as it sent it (with the ACL token, should
            the answer contain it, replaced by ``***``).

    Its text shows the status and Consul's reason; an answer that is not a
    short line (say, a proxy's HTML page) is described instead of shown.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"Consul answered {self.status}: " + summarize_reason(
            self.message
        )
