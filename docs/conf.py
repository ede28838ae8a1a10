"""
Sphinx configuration.
"""

from importlib.metadata import version as _version


project = "prom_async"
author = "The prom_async developers"
copyright = "2026, The prom_async developers"
release = _version("prom-async")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
]

nitpicky = True
# No network at build time, so no intersphinx: names from the standard
# library and from our dependencies are not cross-referenced.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(asyncio|aiohttp|prometheus_client|ssl|consul|wrapt|yarl)(\..*)?",
    ),
    (r"py:.*", r"(collections\.abc|typing|types|logging|concurrent)\..*"),
    (
        r"py:.*",
        (
            r"(BaseException|Exception|KeyboardInterrupt|SystemExit|GeneratorExit|"
            r"TypeError|ValueError|RuntimeError|OSError|TimeoutError|"
            r"ConnectionError|str|int|float|bool|bytes|None|object|type|tuple|"
            r"list|dict|frozenset|Any|Callable|Awaitable|Coroutine|Mapping|"
            r"Sequence|Iterable|Iterator|NamedTuple|Protocol|"
            r"CollectorRegistry|SSLContext|Path|TypeAlias|Self)"
        ),
    ),
    (r"py:.*", r"(prom_async\.types\.)?(P|R|T|_P|_R|_T|_Descriptor)"),
    (r"py:.*", r".*\.(P|R|T|_P|_R|_T|_Descriptor)"),
]

autodoc_member_order = "bysource"
# Types are in the docstrings' words and in py.typed for type checkers;
# rendering annotations would need intersphinx, which needs the network.
autodoc_typehints = "none"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

doctest_global_setup = """
import asyncio
from prometheus_client import CollectorRegistry
"""

html_theme = "alabaster"
html_static_path: list[str] = []
exclude_patterns = ["_build"]
