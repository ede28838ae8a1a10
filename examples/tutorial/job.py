"""
A short-lived job: it does its work, pushes its metrics to a Pushgateway
when it ends, and exits.

    python job.py http://127.0.0.1:9091
"""

import asyncio
import sys

from prometheus_client import Counter, Gauge

from prom_async.aio.push import Pusher


async def main(gateway: str) -> None:
    async with Pusher(gateway, "tutorial_job") as pusher:
        rows = Counter(
            "tutorial_job_rows", "Rows cleaned up.", registry=pusher.registry
        )
        last_success = Gauge(
            "tutorial_job_last_success_unixtime",
            "When the job last succeeded.",
            registry=pusher.registry,
        )
        for _row in range(3):  # the job's work
            rows.inc()
        last_success.set_to_current_time()
    print(f"pushed to {gateway}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
