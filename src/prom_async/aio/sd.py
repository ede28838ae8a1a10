"""
Service discovery: announce metrics servers to Consul.

Pass a :class:`ConsulAgent` as ``service_discovery=`` to
:func:`~prom_async.aio.web.start_http_server` or
:func:`~prom_async.aio.web.start_http_server_in_thread`. Any object that
follows :class:`prom_async.types.ServiceDiscovery` works there too.
"""

from ._consul import ConsulAgent, ConsulRegistration
from ._consul_errors import ConsulRegistrationError


__all__ = ["ConsulAgent", "ConsulRegistration", "ConsulRegistrationError"]
