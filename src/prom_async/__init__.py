"""
Async-aware Prometheus instrumentation on top of ``prometheus_client``.
"""

import importlib

from importlib.metadata import PackageNotFoundError, version
from types import ModuleType


__all__ = ["__version__", "aio", "testing", "types"]

try:
    __version__ = version("prom-async")
except PackageNotFoundError:  # Imported from a source tree, not installed.
    __version__ = "0+unknown"


def __getattr__(name: str) -> ModuleType:
    if name in {"aio", "testing", "types"}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
