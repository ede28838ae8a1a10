"""
Write the intersphinx inventories the docs are built with.

The build has no network, so instead of the projects' own ``objects.inv``
the docs read these small ones: the names our pages refer to, each pointing
at its real page upstream. Regenerate after changing the tables:

    python docs/_inventories/make.py

``--check`` exits non-zero when a committed file differs from the tables;
``docs/conf.py`` runs the same check at every build.

The files use Sphinx's inventory format, version 2: four header lines, then
zlib-compressed lines of ``name domain:role priority uri display-name``.
"""

from __future__ import annotations

import sys
import zlib

from dataclasses import dataclass
from pathlib import Path


HERE = Path(__file__).parent

_HEADER = "# Sphinx inventory version 2\n"
_COMPRESSED = "# The remainder of this file is compressed using zlib.\n"


@dataclass(frozen=True)
class Inventory:
    """
    One project's inventory: where it is served and what it holds.
    """

    filename: str
    project: str
    version: str
    base_url: str
    #: (name, domain:role, uri relative to base_url)
    entries: tuple[tuple[str, str, str], ...]

    def body(self) -> str:
        lines = []
        for name, role, uri in sorted(self.entries):
            short = uri.removesuffix(name) + "$" if uri.endswith(name) else uri
            lines.append(f"{name} {role} 1 {short} -\n")
        return "".join(lines)

    def header(self) -> str:
        return (
            f"{_HEADER}# Project: {self.project}\n"
            f"# Version: {self.version}\n{_COMPRESSED}"
        )

    def content(self) -> bytes:
        return self.header().encode() + zlib.compress(self.body().encode(), 9)


def _python_entries() -> tuple[tuple[str, str, str], ...]:
    entries: list[tuple[str, str, str]] = []

    def add(role: str, page: str, *names: str) -> None:
        entries.extend(
            (name, f"py:{role}", f"library/{page}.html#{name}")
            for name in names
        )

    add("class", "functions", "bool", "float", "int")
    add("class", "stdtypes", "dict", "list", "str", "tuple")
    add("data", "constants", "None")
    add(
        "exception",
        "exceptions",
        "BaseException",
        "Exception",
        "AssertionError",
        "GeneratorExit",
        "KeyboardInterrupt",
        "LookupError",
        "OSError",
        "RuntimeError",
        "SystemExit",
        "TypeError",
        "ValueError",
    )
    add("exception", "asyncio-exceptions", "asyncio.CancelledError")
    add(
        "class",
        "collections.abc",
        "collections.abc.AsyncIterator",
        "collections.abc.Awaitable",
        "collections.abc.Callable",
        "collections.abc.Coroutine",
        "collections.abc.Iterable",
        "collections.abc.Mapping",
        "collections.abc.Sequence",
    )
    add("class", "ssl", "ssl.SSLContext")
    add("method", "ssl", "ssl.SSLContext.load_cert_chain")
    add("function", "ssl", "ssl.create_default_context")
    add("data", "ssl", "ssl.Purpose.CLIENT_AUTH")
    add("class", "threading", "threading.Thread")
    add("function", "gc", "gc.freeze")
    add("function", "asyncio-task", "asyncio.to_thread")
    add("exception", "asyncio-exceptions", "asyncio.TimeoutError")
    add("class", "re", "re.Pattern")
    add("method", "re", "re.Pattern.fullmatch")
    add("exception", "subprocess", "subprocess.TimeoutExpired")
    add("class", "typing", "typing.ParamSpec", "typing.Protocol")
    entries.append(("typing", "py:module", "library/typing.html#module-$"))
    add("data", "typing", "typing.Any", "typing.TypeAlias")
    return tuple(entries)


