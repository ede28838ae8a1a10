"""
Async-aware Prometheus instrumentation on top of ``prometheus_client``.
"""

from importlib.metadata import PackageNotFoundError, version


__all__ = ["__version__"]

try:
    __version__ = version("prom-async")
except PackageNotFoundError:  # Imported from a source tree, not installed.
    __version__ = "0+unknown"
