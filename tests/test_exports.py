from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import types
import typing

from importlib.metadata import version
from pathlib import Path

import pytest

import prom_async
import prom_async.aio

from prom_async.aio import sd, web
from prom_async.types import ParamSpec


DOCS = Path(__file__).parent.parent / "docs"

PUBLIC_MODULES = [
    "prom_async",
    "prom_async.aio",
    "prom_async.aio.collect",
    "prom_async.aio.http",
    "prom_async.aio.loop",
    "prom_async.aio.prefork",
    "prom_async.aio.push",
    "prom_async.aio.sd",
    "prom_async.aio.web",
    "prom_async.testing",
    "prom_async.types",
]


class TestExports:
    @pytest.mark.parametrize("name", PUBLIC_MODULES)
    def test_all_names_exist(self, name):
        """Every name in a public module's __all__ can be imported."""
        module = importlib.import_module(name)

        missing = [n for n in module.__all__ if not hasattr(module, n)]

        assert [] == missing

    @pytest.mark.parametrize("name", PUBLIC_MODULES)
    def test_public_definitions_are_exported(self, name):
        """Every public class and function a module offers is in __all__."""
        module = importlib.import_module(name)

        offered = {
            attribute
            for attribute, value in vars(module).items()
            if not attribute.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and getattr(value, "__module__", "").startswith("prom_async")
        }

        assert set() == offered - set(module.__all__)

    def test_version_from_metadata(self):
        """__version__ is the installed distribution's version."""
        assert version("prom-async") == prom_async.__version__

    def test_aio_submodules_on_attribute_access(self):
        """prom_async.aio.web and .sd are reachable as attributes."""
        assert "start_http_server" in dir(prom_async.aio.web)
        assert "ConsulAgent" in dir(prom_async.aio.sd)


# prometheus-async's public modules (all but Twisted's prometheus_async.tx,
# out of scope for an asyncio toolkit) and where each name lives here.
PROMETHEUS_ASYNC_MODULES = {
    "prometheus_async.aio": "prom_async.aio",
    "prometheus_async.aio.web": "prom_async.aio.web",
    "prometheus_async.aio.sd": "prom_async.aio.sd",
    "prometheus_async.types": "prom_async.types",
}

# Defaults that differ on purpose; docs/migrating.rst says why.
CHANGED_DEFAULTS = {("count_exceptions", "exc"): (BaseException, Exception)}

# Attributes of prometheus-async's objects that are gone; each is named in
# docs/migrating.rst.
GONE_ATTRIBUTES = {
    ("MetricsHTTPServer", "from_server"),
    ("ConsulAgent", "consul"),
    ("ConsulAgent", "token"),
}


def prometheus_async_module(name: str) -> types.ModuleType:
    """
    Import one of prometheus-async's modules; skip without prometheus-async.
    """
    pytest.importorskip("prometheus_async")
    return importlib.import_module(name)


def public_names(module: types.ModuleType) -> list[str]:
    """
    A module's ``__all__`` or, without one, the classes and functions it
    defines itself.
    """
    if hasattr(module, "__all__"):
        return sorted(module.__all__)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    )


def counterparts() -> list[tuple[str, str, str]]:
    """
    (their module, our module, name) for every public name of
    prometheus-async; empty without prometheus-async.
    """
    if importlib.util.find_spec("prometheus_async") is None:
        return []
    return [
        (theirs, ours, name)
        for theirs, ours in PROMETHEUS_ASYNC_MODULES.items()
        for name in public_names(importlib.import_module(theirs))
    ]


def meaning(value: object) -> tuple[object, ...]:  # noqa: PLR0911 -- one return per kind
    """
    What kind of thing *value* is, as far as users of the name can tell.
    """
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__.rpartition(".")[2])
    if inspect.isclass(value) and value.__module__ in {"typing", "builtins"}:
        return ("re-export", value)
    if inspect.isclass(value) and getattr(value, "_is_protocol", False):
        required = {
            name
            for name, member in vars(value).items()
            if callable(member) and not name.startswith("_")
        }
        return ("Protocol", frozenset(required))
    if inspect.isclass(value) and hasattr(value, "_fields"):
        return ("named tuple", value._fields)
    if inspect.isclass(value):
        return ("class",)
    if inspect.iscoroutinefunction(value):
        return ("coroutine function",)
    if inspect.isfunction(value):
        return ("function",)
    return ("type", typing.get_origin(value), typing.get_args(value))


