"""
The health of the running event loop: lag, a stuck-loop watchdog, tasks,
slow callbacks (:class:`LoopMonitor`).

Run the exporter in a thread of its own
(:func:`~prom_async.aio.web.start_http_server_in_thread`) to see a stuck
loop while it is stuck.
"""

from ._loop_monitor import LAG_BUCKETS, LoopMonitor


__all__ = ["LAG_BUCKETS", "LoopMonitor"]