def _aiohttp_entries() -> tuple[tuple[str, str, str], ...]:
    documented = (
        "Application",
        "Request",
        "Response",
        "StreamResponse",
        "WebSocketResponse",
        "HTTPException",
    )
    # Annotations name a class by the module that defines it, which aiohttp
    # documents under aiohttp.web.
    defined_in = {
        "Application": "aiohttp.web_app",
        "Request": "aiohttp.web_request",
        "Response": "aiohttp.web_response",
        "StreamResponse": "aiohttp.web_response",
        "WebSocketResponse": "aiohttp.web_ws",
        "HTTPException": "aiohttp.web_exceptions",
    }
    # Most are on the web reference page; the exceptions have their own.
    page = {"HTTPException": "web_exceptions.html"}
    web = tuple(
        (
            name,
            "py:class",
            f"{page.get(cls, 'web_reference.html')}#aiohttp.web.{cls}",
        )
        for cls in documented
        for name in (f"aiohttp.web.{cls}", f"{defined_in[cls]}.{cls}")
    )
    client = (
        (
            "aiohttp.ClientSession",
            "client_reference.html#aiohttp.ClientSession",
        ),
        (
            "aiohttp.client.ClientSession",
            "client_reference.html#aiohttp.ClientSession",
        ),
        ("aiohttp.TraceConfig", "tracing_reference.html#aiohttp.TraceConfig"),
        (
            "aiohttp.tracing.TraceConfig",
            "tracing_reference.html#aiohttp.TraceConfig",
        ),
    )
    # aiohttp documents its middleware type in prose only.
    middleware = (
        ("aiohttp.typedefs.Middleware", "web_advanced.html#middlewares"),
    )
    return web + tuple(
        (name, "py:class", uri) for name, uri in client + middleware
    )


def _prometheus_client_entries() -> tuple[tuple[str, str, str], ...]:
    # prometheus_client has no API reference of its own: its documentation
    # site has a page per topic.
    pages = {
        "prometheus_client.CollectorRegistry": ("py:class", "registry/"),
        "prometheus_client.registry.CollectorRegistry": (
            "py:class",
            "registry/",
        ),
        "prometheus_client.REGISTRY": (
            "py:data",
            "registry/#the-global-registry",
        ),
        "prometheus_client.Counter": ("py:class", "instrumenting/counter/"),
        "prometheus_client.Gauge": ("py:class", "instrumenting/gauge/"),
        "prometheus_client.metrics.Gauge": (
            "py:class",
            "instrumenting/gauge/",
        ),
        "prometheus_client.Histogram": (
            "py:class",
            "instrumenting/histogram/",
        ),
        "prometheus_client.Summary": ("py:class", "instrumenting/summary/"),
        "prometheus_client.multiprocess.MultiProcessCollector": (
            "py:class",
            "multiprocess/",
        ),
        "prometheus_client.registry.Collector": (
            "py:class",
            "collector/custom/",
        ),
        "prometheus_client.metrics_core.Metric": (
            "py:class",
            "collector/custom/",
        ),
    }
    return tuple((name, role, uri) for name, (role, uri) in pages.items())


INVENTORIES = (
    Inventory(
        filename="python.inv",
        project="Python",
        version="3",
        base_url="https://docs.python.org/3/",
        entries=_python_entries(),
    ),
    Inventory(
        filename="aiohttp.inv",
        project="aiohttp",
        version="3",
        base_url="https://docs.aiohttp.org/en/stable/",
        entries=_aiohttp_entries(),
    ),
    Inventory(
        filename="prometheus_client.inv",
        project="prometheus_client",
        version="0",
        base_url="https://prometheus.github.io/client_python/",
        entries=_prometheus_client_entries(),
    ),
)


def stale(directory: Path = HERE) -> list[str]:
    """
    The inventory files in *directory* that differ from the tables here.
    """
    return [
        inventory.filename
        for inventory in INVENTORIES
        if _read(directory / inventory.filename)
        != inventory.header() + inventory.body()
    ]


def _read(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    try:
        body = zlib.decompress(data[header_end:])
    except zlib.error:
        return None
    return (data[:header_end] + body).decode()


def write(directory: Path = HERE) -> None:
    for inventory in INVENTORIES:
        (directory / inventory.filename).write_bytes(inventory.content())


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        outdated = stale()
        if outdated:
            sys.stderr.write(
                f"stale: {', '.join(outdated)}; run {Path(__file__).name}\n"
            )
            return 1
        return 0
    if argv:
        sys.stderr.write(f"usage: {Path(__file__).name} [--check]\n")
        return 2
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
