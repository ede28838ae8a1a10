"""
The errors a Consul agent can answer a registration with.
"""

from __future__ import annotations


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
        message: Consul's reason, as it sent it.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"Consul answered {self.status}: {self.message}"
