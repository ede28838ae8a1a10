"""
What importing the package gives, with and without what it can do without.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

from collections.abc import Iterator
from types import ModuleType

import pytest

import prom_async
import prom_async.aio


@pytest.fixture
def reloaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """
    Reload a module after the test changed the world, and again after the
    test, as the world was.
    """
    modules: list[ModuleType] = []

    def reload(module: ModuleType) -> ModuleType:
        modules.append(module)
        return importlib.reload(module)

    yield reload  # type: ignore[misc]
    monkeypatch.undo()
    for module in modules:
        importlib.reload(module)


class TestImports:
    def test_star_import_without_aiohttp(self, monkeypatch, reloaded):
        """`from prom_async.aio import *` works without aiohttp installed."""
        monkeypatch.setitem(sys.modules, "aiohttp", None)
        aio = reloaded(prom_async.aio)
        namespace: dict[str, object] = {}

        exec("from prom_async.aio import *", namespace)

        assert [
            "ExceptionCounter",
            "InProgressTracker",
            "Timer",
            "collect",
            "count_exceptions",
            "loop",
            "time",
            "track_inprogress",
        ] == sorted(n for n in namespace if not n.startswith("_"))
        assert "web" not in aio.__all__

    def test_star_import_with_everything(self):
        """With the extras installed, `import *` also gives web and sd."""
        namespace: dict[str, ModuleType] = {}

        exec("from prom_async.aio import *", namespace)

        for name in (
            "collect",
            "http",
            "loop",
            "prefork",
            "push",
            "sd",
            "web",
        ):
            assert f"prom_async.aio.{name}" == namespace[name].__name__

    def test_unknown_attribute(self):
        """A name that is not there is an AttributeError that names it."""
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            prom_async.aio.nope  # noqa: B018

    def test_version_when_not_installed(self, monkeypatch, reloaded):
        """From a source tree that was never installed, a clear version."""

        def not_installed(name):
            raise importlib.metadata.PackageNotFoundError(name)

        monkeypatch.setattr(importlib.metadata, "version", not_installed)

        assert "0+unknown" == reloaded(prom_async).__version__

    def test_subpackages_as_attributes(self, monkeypatch):
        """prom_async.aio and .types are attributes, imported on first use."""
        aio, types = prom_async.aio, prom_async.types
        monkeypatch.delattr(prom_async, "aio")
        monkeypatch.delattr(prom_async, "types")
        monkeypatch.delattr(prom_async.aio, "web")

        assert aio is prom_async.aio
        assert types is prom_async.types
        assert "start_http_server" in dir(prom_async.aio.web)
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            prom_async.nope  # noqa: B018
