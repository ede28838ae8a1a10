"""
The tutorial's service: says hello, in a few languages, sometimes slowly.

    python app.py --port 8080 --metrics-port 8081
    curl 'http://127.0.0.1:8080/hello?lang=de&delay=0.2'
    curl http://127.0.0.1:8081/metrics

With ``--consul 127.0.0.1:8500`` its metrics server registers with that
Consul agent, so Prometheus finds it there.
"""

import argparse
import asyncio
import signal

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from prom_async.aio import count_exceptions, time, track_inprogress
from prom_async.aio.http import server_middleware
from prom_async.aio.sd import ConsulAgent
from prom_async.aio.web import start_http_server


REQUEST_TIME = Histogram(
    "tutorial_request_seconds",
    "Time spent answering /hello.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
IN_PROGRESS = Gauge(
    "tutorial_in_progress_requests", "Requests of /hello in progress."
)
ERRORS = Counter("tutorial_errors", "Requests of /hello that failed.")
GREETINGS = Counter(
    "tutorial_greetings", "Greetings said, by language.", ["language"]
)
HELLO = {"en": "Hello", "de": "Hallo", "fr": "Bonjour"}


@track_inprogress(IN_PROGRESS)
@time(REQUEST_TIME)
@count_exceptions(ERRORS)
async def hello(request: web.Request) -> web.Response:
    language = request.query.get("lang", "en")
    greeting = HELLO[language]  # an unknown language is a KeyError: a 500
    await asyncio.sleep(min(float(request.query.get("delay", 0)), 2.0))
    GREETINGS.labels(language=language).inc()
    return web.Response(text=f"{greeting}, world!\n")


def make_app() -> web.Application:
    app = web.Application(middlewares=[server_middleware()])
    app.router.add_get("/hello", hello)
    return app


async def main(port: int, metrics_port: int, consul: str | None) -> None:
    discovery = None
    if consul is not None:
        discovery = ConsulAgent(
            "tutorial", tags=["metrics"], agent_address=consul
        )
    metrics = await start_http_server(
        addr="127.0.0.1", port=metrics_port, service_discovery=discovery
    )
    runner = web.AppRunner(make_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"serving on http://127.0.0.1:{port}/hello", flush=True)
    print(f"metrics on {metrics.metrics_url}", flush=True)
    if discovery is not None:
        print(f"registered with Consul: {metrics.is_registered}", flush=True)

    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    await metrics.close()  # deregisters from Consul first


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--metrics-port", type=int, default=8081)
    parser.add_argument("--consul", metavar="HOST:PORT")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.metrics_port, args.consul))
