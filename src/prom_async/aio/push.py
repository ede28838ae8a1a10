"""
Push metrics to a Prometheus Pushgateway, for jobs too short to be scraped.

:func:`push_to_gateway`, :func:`pushadd_to_gateway` and
:func:`delete_from_gateway` are ``prometheus_client``'s functions of the same
names and arguments, awaited: on aiohttp, with the registry rendered off the
event loop, gzip bodies, retries within the timeout and a :class:`PushError`
that says what the gateway answered. :class:`Pusher` pushes a batch job's own
registry when the job ends, even when it fails.
"""

from ._push_errors import PushError
from ._push_functions import (
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
)
from ._pusher import Pusher


__all__ = [
    "PushError",
    "Pusher",
    "delete_from_gateway",
    "push_to_gateway",
    "pushadd_to_gateway",
]
