"""
Sphinx configuration.
"""

import ast
import contextlib
import importlib
import inspect
import re
import sys
import types

from importlib.metadata import version as _version
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent / "_inventories"))

import make as _inventories


project = "prom_async"
author = "The prom_async developers"
copyright = "2026, The prom_async developers"
release = _version("prom-async")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
]

# No network at build time: the inventories are made from the tables in
# _inventories/make.py and committed; a stale one stops the build.
_stale = _inventories.stale()
if _stale:
    raise RuntimeError(
        f"docs/_inventories: {', '.join(_stale)} out of date; run "
        "python docs/_inventories/make.py"
    )
intersphinx_mapping = {
    inventory.filename.removesuffix(".inv"): (
        inventory.base_url,
        f"_inventories/{inventory.filename}",
    )
    for inventory in _inventories.INVENTORIES
}

nitpicky = True
# Only what no inventory can hold.
nitpick_ignore_regex = [
    # The wrappers' private TypeVars: a reader sees the letter, and the
    # overloads say what it stands for.
    (r"py:class", r"(prom_async\.aio\._decorators\.)?_[PRT]"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_type_aliases = {
    # Signatures name the aliases of prom_async.types, not what they stand
    # for.
    **{
        alias: f"~prom_async.types.{alias}"
        for alias in (
            "Deregisterer",
            "ExceptionTypes",
            "ExemplarSource",
            "LabelValues",
            "LabelsFromCall",
            "LabelsFromException",
        )
    },
    # ConsulAgent reads the server it registers through a private Protocol
    # (its socket, https and metrics_path); it is given a MetricsHTTPServer.
    "_MetricsServer": "~prom_async.aio.web.MetricsHTTPServer",
}
# One parameter per line once a signature is longer than this.
python_maximum_signature_line_length = 79
napoleon_google_docstring = True
napoleon_numpy_docstring = False

doctest_global_setup = """
import asyncio
from prometheus_client import CollectorRegistry
"""

# furo, as hynek's projects use: readable, and its content column holds a
# 79-character code line without cutting it at 1280 px.
html_theme = "furo"
html_title = f"prom_async {release}"
html_static_path = ["_static"]
html_css_files = ["wrap.css"]
exclude_patterns = ["_build", "_inventories", "aiohttp-service/*"]


def _bind_type_checking_imports() -> None:
    """
    Run the ``if TYPE_CHECKING:`` imports of prom_async's modules inside
    them, so that autodoc can evaluate (and link) every annotation.
    """
    for public in (
        "prom_async.types",
        "prom_async.aio.web",
        "prom_async.aio.sd",
        "prom_async.aio.http",
        "prom_async.aio.loop",
        "prom_async.aio.push",
        "prom_async.testing",
    ):
        importlib.import_module(public)
    for name, module in sorted(sys.modules.items()):
        if name.partition(".")[0] != "prom_async":
            continue
        for node in ast.parse(inspect.getsource(module)).body:
            if isinstance(node, ast.If) and ast.unparse(node.test) in {
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            }:
                for statement in node.body:
                    _run_import(statement, module)


def _run_import(statement: ast.stmt, module: types.ModuleType) -> None:
    block = ast.Module(body=[statement], type_ignores=[])
    code = compile(block, inspect.getfile(module), "exec")
    # A module only type checkers need may be missing (typing_extensions on
    # a new Python): what it names stays unevaluated, and nitpicky mode
    # reports it if a page shows it.
    with contextlib.suppress(ImportError):
        exec(code, vars(module))  # noqa: S102 -- the module's own import


_bind_type_checking_imports()

_ALIAS_PLACEHOLDER = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")


def _unwrap_aliases(*event: object) -> tuple[str, str] | None:
    # Sphinx renders an alias of autodoc_type_aliases inside a union
    # (``LabelsFromCall | None``) as the repr of its placeholder object;
    # this puts the alias back.
    signature, return_annotation = event[-2:]
    if not isinstance(signature, str):
        return None
    return (
        _ALIAS_PLACEHOLDER.sub(r"\1", signature),
        _ALIAS_PLACEHOLDER.sub(r"\1", str(return_annotation or "")),
    )


def setup(app):  # noqa: ANN001, ANN201 -- Sphinx's extension hook
    app.connect("autodoc-process-signature", _unwrap_aliases)