def callable_pairs() -> list[tuple[str, object, object]]:
    """
    (name, theirs, ours) for prometheus-async's functions and the classes
    users instantiate.
    """
    pairs = []
    for theirs, ours, name in counterparts():
        their_value = getattr(importlib.import_module(theirs), name)
        if inspect.isfunction(their_value) or name == "ConsulAgent":
            our_value = getattr(importlib.import_module(ours), name)
            pairs.append((name, their_value, our_value))
    return pairs


class TestPrometheusAsyncNames:
    @pytest.mark.parametrize(("theirs", "ours", "name"), counterparts())
    def test_name_exists(self, theirs, ours, name):
        """Each public name of prometheus-async exists in the same place."""
        assert hasattr(importlib.import_module(ours), name)

    @pytest.mark.parametrize(("theirs", "ours", "name"), counterparts())
    def test_same_kind(self, theirs, ours, name):
        """Each name is the same kind of thing: a coroutine function stays
        one, a Protocol requires the same methods, a re-export is the same
        object, an alias means the same type."""
        their_value = getattr(importlib.import_module(theirs), name)
        our_value = getattr(importlib.import_module(ours), name)

        assert meaning(their_value) == meaning(our_value)

    @pytest.mark.parametrize(("name", "theirs", "ours"), callable_pairs())
    def test_same_arguments(self, name, theirs, ours):
        """Each argument prometheus-async takes is taken the same way: at
        the same position, by the same keyword, with the same default."""
        positional = {
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        }
        by_keyword = {
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        }
        our_parameters = inspect.signature(ours).parameters
        our_positions = [
            p.name for p in our_parameters.values() if p.kind in positional
        ]
        differences = []
        for position, their in enumerate(
            inspect.signature(theirs).parameters.values()
        ):
            our = our_parameters.get(their.name)
            if our is None:
                differences.append((their.name, "missing"))
                continue
            if their.kind in positional and (
                our_positions[position : position + 1] != [their.name]
            ):
                differences.append((their.name, "position"))
            if their.kind in by_keyword and our.kind not in by_keyword:
                differences.append((their.name, "keyword"))
            defaults = (their.default, our.default)
            if defaults != CHANGED_DEFAULTS.get(
                (name, their.name), (their.default, their.default)
            ):
                differences.append((their.name, "default"))

        assert [] == differences

    def test_paramspec_is_typings(self):
        """prom_async.types.ParamSpec is typing.ParamSpec."""
        assert typing.ParamSpec is ParamSpec

    async def test_object_attributes(self, consul_env_cleared):
        """The servers and the ConsulAgent have every public attribute of
        prometheus-async's, but those documented as gone."""
        theirs_web = prometheus_async_module("prometheus_async.aio.web")
        theirs_sd = prometheus_async_module("prometheus_async.aio.sd")
        their_server = await theirs_web.start_http_server(addr="127.0.0.1")
        our_server = await web.start_http_server(addr="127.0.0.1")
        try:
            their_threaded = await asyncio.to_thread(
                theirs_web.start_http_server_in_thread, addr="127.0.0.1"
            )
            our_threaded = await asyncio.to_thread(
                web.start_http_server_in_thread, addr="127.0.0.1"
            )
            pairs = [
                ("MetricsHTTPServer", their_server, our_server),
                ("ThreadedMetricsHTTPServer", their_threaded, our_threaded),
                ("ConsulAgent", theirs_sd.ConsulAgent(), sd.ConsulAgent()),
            ]
            missing = {
                (kind, attribute)
                for kind, theirs, ours in pairs
                for attribute in dir(theirs)
                if not attribute.startswith("_")
                and not hasattr(ours, attribute)
            }
        finally:
            await their_server.close()
            await our_server.close()
            await asyncio.to_thread(their_threaded.close)
            await asyncio.to_thread(our_threaded.close)

        assert GONE_ATTRIBUTES == missing

    def test_gone_attributes_documented(self):
        """docs/migrating.rst names each attribute that is gone."""
        page = (DOCS / "migrating.rst").read_text()

        assert [] == [
            f"{kind}.{attribute}"
            for kind, attribute in sorted(GONE_ATTRIBUTES)
            if f"{kind}.{attribute}" not in page
        ]

    def test_twisted_out_of_scope_documented(self):
        """docs/migrating.rst says that prometheus_async.tx has no
        counterpart."""
        assert "prometheus_async.tx" in (DOCS / "migrating.rst").read_text()
