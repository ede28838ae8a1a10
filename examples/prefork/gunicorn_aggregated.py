"""
gunicorn configuration: one exporter for the sum of the workers' metrics,
on port 9100 (``METRICS_PORT`` changes it).
"""

import os

from prom_async.aio.prefork import MultiprocessExporter


MultiprocessExporter(
    addr="127.0.0.1", port=int(os.environ.get("METRICS_PORT", "9100"))
).install(globals())
