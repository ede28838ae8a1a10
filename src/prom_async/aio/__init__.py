"""
asyncio instrumentation: :func:`time`, :func:`count_exceptions` and
:func:`track_inprogress`.

The exporter lives in :mod:`prom_async.aio.web` and Consul discovery in
:mod:`prom_async.aio.sd`; both are imported on first use, so this module works
without the optional ``aiohttp`` and ``consul`` dependencies.
"""

from __future__ import annotations

import importlib
import importlib.util

from types import ModuleType

from ._decorators import (
    ExceptionCounter,
    InProgressTracker,
    Timer,
    count_exceptions,
    time,
    track_inprogress,
)


__all__ = [
    "ExceptionCounter",
    "InProgressTracker",
    "Timer",
    "count_exceptions",
    "time",
    "track_inprogress",
]

# The submodules and the optional dependencies each needs; ``import *``
# takes those whose dependencies are installed.
_SUBMODULES = {"sd": ("aiohttp", "consul"), "web": ("aiohttp",)}
__all__ += [
    name
    for name, needs in _SUBMODULES.items()
    if all(importlib.util.find_spec(need) is not None for need in needs)
]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
