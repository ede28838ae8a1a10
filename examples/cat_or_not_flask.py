"""
cat-or.not, the talk's Flask version: a sync service, instrumented.

POST a picture as the multipart field ``picture`` to ``/analyze``; the answer
is ``meow!`` or ``nope!``, judged by ``is_cat`` from examples/cat_or_not.py.
The view and the API-key check are measured with ``prom_async.aio``'s
wrappers, which work on plain functions and ``with`` blocks as well as on
coroutines. A Flask app has no event loop, so the metrics are served on a
second port by ``prom_async.aio.web.start_http_server_in_thread``::

    python examples/cat_or_not_flask.py --port 8080 --metrics-port 8081
    curl -F picture=@examples/pictures/lying-cat.png \\
        http://127.0.0.1:8080/analyze
    curl http://127.0.0.1:8081/metrics

With ``--api-key`` (or ``--api-key-file``, read on every check so the key can
be changed while the service runs) each request needs an ``X-API-Key``
header, and the ``auth_*`` metrics move.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import os
import signal

from collections.abc import Callable
from pathlib import Path
from typing import Final

from cat_or_not import (
    API_KEY_HEADER,
    DEFAULT_MAX_BYTES,
    PICTURE_FIELD,
    BadUploadError,
    RefusedError,
    is_cat,
)
from flask import Flask, Request, request
from prometheus_client import Counter, Gauge, Histogram
from werkzeug.serving import make_server

from prom_async.aio import count_exceptions, time, track_inprogress
from prom_async.aio.web import start_http_server_in_thread


#: Answering takes a millisecond or so; a slow upload, seconds.
REQUEST_BUCKETS: Final = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
#: Reading a picture's header or comparing a key takes microseconds.
CHECK_BUCKETS: Final = (
    *(0.000005, 0.00001, 0.000025, 0.00005, 0.0001),
    *(0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
)

REQUEST_TIME = Histogram(
    "cat_or_not_request_seconds",
    "Time spent in HTTP requests.",
    buckets=REQUEST_BUCKETS,
)
ANALYZE_TIME = Histogram(
    "cat_or_not_analyze_seconds",
    "Time spent analyzing pictures.",
    buckets=CHECK_BUCKETS,
)
IN_PROGRESS = Gauge(
    "cat_or_not_in_progress_requests",
    "Number of requests in progress.",
)
AUTH_TIME = Histogram(
    "auth_seconds", "Time spent authenticating.", buckets=CHECK_BUCKETS
)
AUTH_ERRS = Counter("auth_errors_total", "Errors while authing.")
AUTH_WRONG_CREDS = Counter("auth_wrong_creds_total", "Wrong credentials.")


class WrongCredsError(RefusedError):
    def __init__(self) -> None:
        super().__init__(401, "wrong", f"{API_KEY_HEADER} is missing or wrong")


class KeysUnavailableError(RefusedError):
    def __init__(self) -> None:
        super().__init__(
            503, "unavailable", "the API key cannot be read; try again"
        )


class Auth:
    """
    Checks a request's API key against the one *read_key* returns.

    Reading the key may fail (*read_key* raises :class:`OSError`): each
    failure is an auth error, and the check tries *attempts* times.
    """

    def __init__(
        self, read_key: Callable[[], str], *, attempts: int = 3
    ) -> None:
        self.read_key = read_key
        self.attempts = attempts

    @time(AUTH_TIME)
    def check(self, request: Request) -> None:
        for _ in range(self.attempts - 1):
            with contextlib.suppress(OSError):
                self._auth(request)
                return
        try:
            self._auth(request)
        except OSError as error:
            raise KeysUnavailableError from error

    @count_exceptions(AUTH_WRONG_CREDS, exc=WrongCredsError)
    @count_exceptions(AUTH_ERRS, exc=OSError)
    def _auth(self, request: Request) -> None:
        given = request.headers.get(API_KEY_HEADER)
        if given is None or not hmac.compare_digest(
            given.encode(), self.read_key().encode()
        ):
            raise WrongCredsError


def create_app(
    auth: Auth | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Flask:
    """
    The cat-or.not Flask app; with *auth*, every request is checked.
    """
    app = Flask(__name__)
    # The limit is on the whole multipart body; Flask answers 413 above it.
    app.config["MAX_CONTENT_LENGTH"] = max_bytes

    @app.post("/analyze")
    @track_inprogress(IN_PROGRESS)
    @time(REQUEST_TIME)
    def analyze() -> str:
        if auth is not None:
            auth.check(request)
        upload = request.files.get(PICTURE_FIELD)
        if upload is None:
            raise BadUploadError(
                400,
                "missing_field",
                f"POST the picture as the multipart field {PICTURE_FIELD!r} "
                f"(curl -F {PICTURE_FIELD}=@cat.png ...)",
            )
        picture = upload.read()
        with time(ANALYZE_TIME):
            result = is_cat(picture)
        return "meow!\n" if result else "nope!\n"

    @app.errorhandler(RefusedError)
    def refused(error: RefusedError) -> tuple[str, int]:
        return error.message + "\n", error.status

    return app


def read_key_file(path: Path) -> Callable[[], str]:
    return lambda: path.read_text().strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--metrics-port", type=int, default=8081)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--api-key",
        default=os.environ.get("CAT_OR_NOT_API_KEY"),
        help=f"require this {API_KEY_HEADER} header "
        "(default: $CAT_OR_NOT_API_KEY, else none)",
    )
    keys.add_argument(
        "--api-key-file",
        type=Path,
        help=f"require the {API_KEY_HEADER} header this file holds, "
        "read on every request",
    )
    args = parser.parse_args(argv)
    if args.api_key_file is not None:
        auth = Auth(read_key_file(args.api_key_file))
    elif args.api_key is not None:
        key: str = args.api_key
        auth = Auth(lambda: key)
    else:
        auth = None
    app = create_app(auth, max_bytes=args.max_bytes)

    # SIGTERM stops the server as Ctrl-C does, so the exporter closes too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with start_http_server_in_thread(
        addr=args.host, port=args.metrics_port
    ) as metrics:
        server = make_server(args.host, args.port, app, threaded=True)
        print(
            f"cat-or.not on http://{args.host}:{server.server_port}/analyze, "
            f"metrics on {metrics.metrics_url}",
            flush=True,
        )
        server.serve_forever()


if __name__ == "__main__":
    main()
