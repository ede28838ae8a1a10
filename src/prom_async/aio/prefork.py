"""
Metrics of a prefork server: gunicorn running aiohttp applications in
several worker processes (``gunicorn -k aiohttp.GunicornWebWorker -w 4``).

Two ways:

- **one exporter per worker**: :func:`worker_exporter` starts an exporter in
  each worker, on a port of its own, registered with service discovery
  under an ID of its own; the scraper adds the workers up (``sum by``).
  Every metric type, exemplars and custom collectors work.
  :class:`WorkerSlots` gives the workers stable ports, for static targets.
- **aggregated**: prometheus_client's multiprocess mode; the workers write
  their values to files and :class:`MultiprocessExporter`'s gunicorn hooks
  run one exporter, in a process of its own, that serves their sum. Use
  :func:`inprogress_gauge` for in-progress gauges.

gunicorn is not imported: the hooks are plain methods that gunicorn calls.
"""

from ._prefork_hooks import (
    ArbiterLike,
    GunicornHooks,
    WorkerLike,
    WorkerSlots,
    worker_slot,
)
from ._prefork_multiprocess import (
    DROPPED,
    MultiprocessExporter,
    inprogress_gauge,
)
from ._prefork_worker import EXPORTER_KEY, worker_exporter


__all__ = [
    "DROPPED",
    "EXPORTER_KEY",
    "ArbiterLike",
    "GunicornHooks",
    "MultiprocessExporter",
    "WorkerLike",
    "WorkerSlots",
    "inprogress_gauge",
    "worker_exporter",
    "worker_slot",
]
