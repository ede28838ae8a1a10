"""
Values that need I/O at scrape time: :func:`on_scrape` registers a
coroutine function that is awaited before each scrape of a registry, on the
application's event loop, with a deadline, shared between concurrent
scrapes, and with its own health metrics.

Hooks are run by the exporters of :mod:`prom_async.aio.web`.
"""

from ._collect import SCRAPE_TIMEOUT_OFFSET, on_scrape
from ._collect_hook import ScrapeHook


__all__ = ["SCRAPE_TIMEOUT_OFFSET", "ScrapeHook", "on_scrape"]
