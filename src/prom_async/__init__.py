"""
Async-aware Prometheus instrumentation on top of ``prometheus_client``.
"""

from importlib.metadata import version


__all__ = ["__version__"]

__version__ = version("prom-async")
