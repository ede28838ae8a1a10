"""
gunicorn configuration: give each worker a slot, for ``base_port + slot``.
"""

from prom_async.aio.prefork import WorkerSlots


WorkerSlots().install(globals())
