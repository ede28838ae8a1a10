"""
asyncio instrumentation: :func:`time`, :func:`count_exceptions` and
:func:`track_inprogress`.

The rest is in submodules, each imported on first use, so this module works
without the optional dependencies: the exporter in :mod:`prom_async.aio.web`,
Consul discovery in :mod:`prom_async.aio.sd`, an aiohttp service's requests
in :mod:`prom_async.aio.http`, the event loop's health in
:mod:`prom_async.aio.loop`, values read at scrape time in
:mod:`prom_async.aio.collect`, the Pushgateway in :mod:`prom_async.aio.push`
and prefork servers in :mod:`prom_async.aio.prefork`.
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
_SUBMODULES = {
    "collect": (),
    "http": ("aiohttp",),
    "loop": (),
    "prefork": ("aiohttp",),
    "push": ("aiohttp",),
    "sd": ("aiohttp", "consul"),
    "web": ("aiohttp",),
}
__all__ += [
    name
    for name, needs in _SUBMODULES.items()
    if all(importlib.util.find_spec(need) is not None for need in needs)
]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
